//! The seccomp filter every container runs under: an allow-list in the
//! shape of containerd's and Docker's default profile, written for the
//! capabilities Berth grants (`spec::DEFAULT_CAPS`, never `CAP_SYS_ADMIN`,
//! `CAP_SYS_PTRACE`, `CAP_SYS_MODULE`, ...). Anything not listed fails with
//! EPERM, so the syscalls that give a root process in a container its
//! reach into the kernel (`unshare`, `mount`, `keyctl`, `bpf`,
//! `perf_event_open`, `userfaultfd`, `ptrace`, module loading, ...) are
//! refused even where capabilities alone would let them through (`keyctl`
//! and user namespaces need no capability at all).
//!
//! runc skips names its libseccomp does not know, so one list serves every
//! architecture and kernel.

use serde_json::{json, Value};

/// EPERM: what a refused syscall returns, as with Docker.
const ERRNO_EPERM: u32 = 1;
/// ENOSYS for `clone3`: its flags live in memory a filter cannot read, so it
/// is refused as "not implemented", and glibc falls back to `clone`, whose
/// flags the filter can check.
const ERRNO_ENOSYS: u32 = 38;

/// `CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC |
/// CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET`: a `clone` asking for any
/// new namespace is refused.
pub const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0000;

/// `personality` values a program may set: the Linux default, the 32-bit
/// one, `UNAME26`, both together, and the query (0xffffffff).
const PERSONALITIES: &[u64] = &[0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

/// Allowed with any arguments. Grouped by purpose; the omissions are the
/// point (see the module comment and `REFUSED` in the tests).
#[rustfmt::skip]
pub const ALLOWED: &[&str] = &[
    // files and directories
    "access", "chdir", "chmod", "chown", "chown32", "close", "close_range",
    "copy_file_range", "creat", "dup", "dup2", "dup3", "faccessat", "faccessat2",
    "fadvise64", "fadvise64_64", "fallocate", "fchdir", "fchmod", "fchmodat",
    "fchmodat2", "fchown", "fchown32", "fchownat", "fcntl", "fcntl64", "fdatasync",
    "flock", "fstat", "fstat64", "fstatat64", "fstatfs", "fstatfs64", "fsync",
    "ftruncate", "ftruncate64", "futimesat", "getcwd", "getdents", "getdents64",
    "lchown", "lchown32", "link", "linkat", "_llseek", "lseek", "lstat", "lstat64",
    "mkdir", "mkdirat", "mknod", "mknodat", "newfstatat", "open", "openat", "openat2",
    "pread64", "preadv", "preadv2", "pwrite64", "pwritev", "pwritev2", "read",
    "readahead", "readlink", "readlinkat", "readv", "rename", "renameat",
    "renameat2", "rmdir", "sendfile", "sendfile64", "splice", "stat", "stat64",
    "statfs", "statfs64", "statx", "symlink", "symlinkat", "sync", "sync_file_range",
    "sync_file_range2", "arm_sync_file_range", "arm_fadvise64_64", "syncfs", "tee",
    "truncate", "truncate64", "umask", "unlink", "unlinkat", "utime", "utimensat",
    "utimensat_time64", "utimes", "vmsplice", "write", "writev", "chroot",
    // extended attributes
    "fgetxattr", "flistxattr", "fremovexattr", "fsetxattr", "getxattr", "lgetxattr",
    "listxattr", "llistxattr", "lremovexattr", "lsetxattr", "removexattr", "setxattr",
    // file events and async I/O
    "epoll_create", "epoll_create1", "epoll_ctl", "epoll_ctl_old", "epoll_pwait",
    "epoll_pwait2", "epoll_wait", "epoll_wait_old", "eventfd", "eventfd2",
    "fanotify_mark", "inotify_add_watch", "inotify_init", "inotify_init1",
    "inotify_rm_watch", "io_cancel", "io_destroy", "io_getevents", "io_pgetevents",
    "io_pgetevents_time64", "io_setup", "io_submit", "ioctl", "ioprio_get",
    "ioprio_set", "pipe", "pipe2", "poll", "ppoll", "ppoll_time64", "pselect6",
    "pselect6_time64", "select", "_newselect", "signalfd", "signalfd4",
    "timerfd_create", "timerfd_gettime", "timerfd_gettime64", "timerfd_settime",
    "timerfd_settime64",
    // memory
    "brk", "cachestat", "madvise", "map_shadow_stack", "membarrier", "memfd_create",
    "memfd_secret", "mincore", "mlock", "mlock2", "mlockall", "mmap", "mmap2",
    "mprotect", "mremap", "msync", "munlock", "munlockall", "munmap", "pkey_alloc",
    "pkey_free", "pkey_mprotect", "remap_file_pages",
    // processes, threads, signals
    "arch_prctl", "capget", "capset", "execve", "execveat", "exit", "exit_group",
    "fork", "futex", "futex_requeue", "futex_time64", "futex_wait", "futex_waitv",
    "futex_wake", "get_robust_list", "get_thread_area", "getcpu", "getegid",
    "getegid32", "geteuid", "geteuid32", "getgid", "getgid32", "getgroups",
    "getgroups32", "getitimer", "getpgid", "getpgrp", "getpid", "getppid",
    "getpriority", "getresgid", "getresgid32", "getresuid", "getresuid32",
    "getrlimit", "getrusage", "getsid", "gettid", "getuid", "getuid32", "kill",
    "pause", "pidfd_open", "pidfd_send_signal", "prctl", "prlimit64",
    "process_mrelease", "restart_syscall", "rseq", "rt_sigaction", "rt_sigpending",
    "rt_sigprocmask", "rt_sigqueueinfo", "rt_sigreturn", "rt_sigsuspend",
    "rt_sigtimedwait", "rt_sigtimedwait_time64", "rt_tgsigqueueinfo",
    "sched_get_priority_max", "sched_get_priority_min", "sched_getaffinity",
    "sched_getattr", "sched_getparam", "sched_getscheduler", "sched_rr_get_interval",
    "sched_rr_get_interval_time64", "sched_setaffinity", "sched_setattr",
    "sched_setparam", "sched_setscheduler", "sched_yield", "seccomp",
    "set_robust_list", "set_thread_area", "set_tid_address", "set_tls", "setfsgid",
    "setfsgid32", "setfsuid", "setfsuid32", "setgid", "setgid32", "setgroups",
    "setgroups32", "setitimer", "setpgid", "setpriority", "setregid", "setregid32",
    "setresgid", "setresgid32", "setresuid", "setresuid32", "setreuid", "setreuid32",
    "setrlimit", "setsid", "setuid", "setuid32", "sigaltstack", "sigprocmask",
    "sigreturn", "tgkill", "tkill", "ugetrlimit", "vfork", "wait4", "waitid",
    "waitpid", "breakpoint", "cacheflush",
    // time
    "adjtimex", "alarm", "clock_adjtime", "clock_adjtime64", "clock_getres",
    "clock_getres_time64", "clock_gettime", "clock_gettime64", "clock_nanosleep",
    "clock_nanosleep_time64", "gettimeofday", "nanosleep", "time", "timer_create",
    "timer_delete", "timer_getoverrun", "timer_gettime", "timer_gettime64",
    "timer_settime", "timer_settime64", "times",
    // System V and POSIX IPC (the container has its own IPC namespace)
    "ipc", "mq_getsetattr", "mq_notify", "mq_open", "mq_timedreceive",
    "mq_timedreceive_time64", "mq_timedsend", "mq_timedsend_time64", "mq_unlink",
    "msgctl", "msgget", "msgrcv", "msgsnd", "semctl", "semget", "semop", "semtimedop",
    "semtimedop_time64", "shmat", "shmctl", "shmdt", "shmget",
    // network
    "accept", "accept4", "bind", "connect", "getpeername", "getsockname",
    "getsockopt", "listen", "recv", "recvfrom", "recvmmsg", "recvmmsg_time64",
    "recvmsg", "send", "sendmmsg", "sendmsg", "sendto", "setsockopt", "shutdown",
    "socket", "socketcall", "socketpair",
    // system information
    "getrandom", "sysinfo", "uname",
    // Landlock only ever narrows what the caller may do.
    "landlock_add_rule", "landlock_create_ruleset", "landlock_restrict_self",
];

/// The architectures the filter covers on this host: the native one and the
/// compat ABIs its kernel can run, so a 32-bit binary cannot slip past.
fn architectures() -> &'static [&'static str] {
    match std::env::consts::ARCH {
        "x86_64" => &["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "aarch64" => &["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
        "x86" => &["SCMP_ARCH_X86"],
        "arm" => &["SCMP_ARCH_ARM"],
        "riscv64" => &["SCMP_ARCH_RISCV64"],
        "powerpc64" => &["SCMP_ARCH_PPC64LE"],
        "s390x" => &["SCMP_ARCH_S390X", "SCMP_ARCH_S390"],
        _ => &[],
    }
}

/// The OCI `linux.seccomp` object.
pub fn default_profile() -> Value {
    let mut syscalls = vec![json!({"names": ALLOWED, "action": "SCMP_ACT_ALLOW"})];
    for p in PERSONALITIES {
        syscalls.push(json!({
            "names": ["personality"],
            "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": p, "op": "SCMP_CMP_EQ"}],
        }));
    }
    // s390 passes clone's flags second; everywhere else first.
    let flags_arg = if std::env::consts::ARCH == "s390x" {
        1
    } else {
        0
    };
    syscalls.push(json!({
        "names": ["clone"],
        "action": "SCMP_ACT_ALLOW",
        "args": [{"index": flags_arg, "value": CLONE_NAMESPACE_FLAGS, "valueTwo": 0,
                  "op": "SCMP_CMP_MASKED_EQ"}],
    }));
    syscalls.push(json!({
        "names": ["clone3"],
        "action": "SCMP_ACT_ERRNO",
        "errnoRet": ERRNO_ENOSYS,
    }));
    json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": ERRNO_EPERM,
        "architectures": architectures(),
        "syscalls": syscalls,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Syscalls a container must not reach: namespaces and mounts (escape
    /// routes), the kernel keyring (not namespaced), kernel modules and
    /// kexec, tracing and eBPF, clocks, swap and reboot.
    #[rustfmt::skip]
    const REFUSED: &[&str] = &[
        "unshare", "setns", "mount", "umount", "umount2", "pivot_root", "move_mount",
        "open_tree", "fsopen", "fsmount", "fsconfig", "fspick", "keyctl", "add_key",
        "request_key", "init_module", "finit_module", "delete_module", "kexec_load",
        "kexec_file_load", "bpf", "perf_event_open", "ptrace", "process_vm_readv",
        "process_vm_writev", "kcmp", "pidfd_getfd", "userfaultfd", "clock_settime",
        "settimeofday", "stime", "swapon", "swapoff", "reboot", "acct", "quotactl",
        "syslog", "sethostname", "setdomainname", "open_by_handle_at",
        "name_to_handle_at", "iopl", "ioperm", "io_uring_setup", "io_uring_enter",
        "io_uring_register", "lookup_dcookie", "mbind", "set_mempolicy", "move_pages",
        "vhangup", "uselib", "_sysctl", "nfsservctl", "vm86", "vm86old",
    ];

    fn rules_for(profile: &Value, name: &str) -> Vec<Value> {
        profile["syscalls"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| {
                r["names"]
                    .as_array()
                    .is_some_and(|n| n.iter().any(|x| x == name))
            })
            .cloned()
            .collect()
    }

    #[test]
    fn refuses_by_default_with_eperm() {
        let p = default_profile();
        assert_eq!(p["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(p["defaultErrnoRet"], 1);
        if std::env::consts::ARCH == "x86_64" {
            assert_eq!(
                p["architectures"],
                json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"])
            );
        }
    }

    #[test]
    fn escape_routes_are_not_allowed() {
        let p = default_profile();
        for name in REFUSED {
            assert!(
                rules_for(&p, name).is_empty(),
                "{name} must fall to the default EPERM"
            );
        }
    }

    #[test]
    fn what_programs_need_is_allowed() {
        let p = default_profile();
        for name in [
            "read",
            "write",
            "openat",
            "execve",
            "futex",
            "mmap",
            "epoll_wait",
            "socket",
            "accept4",
            "rt_sigaction",
            "exit_group",
            "getrandom",
            "chroot",
            "wait4",
        ] {
            let rules = rules_for(&p, name);
            assert_eq!(rules.len(), 1, "{name}");
            assert_eq!(rules[0]["action"], "SCMP_ACT_ALLOW", "{name}");
            assert!(rules[0].get("args").is_none(), "{name} unconditional");
        }
        let mut seen = std::collections::HashSet::new();
        for name in ALLOWED {
            assert!(seen.insert(name), "{name} listed twice");
        }
    }

    #[test]
    fn clone_without_namespaces_only_and_clone3_falls_back() {
        let p = default_profile();
        let clone = rules_for(&p, "clone");
        assert_eq!(clone.len(), 1);
        let arg = &clone[0]["args"][0];
        assert_eq!(arg["op"], "SCMP_CMP_MASKED_EQ");
        assert_eq!(arg["value"], CLONE_NAMESPACE_FLAGS);
        assert_eq!(arg["valueTwo"], 0);
        // Every CLONE_NEW* flag is in the mask.
        for flag in [
            0x0002_0000u64,
            0x0200_0000,
            0x0400_0000,
            0x0800_0000,
            0x1000_0000,
            0x2000_0000,
            0x4000_0000,
        ] {
            assert_eq!(CLONE_NAMESPACE_FLAGS & flag, flag, "{flag:#x}");
        }
        let clone3 = rules_for(&p, "clone3");
        assert_eq!(clone3[0]["action"], "SCMP_ACT_ERRNO");
        assert_eq!(clone3[0]["errnoRet"], 38);
        let personality = rules_for(&p, "personality");
        assert_eq!(personality.len(), PERSONALITIES.len());
        assert!(personality
            .iter()
            .all(|r| r["args"][0]["op"] == "SCMP_CMP_EQ"));
    }
}
