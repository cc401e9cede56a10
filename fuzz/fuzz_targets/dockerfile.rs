//! The Dockerfile front end end to end: parse, plan, and expand every instruction of every
//! stage with BuildKit's word rules. Errors are fine; panics and hangs are not.
#![no_main]

use cairn::plan::{self, PlanOptions, Scope};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(df) = cairn::dockerfile::parse(text, "Dockerfile") else {
        return;
    };
    let host = cairn::Platform::host();
    let opts = PlanOptions {
        build_args: [("A".to_string(), "x y".to_string())].into_iter().collect(),
        target: None,
        target_platform: host.clone(),
        build_platform: host,
    };
    let Ok(p) = plan::plan(&df, &opts) else {
        return;
    };
    for stage in &p.stages {
        let mut scope = Scope::new(&p, stage, &["PATH=/bin".to_string()]);
        for inst in &stage.instructions {
            if let Ok(e) = scope.apply(inst) {
                let _ = e.canonical();
            }
        }
    }
});
