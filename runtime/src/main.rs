//! `runq`: a runc-compatible front. `create`/`run` turn the container into
//! a container around a VM (see `bundle`), everything else is runc's.

use clap::Parser;

use runq::cli::Cli;
use runq::commands;
use runq::log::Logger;

fn main() {
    let raw: Vec<String> = std::env::args().collect();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => {
            let first = e.to_string();
            let first = first.lines().next().unwrap_or("invalid command line");
            Logger::from_raw_args(&raw)
                .error(&format!("runq: {}", first.trim_start_matches("error: ")));
            std::process::exit(2);
        }
        Err(e) => e.exit(), // --help, --version
    };
    let logger = Logger::new(cli.global.log.clone(), cli.global.log_format.as_deref());
    match commands::dispatch(&cli, &logger) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            logger.error(&format!("runq: {e:#}"));
            std::process::exit(1);
        }
    }
}
