//! Export files: verification of arbitrary bytes must refuse, never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = scimbridge::migrate::export::verify(data);
});
