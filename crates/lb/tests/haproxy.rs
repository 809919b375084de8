//! A real HAProxy (Debian's `haproxy`, installed by scripts/install-deps.sh)
//! in front of tiny HTTP servers standing in for tasks. Endpoint sets go
//! through berth-lb's planner and runtime API client (no Berth cluster):
//! requests reach exactly the current endpoints, changes need no reload
//! (the same worker answers), an add-before-remove change fails no
//! request, and outgrowing the slots reloads with more servers; weights
//! split the traffic (weight 0 gets none), a draining server keeps its
//! open connections but gets no new ones, and weight or drain changes
//! leave every server in its slot.
//!
//! Without haproxy the tests are skipped with a notice; under CI=true it
//! fails instead.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use berth_lb::config::{LoadBalancer, Mode};
use berth_lb::haproxy::{Paths, ServerState, Syncer};
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

/// An HTTP server answering every request with its own name. HTTP/1.1
/// requests keep the connection open (what a keep-alive client through a
/// draining server needs); HTTP/1.0 ones close it.
async fn backend(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut pending = Vec::new();
                let mut buf = [0u8; 1024];
                loop {
                    let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => pending.extend_from_slice(&buf[..n]),
                        }
                        continue;
                    };
                    let request: Vec<u8> = pending.drain(..end + 4).collect();
                    let keep_alive = request.windows(8).any(|w| w == b"HTTP/1.1");
                    let (version, connection) = if keep_alive {
                        ("HTTP/1.1", "keep-alive")
                    } else {
                        ("HTTP/1.0", "close")
                    };
                    let answer = format!(
                        "{version} 200 OK\r\nContent-Length: {}\r\nConnection: {connection}\r\n\r\n{name}",
                        name.len()
                    );
                    if conn.write_all(answer.as_bytes()).await.is_err() || !keep_alive {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// A client connection kept open across requests (HTTP/1.1 keep-alive).
struct KeepAlive {
    conn: TcpStream,
    pending: Vec<u8>,
}

impl KeepAlive {
    async fn open(frontend: SocketAddr) -> Self {
        Self {
            conn: TcpStream::connect(frontend).await.unwrap(),
            pending: Vec::new(),
        }
    }

    /// One request on this connection; the answering backend's name.
    async fn get(&mut self) -> Result<String, String> {
        let exchange = async {
            self.conn
                .write_all(b"GET / HTTP/1.1\r\nHost: lb\r\n\r\n")
                .await
                .map_err(|e| e.to_string())?;
            let mut buf = [0u8; 1024];
            loop {
                if let Some(end) = self.pending.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&self.pending[..end]).to_string();
                    if !head.starts_with("HTTP/1.1 200") {
                        return Err(format!("bad answer: {head:?}"));
                    }
                    let length: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().to_string())
                        })
                        .and_then(|v| v.parse().ok())
                        .ok_or_else(|| format!("no content-length: {head:?}"))?;
                    if self.pending.len() >= end + 4 + length {
                        let answer: Vec<u8> = self.pending.drain(..end + 4 + length).collect();
                        return Ok(String::from_utf8_lossy(&answer[end + 4..]).to_string());
                    }
                }
                match self.conn.read(&mut buf).await {
                    Ok(0) => return Err("connection closed".to_string()),
                    Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                    Err(e) => return Err(e.to_string()),
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(5), exchange)
            .await
            .map_err(|_| "timed out".to_string())?
    }
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

fn load_balancer(name: &str, bind: SocketAddr, mode: Mode, slots: usize) -> LoadBalancer {
    LoadBalancer {
        name: name.into(),
        bind,
        cluster: "default".into(),
        service: "web".into(),
        container_name: None,
        container_port: None,
        mode,
        slots,
    }
}

async fn start(binary: PathBuf, dir: &std::path::Path, lbs: Vec<LoadBalancer>) -> Syncer {
    let paths = Paths {
        binary,
        config: dir.join("haproxy.cfg"),
        socket: dir.join("haproxy.sock"),
    };
    Syncer::start(paths, lbs).await.unwrap()
}

/// `show servers state` of `backend` by server address.
async fn states_by_target(syncer: &Syncer, backend: &str) -> BTreeMap<SocketAddr, ServerState> {
    syncer
        .haproxy
        .runtime()
        .servers(backend)
        .await
        .unwrap()
        .into_iter()
        .filter(|s| !s.in_maint())
        .map(|s| (SocketAddr::new(s.address.parse().unwrap(), s.port), s))
        .collect()
}

/// Slot index of each target in load balancer `lb`.
fn slot_of(syncer: &Syncer, lb: usize) -> BTreeMap<SocketAddr, usize> {
    syncer
        .slots(lb)
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.map(|s| (s.target, i)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_split_the_traffic_and_weight_0_gets_none() {
    let Some(binary) = haproxy() else { return };
    let dir = tempfile::tempdir().unwrap();
    let frontend = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let (a, b, c) = (backend("a").await, backend("b").await, backend("c").await);
    let mut syncer = start(
        binary,
        dir.path(),
        vec![load_balancer("web", frontend, Mode::Http, 4)],
    )
    .await;
    // A 10% canary: 25 against 231 of 256.
    syncer
        .set_servers(
            0,
            &[
                Server::new(a).with_weight(25),
                Server::new(b).with_weight(231),
                Server::new(c).with_weight(0),
            ],
        )
        .await
        .unwrap();
    let seen = answers(frontend, 400).await;
    let canary = seen.get("a").copied().unwrap_or(0);
    eprintln!("weights 25/231/0: {seen:?} of 400 requests");
    assert!(
        (16..=72).contains(&canary),
        "weight 25 of 256 should get about 10% of 400 requests (4%-18%): {seen:?}"
    );
    assert_eq!(seen.get("c"), None, "weight 0 got traffic: {seen:?}");
    assert_eq!(seen.values().sum::<usize>(), 400);

    // Weight 0 keeps the server in the pool (not in maintenance) with the
    // weights HAProxy was given.
    let states = states_by_target(&syncer, "be_web").await;
    let weights: BTreeMap<SocketAddr, u32> = states.iter().map(|(t, s)| (*t, s.weight)).collect();
    assert_eq!(weights, BTreeMap::from([(a, 25), (b, 231), (c, 0)]));
    assert!(states.values().all(|s| !s.in_drain()), "{states:?}");

    // All the traffic moves to c, the others stay in the pool at 0.
    syncer
        .set_servers(
            0,
            &[
                Server::new(a).with_weight(0),
                Server::new(b).with_weight(0),
                Server::new(c).with_weight(256),
            ],
        )
        .await
        .unwrap();
    let seen = answers(frontend, 40).await;
    assert_eq!(names(&seen), BTreeSet::from(["c"]), "{seen:?}");
    assert_eq!(syncer.reloads, 0);
    syncer.haproxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_server_keeps_its_open_connections_and_gets_no_new_ones() {
    let Some(binary) = haproxy() else { return };
    let dir = tempfile::tempdir().unwrap();
    let tcp = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let (a, b) = (backend("a").await, backend("b").await);
    let mut syncer = start(
        binary,
        dir.path(),
        vec![
            load_balancer("tcp", tcp, Mode::Tcp, 2),
            load_balancer("http", http, Mode::Http, 2),
        ],
    )
    .await;
    let worker = syncer.haproxy.runtime().worker_pid().await.unwrap();
    for (lb, frontend, backend) in [(0, tcp, "be_tcp"), (1, http, "be_http")] {
        syncer.set_servers(lb, &full(&[a, b])).await.unwrap();
        let before = slot_of(&syncer, lb);
        let mut held = KeepAlive::open(frontend).await;
        let first = held.get().await.unwrap();
        let (draining, other, other_name) = if first == "a" {
            (a, b, "b")
        } else {
            (b, a, "a")
        };

        // What berth-lb gets for a DEACTIVATING task: draining, weight 0.
        syncer
            .set_servers(
                lb,
                &[
                    Server::new(draining).with_weight(0).drained(),
                    Server::new(other),
                ],
            )
            .await
            .unwrap();
        assert_eq!(slot_of(&syncer, lb), before, "{backend}: a server moved");
        let states = states_by_target(&syncer, backend).await;
        assert!(states[&draining].in_drain(), "{backend}: {states:?}");
        assert!(!states[&other].in_drain(), "{backend}: {states:?}");

        // New connections all go to the other server...
        let seen = answers(frontend, 20).await;
        assert_eq!(names(&seen), BTreeSet::from([other_name]), "{backend}");
        // ...while the connection opened before the drain is still served.
        for _ in 0..5 {
            let answer = held.get().await;
            if lb == 0 {
                // TCP: the connection is the draining server's to the end.
                assert_eq!(answer.as_deref(), Ok(first.as_str()), "{backend}");
            } else {
                // HTTP: HAProxy balances each request on its own, so the
                // client's open connection is still answered, by the
                // server that takes new requests.
                assert_eq!(answer.as_deref(), Ok(other_name), "{backend}");
            }
        }

        // Once the task is gone, its slot goes to maintenance.
        syncer.set_servers(lb, &[Server::new(other)]).await.unwrap();
        let servers = syncer.haproxy.runtime().servers(backend).await.unwrap();
        assert!(
            servers[before[&draining]].in_maint(),
            "{backend}: {servers:?}"
        );
        let seen = answers(frontend, 5).await;
        assert_eq!(names(&seen), BTreeSet::from([other_name]), "{backend}");
    }
    assert_eq!(syncer.haproxy.runtime().worker_pid().await.unwrap(), worker);
    syncer.haproxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weight_and_drain_changes_keep_every_server_in_its_slot() {
    let Some(binary) = haproxy() else { return };
    let dir = tempfile::tempdir().unwrap();
    let frontend = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let (a, b, c) = (backend("a").await, backend("b").await, backend("c").await);
    let mut syncer = start(
        binary,
        dir.path(),
        vec![load_balancer("web", frontend, Mode::Http, 4)],
    )
    .await;
    let runtime = syncer.haproxy.runtime();
    let worker = runtime.worker_pid().await.unwrap();
    syncer.set_servers(0, &full(&[a, b, c])).await.unwrap();
    let slots = slot_of(&syncer, 0);
    let names_before: BTreeMap<SocketAddr, String> = states_by_target(&syncer, "be_web")
        .await
        .into_iter()
        .map(|(t, s)| (t, s.name))
        .collect();
    assert_eq!(names_before.len(), 3, "{names_before:?}");

    let steps = [
        [
            Server::new(a).with_weight(10),
            Server::new(b).with_weight(200),
            Server::new(c).with_weight(0),
        ],
        [
            Server::new(a).with_weight(0).drained(),
            Server::new(b).with_weight(50),
            Server::new(c).with_weight(256),
        ],
    ];
    for step in steps {
        syncer.set_servers(0, &step).await.unwrap();
        assert_eq!(slot_of(&syncer, 0), slots, "a server changed slots");
        let states = states_by_target(&syncer, "be_web").await;
        let now: BTreeMap<SocketAddr, String> =
            states.iter().map(|(t, s)| (*t, s.name.clone())).collect();
        // Same server names at the same addresses, none in maintenance.
        assert_eq!(now, names_before, "{states:?}");
        for server in step {
            let state = &states[&server.target];
            assert_eq!(state.weight, server.weight, "{state:?}");
            assert_eq!(state.in_drain(), server.draining, "{state:?}");
        }
    }
    let seen = answers(frontend, 100).await;
    assert_eq!(names(&seen), BTreeSet::from(["b", "c"]), "{seen:?}");
    assert!(seen["c"] > seen["b"], "256 against 50: {seen:?}");
    // Only runtime API commands: no reload.
    assert_eq!(syncer.reloads, 0);
    assert_eq!(runtime.worker_pid().await.unwrap(), worker);

    // Outgrowing the four slots reloads HAProxy from a config that keeps
    // each server's slot and weight; the draining one is at weight 0 there
    // (the new worker has no connections for it to finish).
    let (d, e) = (backend("d").await, backend("e").await);
    let mut grown = steps[1].to_vec();
    grown.extend([Server::new(d).with_weight(7), Server::new(e)]);
    syncer.set_servers(0, &grown).await.unwrap();
    assert_eq!(syncer.reloads, 1);
    assert_ne!(runtime.worker_pid().await.unwrap(), worker);
    let after = slot_of(&syncer, 0);
    assert!(slots.iter().all(|(t, i)| after[t] == *i), "{after:?}");
    let states = states_by_target(&syncer, "be_web").await;
    let weights: BTreeMap<SocketAddr, u32> = states.iter().map(|(t, s)| (*t, s.weight)).collect();
    assert_eq!(
        weights,
        BTreeMap::from([(a, 0), (b, 50), (c, 256), (d, 7), (e, 100)])
    );
    let seen = answers(frontend, 100).await;
    assert!(!seen.contains_key("a"), "{seen:?}");
    syncer.haproxy.stop().await;
}
