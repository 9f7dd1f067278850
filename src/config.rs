//! `--config FILE`: the settings of `zeroservices serve` from a TOML file. Keys are the long
//! flag names (`store = "memory"`, `collection = ["power", "users=users.json"]`,
//! `heartbeat-ms = 500`, …). Precedence: command-line flag > `ZEROSERVICES_*` variable > file >
//! default.
//!
//! The file becomes command-line arguments for the flags that neither the command line nor
//! their variable set; which keys exist, their variables and whether they take lists or are
//! switches all come from the clap definition of the command, so a new flag is a new key.

use std::path::Path;

use anyhow::{bail, Context};
use clap::ArgAction;

/// Keys that would put a secret in a settings file: each has a `*-file` form instead.
const SECRETS: &[&str] = &["user", "users", "cluster-key", "jwt-hs256-secret"];

fn scalar(v: &toml::Value) -> anyhow::Result<String> {
    Ok(match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Float(f) => f.to_string(),
        other => bail!("unsupported value {other:?}"),
    })
}

/// Whether `given` (the command line) already sets the flag `--long`.
fn on_command_line(given: &[String], long: &str) -> bool {
    let flag = format!("--{long}");
    given
        .iter()
        .any(|a| *a == flag || a.starts_with(&format!("{flag}=")))
}

/// The arguments the config file at `path` adds to `given`, a command line of `cmd`.
pub fn args_from_file(
    path: &Path,
    cmd: &clap::Command,
    given: &[String],
) -> anyhow::Result<Vec<String>> {
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
        if SECRETS.contains(&norm.as_str()) {
            bail!(
                "{}: {key}: secrets are read from their own files, not settings: use users-file, cluster-key-file or jwt-hs256-secret-file",
                path.display()
            );
        }
        let Some(arg) = cmd
            .get_arguments()
            .find(|a| a.get_long() == Some(norm.as_str()) && norm != "config")
        else {
            bail!("{}: unknown setting {key:?}", path.display());
        };
        let env_set = arg.get_env().is_some_and(|e| std::env::var_os(e).is_some());
        if on_command_line(given, &norm) || env_set {
            continue;
        }
        let flag = format!("--{norm}");
        match (arg.get_action(), value) {
            (ArgAction::SetTrue, v) => {
                if scalar(v)? == "true" {
                    out.push(flag);
                }
            }
            (ArgAction::Append, toml::Value::Array(items)) => {
                for item in items {
                    out.push(format!("{flag}={}", scalar(item)?));
                }
            }
            (_, toml::Value::Array(_)) => bail!("{}: {key} takes one value", path.display()),
            (_, v) => out.push(format!(
                "{flag}={}",
                scalar(v).with_context(|| format!("{}: {key}", path.display()))?
            )),
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
    use clap::{Arg, Command};

    fn serve() -> Command {
        Command::new("serve")
            .arg(Arg::new("name").long("name").env("ZS_TEST_CONFIG_NAME"))
            .arg(
                Arg::new("collection")
                    .long("collection")
                    .action(ArgAction::Append),
            )
            .arg(Arg::new("heartbeat-ms").long("heartbeat-ms"))
            .arg(
                Arg::new("no-http")
                    .long("no-http")
                    .action(ArgAction::SetTrue),
            )
            .arg(Arg::new("config").long("config"))
    }

    #[test]
    fn keys_become_flags_and_the_command_line_wins() {
        let dir = std::env::temp_dir().join(format!("zs-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("a.toml");
        std::fs::write(
            &f,
            "name = \"n1\"\ncollections = [\"power\", \"users\"]\nheartbeat_ms = 250\nno-http = true\n",
        )
        .unwrap();
        let args = args_from_file(&f, &serve(), &[]).unwrap();
        assert_eq!(
            args,
            [
                "--collection=power",
                "--collection=users",
                "--heartbeat-ms=250",
                "--name=n1",
                "--no-http"
            ]
        );
        let given = ["--heartbeat-ms".to_owned(), "100".to_owned()];
        let args = args_from_file(&f, &serve(), &given).unwrap();
        assert!(
            !args.iter().any(|a| a.starts_with("--heartbeat-ms")),
            "{args:?}"
        );

        std::fs::write(&f, "colection = [\"typo\"]\n").unwrap();
        assert!(args_from_file(&f, &serve(), &[]).is_err());
        std::fs::write(&f, "name = [\"a\", \"b\"]\n").unwrap();
        assert!(args_from_file(&f, &serve(), &[]).is_err());
        std::fs::write(&f, "cluster-key = \"a-secret-in-a-settings-file\"\n").unwrap();
        let e = args_from_file(&f, &serve(), &[]).unwrap_err().to_string();
        assert!(e.contains("cluster-key-file"), "{e}");
        assert_eq!(
            config_arg(&["serve".into(), "--config".into(), "x.toml".into()]).as_deref(),
            Some("x.toml")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
