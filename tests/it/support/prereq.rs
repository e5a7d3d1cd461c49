//! The external programs some tests drive: Chromium and chromedriver (admin page in a
//! browser), scim2-server from PyPI (a push target that is not scimbridge), and
//! systemd-analyze (the packaged unit's rating). A missing one fails the test with how
//! to install it; no test passes by skipping. `.ci/run` installs all of them.

use std::path::{Path, PathBuf};

/// The first of `candidates` that exists; otherwise the test fails saying what is
/// missing and how to install it.
fn first_existing(what: &str, candidates: &[PathBuf], install: &str) -> PathBuf {
    candidates
        .iter()
        .find(|p| p.exists())
        .cloned()
        .unwrap_or_else(|| panic!("{what} is missing (looked for {candidates:?}): {install}"))
}

/// `(chromium binary, chromedriver)`. Debian's `/usr/bin/chromium` is a wrapper
/// script; the binary itself is under /usr/lib/chromium.
pub fn chromium() -> (PathBuf, PathBuf) {
    let install = "install Debian's chromium and chromium-driver \
                   (apt-get install -y chromium chromium-driver), as .ci/run does";
    let browser = first_existing(
        "Chromium",
        &[
            "/usr/lib/chromium/chromium".into(),
            "/usr/bin/chromium".into(),
        ],
        install,
    );
    let driver = first_existing("chromedriver", &["/usr/bin/chromedriver".into()], install);
    (browser, driver)
}

/// The `scim2-server` executable in the PyPI virtualenv that
/// shared/conformance/install.sh makes: `$SCIM_CONFORMANCE_VENV`, else its default
/// `~/.cache/scim-conformance`.
pub fn scim2_server() -> PathBuf {
    let venv = std::env::var_os("SCIM_CONFORMANCE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(&std::env::var_os("HOME").unwrap_or_default()).join(".cache/scim-conformance")
        });
    first_existing(
        "scim2-server (PyPI)",
        &[venv.join("bin/scim2-server")],
        "run shared/conformance/install.sh (it prints the virtualenv) and export \
         SCIM_CONFORMANCE_VENV=<that path>, as .ci/run does",
    )
}

/// `systemd-analyze`, from Debian's systemd package.
pub fn systemd_analyze() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let on_path: Vec<PathBuf> = std::env::split_paths(&path)
        .map(|d| d.join("systemd-analyze"))
        .collect();
    first_existing(
        "systemd-analyze",
        &on_path,
        "install Debian's systemd package (apt-get install -y systemd), as .ci/run does",
    )
}
