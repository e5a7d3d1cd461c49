//! Certificates: the small DER reader behind the dashboard and the expiry metric.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = scimbridge::tls::x509::parse(data);
});
