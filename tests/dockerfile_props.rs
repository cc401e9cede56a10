//! Property tests over the Dockerfile parser and the word expander: no input may panic, and
//! time must stay linear (each case runs under a generous deadline on inputs built to hit the
//! interesting characters: escapes, quotes, `$`, braces, heredoc markers, continuations).
//!
//! Longer run: `PROPTEST_CASES=100000 cargo test --release --test dockerfile_props`.

use cairn::dockerfile::{self, expand};
use proptest::prelude::*;
use std::time::{Duration, Instant};

/// Text made mostly of the characters the lexers care about.
fn nasty_text(max: usize) -> impl Strategy<Value = String> {
    let atoms = prop::sample::select(vec![
        "\\",
        "`",
        "'",
        "\"",
        "$",
        "{",
        "}",
        ":",
        "-",
        "+",
        "?",
        "#",
        "%",
        "/",
        "*",
        "<<",
        "<<-",
        "EOF",
        "\n",
        "\r\n",
        " ",
        "\t",
        "=",
        "[",
        "]",
        ",",
        "a",
        "B_1",
        "RUN ",
        "FROM ",
        "COPY ",
        "ENV ",
        "ARG ",
        "--mount=",
        "--from=",
        "ONBUILD ",
        "HEALTHCHECK ",
        "# escape=`\n",
        "é",
    ]);
    prop::collection::vec(atoms, 0..max).prop_map(|v| v.concat())
}

fn env(name: &str) -> Option<String> {
    match name {
        "a" => Some("x y".into()),
        "B_1" => Some(String::new()),
        _ => None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn parser_never_panics(src in nasty_text(200)) {
        let start = Instant::now();
        let _ = dockerfile::parse(&src, "Dockerfile");
        let _ = dockerfile::parse(&format!("FROM x\n{src}"), "Dockerfile");
        let _ = dockerfile::parse_instruction_line(&src);
        prop_assert!(start.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn expander_never_panics(word in nasty_text(120), backtick in any::<bool>()) {
        let escape = if backtick { '`' } else { '\\' };
        let start = Instant::now();
        let one = expand::expand_word(&word, &env, escape);
        let many = expand::expand_words(&word, &env, escape);
        prop_assert_eq!(one.is_ok(), many.is_ok());
        prop_assert!(start.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn arbitrary_unicode_never_panics(src in "\\PC{0,300}") {
        let _ = dockerfile::parse(&src, "Dockerfile");
        let _ = expand::expand_word(&src, &env, '\\');
    }
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    let word = "${a:-".repeat(100_000);
    assert!(expand::expand_word(&word, &env, '\\').is_err());
    let src = format!("FROM x\nENV A={word}\n");
    assert!(dockerfile::parse(&src, "Dockerfile").is_ok());
}

#[test]
fn long_inputs_stay_fast() {
    let start = Instant::now();
    let long_line = format!("FROM x\nRUN {}\n", "a \\\n".repeat(50_000));
    assert!(dockerfile::parse(&long_line, "Dockerfile").is_ok());
    let many_vars = "$a".repeat(50_000);
    assert!(expand::expand_words(&many_vars, &env, '\\').is_ok());
    let quotes = "\"".repeat(100_001);
    assert!(expand::expand_word(&quotes, &env, '\\').is_err());
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// Whatever parses also plans and dispatches without panicking (errors are fine).
    #[test]
    fn plan_and_scope_never_panic(body in nasty_text(80)) {
        use cairn::plan::{self, PlanOptions, Scope};
        let src = format!("ARG a=1\nFROM x AS s\n{body}\nFROM s\nCOPY --from=s / /\n");
        if let Ok(df) = dockerfile::parse(&src, "Dockerfile") {
            let opts = PlanOptions {
                build_args: [("a".to_string(), "2".to_string())].into(),
                target: None,
                target_platform: cairn::Platform::host(),
                build_platform: cairn::Platform::host(),
            };
            if let Ok(p) = plan::plan(&df, &opts) {
                for stage in &p.stages {
                    let mut scope = Scope::new(&p, stage, &["PATH=/bin".to_string()]);
                    for inst in &stage.instructions {
                        if let Ok(e) = scope.apply(inst) {
                            let _ = e.canonical();
                        }
                    }
                    let _ = (scope.run_env(), scope.config_env());
                }
            }
        }
    }
}
