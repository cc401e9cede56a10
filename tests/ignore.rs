//! `.dockerignore` matching, rule by rule, against what Docker's `patternmatcher` does.

use cairn::dockerfile::ignore::{IgnoreError, IgnoreMatcher};

/// (ignore file, path, excluded?)
fn check(table: &[(&str, &str, bool)]) {
    for (file, path, want) in table {
        let m = IgnoreMatcher::parse(file).unwrap_or_else(|e| panic!("{file:?}: {e}"));
        assert_eq!(
            m.is_excluded(path),
            *want,
            "patterns {file:?}, path {path:?}, {m:?}"
        );
    }
}

#[test]
fn star_question_and_classes_stay_inside_one_component() {
    check(&[
        ("*.md", "README.md", true),
        ("*.md", "docs/README.md", false),
        ("*/*.md", "docs/README.md", true),
        ("*", "anything", true),
        ("*", "dir/file", true), // the parent `dir` matches `*`
        ("a?c", "abc", true),
        ("a?c", "a/c", false),
        ("a?c", "abbc", false),
        ("[ab].txt", "a.txt", true),
        ("[ab].txt", "c.txt", false),
        ("[^ab].txt", "c.txt", true),
        ("[a-c]x", "bx", true),
        ("file\\*", "file*", true),
        ("file\\*", "filex", false),
        ("a.b", "axb", false), // `.` is literal, not a regex dot
        ("a+b", "a+b", true),
        ("(x)", "(x)", true),
    ]);
}

#[test]
fn double_star_spans_directories() {
    check(&[
        ("**/*.go", "main.go", true),
        ("**/*.go", "a/b/c.go", true),
        ("**/*.go", "a/b/c.rs", false),
        ("a/**/b", "a/b", true),
        ("a/**/b", "a/x/y/b", true),
        ("a/**/b", "a/x/y/c", false),
        ("a/**", "a/x", true),
        ("a/**", "a/x/y", true),
        ("a/**", "ab", false),
        ("**", "x/y/z", true),
        ("**/node_modules", "web/node_modules/pkg/index.js", true),
        ("**/node_modules", "node_modules", true),
        // moby's suffix strategy: a bare leading `**` is a plain suffix test.
        ("**foo", "barfoo", true),
        ("**/foo/**", "a/foo/b", true),
    ]);
}

#[test]
fn parent_match_excludes_children() {
    check(&[
        ("build", "build/out/app", true),
        ("build", "build", true),
        ("build", "buildx", false),
        ("build", "src/build", false),
        ("*/temp*", "a/temporary/x", true),
        ("temp?", "tempA/deep/file", true),
    ]);
}

#[test]
fn exceptions_apply_in_order_and_last_match_wins() {
    check(&[
        ("*.md\n!README.md", "README.md", false),
        ("*.md\n!README.md", "CHANGES.md", true),
        ("!README.md\n*.md", "README.md", true),
        (
            "*.md\n!README*.md\nREADME-secret.md",
            "README-secret.md",
            true,
        ),
        (
            "*.md\n!README*.md\nREADME-secret.md",
            "README-public.md",
            false,
        ),
        ("docs\n!docs/keep.txt", "docs/keep.txt", false),
        ("docs\n!docs/keep.txt", "docs/drop.txt", true),
        ("docs\n!docs/keep.txt", "docs", true),
        ("**\n!src\n!Cargo.toml", "src/lib.rs", false),
        ("**\n!src\n!Cargo.toml", "target/debug/x", true),
        ("**\n!src\n!Cargo.toml", "Cargo.toml", false),
        ("*\n!a/b\na/b/c", "a/b/c/d", true),
        ("*\n!a/b\na/b/c", "a/b/e", false),
    ]);
}

#[test]
fn leading_slash_dot_slash_and_trailing_slash_are_cleaned() {
    check(&[
        ("/secret", "secret", true),
        ("./secret", "secret", true),
        ("secret/", "secret/key", true),
        ("a//b/../c", "a/c", true),
        ("!/x\n", "x", false),
        ("*\n! /keep ", "keep", false),
    ]);
    let m = IgnoreMatcher::parse("x").unwrap();
    assert!(m.is_excluded("./x"));
    assert!(m.is_excluded("/x/y"));
    assert!(!m.is_excluded("."));
    assert!(!m.is_excluded(""));
}

#[test]
fn comments_blank_lines_crlf_and_bom() {
    check(&[
        ("# secret\n\n   \nother", "# secret", false),
        ("# secret\nother", "other", true),
        (" # not a comment", "# not a comment", true),
        ("\u{feff}bom\r\nnext\r\n", "bom", true),
        ("bom\r\nnext\r\n", "next", true),
        ("  spaced  ", "spaced", true),
    ]);
}

#[test]
fn invalid_patterns_name_the_line() {
    for (text, line) in [("ok\n[abc", 2), ("!", 1), ("a\n\n!  ", 3), ("x\\", 1)] {
        match IgnoreMatcher::parse(text) {
            Err(e @ IgnoreError::Pattern { .. }) => {
                let msg = e.to_string();
                assert!(msg.starts_with(&format!(".dockerignore:{line}:")), "{msg}");
                assert!(!msg.ends_with('.'), "{msg}");
            }
            other => panic!("{text:?}: expected a pattern error, got {other:?}"),
        }
    }
}

#[test]
fn walkers_descend_only_where_an_exception_could_match() {
    let m = IgnoreMatcher::parse("docs\nvendor\n!docs/keep.txt\n!vendor/*/LICENSE").unwrap();
    assert!(m.may_include_below("docs"));
    assert!(!m.may_include_below("docs/sub"));
    assert!(m.may_include_below("vendor"));
    assert!(m.may_include_below("vendor/lib"));
    assert!(!m.may_include_below("vendor/lib/deep"));
    assert!(!m.may_include_below("target"));
    let m = IgnoreMatcher::parse("*\n!**/*.rs").unwrap();
    assert!(m.may_include_below("anything/at/all"));
    let m = IgnoreMatcher::parse("target").unwrap();
    assert!(!m.may_include_below("target"));
}

#[test]
fn load_prefers_explicit_then_dockerfile_specific_then_context() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    let dockerfile = dir.path().join("app.Dockerfile");
    std::fs::write(&dockerfile, "FROM scratch\n").unwrap();

    let none = IgnoreMatcher::load(&ctx, &dockerfile, None).unwrap();
    assert!(none.is_empty() && none.origin().is_none());

    std::fs::write(ctx.join(".dockerignore"), "from-context\n").unwrap();
    let m = IgnoreMatcher::load(&ctx, &dockerfile, None).unwrap();
    assert!(m.is_excluded("from-context"));

    std::fs::write(dir.path().join("app.Dockerfile.dockerignore"), "beside\n").unwrap();
    let m = IgnoreMatcher::load(&ctx, &dockerfile, None).unwrap();
    assert!(m.is_excluded("beside") && !m.is_excluded("from-context"));

    let explicit = dir.path().join("ignore-for-coder");
    std::fs::write(&explicit, "explicit\n").unwrap();
    let m = IgnoreMatcher::load(&ctx, &dockerfile, Some(&explicit)).unwrap();
    assert!(m.is_excluded("explicit") && !m.is_excluded("beside"));
    assert_eq!(m.origin(), Some(explicit.as_path()));

    let missing = dir.path().join("nope");
    let err = IgnoreMatcher::load(&ctx, &dockerfile, Some(&missing)).unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");

    std::fs::write(ctx.join(".dockerignore"), "[bad\n").unwrap();
    std::fs::remove_file(dir.path().join("app.Dockerfile.dockerignore")).unwrap();
    let err = IgnoreMatcher::load(&ctx, &dockerfile, None).unwrap_err();
    assert!(err.to_string().contains(".dockerignore:1:"), "{err}");
    // Convertible into the context error the integrator maps to exit code 2.
    let wrapped: cairn::context::Error = err.into();
    assert!(matches!(wrapped, cairn::context::Error::Ignore(_)));
}

mod props {
    use cairn::context::glob::go_match;
    use cairn::dockerfile::ignore::IgnoreMatcher;
    use proptest::prelude::*;

    const ALPHABET: &str = "[ab*?\\[\\]\\^\\-\\\\/!.# \n]{0,24}";

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Any ignore file either parses or is a named error, and matching never panics.
        #[test]
        fn ignore_files_never_panic(text in ALPHABET, path in "[ab/.*]{0,16}") {
            if let Ok(m) = IgnoreMatcher::parse(&text) {
                let _ = m.is_excluded(&path);
                let _ = m.may_include_below(&path);
            }
        }

        /// Go's matcher never panics, and a pattern without metacharacters matches itself.
        #[test]
        fn go_match_never_panics(pattern in ALPHABET, name in "[ab/.*\\[]{0,16}") {
            let _ = go_match(pattern.as_bytes(), name.as_bytes());
            let literal: String = name.chars().filter(|c| !"*?[\\\\".contains(*c)).collect();
            prop_assert_eq!(go_match(literal.as_bytes(), literal.as_bytes()), Ok(true));
        }

        /// When a pattern has no `**`, an exclusion agrees with Go's `filepath.Match` on a
        /// path or one of its parents (moby's regex translation must not drift from Go).
        #[test]
        fn single_patterns_agree_with_go_match(pattern in "[ab*?]{1,3}(/[ab*?]{1,3}){0,2}", path in "[ab]{1,3}(/[ab]{1,3}){0,3}") {
            prop_assume!(!pattern.contains("**"));
            let m = IgnoreMatcher::parse(&pattern).unwrap();
            let parts: Vec<&str> = path.split('/').collect();
            let go = (1..=parts.len()).any(|n| go_match(pattern.as_bytes(), parts[..n].join("/").as_bytes()) == Ok(true));
            prop_assert_eq!(m.is_excluded(&path), go, "pattern {} path {}", pattern, path);
        }
    }
}
