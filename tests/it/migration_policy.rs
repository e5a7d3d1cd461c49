//! `scimbridge migrate policy show|set|reset` (issue 14 point 2): the migration
//! policy is one stored setting that takes precedence over the config file's
//! `[migration]`, then the default; shown with where each value came from; in effect
//! without a restart; start-up and `check-config` warn when the file differs.

use crate::support::*;
use serde_json::{json, Value};

fn policy(s: &Server, cfg: &std::path::Path, args: &[&str]) -> Value {
    let mut all = vec!["--config", cfg.to_str().unwrap(), "migrate", "policy"];
    all.extend_from_slice(args);
    let (ok, out, err) = cli(&s.data_dir(), &all);
    assert!(ok, "{args:?}: {err}");
    if args.contains(&"--json") {
        serde_json::from_str(&out).unwrap()
    } else {
        Value::String(out)
    }
}

fn blocker_codes(s: &Server, cfg: &std::path::Path) -> Vec<String> {
    let (_, out, err) = cli(
        &s.data_dir(),
        &[
            "--config",
            cfg.to_str().unwrap(),
            "migrate",
            "check",
            "--json",
        ],
    );
    let report: Value = serde_json::from_str(&out).unwrap_or_else(|_| panic!("{out}{err}"));
    report["blockers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["code"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn stored_policy_takes_precedence_without_a_restart_and_names_its_source() {
    let cfgdir = tempfile::tempdir().unwrap();
    let cfg = cfgdir.path().join("bridge.toml");
    std::fs::write(&cfg, "[migration]\nallowed_domains = [\"example.com\"]\n").unwrap();
    let mut s = Server::start_with(&["--config", cfg.to_str().unwrap()]);
    let r = s.client().post(
        "/Users",
        &json!({"userName": "ada", "emails": [{"value": "ada@example.org", "primary": true}]}),
    );
    assert_eq!(r.status, 201);

    let v = policy(&s, &cfg, &["show", "--json"]);
    assert_eq!(v["allowedDomains"]["value"], json!(["example.com"]));
    assert_eq!(v["allowedDomains"]["source"], "file");
    assert_eq!(v["publicDomains"]["source"], "default");
    assert_eq!(v["protectedGroups"]["source"], "default");
    // ada@example.org is outside the file's allowed domains.
    assert!(!blocker_codes(&s, &cfg).is_empty());

    // Stored through the running server: the next check applies it at once.
    let text = policy(
        &s,
        &cfg,
        &[
            "set",
            "--allowed-domains",
            "Example.org,example.com",
            "--protected-groups",
            "Owners",
        ],
    );
    let text = text.as_str().unwrap();
    assert!(
        text.contains("example.org, example.com  (stored)"),
        "{text}"
    );
    assert!(text.contains("the config file says example.com"), "{text}");
    assert!(blocker_codes(&s, &cfg).is_empty());
    let v = policy(&s, &cfg, &["show", "--json"]);
    assert_eq!(v["allowedDomains"]["source"], "stored");
    assert_eq!(v["allowedDomains"]["fileDiffers"], json!(["example.com"]));
    assert_eq!(v["protectedGroups"]["value"], json!(["Owners"]));

    // Wrong values are refused and change nothing.
    let (ok, _, err) = cli(
        &s.data_dir(),
        &[
            "migrate",
            "policy",
            "set",
            "--public-domains",
            "someone@gmail.com",
        ],
    );
    assert!(!ok && err.contains("not a domain"), "{err}");

    // check-config and the start warn that the file's value is not the one applied.
    let (ok, out, err) = cli(
        &s.data_dir(),
        &["--config", cfg.to_str().unwrap(), "check-config"],
    );
    assert!(ok, "{err}");
    assert!(
        out.contains("allowed_domains in the config file (example.com)"),
        "{out}"
    );
    s.restart();
    assert!(
        s.log_text()
            .contains("allowed_domains in the config file (example.com) is not what applies"),
        "{}",
        s.log_text()
    );
    // The stored value survived the restart.
    assert!(blocker_codes(&s, &cfg).is_empty());

    // Reset one field, then all: the file's and the defaults apply again.
    policy(&s, &cfg, &["reset", "protected-groups"]);
    let v = policy(&s, &cfg, &["show", "--json"]);
    assert_eq!(v["protectedGroups"]["source"], "default");
    assert_eq!(v["allowedDomains"]["source"], "stored");
    policy(&s, &cfg, &["reset"]);
    let v = policy(&s, &cfg, &["show", "--json"]);
    assert_eq!(v["allowedDomains"]["source"], "file");
    assert!(!blocker_codes(&s, &cfg).is_empty());

    // Without a server, on the database directly.
    s.stop();
    policy(&s, &cfg, &["set", "--allowed-domains", "example.org"]);
    let v = policy(&s, &cfg, &["show", "--json"]);
    assert_eq!(v["allowedDomains"]["value"], json!(["example.org"]));
    assert_eq!(v["allowedDomains"]["source"], "stored");
}
