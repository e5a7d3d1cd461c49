//! libFuzzer entry for the `bulk` target; the body is `targets::bulk` (fuzz/targets.rs),
//! shared with the replay test in the normal `cargo test`.
#![no_main]

#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::bulk(data));
