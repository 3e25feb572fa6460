use std::process::ExitCode;

use choir::process::config::Config;

fn main() -> ExitCode {
    if let Some(code) = subcommand() {
        return code;
    }
    let config = match Config::from_args(std::env::args_os()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("choir: {e}");
            return ExitCode::from(2);
        }
    };
    if config.print_config {
        println!(
            "{}",
            serde_json::to_string_pretty(&config).unwrap_or_default()
        );
        return ExitCode::SUCCESS;
    }
    choir::process::logging::init_with(&config.log, config.log_format);
    match choir::process::daemon::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("choir: {}", e.message);
            ExitCode::from(e.code)
        }
    }
}

/// `choir token ...` (and any later subcommand); `None` runs the daemon.
fn subcommand() -> Option<ExitCode> {
    use clap::{CommandFactory, FromArgMatches};
    let matches = choir::process::config::Cli::command().get_matches();
    let cli = choir::process::config::Cli::from_arg_matches(&matches).ok()?;
    match cli.command? {
        choir::control::auth::Subcommand::Token(args) => {
            match choir::control::auth::token_command(&args) {
                Ok(token) => {
                    println!("{token}");
                    Some(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("choir token: {e}");
                    Some(ExitCode::from(2))
                }
            }
        }
    }
}
