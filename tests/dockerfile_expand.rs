//! Word-expansion tables: every operator, quoting rule and escape rule of BuildKit's shell
//! lexer, for single-word expansion (`expand_word`) and for splitting (`expand_words`).

use cairn::dockerfile::expand::{expand_word, expand_words, Lexer, Options};

fn env(name: &str) -> Option<String> {
    let v = match name {
        "PWD" => "/home",
        "SHELL" => "bash",
        "KOREAN" => "한국어",
        "NULL" => "",
        "FOO" => "xxyy",
        "SPACED" => "a  b",
        "PATHS" => "/tmp/tmp/bar.txt",
        "URL" => "http://example.com/x",
        "STARS" => "a***yy*",
        "SPECIAL" => "()[]{}^$.*?|\\x",
        "NEEDLE" => "/tmp",
        _ => return None,
    };
    Some(v.to_string())
}

/// `(input, Ok(result) | Err(substring of the error))`
type Case = (&'static str, Result<&'static str, &'static str>);

fn run_table(escape: char, cases: &[Case]) {
    let mut failures = Vec::new();
    for (input, want) in cases {
        let got = expand_word(input, &env, escape);
        let ok = match (want, &got) {
            (Ok(w), Ok(g)) => w == g,
            (Err(w), Err(g)) => g.to_string().contains(w),
            _ => false,
        };
        if !ok {
            failures.push(format!("{input:?}: want {want:?}, got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn variables() {
    run_table(
        '\\',
        &[
            ("hello", Ok("hello")),
            ("$PWD", Ok("/home")),
            ("${PWD}", Ok("/home")),
            ("$PWD/x", Ok("/home/x")),
            ("${PWD}x", Ok("/homex")),
            ("$PWDx", Ok("")),
            ("$UNSET", Ok("")),
            ("$", Ok("$")),
            ("a$", Ok("a$")),
            ("$.", Ok("$.")),
            ("$1", Ok("")),
            ("$12x", Ok("x")),
            ("$@x", Ok("x")),
            ("$KOREAN!", Ok("한국어!")),
            ("${}", Err("bad substitution")),
            ("${:x}", Err("bad substitution")),
            ("${{x}", Err("bad substitution")),
            ("${", Err("missing '}'")),
            ("${PWD", Err("missing '}'")),
            ("${PWD:-x", Err("missing '}'")),
            ("${PWD=x}", Err("unsupported modifier (=) in substitution")),
            ("${PWD:3}", Err("unsupported modifier (:3) in substitution")),
        ],
    );
}

#[test]
fn default_alternative_and_required() {
    run_table(
        '\\',
        &[
            ("${UNSET:-def}", Ok("def")),
            ("${NULL:-def}", Ok("def")),
            ("${PWD:-def}", Ok("/home")),
            ("${UNSET-def}", Ok("def")),
            ("${NULL-def}", Ok("")),
            ("${PWD-def}", Ok("/home")),
            ("${UNSET:+alt}", Ok("")),
            ("${NULL:+alt}", Ok("")),
            ("${PWD:+alt}", Ok("alt")),
            ("${UNSET+alt}", Ok("")),
            ("${NULL+alt}", Ok("alt")),
            ("${PWD?msg}", Ok("/home")),
            ("${NULL?msg}", Ok("")),
            ("${UNSET?msg}", Err("UNSET: msg")),
            ("${UNSET?}", Err("UNSET: is not allowed to be unset")),
            ("${NULL:?}", Err("NULL: is not allowed to be empty")),
            ("${NULL:?need $SHELL}", Err("NULL: need bash")),
            ("${UNSET:?}", Err("UNSET: is not allowed to be unset")),
            ("${PWD:?x}", Ok("/home")),
            ("${UNSET:-${PWD}/x}", Ok("/home/x")),
            ("${UNSET:-${ALSO:-deep}}", Ok("deep")),
            ("${UNSET:-'single $PWD'}", Ok("single $PWD")),
            ("${UNSET:-\"double $PWD\"}", Ok("double /home")),
            ("${UNSET:-a\\}b}", Ok("a}b")),
            ("${UNSET:-}", Ok("")),
        ],
    );
}

#[test]
fn prefix_suffix_patterns() {
    run_table(
        '\\',
        &[
            ("${FOO#x}", Ok("xyy")),
            ("${FOO##x}", Ok("xyy")),
            ("${FOO#*x}", Ok("xyy")),
            ("${FOO##*x}", Ok("yy")),
            ("${FOO#*}", Ok("xxyy")),
            ("${FOO##*}", Ok("")),
            ("${FOO#}", Ok("xxyy")),
            ("${FOO#z}", Ok("xxyy")),
            ("${FOO#$SHELL}", Ok("xxyy")),
            ("${FOO#?}", Ok("xyy")),
            ("${FOO%y}", Ok("xxy")),
            ("${FOO%%y}", Ok("xxy")),
            ("${FOO%y*}", Ok("xxy")),
            ("${FOO%%y*}", Ok("xx")),
            ("${FOO%%x*}", Ok("")),
            ("${FOO%}", Ok("xxyy")),
            ("${STARS%%\\**\\*}", Ok("a")),
            ("${SPECIAL#()[]{\\}^$.\\*\\?|\\\\}", Ok("x")),
            ("${KOREAN#한}", Ok("국어")),
            ("${KOREAN%어}", Ok("한국")),
            ("${UNSET#x}", Ok("")),
            ("${FOO#\\x}", Err("invalid escape")),
        ],
    );
}

#[test]
fn replacement() {
    run_table(
        '\\',
        &[
            ("${FOO/x/z}", Ok("zxyy")),
            ("${FOO//x/z}", Ok("zzyy")),
            ("${FOO//?/.}", Ok("....")),
            ("${FOO/y*/}", Ok("xx")),
            ("${FOO/nothing/z}", Ok("xxyy")),
            ("${PATHS/$NEEDLE/}", Ok("/tmp/bar.txt")),
            ("${PATHS//$NEEDLE/}", Ok("/bar.txt")),
            ("${PATHS//\\//\\/}", Ok("\\/tmp\\/tmp\\/bar.txt")),
            ("${URL/http:\\/\\//https://}", Ok("https://example.com/x")),
            ("${FOO///}", Ok("xxyy")),
            ("${UNSET/x/y}", Ok("")),
            ("${FOO//ww}", Err("missing '/' in ${}")),
            ("${FOO//}", Err("missing")),
        ],
    );
}

#[test]
fn quotes_and_escapes() {
    run_table(
        '\\',
        &[
            ("he'll''o'", Ok("hello")),
            ("'$PWD'", Ok("$PWD")),
            ("\"$PWD\"", Ok("/home")),
            ("\\$PWD", Ok("$PWD")),
            ("\"\\$PWD\"", Ok("$PWD")),
            ("he\\'llo", Ok("he'llo")),
            ("he'llo", Err("matching single-quote")),
            ("he\"llo", Err("matching double-quote")),
            ("he\\\\'llo", Err("matching single-quote")),
            ("abc\\\\def", Ok("abc\\def")),
            ("\"abc\\\\def\"", Ok("abc\\def")),
            ("\"abc\\def\"", Ok("abc\\def")),
            ("'abc\\\\def'", Ok("abc\\\\def")),
            ("\"abc\\\"def\"", Ok("abc\"def")),
            ("'a\"b'", Ok("a\"b")),
            ("\"a'b\"", Ok("a'b")),
            ("a\\ b", Ok("a b")),
            ("trailing\\", Ok("trailing")),
            ("\"x\\", Err("matching double-quote")),
            ("\\\"", Ok("\"")),
        ],
    );
}

#[test]
fn backtick_escape() {
    run_table(
        '`',
        &[
            ("a`$PWD", Ok("a$PWD")),
            ("c:\\dir\\", Ok("c:\\dir\\")),
            ("\"x`\"y\"", Ok("x\"y")),
            ("\"x\\y\"", Ok("x\\y")),
            ("``", Ok("`")),
            ("$PWD`", Ok("/home")),
        ],
    );
}

#[test]
fn word_splitting() {
    let cases: &[(&str, &[&str])] = &[
        ("a b  c", &["a", "b", "c"]),
        ("\"a b\" c", &["a b", "c"]),
        ("$SPACED", &["a", "b"]),
        ("\"$SPACED\"", &["a  b"]),
        ("x$SPACED", &["xa", "b"]),
        ("${SPACED}y", &["a", "by"]),
        ("''", &[]),
        ("'' a", &["a"]),
        ("a\\ b", &["a b"]),
        ("$NULL", &[]),
        ("  lead trail  ", &["lead", "trail"]),
        ("'x  y'z", &["x  yz"]),
        ("${UNSET:-\"q r\"}", &["q", "r"]),
    ];
    for (input, want) in cases {
        let got = expand_words(input, &env, '\\').unwrap();
        assert_eq!(&got, want, "{input:?}");
    }
    assert_eq!(expand_word("$SPACED", &env, '\\').unwrap(), "a  b");
}

#[test]
fn raw_modes_and_skip_unset_for_heredoc_detection() {
    let lexer = Lexer::new(Options {
        escape: '\\',
        raw_quotes: true,
        raw_escapes: true,
        skip_unset: true,
        skip_quotes: false,
    });
    let e = lexer
        .process("cat <<'EOF' \"$UNSET\" \\x ${UNSET:-d} $PWD", &env)
        .unwrap();
    assert_eq!(
        e.words,
        [
            "cat",
            "<<'EOF'",
            "\"$UNSET\"",
            "\\x",
            "${UNSET:-d}",
            "/home"
        ]
    );
    assert!(e.matched.contains("PWD"));
    assert!(e.unmatched.contains("UNSET"));
}

#[test]
fn error_names_the_word() {
    let err = expand_word("${X:?boom}", &env, '\\').unwrap_err();
    assert_eq!(err.to_string(), "failed to process \"${X:?boom}\": X: boom");
}
