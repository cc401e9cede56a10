//! The image config: any bytes that parse must write canonical JSON that parses back to
//! the same config and writes the same bytes again (the image ID depends on it).
#![no_main]

use cairn::image::ImageConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(config) = ImageConfig::from_json(data) else {
        return;
    };
    let once = config.to_canonical_json();
    let again = ImageConfig::from_json(&once).expect("canonical JSON parses back");
    assert_eq!(
        again.to_canonical_json(),
        once,
        "canonical JSON is not stable"
    );
    let _ = config.for_child();
    let _ = config.platform();
});
