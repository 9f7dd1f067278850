//! `--config FILE`: the settings of `zeroservices serve` from a TOML file. Keys are the long
//! flag names (`store = "memory"`, `collection = ["power", "users=users.json"]`,
//! `heartbeat-ms = 500`, …). Precedence: command-line flag > `ZEROSERVICES_*` variable > file >
//! default — the file only fills in variables that are not set.

use std::path::Path;

use anyhow::{bail, Context};

/// (TOML key, environment variable, separator for lists)
const KEYS: &[(&str, &str, &str)] = &[
    ("name", "ZEROSERVICES_NAME", ""),
    ("collection", "ZEROSERVICES_COLLECTIONS", ","),
    ("store", "ZEROSERVICES_STORE", ""),
    ("http", "ZEROSERVICES_HTTP", ""),
    ("no-http", "ZEROSERVICES_NO_HTTP", ""),
    ("cors-origin", "ZEROSERVICES_CORS_ORIGINS", ","),
    ("users-file", "ZEROSERVICES_USERS_FILE", ""),
    (
        "jwt-hs256-secret-file",
        "ZEROSERVICES_JWT_HS256_SECRET_FILE",
        "",
    ),
    (
        "jwt-rs256-public-key",
        "ZEROSERVICES_JWT_RS256_PUBLIC_KEY",
        "",
    ),
    ("jwt-issuer", "ZEROSERVICES_JWT_ISSUER", ""),
    ("jwt-audience", "ZEROSERVICES_JWT_AUDIENCE", ""),
    ("anonymous", "ZEROSERVICES_ANONYMOUS", ""),
    ("body-limit", "ZEROSERVICES_BODY_LIMIT", ""),
    ("ws-queue", "ZEROSERVICES_WS_QUEUE", ""),
    ("replay", "ZEROSERVICES_REPLAY", ""),
    ("replay-bytes", "ZEROSERVICES_REPLAY_BYTES", ""),
    ("discovery", "ZEROSERVICES_DISCOVERY", ""),
    ("interface", "ZEROSERVICES_INTERFACE", ""),
    ("bind", "ZEROSERVICES_BIND", ""),
    ("open-cluster", "ZEROSERVICES_OPEN_CLUSTER", ""),
    ("router-port", "ZEROSERVICES_ROUTER_PORT", ""),
    ("pub-port", "ZEROSERVICES_PUB_PORT", ""),
    ("heartbeat-ms", "ZEROSERVICES_HEARTBEAT_MS", ""),
    ("timeout-ms", "ZEROSERVICES_TIMEOUT_MS", ""),
    ("cluster-key-file", "ZEROSERVICES_CLUSTER_KEY_FILE", ""),
    ("header-timeout", "ZEROSERVICES_HEADER_TIMEOUT", ""),
    ("body-timeout", "ZEROSERVICES_BODY_TIMEOUT", ""),
    ("shutdown-timeout", "ZEROSERVICES_SHUTDOWN_TIMEOUT", ""),
];

fn scalar(v: &toml::Value) -> anyhow::Result<String> {
    Ok(match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Float(f) => f.to_string(),
        other => bail!("unsupported value {other:?}"),
    })
}

/// The environment variables a config file sets (only those not already set).
pub fn env_from_file(path: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let table: toml::Table = text
        .parse()
        .with_context(|| format!("parsing {}", path.display()))?;
    let mut out = Vec::new();
    for (key, value) in &table {
        let norm = key.replace('_', "-");
        let norm = match norm.as_str() {
            "collections" => "collection".to_owned(),
            "cors-origins" => "cors-origin".to_owned(),
            _ => norm,
        };
        if ["user", "users", "cluster-key", "jwt-hs256-secret"].contains(&norm.as_str()) {
            bail!(
                "{}: {key}: secrets are read from their own files, not settings: use users-file, cluster-key-file or jwt-hs256-secret-file",
                path.display()
            );
        }
        let Some((_, env, sep)) = KEYS.iter().find(|(k, _, _)| *k == norm) else {
            bail!("{}: unknown setting {key:?}", path.display());
        };
        let text = match value {
            toml::Value::Array(items) => {
                if sep.is_empty() {
                    bail!("{}: {key} takes one value", path.display());
                }
                items
                    .iter()
                    .map(scalar)
                    .collect::<anyhow::Result<Vec<_>>>()?
                    .join(sep)
            }
            v => scalar(v).with_context(|| format!("{}: {key}", path.display()))?,
        };
        if std::env::var_os(env).is_none() {
            out.push((env.to_string(), text));
        }
    }
    Ok(out)
}

/// Finds `--config FILE` / `--config=FILE` in the arguments.
pub fn config_arg(args: &[String]) -> Option<String> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--config" {
            return it.next().cloned();
        }
        if let Some(v) = a.strip_prefix("--config=") {
            return Some(v.to_owned());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_keys_to_variables_and_rejects_unknown_ones() {
        let dir = std::env::temp_dir().join(format!("zs-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("a.toml");
        std::fs::write(&f, "name = \"n1\"\ncollection = [\"power\", \"users\"]\nheartbeat_ms = 250\nno-http = true\n").unwrap();
        let env = env_from_file(&f).unwrap();
        let get = |k: &str| env.iter().find(|(e, _)| e == k).map(|(_, v)| v.clone());
        assert_eq!(
            get("ZEROSERVICES_COLLECTIONS").as_deref(),
            Some("power,users")
        );
        assert_eq!(get("ZEROSERVICES_HEARTBEAT_MS").as_deref(), Some("250"));
        assert_eq!(get("ZEROSERVICES_NO_HTTP").as_deref(), Some("true"));
        std::fs::write(&f, "colection = [\"typo\"]\n").unwrap();
        assert!(env_from_file(&f).is_err());
        std::fs::write(&f, "cluster-key = \"a-secret-in-a-settings-file\"\n").unwrap();
        let e = env_from_file(&f).unwrap_err().to_string();
        assert!(e.contains("cluster-key-file"), "{e}");
        assert_eq!(
            config_arg(&["serve".into(), "--config".into(), "x.toml".into()]).as_deref(),
            Some("x.toml")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
