//! The packaged systemd unit (`packaging/scimbridge.service`) and config
//! (`packaging/scimbridge.toml`): the unit keeps its sandbox rating (with the one
//! capability that lets it bind 443 for ACME) and the directives the server and the
//! CLI depend on, and the config is one the binary accepts.
//! `systemd-analyze security --offline=yes` needs neither root nor a running systemd;
//! where `systemd-analyze` is missing, that test fails saying how to install it
//! (Debian's systemd package; `.ci/run` installs it).

use std::path::PathBuf;
use std::process::Command;

use crate::support::prereq;

/// The worst `systemd-analyze security` exposure we accept: "OK" is 2.0 or lower.
const MAX_EXPOSURE: f64 = 2.0;

fn packaging(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("packaging")
        .join(file)
}

fn unit_text() -> String {
    let path = packaging("scimbridge.service");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every value assigned to `key`, in order, ignoring comments (systemd allows many
/// keys, such as `SystemCallFilter=`, more than once).
fn values<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.starts_with(';'))
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim())
        .collect()
}

fn single<'a>(unit: &'a str, key: &str) -> &'a str {
    match values(unit, key).as_slice() {
        [v] => v,
        other => panic!("expected one {key}= in the unit, found {other:?}"),
    }
}

/// The number in "→ Overall exposure level for scimbridge.service: 1.1 OK 🙂"
/// (systemd 252; the arrow is "->" and the smiley ":-)" in a non-UTF-8 locale).
fn overall_exposure(output: &str) -> Option<f64> {
    let line = output
        .lines()
        .find(|l| l.contains("Overall exposure level"))?;
    let (_, rest) = line.rsplit_once(": ")?;
    rest.split_whitespace().next()?.parse().ok()
}

#[test]
fn unit_is_rated_ok_by_systemd_analyze_security() {
    let unit = packaging("scimbridge.service");
    // --threshold is in tenths: exit non-zero above 2.0.
    let threshold = format!("--threshold={}", (MAX_EXPOSURE * 10.0) as u32);
    let output = Command::new(prereq::systemd_analyze())
        .args(["security", "--offline=yes", &threshold, "--no-pager"])
        .arg(&unit)
        .env("SYSTEMD_COLORS", "0")
        .output()
        .unwrap_or_else(|e| panic!("cannot run systemd-analyze: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let exposure = overall_exposure(&stdout).unwrap_or_else(|| {
        panic!("no overall exposure in systemd-analyze output:\n{stdout}\n{stderr}")
    });
    println!("systemd-analyze security: exposure {exposure}");
    assert!(
        exposure <= MAX_EXPOSURE,
        "the unit's exposure is {exposure}, above {MAX_EXPOSURE:.1}; the checks (✗ = failed):\n{stdout}"
    );
    assert!(
        output.status.success(),
        "systemd-analyze exited with {} at {threshold}:\n{stderr}",
        output.status
    );
}

#[test]
fn exposure_is_read_from_the_summary_line_in_any_locale() {
    let utf8 = "✗ PrivateNetwork=   Service has access to the host's network   0.5\n\n\
                → Overall exposure level for scimbridge.service: 1.1 OK 🙂\n";
    assert_eq!(overall_exposure(utf8), Some(1.1));
    let ascii = "-> Overall exposure level for scimbridge.service: 9.6 UNSAFE :-(\n";
    assert_eq!(overall_exposure(ascii), Some(9.6));
    assert_eq!(overall_exposure("Unit x.service not found.\n"), None);
}

#[test]
fn service_reports_readiness_and_runs_as_its_own_user() {
    let unit = unit_text();
    // The server sends READY=1 once it listens, so `systemctl start` waits for it.
    assert_eq!(single(&unit, "Type"), "notify");
    // A static user, shared with `sudo -u scimbridge scimbridge ...`: not DynamicUser.
    assert_eq!(single(&unit, "User"), "scimbridge");
    assert_eq!(single(&unit, "Group"), "scimbridge");
    assert!(values(&unit, "DynamicUser").iter().all(|v| *v == "no"));
    assert_eq!(single(&unit, "StateDirectory"), "scimbridge");
    assert_eq!(single(&unit, "StateDirectoryMode"), "0700");
    assert_eq!(
        single(&unit, "ExecStart"),
        "/usr/bin/scimbridge --config /etc/scimbridge/scimbridge.toml serve"
    );
    // SIGHUP reloads the TLS files.
    assert_eq!(single(&unit, "ExecReload"), "/bin/kill -HUP $MAINPID");
}

#[test]
fn sandbox_keeps_what_the_server_needs() {
    let unit = unit_text();
    // TCP for SCIM; Unix sockets for data_dir/control.sock and $NOTIFY_SOCKET.
    let families: Vec<&str> = single(&unit, "RestrictAddressFamilies")
        .split_whitespace()
        .collect();
    for family in ["AF_INET", "AF_INET6", "AF_UNIX"] {
        assert!(families.contains(&family), "{family} missing: {families:?}");
    }
    // The data dir is the only writable place; nothing outside it is opened for writing.
    assert_eq!(single(&unit, "ProtectSystem"), "strict");
    assert_eq!(single(&unit, "NoNewPrivileges"), "yes");
    // Exactly one capability, to bind 443 (and 80) for ACME as the service's own user;
    // it only works outside a user namespace (issue 13).
    assert_eq!(
        single(&unit, "CapabilityBoundingSet"),
        "CAP_NET_BIND_SERVICE"
    );
    assert_eq!(single(&unit, "AmbientCapabilities"), "CAP_NET_BIND_SERVICE");
    assert_eq!(single(&unit, "PrivateUsers"), "no");
    // Inbound traffic comes from identity providers anywhere: never deny it all.
    assert!(
        !values(&unit, "IPAddressDeny").contains(&"any"),
        "IPAddressDeny=any would lock out the identity providers"
    );
}

#[test]
fn packaged_config_keeps_data_in_the_state_directory() {
    let config = packaging("scimbridge.toml");
    let output = Command::new(env!("CARGO_BIN_EXE_scimbridge"))
        .arg("--config")
        .arg(&config)
        .arg("check-config")
        .env_remove("SCIMBRIDGE_DATA_DIR")
        .env_remove("SCIMBRIDGE_LISTEN")
        .env_remove("SCIMBRIDGE_TLS")
        .env_remove("SCIMBRIDGE_CONFIG")
        .output()
        .expect("run scimbridge check-config");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the packaged config is rejected:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The unit's StateDirectory=scimbridge is /var/lib/scimbridge, the only place the
    // sandbox lets the server write; the service and the CLI both read it from here.
    assert!(
        stdout.contains("data_dir=/var/lib/scimbridge "),
        "unexpected: {stdout}"
    );
    assert!(
        stdout.contains("listen=0.0.0.0:8443 "),
        "unexpected: {stdout}"
    );
}
