//! The `scimbridge` binary: parse the command line and run the command.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = scimbridge::cli::Cli::parse();
    match scimbridge::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("scimbridge: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
