//! The `compshare-teardown` binary: parse, then hand over to [`compshare_teardown::app`].

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    match compshare_teardown::cli::Cli::try_parse() {
        Ok(cli) => compshare_teardown::app::main(cli),
        Err(e) => compshare_teardown::app::refused(e),
    }
}
