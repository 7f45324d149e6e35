//! The `compshare-teardown` binary: parse, then hand over to [`compshare_teardown::app`].

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    return_freed_memory();
    match compshare_teardown::cli::Cli::try_parse() {
        Ok(cli) => compshare_teardown::app::main(cli),
        Err(e) => compshare_teardown::app::refused(e),
    }
}

/// glibc keeps memory freed at the top of its heap for reuse, and raises its threshold for
/// serving large blocks by `mmap` each time one is freed, so the selection's rows, freed
/// before the teardown starts, stayed part of the process for the whole run while the
/// engine's records came from fresh pages: at 10,000 instances the peak RSS was 40 MiB
/// where the live heap never passed 22 MiB. A trim threshold of 0 gives freed pages back
/// at once (and fixes the mmap threshold at its 128 KiB default): 36.7 MiB, at no measured
/// cost in CPU. Other allocators are left as they are.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn return_freed_memory() {
    // SAFETY: `mallopt` only sets a tuning parameter of glibc's allocator; it is called
    // before any other thread exists, and its result (0 on a refused setting) only means
    // the default stays.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, 0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn return_freed_memory() {}
