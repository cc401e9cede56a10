//! Golden tests for the Dockerfile front end: every `testdata/dockerfile/<case>/Dockerfile`
//! is parsed; a case with `expected.json` must parse to exactly that JSON (what
//! `cairn parse --format json` prints), a case with `expected_error.txt` must fail with
//! exactly that message (`Dockerfile:LINE:COL: ...` and the offending line).
//!
//! After an intended change of output, regenerate with `UPDATE_GOLDEN=1 cargo test --test
//! dockerfile_golden` and review the diff.

use std::fs;
use std::path::{Path, PathBuf};

fn cases() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/dockerfile");
    let mut dirs: Vec<PathBuf> = fs::read_dir(&root)
        .expect("testdata/dockerfile exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.join("Dockerfile").is_file())
        .collect();
    dirs.sort();
    dirs
}

fn update() -> bool {
    std::env::var_os("UPDATE_GOLDEN").is_some()
}

fn check_case(dir: &Path) -> Result<(), String> {
    let src = fs::read_to_string(dir.join("Dockerfile")).map_err(|e| e.to_string())?;
    let want_json = dir.join("expected.json");
    let want_err = dir.join("expected_error.txt");
    let got = cairn::dockerfile::parse(&src, "Dockerfile");
    if want_err.exists() {
        let err = match got {
            Ok(_) => return Err("parsed, but an error was expected".into()),
            Err(e) => e.to_string(),
        };
        if update() {
            fs::write(&want_err, format!("{err}\n")).map_err(|e| e.to_string())?;
            return Ok(());
        }
        let want = fs::read_to_string(&want_err).map_err(|e| e.to_string())?;
        if want.trim_end() != err.trim_end() {
            return Err(format!("error differs\n--- want\n{want}\n--- got\n{err}"));
        }
        return Ok(());
    }
    let df = got.map_err(|e| format!("unexpected error: {e}"))?;
    let json = cairn::dockerfile::to_json(&df);
    let text = serde_json::to_string_pretty(&json).map_err(|e| e.to_string())?;
    if update() || !want_json.exists() {
        fs::write(&want_json, format!("{text}\n")).map_err(|e| e.to_string())?;
        if !update() {
            return Err("expected.json was missing; written, please review".into());
        }
        return Ok(());
    }
    let want: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&want_json).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    if want != json {
        return Err(format!("json differs; got:\n{text}"));
    }
    Ok(())
}

#[test]
fn golden_cases() {
    let cases = cases();
    assert!(cases.len() >= 40, "only {} golden cases", cases.len());
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|d| {
            check_case(d).err().map(|e| {
                format!(
                    "{}: {e}",
                    d.file_name().unwrap_or_default().to_string_lossy()
                )
            })
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn enough_negative_cases() {
    let n = cases()
        .iter()
        .filter(|d| d.join("expected_error.txt").exists())
        .count();
    assert!(n >= 20, "only {n} negative cases");
}

#[test]
fn cli_parse_error_exits_2_with_location() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("Dockerfile");
    fs::write(&file, "FROM scratch\nFROB x\n").expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["parse", "-f"])
        .arg(&file)
        .output()
        .expect("run cairn");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Dockerfile:2:1: unknown instruction: FROB"),
        "{err}"
    );
    assert!(err.contains("\n  FROB x"), "{err}");
}

#[test]
fn cli_parse_json_and_text() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("Dockerfile");
    fs::write(&file, "FROM alpine AS base\nRUN [\"echo\", \"hi\"]\n").expect("write");
    let run = |fmt: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
            .args(["parse", "-f"])
            .arg(&file)
            .args(fmt)
            .output()
            .expect("run cairn");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    };
    let v: serde_json::Value = serde_json::from_str(&run(&["--format", "json"])).expect("json");
    assert_eq!(v["stages"][0]["name"], "base");
    assert_eq!(v["stages"][0]["instructions"][0]["cmd"], "run");
    assert_eq!(v["stages"][0]["instructions"][0]["json"], true);
    let text = run(&[]);
    assert!(text.contains("stage 0 \"base\": FROM alpine"), "{text}");
    assert!(text.contains("RUN [\"echo\",\"hi\"]"), "{text}");
}
