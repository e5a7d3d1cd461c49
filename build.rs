//! The build script: names this build for `--version` (`src/version/describe.rs`):
//! the crate's version, plus the git commit (and "dirty") when built from a git
//! checkout that is not exactly its release tag. Without git or a .git (a release
//! tarball, the Debian package built from one), the plain version. No network.

#[path = "src/version/describe.rs"]
mod describe;

use std::ffi::OsStr;
use std::path::PathBuf;

fn main() {
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    let found = describe::describe(&version, &dir, OsStr::new("git"));
    println!("cargo:rustc-env=SCIMBRIDGE_VERSION={}", found.text);
    println!("cargo:rerun-if-changed=src/version/describe.rs");
    // A source edit can make the checkout dirty; a commit, a checkout or a tag moves
    // git's files.
    for source in describe::SOURCES {
        println!("cargo:rerun-if-changed={source}");
    }
    for path in found.watch {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}
