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

/// One tar entry of an image layer, as a test compares it.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    uid: u64,
    gid: u64,
    mode: u32,
    /// `Some(target)` for a hard link.
    link: Option<String>,
    dir: bool,
}

/// Builds `dockerfile` over a context of `files` (path, body; a body of `None` is a
/// directory) as an uncompressed OCI layout; returns the layers' entries, top layer last.
fn build_layers(
    files: &[(&str, Option<&str>)],
    dockerfile: &str,
) -> Vec<std::collections::BTreeMap<String, Entry>> {
    let dir = common::tempdir();
    let ctx = dir.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    for (name, body) in files {
        match body {
            Some(b) => {
                fs::create_dir_all(ctx.join(name).parent().unwrap()).unwrap();
                fs::write(ctx.join(name), b).unwrap();
            }
            None => fs::create_dir_all(ctx.join(name)).unwrap(),
        }
    }
    fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    build_context_layers(dir.path(), &ctx)
}

fn build_context_layers(
    dir: &std::path::Path,
    ctx: &std::path::Path,
) -> Vec<std::collections::BTreeMap<String, Entry>> {
    build_layers_with(dir, ctx, &["--pull=never"])
}

/// [`build_context_layers`] with `args` instead of `--pull=never`.
fn build_layers_with(
    dir: &std::path::Path,
    ctx: &std::path::Path,
    args: &[&str],
) -> Vec<std::collections::BTreeMap<String, Entry>> {
    let layout = dir.join("oci");
    let out = common::run(
        common::cairn(&dir.join("store"))
            .args(["build", "--compression=none"])
            .args(args)
            .arg("-o")
            .arg(format!(
                "type=oci,dest={},compression=uncompressed",
                layout.display()
            ))
            .arg(ctx),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    layout_layers(&layout)
}

/// The layers' entries of the image in an uncompressed OCI layout, top layer last.
fn layout_layers(layout: &std::path::Path) -> Vec<std::collections::BTreeMap<String, Entry>> {
    let blob = |d: &str| fs::read(layout.join("blobs/sha256").join(&d[7..])).unwrap();
    let json = |d: &str| serde_json::from_slice::<serde_json::Value>(&blob(d)).unwrap();
    let index =
        serde_json::from_slice::<serde_json::Value>(&fs::read(layout.join("index.json")).unwrap())
            .unwrap();
    let manifest = json(index["manifests"][0]["digest"].as_str().unwrap());
    let mut layers = Vec::new();
    for layer in manifest["layers"].as_array().unwrap() {
        let bytes = blob(layer["digest"].as_str().unwrap());
        let mut archive = tar::Archive::new(&bytes[..]);
        let mut entries = std::collections::BTreeMap::new();
        for e in archive.entries().unwrap() {
            let e = e.unwrap();
            let h = e.header();
            let path = e
                .path()
                .unwrap()
                .to_string_lossy()
                .trim_end_matches('/')
                .to_string();
            let link = (h.entry_type() == tar::EntryType::Link).then(|| {
                e.link_name()
                    .unwrap()
                    .unwrap()
                    .to_string_lossy()
                    .trim_start_matches('/')
                    .to_string()
            });
            entries.insert(
                path,
                Entry {
                    uid: h.uid().unwrap(),
                    gid: h.gid().unwrap(),
                    mode: h.mode().unwrap() & 0o7777,
                    link,
                    dir: h.entry_type() == tar::EntryType::Directory,
                },
            );
        }
        layers.push(entries);
    }
    layers
}

#[test]
fn copy_from_keeps_the_source_owner_and_hard_links() {
    // BuildKit (TestCopyFromOwnership-like checks, copy.go's KeepOwnership when no
    // --chown): files copied out of a stage keep their uid:gid, and a hard link stays a link.
    common::require_root();
    let dir = common::tempdir();
    let ctx = dir.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("a"), "same inode").unwrap();
    fs::hard_link(ctx.join("a"), ctx.join("b")).unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch AS build\nCOPY --chown=100:200 a b /out/\n\
         FROM scratch\nCOPY --from=build /out /copied\nCOPY --from=build --chown=7:8 /out/a /owned\n",
    )
    .unwrap();
    let layers = build_context_layers(dir.path(), &ctx);
    assert_eq!(layers.len(), 2, "{layers:?}");
    let copied = &layers[0];
    let a = copied.get("copied/a").expect("copied/a");
    assert_eq!((a.uid, a.gid), (100, 200), "{copied:?}");
    let b = copied.get("copied/b").expect("copied/b");
    assert_eq!(b.link.as_deref(), Some("copied/a"), "{copied:?}");
    let owned = layers[1].get("owned").expect("owned");
    assert_eq!((owned.uid, owned.gid), (7, 8), "{:?}", layers[1]);
}

#[test]
fn copy_owners_of_new_and_existing_directories() {
    // BuildKit (moby's testBuildPreserveOwnership): the directory a COPY creates for a
    // directory source is root's unless --chown; an existing destination directory keeps
    // its owner even with --chown; new entries, created parents included, get the --chown
    // owner.
    common::require_root();
    let layers = build_layers(
        &[
            ("file", Some("f")),
            ("dir/subdir/nestedfile", Some("n")),
            ("nested", Some("n2")),
            ("existingdir/existingsubdir/x", Some("x")),
            ("existingdir/existingfile", Some("e")),
        ],
        "FROM scratch AS source\n\
         COPY --chown=100:200 dir /dir\n\
         COPY --chown=102:202 nested /dir/subdir/nestedfile\n\
         FROM scratch AS base\n\
         COPY --chown=500:600 existingdir /existingdir\n\
         FROM base\n\
         COPY --from=source /dir /dir\n\
         COPY --from=source /dir/. /existingdir\n\
         COPY --from=source --chown=300:400 /dir /cdir\n\
         COPY --from=source --chown=300:400 /dir/. /existingdir/\n\
         COPY --chown=300:400 file /new/parent/file\n",
    );
    assert_eq!(layers.len(), 6, "{layers:?}");
    let owner = |l: usize, p: &str| {
        let e = layers[l]
            .get(p)
            .unwrap_or_else(|| panic!("{p} in {:?}", layers[l]));
        (e.uid, e.gid)
    };
    assert_eq!(owner(1, "dir"), (0, 0));
    assert_eq!(owner(1, "dir/subdir"), (100, 200));
    assert_eq!(owner(1, "dir/subdir/nestedfile"), (102, 202));
    assert_eq!(owner(2, "existingdir"), (500, 600));
    assert_eq!(owner(2, "existingdir/subdir"), (100, 200));
    assert_eq!(owner(3, "cdir"), (300, 400));
    assert_eq!(owner(3, "cdir/subdir/nestedfile"), (300, 400));
    assert_eq!(owner(4, "existingdir"), (500, 600));
    assert_eq!(owner(4, "existingdir/subdir"), (300, 400));
    assert_eq!(owner(5, "new"), (300, 400));
    assert_eq!(owner(5, "new/parent"), (300, 400));
    assert_eq!(layers[5]["new/parent"].mode, 0o755);
    assert_eq!(owner(5, "new/parent/file"), (300, 400));
}

#[test]
fn an_absolute_symlink_in_a_copy_from_source_resolves_in_that_stage() {
    // BuildKit resolves a source path inside the source's root: `/sub -> /out/sub` in the
    // stage makes `/sub/foo` that stage's `/out/sub/foo`, never the host's.
    common::require_root();
    let dir = common::tempdir();
    let ctx = dir.path().join("ctx");
    fs::create_dir_all(ctx.join("root")).unwrap();
    fs::write(ctx.join("foo"), "foo").unwrap();
    std::os::unix::fs::symlink("/out/sub", ctx.join("root/sub")).unwrap();
    std::os::unix::fs::symlink("../out/sub", ctx.join("root/rel")).unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch AS build\nCOPY foo /out/sub/foo\nCOPY root/ /\n\
         FROM scratch\nCOPY --from=build /sub/foo /got\nCOPY --from=build /rel/fo* /globbed/\n",
    )
    .unwrap();
    let layers = build_context_layers(dir.path(), &ctx);
    assert_eq!(layers.len(), 2, "{layers:?}");
    assert!(layers[0].get("got").is_some_and(|e| !e.dir), "{layers:?}");
    assert!(layers[1].contains_key("globbed/foo"), "{layers:?}");
}

#[test]
fn a_destination_through_an_existing_symlink_follows_it() {
    // BuildKit copies onto the merged root, so a directory on the destination path that is a
    // symlink in the image is followed (inside the image's root), for COPY and for what ADD
    // extracts from a tar (`var/run -> /run`).
    common::require_root();
    let dir = common::tempdir();
    let ctx = dir.path().join("ctx");
    fs::create_dir_all(ctx.join("root/real/deep")).unwrap();
    fs::create_dir_all(ctx.join("root/run")).unwrap();
    fs::create_dir_all(ctx.join("root/var")).unwrap();
    std::os::unix::fs::symlink("/real", ctx.join("root/link")).unwrap();
    std::os::unix::fs::symlink("../run", ctx.join("root/var/run")).unwrap();
    fs::write(ctx.join("foo"), "foo").unwrap();
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(3);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    tar.append_data(&mut h, "var/run/pid", &b"123"[..]).unwrap();
    fs::write(ctx.join("t.tar"), tar.into_inner().unwrap()).unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY root/ /\nCOPY foo /link/\nCOPY foo /link/deep/bar\nADD t.tar /\n",
    )
    .unwrap();
    let layers = build_context_layers(dir.path(), &ctx);
    assert_eq!(layers.len(), 4, "{layers:?}");
    for (l, want, gone) in [
        (1, "real/foo", "link"),
        (2, "real/deep/bar", "link"),
        (3, "run/pid", "var/run"),
    ] {
        assert!(layers[l].contains_key(want), "{want} in {:?}", layers[l]);
        assert!(!layers[l].contains_key(gone), "{gone} in {:?}", layers[l]);
    }
}

#[test]
fn a_run_heredoc_with_a_shebang_runs_under_that_interpreter() {
    // BuildKit (testHeredocShebang-like): `RUN <<EOF` whose body starts with `#!` runs the
    // body as a script file, so the kernel's shebang rule picks the interpreter.
    common::require_root();
    let reg = common::registry::Registry::start();
    common::images::push_busybox(&reg, "heredoc/busybox:1");
    let dir = common::tempdir();
    let ctx = dir.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM {}/heredoc/busybox:1\n\
             RUN <<EOF\n#!/bin/awk -f\nBEGIN {{ print \"awk says \" 6*7 }}\nEOF\n\
             RUN <<EOT\n#!/usr/bin/env sh\necho \"env ran $0\"\nEOT\n",
            reg.addr
        ),
    )
    .unwrap();
    let out = common::run(
        common::cairn(&dir.path().join("store"))
            .args(["build", "--progress=plain"])
            .arg(&ctx),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("awk says 42"), "{err}");
    assert!(err.contains("env ran "), "{err}");
}

#[test]
fn copy_and_add_flags_cairn_cannot_honour_are_refused_with_their_line() {
    // Never silently ignored: `**` in `COPY --parents` (not supported yet) and BuildKit's
    // own checks on `ADD --checksum` (one source, and an HTTP(S) or Git one).
    for (df, want) in [
        (
            "FROM scratch\n\nCOPY --parents a/**/b /d/\n",
            "Dockerfile:3: copy source \"a/**/b\": `**` in COPY --parents is not supported by cairn yet",
        ),
        (
            "FROM scratch\nADD --checksum=sha256:0000000000000000000000000000000000000000000000000000000000000000 a /a\n",
            "Dockerfile:2: checksum requires HTTP(S) or Git sources",
        ),
        (
            "FROM scratch\nADD --checksum=sha256:0000000000000000000000000000000000000000000000000000000000000000 http://h/a http://h/b /d/\n",
            "Dockerfile:2: checksum can't be specified for multiple sources",
        ),
    ] {
        let (code, err) = key(df, &[]);
        assert_eq!(code, Some(2), "{df}: {err}");
        assert!(err.contains(want), "{df}: {err}");
    }
}

#[test]
fn add_unpack_true_extracts_a_downloaded_archive() {
    // BuildKit: a remote archive is copied as a file, unless `--unpack=true` asks for it
    // to be extracted as a local one would be.
    common::require_root();
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(2);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    tar.append_data(&mut h, "inside/hi", &b"hi"[..]).unwrap();
    let served = tar.into_inner().unwrap();
    let web = common::registry::TinyServer::start(move |_| {
        common::registry::Reply::ok("application/x-tar", served.clone())
    });
    let layers = build_layers(
        &[],
        &format!(
            "FROM scratch\nADD --unpack=true http://{0}/t.tar /x/\nADD http://{0}/t.tar /y/\n",
            web.addr
        ),
    );
    assert_eq!(layers.len(), 2, "{layers:?}");
    assert!(layers[0].contains_key("x/inside/hi"), "{:?}", layers[0]);
    assert!(!layers[0].contains_key("x/t.tar"), "{:?}", layers[0]);
    assert!(layers[1].contains_key("y/t.tar"), "{:?}", layers[1]);
}

#[test]
fn workdir_creates_its_directory_owned_by_the_user_in_force() {
    // BuildKit's dispatchWorkdir: a WORKDIR other than `/` is a mkdir -p (mode 0755) with
    // its own layer (testWorkdirCreatesDir: `FROM scratch` + `WORKDIR /foo` has `/foo`);
    // after USER the directories it creates belong to that user (testWorkdirUser); one
    // that exists is left as it is (testWorkdirExists), so that step adds no layer.
    common::require_root();
    let layers = build_layers(
        &[
            (
                "passwd",
                Some("root:x:0:0::/root:/bin/sh\nuser:x:1000:1001::/home/user:/bin/sh\n"),
            ),
            ("group", Some("root:x:0:\nuser:x:1001:\n")),
            ("owned/keep", Some("k")),
        ],
        "FROM scratch\n\
         COPY passwd group /etc/\n\
         COPY --chown=5:6 owned /owned\n\
         WORKDIR /foo\n\
         WORKDIR /\n\
         USER user\n\
         WORKDIR /mydir/sub\n\
         WORKDIR /owned\n\
         WORKDIR /foo\n\
         WORKDIR deeper\n",
    );
    type Owned<'a> = Vec<(&'a str, (u64, u64, u32))>;
    let summary: Vec<Owned> = layers
        .iter()
        .skip(2)
        .map(|l| {
            l.iter()
                .map(|(p, e)| (p.as_str(), (e.uid, e.gid, e.mode)))
                .collect()
        })
        .collect();
    assert_eq!(
        summary,
        [
            vec![("foo", (0, 0, 0o755))],
            vec![
                ("mydir", (1000, 1001, 0o755)),
                ("mydir/sub", (1000, 1001, 0o755))
            ],
            // `/foo` exists (root's, and stays so); only `deeper` is new.
            vec![("foo", (0, 0, 0o755)), ("foo/deeper", (1000, 1001, 0o755))],
        ],
        "{layers:?}"
    );
}

#[test]
fn an_onbuild_copy_from_a_stage_of_the_child_builds_end_to_end() {
    // BuildKit reads each base's config before it plans the stage graph, so a trigger's
    // `COPY --from=src` names a stage of the child's Dockerfile (testOnBuildNamedContext,
    // the "stage src is not part of this build plan" case of issue 14) and that stage is
    // built first, even though nothing else in the child names it.
    common::require_root();
    let reg = common::registry::Registry::start();
    let dir = common::tempdir();
    let base_ctx = dir.path().join("base");
    fs::create_dir_all(&base_ctx).unwrap();
    fs::write(base_ctx.join("marker"), "base").unwrap();
    fs::write(
        base_ctx.join("Dockerfile"),
        "FROM scratch\nCOPY marker /marker\nONBUILD COPY --from=src /out /from-src\n",
    )
    .unwrap();
    let base = format!("{}/onbuild/base:1", reg.addr);
    let out = common::run(
        common::cairn(&dir.path().join("store"))
            .args(["build", "-q", "--push", "-t", &base])
            .arg(&base_ctx),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let child = dir.path().join("child");
    fs::create_dir_all(&child).unwrap();
    fs::write(child.join("f"), "from the child's stage").unwrap();
    fs::write(
        child.join("Dockerfile"),
        format!("FROM scratch AS src\nCOPY f /out/f\nFROM {base} AS child\nENV A=1\n"),
    )
    .unwrap();
    let layers = build_layers_with(dir.path(), &child, &[]);
    assert_eq!(layers.len(), 2, "{layers:?}");
    assert!(layers[0].contains_key("marker"), "{layers:?}");
    assert!(layers[1].contains_key("from-src/f"), "{layers:?}");

    // A stage of the same Dockerfile as the base: its ONBUILD triggers plan the same way.
    let df = dockerfile::parse(
        "FROM scratch AS src\nCOPY f /out\nFROM scratch AS base\nONBUILD COPY --from=src /out /out\nFROM base\nENV A=1\n",
        "Dockerfile",
    )
    .unwrap();
    let p = plan::plan(&df, &opts()).unwrap();
    let planned: Vec<_> = p.stages.iter().map(|s| s.index).collect();
    assert_eq!(planned, [0, 1, 2]);
}

#[test]
fn add_unpack_true_of_a_url_has_a_key_of_its_own() {
    // Before `ADD --unpack=true <url>` extracted the download, it copied the archive as a
    // file under the same key text: such cache entries must not be hits now. Only that
    // form moves; a local archive's ADD (which always extracted) keeps its key text.
    let canonical =
        |line: &str| dispatch(&format!("FROM scratch\n{line}\n"), &opts()).unwrap()[0].canonical();
    let before_the_fix = r#"ADD {"checksum":null,"chmod":null,"chown":null,"dest":"/x/","exclude":[],"from":null,"heredocs":[],"keep_git_dir":null,"link":false,"parents":false,"sources":["http://h.test/t.tar"],"unpack":true}"#;
    assert_ne!(
        canonical("ADD --unpack=true http://h.test/t.tar /x/"),
        before_the_fix
    );
    assert_eq!(
        canonical("ADD --unpack=true t.tar /x/"),
        before_the_fix.replace("http://h.test/t.tar", "t.tar")
    );
    assert_eq!(
        canonical("ADD http://h.test/t.tar /x/"),
        before_the_fix.replace("\"unpack\":true", "\"unpack\":null")
    );
}

#[test]
fn exclude_patterns_with_wildcard_sources_and_directories_merged_without_a_slash() {
    // BuildKit (its exclude-patterns integration test): `--exclude` is matched against the
    // path under each source a wildcard matched; several directories matched by a
    // wildcard are merged into a destination written without a trailing `/`, and an
    // exclude that leaves nothing still makes the destination directory.
    common::require_root();
    let files = [
        ("a1/one.png", Some("1")),
        ("a1/two.txt", Some("2")),
        ("a2/three.pdf", Some("3")),
        ("a2/four.png", Some("4")),
        ("b3/five.mp3", Some("5")),
        ("b3/six.mpeg", Some("6")),
    ];
    let layers = build_layers(
        &files,
        "FROM scratch\n\
         COPY --exclude=*/*.png . /all\n\
         COPY --exclude=*.png --exclude=*.txt --exclude=*.pdf a* b* /merged/\n\
         ADD --exclude=*.mp* --exclude=*.png a* b* /noslash\n\
         COPY --exclude=* a* /empty\n",
    );
    let names = |l: usize| -> Vec<String> {
        layers[l]
            .iter()
            .filter(|(_, e)| !e.dir)
            .map(|(p, _)| p.clone())
            .collect()
    };
    assert_eq!(layers.len(), 4, "{layers:?}");
    assert_eq!(
        names(0),
        [
            "all/Dockerfile",
            "all/a1/two.txt",
            "all/a2/three.pdf",
            "all/b3/five.mp3",
            "all/b3/six.mpeg"
        ]
    );
    assert_eq!(names(1), ["merged/five.mp3", "merged/six.mpeg"]);
    assert_eq!(names(2), ["noslash/three.pdf", "noslash/two.txt"]);
    assert!(
        layers[3].get("empty").is_some_and(|e| e.dir),
        "{:?}",
        layers[3]
    );
    assert_eq!(names(3), Vec::<String>::new());
}

#[test]
fn several_files_into_a_destination_without_a_slash_are_refused() {
    // BuildKit copies each file over the one before (moby/buildkit#1853 and #4550, open
    // bugs: the last match wins); the Dockerfile reference and the classic builder refuse
    // it. cairn refuses it with the reference's words and the line, rather than drop files.
    let dir = common::tempdir();
    let ctx = dir.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    for f in ["x1.txt", "x2.txt"] {
        fs::write(ctx.join(f), f).unwrap();
    }
    fs::write(ctx.join("Dockerfile"), "FROM scratch\nCOPY x*.txt /dest\n").unwrap();
    let out = common::run(
        common::cairn(&dir.path().join("store"))
            .args(["key", "--pull=never"])
            .arg(&ctx),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("Dockerfile:2: When using COPY with more than one source file, the destination must be a directory and end with a /"),
        "{err}"
    );
    // One match is a file named as the destination (BuildKit's `COPY f*.go foo2.go`).
    fs::write(ctx.join("Dockerfile"), "FROM scratch\nCOPY x1* /dest\n").unwrap();
    let layers = build_context_layers(dir.path(), &ctx);
    assert!(layers[0].get("dest").is_some_and(|e| !e.dir), "{layers:?}");
}

#[test]
fn sockets_in_the_context_become_empty_files_and_fifos_stay_fifos() {
    // BuildKit's context transfer (fsutil) clears a socket's type bit and cannot open it,
    // so a socket arrives as an empty regular file with the socket's permission bits; a
    // FIFO is made again as a FIFO, its content never read.
    common::require_root();
    let dir = common::tempdir();
    let ctx = dir.path().join("ctx");
    fs::create_dir_all(ctx.join("d")).unwrap();
    let _listener = std::os::unix::net::UnixListener::bind(ctx.join("d/sock")).unwrap();
    fs::set_permissions(
        ctx.join("d/sock"),
        std::os::unix::fs::PermissionsExt::from_mode(0o751),
    )
    .unwrap();
    nix::unistd::mkfifo(
        &ctx.join("d/fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o640),
    )
    .unwrap();
    fs::write(ctx.join("d/plain"), "p").unwrap();
    fs::write(ctx.join("Dockerfile"), "FROM scratch\nCOPY d /d\n").unwrap();
    let layout = dir.path().join("oci");
    let out = common::run(
        common::cairn(&dir.path().join("store"))
            .args(["build", "--pull=never", "--compression=none"])
            .arg("-o")
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
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&blob(index["manifests"][0]["digest"].as_str().unwrap())).unwrap();
    let bytes = blob(manifest["layers"][0]["digest"].as_str().unwrap());
    let mut seen = std::collections::BTreeMap::new();
    for e in tar::Archive::new(&bytes[..]).entries().unwrap() {
        let e = e.unwrap();
        let h = e.header();
        seen.insert(
            e.path()
                .unwrap()
                .to_string_lossy()
                .trim_end_matches('/')
                .to_string(),
            (
                h.entry_type(),
                h.mode().unwrap() & 0o7777,
                h.size().unwrap(),
            ),
        );
    }
    assert_eq!(
        seen.get("d/sock"),
        Some(&(tar::EntryType::Regular, 0o751, 0)),
        "{seen:?}"
    );
    assert_eq!(
        seen.get("d/fifo"),
        Some(&(tar::EntryType::Fifo, 0o640, 0)),
        "{seen:?}"
    );
    assert!(seen.contains_key("d/plain"), "{seen:?}");
}

#[test]
fn copy_parents_keeps_the_source_path_below_its_pivot() {
    // BuildKit's `COPY --parents` (stable in dockerfile 1.7): each source keeps its path
    // under the destination, from the context root, or from the `/./` pivot written in it;
    // the parent directories come with their own modes. Works for `--from` too.
    common::require_root();
    let dir = common::tempdir();
    let ctx = dir.path().join("ctx");
    fs::create_dir_all(ctx.join("p1/p2")).unwrap();
    fs::write(ctx.join("p1/p2/bar"), "bar").unwrap();
    fs::write(ctx.join("p1/p2/baz"), "baz").unwrap();
    fs::set_permissions(
        ctx.join("p1"),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch AS base\n\
         COPY --parents p1/p2/bar /\n\
         WORKDIR /test\n\
         COPY --parents p1/p2/ba* .\n\
         COPY --parents ./p1/./p2/bar /pivot/\n\
         FROM base\n\
         COPY --from=base --parents /test/./p1/*/baz /out/\n",
    )
    .unwrap();
    let layers = build_context_layers(dir.path(), &ctx);
    let paths = |l: usize| -> Vec<(String, bool, u32)> {
        layers[l]
            .iter()
            .map(|(p, e)| (p.clone(), e.dir, e.mode))
            .collect()
    };
    assert_eq!(layers.len(), 5, "{layers:?}");
    assert_eq!(
        paths(0),
        [
            ("p1".into(), true, 0o700),
            ("p1/p2".into(), true, 0o755),
            ("p1/p2/bar".into(), false, 0o644)
        ]
    );
    let files = |l: usize| -> Vec<String> {
        paths(l)
            .into_iter()
            .filter(|(_, d, _)| !d)
            .map(|(p, _, _)| p)
            .collect()
    };
    assert_eq!(files(2), ["test/p1/p2/bar", "test/p1/p2/baz"]);
    assert_eq!(files(3), ["pivot/p2/bar"]);
    assert!(!layers[3].contains_key("pivot/p1"), "{:?}", layers[3]);
    assert_eq!(files(4), ["out/p1/p2/baz"]);
}

#[test]
fn workdir_owner_rootless() {
    // The same rule built by an unprivileged user with subordinate ids: the directories
    // WORKDIR creates after USER belong to that user in the layer, existing ones keep theirs.
    common::require_root();
    let dir = common::tempdir();
    let ctx = dir.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(
        ctx.join("passwd"),
        "root:x:0:0::/root:/bin/sh\nuser:x:1000:1001::/home/user:/bin/sh\n",
    )
    .unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY passwd /etc/passwd\nWORKDIR /srv\nUSER user\nWORKDIR /srv/app/data\n",
    )
    .unwrap();
    common::run_ok(
        std::process::Command::new("chown")
            .args(["-R", "cairntest"])
            .arg(dir.path()),
    );
    let layout = dir.path().join("oci");
    let out = common::run(
        std::process::Command::new("runuser")
            .args(["-u", "cairntest", "--", "env", "HOME=/home/cairntest"])
            .arg(format!("CAIRN_ROOT={}", dir.path().join("store").display()))
            .arg(common::cairn_bin())
            .args(["build", "--compression=none", "-o"])
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
    let layers = layout_layers(&layout);
    assert_eq!(layers.len(), 3, "{layers:?}");
    let owner = |l: usize, p: &str| layers[l].get(p).map(|e| (e.uid, e.gid, e.mode));
    assert_eq!(owner(1, "srv"), Some((0, 0, 0o755)), "{layers:?}");
    assert_eq!(owner(2, "srv"), Some((0, 0, 0o755)), "{layers:?}");
    assert_eq!(owner(2, "srv/app"), Some((1000, 1001, 0o755)), "{layers:?}");
    assert_eq!(
        owner(2, "srv/app/data"),
        Some((1000, 1001, 0o755)),
        "{layers:?}"
    );
}
