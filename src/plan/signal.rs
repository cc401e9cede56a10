//! [`check_stop_signal`]: `STOPSIGNAL` values BuildKit accepts — a non-zero number, or a
//! Linux signal name with or without `SIG`, in any case (`SIGTERM`, `term`, `RTMIN+3`).
//! Anything else is refused when the instruction is dispatched, as BuildKit does, instead of
//! being written into the image for `docker stop` to reject later.

/// Signal names as moby's signal table spells them for Linux.
const NAMES: &[&str] = &[
    "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT", "KILL",
    "PIPE", "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM", "TRAP", "TSTP",
    "TTIN", "TTOU", "URG", "USR1", "USR2", "VTALRM", "WINCH", "XCPU", "XFSZ", "RTMIN", "RTMAX",
];

/// `Ok` when `value` names a signal; otherwise BuildKit's message.
pub(crate) fn check_stop_signal(value: &str) -> Result<(), String> {
    if let Ok(n) = value.parse::<i64>() {
        // Go's strconv.Atoi: any int; only 0 is refused.
        return if n == 0 {
            Err(format!("invalid signal: {value}"))
        } else {
            Ok(())
        };
    }
    let upper = value.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    let realtime = |prefix: &str, sign: char, max: u32| {
        name.strip_prefix(prefix)
            .and_then(|r| r.strip_prefix(sign))
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| (1..=max).contains(&n) && !name.contains("+0") && !name.contains("-0"))
    };
    if NAMES.contains(&name) || realtime("RTMIN", '+', 15) || realtime("RTMAX", '-', 14) {
        Ok(())
    } else {
        Err(format!("invalid signal: {value}"))
    }
}

#[cfg(test)]
mod tests {
    use super::check_stop_signal;

    #[test]
    fn names_and_numbers_as_buildkit_takes_them() {
        for ok in [
            "SIGTERM",
            "TERM",
            "sigkill",
            "Int",
            "9",
            "+9",
            "-1",
            "SIGRTMIN",
            "RTMIN+1",
            "SIGRTMIN+15",
            "RTMAX-14",
            "SIGRTMAX",
            "99999999999",
        ] {
            assert_eq!(check_stop_signal(ok), Ok(()), "{ok}");
        }
        for bad in [
            "SIGFOO",
            "FOO",
            "0",
            "",
            "SIG",
            "RTMIN+16",
            "RTMAX-15",
            "RTMIN+0",
            "RTMIN+01",
            "SIGTERM ",
            "99999999999999999999",
        ] {
            assert_eq!(
                check_stop_signal(bad),
                Err(format!("invalid signal: {bad}")),
                "{bad:?}"
            );
        }
    }
}
