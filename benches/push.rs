//! Push benchmark (issue 15): how long `scimbridge migrate push` takes, and how many
//! requests it sends, for 2,500 users (173 manager links) and 33 groups (one of
//! 2,000 members, two nested) into the quirky test target answering every request
//! after 200 ms — once without Bulk and once with it. Prints numbers; asserts only
//! that the push succeeded. Run: `cargo bench --bench push` (PUSH_LATENCY_MS and
//! PUSH_USERS override the defaults; PUSH_THROTTLE_EVERY=10 makes every 10th request
//! answer 429 with Retry-After: 1).

#[path = "../tests/it/support/export.rs"]
#[allow(dead_code)]
mod export;
#[path = "../tests/it/support/quirky.rs"]
#[allow(dead_code)]
mod quirky;

use std::process::Command;
use std::time::Instant;

use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_scimbridge");
const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A data directory holding the seeded directory; returns (tempdir, config file).
fn seed(users: usize) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut f = export::ExportFile::default();
    let mut ids = Vec::new();
    for i in 0..users {
        let mut ent = json!({"department": format!("dept{}", i % 7)});
        // 173 manager links at 2,500 users.
        if i >= 14 && i % 14 == 0 && i / 14 <= 173 {
            ent["manager"] = json!({"value": ids[i / 14 - 1]});
        }
        ids.push(f.user(json!({"userName": format!("user{i}@example.com"),
            "externalId": format!("ext-u{i}"), "displayName": format!("User {i}"),
            "name": {"givenName": format!("Given{i}"), "familyName": "Family"}, "active": true,
            "emails": [{"value": format!("user{i}@example.com"), "type": "work", "primary": true}],
            ENTERPRISE: ent})));
    }
    let all = f.group(json!({"displayName": "All staff"}));
    for id in ids.iter().take(2000) {
        f.member(&all, id, "User");
    }
    for t in 0..30 {
        let g = f.group(json!({"displayName": format!("Team {t}")}));
        for id in ids.iter().skip(20 * t).take(20) {
            f.member(&g, id, "User");
        }
    }
    let inner = f.group(json!({"displayName": "Inner"}));
    let outer = f.group(json!({"displayName": "Outer"}));
    for id in ids.iter().skip(2000).take(10) {
        f.member(&inner, id, "User");
    }
    f.member(&outer, &inner, "Group");
    let file = dir.path().join("seed.jsonl");
    f.write(&file);
    let data = dir.path().join("data");
    let out = Command::new(BIN)
        .arg("--data-dir")
        .arg(&data)
        .args(["import", file.to_str().unwrap()])
        .output()
        .expect("import");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cfg = dir.path().join("source.toml");
    std::fs::write(&cfg, "[migration]\nallowed_domains = [\"example.com\"]\n").unwrap();
    (dir, cfg)
}

/// The count the push's summary line reports: "pushed … (…, N requests, T
/// throttled); now mirroring changes" (other lines follow it).
fn throttled_of(stdout: &str) -> Option<u64> {
    let line = stdout.lines().find(|l| l.starts_with("pushed "))?;
    let before = line.split(" throttled)").next()?;
    before.rsplit([' ', ',']).next()?.parse().ok()
}

fn main() {
    let latency = env_num("PUSH_LATENCY_MS", 200) as u64;
    let users = env_num("PUSH_USERS", 2500);
    let throttle_every = env_num("PUSH_THROTTLE_EVERY", 0) as u32;
    println!(
        "push of {users} users, 33 groups, into a target answering after {latency} ms{}",
        if throttle_every > 0 {
            format!(", 429 on every {throttle_every}th request")
        } else {
            String::new()
        }
    );
    println!("| target | seconds | requests to the target | throttled | users on target |");
    println!("|---|---|---|---|---|");
    for (name, bulk) in [("no Bulk", false), ("Bulk", true)] {
        let (dir, cfg) = seed(users);
        let target = quirky::Quirky::start(quirky::Quirks {
            latency_ms: latency,
            throttle_every,
            bulk,
            ..quirky::Quirks::default()
        });
        let tf = dir.path().join("token");
        std::fs::write(&tf, &target.token).unwrap();
        let started = Instant::now();
        let out = Command::new(BIN)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--config")
            .arg(&cfg)
            .args(["migrate", "push", "--to", &target.base, "--token-file"])
            .arg(&tf)
            .output()
            .expect("push");
        let secs = started.elapsed().as_secs_f64();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let throttled = throttled_of(&stdout)
            .unwrap_or_else(|| panic!("no `… N throttled)` in the push's report:\n{stdout}"));
        println!(
            "| {name} | {secs:.1} | {} | {throttled} | {} |",
            target.requests(),
            target.users().len()
        );
    }
}
