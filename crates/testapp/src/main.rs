//! berth-testapp: the program inside the image that berth-agent's tests run.
//! It has no base image beneath it, so it must be static and must not need a
//! shell, libc files or /etc.
//!
//! Usage: `berth-testapp MODE [ARGS]`
//!   serve [PORT]        HTTP server: /health, /env, /revision, /exit/CODE
//!                       (default port 8080)
//!   exit CODE           print to stdout and stderr, then exit with CODE
//!   env                 print the environment, sorted, and exit 0
//!   alloc MIB           allocate and touch MIB MiB, then sleep
//!   ticker [MS]         print a numbered line every MS (default 100) ms
//!   sleep               sleep until signalled
//!   check [PORT]        GET /health on 127.0.0.1:PORT; exit 0 when 200
//!   fail                exit 1 at once (a health check that always fails)
//!   syscalls            try syscalls a sandbox must refuse; print each errno
//!   threads N           start N sleeping threads; print how many started
//!   lookup NAME [PORT]  resolve NAME with the C library's resolver (so
//!                       /etc/resolv.conf and its search list), retrying
//!                       for 30 s; print `lookup NAME: ADDR, ...`; with
//!                       PORT, GET /env from the first address and print
//!                       its status line; exit 0 when all of it worked
//!
//! Environment: TESTAPP_REVISION is what /revision answers (so a test can
//! tell which deployment served a request); TESTAPP_UNHEALTHY_AFTER_SECS=N
//! makes /health fail N seconds after the server started (a revision that
//! turns bad once it takes traffic). TESTAPP_IGNORE_SIGTERM=1 makes SIGTERM a no-op; otherwise
//! SIGTERM exits 0 after printing a line. As PID 1 of a PID namespace the
//! kernel would drop SIGTERM anyway without a handler, so an explicit handler
//! is what makes the default case stoppable.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let cwd = std::env::current_dir()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|e| format!("<{e}>"));
    println!(
        "testapp: args={:?} cwd={} uid={}",
        args.get(1..).unwrap_or_default(),
        cwd,
        uid()
    );

    // Before any other thread exists: unshare(CLONE_NEWUSER) refuses a
    // multithreaded caller, which would hide what seccomp does.
    if args.get(1).map(String::as_str) == Some("syscalls") {
        return syscalls();
    }

    let term = Arc::new(AtomicBool::new(false));
    if let Err(e) = signal_hook::flag::register(signal_hook::consts::SIGTERM, term.clone()) {
        eprintln!("testapp: cannot handle SIGTERM: {e}");
    }
    let ignore_term = std::env::var("TESTAPP_IGNORE_SIGTERM").as_deref() == Ok("1");
    std::thread::spawn(move || watch_sigterm(term, ignore_term));

    let mode = args.get(1).map(String::as_str).unwrap_or("serve");
    let arg = args.get(2).map(String::as_str);
    match mode {
        "serve" => serve(parse_or(arg, 8080)),
        "exit" => {
            let code: u8 = parse_or(arg, 0);
            println!("testapp: exiting with {code}");
            eprintln!("testapp: stderr line before exit {code}");
            flush();
            ExitCode::from(code)
        }
        "env" => {
            let mut vars: Vec<(String, String)> = std::env::vars().collect();
            vars.sort();
            for (k, v) in vars {
                println!("{k}={v}");
            }
            ExitCode::SUCCESS
        }
        "alloc" => alloc(parse_or(arg, 64)),
        "ticker" => {
            let ms: u64 = parse_or(arg, 100);
            for i in 0u64.. {
                println!("tick {i}");
                flush();
                std::thread::sleep(Duration::from_millis(ms));
            }
            ExitCode::SUCCESS
        }
        "sleep" => loop {
            std::thread::sleep(Duration::from_secs(3600));
        },
        "check" => check(parse_or(arg, 8080)),
        "threads" => threads(parse_or(arg, 100)),
        "lookup" => lookup(
            arg.unwrap_or("localhost"),
            args.get(3).and_then(|p| p.parse().ok()),
        ),
        "fail" => {
            eprintln!("testapp: check failed on purpose");
            ExitCode::from(1)
        }
        other => {
            eprintln!("testapp: unknown mode {other:?}");
            ExitCode::from(2)
        }
    }
}

fn parse_or<T: std::str::FromStr>(arg: Option<&str>, default: T) -> T {
    arg.and_then(|a| a.parse().ok()).unwrap_or(default)
}

fn flush() {
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
}

fn uid() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        })
        .unwrap_or_else(|| "?".into())
}

fn watch_sigterm(term: Arc<AtomicBool>, ignore: bool) {
    loop {
        std::thread::sleep(Duration::from_millis(20));
        if term.swap(false, Ordering::SeqCst) {
            if ignore {
                println!("testapp: ignoring SIGTERM");
                flush();
            } else {
                println!("testapp: SIGTERM, exiting");
                flush();
                std::process::exit(0);
            }
        }
    }
}

fn alloc(mib: usize) -> ExitCode {
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    for i in 0..mib {
        // Touch every page so the memory is charged to the cgroup, not just
        // reserved.
        blocks.push(vec![(i % 251) as u8 + 1; 1 << 20]);
        if i % 16 == 0 {
            println!("testapp: allocated {} MiB", i + 1);
            flush();
        }
    }
    println!("testapp: holding {mib} MiB");
    flush();
    loop {
        std::thread::sleep(Duration::from_secs(3600));
        if blocks.is_empty() {
            break;
        }
    }
    ExitCode::SUCCESS
}

fn serve(port: u16) -> ExitCode {
    let listener = match TcpListener::bind(("0.0.0.0", port)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("testapp: cannot listen on {port}: {e}");
            return ExitCode::from(3);
        }
    };
    println!("testapp: listening on {port}");
    flush();
    STARTED.get_or_init(std::time::Instant::now);
    for conn in listener.incoming().flatten() {
        std::thread::spawn(move || {
            if let Err(e) = handle(conn) {
                eprintln!("testapp: connection: {e}");
            }
        });
    }
    ExitCode::SUCCESS
}

fn handle(mut conn: TcpStream) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    // Drain the headers so the client sees a clean response.
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
    }
    let (status, body) = if path == "/revision" {
        let revision = std::env::var("TESTAPP_REVISION").unwrap_or_else(|_| "unset".into());
        ("200 OK", revision + "\n")
    } else if path == "/health" {
        if std::path::Path::new("/tmp/unhealthy").exists() || turned_unhealthy() {
            ("500 Internal Server Error", "unhealthy\n".to_string())
        } else {
            ("200 OK", "ok\n".to_string())
        }
    } else if path == "/env" {
        let mut vars: Vec<String> = std::env::vars().map(|(k, v)| format!("{k}={v}")).collect();
        vars.sort();
        ("200 OK", vars.join("\n") + "\n")
    } else if let Some(code) = path.strip_prefix("/exit/") {
        let code: i32 = code.parse().unwrap_or(0);
        write!(
            conn,
            "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        )?;
        println!("testapp: exit {code} requested over HTTP");
        flush();
        std::process::exit(code);
    } else {
        ("404 Not Found", "not found\n".to_string())
    };
    write!(
        conn,
        "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// When the server started, for TESTAPP_UNHEALTHY_AFTER_SECS.
static STARTED: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

fn turned_unhealthy() -> bool {
    let Some(after) = std::env::var("TESTAPP_UNHEALTHY_AFTER_SECS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    else {
        return false;
    };
    STARTED.get_or_init(std::time::Instant::now).elapsed() >= Duration::from_secs(after)
}

fn check(port: u16) -> ExitCode {
    let result = (|| -> std::io::Result<String> {
        let mut s = TcpStream::connect_timeout(
            &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_secs(2),
        )?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        write!(
            s,
            "GET /health HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n"
        )?;
        let mut resp = String::new();
        s.read_to_string(&mut resp)?;
        Ok(resp)
    })();
    match result {
        Ok(resp) if resp.starts_with("HTTP/1.1 200") => {
            println!("testapp: healthy");
            ExitCode::SUCCESS
        }
        Ok(resp) => {
            println!(
                "testapp: unhealthy: {}",
                resp.lines().next().unwrap_or_default()
            );
            ExitCode::from(1)
        }
        Err(e) => {
            println!("testapp: check failed: {e}");
            ExitCode::from(1)
        }
    }
}

/// getaddrinfo(3) through std: in this static glibc build the resolver is
/// glibc's own, reading /etc/resolv.conf (nameservers, search, ndots) as
/// any dynamically linked program would.
fn lookup(name: &str, port: Option<u16>) -> ExitCode {
    use std::net::{SocketAddr, ToSocketAddrs};
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let addrs: Vec<SocketAddr> = loop {
        match (name, port.unwrap_or(0)).to_socket_addrs() {
            Ok(found) => {
                let found: Vec<SocketAddr> = found.collect();
                if !found.is_empty() {
                    break found;
                }
            }
            Err(e) if std::time::Instant::now() >= deadline => {
                println!("lookup {name}: failed: {e}");
                flush();
                return ExitCode::from(1);
            }
            Err(_) => {}
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let mut ips: Vec<String> = Vec::new();
    for a in &addrs {
        let ip = a.ip().to_string();
        if !ips.contains(&ip) {
            ips.push(ip);
        }
    }
    println!("lookup {name}: {}", ips.join(", "));
    flush();
    if port.is_none() {
        return ExitCode::SUCCESS;
    }
    // Resolved with the port: the address to connect to.
    let addr = addrs[0];
    let result = (|| -> std::io::Result<String> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(
            s,
            "GET /env HTTP/1.1\r\nhost: {name}\r\nconnection: close\r\n\r\n"
        )?;
        let mut resp = String::new();
        s.read_to_string(&mut resp)?;
        Ok(resp)
    })();
    match result {
        Ok(resp) => {
            let status = resp.lines().next().unwrap_or_default().to_string();
            println!("lookup GET {addr}: {status}");
            flush();
            if status.starts_with("HTTP/1.1 200") {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            println!("lookup GET {addr}: failed: {e}");
            flush();
            ExitCode::from(1)
        }
    }
}

/// Prints `syscall NAME: ok` or `syscall NAME: errno N` for a few syscalls:
/// one every program needs, and ones that a root process without
/// CAP_SYS_ADMIN may still make unless a seccomp filter refuses them
/// (`keyctl`, a user namespace), and one capabilities already refuse
/// (`mount`).
#[allow(unsafe_code)]
fn syscalls() -> ExitCode {
    fn report(name: &str, ret: i64) {
        if ret < 0 {
            let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
            println!("syscall {name}: errno {errno}");
        } else {
            println!("syscall {name}: ok");
        }
    }
    // SAFETY: plain syscalls with constant arguments and valid pointers;
    // none touches this process's memory.
    unsafe {
        report("getppid", i64::from(libc::getppid()));
        // KEYCTL_GET_KEYRING_ID of the session keyring, creating none.
        report(
            "keyctl",
            libc::syscall(libc::SYS_keyctl, 0, libc::c_long::from(-3i32), 0),
        );
        report(
            "mount",
            i64::from(libc::mount(
                c"none".as_ptr(),
                c"/tmp".as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                std::ptr::null(),
            )),
        );
        // Last: on success the process is in a new user namespace.
        report("unshare", i64::from(libc::unshare(libc::CLONE_NEWUSER)));
    }
    flush();
    ExitCode::SUCCESS
}

/// Starts up to `n` threads that sleep; prints how many started and why
/// the next one could not (a pids limit answers EAGAIN).
fn threads(n: usize) -> ExitCode {
    let mut started = Vec::new();
    let mut error = None;
    for _ in 0..n {
        match std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(|| loop {
                std::thread::sleep(Duration::from_secs(3600));
            }) {
            Ok(h) => started.push(h),
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    match error {
        Some(e) => println!("testapp: threads started {} of {n}: {e}", started.len()),
        None => println!("testapp: threads started {n} of {n}"),
    }
    flush();
    std::process::exit(0)
}
