//! The layering of docs/ARCHITECTURE.md, checked: the core (`src/platform/`) names no web
//! framework. HTTP itself (the `http` and `hyper` crates) is the gateway's business and stays;
//! sessions, routing, rendering and middleware belong to `src/api/`, `src/ui/` and `src/server.rs`.

use std::path::{Path, PathBuf};

/// Crates the core must not name (as `crate::` paths or `use` roots).
const WEB_FRAMEWORKS: [&str; 8] =
    ["axum", "axum_login", "tower_sessions", "tower_http", "leptos", "leptos_axum", "leptos_router", "leptos_meta"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read the source directory") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The places `line` names crate `name` as a path root: `name::…`, `use name`, `name as`.
fn names_crate(line: &str, name: &str) -> bool {
    let code = line.split("//").next().unwrap_or_default();
    code.match_indices(name).any(|(at, _)| {
        let before = code[..at].chars().next_back();
        let after = &code[at + name.len()..];
        let starts_path = before.is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == ':'));
        starts_path
            && (after.starts_with("::")
                || (code.trim_start().starts_with("use ") && (after.starts_with(';') || after.starts_with(" as"))))
    })
}

#[test]
fn the_core_names_no_web_framework() {
    let core = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/platform");
    let mut files = Vec::new();
    rust_files(&core, &mut files);
    assert!(files.len() > 20, "the core's files were not found under {}", core.display());
    let mut found = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read a source file");
        for (number, line) in text.lines().enumerate() {
            for name in WEB_FRAMEWORKS {
                if names_crate(line, name) {
                    found.push(format!("{}:{}: {name}: {}", file.display(), number + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "the core must not depend on a web framework (move this to src/api/):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_check_sees_what_it_looks_for() {
    assert!(names_crate("impl axum_login::AuthUser for UserRecord {", "axum_login"));
    assert!(names_crate("use axum::Router;", "axum"));
    assert!(names_crate("    let x = leptos::prelude::view! {};", "leptos"));
    assert!(!names_crate("// axum::Router in a comment", "axum"));
    assert!(!names_crate("use crate::api::axum_adapter;", "axum_adapter"), "a path segment, not a root");
    assert!(!names_crate("let relaxum::x = 1;", "axum"));
}
