//! The fuzz targets in the normal `cargo test` (issue 11), for machines without
//! cargo-fuzz: every committed seed (`fuzz/seeds/<target>`), every input that once
//! crashed a target (`fuzz/regressions/<target>`) and a local corpus if one exists
//! (`fuzz/corpus/<target>`, grown by `fuzz/run.sh`) go through the same function the
//! libFuzzer binary calls (`fuzz/targets.rs`), then bounded mutations of them do
//! (a few thousand per target, at most a few seconds). A panic is a failure that
//! names the target and the input.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::Rng;

#[path = "../../fuzz/targets.rs"]
mod targets;

const MUTATIONS: usize = 3_000;
const TIME_PER_TARGET: Duration = Duration::from_secs(3);

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// (path, bytes) of every input kept for `target`.
fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for kind in ["seeds", "regressions", "corpus"] {
        let Ok(dir) = std::fs::read_dir(fuzz_dir().join(kind).join(target)) else {
            continue;
        };
        let mut files: Vec<PathBuf> = dir.flatten().map(|e| e.path()).collect();
        files.sort();
        for p in files {
            let bytes = std::fs::read(&p).unwrap();
            out.push((p, bytes));
        }
    }
    out
}

/// Runs `f` on `data`; the panic message if it panicked.
fn run(f: fn(&[u8]), data: &[u8]) -> Option<String> {
    catch_unwind(AssertUnwindSafe(|| f(data))).err().map(|e| {
        e.downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    })
}

#[test]
fn every_seed_and_regression_input_passes_its_fuzz_target() {
    let mut failures = Vec::new();
    for (name, f) in targets::ALL {
        let inputs = inputs(name);
        assert!(!inputs.is_empty(), "fuzz/seeds/{name} holds no seed");
        for (path, data) in inputs {
            if let Some(msg) = run(*f, &data) {
                failures.push(format!("{name} panicked on {}: {msg}", path.display()));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Grammar pieces the mutator splices in: what the parsers branch on.
const PIECES: &[&[u8]] = &[
    b"\"",
    b"\\",
    b"{",
    b"}",
    b"[",
    b"]",
    b"(",
    b")",
    b",",
    b":",
    b" ",
    b"\n",
    b"null",
    b"true",
    b"\"True\"",
    b"-1",
    b"1e999",
    b"18446744073709551616",
    b"\"\\u0000\"",
    b"\"\\ud800\"",
    b" and ",
    b" or ",
    b"not ",
    b" eq ",
    b" pr",
    b"[type eq \"work\"]",
    b"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:",
    b"members",
    b"\"bulkId:x\"",
    b"\"primary\":true",
    b"\xc3\xa9",
    b"\xff",
    b"\x00",
];

fn mutate(rng: &mut Rng, seeds: &[(PathBuf, Vec<u8>)]) -> Vec<u8> {
    let mut data = seeds[rng.below(seeds.len())].1.clone();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(data.len() + 1);
        match rng.below(5) {
            0 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] ^= 1 << rng.below(8);
            }
            1 => {
                let piece = PIECES[rng.below(PIECES.len())];
                data.splice(at..at, piece.iter().copied());
            }
            2 if at < data.len() => {
                let end = (at + 1 + rng.below(16)).min(data.len());
                data.drain(at..end);
            }
            3 if at < data.len() => {
                let end = (at + 1 + rng.below(64)).min(data.len());
                let copy: Vec<u8> = data[at..end].to_vec();
                data.splice(at..at, copy);
            }
            _ => {
                // Splice the tail of another input.
                let other = &seeds[rng.below(seeds.len())].1;
                let from = rng.below(other.len() + 1);
                data.truncate(at);
                data.extend_from_slice(&other[from..]);
            }
        }
    }
    data
}

#[test]
fn mutated_inputs_never_panic_a_fuzz_target() {
    // A fixed seed, so a failure replays; SCIMBRIDGE_FUZZ_SEED explores others.
    let seed = std::env::var("SCIMBRIDGE_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED_F00D_u64);
    let mut failures = Vec::new();
    for (name, f) in targets::ALL {
        let inputs = inputs(name);
        let mut rng = Rng(seed ^ name.len() as u64 ^ 0x9E37_79B9_7F4A_7C15);
        let started = Instant::now();
        let mut runs = 0;
        while runs < MUTATIONS && started.elapsed() < TIME_PER_TARGET {
            let data = mutate(&mut rng, &inputs);
            runs += 1;
            if let Some(msg) = run(*f, &data) {
                let keep = std::env::temp_dir().join(format!("scimbridge-fuzz-{name}-{runs}"));
                let _ = std::fs::write(&keep, &data);
                failures.push(format!(
                    "{name} panicked on mutation {runs} (seed {seed}; input saved as {}): {msg}",
                    keep.display()
                ));
                break;
            }
        }
        println!("{name}: {runs} mutated inputs");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
