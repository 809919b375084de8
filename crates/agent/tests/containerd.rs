//! berth-agent against a real containerd and registry, as started by
//! `scripts/test-env.sh`:
//!
//!   set -a; eval "$(sudo scripts/test-env.sh)"; set +a
//!   cargo test -p berth-agent
//!
//! With CI=true a missing environment fails the tests; elsewhere they skip
//! with a notice.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use berth_agent::health::{self, HealthStatus};
use berth_agent::{
    ocibuild, ContainerConfig, ContainerState, ContainerdConfig, ContainerdRuntime, LogDriver,
    LogStream, PullPolicy, Runtime, RuntimeError,
};
use berth_types::{
    ContainerDefinition, HealthCheck, KeyValuePair, MountPoint, NetworkMode, Volume,
};
use futures::StreamExt;

struct Env {
    socket: PathBuf,
    registry: String,
}

fn env() -> Option<Env> {
    let sock = std::env::var("BERTH_TEST_CONTAINERD_SOCK").ok();
    let reg = std::env::var("BERTH_TEST_REGISTRY").ok();
    match (sock, reg) {
        (Some(s), Some(r)) => Some(Env {
            socket: PathBuf::from(s),
            registry: r,
        }),
        _ => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!(
                    "CI=true but BERTH_TEST_CONTAINERD_SOCK / BERTH_TEST_REGISTRY are not set: \
                     run `eval \"$(scripts/test-env.sh)\"` and export them first"
                );
            }
            eprintln!(
                "NOTICE: skipping containerd test: set BERTH_TEST_CONTAINERD_SOCK and BERTH_TEST_REGISTRY \
                 (see scripts/test-env.sh)"
            );
            None
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Build berth-testapp statically, once per test binary. A target dir of its
/// own keeps the static RUSTFLAGS from invalidating the workspace's cache.
fn testapp_binary() -> Vec<u8> {
    static BIN: OnceLock<Vec<u8>> = OnceLock::new();
    BIN.get_or_init(|| {
        ocibuild::static_testapp_binary(&workspace_root()).expect("build static berth-testapp")
    })
    .clone()
}

fn test_image() -> &'static ocibuild::BuiltImage {
    static IMG: OnceLock<ocibuild::BuiltImage> = OnceLock::new();
    IMG.get_or_init(|| ocibuild::testapp_image(&testapp_binary()).expect("build image"))
}

static PUSHED: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();

/// The test image in the local registry; returns its reference.
async fn pushed_image(env: &Env) -> String {
    PUSHED
        .get_or_init(|| async {
            let img = test_image();
            let reference = format!("{}/berth-test/testapp:v1", env.registry);
            img.push_insecure(&reference)
                .await
                .expect("push test image");
            reference
        })
        .await
        .clone()
}

/// berth-logd is another package's binary, which Cargo does not build for
/// this package's tests: `cargo build --workspace --bins` (as tests/run.sh
/// does) puts it beside berth-agent.
fn log_driver() -> PathBuf {
    let path =
        berth_agent::containerd::default_log_driver(Path::new(env!("CARGO_BIN_EXE_berth-agent")));
    assert!(
        path.is_file(),
        "{} is missing: build it first with `cargo build -p berth-logd` (same profile and target dir)",
        path.display()
    );
    path
}

fn runtime_config(env: &Env, namespace: &str) -> ContainerdConfig {
    let mut cfg = ContainerdConfig::new(&env.socket, "/tmp/berth-test/agent-state");
    cfg.namespace = namespace.to_string();
    cfg.log_driver = LogDriver::Binary(log_driver());
    cfg.log_max_bytes = 64 * 1024;
    cfg
}

async fn runtime_in(env: &Env, namespace: &str) -> ContainerdRuntime {
    ContainerdRuntime::connect(runtime_config(env, namespace))
        .await
        .expect("connect to containerd")
}

async fn runtime(env: &Env) -> ContainerdRuntime {
    runtime_in(env, "berth-test").await
}

fn task_id() -> String {
    format!("t{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff)
}

fn config(image: &str, name: &str, command: &[&str]) -> ContainerConfig {
    let mut def = ContainerDefinition::new(name, image);
    def.command = command.iter().map(|s| s.to_string()).collect();
    ContainerConfig {
        task_id: task_id(),
        task_family: "test".into(),
        cluster: "test".into(),
        definition: def,
        network_mode: NetworkMode::Host,
        network_bindings: vec![],
        volumes: vec![],
        task_cpu: None,
        task_memory: None,
        pull_policy: PullPolicy::IfNotPresent,
    }
}

async fn logs_text(rt: &ContainerdRuntime, id: &str) -> String {
    let mut s = rt.logs(id, false).await.expect("logs");
    let mut out = String::new();
    while let Some(l) = s.next().await {
        let l = l.expect("log line");
        out.push_str(match l.stream {
            LogStream::Stdout => "out: ",
            LogStream::Stderr => "err: ",
        });
        out.push_str(&l.line);
        out.push('\n');
    }
    out
}

async fn run_to_exit(rt: &ContainerdRuntime, cfg: &ContainerConfig) -> (u32, String, bool) {
    let id = rt.create(cfg).await.expect("create");
    rt.start(&id).await.expect("start");
    let status = tokio::time::timeout(Duration::from_secs(60), rt.wait(&id))
        .await
        .expect("exit within 60s")
        .expect("wait");
    // The log driver may still be flushing the last lines.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let logs = logs_text(rt, &id).await;
    rt.remove(&id).await.expect("remove");
    (status.code, logs, status.oom_killed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_from_registry_run_to_completion_with_exit_code() {
    let Some(env) = env() else { return };
    let image = pushed_image(&env).await;
    let rt = runtime(&env).await;
    let info = rt
        .ensure_image(&image, PullPolicy::Always)
        .await
        .expect("pull");
    assert_eq!(info.manifest_digest, test_image().manifest_digest);
    assert!(
        rt.transfer_unsupported() || std::env::var("BERTH_TEST_EXPECT_TRANSFER").is_ok(),
        "containerd 1.6 has no Transfer: the pull must have fallen back"
    );
    // Through an index: this host's platform is picked out of it.
    let indexed = format!("{}/berth-test/testapp:indexed", env.registry);
    let index_digest = test_image()
        .push_index_insecure(&indexed, "linux", &berth_agent::host_arch())
        .await
        .expect("push index");
    let info = rt
        .ensure_image(&indexed, PullPolicy::Always)
        .await
        .expect("pull index");
    assert_eq!(info.digest, index_digest);
    assert_eq!(info.manifest_digest, test_image().manifest_digest);
    let (code, _, _) = run_to_exit(&rt, &config(&indexed, "idx", &["exit", "0"])).await;
    assert_eq!(code, 0);

    let (code, logs, oom) = run_to_exit(&rt, &config(&image, "exit", &["exit", "7"])).await;
    assert_eq!(code, 7, "{logs}");
    assert!(!oom);
    assert!(logs.contains("out: testapp: exiting with 7"), "{logs}");
    assert!(
        logs.contains("err: testapp: stderr line before exit 7"),
        "{logs}"
    );
}

/// The value of the series `name{..labels..}` whose labels include `label`
/// in the agent's `/metrics` text; 0 when there is none.
fn metric_value(text: &str, name: &str, label: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .next()
        .unwrap_or(0)
}

/// A pull counts the bytes of the blobs it fetches: after a pull into a
/// namespace that holds none of the image's blobs, the pull-bytes counter
/// has grown by at least the config's and the layer's sizes (other tests
/// pull at the same time, so only a lower bound holds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_counts_the_bytes_of_the_blobs_it_fetches() {
    let Some(env) = env() else { return };
    if std::env::var("BERTH_TEST_EXPECT_TRANSFER").is_ok() {
        eprintln!("NOTICE: skipping: containerd pulls through Transfer, out of the agent's sight");
        return;
    }
    let image = pushed_image(&env).await;
    let ns = "berth-pull-bytes";
    // Whatever an earlier run left in the namespace goes, blobs and all.
    let _ = std::process::Command::new("ctr")
        .arg("--address")
        .arg(&env.socket)
        .args(["-n", ns, "images", "rm", "--sync", &image])
        .output();
    let rt = runtime_in(&env, ns).await;
    let metrics = berth_agent::exporter::metrics();
    let series = "berth_agent_image_pull_bytes_total";
    let ok = "outcome=\"ok\"";
    let before = metric_value(&metrics.render(), series, ok);
    rt.ensure_image(&image, PullPolicy::Always)
        .await
        .expect("pull");
    let after = metric_value(&metrics.render(), series, ok);
    let blobs = (test_image().layer.len() + test_image().config.len()) as u64;
    assert!(
        after >= before + blobs,
        "{series} went from {before} to {after}; the image's blobs are {blobs} bytes"
    );
    let out = std::process::Command::new("ctr")
        .arg("--address")
        .arg(&env.socket)
        .args(["-n", ns, "images", "rm", "--sync", &image])
        .output()
        .expect("ctr images rm");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_command_entrypoint_workdir_user_and_volumes() {
    let Some(env) = env() else { return };
    let image = pushed_image(&env).await;
    let rt = runtime(&env).await;

    let mut cfg = config(&image, "env", &["env"]);
    cfg.definition.environment = vec![KeyValuePair {
        name: "FOO".into(),
        value: "bar baz".into(),
    }];
    cfg.definition.working_directory = Some("/work".into());
    cfg.definition.user = Some("app".into());
    let host_dir = tempfile::tempdir().expect("tempdir");
    cfg.volumes = vec![
        Volume {
            name: "host".into(),
            host_source_path: Some(host_dir.path().display().to_string()),
        },
        Volume {
            name: "scratch".into(),
            host_source_path: None,
        },
    ];
    cfg.definition.mount_points = vec![
        MountPoint {
            source_volume: "host".into(),
            container_path: "/data".into(),
            read_only: true,
        },
        MountPoint {
            source_volume: "scratch".into(),
            container_path: "/scratch".into(),
            read_only: false,
        },
    ];
    let (code, logs, _) = run_to_exit(&rt, &cfg).await;
    assert_eq!(code, 0, "{logs}");
    assert!(logs.contains("out: FOO=bar baz"), "{logs}");
    assert!(
        logs.contains("out: TESTAPP_IMAGE_ENV=from-image"),
        "image env merged: {logs}"
    );
    assert!(logs.contains("cwd=/work"), "{logs}");
    assert!(logs.contains("uid=1000"), "{logs}");
    assert!(logs.contains("args=[\"env\"]"), "{logs}");

    // An entrypoint from the task definition replaces the image's and its cmd.
    let mut cfg = config(&image, "ep", &["3"]);
    cfg.definition.entry_point = vec!["/berth-testapp".into(), "exit".into()];
    let (code, logs, _) = run_to_exit(&rt, &cfg).await;
    assert_eq!(code, 3, "{logs}");
    assert!(logs.contains("args=[\"exit\", \"3\"]"), "{logs}");
}

/// The number in "threads started K of N".
fn threads_started(logs: &str) -> usize {
    logs.lines()
        .find_map(|l| l.split("threads started ").nth(1))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|k| k.parse().ok())
        .unwrap_or_else(|| panic!("no thread count in {logs}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seccomp_refuses_what_capabilities_let_through() {
    let Some(env) = env() else { return };
    let image = pushed_image(&env).await;
    let rt = runtime(&env).await;
    let (code, logs, _) = run_to_exit(&rt, &config(&image, "seccomp", &["syscalls"])).await;
    assert_eq!(code, 0, "{logs}");
    assert!(logs.contains("syscall getppid: ok"), "{logs}");
    // keyctl and a user namespace need no capability: only the filter
    // stands between a container's root and them. EPERM is its answer.
    assert!(logs.contains("syscall keyctl: errno 1"), "{logs}");
    assert!(logs.contains("syscall unshare: errno 1"), "{logs}");
    assert!(logs.contains("syscall mount: errno 1"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pids_limit_stops_a_thread_bomb() {
    let Some(env) = env() else { return };
    let image = pushed_image(&env).await;
    let mut cfg = runtime_config(&env, "berth-test");
    cfg.pids_limit = 32;
    let rt = ContainerdRuntime::connect(cfg).await.expect("connect");
    let (code, logs, _) = run_to_exit(&rt, &config(&image, "pids", &["threads", "200"])).await;
    assert_eq!(code, 0, "{logs}");
    let started = threads_started(&logs);
    // The main thread and the SIGTERM watcher count too.
    assert!(
        (20..=30).contains(&started),
        "a limit of 32 stops the threads near 30: {logs}"
    );
    assert!(logs.contains("Resource temporarily unavailable"), "{logs}");

    // The default limit lets an ordinary multithreaded program be.
    let rt = runtime(&env).await;
    let (code, logs, _) = run_to_exit(&rt, &config(&image, "pids", &["threads", "200"])).await;
    assert_eq!(code, 0, "{logs}");
    assert_eq!(threads_started(&logs), 200, "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_paths_outside_the_policy_are_refused() {
    let Some(env) = env() else { return };
    let image = pushed_image(&env).await;
    let rt = runtime(&env).await;
    let refused = |source: &str| {
        let mut cfg = config(&image, "hostpath", &["exit", "0"]);
        cfg.volumes = vec![Volume {
            name: "host".into(),
            host_source_path: Some(source.to_string()),
        }];
        cfg.definition.mount_points = vec![MountPoint {
            source_volume: "host".into(),
            container_path: "/host".into(),
            read_only: false,
        }];
        cfg
    };
    let socket = env.socket.display().to_string();
    // The agent's binary (here the test binary that runs the runtime).
    let exe = std::env::current_exe().expect("exe").display().to_string();
    for (source, why) in [
        (exe.as_str(), "which the agent protects"),
        ("/", "host's root directory"),
        ("/proc", "inside /proc"),
        ("/sys/fs/cgroup", "inside /sys"),
        (socket.as_str(), "which the agent protects"),
        ("/tmp/berth-test/agent-state", "which the agent protects"),
        ("/tmp", "contains"),
    ] {
        let cfg = refused(source);
        match rt.create(&cfg).await {
            Err(e @ RuntimeError::HostPathRefused { .. }) => {
                let text = e.to_string();
                assert!(
                    text.contains(&format!("host.sourcePath {source:?} is refused")),
                    "{text}"
                );
                assert!(text.contains(why), "{source}: {text}");
            }
            other => panic!("{source} must be refused, got {other:?}"),
        }
        let left: Vec<_> = rt
            .list()
            .await
            .expect("list")
            .into_iter()
            .filter(|c| c.task_id == cfg.task_id)
            .collect();
        assert!(left.is_empty(), "nothing half-created: {left:?}");
    }

    // With --allowed-host-paths, only paths inside the list.
    let allowed = tempfile::tempdir().expect("tempdir");
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let mut cfg = runtime_config(&env, "berth-test");
    cfg.host_paths
        .allow_only(&[allowed.path().to_path_buf()])
        .expect("allow");
    let rt = ContainerdRuntime::connect(cfg).await.expect("connect");
    let err = rt
        .create(&refused(&elsewhere.path().display().to_string()))
        .await
        .expect_err("outside the allowed paths");
    assert!(
        err.to_string()
            .contains("outside the agent's --allowed-host-paths"),
        "{err}"
    );
    let (code, logs, _) = run_to_exit(&rt, &refused(&allowed.path().display().to_string())).await;
    assert_eq!(code, 0, "{logs}");
}

/// The test image with its /etc/passwd replaced by a symlink to `target`.
async fn image_with_passwd_link(env: &Env, tag: &str, target: &str) -> String {
    let img = ocibuild::build(&ocibuild::ImageSpec {
        entries: vec![
            ocibuild::Entry::Dir {
                path: "etc".into(),
                mode: 0o755,
            },
            ocibuild::Entry::Symlink {
                path: "etc/passwd".into(),
                target: target.into(),
            },
            ocibuild::Entry::File {
                path: "berth-testapp".into(),
                mode: 0o755,
                data: testapp_binary(),
            },
        ],
        env: vec![],
        entrypoint: vec!["/berth-testapp".into()],
        cmd: vec!["exit".into(), "0".into()],
        working_dir: "/".into(),
        user: String::new(),
        architecture: berth_agent::host_arch(),
        os: "linux".into(),
    })
    .expect("build image");
    let reference = format!("{}/berth-test/passwd-link:{tag}", env.registry);
    img.push_insecure(&reference).await.expect("push");
    reference
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_lookup_never_follows_image_symlinks_on_the_host() {
    let Some(env) = env() else { return };
    let rt = runtime(&env).await;

    // etc/passwd -> /dev/zero: a host read would never end.
    let image = image_with_passwd_link(&env, "dev-zero", "/dev/zero").await;
    let mut cfg = config(&image, "zero", &[]);
    cfg.definition.user = Some("app".into());
    let err = tokio::time::timeout(Duration::from_secs(30), rt.create(&cfg))
        .await
        .expect("the lookup ends")
        .expect_err("no app user in the image");
    assert!(
        err.to_string()
            .contains("user \"app\" is not in the image's /etc/passwd"),
        "{err}"
    );

    // etc/passwd -> a host file that does name the user: the image has no
    // such file, so the user is unknown, not the host file's uid.
    let dir = Path::new("/tmp/berth-test");
    std::fs::create_dir_all(dir).expect("mkdir");
    let host_file = dir.join(format!("passwd-{}", task_id()));
    std::fs::write(&host_file, "evil:x:4242:4242::/:/berth-testapp\n").expect("write");
    let image = image_with_passwd_link(&env, "host-file", &host_file.display().to_string()).await;
    let mut cfg = config(&image, "evil", &[]);
    cfg.definition.user = Some("evil".into());
    let result = rt.create(&cfg).await;
    let _ = std::fs::remove_file(&host_file);
    let err = result.expect_err("the host's file is not the image's");
    assert!(
        err.to_string()
            .contains("user \"evil\" is not in the image's /etc/passwd"),
        "{err}"
    );
}

async fn wait_for_log(rt: &ContainerdRuntime, id: &str, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let logs = logs_text(rt, id).await;
        if logs.contains(needle) {
            return;
        }
        assert!(Instant::now() < deadline, "no {needle:?} in: {logs}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_limits_hold_for_all_containers_together() {
    let Some(env) = env() else { return };
    let image = pushed_image(&env).await;
    let rt = runtime(&env).await;
    let cg = rt.cgroups().expect("this host has cgroups").clone();
    let task = task_id();
    let container = |name: &str| {
        let mut c = config(&image, name, &["alloc", "40"]);
        c.task_id = task.clone();
        c.task_memory = Some(64);
        c.task_cpu = Some(512);
        c
    };
    let a = rt.create(&container("a")).await.expect("create a");
    let read = |p: Option<PathBuf>| {
        let p = p.expect("file");
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    };
    assert_eq!(
        read(cg.memory_limit_file("berth-test", &task)).trim(),
        (64u64 << 20).to_string()
    );
    assert!(read(cg.cpu_quota_file("berth-test", &task)).starts_with("50000"));
    let pid = rt.start(&a).await.expect("start a");
    let own = read(Some(PathBuf::from(format!("/proc/{pid}/cgroup"))));
    assert!(
        own.contains(&format!(
            "/berth-test/{}/{a}",
            berth_agent::taskcgroup::task_dir(&task)
        )),
        "the container's cgroup is under the task's: {own}"
    );
    wait_for_log(&rt, &a, "holding 40 MiB").await;

    // 40 MiB each is below the task's 64 MiB; together they are not.
    let b = rt.create(&container("b")).await.expect("create b");
    rt.start(&b).await.expect("start b");
    let (first, other, status) = tokio::time::timeout(Duration::from_secs(60), async {
        tokio::select! {
            s = rt.wait(&a) => (a.clone(), b.clone(), s),
            s = rt.wait(&b) => (b.clone(), a.clone(), s),
        }
    })
    .await
    .expect("one container is killed: the task's limit holds for both together");
    let status = status.expect("wait");
    assert_eq!(status.code, 137, "{}", logs_text(&rt, &first).await);
    assert!(status.oom_killed, "reported as an OOM kill");
    rt.stop(&other, Duration::from_secs(5)).await.expect("stop");
    rt.remove(&first).await.expect("remove");
    for p in cg.task_paths("berth-test", &task) {
        assert!(
            p.exists(),
            "{} stays while a container is left",
            p.display()
        );
    }
    rt.remove(&other).await.expect("remove");
    for p in cg.task_paths("berth-test", &task) {
        assert!(
            !p.exists(),
            "{} removed with the last container",
            p.display()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_cgroups_left_behind_are_removed_at_start() {
    let Some(env) = env() else { return };
    let image = pushed_image(&env).await;
    let rt = runtime(&env).await;
    let cg = rt.cgroups().expect("this host has cgroups").clone();
    // An agent that stopped between removing a task's last container and
    // its cgroup left this.
    let gone = task_id();
    cg.ensure(
        "berth-test",
        &gone,
        berth_agent::taskcgroup::TaskLimits {
            cpu_units: Some(256),
            memory_mib: Some(64),
        },
    )
    .expect("make a task cgroup");
    assert!(cg
        .task_paths("berth-test", &gone)
        .iter()
        .any(|p| p.exists()));
    // A task with a container (not even started) keeps its cgroup.
    let mut cfg = config(&image, "kept", &["sleep"]);
    cfg.task_memory = Some(64);
    let kept = rt.create(&cfg).await.expect("create");

    let _restarted = runtime(&env).await;
    for p in cg.task_paths("berth-test", &gone) {
        assert!(!p.exists(), "{} removed at start", p.display());
    }
    let limit = cg
        .memory_limit_file("berth-test", &cfg.task_id)
        .expect("file");
    assert!(limit.exists(), "a live task's cgroup stays");
    rt.remove(&kept).await.expect("remove");
    for p in cg.task_paths("berth-test", &cfg.task_id) {
        assert!(!p.exists(), "{} removed with the container", p.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_limit_is_enforced_and_oom_reported() {
    let Some(env) = env() else { return };
    let image = pushed_image(&env).await;
    let rt = runtime(&env).await;
    let mut cfg = config(&image, "oom", &["alloc", "512"]);
    cfg.definition.memory = Some(32);
    cfg.definition.memory_reservation = Some(16);
    let (code, logs, oom) = run_to_exit(&rt, &cfg).await;
    assert_eq!(code, 137, "{logs}");
    assert!(oom, "OOM kill must be reported: {logs}");
    assert!(!logs.contains("holding 512 MiB"), "{logs}");

    // A runtime instance that missed the OOM event (as after an agent
    // restart) still tells an OOM kill from the cgroup's counter.
    cfg.task_id = task_id();
    let id = rt.create(&cfg).await.expect("create");
    rt.start(&id).await.expect("start");
    rt.wait(&id).await.expect("wait");
    let fresh = runtime(&env).await;
    let st = fresh.wait(&id).await.expect("wait from a new instance");
    assert_eq!(st.code, 137);
    assert!(st.oom_killed, "OOM seen by a runtime that missed the event");
    fresh.remove(&id).await.expect("remove");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_sends_sigterm_then_sigkill_after_stop_timeout() {
    let Some(env) = env() else { return };
    let image = pushed_image(&env).await;
    let rt = runtime(&env).await;

    // A well-behaved container stops on SIGTERM at once.
    let id = rt
        .create(&config(&image, "polite", &["sleep"]))
        .await
        .expect("create");
    rt.start(&id).await.expect("start");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = Instant::now();
    let st = rt.stop(&id, Duration::from_secs(10)).await.expect("stop");
    assert_eq!(st.code, 0);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    rt.remove(&id).await.expect("remove");

    // One that ignores SIGTERM is killed after the timeout.
    let mut cfg = config(&image, "stubborn", &["sleep"]);
    cfg.definition.environment = vec![KeyValuePair {
        name: "TESTAPP_IGNORE_SIGTERM".into(),
        value: "1".into(),
    }];
    cfg.definition.stop_timeout = Some(2);
    let id = rt.create(&cfg).await.expect("create");
    rt.start(&id).await.expect("start");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = Instant::now();
    let timeout = Duration::from_secs(u64::from(cfg.definition.stop_timeout.unwrap_or(30)));
    let st = rt.stop(&id, timeout).await.expect("stop");
    let took = t.elapsed();
    assert_eq!(st.code, 137);
    assert!(!st.oom_killed);
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(6),
        "{took:?}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let logs = logs_text(&rt, &id).await;
    assert!(logs.contains("ignoring SIGTERM"), "{logs}");
    rt.remove(&id).await.expect("remove");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_captured_and_followed() {
    let Some(env) = env() else { return };
    let image = pushed_image(&env).await;
    let rt = runtime(&env).await;
    let id = rt
        .create(&config(&image, "ticker", &["ticker", "50"]))
        .await
        .expect("create");
    rt.start(&id).await.expect("start");
    let mut follow = rt.logs(&id, true).await.expect("logs");
    let mut seen = Vec::new();
    while seen.len() < 10 {
        let line = tokio::time::timeout(Duration::from_secs(10), follow.next())
            .await
            .expect("a line within 10s")
            .expect("stream open")
            .expect("line");
        if line.line.starts_with("tick") {
            seen.push(line.line);
        }
    }
    assert_eq!(seen[0], "tick 0");
    assert_eq!(seen[9], "tick 9");
    rt.stop(&id, Duration::from_secs(5)).await.expect("stop");
    // The follower ends once the container is gone and the file drained.
    let rest = tokio::time::timeout(Duration::from_secs(10), follow.collect::<Vec<_>>())
        .await
        .expect("follow ends after exit");
    assert!(rest.iter().all(|l| l.is_ok()));
    rt.remove(&id).await.expect("remove");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_turn_healthy_and_unhealthy_and_stats_work() {
    let Some(env) = env() else { return };
    let image = pushed_image(&env).await;
    let rt = Arc::new(runtime(&env).await);
    let port = 20_000 + (rand::random::<u16>() % 20_000);
    let port_s = port.to_string();
    let mut cfg = config(&image, "web", &["serve", &port_s]);
    let check = HealthCheck {
        command: vec![
            "CMD".into(),
            "/berth-testapp".into(),
            "check".into(),
            port_s.clone(),
        ],
        interval: 1,
        timeout: 2,
        retries: 2,
        start_period: 0,
    };
    cfg.definition.health_check = Some(check.clone());
    cfg.definition.memory = Some(128);
    cfg.definition.cpu = 256;
    cfg.definition.readonly_root_filesystem = true;
    cfg.task_cpu = Some(512);
    let id = rt.create(&cfg).await.expect("create");
    rt.start(&id).await.expect("start");
    let mut rx = health::monitor(rt.clone(), id.clone(), &check).expect("monitor");
    tokio::time::timeout(
        Duration::from_secs(20),
        rx.wait_for(|s| *s == HealthStatus::Healthy),
    )
    .await
    .expect("healthy within 20s")
    .expect("monitor alive");

    let out = rt
        .exec(
            &id,
            &["/berth-testapp".into(), "check".into(), port_s.clone()],
            Duration::from_secs(5),
        )
        .await
        .expect("exec");
    assert_eq!(out.exit_code, 0);
    assert!(String::from_utf8_lossy(&out.output).contains("healthy"));

    let stats = rt.stats(&id).await.expect("stats");
    assert!(stats.memory_usage_bytes > 0, "{stats:?}");
    assert!(stats.cpu_usage_ns > 0, "{stats:?}");
    assert!(stats.cgroup_version == 1 || stats.cgroup_version == 2);
    assert_eq!(stats.memory_limit_bytes, 128 << 20, "{stats:?}");

    let failing = HealthCheck {
        command: vec!["CMD".into(), "/berth-testapp".into(), "fail".into()],
        ..check
    };
    let mut rx2 = health::monitor(rt.clone(), id.clone(), &failing).expect("monitor");
    tokio::time::timeout(
        Duration::from_secs(20),
        rx2.wait_for(|s| *s == HealthStatus::Unhealthy),
    )
    .await
    .expect("unhealthy within 20s")
    .expect("monitor alive");
    drop(rx);
    drop(rx2);
    rt.stop(&id, Duration::from_secs(5)).await.expect("stop");
    rt.remove(&id).await.expect("remove");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_runtime_instance_reconciles_running_and_exited_containers() {
    let Some(env) = env() else { return };
    let image = pushed_image(&env).await;
    let ns = "berth-reconcile";
    let (running, exited, cfg_r);
    {
        let rt = runtime_in(&env, ns).await;
        cfg_r = config(&image, "long", &["ticker", "100"]);
        running = rt.create(&cfg_r).await.expect("create");
        rt.start(&running).await.expect("start");
        let mut cfg = config(&image, "short", &["serve", "1"]);
        cfg.definition.command = vec!["exit".into(), "5".into()];
        cfg.task_id = cfg_r.task_id.clone();
        exited = rt.create(&cfg).await.expect("create");
        // Started and then forgotten: the agent "goes away".
        rt.start(&exited).await.expect("start");
    }
    let log = PathBuf::from("/tmp/berth-test/agent-state/containers")
        .join(&running)
        .join("container.log");
    let size_before = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let size_after = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
    assert!(
        size_after > size_before,
        "logs keep flowing with no runtime instance"
    );

    let rt = runtime_in(&env, ns).await;
    let found: HashMap<String, ContainerState> = rt
        .list()
        .await
        .expect("list")
        .into_iter()
        .filter(|c| c.task_id == cfg_r.task_id)
        .map(|c| (c.container_name.clone(), c.state))
        .collect();
    assert!(
        matches!(found.get("long"), Some(ContainerState::Running { .. })),
        "{found:?}"
    );
    match found.get("short") {
        Some(ContainerState::Stopped(st)) => assert_eq!(st.code, 5),
        other => panic!("short should have exited with 5: {other:?}"),
    }
    // Re-attach: a wait on the running one sees its stop.
    let rt2 = rt.clone();
    let r2 = running.clone();
    let waiter = tokio::spawn(async move { rt2.wait(&r2).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    rt.stop(&running, Duration::from_secs(5))
        .await
        .expect("stop");
    let st = waiter.await.expect("join").expect("wait");
    assert_eq!(st.code, 0);
    assert_eq!(rt.wait(&exited).await.expect("collect exit").code, 5);
    rt.remove(&running).await.expect("remove");
    rt.remove(&exited).await.expect("remove");
}

fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
                let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
                if cmd.contains(needle) {
                    out.push(format!("{}: {cmd}", e.file_name().to_string_lossy()));
                }
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_containers_leave_no_leaks() {
    let Some(env) = env() else { return };
    let image = pushed_image(&env).await;
    let ns = "berth-leak";
    let rt = runtime_in(&env, ns).await;
    // A previous, failed run may have left containers here; the leak checks
    // below are namespace-wide, so start clean.
    for c in rt.list().await.expect("list") {
        rt.remove(&c.id).await.expect("clean up an earlier run");
    }
    rt.ensure_image(&image, PullPolicy::IfNotPresent)
        .await
        .expect("pull");
    let task = task_id();
    let creates = (0..20).map(|i| {
        let rt = rt.clone();
        let mut cfg = config(&image, &format!("c{i}"), &["sleep"]);
        cfg.task_id = task.clone();
        cfg.volumes = vec![Volume {
            name: "scratch".into(),
            host_source_path: None,
        }];
        cfg.definition.mount_points = vec![MountPoint {
            source_volume: "scratch".into(),
            container_path: "/scratch".into(),
            read_only: false,
        }];
        async move {
            let id = rt.create(&cfg).await?;
            rt.start(&id).await?;
            Ok::<_, RuntimeError>(id)
        }
    });
    let ids: Vec<String> = futures::future::join_all(creates)
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .expect("20 containers start");
    let listed = rt.list().await.expect("list");
    assert_eq!(
        listed
            .iter()
            .filter(|c| c.task_id == task && matches!(c.state, ContainerState::Running { .. }))
            .count(),
        20
    );

    let removes = ids.iter().map(|id| {
        let rt = rt.clone();
        let id = id.clone();
        async move {
            rt.stop(&id, Duration::from_secs(5)).await?;
            rt.remove(&id).await
        }
    });
    for r in futures::future::join_all(removes).await {
        r.expect("stop and remove");
    }

    use containerd_client::services::v1::snapshots::ListSnapshotsRequest;
    use containerd_client::services::v1::{ListContainersRequest, ListRequest, ListTasksRequest};
    let c = rt.client();
    let containers = c
        .containers()
        .list(rt.request(ListContainersRequest { filters: vec![] }))
        .await
        .expect("list containers")
        .into_inner()
        .containers;
    assert!(
        containers.is_empty(),
        "containers left: {:?}",
        containers.iter().map(|c| &c.id).collect::<Vec<_>>()
    );
    let tasks = c
        .tasks()
        .list(rt.request(ListTasksRequest {
            filter: String::new(),
        }))
        .await
        .expect("list tasks")
        .into_inner()
        .tasks;
    assert!(tasks.is_empty(), "tasks left: {tasks:?}");
    let mut snaps = c
        .snapshots()
        .list(rt.request(ListSnapshotsRequest {
            snapshotter: "overlayfs".into(),
            filters: vec![],
        }))
        .await
        .expect("list snapshots")
        .into_inner();
    let mut leftover = Vec::new();
    while let Some(Ok(batch)) = snaps.next().await {
        for s in batch.info {
            // Committed image layers stay (they are the image); any active
            // snapshot would be a container's or a failed unpack's.
            if s.kind != containerd_client::services::v1::snapshots::Kind::Committed as i32 {
                leftover.push(s.name);
            }
        }
    }
    assert!(leftover.is_empty(), "active snapshots left: {leftover:?}");
    let leases = c
        .leases()
        .list(rt.request(ListRequest { filters: vec![] }))
        .await
        .expect("list leases")
        .into_inner()
        .leases;
    assert!(
        leases.is_empty(),
        "leases left: {:?}",
        leases.iter().map(|l| &l.id).collect::<Vec<_>>()
    );
    // Shims exit shortly after their task is deleted.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let procs: Vec<String> = ids
            .iter()
            .flat_map(|id| processes_mentioning(&format!("-id {id}")))
            .collect();
        let drivers: Vec<String> = ids
            .iter()
            .flat_map(|id| processes_mentioning(&format!("containers/{id}/")))
            .collect();
        if procs.is_empty() && drivers.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "processes left: {procs:?} {drivers:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        !Path::new("/tmp/berth-test/agent-state/tasks")
            .join(&task)
            .exists(),
        "scratch volume removed"
    );
    for id in &ids {
        assert!(!Path::new("/tmp/berth-test/agent-state/containers")
            .join(id)
            .exists());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_oci_layout_and_docker_archive_then_run() {
    let Some(env) = env() else { return };
    let rt = runtime_in(&env, "berth-import").await;
    let img = test_image();
    let dir = tempfile::tempdir().expect("tempdir");
    let oci = dir.path().join("oci.tar");
    img.write_oci_layout("berth.local/import/testapp:oci", &oci)
        .expect("write oci layout");
    let docker = dir.path().join("docker.tar");
    img.write_docker_archive("berth.local/import/testapp:docker", &docker)
        .expect("write docker archive");

    // Through the CLI, as an operator on an air-gapped host would.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_berth-agent"))
        .args([
            "--namespace",
            "berth-import",
            "--state-dir",
            "/tmp/berth-test/agent-state",
            "--containerd-socket",
        ])
        .arg(&env.socket)
        .args(["image", "import"])
        .arg(&oci)
        .output()
        .expect("run berth-agent image import");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("berth.local/import/testapp:oci"));

    let imported = rt.import(&docker).await.expect("import docker archive");
    assert_eq!(imported.len(), 1);
    assert_eq!(imported[0].name, "berth.local/import/testapp:docker");

    for name in [
        "berth.local/import/testapp:oci",
        "berth.local/import/testapp:docker",
    ] {
        // berth.local does not exist: this only works from the local store.
        let (code, logs, _) = run_to_exit(&rt, &config(name, "imp", &["exit", "4"])).await;
        assert_eq!(code, 4, "{name}: {logs}");
    }
}

/// A registry that serves a manifest whose config blob has the wrong bytes.
async fn lying_registry() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let config_real =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#
            .to_vec();
    let config_digest = berth_agent::containerd::sha256_digest(&config_real);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_real.len()},
        "layers": [],
    }))
    .expect("json");
    let manifest_digest = berth_agent::containerd::sha256_digest(&manifest);
    let served: Arc<Mutex<()>> = Arc::new(Mutex::new(()));
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let manifest = manifest.clone();
            let manifest_digest = manifest_digest.clone();
            let _g = served.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut req = Vec::new();
                loop {
                    let Ok(n) = s.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    req.extend_from_slice(&buf[..n]);
                    if req.windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                let text = String::from_utf8_lossy(&req);
                let path = text.split_whitespace().nth(1).unwrap_or("/").to_string();
                let (ctype, body, digest): (&str, Vec<u8>, String) = if path.contains("/manifests/")
                {
                    (
                        "application/vnd.oci.image.manifest.v1+json",
                        manifest,
                        manifest_digest,
                    )
                } else if path.contains("/blobs/") {
                    // Same length, different bytes.
                    let mut b = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#.to_vec();
                    b[2] = b'A';
                    ("application/octet-stream", b, String::new())
                } else {
                    ("application/json", b"{}".to_vec(), String::new())
                };
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\n{}connection: close\r\n\r\n",
                    body.len(),
                    if digest.is_empty() { String::new() } else { format!("docker-content-digest: {digest}\r\n") }
                );
                let _ = s.write_all(head.as_bytes()).await;
                if !text.starts_with("HEAD") {
                    let _ = s.write_all(&body).await;
                }
            });
        }
    });
    addr.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_deleted_behind_the_cache_is_pulled_again() {
    let Some(env) = env() else { return };
    let image = pushed_image(&env).await;
    let ns = "berth-stale";
    let rt = runtime_in(&env, ns).await;
    let (code, _, _) = run_to_exit(&rt, &config(&image, "first", &["exit", "1"])).await;
    assert_eq!(code, 1);
    let out = std::process::Command::new("ctr")
        .arg("--address")
        .arg(&env.socket)
        .args(["-n", ns, "images", "rm", "--sync", &image])
        .output()
        .expect("ctr images rm");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, _, _) = run_to_exit(&rt, &config(&image, "second", &["exit", "2"])).await;
    assert_eq!(code, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_registry() {
    let Some(env) = env() else { return };
    let vars = [
        "BERTH_TEST_AUTH_REGISTRY",
        "BERTH_TEST_AUTH_USER",
        "BERTH_TEST_AUTH_PASSWORD",
    ];
    let vals: Vec<String> = vars.iter().filter_map(|v| std::env::var(v).ok()).collect();
    if vals.len() != vars.len() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but {vars:?} are not set"
        );
        eprintln!("NOTICE: skipping the basic-auth test: {vars:?} not set");
        return;
    }
    let (registry, user, pass) = (&vals[0], &vals[1], &vals[2]);
    let reference = format!("{registry}/berth-test/private:v1");
    test_image()
        .push_insecure_as(&reference, Some((user, pass)))
        .await
        .expect("push with credentials");

    let anonymous = runtime_in(&env, "berth-auth").await;
    let e = anonymous
        .ensure_image(&reference, PullPolicy::Always)
        .await
        .expect_err("no credentials");
    assert!(matches!(e, RuntimeError::RegistryAuth { .. }), "{e:?}");

    let mut cfg = ContainerdConfig::new(&env.socket, "/tmp/berth-test/agent-state");
    cfg.namespace = "berth-auth".into();
    cfg.log_driver = LogDriver::Binary(log_driver());
    cfg.registry
        .credentials
        .insert(registry.clone(), (user.clone(), pass.clone()));
    let rt = ContainerdRuntime::connect(cfg).await.expect("connect");
    let info = rt
        .ensure_image(&reference, PullPolicy::Always)
        .await
        .expect("pull with basic auth");
    assert_eq!(info.manifest_digest, test_image().manifest_digest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_clear() {
    let Some(env) = env() else { return };
    let image = pushed_image(&env).await;
    let rt = runtime(&env).await;

    let e = rt
        .ensure_image(
            &format!("{}/berth-test/testapp:no-such-tag", env.registry),
            PullPolicy::Always,
        )
        .await
        .expect_err("unknown tag");
    assert!(matches!(e, RuntimeError::ImageNotFound { .. }), "{e:?}");
    assert!(e.to_string().contains("no-such-tag"), "{e}");

    let e = rt
        .ensure_image(
            &format!("{}/berth-test/no-such-image:v1", env.registry),
            PullPolicy::Always,
        )
        .await
        .expect_err("unknown image");
    assert!(matches!(e, RuntimeError::ImageNotFound { .. }), "{e:?}");

    let e = rt
        .ensure_image("127.0.0.1:1/berth-test/testapp:v1", PullPolicy::Always)
        .await
        .expect_err("unreachable");
    assert!(
        matches!(e, RuntimeError::RegistryUnreachable { .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("127.0.0.1:1"), "{e}");

    let liar = lying_registry().await;
    let e = rt
        .ensure_image(&format!("{liar}/bad/image:latest"), PullPolicy::Always)
        .await
        .expect_err("bad digest");
    assert!(matches!(e, RuntimeError::DigestMismatch { .. }), "{e:?}");

    let other_platform = format!("{}/berth-test/testapp:s390x-only", env.registry);
    test_image()
        .push_index_insecure(&other_platform, "linux", "s390x")
        .await
        .expect("push index");
    let e = rt
        .ensure_image(&other_platform, PullPolicy::Always)
        .await
        .expect_err("platform");
    assert!(matches!(e, RuntimeError::PlatformMismatch { .. }), "{e:?}");
    assert!(e.to_string().contains("linux/s390x"), "{e}");

    let e = rt
        .ensure_image("Not A Reference!", PullPolicy::Always)
        .await
        .expect_err("bad reference");
    assert!(matches!(e, RuntimeError::InvalidReference { .. }), "{e:?}");

    let mut cfg = ContainerdConfig::new(
        "/tmp/berth-test/no-such-containerd.sock",
        "/tmp/berth-test/agent-state",
    );
    cfg.connect_timeout = Duration::from_secs(2);
    let e = ContainerdRuntime::connect(cfg)
        .await
        .err()
        .expect("unreachable containerd");
    let text = e.to_string();
    assert!(
        matches!(e, RuntimeError::ContainerdUnreachable { .. }),
        "{e:?}"
    );
    assert!(
        text.contains("/tmp/berth-test/no-such-containerd.sock")
            && text.contains("containerd --address"),
        "{text}"
    );

    // A container whose definition cannot run gets a config error, and
    // nothing is left behind.
    let mut cfg = config(&image, "bad", &[]);
    cfg.definition.working_directory = Some("relative".into());
    let e = rt.create(&cfg).await.expect_err("relative workdir");
    assert!(matches!(e, RuntimeError::InvalidConfig { .. }), "{e:?}");
}

/// The task runner on a real containerd: a task starts in dependency order,
/// survives its agent being killed (its container keeps running and is
/// re-attached, not restarted), then stops and is removed on the server's
/// word.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_keeps_tasks_running_across_an_agent_restart() {
    use berth_agent::runner::{Runner, RunnerConfig, RunnerHandle};
    use berth_agent::store::Store;
    use berth_proto::pb;
    use berth_types::TaskStatus;
    use std::sync::Arc;

    let Some(env) = env() else { return };
    let image = pushed_image(&env).await;
    let ns = "berth-runner";
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("tasks")).expect("store");
    let task = task_id();
    let container = |name: &str, command: &[&str], essential: bool| pb::ContainerDefinition {
        name: name.into(),
        image: image.clone(),
        command: command.iter().map(|s| s.to_string()).collect(),
        essential,
        stop_timeout: Some(5),
        ..Default::default()
    };
    let mut web = container("web", &["sleep"], true);
    web.depends_on.push(pb::ContainerDependency {
        container_name: "init".into(),
        condition: "SUCCESS".into(),
    });
    let mut assignment = pb::Assignment {
        task_id: task.clone(),
        desired_status: "RUNNING".into(),
        task_definition: Some(pb::TaskDefinition {
            family: "svc".into(),
            revision: 1,
            status: "ACTIVE".into(),
            spec: Some(pb::TaskDefinitionSpec {
                family: "svc".into(),
                container_definitions: vec![container("init", &["exit", "0"], false), web],
                network_mode: "host".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        last_status: "PENDING".into(),
        cluster: "default".into(),
        ..Default::default()
    };
    let set = |sequence, assignment: &pb::Assignment| pb::AssignmentSet {
        sequence,
        complete: false,
        assignments: vec![assignment.clone()],
    };
    async fn until<R: berth_agent::Runtime>(
        handle: &RunnerHandle<R>,
        task: &str,
        what: &str,
        pred: impl Fn(Option<TaskStatus>) -> bool,
    ) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !pred(handle.board().status(task)) {
            assert!(
                Instant::now() < deadline,
                "{task}: never {what}: {:?}",
                handle.board().view(task)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let web_pid = |listed: Vec<berth_agent::OwnedContainer>| {
        listed
            .into_iter()
            .find(|c| c.task_id == task && c.container_name == "web")
            .map(|c| c.state)
    };

    // The first agent starts the task.
    let rt = Arc::new(runtime_in(&env, ns).await);
    let (runner, handle) =
        Runner::new(rt.clone(), store.clone(), RunnerConfig::default()).expect("runner");
    let first = tokio::spawn(runner.run());
    handle.apply(set(1, &assignment)).await.expect("apply");
    until(&handle, &task, "RUNNING", |s| {
        s == Some(TaskStatus::Running)
    })
    .await;
    let before = web_pid(rt.list().await.expect("list"));
    assert!(
        matches!(before, Some(ContainerState::Running { .. })),
        "{before:?}"
    );

    // It dies without a word (as kill -9 would leave it).
    first.abort();
    let _ = first.await;
    drop(handle);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        web_pid(rt.list().await.expect("list")),
        before,
        "still running"
    );

    // The next agent takes over what runs.
    let rt = Arc::new(runtime_in(&env, ns).await);
    let (runner, handle) =
        Runner::new(rt.clone(), store.clone(), RunnerConfig::default()).expect("runner");
    assert_eq!(handle.board().status(&task), Some(TaskStatus::Running));
    let second = tokio::spawn(runner.run());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        web_pid(rt.list().await.expect("list")),
        before,
        "re-attached, not restarted"
    );
    assert_eq!(handle.board().status(&task), Some(TaskStatus::Running));

    assignment.desired_status = "STOPPED".into();
    handle.apply(set(2, &assignment)).await.expect("apply");
    until(&handle, &task, "STOPPED", |s| {
        s == Some(TaskStatus::Stopped)
    })
    .await;
    let report = handle.board().view(&task).expect("view").report;
    let codes: Vec<(String, Option<i32>)> = report
        .containers
        .iter()
        .map(|c| (c.name.clone(), c.exit_code))
        .collect();
    // testapp exits 0 on SIGTERM.
    assert_eq!(
        codes,
        [("init".to_string(), Some(0)), ("web".to_string(), Some(0))]
    );

    assignment.last_status = "STOPPED".into();
    handle.apply(set(3, &assignment)).await.expect("apply");
    until(&handle, &task, "forgotten", |s| s.is_none()).await;
    assert!(rt
        .list()
        .await
        .expect("list")
        .iter()
        .all(|c| c.task_id != task));
    assert!(store.load().expect("load").tasks.is_empty());
    second.abort();
}

/// `Runtime::restart`: a new process in the same container, after the
/// last one exited; refused while one runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_runs_a_new_process_in_the_same_container() {
    let Some(env) = env() else { return };
    let image = pushed_image(&env).await;
    let rt = runtime(&env).await;
    let wait = |id: String| {
        let rt = rt.clone();
        async move {
            tokio::time::timeout(Duration::from_secs(60), rt.wait(&id))
                .await
                .expect("exit within 60s")
                .expect("wait")
        }
    };

    let id = rt
        .create(&config(&image, "job", &["exit", "3"]))
        .await
        .expect("create");
    let first = rt.start(&id).await.expect("start");
    assert_eq!(wait(id.clone()).await.code, 3);
    let second = rt.restart(&id).await.expect("restart");
    assert_ne!(second, first, "a new process");
    assert_eq!(wait(id.clone()).await.code, 3);
    // The log driver may still be flushing the last lines.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let logs = logs_text(&rt, &id).await;
    assert_eq!(
        logs.matches("out: testapp: exiting with 3").count(),
        2,
        "both runs in one log: {logs}"
    );
    rt.remove(&id).await.expect("remove");

    let id = rt
        .create(&config(&image, "svc", &["sleep"]))
        .await
        .expect("create");
    rt.start(&id).await.expect("start");
    let e = rt.restart(&id).await.expect_err("still running");
    assert!(matches!(e, RuntimeError::StillRunning { .. }), "{e:?}");
    rt.remove(&id).await.expect("remove");
    let e = rt.restart(&id).await.expect_err("removed");
    assert!(matches!(e, RuntimeError::ContainerNotFound { .. }), "{e:?}");
}

/// A GET over plain HTTP/1.0 to the test app on this host; the whole
/// response as text.
async fn http_get(port: u16, path: &str) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    conn.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await?;
    let mut out = Vec::new();
    conn.read_to_end(&mut out).await?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// A port nothing listens on right now (the kernel's pick).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The restart policy on a real containerd, with no session at all: a
/// container that exits non-zero after running longer than its attempt
/// period is restarted in place (same task, same containerd container, a
/// new process, its log appended to), and one that exits sooner stops the
/// task as before. The runner's floor on the period is lowered so the test
/// need not wait ECS's minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_restarts_an_exited_container_in_place() {
    use berth_agent::runner::{Runner, RunnerConfig, RunnerHandle};
    use berth_agent::store::Store;
    use berth_proto::pb;
    use berth_types::TaskStatus;

    let Some(env) = env() else { return };
    let image = pushed_image(&env).await;
    // A namespace of its own: a runner removes whatever in its namespace
    // belongs to no task it knows, so sharing one with another runner test
    // (maybe another checkout's, on the same containerd) would be a race.
    let ns = "berth-restart-policy";
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("tasks")).expect("store");
    let task = task_id();
    let port = free_port();
    let web = pb::ContainerDefinition {
        name: "web".into(),
        image: image.clone(),
        command: vec!["serve".into(), port.to_string()],
        essential: true,
        stop_timeout: Some(5),
        restart_policy: Some(pb::RestartPolicy {
            enabled: true,
            ignored_exit_codes: vec![0],
            restart_attempt_period: Some(2),
        }),
        ..Default::default()
    };
    let mut assignment = pb::Assignment {
        task_id: task.clone(),
        desired_status: "RUNNING".into(),
        task_definition: Some(pb::TaskDefinition {
            family: "crashy".into(),
            revision: 1,
            status: "ACTIVE".into(),
            spec: Some(pb::TaskDefinitionSpec {
                family: "crashy".into(),
                container_definitions: vec![web],
                network_mode: "host".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        last_status: "PENDING".into(),
        cluster: "default".into(),
        ..Default::default()
    };
    let set = |sequence, assignment: &pb::Assignment| pb::AssignmentSet {
        sequence,
        complete: false,
        assignments: vec![assignment.clone()],
    };
    let web_of = |handle: &RunnerHandle<ContainerdRuntime>| {
        handle
            .board()
            .view(&task)
            .and_then(|v| v.report.containers.into_iter().find(|c| c.name == "web"))
    };
    /// Polls until `pred` holds; fails if the task is reported STOPPED on
    /// the way unless `stopped_ok`.
    async fn until(
        handle: &RunnerHandle<ContainerdRuntime>,
        task: &str,
        what: &str,
        stopped_ok: bool,
        pred: impl Fn(&RunnerHandle<ContainerdRuntime>) -> bool,
    ) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !pred(handle) {
            let view = handle.board().view(task);
            assert!(
                stopped_ok || handle.board().status(task) != Some(TaskStatus::Stopped),
                "{task}: STOPPED while waiting for {what}: {view:?}"
            );
            assert!(Instant::now() < deadline, "{task}: never {what}: {view:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    async fn serving(port: u16) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match http_get(port, "/health").await {
                Ok(text) if text.starts_with("HTTP/1.1 200") => return,
                other => assert!(
                    Instant::now() < deadline,
                    "the app never served on {port}: {other:?}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let web_process = |listed: Vec<berth_agent::OwnedContainer>| {
        let mine: Vec<_> = listed
            .into_iter()
            .filter(|c| c.task_id == task && c.container_name == "web")
            .collect();
        assert_eq!(mine.len(), 1, "one containerd container for web: {mine:?}");
        (mine[0].id.clone(), mine[0].state)
    };

    let rt = Arc::new(runtime_in(&env, ns).await);
    let config = RunnerConfig {
        min_restart_attempt_period: Duration::from_secs(1),
        ..RunnerConfig::default()
    };
    // No session: the runner alone, as on an agent cut off from the
    // control plane.
    let (runner, handle) = Runner::new(rt.clone(), store.clone(), config).expect("runner");
    let running = tokio::spawn(runner.run());
    handle.apply(set(1, &assignment)).await.expect("apply");
    until(&handle, &task, "RUNNING", false, |h| {
        h.board().status(&task) == Some(TaskStatus::Running)
    })
    .await;
    serving(port).await;
    let (id, first) = web_process(rt.list().await.expect("list"));
    let ContainerState::Running { pid: first_pid } = first else {
        panic!("web is not running: {first:?}");
    };

    // Past the attempt period, the app exits 3 (not ignored).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let answer = http_get(port, "/exit/3").await.expect("exit request");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    until(&handle, &task, "restarted", false, |h| {
        web_of(h).is_some_and(|c| c.restart_count == 1 && c.status == "RUNNING")
    })
    .await;
    serving(port).await;
    assert_eq!(handle.board().status(&task), Some(TaskStatus::Running));
    let (same_id, second) = web_process(rt.list().await.expect("list"));
    assert_eq!(same_id, id, "the same containerd container");
    let ContainerState::Running { pid: second_pid } = second else {
        panic!("web is not running after its restart: {second:?}");
    };
    assert_ne!(second_pid, first_pid, "a new process");
    let web = web_of(&handle).expect("web");
    assert_eq!(web.reason, "restarted after exit code 3");
    assert_eq!(web.exit_code, None);
    let record = store.load().expect("load").tasks[0]
        .record
        .clone()
        .expect("record");
    assert_eq!(record.containers[0].restart_count, 1);
    // One log file across both processes.
    let logs = logs_text(&rt, &id).await;
    assert_eq!(
        logs.matches(&format!("testapp: listening on {port}"))
            .count(),
        2,
        "{logs}"
    );
    assert!(
        logs.contains("testapp: exit 3 requested over HTTP"),
        "{logs}"
    );

    // At once after the restart: shorter than the period, so no restart;
    // the essential container's exit stops the task as it always did.
    let answer = http_get(port, "/exit/4").await.expect("exit request");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    until(&handle, &task, "STOPPED", true, |h| {
        h.board().status(&task) == Some(TaskStatus::Stopped)
    })
    .await;
    let report = handle.board().view(&task).expect("view").report;
    assert_eq!(report.stop_code, "EssentialContainerExited");
    let web = web_of(&handle).expect("web");
    assert_eq!(
        (web.exit_code, web.restart_count, web.status.as_str()),
        (Some(4), 1, "STOPPED")
    );

    assignment.last_status = "STOPPED".into();
    assignment.desired_status = "STOPPED".into();
    handle.apply(set(2, &assignment)).await.expect("apply");
    until(&handle, &task, "forgotten", true, |h| {
        h.board().status(&task).is_none()
    })
    .await;
    assert!(rt
        .list()
        .await
        .expect("list")
        .iter()
        .all(|c| c.task_id != task));
    running.abort();
}

// ------------------------------------------------------------ bridge mode

/// Bridge-mode tests run the real CNI plugins (root, like every test here).
/// They use a bridge and subnet of their own (still RFC 2544 space, outside
/// the agent's default 198.18.0.0/16) and a state dir of their own, so they
/// never touch a real agent's `berth0`.
const TEST_BRIDGE: &str = "berthtest0";
const TEST_SUBNET: &str = "198.19.250.0/24";
const BRIDGE_STATE: &str = "/tmp/berth-test/agent-bridge-state";
/// The bridge tests share one state dir, bridge and subnet, and a runtime
/// sweeps at start the networks of tasks without containers: one at a time
/// (cargo runs a file's tests in parallel).
static BRIDGE_TESTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn cni_plugins_present() -> bool {
    let dir = Path::new(berth_agent::tasknet::DEFAULT_CNI_BIN_DIR);
    if ["bridge", "host-local", "portmap", "loopback"]
        .iter()
        .all(|p| dir.join(p).is_file())
    {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("CI=true but the CNI plugins are not in /usr/lib/cni: run scripts/install-deps.sh");
    }
    eprintln!("NOTICE: skipping bridge test: no CNI plugins in /usr/lib/cni (scripts/install-deps.sh installs them)");
    false
}

fn bridge_runtime_config(env: &Env, namespace: &str) -> ContainerdConfig {
    let mut cfg = runtime_config(env, namespace);
    cfg.state_dir = PathBuf::from(BRIDGE_STATE);
    cfg.network.bridge = TEST_BRIDGE.into();
    cfg.network.subnet = TEST_SUBNET.parse().expect("test subnet");
    cfg
}

async fn bridge_runtime(env: &Env) -> ContainerdRuntime {
    ContainerdRuntime::connect(bridge_runtime_config(env, "berth-test-bridge"))
        .await
        .expect("connect to containerd")
}

/// A bridge-mode web container on 8080 published on `host_port`, saying
/// who it is in its environment.
fn bridge_web(image: &str, who: &str, host_port: u16) -> ContainerConfig {
    let mut cfg = config(image, "web", &["serve", "8080"]);
    cfg.task_family = "bridged".into();
    cfg.network_mode = NetworkMode::Bridge;
    cfg.definition.environment = vec![KeyValuePair {
        name: "WHO".into(),
        value: who.into(),
    }];
    cfg.network_bindings = vec![berth_types::NetworkBinding {
        container_name: "web".into(),
        container_port: 8080,
        host_port: u32::from(host_port),
        protocol: berth_types::Protocol::Tcp,
    }];
    cfg
}

/// A GET over plain HTTP/1.0 to `addr`; the whole response as text.
async fn http_get_at(addr: std::net::SocketAddr, path: &str) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn =
        tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| std::io::Error::other("connect timed out"))??;
    conn.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut out))
        .await
        .map_err(|_| std::io::Error::other("read timed out"))??;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// `/env` from `addr` once the app answers there (30 s at most).
async fn env_at(addr: std::net::SocketAddr) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match http_get_at(addr, "/env").await {
            Ok(text) if text.starts_with("HTTP/1.1 200") => return text,
            other => assert!(
                Instant::now() < deadline,
                "nothing answered on {addr}: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn iptables_rules() -> String {
    let out = std::process::Command::new("iptables-save")
        .output()
        .expect("run iptables-save");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// iptables-save lines about the task's address or its host port (a
/// task-mode task has none).
fn rules_for(rules: &str, ip: std::net::Ipv4Addr, host_port: Option<u16>) -> Vec<String> {
    let port = host_port.map(|p| p.to_string());
    rules
        .lines()
        .filter(|l| {
            let t: Vec<&str> = l.split_whitespace().collect();
            let names_port = t
                .windows(2)
                .any(|w| matches!(w[0], "--dport" | "--dports") && Some(w[1]) == port.as_deref());
            l.contains(&format!("{ip}/")) || l.contains(&format!("{ip}:")) || names_port
        })
        .map(str::to_string)
        .collect()
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

fn reservation_exists(ip: std::net::Ipv4Addr) -> bool {
    Path::new(BRIDGE_STATE)
        .join("cni/ipam/berth")
        .join(ip.to_string())
        .exists()
}

/// Everything a task's network held on the host is gone.
fn assert_network_gone(
    rt: &ContainerdRuntime,
    net: &berth_agent::tasknet::TaskNetwork,
    host_port: Option<u16>,
) {
    let task = &net.task_id;
    assert!(rt.task_network(task).is_none(), "{task}: no network record");
    assert_eq!(rt.task_address(task), None, "{task}: no address reported");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(
        !mounts.contains(&rt.task_netns_path(task).display().to_string()),
        "{task}: netns unmounted"
    );
    assert!(
        !rt.task_netns_path(task).exists(),
        "{task}: netns file removed"
    );
    if let Some(veth) = &net.host_veth {
        assert!(!link_exists(veth), "{task}: veth {veth} removed");
    }
    assert!(!reservation_exists(net.ip), "{task}: {} released", net.ip);
    let left = rules_for(&iptables_rules(), net.ip, host_port);
    assert!(left.is_empty(), "{task}: iptables rules left: {left:#?}");
}

/// Two tasks of one definition, each with container port 8080 published on
/// its own host port: each answers as itself through its host port (on
/// 127.0.0.1 and on the bridge's gateway address) and on its own address;
/// once they are removed nothing of their networks is left on the host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_tasks_publish_their_ports_and_leave_nothing_behind() {
    let _one_at_a_time = BRIDGE_TESTS.lock().await;
    let Some(env) = env() else { return };
    if !cni_plugins_present() {
        return;
    }
    let image = pushed_image(&env).await;
    let rt = bridge_runtime(&env).await;
    let (port_a, port_b) = (free_port(), free_port());
    assert_ne!(port_a, port_b);
    let a = bridge_web(&image, "task-a", port_a);
    let b = bridge_web(&image, "task-b", port_b);
    let id_a = rt.create(&a).await.expect("create a");
    let id_b = rt.create(&b).await.expect("create b");
    rt.start(&id_a).await.expect("start a");
    rt.start(&id_b).await.expect("start b");
    let net_a = rt.task_network(&a.task_id).expect("a's network");
    let net_b = rt.task_network(&b.task_id).expect("b's network");
    let subnet: berth_agent::tasknet::cni::Subnet = TEST_SUBNET.parse().expect("subnet");
    for net in [&net_a, &net_b] {
        assert!(subnet.contains(net.ip), "{} in {TEST_SUBNET}", net.ip);
        assert!(
            net.netns.starts_with(BRIDGE_STATE),
            "{}",
            net.netns.display()
        );
        assert!(net.host_veth.as_deref().is_some_and(link_exists));
    }
    assert_ne!(net_a.ip, net_b.ip);
    let gateway = net_a.gateway.expect("a gateway");

    for (cfg, port, net, who) in [
        (&a, port_a, &net_a, "task-a"),
        (&b, port_b, &net_b, "task-b"),
    ] {
        let hostname = format!("HOSTNAME={}", &cfg.task_id[..12]);
        for addr in [
            std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            std::net::SocketAddr::from((gateway, port)),
            std::net::SocketAddr::from((net.ip, 8080)),
        ] {
            let env = env_at(addr).await;
            assert!(
                env.contains(&format!("WHO={who}")),
                "{addr} answers as {who}: {env}"
            );
            assert!(env.contains(&hostname), "{addr}: {hostname}: {env}");
        }
        let rules = rules_for(&iptables_rules(), net.ip, Some(port));
        assert!(
            rules.iter().any(|l| l.contains("DNAT")),
            "portmap forwards {port} to {}: {rules:#?}",
            net.ip
        );
        assert!(reservation_exists(net.ip));
    }

    rt.stop(&id_a, Duration::from_secs(5))
        .await
        .expect("stop a");
    rt.stop(&id_b, Duration::from_secs(5))
        .await
        .expect("stop b");
    rt.remove(&id_a).await.expect("remove a");
    // b's network is untouched by a's removal.
    assert!(rt.task_network(&b.task_id).is_some());
    assert_network_gone(&rt, &net_a, Some(port_a));
    rt.remove(&id_b).await.expect("remove b");
    assert_network_gone(&rt, &net_b, Some(port_b));
}

/// The traffic of a bridge-mode task (reached through its published port)
/// and of a task-mode task (on its own address), from each task's point of
/// view, as the runtime reads it and the sampler exports it: each sends
/// the big answers (its environment holds 32 KiB of padding) and receives
/// the small requests. Once the tasks are gone their series are too; a
/// task with no network of its own (host mode) has no figures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_and_task_mode_traffic_is_exported_per_task() {
    const PAD: usize = 32 * 1024;
    const GETS: usize = 4;
    let _one_at_a_time = BRIDGE_TESTS.lock().await;
    let Some(env) = env() else { return };
    if !cni_plugins_present() {
        return;
    }
    let image = pushed_image(&env).await;
    let rt = bridge_runtime(&env).await;
    let port = free_port();
    let mut bridged = bridge_web(&image, "bridged", port);
    let mut tasked = task_web(&image, "tasked");
    for cfg in [&mut bridged, &mut tasked] {
        cfg.definition.environment.push(KeyValuePair {
            name: "PAD".into(),
            value: "x".repeat(PAD),
        });
    }
    let id_bridged = rt.create(&bridged).await.expect("create bridged");
    let id_tasked = rt.create(&tasked).await.expect("create tasked");
    rt.start(&id_bridged).await.expect("start bridged");
    rt.start(&id_tasked).await.expect("start tasked");
    let net_tasked = rt.task_network(&tasked.task_id).expect("tasked's network");
    let metrics = berth_agent::exporter::metrics();
    let tasks = [bridged.task_id.clone(), tasked.task_id.clone()];
    for (task, addr) in [
        (
            &bridged.task_id,
            std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        ),
        (
            &tasked.task_id,
            std::net::SocketAddr::from((net_tasked.ip, 8080)),
        ),
    ] {
        env_at(addr).await;
        let mut answers = 0u64;
        for _ in 0..GETS {
            let text = http_get_at(addr, "/env").await.expect("GET /env");
            assert!(text.contains(&"x".repeat(PAD)), "{addr}: padded answer");
            answers += text.len() as u64;
        }
        let stats = rt
            .task_network_stats(task)
            .expect("read the task's counters")
            .expect("a task with a network of its own has figures");
        assert!(
            stats.transmit_bytes >= answers,
            "{task} sent its {answers} bytes of answers: {stats:?}"
        );
        assert!(
            stats.receive_bytes > 0 && stats.receive_bytes < stats.transmit_bytes / 4,
            "{task} received small requests (not swapped): {stats:?}"
        );
        assert!(
            stats.receive_packets > 0 && stats.transmit_packets > 0,
            "{stats:?}"
        );
        metrics.sample_task_networks(&tasks, &rt);
        let text = metrics.render();
        let label = format!("task_id=\"{task}\"");
        let tx = metric_value(
            &text,
            "berth_agent_task_network_transmit_bytes_total",
            &label,
        );
        let rx = metric_value(
            &text,
            "berth_agent_task_network_receive_bytes_total",
            &label,
        );
        assert!(tx >= answers, "{task}: exported transmit {tx}: {text}");
        assert!(rx > 0 && rx < tx, "{task}: exported receive {rx}: {text}");
        for name in [
            "berth_agent_task_network_receive_packets_total",
            "berth_agent_task_network_transmit_packets_total",
        ] {
            assert!(metric_value(&text, name, &label) > 0, "{name}: {text}");
        }
    }
    // No network of its own here (what a host-mode task is): no figures.
    assert_eq!(rt.task_network_stats(&task_id()).expect("read"), None);

    for id in [&id_bridged, &id_tasked] {
        rt.stop(id, Duration::from_secs(5)).await.expect("stop");
        rt.remove(id).await.expect("remove");
    }
    for task in &tasks {
        assert_eq!(rt.task_network_stats(task).expect("read"), None);
    }
    metrics.sample_task_networks(&tasks, &rt);
    let text = metrics.render();
    for task in &tasks {
        assert!(!text.contains(&format!("task_id=\"{task}\"")), "{text}");
    }
}

/// A task-mode (`awsvpc`) web container on 8080: nothing published on the
/// host; it is reached on the task's own address.
fn task_web(image: &str, who: &str) -> ContainerConfig {
    let mut cfg = bridge_web(image, who, 0);
    cfg.network_mode = NetworkMode::Task;
    cfg.network_bindings = vec![];
    cfg
}

/// A task-mode task is reached from the host on its own address and
/// container port, with nothing published (no DNAT); the runtime reports
/// that address; with `--task-dns` its resolv.conf names Berth's DNS and
/// searches its cluster's domain, also after an in-place restart (from
/// the container's labels); once it is removed nothing of its network is
/// left on the host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_mode_tasks_are_reached_on_their_own_address_and_leave_nothing_behind() {
    let _one_at_a_time = BRIDGE_TESTS.lock().await;
    let Some(env) = env() else { return };
    if !cni_plugins_present() {
        return;
    }
    let image = pushed_image(&env).await;
    let dns: std::net::IpAddr = "198.19.79.53".parse().expect("ip");
    let mut cfg = bridge_runtime_config(&env, "berth-test-bridge");
    cfg.network.dns = vec![dns];
    let rt = ContainerdRuntime::connect(cfg)
        .await
        .expect("connect to containerd");
    let mut task = task_web(&image, "task-t");
    task.cluster = "prod".into();
    let id = rt.create(&task).await.expect("create");
    rt.start(&id).await.expect("start");
    let net = rt.task_network(&task.task_id).expect("its network");
    let subnet: berth_agent::tasknet::cni::Subnet = TEST_SUBNET.parse().expect("subnet");
    assert!(subnet.contains(net.ip), "{} in {TEST_SUBNET}", net.ip);
    assert_eq!(rt.task_address(&task.task_id), Some(net.ip.into()));
    assert!(reservation_exists(net.ip));
    assert!(net.host_veth.as_deref().is_some_and(link_exists));

    let env = env_at(std::net::SocketAddr::from((net.ip, 8080))).await;
    assert!(env.contains("WHO=task-t"), "{env}");
    let rules = rules_for(&iptables_rules(), net.ip, None);
    assert!(
        !rules.iter().any(|l| l.contains("DNAT")),
        "task mode publishes nothing: {rules:#?}"
    );

    let resolv = Path::new(BRIDGE_STATE)
        .join("containers")
        .join(&id)
        .join("resolv.conf");
    let read = || std::fs::read_to_string(&resolv).expect("resolv.conf");
    let check = |text: String| {
        let first = text.lines().next().unwrap_or_default();
        assert!(
            first == "search prod.berth" || first.starts_with("search prod.berth "),
            "the cluster's domain first: {text}"
        );
        let servers: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("nameserver"))
            .collect();
        assert_eq!(servers, ["nameserver 198.19.79.53"], "only Berth's: {text}");
    };
    check(read());
    // An in-place restart (after a reboot, the network made again) writes
    // it again, with the cluster from the container's labels.
    std::fs::write(&resolv, "").expect("clear resolv.conf");
    rt.stop(&id, Duration::from_secs(5)).await.expect("stop");
    rt.restart(&id).await.expect("restart");
    check(read());
    assert_eq!(rt.task_network(&task.task_id).map(|n| n.ip), Some(net.ip));
    env_at(std::net::SocketAddr::from((net.ip, 8080))).await;

    rt.stop(&id, Duration::from_secs(5)).await.expect("stop");
    rt.remove(&id).await.expect("remove");
    assert_network_gone(&rt, &net, None);
}

/// Deletes a container (its process, record and snapshot) behind the
/// runtime's back, leaving its task's network: what an agent killed
/// between removing a task's last container and its network leaves.
async fn delete_behind_its_back(rt: &ContainerdRuntime, id: &str) {
    use containerd_client::services::v1::snapshots::RemoveSnapshotRequest;
    use containerd_client::services::v1::{DeleteContainerRequest, DeleteTaskRequest};
    rt.stop(id, Duration::from_secs(5)).await.expect("stop");
    rt.client()
        .tasks()
        .delete(rt.request(DeleteTaskRequest {
            container_id: id.to_string(),
        }))
        .await
        .expect("delete task");
    rt.client()
        .containers()
        .delete(rt.request(DeleteContainerRequest { id: id.to_string() }))
        .await
        .expect("delete container");
    let _ = rt
        .client()
        .snapshots()
        .remove(rt.request(RemoveSnapshotRequest {
            snapshotter: rt.config().snapshotter.clone(),
            key: id.to_string(),
        }))
        .await;
}

/// An agent killed after a task's container was removed but before its
/// network was (simulated: the container is deleted behind the runtime's
/// back, and the runtime dropped without any cleanup): the next runtime on
/// the same state dir removes the netns, the address, the veth and the port
/// forwards at start, of a bridge-mode and a task-mode task alike, and
/// leaves a task that still has a container alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_networks_left_by_a_killed_agent_are_removed_at_start() {
    let _one_at_a_time = BRIDGE_TESTS.lock().await;
    let Some(env) = env() else { return };
    if !cni_plugins_present() {
        return;
    }
    let image = pushed_image(&env).await;
    let rt = bridge_runtime(&env).await;
    let (port_gone, port_kept) = (free_port(), free_port());
    let gone = bridge_web(&image, "gone", port_gone);
    let gone_task = task_web(&image, "gone-task");
    let kept = bridge_web(&image, "kept", port_kept);
    let id_gone = rt.create(&gone).await.expect("create");
    let id_gone_task = rt.create(&gone_task).await.expect("create");
    let id_kept = rt.create(&kept).await.expect("create");
    rt.start(&id_gone).await.expect("start");
    rt.start(&id_gone_task).await.expect("start");
    let net_gone = rt.task_network(&gone.task_id).expect("network");
    let net_gone_task = rt.task_network(&gone_task.task_id).expect("network");
    env_at(std::net::SocketAddr::from(([127, 0, 0, 1], port_gone))).await;
    env_at(std::net::SocketAddr::from((net_gone_task.ip, 8080))).await;

    // The "agent" goes away: its containers are killed and deleted, their
    // networks are not.
    delete_behind_its_back(&rt, &id_gone).await;
    delete_behind_its_back(&rt, &id_gone_task).await;
    drop(rt);
    for (net, port) in [(&net_gone, Some(port_gone)), (&net_gone_task, None)] {
        assert!(Path::new(BRIDGE_STATE)
            .join("netns")
            .join(&net.task_id)
            .exists());
        assert!(reservation_exists(net.ip));
        assert!(!rules_for(&iptables_rules(), net.ip, port).is_empty());
    }

    let rt = bridge_runtime(&env).await;
    assert_network_gone(&rt, &net_gone, Some(port_gone));
    assert_network_gone(&rt, &net_gone_task, None);
    let net_kept = rt
        .task_network(&kept.task_id)
        .expect("a live task keeps its network");
    assert!(rt.task_netns_path(&kept.task_id).exists());
    rt.remove(&id_kept).await.expect("remove");
    assert_network_gone(&rt, &net_kept, Some(port_kept));
}
