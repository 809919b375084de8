//! berth-lb's settings: flags, then `BERTH_*` environment variables (both
//! through clap, in `main`), then the TOML file, then defaults. The load
//! balancers themselves are only in the file:
//!
//! ```toml
//! endpoint = "10.0.0.1:7400,10.0.0.2:7400"
//! ca_cert = "ca.crt"                 # relative to this file's directory
//! token_file = "readonly.token"      # a readonly API token is enough
//! haproxy_socket = "/run/berth-lb/haproxy.sock"
//! haproxy_config = "/run/berth-lb/haproxy.cfg"
//! slots = 16                         # servers per backend to start with
//!
//! [[load_balancer]]
//! name = "web"                       # the service's loadBalancers name
//! bind = "0.0.0.0:80"
//! cluster = "default"
//! service = "web"
//! mode = "http"                      # or "tcp" (the default)
//!
//! [[load_balancer]]
//! name = "admin"                     # a service without loadBalancers:
//! bind = "127.0.0.1:8081"            # the container port selects
//! service = "web"
//! container_name = "web"
//! container_port = 9090
//! ```
//!
//! An entry takes the endpoints that name it (the service declares a load
//! balancer of that name), narrowed by `container_name`/`container_port`
//! when given; if none names it, the endpoints of `container_name` and
//! `container_port` (see [`crate::plan::select`]).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::LbError;

pub const DEFAULT_ENDPOINT: &str = "127.0.0.1:7400";
pub const DEFAULT_SOCKET: &str = "/run/berth-lb/haproxy.sock";
pub const DEFAULT_HAPROXY_CONFIG: &str = "/run/berth-lb/haproxy.cfg";
pub const DEFAULT_HAPROXY_BINARY: &str = "haproxy";
pub const DEFAULT_SLOTS: usize = 16;
/// The most servers one backend is given (slots grow up to this).
pub const MAX_SLOTS: usize = 1024;

/// The file as written. Unknown keys are errors, so a typo is reported
/// instead of silently ignored.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Comma-separated control-plane servers, like `--endpoint`.
    pub endpoint: Option<String>,
    pub ca_cert: Option<PathBuf>,
    pub token_file: Option<PathBuf>,
    pub haproxy_socket: Option<PathBuf>,
    pub haproxy_config: Option<PathBuf>,
    pub haproxy_binary: Option<PathBuf>,
    pub slots: Option<i64>,
    #[serde(default)]
    pub load_balancer: Vec<LoadBalancerFile>,
}

/// One `[[load_balancer]]` table as written.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadBalancerFile {
    pub name: String,
    pub bind: String,
    pub cluster: Option<String>,
    pub service: String,
    pub container_name: Option<String>,
    pub container_port: Option<i64>,
    pub mode: Option<String>,
    pub slots: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Tcp,
    Http,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Tcp => "tcp",
            Mode::Http => "http",
        }
    }
}

/// A validated load balancer: HAProxy frontend `fe_NAME` on `bind`,
/// backend `be_NAME` with `slots` servers, fed by the endpoints of service
/// `service` in `cluster` that name it, or else those of
/// `container_name:container_port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadBalancer {
    pub name: String,
    pub bind: SocketAddr,
    pub cluster: String,
    pub service: String,
    /// When given, endpoints must be of this container.
    pub container_name: Option<String>,
    /// When given, endpoints must be of this container port.
    pub container_port: Option<u16>,
    pub mode: Mode,
    pub slots: usize,
}

impl LoadBalancer {
    /// The container filters as the file writes them, for messages:
    /// `container_name = "web", container_port = 8080`, or `none`.
    pub fn container_filter(&self) -> String {
        let mut parts = Vec::new();
        if let Some(name) = &self.container_name {
            parts.push(format!("container_name = {name:?}"));
        }
        if let Some(port) = self.container_port {
            parts.push(format!("container_port = {port}"));
        }
        if parts.is_empty() {
            "none".to_string()
        } else {
            parts.join(", ")
        }
    }
}

/// What flags and environment variables said (clap merged those two).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub endpoints: Vec<String>,
    pub ca_cert: Option<PathBuf>,
    pub token_file: Option<PathBuf>,
    pub haproxy_socket: Option<PathBuf>,
    pub haproxy_config: Option<PathBuf>,
    pub haproxy_binary: Option<PathBuf>,
    pub slots: Option<i64>,
}

/// The settings that won.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub endpoints: Vec<String>,
    pub ca_cert: Option<PathBuf>,
    pub token_file: PathBuf,
    pub haproxy_socket: PathBuf,
    pub haproxy_config: PathBuf,
    pub haproxy_binary: PathBuf,
    pub load_balancers: Vec<LoadBalancer>,
}

/// Reads and parses the config file.
pub fn load(path: &Path) -> Result<ConfigFile, LbError> {
    let text = std::fs::read_to_string(path).map_err(|source| LbError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(path, &text)
}

/// Parses the TOML, reporting problems as `PATH:LINE: message`; paths in it
/// are made relative to the file's directory.
pub fn parse(path: &Path, text: &str) -> Result<ConfigFile, LbError> {
    let mut file: ConfigFile = toml::from_str(text).map_err(|e: toml::de::Error| {
        let line = e
            .span()
            .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1)
            .unwrap_or(1);
        LbError::ConfigSyntax {
            path: path.to_path_buf(),
            line,
            message: e.message().trim().to_string(),
        }
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    for p in [
        &mut file.ca_cert,
        &mut file.token_file,
        &mut file.haproxy_socket,
        &mut file.haproxy_config,
    ] {
        if let Some(relative) = p.as_ref().filter(|p| p.is_relative()) {
            *p = Some(base.join(relative));
        }
    }
    Ok(file)
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> LbError {
    LbError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// Splits `a:1, b:2` lists (flags may repeat, each may hold several).
pub fn split_endpoints<S: AsRef<str>>(values: &[S]) -> Vec<String> {
    values
        .iter()
        .flat_map(|v| v.as_ref().split(','))
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(str::to_string)
        .collect()
}

fn is_plain_http(endpoint: &str) -> bool {
    endpoint
        .get(..7)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("http://"))
}

fn slots_value(field: &str, value: i64) -> Result<usize, LbError> {
    usize::try_from(value)
        .ok()
        .filter(|n| (1..=MAX_SLOTS).contains(n))
        .ok_or_else(|| invalid(field, format!("must be 1-{MAX_SLOTS}, not {value}")))
}

/// Picks each setting from the first place that has it and checks them.
pub fn resolve(cli: Overrides, file: ConfigFile) -> Result<Settings, LbError> {
    let endpoints = [
        cli.endpoints,
        split_endpoints(&[file.endpoint.unwrap_or_default()]),
    ]
    .into_iter()
    .find(|e| !e.is_empty())
    .unwrap_or_else(|| vec![DEFAULT_ENDPOINT.to_string()]);
    let ca_cert = cli.ca_cert.or(file.ca_cert);
    if ca_cert.is_none() && !endpoints.iter().all(|e| is_plain_http(e)) {
        return Err(invalid(
            "ca_cert",
            "no cluster CA: pass --ca-cert, set BERTH_CA_CERT or ca_cert in the config file",
        ));
    }
    let token_file = cli.token_file.or(file.token_file).ok_or_else(|| {
        invalid(
            "token_file",
            "no API token file: pass --token-file, set BERTH_TOKEN_FILE or token_file in the \
             config file (a readonly token is enough)",
        )
    })?;
    let default_slots = match cli.slots.or(file.slots) {
        Some(n) => slots_value("slots", n)?,
        None => DEFAULT_SLOTS,
    };
    let load_balancers = validate_load_balancers(&file.load_balancer, default_slots)?;
    Ok(Settings {
        endpoints,
        ca_cert,
        token_file,
        haproxy_socket: cli
            .haproxy_socket
            .or(file.haproxy_socket)
            .unwrap_or_else(|| DEFAULT_SOCKET.into()),
        haproxy_config: cli
            .haproxy_config
            .or(file.haproxy_config)
            .unwrap_or_else(|| DEFAULT_HAPROXY_CONFIG.into()),
        haproxy_binary: cli
            .haproxy_binary
            .or(file.haproxy_binary)
            .unwrap_or_else(|| DEFAULT_HAPROXY_BINARY.into()),
        load_balancers,
    })
}

/// Checks every `[[load_balancer]]`; errors name the field as
/// `load_balancer[INDEX].FIELD`.
pub fn validate_load_balancers(
    tables: &[LoadBalancerFile],
    default_slots: usize,
) -> Result<Vec<LoadBalancer>, LbError> {
    if tables.is_empty() {
        return Err(invalid(
            "load_balancer",
            "no load balancers: add at least one [[load_balancer]] table",
        ));
    }
    let mut names = BTreeSet::new();
    let mut binds = BTreeSet::new();
    let mut out = Vec::with_capacity(tables.len());
    for (i, lb) in tables.iter().enumerate() {
        let field = |name: &str| format!("load_balancer[{i}].{name}");
        let name = lb.name.trim();
        if name.is_empty()
            || name.len() > 32
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(invalid(
                field("name"),
                format!("{name:?}: 1-32 letters, digits, '-', '_' or '.'"),
            ));
        }
        if !names.insert(name.to_string()) {
            return Err(invalid(field("name"), format!("{name:?} is used twice")));
        }
        let bind: SocketAddr = lb.bind.trim().parse().map_err(|_| {
            invalid(
                field("bind"),
                format!("{:?} is not IP:PORT (e.g. 0.0.0.0:80)", lb.bind),
            )
        })?;
        if bind.port() == 0 {
            return Err(invalid(field("bind"), "the port must not be 0"));
        }
        if !binds.insert(bind) {
            return Err(invalid(field("bind"), format!("{bind} is used twice")));
        }
        let non_empty = |value: &str, key: &str| -> Result<String, LbError> {
            let value = value.trim();
            if value.is_empty() {
                Err(invalid(field(key), "must not be empty"))
            } else {
                Ok(value.to_string())
            }
        };
        let cluster = non_empty(lb.cluster.as_deref().unwrap_or("default"), "cluster")?;
        let service = non_empty(&lb.service, "service")?;
        let container_name = match lb.container_name.as_deref().map(str::trim) {
            None => None,
            Some("") => {
                return Err(invalid(
                    field("container_name"),
                    "must not be empty: name the container, or leave the key out to select \
                     endpoints by the load balancer's name",
                ))
            }
            Some(name) => Some(name.to_string()),
        };
        let container_port =
            match lb.container_port {
                None => None,
                Some(port) => Some(u16::try_from(port).ok().filter(|p| *p != 0).ok_or_else(
                    || {
                        invalid(
                            field("container_port"),
                            format!(
                                "must be 1-65535, not {port}: the container port (not the host \
                             port), or leave the key out to select endpoints by the load \
                             balancer's name"
                            ),
                        )
                    },
                )?),
            };
        let mode = match lb.mode.as_deref().map(str::trim) {
            None | Some("tcp") => Mode::Tcp,
            Some("http") => Mode::Http,
            Some(other) => {
                return Err(invalid(
                    field("mode"),
                    format!("{other:?}: \"tcp\" or \"http\""),
                ))
            }
        };
        let slots = match lb.slots {
            Some(n) => slots_value(&field("slots"), n)?,
            None => default_slots,
        };
        out.push(LoadBalancer {
            name: name.to_string(),
            bind,
            cluster,
            service,
            container_name,
            container_port,
            mode,
            slots,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const GOOD: &str = r#"
endpoint = "10.0.0.1:7400, 10.0.0.2:7400"
ca_cert = "ca.crt"
token_file = "/etc/berth-lb/token"
slots = 4

[[load_balancer]]
name = "web"
bind = "0.0.0.0:80"
service = "web"
container_name = "web"
container_port = 8080
mode = "http"

[[load_balancer]]
name = "db"
bind = "127.0.0.1:5432"
cluster = "prod"
service = "pg"
container_name = "pg"
container_port = 5432
slots = 2
"#;

    fn path() -> &'static Path {
        Path::new("/etc/berth-lb/lb.toml")
    }

    fn error_of(text: &str) -> String {
        let file = parse(path(), text).unwrap();
        resolve(Overrides::default(), file).unwrap_err().to_string()
    }

    #[test]
    fn a_good_file_gives_settings_with_defaults_filled_in() {
        let file = parse(path(), GOOD).unwrap();
        let settings = resolve(Overrides::default(), file).unwrap();
        assert_eq!(settings.endpoints, vec!["10.0.0.1:7400", "10.0.0.2:7400"]);
        assert_eq!(
            settings.ca_cert.as_deref(),
            Some(Path::new("/etc/berth-lb/ca.crt"))
        );
        assert_eq!(settings.haproxy_socket, PathBuf::from(DEFAULT_SOCKET));
        assert_eq!(settings.haproxy_binary, PathBuf::from("haproxy"));
        let [web, db] = settings.load_balancers.as_slice() else {
            panic!("two load balancers: {settings:?}");
        };
        assert_eq!(web.cluster, "default");
        assert_eq!(web.mode, Mode::Http);
        assert_eq!(web.slots, 4);
        assert_eq!(web.bind, "0.0.0.0:80".parse().unwrap());
        assert_eq!(db.mode, Mode::Tcp);
        assert_eq!(db.slots, 2);
        assert_eq!(db.container_port, Some(5432));
    }

    #[test]
    fn flags_and_environment_beat_the_file() {
        let file = parse(path(), GOOD).unwrap();
        let cli = Overrides {
            endpoints: vec!["c:1".into()],
            token_file: Some("/other/token".into()),
            haproxy_socket: Some("/tmp/h.sock".into()),
            slots: Some(8),
            ..Default::default()
        };
        let settings = resolve(cli, file).unwrap();
        assert_eq!(settings.endpoints, vec!["c:1"]);
        assert_eq!(settings.token_file, PathBuf::from("/other/token"));
        assert_eq!(settings.haproxy_socket, PathBuf::from("/tmp/h.sock"));
        // Per load balancer slots still win over the global number.
        assert_eq!(settings.load_balancers[0].slots, 8);
        assert_eq!(settings.load_balancers[1].slots, 2);
    }

    #[test]
    fn bad_values_name_their_field() {
        let cases = [
            (
                "container_port = 8080",
                "container_port = 70000",
                "load_balancer[0].container_port: must be 1-65535",
            ),
            (
                "container_port = 8080",
                "container_port = 0",
                "load_balancer[0].container_port",
            ),
            (
                "container_name = \"web\"",
                "container_name = \" \"",
                "load_balancer[0].container_name: must not be empty",
            ),
            (
                "bind = \"0.0.0.0:80\"",
                "bind = \"localhost\"",
                "load_balancer[0].bind: \"localhost\" is not IP:PORT",
            ),
            (
                "bind = \"127.0.0.1:5432\"",
                "bind = \"0.0.0.0:80\"",
                "load_balancer[1].bind: 0.0.0.0:80 is used twice",
            ),
            (
                "name = \"db\"",
                "name = \"web\"",
                "load_balancer[1].name: \"web\" is used twice",
            ),
            ("name = \"db\"", "name = \"d b\"", "load_balancer[1].name"),
            (
                "mode = \"http\"",
                "mode = \"udp\"",
                "load_balancer[0].mode: \"udp\"",
            ),
            (
                "service = \"pg\"",
                "service = \" \"",
                "load_balancer[1].service: must not be empty",
            ),
            (
                "slots = 2",
                "slots = 0",
                "load_balancer[1].slots: must be 1-1024",
            ),
            ("slots = 4", "slots = 5000", "slots: must be 1-1024"),
            (
                "token_file = \"/etc/berth-lb/token\"",
                "",
                "token_file: no API token file",
            ),
            ("ca_cert = \"ca.crt\"", "", "ca_cert: no cluster CA"),
        ];
        for (from, to, expected) in cases {
            let text = GOOD.replacen(from, to, 1);
            let error = error_of(&text);
            assert!(
                error.starts_with(expected),
                "{from} -> {to}: {error:?} does not start with {expected:?}"
            );
        }
    }

    #[test]
    fn container_filters_are_optional_and_kept_when_given() {
        let text = GOOD
            .replace("container_name = \"web\"\n", "")
            .replace("container_port = 8080\n", "")
            .replace("container_name = \"pg\"\n", "");
        let settings = resolve(Overrides::default(), parse(path(), &text).unwrap()).unwrap();
        let [web, db] = settings.load_balancers.as_slice() else {
            panic!("two load balancers: {settings:?}");
        };
        assert_eq!(
            (web.container_name.as_deref(), web.container_port),
            (None, None)
        );
        assert_eq!(web.container_filter(), "none");
        assert_eq!(
            (db.container_name.as_deref(), db.container_port),
            (None, Some(5432))
        );
        let settings = resolve(Overrides::default(), parse(path(), GOOD).unwrap()).unwrap();
        let web = &settings.load_balancers[0];
        assert_eq!(
            (web.container_name.as_deref(), web.container_port),
            (Some("web"), Some(8080))
        );
        assert_eq!(
            web.container_filter(),
            "container_name = \"web\", container_port = 8080"
        );
        // A bad port says what to do about it.
        let error = error_of(&GOOD.replace("container_port = 8080", "container_port = -1"));
        assert!(
            error.ends_with("or leave the key out to select endpoints by the load balancer's name"),
            "{error}"
        );
    }

    #[test]
    fn plain_http_endpoints_need_no_ca() {
        let text = GOOD
            .replace("ca_cert = \"ca.crt\"", "")
            .replace("10.0.0.1:7400, 10.0.0.2:7400", "http://10.0.0.1:7400");
        let settings = resolve(Overrides::default(), parse(path(), &text).unwrap()).unwrap();
        assert_eq!(settings.ca_cert, None);
    }

    #[test]
    fn syntax_errors_unknown_and_missing_keys_say_where() {
        let unknown = parse(
            path(),
            &GOOD.replace("container_port = 5432", "contanier_port = 5432"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            unknown.starts_with("/etc/berth-lb/lb.toml:21:"),
            "{unknown}"
        );
        assert!(unknown.contains("contanier_port"), "{unknown}");
        let missing = parse(path(), "[[load_balancer]]\nname = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(missing.contains("missing field `bind`"), "{missing}");
        let wrong_type = parse(path(), "slots = \"many\"").unwrap_err().to_string();
        assert!(
            wrong_type.starts_with("/etc/berth-lb/lb.toml:1:"),
            "{wrong_type}"
        );
        assert_eq!(error_of(""), "ca_cert: no cluster CA: pass --ca-cert, set BERTH_CA_CERT or ca_cert in the config file");
        let none = error_of("ca_cert = \"x\"\ntoken_file = \"t\"\n");
        assert!(
            none.starts_with("load_balancer: no load balancers"),
            "{none}"
        );
    }
}
