//! Manifest parsing and conversion: any bytes, as YAML and as JSON, must give objects or a
//! located error, quickly, and never panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        for name in ["fuzz.yaml", "fuzz.json"] {
            let _ = edgexds::manifests::parse::parse_file(Path::new(name), text);
        }
    }
});
