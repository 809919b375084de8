//! Container logs, read back. The shim starts `berth-logd` (the
//! `berth-logd` crate, a binary shipped beside berth-agent) for each
//! container through a `binary://` stdio URI; it writes CRI-format records
//! to one file and rotates it. That crate owns the record format, the
//! rotation and the driver's arguments; this module only builds the URI and
//! reads the files.

use std::fs::File;
use std::future::Future;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_logd::{rotated_path, Stream};
use futures::StreamExt;

use crate::error::{Result, RuntimeError};
use crate::runtime::{LogLine, LogLines, LogStream};

/// The driver's file name; the agent looks for it beside its own binary.
pub const DRIVER_NAME: &str = "berth-logd";

/// The stdio URI that makes the shim start `bin` writing `log`.
pub fn binary_uri(bin: &Path, log: &Path, max_bytes: u64, max_files: u32) -> String {
    berth_logd::Config {
        path: log.to_path_buf(),
        max_bytes,
        max_files,
    }
    .binary_uri(bin)
}

pub fn parse_line(text: &str) -> Option<LogLine> {
    let record = berth_logd::parse_record(text)?;
    Some(LogLine {
        stream: match record.stream {
            Stream::Stdout => LogStream::Stdout,
            Stream::Stderr => LogStream::Stderr,
        },
        time: record.time.to_string(),
        line: record.text.to_string(),
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
        let rotated = |i: u32| rotated_path(&path, i);
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
    use std::time::{SystemTime, UNIX_EPOCH};

    #[test]
    fn uri_names_the_driver_and_its_file() {
        let u = binary_uri(
            Path::new("/usr/local/bin/berth-logd"),
            Path::new("/var/log/a b.log"),
            100,
            2,
        );
        assert_eq!(
            u,
            "binary:///usr/local/bin/berth-logd?--path=/var/log/a%20b.log&--max-bytes=100&--max-files=2"
        );
    }

    /// berth-logd formats times itself (it keeps to std); they must read
    /// the same as every other time Berth prints.
    #[test]
    fn driver_times_match_berth_types() {
        for secs in [
            0u64,
            951_782_400,
            1_709_251_199,
            1_796_512_346,
            4_102_444_800,
        ] {
            let t = UNIX_EPOCH + Duration::new(secs, 987_654_321);
            let mut out = [0u8; berth_logd::TIME_LEN];
            berth_logd::format_time(t, &mut out);
            assert_eq!(
                std::str::from_utf8(&out).ok(),
                Some(berth_types::time::rfc3339_nanos(t).as_str())
            );
        }
        let now = SystemTime::now();
        let mut out = [0u8; berth_logd::TIME_LEN];
        berth_logd::format_time(now, &mut out);
        assert_eq!(
            std::str::from_utf8(&out).ok(),
            Some(berth_types::time::rfc3339_nanos(now).as_str())
        );
    }

    #[tokio::test]
    async fn reads_rotated_files_oldest_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.log");
        let mut w = berth_logd::Writer::open(berth_logd::Config {
            path: path.clone(),
            max_bytes: 200,
            max_files: 3,
        })
        .expect("open");
        for i in 0..20 {
            let stream = if i % 2 == 0 {
                Stream::Stdout
            } else {
                Stream::Stderr
            };
            w.write_record(stream, false, format!("line {i}").as_bytes())
                .expect("write");
        }
        assert!(rotated_path(&path, 1).exists());
        let lines: Vec<LogLine> = read(path, false, || async { false })
            .map(|l| l.expect("line"))
            .collect()
            .await;
        let texts: Vec<&str> = lines.iter().map(|l| l.line.as_str()).collect();
        let first = 20 - texts.len();
        let want: Vec<String> = (first..20).map(|i| format!("line {i}")).collect();
        assert_eq!(texts, want);
        assert!(first > 0, "the cap dropped the oldest lines");
        let odd = lines.iter().find(|l| l.line == "line 19").expect("line 19");
        assert_eq!(odd.stream, LogStream::Stderr);
    }
}
