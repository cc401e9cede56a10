//! Dockerfile front-end behaviour where BuildKit is the specification (issue 14): each test
//! states what BuildKit does, checked on cairn's parser, planner or `cairn key` (which
//! plans and dispatches every instruction without running one). Parser-only cases are
//! golden files in `testdata/dockerfile/`.

mod common;

use cairn::dockerfile;
use cairn::plan::{self, Expanded, PlanOptions, Scope};
use std::fs;

fn opts() -> PlanOptions {
    PlanOptions {
        build_args: Default::default(),
        target: None,
        target_platform: "linux/amd64".parse().unwrap(),
        build_platform: "linux/amd64".parse().unwrap(),
    }
}

/// Plans `src` and dispatches every instruction of every planned stage.
fn dispatch(src: &str, o: &PlanOptions) -> Result<Vec<Expanded>, plan::Error> {
    let df = dockerfile::parse(src, "Dockerfile").expect("parses");
    let p = plan::plan(&df, o)?;
    let mut out = Vec::new();
    for stage in &p.stages {
        let mut scope = Scope::new(&p, stage, &[]);
        for i in &stage.instructions {
            out.push(scope.apply(i)?);
        }
    }
    Ok(out)
}

/// `cairn key` on a context holding only `Dockerfile` = `src`; returns (exit code, stderr).
fn key(src: &str, args: &[&str]) -> (Option<i32>, String) {
    let dir = common::tempdir();
    let ctx = dir.path().join("ctx");
    fs::create_dir(&ctx).unwrap();
    fs::write(ctx.join("Dockerfile"), src).unwrap();
    let out = common::run(
        common::cairn(&dir.path().join("store"))
            .args(["key", "--pull=never", "--progress=plain"])
            .args(args)
            .arg(&ctx),
    );
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn stopsignal_must_name_a_signal() {
    // BuildKit: dispatchStopSignal calls signal.ParseSignal → "invalid signal: SIGFOO".
    let err = dispatch("FROM scratch\nSTOPSIGNAL SIGFOO\n", &opts()).unwrap_err();
    assert_eq!(err.to_string(), "line 2: invalid signal: SIGFOO");
    let ok = dispatch("FROM scratch\nARG S=sigkill\nSTOPSIGNAL $S\n", &opts()).unwrap();
    assert_eq!(ok[1], Expanded::StopSignal("sigkill".into()));
    let (code, err) = key("FROM scratch\n\nSTOPSIGNAL SIGFOO\n", &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("Dockerfile:3: invalid signal: SIGFOO"),
        "{err}"
    );
}

#[test]
fn copy_from_a_later_stage_is_a_dependency_not_an_error() {
    // BuildKit registers every stage before it resolves `--from`, so a later stage is a
    // dependency like an earlier one (TestDockerfileCircularDependencies relies on it);
    // only a cycle is refused, with this wording.
    let src = "FROM scratch AS a\nCOPY --from=b /f /f\nFROM scratch AS b\nCOPY f /f\n";
    let df = dockerfile::parse(src, "Dockerfile").unwrap();
    let p = plan::plan(
        &df,
        &PlanOptions {
            target: Some("a".into()),
            ..opts()
        },
    )
    .unwrap();
    let order: Vec<_> = p.stages.iter().map(|s| s.name.clone().unwrap()).collect();
    assert_eq!(order, ["b", "a"]);

    let cycle = "FROM busybox AS stage0\nCOPY --from=stage2 f1 /sub/\nFROM busybox AS stage1\nCOPY --from=stage0 f2 /sub/\nFROM busybox AS stage2\nCOPY --from=stage1 f2 /sub/\n";
    let df = dockerfile::parse(cycle, "Dockerfile").unwrap();
    let err = plan::plan(&df, &opts()).unwrap_err();
    assert!(
        err.to_string()
            .contains("circular dependency detected on stage: stage"),
        "{err}"
    );
}

#[test]
fn platform_os_version_is_kept_out_of_os() {
    // containerd's platforms.Parse: `os(version)/arch`; the config's `os` is the bare OS.
    let df = dockerfile::parse(
        "FROM --platform=linux(5.15)/arm64 scratch\nARG TARGETOS\n",
        "Dockerfile",
    )
    .unwrap();
    let p = plan::plan(&df, &opts()).unwrap();
    let platform = p.stages[0].platform.clone().unwrap();
    assert_eq!(platform.os, "linux");
    assert_eq!(platform.os_version.as_deref(), Some("5.15"));
    assert_eq!(platform.architecture, "arm64");
    let mut o = opts();
    o.target_platform = "linux(5.15)/amd64".parse().unwrap();
    let out = dispatch("FROM scratch\nARG TARGETOS\nENV OS=$TARGETOS\n", &o).unwrap();
    assert_eq!(out[1], Expanded::Env(vec![("OS".into(), "linux".into())]));
}

#[test]
fn a_syntax_directive_naming_another_frontend_is_warned_about() {
    // BuildKit would run that frontend image; cairn is its own frontend, so it says the
    // directive is not honoured instead of ignoring it without a word.
    let (code, err) = key(
        "# syntax=example.com/other/frontend:2\nFROM scratch\nENV A=1\n",
        &[],
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("warning: ")
            && err.contains("Dockerfile:1: the syntax directive names the frontend example.com/other/frontend:2"),
        "{err}"
    );
    let (code, err) = key(
        "# syntax=docker/dockerfile:1.7\nFROM scratch\nENV A=1\n",
        &[],
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(!err.contains("syntax directive"), "{err}");
}

#[test]
fn a_lower_case_dockerfile_is_found_when_dockerfile_is_absent() {
    let dir = common::tempdir();
    let ctx = dir.path().join("ctx");
    fs::create_dir(&ctx).unwrap();
    fs::write(ctx.join("dockerfile"), "FROM scratch\nENV A=lower\n").unwrap();
    let key = |ctx: &std::path::Path| {
        let out = common::run(
            common::cairn(&dir.path().join("store"))
                .args(["key", "--pull=never"])
                .arg(ctx),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let lower = key(&ctx);
    // `Dockerfile` wins when both exist.
    fs::write(ctx.join("Dockerfile"), "FROM scratch\nENV A=upper\n").unwrap();
    let upper = key(&ctx);
    assert_ne!(lower, upper);
    let only_upper = dir.path().join("only");
    fs::create_dir(&only_upper).unwrap();
    fs::write(only_upper.join("Dockerfile"), "FROM scratch\nENV A=upper\n").unwrap();
    assert_eq!(key(&only_upper), upper);
}

#[test]
fn proxy_build_args_reach_run_but_not_the_key() {
    // BuildKit keeps proxies out of the LLB definition (ProxyEnv) and sets both spellings.
    let src = "FROM scratch\nENV A=1\n";
    let (a, b) = (
        key_out(src, &["--build-arg", "HTTP_PROXY=http://a.invalid:3128"]),
        key_out(src, &["--build-arg", "http_proxy=http://b.invalid:8080"]),
    );
    assert_eq!(a, b, "a proxy changed the key");
    assert_eq!(a, key_out(src, &[]));
    let df = dockerfile::parse("FROM scratch\nRUN true\n", "Dockerfile").unwrap();
    let mut o = opts();
    o.build_args.insert("HTTPS_PROXY".into(), "upper".into());
    o.build_args.insert("https_proxy".into(), "lower".into());
    let p = plan::plan(&df, &o).unwrap();
    let scope = Scope::new(&p, &p.stages[0], &["PATH=/bin".into()]);
    assert_eq!(
        scope.run_env(),
        ["PATH=/bin", "HTTPS_PROXY=lower", "https_proxy=lower"]
    );
    assert_eq!(scope.key_env(), ["PATH=/bin"]);
}

#[test]
fn targetstage_and_os_version_args_are_defined() {
    // BuildKit's defaultArgs: TARGETSTAGE is --target, else the last stage's name, else
    // "default"; TARGETOSVERSION/BUILDOSVERSION come with the platform ARGs.
    let src = "FROM scratch AS base\nFROM base AS final\nARG TARGETSTAGE TARGETOSVERSION\nENV S=$TARGETSTAGE V=$TARGETOSVERSION\n";
    let env = |o: &PlanOptions| match dispatch(src, o).unwrap().pop().unwrap() {
        Expanded::Env(kv) => kv,
        other => panic!("{other:?}"),
    };
    assert_eq!(env(&opts())[0], ("S".into(), "final".into()));
    let unnamed = dispatch(
        "FROM scratch\nARG TARGETSTAGE\nENV S=$TARGETSTAGE\n",
        &opts(),
    )
    .unwrap();
    assert_eq!(
        unnamed[1],
        Expanded::Env(vec![("S".into(), "default".into())])
    );
    let mut o = opts();
    o.target = Some("base".into());
    let df = dockerfile::parse(
        "FROM scratch AS base\nARG TARGETSTAGE\nENV S=$TARGETSTAGE\n",
        "Dockerfile",
    )
    .unwrap();
    let p = plan::plan(&df, &o).unwrap();
    let mut scope = Scope::new(&p, &p.stages[0], &[]);
    scope.apply(&p.stages[0].instructions[0]).unwrap();
    assert_eq!(scope.get("TARGETSTAGE"), Some("base"));
    o.target = None;
    o.target_platform = "windows(10.0.17763)/amd64".parse().unwrap();
    assert_eq!(env(&o)[1], ("V".into(), "10.0.17763".into()));
    // A --build-arg overrides a built-in.
    o.build_args.insert("TARGETSTAGE".into(), "mine".into());
    assert_eq!(env(&o)[0], ("S".into(), "mine".into()));
}

#[test]
fn source_date_epoch_is_taken_from_a_build_arg() {
    // BuildKit reads SOURCE_DATE_EPOCH from the build args: `created` follows it.
    let dir = common::tempdir();
    let ctx = dir.path().join("ctx");
    fs::create_dir(&ctx).unwrap();
    fs::write(ctx.join("Dockerfile"), "FROM scratch\nENV A=1\n").unwrap();
    let layout = dir.path().join("oci");
    let out = common::run(
        common::cairn(&dir.path().join("store"))
            .args(["build", "--pull=never", "--progress=plain"])
            .args(["--build-arg", "SOURCE_DATE_EPOCH=1700000000"])
            .arg("-o")
            .arg(format!("type=oci,dest={}", layout.display()))
            .arg(&ctx),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("SOURCE_DATE_EPOCH was not consumed"), "{err}");
    let blob = |d: &str| {
        let hex = d.strip_prefix("sha256:").unwrap();
        let bytes = fs::read(layout.join("blobs/sha256").join(hex)).unwrap();
        serde_json::from_slice::<serde_json::Value>(&bytes).unwrap()
    };
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest = blob(index["manifests"][0]["digest"].as_str().unwrap());
    let config = blob(manifest["config"]["digest"].as_str().unwrap());
    assert_eq!(config["created"], "2023-11-14T22:13:20Z", "{config}");
    let bad = common::run(
        common::cairn(&dir.path().join("store"))
            .args(["key", "--build-arg", "SOURCE_DATE_EPOCH=yesterday"])
            .arg(&ctx),
    );
    assert_eq!(bad.status.code(), Some(2));
}

/// `cairn key` of `src` with `args`: the key printed, which must succeed.
fn key_out(src: &str, args: &[&str]) -> String {
    let dir = common::tempdir();
    let ctx = dir.path().join("ctx");
    fs::create_dir(&ctx).unwrap();
    fs::write(ctx.join("Dockerfile"), src).unwrap();
    let out = common::run(
        common::cairn(&dir.path().join("store"))
            .args(["key", "--pull=never"])
            .args(args)
            .arg(&ctx),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn an_onbuild_trigger_keeps_its_heredoc_body() {
    // BuildKit's parseOnBuild stores the line, then each heredoc's content and delimiter
    // (testOnBuildHeredoc: the child build runs the body).
    let src = "FROM scratch\nONBUILD RUN <<EOF\necho \"hello world\" >> /dest\nEOF\n";
    let out = dispatch(src, &opts()).unwrap();
    let Expanded::Onbuild(trigger) = &out[0] else {
        panic!("{:?}", out[0])
    };
    assert_eq!(trigger, "RUN <<EOF\necho \"hello world\" >> /dest\nEOF");
    // The child parses it back with the body.
    match dockerfile::parse_instruction_line(trigger).unwrap() {
        dockerfile::Instruction::Run(r) => {
            assert_eq!(r.heredocs.len(), 1);
            assert_eq!(r.heredocs[0].body, "echo \"hello world\" >> /dest\n");
        }
        other => panic!("{other:?}"),
    }
    // A plain trigger is one line, as before.
    let plain = dispatch("FROM scratch\nONBUILD RUN echo hi\n", &opts()).unwrap();
    assert_eq!(plain[0], Expanded::Onbuild("RUN echo hi".into()));
}

#[test]
fn an_onbuild_copy_from_names_a_stage_of_the_child_dockerfile() {
    // The base image (stage 1's) carries `ONBUILD COPY --from=src /out /out`; `src` is a
    // stage of the child's Dockerfile that nothing else uses. BuildKit plans it because of
    // the trigger; so does plan_with_triggers.
    let src = "FROM scratch AS src\nCOPY f /out\nFROM registry.test/base:1 AS child\nENV A=1\n";
    let df = dockerfile::parse(src, "Dockerfile").unwrap();
    let without = plan::plan(&df, &opts()).unwrap();
    assert_eq!(without.stages.len(), 1, "nothing else names src");
    let triggers = [(1, vec!["COPY --from=src /out /out".to_string()])].into();
    let p = plan::plan_with_triggers(&df, &opts(), &triggers).unwrap();
    let names: Vec<_> = p.stages.iter().map(|s| s.name.clone().unwrap()).collect();
    assert_eq!(names, ["src", "child"]);
    // The child's scope resolves the trigger's --from to the planned stage.
    let trigger = dockerfile::parse_instruction_line("COPY --from=src /out /out").unwrap();
    let spanned = dockerfile::Spanned {
        node: trigger,
        span: dockerfile::Span {
            line: 3,
            col: 1,
            end_line: 3,
        },
        original: "ONBUILD COPY --from=src /out /out".into(),
    };
    let mut scope = Scope::new(&p, &p.stages[1], &[]);
    match scope.apply(&spanned).unwrap() {
        Expanded::Copy(c) => assert_eq!(c.from, Some(plan::CopySource::Stage(0))),
        other => panic!("{other:?}"),
    }
    // A broken trigger is an error at the FROM line.
    let bad = [(1, vec!["COPY --bogus=1 a b".to_string()])].into();
    let err = plan::plan_with_triggers(&df, &opts(), &bad).unwrap_err();
    assert!(
        err.to_string().starts_with("line 3: ONBUILD trigger"),
        "{err}"
    );
}

#[test]
fn chmod_takes_symbolic_modes_and_refuses_out_of_range_octal() {
    // BuildKit: ParseUint(v, 8) up to 07777, else a symbolic mode (BSD chmod syntax)
    // applied to each source's own mode; 10000 gets its "invalid chmod parameter" error.
    let err = dispatch("FROM scratch\nCOPY --chmod=10000 a /a\n", &opts()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "line 2: invalid chmod parameter: '10000'. it should be octal string and between 0 and 07777"
    );
    let err = dispatch("FROM scratch\nADD --chmod=u+q a /a\n", &opts()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "line 2: invalid chmod parameter: 'u+q': invalid syntax"
    );

    let dir = common::tempdir();
    let ctx = dir.path().join("ctx");
    fs::create_dir_all(ctx.join("d")).unwrap();
    for (name, mode) in [("rw", 0o666), ("exe", 0o777), ("d/f", 0o640)] {
        fs::write(ctx.join(name), name).unwrap();
        fs::set_permissions(
            ctx.join(name),
            std::os::unix::fs::PermissionsExt::from_mode(mode),
        )
        .unwrap();
    }
    fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY --chmod=go-w rw exe /out/\nCOPY --chmod=a=rX,u+w d /d/\n",
    )
    .unwrap();
    let layout = dir.path().join("oci");
    let out = common::run(
        common::cairn(&dir.path().join("store"))
            .args(["build", "--pull=never", "--compression=none"])
            .arg("-o")
            // OCI outputs default to gzip whatever the store holds: ask for plain tars.
            .arg(format!(
                "type=oci,dest={},compression=uncompressed",
                layout.display()
            ))
            .arg(&ctx),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let blob = |d: &str| fs::read(layout.join("blobs/sha256").join(&d[7..])).unwrap();
    let json = |d: &str| serde_json::from_slice::<serde_json::Value>(&blob(d)).unwrap();
    let index =
        serde_json::from_slice::<serde_json::Value>(&fs::read(layout.join("index.json")).unwrap())
            .unwrap();
    let manifest = json(index["manifests"][0]["digest"].as_str().unwrap());
    let mut modes = std::collections::BTreeMap::new();
    for layer in manifest["layers"].as_array().unwrap() {
        let bytes = blob(layer["digest"].as_str().unwrap());
        let mut archive = tar::Archive::new(&bytes[..]);
        for e in archive.entries().unwrap() {
            let e = e.unwrap();
            let path = e
                .path()
                .unwrap()
                .to_string_lossy()
                .trim_end_matches('/')
                .to_string();
            modes.insert(path, e.header().mode().unwrap() & 0o7777);
        }
    }
    assert_eq!(modes.get("out/rw"), Some(&0o644), "{modes:?}");
    assert_eq!(modes.get("out/exe"), Some(&0o755), "{modes:?}");
    assert_eq!(modes.get("d/f"), Some(&0o644), "{modes:?}");
}

#[test]
fn an_unknown_target_stage_gets_a_suggestion() {
    let df = dockerfile::parse(
        "FROM scratch AS build\nFROM scratch AS final\n",
        "Dockerfile",
    )
    .unwrap();
    let o = PlanOptions {
        target: Some("biuld".into()),
        ..opts()
    };
    assert_eq!(
        plan::plan(&df, &o).unwrap_err().to_string(),
        "target stage \"biuld\" could not be found (did you mean build?)"
    );
    let o = PlanOptions {
        target: Some("nothing-like-it".into()),
        ..opts()
    };
    assert_eq!(
        plan::plan(&df, &o).unwrap_err().to_string(),
        "target stage \"nothing-like-it\" could not be found"
    );
}

#[test]
fn errors_while_dispatching_name_the_dockerfile_line() {
    // BuildKit locates every dispatch error at its instruction (Dockerfile:LINE); cairn's
    // exit code stays the cause's.
    let (code, err) = key("FROM scratch\nENV A=1\nCOPY missing.txt /x\n", &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("Dockerfile:3: copy source \"missing.txt\": not found"),
        "{err}"
    );
    let (code, err) = key("FROM localhost:5000/absent:1\nRUN true\n", &[]);
    assert_eq!(code, Some(4), "{err}");
    assert!(
        err.contains("Dockerfile:1: localhost:5000/absent:1"),
        "{err}"
    );
    let (code, err) = key(
        "FROM scratch\n\nCOPY --from=localhost:5000/gone:2 /a /b\n",
        &[],
    );
    assert_eq!(code, Some(4), "{err}");
    assert!(err.contains("Dockerfile:3: localhost:5000/gone:2"), "{err}");
}
