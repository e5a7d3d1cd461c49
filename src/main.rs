//! The `scimbridge` binary: parse the command line and run the command.

use clap::Parser;

fn main() -> std::process::ExitCode {
    // Files, directories and the control socket made by this process are private.
    scimbridge::localfs::private_umask();
    let cli = scimbridge::cli::Cli::parse();
    match scimbridge::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("scimbridge: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
