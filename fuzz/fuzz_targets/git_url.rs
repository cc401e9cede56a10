//! Git source URLs as `ADD` reads them: the input is one source (its first line), the
//! byte after it picks the `--keep-git-dir` and `--checksum` flags. Nothing may panic; a
//! parsed URL's remote is the source before its query and fragment (scheme lower-cased),
//! its subdir is clean, and no message or redacted remote shows a password.
#![no_main]

use cairn::git::{url::redact, GitSource, GitUrl};
use libfuzzer_sys::fuzz_target;

/// The user-info part of a `scheme://…` authority, if any.
fn userinfo(s: &str) -> Option<&str> {
    let start = s.find("://")? + 3;
    let end = s[start..].find(['/', '?', '#']).map_or(s.len(), |i| start + i);
    let authority = &s[start..end];
    Some(&authority[..authority.rfind('@')?])
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.splitn(2, '\n');
    let src = lines.next().unwrap_or("");
    let knobs = lines.next().and_then(|r| r.bytes().next()).unwrap_or(0);

    let shown = redact(src);
    assert_eq!(redact(&shown), shown, "redaction is idempotent");
    if let Some(info) = userinfo(&shown) {
        assert!(
            matches!(info, "" | "xxxxx" | "xxxxx:xxxxx" | ":xxxxx"),
            "{src:?} redacted to {shown:?}"
        );
    }

    match GitUrl::classify(src) {
        None => {}
        Some(Err(e)) => {
            let msg = e.to_string();
            if let Some(info) = userinfo(src).filter(|i| i.contains(':')) {
                // Only a password-like secret that appears nowhere else in the source
                // (the same bytes elsewhere are no password) must not show.
                let pw = &info[info.find(':').unwrap() + 1..];
                let secret = pw.len() >= 4 && pw.bytes().all(|b| b.is_ascii_alphanumeric());
                if secret && src.matches(pw).count() == 1 {
                    assert!(!msg.contains(pw), "{msg:?} shows {pw:?}");
                }
            }
        }
        Some(Ok(u)) => {
            let base = src.split(['#']).next().unwrap_or(src);
            let base = base.split('?').next().unwrap_or(base);
            assert!(u.remote.eq_ignore_ascii_case(base), "{:?} vs {base:?}", u.remote);
            assert!(u.remote.ends_with(base.split_once("://").map_or(base, |b| b.1)));
            assert!(!u.subdir.starts_with('/') && !u.subdir.ends_with('/'), "{:?}", u.subdir);
            assert!(
                u.subdir.is_empty()
                    || u.subdir.split('/').all(|s| !matches!(s, "" | "." | "..")),
                "{:?}",
                u.subdir
            );
            let _ = u.short_name();
            let _ = format!("{u:?}");
        }
    }

    let keep = match knobs & 3 {
        0 => None,
        1 => Some(false),
        _ => Some(true),
    };
    let checksum = (knobs & 4 != 0).then_some("0123abcd");
    if let Some(Ok(g)) = GitSource::classify(src, keep, checksum) {
        let r = cairn::git::Resolved {
            commit: "a".repeat(40),
            object: "b".repeat(40),
            used_ref: g.url.git_ref.clone(),
        };
        let _ = g.key_digest(&r);
        let _ = g.describe(&r);
    }
});
