//! Docker's default capability set: what a `RUN` step running as root keeps. Everything
//! else leaves the bounding set, so no exec (setuid or file capabilities) can regain it.

/// Capability numbers from `linux/capability.h`, Docker's defaults only.
const DEFAULT_CAPS: [u32; 14] = [
    0,  // CAP_CHOWN
    1,  // CAP_DAC_OVERRIDE
    3,  // CAP_FOWNER
    4,  // CAP_FSETID
    5,  // CAP_KILL
    6,  // CAP_SETGID
    7,  // CAP_SETUID
    8,  // CAP_SETPCAP
    10, // CAP_NET_BIND_SERVICE
    13, // CAP_NET_RAW
    18, // CAP_SYS_CHROOT
    27, // CAP_MKNOD
    29, // CAP_AUDIT_WRITE
    31, // CAP_SETFCAP
];

/// Docker's default set as a bit mask.
pub fn default_mask() -> u64 {
    DEFAULT_CAPS.iter().fold(0, |m, c| m | (1u64 << c))
}

/// The highest capability number the running kernel knows.
pub fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

#[cfg(test)]
mod tests {
    #[test]
    fn mask_has_dockers_fourteen_and_not_sys_admin() {
        let m = super::default_mask();
        assert_eq!(m.count_ones(), 14);
        assert_eq!(m & (1 << 21), 0, "CAP_SYS_ADMIN must not be kept");
        assert_ne!(m & 1, 0);
    }
}
