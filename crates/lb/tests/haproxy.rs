//! A real HAProxy (Debian's `haproxy`, installed by scripts/install-deps.sh)
//! in front of tiny HTTP servers standing in for tasks. Endpoint sets go
//! through berth-lb's planner and runtime API client (no Berth cluster):
//! requests reach exactly the current endpoints, changes need no reload
//! (the same worker answers), an add-before-remove change fails no
//! request, and outgrowing the slots reloads with more servers.
//!
//! Without haproxy the test is skipped with a notice; under CI=true it
//! fails instead.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use berth_lb::config::{LoadBalancer, Mode};
use berth_lb::haproxy::{Paths, Syncer};
use berth_lb::plan::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The haproxy binary, or `None` (skip) outside CI.
fn haproxy() -> Option<PathBuf> {
    let found = [
        "/usr/sbin/haproxy",
        "/usr/bin/haproxy",
        "/usr/local/sbin/haproxy",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists());
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but haproxy is not installed: run scripts/install-deps.sh"
        );
        eprintln!("NOTICE: skipping: haproxy is not installed (scripts/install-deps.sh)");
    }
    found
}

/// An HTTP server answering every request with its own name.
async fn backend(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let answer = format!(
                    "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{name}",
                    name.len()
                );
                let _ = conn.write_all(answer.as_bytes()).await;
            });
        }
    });
    addr
}

/// One request through HAProxy; the answering backend's name.
async fn get(frontend: SocketAddr) -> Result<String, String> {
    let exchange = async {
        let mut conn = TcpStream::connect(frontend)
            .await
            .map_err(|e| e.to_string())?;
        conn.write_all(b"GET / HTTP/1.0\r\nHost: lb\r\n\r\n")
            .await
            .map_err(|e| e.to_string())?;
        let mut text = String::new();
        conn.read_to_string(&mut text)
            .await
            .map_err(|e| e.to_string())?;
        match text.split_once("\r\n\r\n") {
            Some((head, body)) if head.starts_with("HTTP/1.0 200") => Ok(body.to_string()),
            _ => Err(format!("bad answer: {text:?}")),
        }
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .map_err(|_| "timed out".to_string())?
}

/// Who answers `n` requests in a row.
async fn answers(frontend: SocketAddr, n: usize) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        let name = get(frontend).await.expect("request through haproxy");
        *seen.entry(name).or_default() += 1;
    }
    seen
}

fn names(seen: &BTreeMap<String, usize>) -> BTreeSet<&str> {
    seen.keys().map(String::as_str).collect()
}

/// Requests in a loop until stopped: (answers by name, failures).
fn load(
    frontend: SocketAddr,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(BTreeMap<String, usize>, Vec<String>)> {
    tokio::spawn(async move {
        let mut seen = BTreeMap::new();
        let mut failures = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            match get(frontend).await {
                Ok(name) => *seen.entry(name).or_default() += 1,
                Err(e) => failures.push(e),
            }
        }
        (seen, failures)
    })
}

/// Servers at full weight, not draining.
fn full(targets: &[SocketAddr]) -> Vec<Server> {
    targets.iter().copied().map(Server::new).collect()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_follows_endpoint_sets_through_the_runtime_api() {
    let Some(binary) = haproxy() else { return };
    let dir = tempfile::tempdir().unwrap();
    let frontend = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let lb = LoadBalancer {
        name: "web".into(),
        bind: frontend,
        cluster: "default".into(),
        service: "web".into(),
        container_name: None,
        container_port: None,
        mode: Mode::Http,
        slots: 2,
    };
    let paths = Paths {
        binary,
        config: dir.path().join("haproxy.cfg"),
        socket: dir.path().join("haproxy.sock"),
    };
    let (a, b, c) = (backend("a").await, backend("b").await, backend("c").await);
    let mut syncer = Syncer::start(paths.clone(), vec![lb]).await.unwrap();
    let master = syncer.haproxy.pid().expect("haproxy runs");
    let runtime = syncer.haproxy.runtime();
    let worker = runtime.worker_pid().await.unwrap();

    // No endpoints yet: every slot is disabled and HAProxy answers 503
    // itself.
    let servers = runtime.servers("be_web").await.unwrap();
    assert_eq!(servers.len(), 2, "{servers:?}");
    assert!(servers.iter().all(|s| s.in_maint()), "{servers:?}");
    assert!(get(frontend).await.is_err());

    syncer.set_servers(0, &full(&[a])).await.unwrap();
    let seen = answers(frontend, 10).await;
    assert_eq!(names(&seen), BTreeSet::from(["a"]), "{seen:?}");

    // A replacement, added before the old endpoint goes, under load.
    let stop = Arc::new(AtomicBool::new(false));
    let running = load(frontend, stop.clone());
    tokio::time::sleep(Duration::from_millis(200)).await;
    syncer.set_servers(0, &full(&[a, b])).await.unwrap();
    let seen = answers(frontend, 20).await;
    assert_eq!(names(&seen), BTreeSet::from(["a", "b"]), "{seen:?}");
    syncer.set_servers(0, &full(&[b])).await.unwrap();
    let seen = answers(frontend, 10).await;
    assert_eq!(names(&seen), BTreeSet::from(["b"]), "{seen:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let (during, failures) = running.await.unwrap();
    assert!(
        failures.is_empty(),
        "failed during the change: {failures:?}"
    );
    assert!(
        during.contains_key("a") && during.contains_key("b"),
        "{during:?}"
    );

    // No reload: the same master and the same worker.
    assert_eq!(syncer.haproxy.pid(), Some(master));
    assert_eq!(runtime.worker_pid().await.unwrap(), worker);
    assert_eq!(syncer.reloads, 0);
    // Stable slots: b kept s2, a's s1 is in maintenance.
    assert_eq!(syncer.slots(0), &[None, Some(b.into())]);
    let servers = runtime.servers("be_web").await.unwrap();
    assert_eq!(servers.len(), 2, "{servers:?}");
    assert!(servers[0].in_maint(), "{servers:?}");
    assert!(!servers[1].in_maint(), "{servers:?}");
    assert_eq!(
        (servers[1].address.as_str(), servers[1].port),
        ("127.0.0.1", b.port())
    );

    // Three endpoints outgrow the two slots: one reload with four, and the
    // master stays.
    let stop = Arc::new(AtomicBool::new(false));
    let running = load(frontend, stop.clone());
    syncer.set_servers(0, &full(&[a, b, c])).await.unwrap();
    let seen = answers(frontend, 30).await;
    assert_eq!(names(&seen), BTreeSet::from(["a", "b", "c"]), "{seen:?}");
    stop.store(true, Ordering::Relaxed);
    let (_, failures) = running.await.unwrap();
    assert!(
        failures.is_empty(),
        "failed during the reload: {failures:?}"
    );
    assert_eq!(syncer.reloads, 1);
    assert_eq!(syncer.slots(0).len(), 4);
    assert_eq!(syncer.haproxy.pid(), Some(master));
    assert_ne!(runtime.worker_pid().await.unwrap(), worker);
    // b kept its slot through the reload too.
    assert_eq!(syncer.slots(0)[1], Some(b.into()));

    // Everything gone: nothing answers, then an endpoint comes back.
    syncer.set_servers(0, &full(&[])).await.unwrap();
    assert!(get(frontend).await.is_err());
    syncer.set_servers(0, &full(&[c])).await.unwrap();
    let seen = answers(frontend, 5).await;
    assert_eq!(names(&seen), BTreeSet::from(["c"]), "{seen:?}");

    syncer.haproxy.stop().await;
    assert!(
        TcpStream::connect(frontend).await.is_err(),
        "haproxy stopped"
    );
}
