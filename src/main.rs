use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    shortd::cli::run(shortd::Cli::parse())
}
