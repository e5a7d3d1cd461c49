//! Issue 11, the push client against a hostile target (the quirky target on
//! 127.0.0.1 with its hostile switches): an answer of 1.5 GB is refused after at
//! most `MAX_RESPONSE_BYTES` (64 MiB) with a clear error and the server's memory
//! stays bounded, and a target's error text with newlines and ANSI escapes reaches
//! the terminal, `migrate status` and the log escaped, so it cannot forge a line.

use std::time::{Duration, Instant};

use crate::support::quirky::{Quirks, Quirky};
use crate::support::*;

/// A bridge with three users the migration policy allows, and the target's token
/// in a file; returns (server, config dir holding the token file).
fn bridge(t: &Quirky) -> (Server, tempfile::TempDir, String) {
    let cfg = tempfile::tempdir().unwrap();
    let cfg_file = migration_config(cfg.path());
    let server = Server::start_with(&["--config", cfg_file.to_str().unwrap()]);
    let c = server.client();
    for i in 0..3 {
        assert_eq!(
            c.post("/Users", &user_body(&format!("user{i}@example.com")))
                .status,
            201
        );
    }
    let tf = cfg.path().join("target.token");
    std::fs::write(&tf, &t.token).unwrap();
    let tf = tf.to_str().unwrap().to_owned();
    (server, cfg, tf)
}

/// Peak resident memory of a process, in bytes (VmHWM).
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM");
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap();
    kb * 1024
}

#[test]
fn a_huge_answer_is_refused_unread_with_a_clear_error() {
    for with_length in [false, true] {
        let t = Quirky::start(Quirks {
            huge_users_answer: Some(1_500_000_000),
            huge_with_length: with_length,
            ..Quirks::default()
        });
        let (server, _cfg, tf) = bridge(&t);
        let started = Instant::now();
        let (ok, out, err) = cli(
            &server.data_dir(),
            &["migrate", "push", "--to", &t.base, "--token-file", &tf],
        );
        let took = started.elapsed();
        assert!(!ok, "{out}");
        assert!(
            err.contains("the target's answer to GET /Users") && err.contains("larger than 64 MiB"),
            "chunked: {}: {err}",
            !with_length
        );
        // Read at most 64 MiB once, never 1.5 GB, and not retried.
        assert!(took < Duration::from_secs(60), "{took:?}");
        // Discovery (3 GETs), then the one huge answer, not retried.
        assert_eq!(t.count("GET", 200), 4, "GETs");
        let peak = peak_rss(server.pid());
        assert!(
            peak < 400 << 20,
            "the server's peak RSS is {} MiB",
            peak >> 20
        );
    }
}

#[test]
fn a_targets_error_text_cannot_forge_a_line() {
    let forged = "nope\nERROR scimbridge::admin: password reset for admin\u{1b}[2K\r";
    let t = Quirky::start(Quirks {
        refuse_creates: true,
        refusal_detail: Some(forged.to_owned()),
        ..Quirks::default()
    });
    let (server, _cfg, tf) = bridge(&t);
    let (ok, out, err) = cli(
        &server.data_dir(),
        &["migrate", "push", "--to", &t.base, "--token-file", &tf],
    );
    assert!(!ok, "{out}");
    let escaped = "nope\\nERROR scimbridge::admin: password reset for admin\\u{1b}[2K\\r";
    assert!(err.contains(escaped), "{err}");
    let (ok, status, _) = cli(&server.data_dir(), &["migrate", "status"]);
    assert!(ok);
    assert!(status.contains(escaped), "{status}");
    let (ok, js, _) = cli(&server.data_dir(), &["migrate", "status", "--json"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&js).unwrap();
    assert!(
        v["state"]["lastError"]
            .as_str()
            .is_some_and(|e| e.contains(escaped)),
        "{v}"
    );
    // The mirror meets the same refusal for a user written now, and logs it.
    let c = server.client();
    assert_eq!(
        c.post("/Users", &user_body("later@example.com")).status,
        201
    );
    server.wait_for_log("migration mirror");
    for (what, text) in [
        ("push output", format!("{out}\n{err}")),
        ("status", status),
        ("server log", server.log_text()),
    ] {
        assert!(!text.contains('\u{1b}'), "{what} holds an escape: {text}");
        assert!(
            !text.contains('\r'),
            "{what} holds a carriage return: {text}"
        );
        assert!(
            !text
                .lines()
                .any(|l| l.trim_start().starts_with("ERROR scimbridge::admin")),
            "{what} holds a forged line: {text}"
        );
    }
}
