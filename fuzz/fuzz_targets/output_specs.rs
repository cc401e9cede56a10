//! The `--output`, `--cache-from` and `--cache-to` spec parsers, as a user's command line
//! (or a CI template) reaches them. Input: output spec, NUL, `--cache-from` value, NUL,
//! `--cache-to` value. Errors are fine as long as they are usage errors (exit 2) naming
//! the flag; panics are not, and what parses must be what the spec can mean.
#![no_main]

use cairn::cli::{parse_output, Output};
use cairn::error::ExitCode;
use cairn::remote_cache::{parse_cache_from, parse_cache_to};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.splitn(3, '\0');
    let (output, from, to) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    match parse_output(output) {
        // An OCI layout always says which compression its layers get.
        Ok(Output::OciLayout(dest, oc)) => {
            assert!(oc.compression.is_some(), "{output:?}: OCI layout without compression");
            assert!(!dest.as_os_str().is_empty() || output.contains("dest="), "{output:?}");
        }
        Ok(_) => {}
        Err(e) => {
            assert_eq!(e.exit_code(), ExitCode::Usage, "{output:?}: {e}");
            assert!(e.to_string().contains("--output"), "{output:?}: {e}");
        }
    }
    if let Err(e) = parse_cache_from(from) {
        assert_eq!(e.exit_code(), ExitCode::Usage, "{from:?}: {e}");
        assert!(e.to_string().contains("--cache-from"), "{from:?}: {e}");
    }
    if let Err(e) = parse_cache_to(to) {
        assert_eq!(e.exit_code(), ExitCode::Usage, "{to:?}: {e}");
        assert!(e.to_string().contains("--cache-to"), "{to:?}: {e}");
    }
});
