//! A bridge- or task-mode task's network traffic, from the kernel's
//! counters of the host side of its veth pair
//! (`/sys/class/net/VETH/statistics`). The pair is one cable: what the
//! host end receives the task sent, and what it transmits the task
//! received, so the counters are swapped to give the task's point of view.
//! Everything the task exchanges with the bridge, the host, other tasks and
//! the outside world crosses that cable; only its loopback traffic does not.

use std::path::Path;

use crate::error::{Result, RuntimeError};
use crate::runtime::NetworkStats;

/// Where the kernel lists the host's network interfaces.
pub const SYS_CLASS_NET: &str = "/sys/class/net";

/// A name the kernel could have given an interface: it becomes a path
/// component, and it comes from a file on disk (the CNI result).
pub fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() < 16
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':')
}

/// One counter file: a decimal number and a newline.
pub fn parse_counter(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// The task's traffic as seen from its side of the veth whose host end is
/// `host_veth`, read under `sys_class_net` (`SYS_CLASS_NET`; tests pass a
/// directory of their own).
pub fn host_veth_stats(
    sys_class_net: &Path,
    task_id: &str,
    host_veth: &str,
) -> Result<NetworkStats> {
    if !valid_ifname(host_veth) {
        return Err(RuntimeError::TaskNetwork {
            task_id: task_id.to_string(),
            reason: format!("{host_veth:?} is not an interface name"),
        });
    }
    let dir = sys_class_net.join(host_veth).join("statistics");
    let read = |file: &str| -> Result<u64> {
        let path = dir.join(file);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| RuntimeError::io(format!("read {}", path.display()), e))?;
        parse_counter(&text).ok_or_else(|| RuntimeError::TaskNetwork {
            task_id: task_id.to_string(),
            reason: format!("{} holds no counter: {:?}", path.display(), text.trim()),
        })
    };
    // Host end's transmit = task's receive, and the other way round.
    Ok(NetworkStats {
        receive_bytes: read("tx_bytes")?,
        transmit_bytes: read("rx_bytes")?,
        receive_packets: read("tx_packets")?,
        transmit_packets: read("rx_packets")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_veth(root: &Path, name: &str, counters: &[(&str, &str)]) {
        let dir = root.join(name).join("statistics");
        std::fs::create_dir_all(&dir).expect("mkdir");
        for (file, value) in counters {
            std::fs::write(dir.join(file), value).expect("write counter");
        }
    }

    #[test]
    fn host_end_counters_are_swapped_to_the_tasks_point_of_view() {
        let root = tempfile::tempdir().expect("tempdir");
        fake_veth(
            root.path(),
            "veth1a2b3c4d",
            &[
                ("rx_bytes", "1500\n"),
                ("tx_bytes", "90000\n"),
                ("rx_packets", "12\n"),
                ("tx_packets", "70\n"),
            ],
        );
        let s = host_veth_stats(root.path(), "t1", "veth1a2b3c4d").expect("stats");
        assert_eq!(
            s,
            NetworkStats {
                receive_bytes: 90000,
                transmit_bytes: 1500,
                receive_packets: 70,
                transmit_packets: 12,
            }
        );
    }

    #[test]
    fn missing_or_garbled_counters_and_bad_names_are_errors() {
        let root = tempfile::tempdir().expect("tempdir");
        // Gone (the task stopped between listing and reading).
        assert!(host_veth_stats(root.path(), "t1", "vethgone").is_err());
        fake_veth(
            root.path(),
            "vethbad",
            &[
                ("rx_bytes", "lots\n"),
                ("tx_bytes", "1\n"),
                ("rx_packets", "1\n"),
                ("tx_packets", "1\n"),
            ],
        );
        let err = host_veth_stats(root.path(), "t1", "vethbad").expect_err("garbled");
        assert!(err.to_string().contains("holds no counter"), "{err}");
        for bad in [
            "",
            ".",
            "..",
            "../etc",
            "a/b",
            "name-far-too-long-for-linux",
        ] {
            assert!(!valid_ifname(bad), "{bad:?}");
            assert!(host_veth_stats(root.path(), "t1", bad).is_err(), "{bad:?}");
        }
        assert!(valid_ifname("veth1a2b3c4d"));
        assert_eq!(parse_counter(" 42\n"), Some(42));
        assert_eq!(parse_counter("-1"), None);
        assert_eq!(parse_counter("18446744073709551616"), None);
    }
}
