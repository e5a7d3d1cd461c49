//! libFuzzer entry for the `export` target; the body is `targets::export` (fuzz/targets.rs),
//! shared with the replay test in the normal `cargo test`.
#![no_main]

#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::export(data));
