//! What the benchmark ran on, and per-process CPU time from /proc.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::stats;

#[derive(Debug, Clone)]
pub struct Machine {
    pub date: String,
    pub nproc: String,
    pub cpu_model: String,
    pub memory: String,
    pub kernel: String,
    /// Filesystem and device holding the servers' data dirs.
    pub data_fs: String,
    /// Median of `fdatasync` after a 1 KiB append, in the data dirs' filesystem.
    pub fsync_median: Option<Duration>,
}

fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!text.is_empty()).then_some(text)
}

fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
}

fn memory() -> Option<String> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = info
        .lines()
        .find(|l| l.starts_with("MemTotal:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(format!("{:.1} GiB", kib as f64 / (1024.0 * 1024.0)))
}

/// The mount holding `dir`: the longest mount point that is a prefix of it.
fn filesystem_of(dir: &Path) -> Option<String> {
    let dir = dir.canonicalize().ok()?;
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let device = fields.next()?;
            let point = fields.next()?;
            let fstype = fields.next()?;
            dir.starts_with(point).then(|| {
                (
                    point.len(),
                    format!("{fstype} on {device} (mounted at {point})"),
                )
            })
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, text)| text)
}

/// Appends 1 KiB and `fdatasync`s, a number of times, in a temp file under
/// `dir`: roughly the price of one durable Raft log write there.
fn fsync_probe(dir: &Path) -> Option<Duration> {
    use std::io::Write;
    let mut file = tempfile::tempfile_in(dir).ok()?;
    let block = [0x5au8; 1024];
    let mut samples = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(2);
    for _ in 0..50 {
        let start = Instant::now();
        file.write_all(&block).ok()?;
        file.sync_data().ok()?;
        samples.push(start.elapsed());
        if Instant::now() > deadline {
            break;
        }
    }
    stats::median(&samples)
}

pub fn describe() -> Machine {
    let unknown = || "unknown".to_string();
    let tmp = std::env::temp_dir();
    Machine {
        date: command_output("date", &["-u"]).unwrap_or_else(unknown),
        nproc: command_output("nproc", &[])
            .or_else(|| {
                std::thread::available_parallelism()
                    .ok()
                    .map(|n| n.to_string())
            })
            .unwrap_or_else(unknown),
        cpu_model: cpu_model().unwrap_or_else(unknown),
        memory: memory().unwrap_or_else(unknown),
        kernel: command_output("uname", &["-sr"]).unwrap_or_else(unknown),
        data_fs: format!(
            "{}: {}",
            tmp.display(),
            filesystem_of(&tmp).unwrap_or_else(unknown)
        ),
        fsync_median: fsync_probe(&tmp),
    }
}

/// CPU time (user + system) of processes, to tell how busy each was.
pub struct CpuClock {
    ticks_per_sec: f64,
}

impl CpuClock {
    pub fn new() -> Self {
        let ticks_per_sec = command_output("getconf", &["CLK_TCK"])
            .and_then(|t| t.parse::<f64>().ok())
            .filter(|t| *t > 0.0)
            .unwrap_or(100.0);
        Self { ticks_per_sec }
    }

    /// Seconds of CPU `pid` has used so far.
    pub fn cpu_secs(&self, pid: u32) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name may hold spaces; the fields after it do not.
        let rest = &stat[stat.rfind(')')? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // After the name: state is field 3, utime 14 and stime 15.
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        Some((utime + stime) as f64 / self.ticks_per_sec)
    }

    /// Seconds of CPU every process on the machine has used so far (all
    /// cores, idle and iowait excluded).
    pub fn machine_busy_secs(&self) -> Option<f64> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let line = stat.lines().find(|l| l.starts_with("cpu "))?;
        let ticks: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|t| t.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal (guest is in user).
        let busy: u64 = ticks
            .iter()
            .take(8)
            .enumerate()
            .filter(|(i, _)| *i != 3 && *i != 4)
            .map(|(_, t)| *t)
            .sum();
        Some(busy as f64 / self.ticks_per_sec)
    }
}

impl CpuClock {
    /// Seconds the machine has spent in hard and soft interrupts so far
    /// (all cores): loopback networking is mostly softirq time, which the
    /// kernel may count to no process.
    pub fn irq_secs(&self) -> Option<f64> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let line = stat.lines().find(|l| l.starts_with("cpu "))?;
        let ticks: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|t| t.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq ...
        Some((ticks.get(5)? + ticks.get(6)?) as f64 / self.ticks_per_sec)
    }
}

/// Resident memory of a process from /proc/PID/status: (VmRSS, VmHWM, the
/// peak) in bytes.
pub fn rss(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Threads of a process, from /proc/PID/status.
pub fn threads(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("Threads:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// CPU used over a window by some processes (in cores), by this process
/// (`bench`) and by the rest of the machine (`other`).
pub struct CpuWindow<'a> {
    clock: &'a CpuClock,
    pids: Vec<(String, u32)>,
    before: Vec<Option<f64>>,
    busy_before: Option<f64>,
    start: Instant,
}

impl<'a> CpuWindow<'a> {
    pub fn start(clock: &'a CpuClock, watched: &[(String, u32)]) -> Self {
        let mut pids = watched.to_vec();
        pids.push(("bench".to_string(), std::process::id()));
        let before = pids.iter().map(|(_, pid)| clock.cpu_secs(*pid)).collect();
        Self {
            clock,
            pids,
            before,
            busy_before: clock.machine_busy_secs(),
            start: Instant::now(),
        }
    }

    /// (label, cores) for every watched process, `bench` and `other`.
    pub fn finish(self) -> Vec<(String, Option<f64>)> {
        let window = self.start.elapsed().as_secs_f64();
        let mut out: Vec<(String, Option<f64>)> = self
            .pids
            .iter()
            .zip(&self.before)
            .map(|((label, pid), before)| {
                let cores = match (before, self.clock.cpu_secs(*pid)) {
                    (Some(b), Some(a)) if window > 0.0 => Some((a - b) / window),
                    _ => None,
                };
                (label.clone(), cores)
            })
            .collect();
        let ours: Option<f64> = out.iter().map(|(_, c)| *c).sum();
        let machine = match (self.busy_before, self.clock.machine_busy_secs()) {
            (Some(b), Some(a)) if window > 0.0 => Some((a - b) / window),
            _ => None,
        };
        let other = machine.zip(ours).map(|(m, o)| (m - o).max(0.0));
        out.push(("other".to_string(), other));
        out
    }
}
