//! Credentials in URLs, masked wherever cairn shows or keeps a URL it was given: an `ADD`
//! source such as `https://user:password@host/file` or a git remote. The user and the
//! password are each replaced by `xxxxx`, as BuildKit's `urlutil.RedactCredentials` shows
//! them (a token is often the user name): `https://xxxxx:xxxxx@host/file`.
//!
//! One place for it, used by the step headers and history of `ADD` (executor), the key's
//! instruction text and so `--explain` (plan), download progress and errors (registry,
//! executor) and git sources. As in BuildKit, a query string is shown as written: a
//! presigned URL's signature is not user-info (pass such a value as a build secret).
//!
//! Hand-written rather than through the `url` crate: `url` would normalise the rest of
//! the text (case, percent-encoding, a trailing `/`), and the masked text must stay the
//! source as written, and [`text`] finds URLs inside free text, which no parser does.

/// What a user name or password is replaced by.
pub const MASK: &str = "xxxxx";

/// `s` (one URL) with the user-info of its authority masked; anything that is not
/// `scheme://…` is returned as it is.
pub fn url(s: &str) -> String {
    let Some(start) = s.find("://").map(|i| i + 3) else {
        return s.to_string();
    };
    let end = s[start..]
        .find(['/', '?', '#'])
        .map_or(s.len(), |i| start + i);
    format!("{}{}{}", &s[..start], authority(&s[start..end]), &s[end..])
}

/// Every `scheme://user:password@host` in free text (an instruction line, an error
/// message) masked. An authority ends at whitespace as well as at `/`, `?` and `#`; its
/// user-info is everything before its last `@`, so a quote or comma around a URL (the
/// JSON form of `ADD`) cannot hide a password.
pub fn text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("://") {
        let start = i + 3;
        out.push_str(&rest[..start]);
        let after = &rest[start..];
        let end = after
            .find(|c: char| c.is_whitespace() || matches!(c, '/' | '?' | '#'))
            .unwrap_or(after.len());
        out.push_str(&authority(&after[..end]));
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// `user:password@host` masked; an authority without user-info as it is.
fn authority(a: &str) -> String {
    let Some(at) = a.rfind('@') else {
        return a.to_string();
    };
    let masked = match a[..at].split_once(':') {
        Some(("", _)) => format!(":{MASK}"),
        Some(_) => format!("{MASK}:{MASK}"),
        None if at == 0 => String::new(),
        None => MASK.to_string(),
    };
    format!("{masked}{}", &a[at..])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// BuildKit's own cases for `RedactCredentials`.
    #[test]
    fn as_buildkit_masks_them() {
        for (from, to) in [
            (
                "https://user:password@host.tld/this:that",
                "https://xxxxx:xxxxx@host.tld/this:that",
            ),
            (
                "https://user@host.tld/this:that",
                "https://xxxxx@host.tld/this:that",
            ),
            (
                "https://:password@host.tld/this:that",
                "https://:xxxxx@host.tld/this:that",
            ),
            ("https://host.tld/this:that", "https://host.tld/this:that"),
            ("1https://foo.com", "1https://foo.com"),
            ("git@h:r", "git@h:r"),
            ("ssh://git@h/r", "ssh://xxxxx@h/r"),
            ("https://tok@h/r.git#a@b", "https://xxxxx@h/r.git#a@b"),
            ("https://h/p?u=a@b", "https://h/p?u=a@b"),
        ] {
            assert_eq!(url(from), to, "{from}");
            assert_eq!(text(from), to, "{from}");
        }
    }

    #[test]
    fn every_url_of_a_text_is_masked() {
        assert_eq!(
            text("ADD https://u:pw@h:8080/a http://t@h/b /dest/"),
            "ADD https://xxxxx:xxxxx@h:8080/a http://xxxxx@h/b /dest/"
        );
        assert_eq!(
            text(r#"ADD ["https://u:p\"w@h/a", "/d"]"#),
            r#"ADD ["https://xxxxx:xxxxx@h/a", "/d"]"#
        );
        assert_eq!(
            text("cannot download https://u:pw@h/f: HTTP 401"),
            "cannot download https://xxxxx:xxxxx@h/f: HTTP 401"
        );
        assert_eq!(text("no url here: a@b"), "no url here: a@b");
        assert_eq!(text("ADD http://h/f /"), "ADD http://h/f /");
    }

    proptest::proptest! {
        /// Whatever the password, it is gone from the masked text, and masking twice
        /// changes nothing.
        #[test]
        fn passwords_never_survive(pw in "[A-Za-z0-9._~!$&'()*+,;=:%-]{1,24}",
                                   user in "[A-Za-z0-9._-]{1,12}") {
            let pw = format!("Z{pw}Q");
            let src = format!("ADD https://{user}:{pw}@127.0.0.1:1/p/f?x=1 /d/");
            let shown = text(&src);
            proptest::prop_assert!(!shown.contains(&pw), "{}", shown);
            proptest::prop_assert_eq!(text(&shown), shown.clone());
            let one = url(&format!("https://{user}:{pw}@h/f"));
            proptest::prop_assert!(!one.contains(&pw), "{}", one);
        }
    }
}
