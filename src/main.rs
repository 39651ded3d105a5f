//! The `callbridge` binary: parse the command line, hand it to the library
//! (`callbridge::cli::run`), print the error if any. Every subcommand lives in `src/cli/`.

use std::process::ExitCode;

use clap::Parser;

use callbridge::cli::{self, Cli};

/// mimalloc instead of glibc's malloc: fewer cycles per request and less fragmentation under
/// load (measured in docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // No transparent huge pages. mimalloc asks for them on its arenas (MADV_HUGEPAGE), so a
    // 2 MiB page becomes resident as soon as one byte of it is touched: measured with the null
    // sink at the ledger's cap, 30 MiB of a 78 MiB peak RSS were huge pages (69 MiB without,
    // same throughput; docs/benchmarks.md). A heap this size gains nothing from them, and the
    // RSS is what a container's memory limit counts. Checked at every page fault, so the pages
    // mapped before `main` are covered too.
    #[cfg(target_os = "linux")]
    let _ = nix::sys::prctl::set_thp_disable(true);
    let cli = Cli::parse();
    match cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
