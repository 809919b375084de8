//! Ports bound on the host, as the kernel lists them in /proc/net: what the
//! agent reports when it connects so that the scheduler never hands a port
//! some other program already holds to a task (a fixed `hostPort` or one
//! from the dynamic range).
//!
//! Listening TCP sockets and unconnected UDP ones count; connected sockets
//! (outgoing connections, a resolver's query) hold their port only briefly
//! and would fill the list with noise.

use berth_proto::pb;

/// TCP_LISTEN in /proc/net/tcp's `st` column.
const TCP_LISTEN: &str = "0A";
/// TCP_CLOSE, which an unconnected UDP socket shows.
const UDP_UNCONNECTED: &str = "07";

/// The ports bound on this host now, sorted, without duplicates (IPv4 and
/// IPv6 listeners on one port are one port). Unreadable tables count as
/// empty: a host without IPv6 has no tcp6 file.
pub fn bound_ports() -> Vec<pb::BoundPort> {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let mut ports: Vec<(u32, &'static str)> = Vec::new();
    for (path, protocol) in [
        ("/proc/net/tcp", "tcp"),
        ("/proc/net/tcp6", "tcp"),
        ("/proc/net/udp", "udp"),
        ("/proc/net/udp6", "udp"),
    ] {
        ports.extend(
            parse_table(&read(path), protocol)
                .into_iter()
                .map(|p| (p, protocol)),
        );
    }
    ports.sort_unstable();
    ports.dedup();
    ports
        .into_iter()
        .map(|(port, protocol)| pb::BoundPort {
            port,
            protocol: protocol.to_string(),
        })
        .collect()
}

/// The bound ports in one /proc/net table (`tcp`, `tcp6`, `udp`, `udp6`).
fn parse_table(text: &str, protocol: &str) -> Vec<u32> {
    let wanted = if protocol == "tcp" {
        TCP_LISTEN
    } else {
        UDP_UNCONNECTED
    };
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let _slot = fields.next()?;
            let local = fields.next()?;
            let remote = fields.next()?;
            let state = fields.next()?;
            if state != wanted {
                return None;
            }
            // A UDP socket with a peer is a client's, not a server's.
            if protocol == "udp" && !remote_is_unset(remote) {
                return None;
            }
            let (_, port) = local.rsplit_once(':')?;
            u32::from_str_radix(port, 16).ok().filter(|p| *p != 0)
        })
        .collect()
}

fn remote_is_unset(remote: &str) -> bool {
    remote.chars().all(|c| c == '0' || c == ':')
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1001 1 0 100 0 0 10 0
   1: 00000000:C001 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1002 1 0 100 0 0 10 0
   2: 0100007F:D2F0 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 1003 1 0 20 4 30 10 -1
";
    const UDP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  10: 00000000000000000000000000000000:0035 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 2001 2 0 0
  11: 00000000000000000000000001000000:A1B2 00000000000000000000000001000000:0035 01 00000000:00000000 00:00000000 00000000     0        0 2002 2 0 0
  12: 00000000000000000000000001000000:A1B3 00000000000000000000000001000000:0035 07 00000000:00000000 00:00000000 00000000     0        0 2003 2 0 0
";

    #[test]
    fn listening_tcp_and_unconnected_udp_ports_are_bound() {
        // 8080 and 49153 listen; the connection from port 54000 does not.
        assert_eq!(parse_table(TCP, "tcp"), vec![8080, 49153]);
        // The DNS server on 53 is bound; a resolver's query sockets (with a
        // peer) are not, whatever state they show.
        assert_eq!(parse_table(UDP6, "udp"), vec![53]);
        assert!(parse_table("", "tcp").is_empty());
        assert!(parse_table("header\n garbage line\n", "udp").is_empty());
    }

    #[test]
    fn this_hosts_listener_is_found() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = u32::from(listener.local_addr().unwrap().port());
        let found = bound_ports();
        assert!(
            found.iter().any(|p| p.port == port && p.protocol == "tcp"),
            "{port}/tcp not among {} bound ports",
            found.len()
        );
    }
}
