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

/// The module (as `a::b::c`, `crate` for lib.rs) of each source file under `src/`.
fn modules() -> Vec<(String, PathBuf)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files
        .into_iter()
        .filter(|f| !f.ends_with("main.rs"))
        .map(|file| {
            let relative = file.strip_prefix(&src).expect("under src").with_extension("");
            let mut parts: Vec<String> = relative.iter().map(|p| p.to_string_lossy().into_owned()).collect();
            if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
                parts.pop();
            }
            (if parts.is_empty() { "crate".to_string() } else { parts.join("::") }, file)
        })
        .collect()
}

/// Every path a file names through `crate::` or `super::` (use groups expanded), outside its
/// `#[cfg(test)]` module, made absolute from `module`.
fn paths_named(module: &str, text: &str) -> Vec<String> {
    let code = text.split("#[cfg(test)]\nmod tests").next().unwrap_or_default();
    let code: String = code.lines().map(|l| l.split("//").next().unwrap_or_default()).collect::<Vec<_>>().join("\n");
    let mut paths = Vec::new();
    // `use` statements (a line that starts one, to its `;`), braces expanded.
    let lines: Vec<&str> = code.lines().collect();
    for (number, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let Some(rest) = ["use ", "pub use ", "pub(crate) use "].iter().find_map(|start| trimmed.strip_prefix(start))
        else {
            continue;
        };
        let mut statement = rest.to_string();
        let mut next = number + 1;
        while !statement.contains(';') && next < lines.len() {
            statement.push_str(lines[next]);
            next += 1;
        }
        let statement = statement.split(';').next().unwrap_or_default().replace(" as ", "@");
        let tree: String = statement.chars().filter(|c| !c.is_whitespace()).collect();
        expand(&tree, &mut paths);
    }
    // Paths written inline (`crate::platform::model::Quota::DEFAULT`).
    for (at, _) in code.match_indices("crate::") {
        let path: String = code[at..].chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':').collect();
        paths.push(path);
    }
    let own: Vec<&str> = if module == "crate" { Vec::new() } else { module.split("::").collect() };
    paths
        .into_iter()
        .filter_map(|path| {
            let mut parts: Vec<&str> = path.split("::").filter(|p| !p.is_empty()).collect();
            let mut base: Vec<&str> = match parts.first() {
                Some(&"crate") => {
                    parts.remove(0);
                    Vec::new()
                }
                Some(&"super") => {
                    let mut base = own.clone();
                    while parts.first() == Some(&"super") {
                        parts.remove(0);
                        base.pop();
                    }
                    base
                }
                _ => return None,
            };
            base.extend(parts);
            Some(base.join("::"))
        })
        .collect()
}

/// `a::{b, c::{d, e}}` as `a::b`, `a::c::d`, `a::c::e`.
fn expand(tree: &str, out: &mut Vec<String>) {
    let Some(open) = tree.find('{') else {
        out.push(tree.trim_end_matches("::*").split('@').next().unwrap_or_default().to_string());
        return;
    };
    let prefix = &tree[..open];
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let mut depth = 0;
    let mut start = 0;
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                expand(&format!("{prefix}{}", &inner[start..i]), out);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < inner.len() {
        expand(&format!("{prefix}{}", &inner[start..]), out);
    }
}

/// Which file modules each file module names, leaving out its own ancestors (a parent declares
/// its children and holds what they share; naming it is not a cycle) and itself.
fn module_graph() -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    let modules = modules();
    let known: std::collections::BTreeSet<String> = modules.iter().map(|(m, _)| m.clone()).collect();
    let mut graph = std::collections::BTreeMap::new();
    for (module, file) in &modules {
        let text = std::fs::read_to_string(file).expect("read a source file");
        let mut named = std::collections::BTreeSet::new();
        for path in paths_named(module, &text) {
            // The longest prefix that is a file module.
            let parts: Vec<&str> = path.split("::").collect();
            let target = (1..=parts.len()).rev().map(|n| parts[..n].join("::")).find(|p| known.contains(p));
            let Some(target) = target else { continue };
            let ancestor = module == &target || module.starts_with(&format!("{target}::"));
            if !ancestor {
                named.insert(target);
            }
        }
        graph.insert(module.clone(), named);
    }
    graph
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let graph = module_graph();
    assert!(graph.len() > 50, "the source files were not found: {graph:?}");
    assert!(graph["ui::login"].contains("ui::session"), "the graph sees `use super::…`: {:?}", graph["ui::login"]);
    let supervisor = &graph["platform::runtime::local::supervisor"];
    assert!(supervisor.contains("platform::runtime::local::warm_pool"), "{supervisor:?}");
    assert!(
        graph["platform::instances"].contains("platform::async_invocations")
            || graph["platform::gateway"].contains("platform::store"),
        "crate:: paths are seen"
    );
    // Depth-first search for a cycle, reporting the first.
    fn visit(
        module: &str,
        graph: &std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut std::collections::BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|m| m == module) {
            let mut cycle = path[at..].to_vec();
            cycle.push(module.to_string());
            return Some(cycle);
        }
        if done.contains(module) {
            return None;
        }
        path.push(module.to_string());
        for next in graph.get(module).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(module.to_string());
        None
    }
    let mut done = std::collections::BTreeSet::new();
    for module in graph.keys() {
        if let Some(cycle) = visit(module, &graph, &mut Vec::new(), &mut done) {
            panic!("an import cycle: {}", cycle.join(" → "));
        }
    }
}

#[test]
fn the_cycle_check_reads_use_groups_and_super() {
    let paths = paths_named(
        "ui::login",
        "use super::{session::Session, FieldMessage};\nuse super::async_thing::Task as Job;\nuse crate::api::{self, functions::{LogIn, LogOut}};\nfn f() { crate::platform::model::Quota::DEFAULT; }\n#[cfg(test)]\nmod tests {\n use crate::app::App;\n}",
    );
    for expected in [
        "ui::async_thing::Task",
        "ui::session::Session",
        "ui::FieldMessage",
        "api::self",
        "api::functions::LogIn",
        "platform::model::Quota::DEFAULT",
    ] {
        assert!(paths.iter().any(|p| p == expected), "{expected} not in {paths:?}");
    }
    assert!(!paths.iter().any(|p| p.starts_with("app")), "test modules are left out: {paths:?}");
}

/// Longest a source file may be; unit tests live in a `tests.rs` beside a module's `mod.rs`
/// when they would take it past this.
const MAX_FILE_LINES: usize = 500;

#[test]
fn no_source_file_is_over_500_lines() {
    let over: Vec<String> = modules()
        .into_iter()
        .filter(|(_, file)| !file.ends_with("tests.rs"))
        .filter_map(|(_, file)| {
            let lines = std::fs::read_to_string(&file).expect("read a source file").lines().count();
            (lines > MAX_FILE_LINES).then(|| format!("{} ({lines} lines)", file.display()))
        })
        .collect();
    assert!(over.is_empty(), "split these along their seams (docs/ARCHITECTURE.md):\n{}", over.join("\n"));
}
