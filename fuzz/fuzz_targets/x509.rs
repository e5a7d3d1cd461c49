//! libFuzzer entry for the `x509` target; the body is `targets::x509` (fuzz/targets.rs),
//! shared with the replay test in the normal `cargo test`.
#![no_main]

#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::x509(data));
