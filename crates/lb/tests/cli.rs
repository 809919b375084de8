//! The berth-lb binary refuses bad settings before starting anything, with
//! one line naming what is wrong (and accepts a load balancer without
//! container_name and container_port).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn berth_lb(args: &[&str]) -> (bool, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_berth-lb"));
    for (key, _) in std::env::vars() {
        if key.starts_with("BERTH_") {
            command.env_remove(key);
        }
    }
    let out = command.args(args).output().expect("run berth-lb");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const GOOD: &str = r#"endpoint = "http://127.0.0.1:1"
token_file = "token"
haproxy_binary = "/nonexistent/haproxy"

[[load_balancer]]
name = "web"
bind = "127.0.0.1:18080"
service = "web"
container_name = "web"
container_port = 8080
"#;

#[test]
fn bad_settings_stop_it_with_one_line_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("lb.toml");
    let config_arg = config.display().to_string();
    std::fs::write(dir.path().join("token"), "berth_x_y\n").unwrap();

    std::fs::write(&config, GOOD.replace("8080\n", "70000\n")).unwrap();
    let (ok, err) = berth_lb(&["--config", &config_arg]);
    assert!(!ok);
    assert!(
        err.contains("load_balancer[0].container_port: must be 1-65535, not 70000"),
        "{err}"
    );

    std::fs::write(
        &config,
        GOOD.replace("container_name = \"web\"", "container_name = \"\""),
    )
    .unwrap();
    let (ok, err) = berth_lb(&["--config", &config_arg]);
    assert!(!ok);
    assert!(
        err.contains(
            "load_balancer[0].container_name: must not be empty: name the container, or leave \
             the key out to select endpoints by the load balancer's name"
        ),
        "{err}"
    );

    std::fs::write(&config, GOOD.replace("service", "servce")).unwrap();
    let (ok, err) = berth_lb(&["--config", &config_arg]);
    assert!(!ok);
    assert!(err.contains("lb.toml:8: unknown field `servce`"), "{err}");

    // Flags win over the file.
    std::fs::write(&config, GOOD).unwrap();
    let (ok, err) = berth_lb(&["--config", &config_arg, "--slots", "0"]);
    assert!(!ok);
    assert!(err.contains("slots: must be 1-1024, not 0"), "{err}");
    let (ok, err) = berth_lb(&[
        "--config",
        &config_arg,
        "--token-file",
        "/nonexistent/token",
    ]);
    assert!(!ok);
    assert!(
        err.contains("cannot read the token file /nonexistent/token"),
        "{err}"
    );

    // Good settings, but no HAProxy to run.
    let paths = format!(
        "haproxy_config = \"{0}/h.cfg\"\nhaproxy_socket = \"{0}/h.sock\"\n",
        dir.path().display()
    );
    // Without container_name and container_port (the load balancer's name
    // selects the endpoints) the settings are as good.
    let by_name = GOOD
        .replace("container_name = \"web\"\n", "")
        .replace("container_port = 8080\n", "");
    for text in [GOOD.to_string(), by_name] {
        std::fs::write(&config, format!("{paths}{text}")).unwrap();
        let (ok, err) = berth_lb(&["--config", &config_arg]);
        assert!(!ok);
        assert!(
            err.contains("cannot start haproxy (/nonexistent/haproxy)"),
            "{text}: {err}"
        );
    }
}
