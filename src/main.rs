//! The kubefn server: parses the configuration, sets up logging and serves.

// The pages' view types nest deeply; release builds compute their layouts past the default limit.
#![recursion_limit = "256"]

use clap::Parser;
use kubefn::server::{Config, serve};
use std::process::ExitCode;

/// mimalloc rather than glibc's allocator: the gateway allocates a little for every request, on
/// every worker thread, and mimalloc's thread-local heaps make that cheaper.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log).unwrap_or_else(|error| {
        eprintln!("kubefn: --log {:?} is not a valid filter ({error}); using \"info\"", config.log);
        tracing_subscriber::EnvFilter::new("info")
    });
    tracing_subscriber::fmt().with_env_filter(filter).init();
    raise_open_files_limit();
    // The kube client's TLS needs a process-wide crypto provider; if another crate brought a
    // second one, rustls cannot choose by itself. An error only means one is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
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
