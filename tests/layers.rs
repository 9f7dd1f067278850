//! Every arrow points down: a module of `zeroservices-core` uses only modules of lower layers
//! (the order of docs/architecture.md, "Layers"), the mongo backend's modules do not form a
//! cycle, and each library crate depends only on the crates below it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use regex::Regex;

/// The core's modules, lowest first. A module may use any module listed before it.
const CORE_LAYERS: &[&str] = &[
    "error",
    "task",
    "trace",
    "protocol",
    "cluster_key",
    "query",
    "directory",
    "medium",
    "discovery",
    "resources",
    "store",
    "node",
    "worker",
    "fuzzing",
];

/// The mongo backend's modules, lowest first.
const MONGO_LAYERS: &[&str] = &["convert", "pushdown", "recent", "store"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let p = entry.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The source without comments (line comments, doc comments).
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("read");
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The module of `src` a file belongs to (`src/node/events.rs` → `node`).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_string_lossy();
    Some(first.trim_end_matches(".rs").to_owned())
}

/// Names the crate root re-exports (`pub use node::{Node, ...}`), mapped to their module.
fn root_exports(lib: &Path) -> HashMap<String, String> {
    let text = code(lib);
    let block = Regex::new(r"pub use (\w+)::\{([^}]*)\}").expect("regex");
    let single = Regex::new(r"pub use (\w+)::(\w+);").expect("regex");
    let mut map = HashMap::new();
    for c in block.captures_iter(&text) {
        for name in c[2].split(',').map(str::trim).filter(|n| !n.is_empty()) {
            map.insert(name.to_owned(), c[1].to_owned());
        }
    }
    for c in single.captures_iter(&text) {
        map.insert(c[2].to_owned(), c[1].to_owned());
    }
    map
}

/// `crate::x` paths in `file`, as modules (root re-exports resolved), with the line.
fn crate_uses(file: &Path, exports: &HashMap<String, String>) -> Vec<(String, String)> {
    let path = Regex::new(r"crate::(\w+)").expect("regex");
    let braced = Regex::new(r"use crate::\{([^}]*)\}").expect("regex");
    let text = code(file);
    let mut found = Vec::new();
    let mut resolve = |name: &str, line: &str| {
        let module = exports
            .get(name)
            .cloned()
            .unwrap_or_else(|| name.to_owned());
        found.push((module, line.trim().to_owned()));
    };
    for line in text.lines() {
        for c in path.captures_iter(line) {
            resolve(&c[1], line);
        }
    }
    for c in braced.captures_iter(&text) {
        for name in c[1].split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let head = name.split("::").next().unwrap_or(name);
            resolve(head, name);
        }
    }
    found
}

fn upward_uses(src: &Path, layers: &[&str]) -> Vec<String> {
    let exports = root_exports(&src.join("lib.rs"));
    let rank = |m: &str| layers.iter().position(|l| *l == m);
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut bad = Vec::new();
    for f in files {
        let Some(me) = module_of(src, &f) else {
            continue;
        };
        let Some(my_rank) = rank(&me) else { continue };
        for (used, line) in crate_uses(&f, &exports) {
            if let Some(r) = rank(&used) {
                if r > my_rank {
                    bad.push(format!("{} ({me}) uses {used}: {line}", f.display()));
                }
            }
        }
    }
    bad
}

#[test]
fn every_module_uses_only_lower_layers() {
    let mut bad = upward_uses(&root().join("zeroservices-core/src"), CORE_LAYERS);
    bad.extend(upward_uses(
        &root().join("zeroservices-mongo/src"),
        MONGO_LAYERS,
    ));
    assert!(bad.is_empty(), "upward arrows:\n{}", bad.join("\n"));
    // Every module of the core is placed in the order (a new one must be).
    let mut files = Vec::new();
    let src = root().join("zeroservices-core/src");
    rust_files(&src, &mut files);
    for f in files {
        if let Some(m) = module_of(&src, &f).filter(|m| m != "lib") {
            assert!(CORE_LAYERS.contains(&m.as_str()), "module {m} has no layer");
        }
    }
}

/// `[dependencies]` of a crate that are crates of this workspace.
fn workspace_deps(manifest: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(manifest).expect("manifest");
    let deps = text
        .split("[dependencies]")
        .nth(1)
        .and_then(|rest| rest.split("\n[").next())
        .unwrap_or("");
    deps.lines()
        .filter_map(|l| l.split(['.', '=', ' ']).next())
        .filter(|n| n.starts_with("zeroservices"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn crates_depend_only_on_crates_below() {
    let core = workspace_deps(&root().join("zeroservices-core/Cargo.toml"));
    assert!(core.is_empty(), "the core depends on {core:?}");
    for upper in ["zeroservices-http", "zeroservices-mongo"] {
        let deps = workspace_deps(&root().join(upper).join("Cargo.toml"));
        assert_eq!(deps, vec!["zeroservices-core"], "{upper}");
    }
}
