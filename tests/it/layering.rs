//! The layering of `src/` (ARCHITECTURE.md, "Layers"): the two halves never name each other,
//! what both share names neither, and inside a half a module names only the modules below it.
//! A path written as `crate::server::NAME` or `crate::client::NAME` (code or doc link) counts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The server's modules, lowest first.
const SERVER: &[&str] = &[
    "cli",
    "journal",
    "registry",
    "auth",
    "access",
    "long_polls",
    "metrics",
    "config",
    "store",
    "node_list",
    "allocator",
    "gateway",
    "http",
    "tiny_http_workarounds",
    "running",
];

/// The client's modules, lowest first.
const CLIENT: &[&str] = &[
    "error",
    "view",
    "transport",
    "session",
    "heartbeat_thread",
    "watch_thread",
    "gateway_client",
    "discovery",
];

/// The modules at the top, which both halves use and which name neither.
const SHARED: &[&str] = &["api", "files", "logger", "lib"];

#[test]
fn no_module_names_one_above_it_or_the_other_half() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut problems = Vec::new();
    let mut seen = BTreeMap::new();
    for file in rust_files(&src) {
        let relative = file
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if relative.starts_with("bin/") {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let (half, module) = module_of(&relative);
        seen.insert((half, module.clone()), ());
        for (other_half, named) in named_modules(&text) {
            let problem = match (half, other_half) {
                ("", _) => Some("the shared top names a half".to_owned()),
                (h, o) if h != o => Some(format!("the {h} names the {o}")),
                // A half's root declares and re-exports its modules.
                _ if module == "mod" => None,
                (h, _) => {
                    let order = if h == "server" { SERVER } else { CLIENT };
                    let rank = |m: &str| order.iter().position(|x| *x == m);
                    match (rank(&module), rank(&named)) {
                        (Some(a), Some(b)) if b < a || named == module => None,
                        (None, _) => Some(format!("{module} is not in the {h}'s layer list")),
                        (_, None) => Some(format!("{named} is not in the {h}'s layer list")),
                        _ => Some(format!("names {named}, which is above it")),
                    }
                }
            };
            if let Some(problem) = problem {
                problems.push(format!(
                    "src/{relative}: crate::{other_half}::{named}: {problem}"
                ));
            }
        }
    }
    // Every module of each half is in its list, so a new one is placed on purpose.
    for (half, order) in [("server", SERVER), ("client", CLIENT)] {
        for ((h, module), ()) in &seen {
            if *h == half && module != "mod" && !order.contains(&module.as_str()) {
                problems.push(format!(
                    "src/{half}/{module}: not in the {half}'s layer list"
                ));
            }
        }
    }
    for ((h, module), ()) in &seen {
        if h.is_empty() && !SHARED.contains(&module.as_str()) {
            problems.push(format!(
                "src/{module}: a top-level module not in the shared list"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "layering broken:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_checker_sees_a_path_into_the_other_half() {
    let named =
        named_modules("use crate::server::gateway::Gateway;\n/// [`x`](crate::client::view)");
    assert_eq!(
        named,
        vec![
            ("server", "gateway".to_owned()),
            ("client", "view".to_owned())
        ]
    );
    assert_eq!(
        module_of("server/store/etcd/wire.rs"),
        ("server", "store".to_owned())
    );
    assert_eq!(module_of("client/mod.rs"), ("client", "mod".to_owned()));
    assert_eq!(module_of("api.rs"), ("", "api".to_owned()));
}

/// The half (`server`, `client`, or `""` for the shared top) and the module a file belongs to.
fn module_of(relative: &str) -> (&'static str, String) {
    let without = relative.trim_end_matches(".rs");
    let mut parts = without.split('/');
    let first = parts.next().unwrap();
    let half = match first {
        "server" => "server",
        "client" => "client",
        _ => return ("", first.to_owned()),
    };
    (half, parts.next().unwrap_or("mod").to_owned())
}

/// Every `crate::server::NAME` and `crate::client::NAME` in `text`, in order.
fn named_modules(text: &str) -> Vec<(&'static str, String)> {
    let mut found = Vec::new();
    for (half, prefix) in [("server", "crate::server::"), ("client", "crate::client::")] {
        let mut rest = text;
        while let Some(at) = rest.find(prefix) {
            let after = &rest[at + prefix.len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            // Lower-case names are modules; a type re-exported by the half's root (ClientBuilder)
            // is named through the root, which names every module.
            if name.starts_with(|c: char| c.is_ascii_lowercase()) {
                found.push((at + text.len() - rest.len(), half, name));
            }
            rest = after;
        }
    }
    found.sort();
    found.into_iter().map(|(_, h, n)| (h, n)).collect()
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files.sort();
    files
}
