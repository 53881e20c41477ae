//! `ferry`: the command-line client. Parsing only; the work is in
//! `ferry::client`.

use clap::Parser;

fn main() -> std::process::ExitCode {
    ferry::client::cli::run(ferry::client::cli::Cli::parse())
}
