//! Writes the man pages — scimbridge(1) and one per subcommand, such as
//! scimbridge-token-issue(1) — generated from the clap definitions in `src/cli`, into
//! the directory given (packaging/build-deb.sh: `target/man`), so the installed
//! pages always match the binary's `--help`.

use clap::CommandFactory;

fn main() -> std::io::Result<()> {
    let out = std::env::args_os()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "target/man".into());
    std::fs::create_dir_all(&out)?;
    clap_mangen::generate_to(scimbridge::cli::Cli::command(), &out)?;
    eprintln!("man pages written to {}", out.display());
    Ok(())
}
