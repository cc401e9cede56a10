//! The `RUN --mount` parser (through the Dockerfile front end, as a Dockerfile reaches it)
//! and the `--secret` / `--ssh` command-line parsers. Input: mount spec, NUL, `--secret`
//! value, NUL, `--ssh` value. Errors are fine; panics are not, and a parsed mount must have
//! the target its type requires.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.splitn(3, '\0');
    let (mount, secret, ssh) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    if !mount.contains(['\n', '\r']) {
        let df = format!("FROM scratch\nRUN --mount={mount} true\n");
        if let Ok(parsed) = cairn::dockerfile::parse(&df, "Dockerfile") {
            for inst in parsed.stages.iter().flat_map(|s| s.instructions.iter()) {
                if let cairn::dockerfile::Instruction::Run(r) = &inst.node {
                    for m in &r.mounts {
                        use cairn::dockerfile::MountType;
                        if matches!(m.kind, MountType::Bind | MountType::Cache | MountType::Tmpfs) {
                            assert!(m.target.is_some(), "{mount:?} parsed without a target");
                        }
                    }
                }
            }
        }
    }
    if let Ok((id, _)) = cairn::mounts::parse_secret(secret) {
        assert!(!id.is_empty(), "{secret:?}: empty secret id");
    }
    if let Ok((id, path)) = cairn::mounts::parse_ssh(ssh, Some("/run/agent.sock")) {
        assert!(!id.is_empty() && !path.as_os_str().is_empty(), "{ssh:?}");
    }
});
