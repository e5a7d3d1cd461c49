//! libFuzzer entry for the `resource` target; the body is `targets::resource` (fuzz/targets.rs),
//! shared with the replay test in the normal `cargo test`.
#![no_main]

#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::resource(data));
