//! The `scimbridge` binary: parse the command line and run the command.

fn main() -> std::process::ExitCode {
    // Files, directories and the control socket made by this process are private.
    scimbridge::localfs::private_umask();
    quiet_broken_pipe();
    let matches = match scimbridge::cli::command().try_get_matches() {
        Ok(m) => m,
        Err(e) => return scimbridge::cli::exit_on_usage_error(e),
    };
    match scimbridge::cli::run(&matches) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("scimbridge: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `scimbridge migrate status | head -1`: a reader that closes stdout early has
/// what it wanted. Exit quietly with 141 (128 + SIGPIPE), as a Unix tool killed by
/// SIGPIPE would, instead of `println!`'s panic and backtrace. SIGPIPE itself stays
/// ignored (Rust's default), so a closed socket is still an error, never a kill.
fn quiet_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}
