//! `zeroservices new NAME`: writes a project skeleton — a resource service, a worker and an API
//! node — whose own test passes. The framework is referenced by path (this checkout) and its
//! `Cargo.lock` is copied, so the project builds with the versions the framework is tested with.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

const FILES: &[(&str, &str)] = &[
    ("Cargo.toml", include_str!("skeleton/Cargo.toml.tmpl")),
    ("src/lib.rs", include_str!("skeleton/lib.rs.tmpl")),
    ("src/main.rs", include_str!("skeleton/main.rs.tmpl")),
    ("tests/smoke.rs", include_str!("skeleton/smoke.rs.tmpl")),
    ("README.md", include_str!("skeleton/README.md.tmpl")),
    (".gitignore", "/target\n/data\n"),
];

/// Where the framework sources are (this crate's directory at build time).
pub fn framework_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Writes the project `name` under `parent`; returns its directory.
pub fn generate(name: &str, parent: &Path, framework: &Path) -> anyhow::Result<PathBuf> {
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic());
    if !valid {
        bail!("project name {name:?}: letters, digits, '-' and '_', starting with a letter");
    }
    let dir = parent.join(name);
    if dir.exists() {
        bail!("{} already exists", dir.display());
    }
    let crate_name = name.replace('-', "_");
    let framework = framework
        .canonicalize()
        .with_context(|| format!("framework at {}", framework.display()))?;
    for (path, template) in FILES {
        let text = template
            .replace("{{name}}", name)
            .replace("{{crate}}", &crate_name)
            .replace(
                "{{framework}}",
                &framework.display().to_string().replace('\\', "/"),
            );
        let target = dir.join(path);
        if let Some(p) = target.parent() {
            std::fs::create_dir_all(p)?;
        }
        std::fs::write(&target, text).with_context(|| format!("writing {}", target.display()))?;
    }
    let lock = framework.join("Cargo.lock");
    if lock.exists() {
        std::fs::copy(&lock, dir.join("Cargo.lock"))?;
    }
    Ok(dir)
}
