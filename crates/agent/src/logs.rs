//! Container logs. containerd's shim starts the log driver (this binary in
//! `--berth-log-driver` mode, via a `binary://` stdio URI) with the
//! container's stdout on fd 3 and stderr on fd 4, and waits for a byte or EOF
//! on fd 5. The driver is the shim's child, not the agent's, so logs keep
//! flowing while the agent is down. It writes CRI-format lines
//! (`TIME STREAM F|P TEXT`) to one file, rotating it at a size cap.

use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;

use crate::error::{Result, RuntimeError};
use crate::runtime::{LogLine, LogLines, LogStream};

pub const DRIVER_FLAG: &str = "--berth-log-driver";
/// Lines longer than this are split into partial (`P`) records.
const MAX_LINE: usize = 16 * 1024;

/// The shim turns the URI's query into `key value` argument pairs in map
/// order (random), so every argument is a key with a value, and the driver
/// parses them order-free.
pub fn binary_uri(bin: &Path, log: &Path, max_bytes: u64, max_files: u32) -> String {
    format!(
        "binary://{}?{}=1&--path={}&--max-bytes={}&--max-files={}",
        encode(&bin.display().to_string()),
        DRIVER_FLAG,
        encode(&log.display().to_string()),
        max_bytes,
        max_files
    )
}

fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"/-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub fn is_driver_invocation(args: &[String]) -> bool {
    args.iter().any(|a| a == DRIVER_FLAG)
}

struct Writer {
    path: PathBuf,
    file: File,
    size: u64,
    max_bytes: u64,
    max_files: u32,
}

impl Writer {
    fn open(path: PathBuf, max_bytes: u64, max_files: u32) -> std::io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let size = file.metadata()?.len();
        Ok(Writer {
            path,
            file,
            size,
            max_bytes,
            max_files,
        })
    }

    fn write_record(&mut self, stream: &str, partial: bool, text: &[u8]) -> std::io::Result<()> {
        let mut rec = Vec::with_capacity(text.len() + 48);
        rec.extend_from_slice(
            berth_types::time::rfc3339_nanos(std::time::SystemTime::now()).as_bytes(),
        );
        rec.push(b' ');
        rec.extend_from_slice(stream.as_bytes());
        rec.extend_from_slice(if partial { b" P " } else { b" F " });
        rec.extend_from_slice(text);
        rec.push(b'\n');
        if self.max_bytes > 0 && self.size + rec.len() as u64 > self.max_bytes && self.size > 0 {
            self.rotate()?;
        }
        self.file.write_all(&rec)?;
        self.size += rec.len() as u64;
        Ok(())
    }

    /// Files are `path` (live), `path.1` (newest rotated) .. `path.N-1`.
    fn rotate(&mut self) -> std::io::Result<()> {
        let keep = self.max_files.max(1);
        if keep == 1 {
            self.file.set_len(0)?;
            self.size = 0;
            return Ok(());
        }
        let name = |i: u32| PathBuf::from(format!("{}.{i}", self.path.display()));
        let _ = std::fs::remove_file(name(keep - 1));
        for i in (1..keep - 1).rev() {
            let _ = std::fs::rename(name(i), name(i + 1));
        }
        std::fs::rename(&self.path, name(1))?;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

fn pump(src: File, stream: &'static str, writer: Arc<Mutex<Writer>>) {
    let mut reader = BufReader::with_capacity(64 * 1024, src);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = match (&mut reader)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut line)
        {
            Ok(n) => n,
            Err(_) => return,
        };
        if n == 0 {
            return;
        }
        let complete = line.last() == Some(&b'\n');
        if complete {
            line.pop();
        }
        let mut w = writer.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = w.write_record(stream, !complete, &line) {
            eprintln!("berth log driver: write {}: {e}", w.path.display());
        }
    }
}

/// Entry point of the log driver process. Plain threads: it must start in a
/// few milliseconds and stay small, one per container.
pub fn driver_main(args: &[String]) -> i32 {
    let mut path = None;
    let mut max_bytes = 10u64 << 20;
    let mut max_files = 3u32;
    let mut it = args.iter().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().cloned().unwrap_or_default();
        match k.as_str() {
            "--path" => path = Some(PathBuf::from(v)),
            "--max-bytes" => max_bytes = v.parse().unwrap_or(max_bytes),
            "--max-files" => max_files = v.parse().unwrap_or(max_files),
            _ => {}
        }
    }
    let Some(path) = path else {
        eprintln!("berth log driver: no --path");
        return 2;
    };
    // The fds the shim passes: reopening them through /proc keeps this crate
    // free of unsafe code.
    let open = |fd: u32, write: bool| {
        OpenOptions::new()
            .read(!write)
            .write(write)
            .open(format!("/proc/self/fd/{fd}"))
    };
    let (stdout, stderr) = match (open(3, false), open(4, false)) {
        (Ok(o), Ok(e)) => (o, e),
        (o, e) => {
            eprintln!(
                "berth log driver: missing stdio fds: {:?} {:?}",
                o.err(),
                e.err()
            );
            return 2;
        }
    };
    let writer = match Writer::open(path.clone(), max_bytes, max_files) {
        Ok(w) => Arc::new(Mutex::new(w)),
        Err(e) => {
            eprintln!("berth log driver: open {}: {e}", path.display());
            return 1;
        }
    };
    // Tell the shim we are ready (it reads one byte or EOF).
    if let Ok(mut ready) = open(5, true) {
        let _ = ready.write_all(b"1");
    }
    // The shim sends SIGTERM when the task is deleted; by then the pipes are
    // at EOF and the threads finish on their own, so the default action is
    // fine and needs no handler.
    let w2 = writer.clone();
    let t1 = std::thread::spawn(move || pump(stdout, "stdout", w2));
    let t2 = std::thread::spawn(move || pump(stderr, "stderr", writer));
    let _ = t1.join();
    let _ = t2.join();
    0
}

pub fn parse_line(text: &str) -> Option<LogLine> {
    let mut parts = text.splitn(4, ' ');
    let time = parts.next()?.to_string();
    let stream = match parts.next()? {
        "stdout" => LogStream::Stdout,
        "stderr" => LogStream::Stderr,
        _ => return None,
    };
    let _tag = parts.next()?;
    Some(LogLine {
        stream,
        time,
        line: parts.next().unwrap_or_default().to_string(),
    })
}

/// Read a container's log: rotated files oldest first, then the live file;
/// with `follow`, keep reading while `running` says the container runs,
/// reopening the file when the driver rotates it.
pub fn read<F, Fut>(path: PathBuf, follow: bool, running: F) -> LogLines
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send,
{
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<LogLine>>(256);
    tokio::spawn(async move {
        let send_file = |p: PathBuf, from: u64| {
            let tx = tx.clone();
            async move {
                let res = tokio::task::spawn_blocking(
                    move || -> std::io::Result<(Vec<String>, u64, Option<u64>)> {
                        let mut f = match File::open(&p) {
                            Ok(f) => f,
                            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                                return Ok((vec![], from, None))
                            }
                            Err(e) => return Err(e),
                        };
                        let meta = f.metadata()?;
                        use std::os::unix::fs::MetadataExt;
                        let ino = meta.ino();
                        let start = if meta.len() < from { 0 } else { from };
                        f.seek(SeekFrom::Start(start))?;
                        let mut buf = String::new();
                        f.read_to_string(&mut buf)?;
                        // Keep a trailing partial write for the next round.
                        let complete = buf.rfind('\n').map(|i| i + 1).unwrap_or(0);
                        let lines = buf[..complete].lines().map(str::to_string).collect();
                        Ok((lines, start + complete as u64, Some(ino)))
                    },
                )
                .await;
                match res {
                    Ok(Ok((lines, next, ino))) => {
                        for l in lines {
                            if let Some(parsed) = parse_line(&l) {
                                if tx.send(Ok(parsed)).await.is_err() {
                                    return Err(());
                                }
                            }
                        }
                        Ok((next, ino))
                    }
                    Ok(Err(e)) => {
                        let _ = tx.send(Err(RuntimeError::io("read log", e))).await;
                        Err(())
                    }
                    Err(_) => Err(()),
                }
            }
        };
        let rotated = |i: u32| PathBuf::from(format!("{}.{i}", path.display()));
        let mut n = 1;
        while rotated(n).exists() {
            n += 1;
        }
        for i in (1..n).rev() {
            if send_file(rotated(i), 0).await.is_err() {
                return;
            }
        }
        let Ok((mut offset, mut ino)) = send_file(path.clone(), 0).await else {
            return;
        };
        if !follow {
            return;
        }
        loop {
            let alive = running().await;
            // Rotation replaces the file: start the new one from its top.
            use std::os::unix::fs::MetadataExt;
            let now_ino = std::fs::metadata(&path).ok().map(|m| m.ino());
            if now_ino.is_some() && now_ino != ino {
                if ino.is_some() && send_file(rotated(1), offset).await.is_err() {
                    return;
                }
                offset = 0;
            }
            match send_file(path.clone(), offset).await {
                Ok((o, i)) => {
                    offset = o;
                    ino = i.or(ino);
                }
                Err(()) => return,
            }
            if !alive {
                // One more read after exit catches the driver's last writes.
                tokio::time::sleep(Duration::from_millis(100)).await;
                let _ = send_file(path.clone(), offset).await;
                return;
            }
            if tx.is_closed() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx).boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_carries_key_value_pairs() {
        let u = binary_uri(
            Path::new("/usr/bin/berth-agent"),
            Path::new("/var/log/a b.log"),
            100,
            2,
        );
        assert_eq!(
            u,
            "binary:///usr/bin/berth-agent?--berth-log-driver=1&--path=/var/log/a%20b.log&--max-bytes=100&--max-files=2"
        );
    }

    #[test]
    fn writer_rotates_at_the_cap() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("c.log");
        let mut w = Writer::open(p.clone(), 200, 3).expect("open");
        for i in 0..20 {
            w.write_record("stdout", false, format!("line {i}").as_bytes())
                .expect("write");
        }
        assert!(p.exists());
        assert!(PathBuf::from(format!("{}.1", p.display())).exists());
        assert!(PathBuf::from(format!("{}.2", p.display())).exists());
        assert!(!PathBuf::from(format!("{}.3", p.display())).exists());
        let size = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        assert!(size <= 200, "{size}");
        let last = std::fs::read_to_string(&p).unwrap_or_default();
        let l = last.lines().last().and_then(parse_line).expect("parse");
        assert_eq!((l.stream, l.line.as_str()), (LogStream::Stdout, "line 19"));
    }
}
