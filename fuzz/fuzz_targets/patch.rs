//! libFuzzer entry for the `patch` target; the body is `targets::patch` (fuzz/targets.rs),
//! shared with the replay test in the normal `cargo test`.
#![no_main]

#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::patch(data));
