//! The `compshare-teardown` binary: parse, then hand over to [`compshare_teardown::app`].

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    compshare_teardown::app::main(compshare_teardown::cli::Cli::parse())
}
