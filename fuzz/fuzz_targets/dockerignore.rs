//! `.dockerignore` matching: the bytes before the first NUL are the ignore file, the rest
//! are paths (one per line) to check. Nothing may panic, and a verdict must not depend on
//! a leading `/` or a `./` (Docker cleans both away).
#![no_main]

use cairn::dockerfile::ignore::IgnoreMatcher;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (patterns, paths) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b""[..]),
    };
    let Ok(patterns) = std::str::from_utf8(patterns) else {
        return;
    };
    let Ok(m) = IgnoreMatcher::parse(patterns) else {
        return;
    };
    for path in String::from_utf8_lossy(paths).lines().take(64) {
        let excluded = m.is_excluded(path);
        let _ = m.may_include_below(path);
        if !path.starts_with('/') && !path.is_empty() {
            assert_eq!(
                excluded,
                m.is_excluded(&format!("/{path}")),
                "a leading / changed the verdict for {path:?}"
            );
        }
    }
});
