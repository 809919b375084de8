//! Where `berth` connects to and as whom: flags, then environment
//! variables (both handled by clap), then the config file, then defaults.
//!
//! ```toml
//! # ~/.config/berth/config.toml
//! endpoint = "10.0.0.1:7400,10.0.0.2:7400"
//! token = "berth_0a1b2c_..."
//! ca_cert = "ca.crt"   # relative to this file's directory; ~/ works too
//! ```

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use berth_client::ClientConfig;
use serde::Deserialize;

use crate::args::{split_endpoints, DEFAULT_ENDPOINT};

pub const NO_CA: &str =
    "no cluster CA configured: pass --ca-cert (the ca.crt printed by berthd dev) or set \
     BERTH_CA_CERT";

/// The config file as written. Unknown keys are errors, so a typo such as
/// `endpoints` is reported instead of silently ignored.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Comma-separated, like `--endpoint`.
    pub endpoint: Option<String>,
    pub token: Option<String>,
    pub ca_cert: Option<PathBuf>,
}

/// A config file that was read, with `ca_cert` already made absolute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedConfig {
    pub path: PathBuf,
    pub file: ConfigFile,
    /// Things worth saying on stderr (a token file others can read).
    pub warnings: Vec<String>,
}

/// The settings that won.
#[derive(Clone, PartialEq, Eq)]
pub struct Settings {
    pub endpoints: Vec<String>,
    pub token: Option<String>,
    pub ca_cert: Option<PathBuf>,
}

// By hand: the token must not reach any output through `{:?}`.
impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("endpoints", &self.endpoints)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("ca_cert", &self.ca_cert)
            .finish()
    }
}

/// `~/.config/berth/config.toml`.
pub fn default_path(home: Option<&Path>) -> Option<PathBuf> {
    home.map(|home| home.join(".config").join("berth").join("config.toml"))
}

/// Reads the config file: `explicit` (`--config`, BERTH_CONFIG) must
/// exist; the default one is used only if it does.
pub fn load(explicit: Option<&Path>, home: Option<&Path>) -> anyhow::Result<Option<LoadedConfig>> {
    let path = match explicit {
        Some(path) => path.to_path_buf(),
        None => match default_path(home) {
            Some(path) if path.is_file() => path,
            _ => return Ok(None),
        },
    };
    let text = fs::read_to_string(&path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    let mut file = parse(&path, &text)?;
    file.ca_cert = file
        .ca_cert
        .map(|ca| resolve_path(&ca, path.parent().unwrap_or(Path::new(".")), home));
    let mut warnings = Vec::new();
    if file.token.is_some() {
        let readable_by_others = fs::metadata(&path)
            .map(|m| m.permissions().mode() & 0o077 != 0)
            .unwrap_or(false);
        if readable_by_others {
            warnings.push(format!(
                "warning: {} holds an API token and other users can read it; run chmod 600 {}",
                path.display(),
                path.display()
            ));
        }
    }
    Ok(Some(LoadedConfig {
        path,
        file,
        warnings,
    }))
}

/// Parses the TOML, reporting problems as `PATH:LINE: message`.
pub fn parse(path: &Path, text: &str) -> anyhow::Result<ConfigFile> {
    toml::from_str(text).map_err(|e: toml::de::Error| {
        let line = e
            .span()
            .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
        let message = e.message().trim();
        match line {
            Some(line) => anyhow::anyhow!("{}:{line}: {message}", path.display()),
            None => anyhow::anyhow!("{}: {message}", path.display()),
        }
    })
}

/// `~/x` is under the home directory; a relative path is relative to the
/// config file, not to wherever `berth` happens to run.
fn resolve_path(path: &Path, base: &Path, home: Option<&Path>) -> PathBuf {
    if let (Ok(rest), Some(home)) = (path.strip_prefix("~"), home) {
        return home.join(rest);
    }
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

/// Picks each setting from the first place that has it. `cli_*` already
/// merge flags over environment variables (clap does that).
pub fn resolve(
    cli_endpoints: Vec<String>,
    cli_token: Option<String>,
    cli_ca_cert: Option<PathBuf>,
    config: Option<&ConfigFile>,
) -> Settings {
    let config_endpoints = config
        .and_then(|c| c.endpoint.as_deref())
        .map(|e| split_endpoints(&[e]))
        .unwrap_or_default();
    let endpoints = [cli_endpoints, config_endpoints]
        .into_iter()
        .find(|e| !e.is_empty())
        .unwrap_or_else(|| vec![DEFAULT_ENDPOINT.to_string()]);
    let non_empty = |t: Option<String>| t.filter(|t| !t.trim().is_empty());
    Settings {
        endpoints,
        token: non_empty(cli_token).or_else(|| non_empty(config.and_then(|c| c.token.clone()))),
        ca_cert: cli_ca_cert.or_else(|| config.and_then(|c| c.ca_cert.clone())),
    }
}

/// Whether an endpoint asks for plain HTTP explicitly.
fn is_plain_http(endpoint: &str) -> bool {
    endpoint
        .get(..7)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("http://"))
}

/// The client's configuration: reads the CA and insists on one unless
/// every endpoint says `http://`.
pub fn client_config(settings: &Settings) -> anyhow::Result<ClientConfig> {
    let ca_pem = match &settings.ca_cert {
        Some(path) => Some(fs::read_to_string(path).with_context(|| {
            format!("cannot read the cluster CA certificate {}", path.display())
        })?),
        None => None,
    };
    if ca_pem.is_none() && !settings.endpoints.iter().all(|e| is_plain_http(e)) {
        bail!(NO_CA);
    }
    Ok(ClientConfig {
        endpoints: settings.endpoints.clone(),
        ca_pem,
        token: settings.token.clone(),
        ..ClientConfig::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(endpoint: Option<&str>, token: Option<&str>, ca: Option<&str>) -> ConfigFile {
        ConfigFile {
            endpoint: endpoint.map(Into::into),
            token: token.map(Into::into),
            ca_cert: ca.map(Into::into),
        }
    }

    #[test]
    fn flags_and_environment_beat_the_file_which_beats_defaults() {
        let config = file(Some("c:1, d:2"), Some("berth_file_1"), Some("/file/ca.crt"));

        let from_cli = resolve(
            vec!["a:1".into()],
            Some("berth_cli_1".into()),
            Some("/cli/ca.crt".into()),
            Some(&config),
        );
        assert_eq!(from_cli.endpoints, ["a:1"]);
        assert_eq!(from_cli.token.as_deref(), Some("berth_cli_1"));
        assert_eq!(from_cli.ca_cert, Some(PathBuf::from("/cli/ca.crt")));

        let from_file = resolve(vec![], None, None, Some(&config));
        assert_eq!(from_file.endpoints, ["c:1", "d:2"]);
        assert_eq!(from_file.token.as_deref(), Some("berth_file_1"));
        assert_eq!(from_file.ca_cert, Some(PathBuf::from("/file/ca.crt")));

        // Each setting is picked on its own.
        let mixed = resolve(vec![], Some("berth_cli_1".into()), None, Some(&config));
        assert_eq!(mixed.endpoints, ["c:1", "d:2"]);
        assert_eq!(mixed.token.as_deref(), Some("berth_cli_1"));
        assert_eq!(mixed.ca_cert, Some(PathBuf::from("/file/ca.crt")));

        let defaults = resolve(vec![], None, None, None);
        assert_eq!(defaults.endpoints, [DEFAULT_ENDPOINT]);
        assert_eq!(defaults.token, None);
        assert_eq!(defaults.ca_cert, None);

        // Blank values count as unset.
        let blank = resolve(
            vec![],
            Some("  ".into()),
            None,
            Some(&file(Some(" , "), Some(""), None)),
        );
        assert_eq!(blank.endpoints, [DEFAULT_ENDPOINT]);
        assert_eq!(blank.token, None);
    }

    #[test]
    fn the_config_file_is_read_with_paths_relative_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        let path = default_path(Some(&home)).unwrap();
        assert!(
            load(None, Some(&home)).unwrap().is_none(),
            "optional by default"
        );

        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(
            &path,
            "endpoint = \"10.0.0.1:7400,10.0.0.2:7400\"\nca_cert = \"ca.crt\"\n",
        )
        .unwrap();
        let loaded = load(None, Some(&home)).unwrap().unwrap();
        assert_eq!(loaded.path, path);
        assert_eq!(
            loaded.file.endpoint.as_deref(),
            Some("10.0.0.1:7400,10.0.0.2:7400")
        );
        assert_eq!(loaded.file.ca_cert, Some(home.join(".config/berth/ca.crt")));
        assert!(loaded.warnings.is_empty());

        let other = dir.path().join("other.toml");
        fs::write(&other, "ca_cert = \"~/pki/ca.crt\"\n").unwrap();
        let loaded = load(Some(&other), Some(&home)).unwrap().unwrap();
        assert_eq!(loaded.file.ca_cert, Some(home.join("pki/ca.crt")));

        let missing = dir.path().join("missing.toml");
        let err = load(Some(&missing), Some(&home)).unwrap_err();
        assert!(
            format!("{err:#}")
                .starts_with(&format!("cannot read config file {}", missing.display())),
            "{err:#}"
        );
    }

    #[test]
    fn a_token_in_a_file_others_can_read_gets_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        fs::write(&path, "token = \"berth_0a_1b\"\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let loaded = load(Some(&path), None).unwrap().unwrap();
        assert_eq!(loaded.warnings.len(), 1);
        assert!(
            loaded.warnings[0].contains("chmod 600"),
            "{:?}",
            loaded.warnings
        );
        assert!(!loaded.warnings[0].contains("berth_0a_1b"));

        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(load(Some(&path), None)
            .unwrap()
            .unwrap()
            .warnings
            .is_empty());
    }

    #[test]
    fn mistakes_in_the_file_name_the_line() {
        let path = Path::new("/etc/berth.toml");
        let err = parse(path, "token = \"x\"\nendpoints = \"a:1\"\n").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("/etc/berth.toml:2: "), "{text}");
        assert!(text.contains("endpoints"), "{text}");
        let err = parse(path, "endpoint = 7400\n").unwrap_err();
        assert!(err.to_string().starts_with("/etc/berth.toml:1: "), "{err}");
        assert_eq!(parse(path, "").unwrap(), ConfigFile::default());
    }

    fn settings(endpoints: &[&str], ca_cert: Option<PathBuf>) -> Settings {
        Settings {
            endpoints: endpoints.iter().map(|e| e.to_string()).collect(),
            token: Some("berth_0a_1b".into()),
            ca_cert,
        }
    }

    #[test]
    fn tls_needs_a_ca_unless_every_endpoint_says_http() {
        let err = client_config(&settings(&["127.0.0.1:7400"], None)).unwrap_err();
        assert_eq!(err.to_string(), NO_CA);
        let err = client_config(&settings(&["http://a:1", "b:1"], None)).unwrap_err();
        assert_eq!(err.to_string(), NO_CA);

        let plain = client_config(&settings(&["http://a:1", "HTTP://b:1"], None)).unwrap();
        assert_eq!(plain.ca_pem, None);
        assert_eq!(plain.token.as_deref(), Some("berth_0a_1b"));

        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.crt");
        fs::write(&ca, "PEM").unwrap();
        let tls = client_config(&settings(&["a:1"], Some(ca))).unwrap();
        assert_eq!(tls.ca_pem.as_deref(), Some("PEM"));

        let missing = dir.path().join("nope.crt");
        let err = client_config(&settings(&["a:1"], Some(missing.clone()))).unwrap_err();
        assert!(
            err.to_string().contains(&format!(
                "cannot read the cluster CA certificate {}",
                missing.display()
            )),
            "{err}"
        );
    }

    #[test]
    fn settings_debug_hides_the_token() {
        let text = format!("{:?}", settings(&["a:1"], None));
        assert!(!text.contains("berth_0a_1b"), "{text}");
    }
}
