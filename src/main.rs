use std::process::ExitCode;

use choir::config::Config;

fn main() -> ExitCode {
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
    choir::logging::init(&config.log);
    match choir::daemon::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("choir: {e}");
            ExitCode::FAILURE
        }
    }
}
