//! The Coder example template: its build directory built through the exact `cairn build`
//! command line its `main.tf` runs (Terraform variables substituted), with the image ID it
//! writes checked against Docker; and the `--format json` object a `data "external"` reads.

mod common;

use common::registry::Registry;
use std::path::Path;
use std::process::Command;

const TEMPLATE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/examples/coder-docker-template"
);

/// The `command = "..."` of the template's local-exec, as written.
fn local_exec_command() -> String {
    let tf = std::fs::read_to_string(Path::new(TEMPLATE).join("main.tf")).unwrap();
    let line = tf
        .lines()
        .find(|l| l.trim_start().starts_with("command = \"cairn build"))
        .expect("main.tf has a cairn build local-exec");
    let start = line.find('"').unwrap() + 1;
    line[start..line.rfind('"').unwrap()].to_string()
}

#[test]
fn main_tf_command_line_builds_an_image_docker_has() {
    common::require_root();
    common::require_docker();
    let reg = Registry::start();
    common::images::push_debian(&reg, "coder/debian:bookworm");
    let work = common::tempdir();
    let build_dir = work.path().join("build");
    common::run_ok(
        Command::new("cp")
            .arg("-a")
            .arg(Path::new(TEMPLATE).join("build"))
            .arg(&build_dir),
    );
    let iid = work.path().join("workspace.iid");
    let image = "coder-e2e-workspace:latest";
    let cmd = local_exec_command()
        .replace("${local.image_name}", image)
        .replace(
            "${var.base_image}",
            &format!("{}/coder/debian:bookworm", reg.addr),
        )
        .replace("${local.iid_file}", &iid.to_string_lossy());
    assert!(
        !cmd.contains("${"),
        "unsubstituted Terraform reference: {cmd}"
    );
    let store = common::tempdir();
    let cairn_dir = common::cairn_bin().parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}",
        cairn_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // local-exec runs the command with /bin/sh -c in working_dir.
    let out = common::run(
        Command::new("/bin/sh")
            .arg("-c")
            .arg(&cmd)
            .current_dir(&build_dir)
            .env("PATH", path)
            .env("CAIRN_ROOT", store.path()),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = std::fs::read_to_string(&iid).unwrap();
    let docker_id = common::run_ok(
        Command::new("docker").args(["image", "inspect", "--format", "{{.Id}}", image]),
    );
    assert_eq!(id.trim(), docker_id.trim());
    let ran = common::run_ok(Command::new("docker").args([
        "run",
        "--rm",
        image,
        "/usr/local/bin/startup.sh",
        "--once",
    ]));
    assert!(
        ran.contains("user=coder") && ran.contains("python=Python 3."),
        "{ran}"
    );
    // The ignore file (Coder drops dot-files, so it has no leading dot) kept cairn.ignore out.
    let ls =
        common::run_ok(Command::new("docker").args(["run", "--rm", image, "ls", "/usr/local/bin"]));
    assert!(!ls.contains("cairn.ignore"), "{ls}");

    // The same build as a `data "external"` would run it: one flat JSON object of strings.
    let json = common::run_ok(
        common::cairn(store.path())
            .arg("build")
            .arg(&build_dir)
            .args(["-t", image, "--ignore-file"])
            .arg(build_dir.join("cairn.ignore"))
            .args([
                "--build-arg",
                &format!("BASE={}/coder/debian:bookworm", reg.addr),
            ])
            .args(["--format", "json", "--quiet"]),
    );
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    let obj = v.as_object().unwrap();
    assert!(
        obj.values().all(|x| x.is_string()),
        "not flat strings: {json}"
    );
    assert_eq!(obj["image_id"].as_str().unwrap(), docker_id.trim());
    assert_eq!(obj["all_cached"], "true");
    assert!(obj["cache_key"].as_str().unwrap().starts_with("sha256:"));

    // `cairn key` gives the same final key without building.
    let key = common::run_ok(
        common::cairn(store.path())
            .arg("key")
            .arg(&build_dir)
            .args(["--ignore-file"])
            .arg(build_dir.join("cairn.ignore"))
            .args([
                "--build-arg",
                &format!("BASE={}/coder/debian:bookworm", reg.addr),
                "--quiet",
            ]),
    );
    assert_eq!(key.trim(), obj["cache_key"].as_str().unwrap());
    let _ = Command::new("docker")
        .args(["image", "rm", "-f", image])
        .output();
}
