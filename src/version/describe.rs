//! How the build names this build (`build.rs` includes this file; the crate compiles
//! it only for its tests): the crate's version, plus the git commit, and "dirty" when
//! the sources differ from it, when built from a git checkout of this crate that is
//! not exactly its release tag `v<version>`. Git is optional: without it, without a
//! `.git`, or with a `.git` that belongs to another repository (a release tarball
//! unpacked inside someone's checkout, a vendored copy), the plain version. Never
//! touches the network. Knows nothing of the rest of the crate.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The paths whose changes the binary is built from: a change there makes a
/// checkout "dirty" (a README edit does not).
pub(crate) const SOURCES: &[&str] = &["src", "build.rs", "Cargo.toml", "Cargo.lock"];

/// What `describe` found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Described {
    /// `0.1.0`, or `0.1.0 (git 0123456789ab)`, or `0.1.0 (git 0123456789ab, dirty)`.
    pub text: String,
    /// Git's files that change when the commit or the tags do: the build
    /// script asks cargo to run it again when one of them changes.
    pub watch: Vec<PathBuf>,
}

/// Names the build of `version` from the crate directory `dir`, asking the program
/// `git` (e.g. "git" on PATH).
pub(crate) fn describe(version: &str, dir: &Path, git: &OsStr) -> Described {
    let plain = || Described {
        text: version.to_owned(),
        watch: Vec::new(),
    };
    let run = |args: &[&str]| -> Option<String> {
        let out = Command::new(git)
            .arg("-C")
            .arg(dir)
            .args(args)
            // `git status` must not rewrite the index: that would look like a change.
            .env("GIT_OPTIONAL_LOCKS", "0")
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    // The checkout must be this crate's own.
    let Some(top) = run(&["rev-parse", "--show-toplevel"]) else {
        return plain();
    };
    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if !same(Path::new(&top), dir) {
        return plain();
    }
    // No commit yet: nothing to name.
    let Some(commit) = run(&["rev-parse", "--short=12", "HEAD"]) else {
        return plain();
    };
    let mut status = vec!["status", "--porcelain", "--untracked-files=normal", "--"];
    status.extend_from_slice(SOURCES);
    let dirty = run(&status).is_some_and(|s| !s.is_empty());
    let release_tag = format!("v{version}");
    let tagged = run(&["tag", "--points-at", "HEAD"])
        .is_some_and(|tags| tags.lines().any(|t| t.trim() == release_tag));
    let mut watch = Vec::new();
    // Not the index: staging changes neither the commit nor what is dirty.
    let mut git_paths = vec![
        "HEAD".to_owned(),
        "packed-refs".to_owned(),
        "refs/tags".to_owned(),
    ];
    if let Some(branch) = run(&["symbolic-ref", "-q", "HEAD"]) {
        git_paths.push(branch);
    }
    for p in git_paths {
        if let Some(path) = run(&["rev-parse", "--git-path", &p]) {
            let path = dir.join(path);
            // A path that does not exist would make cargo run the script every time.
            if path.exists() {
                watch.push(path);
            }
        }
    }
    let text = match (tagged, dirty) {
        (true, false) => version.to_owned(),
        (_, true) => format!("{version} (git {commit}, dirty)"),
        (false, false) => format!("{version} (git {commit})"),
    };
    Described { text, watch }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs git in `dir`; the test fails when git does not (CI installs it).
    fn git(dir: &Path, args: &[&str]) {
        let ok = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(["-c", "commit.gpgsign=false", "-c", "tag.gpgsign=false"])
            .args(args)
            .stdout(std::process::Stdio::null())
            .status()
            .expect("git runs")
            .success();
        assert!(ok, "git {args:?}");
    }

    #[test]
    fn a_checkout_names_its_commit_and_a_release_or_no_git_the_version_alone() {
        let git_bin = OsStr::new("git");
        let d = tempfile::tempdir().unwrap();
        let repo = d.path().join("scimbridge");
        std::fs::create_dir_all(repo.join("src")).unwrap();
        std::fs::write(repo.join("src/lib.rs"), "// v1\n").unwrap();
        std::fs::write(repo.join("README.md"), "hello\n").unwrap();
        // No .git at all (a release tarball).
        assert_eq!(describe("1.2.3", &repo, git_bin).text, "1.2.3");
        // A repository without a commit yet.
        git(&repo, &["init", "-q"]);
        assert_eq!(describe("1.2.3", &repo, git_bin).text, "1.2.3");
        git(&repo, &["add", "."]);
        git(&repo, &["commit", "-q", "-m", "one"]);
        let commit = String::from_utf8(
            Command::new("git")
                .arg("-C")
                .arg(&repo)
                .args(["rev-parse", "--short=12", "HEAD"])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        let commit = commit.trim();
        let found = describe("1.2.3", &repo, git_bin);
        assert_eq!(found.text, format!("1.2.3 (git {commit})"));
        assert!(
            found.watch.iter().any(|p| p.ends_with("HEAD"))
                && found.watch.iter().all(|p| p.exists()),
            "{:?}",
            found.watch
        );
        // A README edit is not the binary's source; a source edit or a new file is.
        std::fs::write(repo.join("README.md"), "changed\n").unwrap();
        assert_eq!(
            describe("1.2.3", &repo, git_bin).text,
            format!("1.2.3 (git {commit})")
        );
        std::fs::write(repo.join("src/new.rs"), "\n").unwrap();
        assert_eq!(
            describe("1.2.3", &repo, git_bin).text,
            format!("1.2.3 (git {commit}, dirty)")
        );
        std::fs::remove_file(repo.join("src/new.rs")).unwrap();
        // Exactly the release tag, clean: the version alone; dirty, still named.
        git(&repo, &["tag", "v1.2.3"]);
        assert_eq!(describe("1.2.3", &repo, git_bin).text, "1.2.3");
        std::fs::write(repo.join("src/lib.rs"), "// v2\n").unwrap();
        assert_eq!(
            describe("1.2.3", &repo, git_bin).text,
            format!("1.2.3 (git {commit}, dirty)")
        );
        // Another version's tag does not count.
        assert_eq!(
            describe("1.2.4", &repo, git_bin).text,
            format!("1.2.4 (git {commit}, dirty)")
        );
        // The crate unpacked inside another repository: not its commit.
        let inner = repo.join("vendor/scimbridge");
        std::fs::create_dir_all(&inner).unwrap();
        assert_eq!(describe("1.2.3", &inner, git_bin).text, "1.2.3");
        // No git program at all.
        let missing = OsStr::new("/nonexistent/git");
        assert_eq!(
            describe("1.2.3", &repo, missing),
            Described {
                text: "1.2.3".to_owned(),
                watch: Vec::new()
            }
        );
    }
}
