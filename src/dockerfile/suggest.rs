//! [`did_you_mean`]: BuildKit's "(did you mean X?)" hint for an unknown instruction, flag
//! or stage name — the closest option by Levenshtein distance, if it is closer than 3 edits,
//! and none when the value is itself an option (the error is then about something else).

/// The closest of `options` to `value`, spelled in `value`'s case when the comparison
/// ignores case (as BuildKit's `suggest.Search`). Ties go to the first option listed.
pub fn closest(value: &str, options: &[&str], case_sensitive: bool) -> Option<String> {
    let fold = |s: &str| {
        if case_sensitive {
            s.to_string()
        } else {
            s.to_lowercase()
        }
    };
    let v = fold(value);
    let mut best: Option<(usize, String)> = None;
    for opt in options {
        let o = fold(opt);
        if o == v {
            return None;
        }
        let d = strsim::levenshtein(&v, &o);
        if d < best.as_ref().map_or(3, |b| b.0) {
            best = Some((d, o));
        }
    }
    let (_, m) = best?;
    Some(if case_sensitive || value == value.to_lowercase() {
        m
    } else if value == value.to_uppercase() {
        m.to_uppercase()
    } else {
        m
    })
}

/// `message`, with ` (did you mean X?)` when an option is close to `value`.
pub fn did_you_mean(
    message: String,
    value: &str,
    options: &[&str],
    case_sensitive: bool,
) -> String {
    match closest(value, options, case_sensitive) {
        Some(m) => format!("{message} (did you mean {m}?)"),
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_as_buildkit() {
        let kw = ["FROM", "RUN", "COPY", "ENTRYPOINT", "WORKDIR"];
        assert_eq!(closest("RUNN", &kw, false).as_deref(), Some("RUN"));
        assert_eq!(closest("cpoy", &kw, false).as_deref(), Some("copy"));
        assert_eq!(closest("Workdri", &kw, false).as_deref(), Some("workdir"));
        assert_eq!(closest("FROBNICATE", &kw, false), None);
        assert_eq!(
            closest("run", &kw, false),
            None,
            "an exact match suggests nothing"
        );
        assert_eq!(
            closest("chwon", &["chown", "chmod"], true).as_deref(),
            Some("chown")
        );
        assert_eq!(closest("Build", &["build"], true).as_deref(), Some("build"));
        assert_eq!(
            did_you_mean("unknown flag: --lnk".into(), "lnk", &["link"], true),
            "unknown flag: --lnk (did you mean link?)"
        );
    }
}
