//! A daemon's TOML configuration file. Its keys are the long flag names
//! (`node_id` or `node-id` for `--node-id`); each value is applied as the
//! flag's `BERTH_*` environment variable unless that variable is already
//! set, so that clap then resolves flags > environment > file.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Parse { path: PathBuf, message: String },
    #[error(
        "config file {path}: unknown key {key:?}; keys are the long flag names, e.g. {example}"
    )]
    UnknownKey {
        path: PathBuf,
        key: String,
        example: String,
    },
    #[error("config file {path}: key {key:?}: {message}")]
    BadValue {
        path: PathBuf,
        key: String,
        message: String,
    },
}

/// The `--config FILE` given in `args` (or in `BERTH_CONFIG`), if any.
pub fn config_path(args: &[String]) -> Option<PathBuf> {
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if arg == "--config" {
            return iter.next().map(PathBuf::from);
        }
        if let Some(value) = arg.strip_prefix("--config=") {
            return Some(PathBuf::from(value));
        }
    }
    std::env::var_os("BERTH_CONFIG").map(PathBuf::from)
}

/// Every (long name, env var) pair of `command` and its subcommands.
fn env_names(command: &clap::Command, out: &mut Vec<(String, String)>) {
    for arg in command.get_arguments() {
        if let (Some(long), Some(env)) = (arg.get_long(), arg.get_env()) {
            out.push((long.to_string(), env.to_string_lossy().into_owned()));
        }
    }
    for sub in command.get_subcommands() {
        env_names(sub, out);
    }
}

fn scalar(value: &toml::Value) -> Option<String> {
    match value {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Reads `path` and returns the (env var, value) pairs it sets, checked
/// against `command`'s flags. Lists become comma-separated values and
/// tables `k=v` pairs (for repeatable flags such as `--attribute`).
pub fn read_config_file(
    command: &clap::Command,
    path: &Path,
) -> Result<Vec<(String, String)>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.message().to_string(),
        })?;
    let mut known = Vec::new();
    env_names(command, &mut known);
    let mut pairs = Vec::new();
    for (key, value) in &table {
        let long = key.replace('_', "-");
        let Some((_, env)) = known.iter().find(|(l, _)| *l == long) else {
            let example = known
                .iter()
                .find(|(l, _)| l != "config")
                .map(|(l, _)| l.replace('-', "_"))
                .unwrap_or_default();
            return Err(ConfigError::UnknownKey {
                path: path.to_path_buf(),
                key: key.clone(),
                example,
            });
        };
        let bad = |message: &str| ConfigError::BadValue {
            path: path.to_path_buf(),
            key: key.clone(),
            message: message.to_string(),
        };
        let rendered = match value {
            toml::Value::Array(items) => items
                .iter()
                .map(|v| scalar(v).ok_or_else(|| bad("list items must be strings or numbers")))
                .collect::<Result<Vec<_>, _>>()?
                .join(","),
            toml::Value::Table(map) => map
                .iter()
                .map(|(k, v)| {
                    scalar(v)
                        .map(|v| format!("{k}={v}"))
                        .ok_or_else(|| bad("table values must be strings or numbers"))
                })
                .collect::<Result<Vec<_>, _>>()?
                .join(","),
            other => scalar(other).ok_or_else(|| bad("unsupported value"))?,
        };
        pairs.push((env.clone(), rendered));
    }
    Ok(pairs)
}

/// Applies the config file named by `--config` / `BERTH_CONFIG` (if any)
/// as environment defaults. Call before parsing the command line and before
/// any thread starts.
pub fn apply_config_file(command: &clap::Command, args: &[String]) -> Result<(), ConfigError> {
    let Some(path) = config_path(args) else {
        return Ok(());
    };
    for (env, value) in read_config_file(command, &path)? {
        if std::env::var_os(&env).is_none() {
            std::env::set_var(env, value);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, Command};

    fn command() -> Command {
        Command::new("d").subcommand(
            Command::new("serve")
                .arg(
                    Arg::new("node_id")
                        .long("node-id")
                        .env("BERTH_TEST_NODE_ID"),
                )
                .arg(
                    Arg::new("attribute")
                        .long("attribute")
                        .env("BERTH_TEST_ATTRIBUTE"),
                )
                .arg(Arg::new("secret").long("secret")),
        )
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    #[test]
    fn keys_map_to_the_flags_env_vars() {
        let f = file("node_id = 3\nattribute = { zone = \"a\", rack = \"7\" }\n");
        let mut pairs = read_config_file(&command(), f.path()).unwrap();
        pairs.sort();
        assert_eq!(
            pairs,
            [
                (
                    "BERTH_TEST_ATTRIBUTE".to_string(),
                    "rack=7,zone=a".to_string()
                ),
                ("BERTH_TEST_NODE_ID".to_string(), "3".to_string()),
            ]
        );
        let f = file("attribute = [\"zone=a\", \"rack=7\"]\n");
        let pairs = read_config_file(&command(), f.path()).unwrap();
        assert_eq!(pairs[0].1, "zone=a,rack=7");
    }

    #[test]
    fn unknown_keys_and_bad_toml_name_the_problem() {
        let f = file("node_idd = 3\n");
        let e = read_config_file(&command(), f.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown key \"node_idd\""), "{e}");
        // A flag without an env var cannot come from a file either.
        let f = file("secret = \"x\"\n");
        assert!(read_config_file(&command(), f.path()).is_err());
        let f = file("node_id = \n");
        let e = read_config_file(&command(), f.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("not valid TOML"), "{e}");
    }

    #[test]
    fn the_config_flag_is_found_in_both_spellings() {
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            config_path(&args(&["d", "serve", "--config", "/x.toml"])),
            Some(PathBuf::from("/x.toml"))
        );
        assert_eq!(
            config_path(&args(&["d", "--config=/y.toml"])),
            Some(PathBuf::from("/y.toml"))
        );
    }
}
