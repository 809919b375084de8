//! What "acknowledged" means on disk: every acknowledged write follows an
//! `fdatasync` of the Raft log's file (traced with strace), and a server
//! whose disk fills stops acknowledging, exits, and serves again from its
//! data dir once there is room.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use berth_e2e::*;

fn epoch() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

/// A prerequisite of the test that this host lacks: a failure under CI,
/// a notice and a skip elsewhere.
fn missing(what: &str) -> Result<()> {
    if std::env::var("CI").as_deref() == Ok("true") {
        bail!("CI=true but {what}");
    }
    eprintln!("NOTICE: skipping: {what}");
    Ok(())
}

/// One completed fsync-class call: when it started and ended (epoch
/// seconds), on which file, and whether it succeeded.
#[derive(Debug)]
struct Sync {
    start: f64,
    end: f64,
    path: String,
    ok: bool,
}

/// Reads `strace -f -ttt -T -y -e trace=fsync,fdatasync -o FILE` output.
fn parse_trace(text: &str) -> Vec<Sync> {
    let mut pending: HashMap<&str, (f64, String)> = HashMap::new();
    let mut syncs = Vec::new();
    let duration = |line: &str| -> Option<f64> {
        let open = line.rfind('<')?;
        line[open + 1..].trim_end().strip_suffix('>')?.parse().ok()
    };
    let ok = |line: &str| line.contains(") = 0 ");
    for line in text.lines() {
        // strace pads the pid column ("4202  1796447856.554090 ...").
        let Some((pid, rest)) = line.trim_start().split_once(char::is_whitespace) else {
            continue;
        };
        let Some((ts, rest)) = rest.trim_start().split_once(char::is_whitespace) else {
            continue;
        };
        let rest = rest.trim_start();
        let Ok(ts) = ts.parse::<f64>() else { continue };
        if rest.starts_with("fdatasync(") || rest.starts_with("fsync(") {
            let path = rest
                .split_once('<')
                .and_then(|(_, p)| p.split_once('>'))
                .map(|(p, _)| p.to_string())
                .unwrap_or_default();
            if rest.contains("<unfinished") {
                pending.insert(pid, (ts, path));
            } else if let Some(d) = duration(rest) {
                syncs.push(Sync {
                    start: ts,
                    end: ts + d,
                    path,
                    ok: ok(rest),
                });
            }
        } else if rest.starts_with("<... fdatasync resumed>")
            || rest.starts_with("<... fsync resumed>")
        {
            if let (Some((start, path)), Some(d)) = (pending.remove(pid), duration(rest)) {
                syncs.push(Sync {
                    start,
                    end: start + d,
                    path,
                    ok: ok(rest),
                });
            }
        }
    }
    syncs
}

/// Kills a berthd that runs under strace (killing strace would leave it
/// running, detached) when the test ends, however it ends.
struct Tracee(Option<u32>);

impl Tracee {
    /// The berthd that strace `tracer` started. strace forks short-lived
    /// children of its own first (to probe ptrace's options), so the child
    /// counts only once it runs berthd: taking the first child made a
    /// loaded machine SIGTERM a probe that had already exited, and the test
    /// then waited for a berthd nobody had stopped.
    fn of(tracer: u32) -> Result<Self> {
        let children = std::fs::read_to_string(format!("/proc/{tracer}/task/{tracer}/children"))
            .context("reading strace's children")?;
        let pid = children
            .split_whitespace()
            .filter_map(|pid| pid.parse::<u32>().ok())
            .find(|pid| {
                std::fs::read_link(format!("/proc/{pid}/exe"))
                    .is_ok_and(|exe| exe.file_name().is_some_and(|name| name == "berthd"))
            })
            .context("strace has not started berthd yet")?;
        Ok(Self(Some(pid)))
    }

    fn terminate(&mut self) {
        if let Some(pid) = self.0.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
    }
}

impl Drop for Tracee {
    fn drop(&mut self) {
        if let Some(pid) = self.0.take() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_write_follows_an_fdatasync_of_the_raft_log() -> Result<()> {
    if Command::new("strace").arg("-V").output().is_err() {
        return missing("strace is not installed (scripts/install-deps.sh installs it)");
    }
    let mut cluster = TestCluster::start(1, &[]).await?;
    let trace = cluster.dir.path().join("strace.out");
    {
        let server = cluster.server(1);
        server.terminate()?;
        server.wrapper = [
            "strace",
            "-f",
            "-ttt",
            "-T",
            "-y",
            "-e",
            "trace=fsync,fdatasync",
            "-o",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([trace.display().to_string()])
        .collect();
        server.start()?;
    }
    // strace needs a moment to start berthd.
    let tracer = cluster.server(1).pid().context("strace runs")?;
    let mut berthd = eventually(Duration::from_secs(5), || async { Tracee::of(tracer) }).await?;
    cluster.wait_for_leader(Duration::from_secs(30)).await?;
    let addr = cluster.addr(1);
    // The Raft log's entries are in segment files under wal/.
    let wal_dir = cluster.servers[&1].data_dir.join("wal");

    let mut acks = Vec::new();
    for i in 0..20 {
        let sent = epoch();
        register(&addr, "durable", &format!("write-{i}")).await?;
        acks.push((i, sent, epoch()));
    }
    berthd.terminate();
    cluster
        .server(1)
        .wait_exit(Duration::from_secs(20))
        .with_context(|| cluster.logs())?;

    let text = std::fs::read_to_string(&trace)?;
    let syncs = parse_trace(&text);
    let wanted = format!("{}/", wal_dir.display());
    let on_log: Vec<&Sync> = syncs
        .iter()
        .filter(|s| s.path.starts_with(&wanted) && s.path.ends_with(".wal"))
        .collect();
    assert!(
        on_log.len() >= acks.len(),
        "{} fsync-class calls on {wanted} for {} acknowledged writes; trace:\n{}",
        on_log.len(),
        acks.len(),
        text.lines().take(40).collect::<Vec<_>>().join("\n")
    );
    assert!(
        syncs.iter().all(|s| s.ok),
        "a sync failed: {:?}",
        syncs.iter().find(|s| !s.ok)
    );
    for (i, sent, acked) in acks {
        assert!(
            on_log.iter().any(|s| s.start >= sent && s.end <= acked),
            "write {i} (sent {sent:.6}, acknowledged {acked:.6}) was acknowledged without an \
             fsync-class call on {wanted} in between"
        );
    }
    Ok(())
}

/// Unmounts a tmpfs when the test ends.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// `GET /readyz` on the health port: Some(status code), None when nothing
/// answers.
fn readyz(port: u16) -> Option<u16> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .write_all(b"GET /readyz HTTP/1.1\r\nhost: x\r\n\r\n")
        .ok()?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).ok()?;
    reply.split_whitespace().nth(1)?.parse().ok()
}

/// Fills the filesystem of `dir` with a file until a write fails.
fn fill(dir: &Path) -> Result<PathBuf> {
    use std::io::Write;
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path)?;
    let chunk = vec![0u8; 64 * 1024];
    loop {
        if let Err(e) = file.write_all(&chunk).and_then(|()| file.sync_all()) {
            assert_eq!(e.raw_os_error(), Some(28), "expected ENOSPC, got {e}");
            break;
        }
    }
    // The last partial chunks too.
    let small = [0u8; 512];
    while file
        .write_all(&small)
        .and_then(|()| file.sync_all())
        .is_ok()
    {}
    Ok(path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_acknowledging_and_the_server_recovers_after_a_restart() -> Result<()> {
    full_disk(10, "").await
}

/// A log that has grown past a MiB has zeros written ahead of its appends
/// (crates/store/src/wal.rs): on a full disk the writes that fit in them are
/// acknowledged, the zeroing thread's `ENOSPC` costs nothing, and the first
/// write past them is refused as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_with_zeros_written_ahead_of_the_log_fills_them_then_stops() -> Result<()> {
    full_disk(80, &"z".repeat(16 * 1024)).await
}

/// Writes `before` task definitions (each with `pad` in its marker), moves
/// the server's data dir onto a 16 MiB tmpfs, fills it, and checks that the
/// server stops acknowledging, exits, and comes back with every
/// acknowledged write once there is room.
async fn full_disk(before: usize, pad: &str) -> Result<()> {
    let probe = tempfile::tempdir()?;
    let mountable = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(probe.path())
        .status()
        .is_ok_and(|s| s.success());
    if !mountable {
        return missing("cannot mount a tmpfs here (the test needs root)");
    }
    drop(Mounted(probe.path().to_path_buf()));

    let health = free_port();
    let health_arg = format!("127.0.0.1:{health}");
    let mut cluster = TestCluster::start(1, &["--health-listen", &health_arg]).await?;
    let addr = cluster.addr(1);
    let mut acked = Vec::new();
    for i in 0..before {
        let marker = format!("before-{i}{pad}");
        register(&addr, "full", &marker).await?;
        acked.push(marker);
    }

    // The same data dir, moved onto a small tmpfs.
    let data = cluster.servers[&1].data_dir.clone();
    cluster.server(1).terminate()?;
    let saved = data.with_extension("saved");
    std::fs::rename(&data, &saved)?;
    std::fs::create_dir(&data)?;
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=16m", "tmpfs"])
        .arg(&data)
        .status()?;
    assert!(status.success(), "mount tmpfs on {}", data.display());
    let _mounted = Mounted(data.clone());
    let status = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", saved.display()))
        .arg(&data)
        .status()?;
    assert!(status.success(), "copy the data dir onto the tmpfs");
    cluster.server(1).start()?;
    cluster.wait_for_leader(Duration::from_secs(30)).await?;
    eventually(Duration::from_secs(10), || async {
        match readyz(health) {
            Some(200) => Ok(()),
            other => bail!("readyz {other:?}"),
        }
    })
    .await?;

    let filler = fill(&data)?;
    // Writes that still fit in blocks the file system already gave the
    // log's segment may land (durably); the first that needs a new block
    // is refused.
    let mut refused = None;
    let mut acked_while_full = 0;
    for i in 0..5000 {
        let marker = format!("during-{i}{pad}");
        // Spread over families: one listing holds at most 4 MiB.
        match register(&addr, &format!("full-{}", i % 8), &marker).await {
            Ok(_) => {
                acked.push(marker);
                acked_while_full += 1;
            }
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let refused = refused.context("5000 writes on a full disk were all acknowledged")?;
    eprintln!("{acked_while_full} writes acknowledged on the full disk");
    if !pad.is_empty() {
        // 4 MiB of zeros hold about 250 of these writes.
        assert!(
            acked_while_full >= 100,
            "only {acked_while_full} writes landed in the zeros written ahead of the log"
        );
    }
    let status = cluster.server(1).wait_exit(Duration::from_secs(30))?;
    assert!(
        !status.success(),
        "berthd exited with {status} on a full disk"
    );
    let log = cluster.servers[&1].log();
    assert!(
        log.contains("Raft stopped: its storage failed"),
        "no clear log line; refused with {refused:#}; log:\n{log}"
    );
    assert!(
        log.contains("No space left on device"),
        "the cause is not named; log:\n{log}"
    );
    assert_ne!(readyz(health), Some(200), "ready while stopped");
    assert!(
        register(&addr, "full", "after-exit").await.is_err(),
        "a write was acknowledged after the storage failed"
    );

    // Space returns; the supervisor (here the test) starts berthd again.
    std::fs::remove_file(&filler)?;
    cluster.server(1).start()?;
    cluster.wait_for_leader(Duration::from_secs(30)).await?;
    let mut markers = std::collections::HashSet::new();
    for family in std::iter::once("full".to_string()).chain((0..8).map(|i| format!("full-{i}"))) {
        markers.extend(list_family(&addr, &family).await?.iter().map(marker_of));
    }
    for marker in &acked {
        assert!(
            markers.contains(marker),
            "acknowledged write {} was lost; {} of {} are present",
            &marker[..marker.len().min(40)],
            acked.iter().filter(|m| markers.contains(*m)).count(),
            acked.len()
        );
    }
    register(&addr, "full", "after-space-returned").await?;
    eventually(Duration::from_secs(10), || async {
        match readyz(health) {
            Some(200) => Ok(()),
            other => bail!("readyz {other:?}"),
        }
    })
    .await?;
    cluster.server(1).terminate()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_raft_log_is_refused_as_corrupt_with_the_fix() -> Result<()> {
    let mut cluster = TestCluster::start(1, &[]).await?;
    let addr = cluster.addr(1);
    for i in 0..50 {
        register(&addr, "damaged", &format!("w-{i}")).await?;
    }
    cluster.server(1).terminate()?;
    let file = cluster.servers[&1].data_dir.join("db").join("db");
    let mut bytes = std::fs::read(&file)?;
    for b in bytes.iter_mut() {
        *b ^= 0x5a;
    }
    std::fs::write(&file, &bytes)?;

    cluster.server(1).start()?;
    let status = cluster.server(1).wait_exit(Duration::from_secs(30))?;
    assert!(!status.success(), "berthd started on a damaged log");
    let log = cluster.servers[&1].log();
    assert!(
        log.contains("is corrupt"),
        "corruption not named; log:\n{log}"
    );
    assert!(
        log.contains("move its data dir aside and re-add the server"),
        "the fix is not named; log:\n{log}"
    );
    Ok(())
}

#[test]
fn strace_lines_parse_in_every_shape() {
    let text = "\
4202  100.000100 fdatasync(11</d/db/db>) = 0 <0.000200>
12345 100.001000 fdatasync(11</d/db/db> <unfinished ...>
12346 100.001100 fsync(12</d/blobs>) = -1 EIO (Input/output error) <0.000010>
12345 100.002000 <... fdatasync resumed>) = 0 <0.000900>
";
    let syncs = parse_trace(text);
    assert_eq!(syncs.len(), 3, "{syncs:?}");
    assert_eq!(syncs[0].path, "/d/db/db");
    assert!((syncs[0].end - 100.0003).abs() < 1e-6, "{syncs:?}");
    assert!(!syncs[1].ok && syncs[1].path == "/d/blobs", "{syncs:?}");
    assert!(
        syncs[2].ok && (syncs[2].start - 100.001).abs() < 1e-6,
        "{syncs:?}"
    );
    assert!((syncs[2].end - 100.0019).abs() < 1e-6, "{syncs:?}");
}
