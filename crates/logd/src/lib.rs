//! Container logs on disk: the one definition of the log file's record
//! format, its rotation and the driver's arguments, shared by `berth-logd`
//! (which writes the files) and berth-agent (which starts it through
//! containerd and reads the files back for `berth task logs`).
//!
//! containerd's shim starts `berth-logd` from a `binary://` stdio URI with
//! the container's stdout on fd 3 and stderr on fd 4, and waits for a byte
//! or EOF on fd 5. The driver is the shim's child, not the agent's, so logs
//! keep flowing while the agent is down. It writes CRI-format records
//! (`TIME STREAM F|P TEXT`, one per line) to one file and rotates it at a
//! size cap: `path` is live, `path.1` the newest rotated file, up to
//! `path.(max_files - 1)`.
//!
//! One driver runs per container for the container's whole life, so this
//! crate is std only: no async runtime, no allocator crate, three buffers of
//! [`MAX_LINE`] allocated once, and one small extra thread.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// Lines longer than this are split into partial (`P`) records, so one
/// record never needs a bigger buffer.
pub const MAX_LINE: usize = 16 * 1024;
pub const DEFAULT_MAX_BYTES: u64 = 10 << 20;
pub const DEFAULT_MAX_FILES: u32 = 3;
/// `YYYY-MM-DDThh:mm:ss.nnnnnnnnnZ`
pub const TIME_LEN: usize = 30;
/// The stderr pump only moves bytes between two heap buffers; glibc's
/// default (8 MiB of address space) is far more than it touches.
const PUMP_STACK: usize = 64 * 1024;

/// What can stop the driver. A hand-written enum rather than thiserror's:
/// this crate keeps to std (see the crate docs).
#[derive(Debug)]
pub enum Error {
    /// The arguments the shim passed (from the URI the agent wrote).
    Usage(String),
    /// A stdio descriptor the shim should have passed is missing.
    Stdio { fd: u32, source: std::io::Error },
    /// The log file (or its directory) cannot be opened.
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The thread that copies stderr could not start.
    Thread(std::io::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(why) => write!(
                f,
                "{why} (berth-logd is started by containerd's shim from the stdio URI \
                 berth-agent writes: --path FILE [--max-bytes N] [--max-files N])"
            ),
            Error::Stdio { fd, source } => write!(
                f,
                "fd {fd} is not open ({source}): berth-logd expects the container's stdout \
                 on fd 3, stderr on fd 4 and the readiness pipe on fd 5, as containerd's shim passes them"
            ),
            Error::Open { path, source } => write!(f, "cannot open {}: {source}", path.display()),
            Error::Thread(source) => write!(f, "cannot start the stderr thread: {source}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Usage(_) => None,
            Error::Stdio { source, .. } | Error::Open { source, .. } | Error::Thread(source) => {
                Some(source)
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "stdout" => Some(Stream::Stdout),
            "stderr" => Some(Stream::Stderr),
            _ => None,
        }
    }
}

/// What the driver is told: where to write and when to rotate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub path: PathBuf,
    /// Rotate before a record would take the live file past this; 0 never
    /// rotates.
    pub max_bytes: u64,
    /// Files kept, the live one included (1 truncates instead of rotating).
    pub max_files: u32,
}

impl Config {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Config {
            path: path.into(),
            max_bytes: DEFAULT_MAX_BYTES,
            max_files: DEFAULT_MAX_FILES,
        }
    }

    /// The stdio URI that makes the shim start `bin` with this config. The
    /// shim turns the query into `key value` arguments in map order
    /// (random), so every argument is a key with a value.
    pub fn binary_uri(&self, bin: &Path) -> String {
        format!(
            "binary://{}?--path={}&--max-bytes={}&--max-files={}",
            encode(&bin.display().to_string()),
            encode(&self.path.display().to_string()),
            self.max_bytes,
            self.max_files
        )
    }

    /// Parses the shim's `key value` pairs, in any order. Unknown keys are
    /// skipped so that an older driver still starts from a newer agent's URI.
    pub fn from_args<I: IntoIterator<Item = String>>(args: I) -> Result<Self, Error> {
        let mut path = None;
        let mut max_bytes = DEFAULT_MAX_BYTES;
        let mut max_files = DEFAULT_MAX_FILES;
        let mut it = args.into_iter();
        while let Some(key) = it.next() {
            let value = it
                .next()
                .ok_or_else(|| Error::Usage(format!("{key} has no value")))?;
            let number = |v: &str| {
                v.parse::<u64>()
                    .map_err(|_| Error::Usage(format!("{key} {v:?} is not a whole number")))
            };
            match key.as_str() {
                "--path" => path = Some(PathBuf::from(value)),
                "--max-bytes" => max_bytes = number(&value)?,
                "--max-files" => {
                    max_files = u32::try_from(number(&value)?)
                        .map_err(|_| Error::Usage(format!("--max-files {value} is too large")))?
                }
                _ => {}
            }
        }
        let path = path.ok_or_else(|| Error::Usage("no --path".into()))?;
        Ok(Config {
            path,
            max_bytes,
            max_files,
        })
    }
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

/// The `i`th rotated file of `path` (1 is the newest).
pub fn rotated_path(path: &Path, i: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{i}"));
    PathBuf::from(name)
}

/// One record of a log file, borrowed from its line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub time: &'a str,
    pub stream: Stream,
    /// The line went on in the next record of the same stream (it was
    /// longer than [`MAX_LINE`], or the stream ended without a newline).
    pub partial: bool,
    pub text: &'a str,
}

/// Parses one line of a log file (without its newline); `None` for a line
/// that is not a record.
pub fn parse_record(line: &str) -> Option<Record<'_>> {
    let mut parts = line.splitn(4, ' ');
    let time = parts.next()?;
    let stream = Stream::parse(parts.next()?)?;
    let partial = match parts.next()? {
        "P" => true,
        "F" => false,
        _ => return None,
    };
    Some(Record {
        time,
        stream,
        partial,
        text: parts.next().unwrap_or_default(),
    })
}

/// RFC 3339 in UTC with nanoseconds, the records' time, written into a
/// fixed buffer: the driver formats one per line and should not allocate.
pub fn format_time(t: SystemTime, out: &mut [u8; TIME_LEN]) {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (year, month, day) = civil_from_days(secs / 86_400);
    let in_day = secs % 86_400;
    let mut put = |at: usize, width: usize, mut value: u64| {
        for i in (at..at + width).rev() {
            out[i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(0, 4, year);
    put(5, 2, month);
    put(8, 2, day);
    put(11, 2, in_day / 3600);
    put(14, 2, in_day % 3600 / 60);
    put(17, 2, in_day % 60);
    put(20, 9, u64::from(since.subsec_nanos()));
    for (at, sep) in [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'.'),
    ] {
        out[at] = sep;
    }
    out[29] = b'Z';
}

/// Gregorian date of a day count from 1970-01-01 (Howard Hinnant's
/// `civil_from_days`: years counted from March put the leap day last, so
/// month lengths follow a fixed pattern). Days before 1970 never occur here.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// Appends records to the live file and rotates it.
pub struct Writer {
    config: Config,
    file: File,
    size: u64,
    /// One record is assembled here and written with one `write`, so that
    /// a reader never sees half a record from this driver and the two
    /// streams never interleave inside one.
    record: Vec<u8>,
}

impl Writer {
    pub fn open(config: Config) -> std::io::Result<Self> {
        if let Some(dir) = config.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&config.path)?;
        let size = file.metadata()?.len();
        Ok(Writer {
            config,
            file,
            size,
            record: Vec::with_capacity(MAX_LINE + TIME_LEN + 16),
        })
    }

    pub fn path(&self) -> &Path {
        &self.config.path
    }

    pub fn write_record(
        &mut self,
        stream: Stream,
        partial: bool,
        text: &[u8],
    ) -> std::io::Result<()> {
        self.write_record_at(SystemTime::now(), stream, partial, text)
    }

    pub fn write_record_at(
        &mut self,
        time: SystemTime,
        stream: Stream,
        partial: bool,
        text: &[u8],
    ) -> std::io::Result<()> {
        let mut stamp = [0u8; TIME_LEN];
        format_time(time, &mut stamp);
        self.record.clear();
        self.record.extend_from_slice(&stamp);
        self.record.push(b' ');
        self.record.extend_from_slice(stream.as_str().as_bytes());
        self.record
            .extend_from_slice(if partial { b" P " } else { b" F " });
        self.record.extend_from_slice(text);
        self.record.push(b'\n');
        let len = self.record.len() as u64;
        if self.config.max_bytes > 0 && self.size > 0 && self.size + len > self.config.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(&self.record)?;
        self.size += len;
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let keep = self.config.max_files.max(1);
        if keep == 1 {
            self.file.set_len(0)?;
            self.size = 0;
            return Ok(());
        }
        let path = &self.config.path;
        // The oldest may not exist yet, and a missing middle file only means
        // fewer files were written so far: neither stops the rotation.
        let _ = std::fs::remove_file(rotated_path(path, keep - 1));
        for i in (1..keep - 1).rev() {
            let _ = std::fs::rename(rotated_path(path, i), rotated_path(path, i + 1));
        }
        std::fs::rename(path, rotated_path(path, 1))?;
        self.file = OpenOptions::new().create(true).append(true).open(path)?;
        self.size = 0;
        Ok(())
    }
}

/// Copies one stream into records until it ends (the container's side of
/// the pipe closed). `buf` holds at most one unfinished line; a line that
/// fills it goes out as a partial record.
pub fn pump(mut src: impl Read, stream: Stream, writer: &Mutex<Writer>, buf: &mut [u8]) {
    let mut filled = 0;
    let emit = |partial: bool, text: &[u8]| {
        let mut w = writer.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = w.write_record(stream, partial, text) {
            eprintln!("berth-logd: write {}: {e}", w.path().display());
        }
    };
    loop {
        let n = match src.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                eprintln!("berth-logd: read {}: {e}", stream.as_str());
                break;
            }
        };
        let end = filled + n;
        let mut start = 0;
        while let Some(i) = buf[start..end].iter().position(|&b| b == b'\n') {
            emit(false, &buf[start..start + i]);
            start += i + 1;
        }
        if start == 0 && end == buf.len() {
            emit(true, &buf[..end]);
            filled = 0;
        } else {
            buf.copy_within(start..end, 0);
            filled = end - start;
        }
    }
    if filled > 0 {
        emit(true, &buf[..filled]);
    }
}

/// The driver: opens the shim's descriptors and the log file, tells the
/// shim it is ready, and copies both streams until they end.
pub fn run(config: Config) -> Result<(), Error> {
    // Reopening the inherited descriptors through /proc keeps this crate
    // free of unsafe code (a `File` from a raw fd needs it).
    let reopen = |fd: u32, write: bool| {
        OpenOptions::new()
            .read(!write)
            .write(write)
            .open(format!("/proc/self/fd/{fd}"))
            .map_err(|source| Error::Stdio { fd, source })
    };
    let stdout = reopen(3, false)?;
    let stderr = reopen(4, false)?;
    let path = config.path.clone();
    let writer = Writer::open(config).map_err(|source| Error::Open { path, source })?;
    let writer = Mutex::new(writer);
    // Allocated here, before the second thread exists, so that glibc never
    // gives that thread an arena of its own.
    let mut out_buf = vec![0u8; MAX_LINE];
    let mut err_buf = vec![0u8; MAX_LINE];
    std::thread::scope(|scope| {
        let writer = &writer;
        let err_buf = &mut err_buf;
        std::thread::Builder::new()
            .name("stderr".into())
            .stack_size(PUMP_STACK)
            .spawn_scoped(scope, move || pump(stderr, Stream::Stderr, writer, err_buf))
            .map_err(Error::Thread)?;
        // The shim reads one byte or EOF; a missing fd 5 (started by hand)
        // only means nobody waits.
        if let Ok(mut ready) = reopen(5, true) {
            let _ = ready.write_all(b"1");
        }
        // The shim sends SIGTERM when the task is deleted; by then the pipes
        // are at EOF and both pumps end on their own, so the default action
        // is fine and needs no handler.
        pump(stdout, Stream::Stdout, writer, &mut out_buf);
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;
    use std::time::Duration;

    fn records(path: &Path) -> Vec<(Stream, bool, String)> {
        std::fs::read_to_string(path)
            .expect("read log")
            .lines()
            .map(|l| {
                let r = parse_record(l).expect("a record");
                (r.stream, r.partial, r.text.to_string())
            })
            .collect()
    }

    fn writer(dir: &Path, max_bytes: u64, max_files: u32) -> (PathBuf, Mutex<Writer>) {
        let path = dir.join("c.log");
        let config = Config {
            path: path.clone(),
            max_bytes,
            max_files,
        };
        (path, Mutex::new(Writer::open(config).expect("open")))
    }

    #[test]
    fn uri_and_arguments_round_trip_in_any_order() {
        let config = Config {
            path: PathBuf::from("/var/log/a b.log"),
            max_bytes: 100,
            max_files: 2,
        };
        assert_eq!(
            config.binary_uri(Path::new("/usr/bin/berth-logd")),
            "binary:///usr/bin/berth-logd?--path=/var/log/a%20b.log&--max-bytes=100&--max-files=2"
        );
        let args = [
            "--max-files",
            "2",
            "--berth-log-driver",
            "1",
            "--path",
            "/var/log/a b.log",
            "--max-bytes",
            "100",
        ];
        let parsed = Config::from_args(args.iter().map(|s| s.to_string())).expect("parse");
        assert_eq!(parsed, config);
    }

    #[test]
    fn bad_arguments_are_refused() {
        let parse = |args: &[&str]| Config::from_args(args.iter().map(|s| s.to_string()));
        assert!(matches!(
            parse(&["--max-bytes", "10"]),
            Err(Error::Usage(_))
        ));
        assert!(matches!(
            parse(&["--path", "/x", "--max-bytes", "ten"]),
            Err(Error::Usage(_))
        ));
        assert!(matches!(parse(&["--path"]), Err(Error::Usage(_))));
        let defaults = parse(&["--path", "/x"]).expect("defaults");
        assert_eq!(
            (defaults.max_bytes, defaults.max_files),
            (DEFAULT_MAX_BYTES, DEFAULT_MAX_FILES)
        );
    }

    #[test]
    fn time_is_rfc3339_with_nanoseconds() {
        let cases = [
            (0, 0, "1970-01-01T00:00:00.000000000Z"),
            (951_782_400, 5, "2000-02-29T00:00:00.000000005Z"),
            (1_709_251_199, 999_999_999, "2024-02-29T23:59:59.999999999Z"),
            (1_796_512_346, 123_456_789, "2026-12-05T23:12:26.123456789Z"),
        ];
        for (secs, nanos, want) in cases {
            let mut out = [0u8; TIME_LEN];
            format_time(UNIX_EPOCH + Duration::new(secs, nanos), &mut out);
            assert_eq!(std::str::from_utf8(&out).expect("ascii"), want);
        }
    }

    #[test]
    fn records_parse_back() {
        let r = parse_record("2026-12-05T23:12:26.123456789Z stderr P a b  c").expect("record");
        assert_eq!(
            r,
            Record {
                time: "2026-12-05T23:12:26.123456789Z",
                stream: Stream::Stderr,
                partial: true,
                text: "a b  c"
            }
        );
        assert_eq!(
            parse_record("2026-12-05T23:12:26Z stdout F").map(|r| r.text),
            Some("")
        );
        assert!(parse_record("garbage").is_none());
        assert!(parse_record("t stdin F x").is_none());
    }

    #[test]
    fn writer_rotates_at_the_cap_and_keeps_max_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, w) = writer(dir.path(), 200, 3);
        let mut w = w.into_inner().expect("lock");
        for i in 0..20 {
            w.write_record(Stream::Stdout, false, format!("line {i}").as_bytes())
                .expect("write");
        }
        assert!(rotated_path(&path, 1).exists());
        assert!(rotated_path(&path, 2).exists());
        assert!(!rotated_path(&path, 3).exists());
        for p in [path.clone(), rotated_path(&path, 1), rotated_path(&path, 2)] {
            let size = std::fs::metadata(&p).expect("stat").len();
            assert!(size <= 200, "{} is {size} bytes", p.display());
        }
        // Oldest to newest, the kept records are the last ones written, in order.
        let mut kept = Vec::new();
        for p in [rotated_path(&path, 2), rotated_path(&path, 1), path.clone()] {
            kept.extend(records(&p).into_iter().map(|(_, _, t)| t));
        }
        let want: Vec<String> = (20 - kept.len()..20).map(|i| format!("line {i}")).collect();
        assert_eq!(kept, want);
        assert!(kept.len() < 20);
    }

    #[test]
    fn one_file_is_truncated_instead_of_rotated() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, w) = writer(dir.path(), 100, 1);
        let mut w = w.into_inner().expect("lock");
        for i in 0..5 {
            w.write_record(Stream::Stdout, false, format!("line {i}").as_bytes())
                .expect("write");
        }
        assert!(!rotated_path(&path, 1).exists());
        let last = records(&path);
        assert_eq!(last.last().map(|r| r.2.as_str()), Some("line 4"));
        assert!(last.len() < 5);
    }

    #[test]
    fn long_lines_become_partial_records_of_max_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, w) = writer(dir.path(), 0, 3);
        let long: String = (0..40_000)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        let exact = "x".repeat(MAX_LINE);
        let input = format!("{long}\nshort\n{exact}\ntail without newline");
        let mut buf = vec![0u8; MAX_LINE];
        // A reader that hands out odd-sized pieces, as a pipe does.
        struct Trickle(Cursor<Vec<u8>>);
        impl Read for Trickle {
            fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
                let n = out.len().min(7_001);
                self.0.read(&mut out[..n])
            }
        }
        pump(
            Trickle(Cursor::new(input.into_bytes())),
            Stream::Stdout,
            &w,
            &mut buf,
        );
        let got = records(&path);
        let shape: Vec<(bool, usize)> = got.iter().map(|(_, p, t)| (*p, t.len())).collect();
        assert_eq!(
            shape,
            vec![
                (true, MAX_LINE),
                (true, MAX_LINE),
                (false, 40_000 - 2 * MAX_LINE),
                (false, 5),
                // A line of exactly MAX_LINE fills the buffer before its
                // newline arrives; the newline then ends an empty record.
                (true, MAX_LINE),
                (false, 0),
                (true, "tail without newline".len()),
            ]
        );
        let joined: String = got[..3].iter().map(|(_, _, t)| t.as_str()).collect();
        assert_eq!(joined, long);
        assert!(got.iter().all(|(s, _, _)| *s == Stream::Stdout));
    }

    #[test]
    fn both_streams_go_to_one_file_tagged_and_in_order() {
        use std::os::unix::net::UnixStream;
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, w) = writer(dir.path(), 0, 3);
        let (mut out_tx, out_rx) = UnixStream::pair().expect("pair");
        let (mut err_tx, err_rx) = UnixStream::pair().expect("pair");
        std::thread::scope(|s| {
            let w = &w;
            s.spawn(move || pump(out_rx, Stream::Stdout, w, &mut vec![0u8; MAX_LINE]));
            s.spawn(move || pump(err_rx, Stream::Stderr, w, &mut vec![0u8; MAX_LINE]));
            for i in 0..200 {
                writeln!(out_tx, "out {i}").expect("write stdout");
                writeln!(err_tx, "err {i}").expect("write stderr");
            }
            drop(out_tx);
            drop(err_tx);
        });
        let got = records(&path);
        let of = |stream: Stream| -> Vec<String> {
            got.iter()
                .filter(|(s, p, _)| *s == stream && !p)
                .map(|(_, _, t)| t.clone())
                .collect()
        };
        assert_eq!(
            of(Stream::Stdout),
            (0..200).map(|i| format!("out {i}")).collect::<Vec<_>>()
        );
        assert_eq!(
            of(Stream::Stderr),
            (0..200).map(|i| format!("err {i}")).collect::<Vec<_>>()
        );
        assert_eq!(got.len(), 400);
    }
}
