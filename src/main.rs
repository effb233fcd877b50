//! The kubefn binary: the server (`kubefn`, `kubefn serve`), or with another subcommand a
//! client of a running kubefn (`kubefn login`, `kubefn fn …`, `kubefn token …`).

// The pages' view types nest deeply; release builds compute their layouts past the default limit.
#![recursion_limit = "256"]

use clap::Parser;
use kubefn::cli::{Cli, Command};
use kubefn::server::{Config, serve};
use std::process::ExitCode;

/// mimalloc rather than glibc's allocator: the gateway allocates a little for every request, on
/// every worker thread, and mimalloc's thread-local heaps make that cheaper.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (mimalloc.h; the sys crate names no constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn main() -> ExitCode {
    // Freed memory goes back to the system at once rather than after mimalloc's default second:
    // a burst (the admin's argon2 hash at start-up takes 19 MiB, a large upload) otherwise
    // stays in kubefn's RSS until mimalloc next looks (idle RSS 48 -> 25 MiB measured).
    // An operator's MIMALLOC_PURGE_DELAY (which mimalloc reads itself) wins over this default.
    // SAFETY: mi_option_set only stores an option's value, here before any other thread runs.
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    }
    match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime.block_on(run()),
        Err(error) => {
            eprintln!("kubefn: cannot start the async runtime: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> ExitCode {
    let cli = Cli::parse();
    // The kube client's TLS (and the CLI's HTTPS) needs a process-wide crypto provider; if
    // another crate brought a second one, rustls cannot choose by itself. An error only means
    // one is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match cli.command {
        None => run_server(cli.serve).await,
        Some(Command::Serve(config)) => run_server(*config).await,
        Some(command) => kubefn::cli::run(command).await,
    }
}

async fn run_server(config: Config) -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log).unwrap_or_else(|error| {
        eprintln!("kubefn: --log {:?} is not a valid filter ({error}); using \"info\"", config.log);
        tracing_subscriber::EnvFilter::new("info")
    });
    // Colours only for a terminal: a log file or a collector (kubectl logs, journald) would
    // otherwise get escape codes in every line.
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(terminal).init();
    raise_open_files_limit();
    match serve(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("kubefn: {}", kubefn::platform::error_chain(&error));
            ExitCode::FAILURE
        }
    }
}

/// Raises this process's soft limit on open files to its hard limit, as Go programs and nginx
/// (`worker_rlimit_nofile`) do: every gateway connection, replica socket and live-log follower
/// is an open file, and distributions start programs at a soft limit of 1,024. Function
/// processes set their own, lower limit (the sandbox's), so they gain nothing from this.
fn raise_open_files_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit read and change only this process's limits, through a
    // struct that lives across both calls.
    let raised = unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0
            && (limit.rlim_cur >= limit.rlim_max || {
                let wanted = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
                libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) == 0
            })
    };
    if !raised {
        tracing::warn!(
            "could not raise the open files limit past {}: connections and log followers beyond it are refused",
            limit.rlim_cur
        );
    }
}
