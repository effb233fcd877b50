//! The bootstraps that serve a function's source over HTTP, embedded in kubefn so both runtimes
//! run the very same files: the local runtime writes them to its data directory, the kubernetes
//! runtime puts them in each version's ConfigMap.

use crate::platform::model::Language;

/// The path a bootstrap answers 200 on once the function is loaded (the readiness probe).
pub const READY_PATH: &str = "/_/ready";
/// The path a bootstrap answers 200 on while it serves (the liveness probe).
pub const HEALTH_PATH: &str = "/_/health";

/// One language's bootstrap and the file names it expects next to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bootstrap {
    /// The bootstrap's file name.
    pub file: &'static str,
    /// The bootstrap's source.
    pub source: &'static str,
    /// The file name the function's source is written to.
    pub function_file: &'static str,
    /// The file name the declared dependencies are written to.
    pub requirements_file: &'static str,
    /// The interpreter's command name.
    pub interpreter: &'static str,
}

/// The Python bootstrap (standard library only).
pub const PYTHON: Bootstrap = Bootstrap {
    file: "bootstrap.py",
    source: include_str!("../../runtimes/python/bootstrap.py"),
    function_file: "function.py",
    requirements_file: "requirements.txt",
    interpreter: "python3",
};

/// The Node bootstrap (core modules only).
pub const NODE: Bootstrap = Bootstrap {
    file: "bootstrap.js",
    source: include_str!("../../runtimes/node/bootstrap.js"),
    function_file: "function.js",
    requirements_file: "package.json",
    interpreter: "node",
};

/// The bootstrap of a source language; `None` for image functions, which serve HTTP themselves.
pub fn for_language(language: Language) -> Option<&'static Bootstrap> {
    match language {
        Language::Python => Some(&PYTHON),
        Language::Node => Some(&NODE),
        Language::Image => None,
    }
}

/// Node's `--max-old-space-size` for a memory limit in bytes: V8 collects garbage before the
/// heap reaches three quarters of the limit, rather than growing until the replica is killed.
pub fn node_heap_limit_flag(memory_limit_bytes: u64) -> String {
    format!("--max-old-space-size={}", (memory_limit_bytes / (1024 * 1024) * 3 / 4).max(16))
}
