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
