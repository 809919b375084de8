//! berth-lb in end-to-end tests: the process (stopped with SIGTERM, which
//! stops its HAProxy too) and a client of the HTTP it balances.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};

/// Whether haproxy is installed; outside CI a missing one skips the test.
pub fn haproxy_installed() -> bool {
    let found = ["/usr/sbin/haproxy", "/usr/bin/haproxy"]
        .iter()
        .any(|p| Path::new(p).exists());
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but haproxy is not installed: run scripts/install-deps.sh"
        );
        eprintln!("NOTICE: skipping: haproxy is not installed (scripts/install-deps.sh)");
    }
    found
}

/// berth-lb as a process; SIGTERM (which stops its HAProxy) when dropped.
pub struct LbProc {
    pub child: Option<Child>,
    pub log: PathBuf,
}

impl LbProc {
    /// Starts berth-lb with `config`, logging next to it.
    pub fn start(config: &Path) -> Result<Self> {
        let log = config.with_extension("log");
        let child = crate::spawn_logged(
            "berth-lb",
            &["--config".into(), config.display().to_string()],
            &log,
        )?;
        Ok(Self {
            child: Some(child),
            log,
        })
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM and a clean exit.
    pub fn terminate(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()?;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = child.try_wait()? {
                ensure!(status.success(), "berth-lb exited with {status}");
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("berth-lb did not exit within 15 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for LbProc {
    fn drop(&mut self) {
        let _ = self.terminate();
    }
}

/// The body of a 200 answer to `GET path` on a loopback port; an error for
/// anything else (refused, reset, timed out, another status).
pub fn get_body(port: u16, path: &str) -> Result<String> {
    let text = crate::http_get(port, path)?;
    ensure!(text.starts_with("HTTP/1.1 200"), "{text}");
    Ok(text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.trim().to_string())
        .unwrap_or_default())
}
