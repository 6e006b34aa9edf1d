#![no_main]
//! Any text as a CloudFormation/SAM template (YAML or JSON): a config or an error,
//! never a panic, and bounded work (`wsgate import`, `--template`).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    if let Ok(text) = std::str::from_utf8(input) {
        let _ = wsgate::import::convert_text("t.yaml", text, &Default::default());
    }
});
