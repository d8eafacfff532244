use std::process::ExitCode;

fn main() -> ExitCode {
    shortd::cli::run(shortd::Cli::load())
}
