//! The `scimbridge` binary: parse the command line and run the command.

use clap::CommandFactory;

fn main() -> std::process::ExitCode {
    // Files, directories and the control socket made by this process are private.
    scimbridge::localfs::private_umask();
    let matches = scimbridge::cli::Cli::command().get_matches();
    match scimbridge::cli::run(&matches) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("scimbridge: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
