//! Which host paths a task may bind-mount (`volumes[].host.sourcePath`).
//! Anyone who may register a task definition could otherwise mount `/` or
//! containerd's socket into a container and own the host, so the agent
//! checks every source path before it reaches the OCI spec:
//!
//! - the path must exist; symlinks in it are resolved first, and the spec
//!   gets the resolved path, so a link cannot point the check elsewhere;
//! - it must be neither inside nor above a protected path: `/proc`, `/sys`,
//!   containerd's socket directory and state, the agent's own directories
//!   (so `/` is always refused: it holds all of them);
//! - with `--allowed-host-paths`, it must also be inside one of those.

use std::path::{Component, Path, PathBuf};

use crate::error::RuntimeError;

/// Host paths no task may mount, wherever the agent's own directories are.
pub const ALWAYS_PROTECTED: &[&str] = &["/proc", "/sys", "/var/lib/containerd", "/run/containerd"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPathPolicy {
    /// Empty: any path that is not protected.
    allowed: Vec<PathBuf>,
    protected: Vec<PathBuf>,
}

impl HostPathPolicy {
    /// The default for an agent: `ALWAYS_PROTECTED`, the directory holding
    /// containerd's socket (its shims' sockets are beside it), and the
    /// agent's state directory. Add others with `protect`.
    pub fn new(containerd_socket: &Path, state_dir: &Path) -> Self {
        let mut policy = HostPathPolicy {
            allowed: Vec::new(),
            protected: Vec::new(),
        };
        for p in ALWAYS_PROTECTED {
            policy.protect(Path::new(p));
        }
        policy.protect(containerd_socket.parent().unwrap_or(containerd_socket));
        policy.protect(state_dir);
        policy
    }

    /// Refuse `path` and everything inside it.
    pub fn protect(&mut self, path: &Path) {
        let p = resolve_existing(path);
        if !self.protected.contains(&p) {
            self.protected.push(p);
        }
    }

    /// Only paths inside these may be mounted (protected ones still not).
    pub fn allow_only(&mut self, allowed: &[PathBuf]) -> Result<(), String> {
        let mut out = Vec::with_capacity(allowed.len());
        for a in allowed {
            if !a.is_absolute() {
                return Err(format!(
                    "--allowed-host-paths entry {} is not an absolute path",
                    a.display()
                ));
            }
            out.push(resolve_existing(a));
        }
        self.allowed = out;
        Ok(())
    }

    pub fn protected(&self) -> &[PathBuf] {
        &self.protected
    }

    /// The host path to bind for `volume`'s `source`, or why not.
    pub fn check(&self, volume: &str, source: &str) -> Result<PathBuf, RuntimeError> {
        let refuse = |reason: String| RuntimeError::HostPathRefused {
            volume: volume.to_string(),
            path: source.to_string(),
            reason,
        };
        let given = Path::new(source);
        if !given.is_absolute() {
            return Err(refuse("it is not an absolute path".into()));
        }
        let resolved = match std::fs::canonicalize(given) {
            Ok(p) => p,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(refuse(
                    "it does not exist on this host; create it first".into(),
                ))
            }
            Err(e) => return Err(refuse(format!("cannot resolve it: {e}"))),
        };
        let shown = if resolved == given {
            String::new()
        } else {
            format!(" (it resolves to {})", resolved.display())
        };
        if resolved == Path::new("/") {
            return Err(refuse(format!(
                "it is the host's root directory{shown}; mount a directory made for the task"
            )));
        }
        for p in &self.protected {
            if resolved.starts_with(p) {
                return Err(refuse(format!(
                    "it is inside {}{shown}, which the agent protects (/proc, /sys, containerd's \
                     socket and state, the agent's own directories)",
                    p.display()
                )));
            }
            if p.starts_with(&resolved) {
                return Err(refuse(format!(
                    "it contains {}{shown}, which the agent protects; mount a directory that \
                     holds only the task's files",
                    p.display()
                )));
            }
        }
        if !self.allowed.is_empty() && !self.allowed.iter().any(|a| resolved.starts_with(a)) {
            let list: Vec<String> = self
                .allowed
                .iter()
                .map(|a| a.display().to_string())
                .collect();
            return Err(refuse(format!(
                "it is outside the agent's --allowed-host-paths ({}){shown}; use a path inside \
                 one of them, or add one to the agent's --allowed-host-paths",
                list.join(", ")
            )));
        }
        Ok(resolved)
    }
}

/// The path with symlinks resolved when it exists, else with `.` and `..`
/// folded away, so that comparisons are by what the kernel would open.
fn resolve_existing(path: &Path) -> PathBuf {
    if let Ok(p) = std::fs::canonicalize(path) {
        return p;
    }
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Host {
        _dir: tempfile::TempDir,
        root: PathBuf,
        policy: HostPathPolicy,
    }

    /// A host laid out in a temp dir: the containerd socket's directory,
    /// the agent's state dir, and a data directory meant for tasks.
    fn host() -> Host {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = std::fs::canonicalize(dir.path()).expect("canonical");
        for d in [
            "run/containerd",
            "var/lib/berth-agent",
            "srv/data/app",
            "srv/other",
        ] {
            std::fs::create_dir_all(root.join(d)).expect("mkdir");
        }
        std::fs::write(root.join("run/containerd/containerd.sock"), b"").expect("sock");
        let policy = HostPathPolicy::new(
            &root.join("run/containerd/containerd.sock"),
            &root.join("var/lib/berth-agent"),
        );
        Host {
            _dir: dir,
            root,
            policy,
        }
    }

    fn refusal(policy: &HostPathPolicy, path: &Path) -> String {
        match policy.check("vol", &path.display().to_string()) {
            Ok(p) => panic!("{} was allowed as {}", path.display(), p.display()),
            Err(e) => {
                let text = e.to_string();
                assert!(
                    text.contains("volume \"vol\"") && text.contains("host.sourcePath"),
                    "names the field: {text}"
                );
                text
            }
        }
    }

    #[test]
    fn root_proc_and_sys_are_refused() {
        let h = host();
        let e = refusal(&h.policy, Path::new("/"));
        assert!(e.contains("host's root directory"), "{e}");
        let e = refusal(&h.policy, Path::new("/proc"));
        assert!(e.contains("inside /proc"), "{e}");
        let e = refusal(&h.policy, Path::new("/proc/1"));
        assert!(e.contains("inside /proc"), "{e}");
        let e = refusal(&h.policy, Path::new("/sys/fs/cgroup"));
        assert!(e.contains("inside /sys"), "{e}");
        // Spelled another way, it is still the root.
        let e = refusal(&h.policy, Path::new("/tmp/.."));
        assert!(e.contains("host's root directory"), "{e}");
    }

    #[test]
    fn containerd_and_the_agents_own_dirs_are_refused() {
        let h = host();
        let sock_dir = h.root.join("run/containerd");
        let e = refusal(&h.policy, &sock_dir);
        assert!(e.contains(&format!("inside {}", sock_dir.display())), "{e}");
        let e = refusal(&h.policy, &sock_dir.join("containerd.sock"));
        assert!(e.contains("which the agent protects"), "{e}");
        let state = h.root.join("var/lib/berth-agent");
        let e = refusal(&h.policy, &state);
        assert!(e.contains(&format!("inside {}", state.display())), "{e}");
        // A parent of a protected path exposes it too.
        let e = refusal(&h.policy, &h.root.join("var"));
        assert!(e.contains(&format!("contains {}", state.display())), "{e}");
        let e = refusal(&h.policy, Path::new("/var/lib"));
        assert!(e.contains("contains /var/lib/containerd"), "{e}");
        // Anything the operator adds (the identity dir, say).
        let mut p = h.policy.clone();
        p.protect(&h.root.join("srv/other"));
        let e = refusal(&p, &h.root.join("srv/other"));
        assert!(e.contains("which the agent protects"), "{e}");
    }

    #[test]
    fn symlinks_are_resolved_before_the_check() {
        let h = host();
        let link = h.root.join("srv/data/innocent");
        std::os::unix::fs::symlink("/", &link).expect("symlink");
        let e = refusal(&h.policy, &link);
        assert!(
            e.contains("host's root directory (it resolves to /)"),
            "{e}"
        );
        let link2 = h.root.join("srv/data/state");
        std::os::unix::fs::symlink(h.root.join("var/lib/berth-agent"), &link2).expect("symlink");
        let e = refusal(&h.policy, &link2);
        assert!(e.contains("it resolves to"), "{e}");
        // A fine link is followed and the spec gets its target.
        let link3 = h.root.join("srv/data/app-link");
        std::os::unix::fs::symlink(h.root.join("srv/data/app"), &link3).expect("symlink");
        assert_eq!(
            h.policy
                .check("vol", &link3.display().to_string())
                .expect("allowed"),
            h.root.join("srv/data/app")
        );
    }

    #[test]
    fn relative_and_missing_paths_are_refused() {
        let h = host();
        let e = refusal(&h.policy, Path::new("srv/data"));
        assert!(e.contains("not an absolute path"), "{e}");
        let e = refusal(&h.policy, &h.root.join("srv/missing"));
        assert!(e.contains("does not exist on this host"), "{e}");
    }

    #[test]
    fn allowed_host_paths_narrow_what_may_be_mounted() {
        let h = host();
        // Without a list, an ordinary directory is fine.
        let app = h.root.join("srv/data/app");
        assert_eq!(
            h.policy.check("vol", &app.display().to_string()).ok(),
            Some(app.clone())
        );
        let mut p = h.policy.clone();
        p.allow_only(&[h.root.join("srv/data")]).expect("allow");
        assert_eq!(
            p.check("vol", &app.display().to_string()).ok(),
            Some(app.clone())
        );
        let e = refusal(&p, &h.root.join("srv/other"));
        assert!(
            e.contains("outside the agent's --allowed-host-paths"),
            "{e}"
        );
        assert!(
            e.contains(&h.root.join("srv/data").display().to_string()),
            "{e}"
        );
        // A sibling whose name merely starts the same is outside.
        std::fs::create_dir_all(h.root.join("srv/data2")).expect("mkdir");
        refusal(&p, &h.root.join("srv/data2"));
        // Allowing a protected path does not unprotect it.
        let mut p = h.policy.clone();
        p.allow_only(&[PathBuf::from("/")]).expect("allow");
        refusal(&p, Path::new("/proc"));
        refusal(&p, Path::new("/"));
        assert!(p.allow_only(&[PathBuf::from("srv")]).is_err());
    }
}
