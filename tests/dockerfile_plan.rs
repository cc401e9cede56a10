//! The plan and the per-stage scope: ARG scoping, `--target`, the `--from` graph, and the
//! expansion of every instruction's words with BuildKit's variable semantics.

use cairn::dockerfile::{self, Heredoc, ShellOrExec};
use cairn::plan::{self, Base, CopySource, Expanded, Plan, PlanOptions, Scope};
use cairn::Platform;
use std::collections::BTreeMap;

fn opts(args: &[(&str, &str)], target: Option<&str>) -> PlanOptions {
    PlanOptions {
        build_args: args
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        target: target.map(str::to_string),
        target_platform: "linux/arm64".parse().unwrap(),
        build_platform: "linux/amd64".parse().unwrap(),
    }
}

fn plan_of(src: &str, o: &PlanOptions) -> Result<Plan, plan::Error> {
    let df = dockerfile::parse(src, "Dockerfile").expect("parses");
    plan::plan(&df, o)
}

/// Applies every instruction of the plan's last stage; returns the expansions and the scope.
fn run_last(src: &str, o: &PlanOptions, image_env: &[&str]) -> (Vec<Expanded>, Scope) {
    let p = plan_of(src, o).expect("plans");
    let stage = p.stages.last().expect("a stage");
    let env: Vec<String> = image_env.iter().map(|s| s.to_string()).collect();
    let mut scope = Scope::new(&p, stage, &env);
    let out = stage
        .instructions
        .iter()
        .map(|i| scope.apply(i).expect("applies"))
        .collect();
    (out, scope)
}

fn env_of(e: &Expanded) -> Vec<(String, String)> {
    match e {
        Expanded::Env(kv) | Expanded::Label(kv) => kv.clone(),
        other => panic!("not ENV: {other:?}"),
    }
}

#[test]
fn global_args_are_seen_by_from_only_until_redeclared() {
    let src = "ARG V=3.20\nFROM alpine:$V\nENV A=x$V\nARG V\nENV B=x$V\n";
    let p = plan_of(src, &opts(&[], None)).unwrap();
    assert_eq!(p.stages[0].base, Base::Image("alpine:3.20".into()));
    let (out, _) = run_last(src, &opts(&[], None), &[]);
    assert_eq!(env_of(&out[0]), [("A".into(), "x".into())]);
    assert_eq!(env_of(&out[2]), [("B".into(), "x3.20".into())]);
    let (out, _) = run_last(src, &opts(&[("V", "edge")], None), &[]);
    assert_eq!(env_of(&out[2]), [("B".into(), "xedge".into())]);
}

#[test]
fn arg_defaults_expand_in_the_stage_and_build_args_win() {
    let src = "FROM scratch\nENV BASE=/opt\nARG DIR=$BASE/app OTHER=$DIR/x\nWORKDIR $OTHER\n";
    let (out, _) = run_last(src, &opts(&[], None), &[]);
    assert_eq!(out[2], Expanded::Workdir("/opt/app/x".into()));
    let (out, _) = run_last(src, &opts(&[("DIR", "$NOT_EXPANDED")], None), &[]);
    assert_eq!(out[2], Expanded::Workdir("$NOT_EXPANDED/x".into()));
}

#[test]
fn env_pairs_expand_before_any_is_set() {
    let src = "FROM scratch\nENV A=1\nENV A=2 B=$A\nENV C=$A\n";
    let (out, scope) = run_last(src, &opts(&[], None), &["PATH=/bin"]);
    assert_eq!(
        env_of(&out[1]),
        [("A".into(), "2".into()), ("B".into(), "1".into())]
    );
    assert_eq!(env_of(&out[2]), [("C".into(), "2".into())]);
    assert_eq!(scope.config_env(), ["PATH=/bin", "A=2", "B=1", "C=2"]);
}

#[test]
fn args_are_in_run_env_but_not_in_config_env() {
    let src = "FROM scratch\nARG BUILD=1\nENV PATH=/usr/bin:$PATH\nENV TAG=env\nARG TAG=arg\n";
    let (_, scope) = run_last(
        src,
        &opts(&[("HTTP_PROXY", "http://proxy:3128")], None),
        &["PATH=/bin", "HOME=/root"],
    );
    assert_eq!(
        scope.run_env(),
        [
            "PATH=/usr/bin:/bin",
            "HOME=/root",
            "BUILD=1",
            "TAG=arg",
            "HTTP_PROXY=http://proxy:3128",
            "http_proxy=http://proxy:3128"
        ]
    );
    // Proxies reach RUN but not the cache key, as in BuildKit.
    assert_eq!(
        scope.key_env(),
        ["PATH=/usr/bin:/bin", "HOME=/root", "BUILD=1", "TAG=arg"]
    );
    assert_eq!(
        scope.config_env(),
        ["PATH=/usr/bin:/bin", "HOME=/root", "TAG=env"]
    );
}

#[test]
fn platform_args_need_redeclaring() {
    let src = "FROM --platform=$BUILDPLATFORM scratch AS b\nENV A=$TARGETARCH\nARG TARGETARCH TARGETPLATFORM BUILDOS\nENV B=$TARGETARCH C=$TARGETPLATFORM D=$BUILDOS\n";
    let p = plan_of(src, &opts(&[], None)).unwrap();
    assert_eq!(
        p.stages[0].platform,
        Some(Platform::new("linux", "amd64", None))
    );
    let (out, _) = run_last(src, &opts(&[], None), &[]);
    assert_eq!(env_of(&out[0]), [("A".into(), "".into())]);
    assert_eq!(
        env_of(&out[2]),
        [
            ("B".into(), "arm64".into()),
            ("C".into(), "linux/arm64/v8".into()),
            ("D".into(), "linux".into())
        ]
    );
}

const GRAPH: &str = "\
FROM alpine AS base
FROM base AS build
RUN --mount=type=cache,target=/c,from=cachesrc true
FROM busybox AS cachesrc
FROM scratch AS unrelated
FROM scratch AS final
COPY --from=build /out /out
COPY --from=0 /etc /etc
COPY --from=nginx:latest /x /x
";

#[test]
fn target_and_dependency_order() {
    let p = plan_of(GRAPH, &opts(&[], None)).unwrap();
    let order: Vec<usize> = p.stages.iter().map(|s| s.index).collect();
    assert_eq!(order, [0, 2, 1, 4]);
    assert_eq!(p.stages[2].base, Base::Stage(0));
    assert_eq!(p.stages[0].base, Base::Image("alpine".into()));
    assert_eq!(p.stages[3].base, Base::Scratch);
    let (out, _) = run_last(GRAPH, &opts(&[], None), &[]);
    let froms: Vec<Option<CopySource>> = out
        .iter()
        .map(|e| match e {
            Expanded::Copy(c) => c.from.clone(),
            _ => None,
        })
        .collect();
    assert_eq!(
        froms,
        [
            Some(CopySource::Stage(2)),
            Some(CopySource::Stage(0)),
            Some(CopySource::Image("nginx:latest".into()))
        ]
    );
    let p = plan_of(GRAPH, &opts(&[], Some("BUILD"))).unwrap();
    assert_eq!(
        p.stages.iter().map(|s| s.index).collect::<Vec<_>>(),
        [0, 2, 1]
    );
    let p = plan_of(GRAPH, &opts(&[], Some("unrelated"))).unwrap();
    assert_eq!(p.stages.len(), 1);
}

#[test]
fn mount_from_resolves_to_a_planned_stage() {
    let p = plan_of(GRAPH, &opts(&[], Some("build"))).unwrap();
    let stage = p.stages.last().unwrap();
    let mut scope = Scope::new(&p, stage, &[]);
    match scope.apply(&stage.instructions[0]).unwrap() {
        Expanded::Run(r) => {
            assert_eq!(r.mounts[0].from, Some(CopySource::Stage(1)));
            assert_eq!(r.mounts[0].target.as_deref(), Some("/c"));
            assert_eq!(r.cmd, ShellOrExec::Shell("true".into()));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn plan_errors() {
    let o = opts(&[], None);
    assert_eq!(
        plan_of(GRAPH, &opts(&[], Some("nope")))
            .unwrap_err()
            .to_string(),
        "target stage \"nope\" could not be found"
    );
    let cyc = "FROM scratch AS a\nCOPY --from=b / /\nFROM scratch AS b\nCOPY --from=a / /\n";
    let err = plan_of(cyc, &o).unwrap_err().to_string();
    assert!(
        err.contains("circular dependency detected on stage"),
        "{err}"
    );
    let own = "FROM scratch AS a\nCOPY --from=a / /\n";
    assert!(plan_of(own, &o)
        .unwrap_err()
        .to_string()
        .contains("circular"));
    assert!(plan_of("FROM scratch\nCOPY --from=7 / /\n", &o).is_err());
    let blank = "ARG B\nFROM $B\n";
    assert_eq!(
        plan_of(blank, &o).unwrap_err().to_string(),
        "line 2: base name ($B) should not be blank"
    );
    assert!(plan_of("FROM --platform=weird scratch\n", &o).is_err());
    assert!(plan_of("FROM ${X:?need_X}\n", &o)
        .unwrap_err()
        .to_string()
        .contains("X: need_X"));
}

#[test]
fn unused_build_args_skip_declared_and_predefined() {
    let src = "ARG G\nFROM scratch AS a\nARG USED\nFROM scratch\nARG OTHER_STAGE\n";
    let p = plan_of(
        src,
        &opts(
            &[
                ("G", "1"),
                ("USED", "1"),
                ("NOPE", "1"),
                ("http_proxy", "x"),
                ("BUILDKIT_INLINE_CACHE", "1"),
            ],
            Some("a"),
        ),
    )
    .unwrap();
    assert_eq!(p.unused_build_args, ["NOPE"]);
}

#[test]
fn which_instructions_expand() {
    let src = "FROM scratch\nENV D=/dst U=app P=8080 S=TERM\nRUN echo $D\nCMD echo $D\nENTRYPOINT [\"$D\"]\n\
COPY --chown=$U:$U --chmod=755 --exclude=$U.md src/$U $D/\nUSER $U\nEXPOSE $P \"${P}/udp\"\nVOLUME $D /v\n\
STOPSIGNAL SIG$S\nSHELL [\"$D\"]\nHEALTHCHECK CMD $D\nONBUILD RUN $D\nLABEL k=$U\nMAINTAINER $U\n";
    let (out, _) = run_last(src, &opts(&[], None), &[]);
    let Expanded::Run(run) = &out[1] else {
        panic!("{:?}", out[1])
    };
    assert_eq!(run.cmd, ShellOrExec::Shell("echo $D".into()));
    assert_eq!(out[2], Expanded::Cmd(ShellOrExec::Shell("echo $D".into())));
    assert_eq!(
        out[3],
        Expanded::Entrypoint(ShellOrExec::Exec(vec!["$D".into()]))
    );
    match &out[4] {
        Expanded::Copy(c) => {
            assert_eq!(c.sources, ["src/app"]);
            assert_eq!(c.dest, "/dst/");
            assert_eq!(c.chown.as_deref(), Some("app:app"));
            assert_eq!(c.exclude, ["app.md"]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(out[5], Expanded::User("app".into()));
    assert_eq!(
        out[6],
        Expanded::Expose(vec!["8080".into(), "8080/udp".into()])
    );
    assert_eq!(out[7], Expanded::Volume(vec!["/dst".into(), "/v".into()]));
    assert_eq!(out[8], Expanded::StopSignal("SIGTERM".into()));
    assert_eq!(out[9], Expanded::Shell(vec!["$D".into()]));
    assert!(out[10].canonical().contains("$D"));
    assert_eq!(out[11], Expanded::Onbuild("RUN $D".into()));
    assert_eq!(env_of(&out[12]), [("k".into(), "app".into())]);
    assert_eq!(out[13], Expanded::Maintainer("$U".into()));
}

#[test]
fn copy_heredoc_bodies_expand_unless_quoted() {
    let src = "FROM scratch\nARG NAME=world\nCOPY <<EOF <<'RAW' /d/\nhello \"$NAME\" \\$NAME\nEOF\nraw $NAME\nRAW\nRUN <<EOF\necho $NAME\nEOF\n";
    let (out, _) = run_last(src, &opts(&[], None), &[]);
    let Expanded::Copy(c) = &out[1] else {
        panic!("{:?}", out[1])
    };
    let bodies: Vec<&str> = c
        .heredocs
        .iter()
        .map(|h: &Heredoc| h.body.as_str())
        .collect();
    assert_eq!(bodies, ["hello \"world\" $NAME\n", "raw $NAME\n"]);
    assert!(c.sources.is_empty(), "{:?}", c.sources);
    assert_eq!(c.dest, "/d/");
    let Expanded::Run(r) = &out[2] else { panic!() };
    assert_eq!(r.heredocs[0].body, "echo $NAME\n");
}

#[test]
fn expansion_errors_carry_the_line() {
    let src = "FROM scratch\n\nWORKDIR ${DIR:?set DIR}\n";
    let p = plan_of(src, &opts(&[], None)).unwrap();
    let mut scope = Scope::new(&p, &p.stages[0], &[]);
    let err = scope
        .apply(&p.stages[0].instructions[0])
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("line 3: ") && err.contains("DIR: set DIR"),
        "{err}"
    );
}

#[test]
fn canonical_is_stable_and_sensitive() {
    let a = "FROM scratch\nARG V=1\nCOPY --chmod=644 a/$V /b\nRUN --network=none echo\n";
    let (x, _) = run_last(a, &opts(&[], None), &[]);
    let (y, _) = run_last(a, &opts(&[], None), &[]);
    let (z, _) = run_last(a, &opts(&[("V", "2")], None), &[]);
    assert_eq!(x[1].canonical(), y[1].canonical());
    assert_ne!(x[1].canonical(), z[1].canonical());
    assert!(
        x[1].canonical().starts_with("COPY {"),
        "{}",
        x[1].canonical()
    );
    assert!(
        x[2].canonical().contains("\"network\":\"none\""),
        "{}",
        x[2].canonical()
    );
    let mut keys = BTreeMap::new();
    keys.insert(x[1].canonical(), ());
    assert_eq!(keys.len(), 1);
}

#[test]
fn copy_mixes_heredoc_and_path_sources() {
    let src = "FROM scratch\nCOPY <<-EOF real.txt \"<<notadoc\" /d/\n\tx\n\tEOF\n";
    let (out, _) = run_last(src, &opts(&[], None), &[]);
    let Expanded::Copy(c) = &out[0] else {
        panic!("{:?}", out[0])
    };
    assert_eq!(c.sources, ["real.txt", "<<notadoc"]);
    assert_eq!(c.heredocs.len(), 1);
    assert_eq!(c.heredocs[0].body, "x\n");
}

#[test]
fn child_stage_inherits_parent_state() {
    let src = "FROM scratch AS base\nARG V=1\nENV E=e\nFROM base\nRUN true\n";
    let p = plan_of(src, &opts(&[], None)).unwrap();
    assert_eq!(p.stages[1].base, Base::Stage(0));
    let mut parent = Scope::new(&p, &p.stages[0], &[]);
    for i in &p.stages[0].instructions {
        parent.apply(i).unwrap();
    }
    let child = parent.for_child_stage(&p.stages[1]);
    assert_eq!(child.run_env(), ["V=1", "E=e"]);
    assert_eq!(child.config_env(), ["E=e"]);
}

#[test]
fn mount_values_are_checked_after_expansion() {
    let src = "FROM scratch\nARG U=1000 M=0755 BAD=x\nRUN --mount=type=cache,target=/c,uid=$U,mode=$M true\nRUN --mount=type=cache,target=/c,gid=$BAD true\n";
    let p = plan_of(src, &opts(&[], None)).unwrap();
    let mut scope = Scope::new(&p, &p.stages[0], &[]);
    let insts = &p.stages[0].instructions;
    scope.apply(&insts[0]).unwrap();
    let Expanded::Run(r) = scope.apply(&insts[1]).unwrap() else {
        panic!()
    };
    assert!(r.mounts[0].options.contains(&("uid".into(), "1000".into())));
    let err = scope.apply(&insts[2]).unwrap_err().to_string();
    assert_eq!(err, "line 4: invalid value \"x\" for mount option gid");
}
