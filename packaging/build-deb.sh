#!/usr/bin/env bash
# Builds the Debian package: the release binary, the man pages generated from the
# clap definitions (examples/manpage.rs) and `cargo deb` (cargo install cargo-deb
# --locked). Arguments go to `cargo deb`, e.g. --deb-revision 2.
# Writes target/debian/scimbridge_<version>-<revision>_<arch>.deb and prints its path.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked
rm -rf target/man
cargo run --release --locked --quiet --example manpage -- target/man
gzip -9nf target/man/*.1
cargo deb --no-build "$@" 2>&1 | tail -n 1
