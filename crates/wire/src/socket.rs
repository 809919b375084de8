//! What finds a dead peer on a session connection. gRPC sessions had
//! HTTP/2 pings for it; this transport leaves it to the kernel, which costs
//! no wakeup in either process.

use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::net::TcpStream;

/// Idle time before the first keepalive probe, and the probes' interval.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_PROBES: u32 = 3;
/// Sent data unacknowledged for this long ends the connection: a peer that
/// vanished while heartbeats or assignments were going to it.
const USER_TIMEOUT: Duration = Duration::from_secs(30);

/// Turns on TCP keepalive (a silent peer is probed after 30 s and dropped
/// about 30 s later) and a 30 s TCP user timeout. A socket that refuses an
/// option keeps working without it; the session's own heartbeats still
/// mark a silent agent DISCONNECTED on the server.
pub fn watch_for_dead_peer(tcp: &TcpStream) {
    let socket = SockRef::from(tcp);
    let keepalive = TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_PROBES);
    if let Err(error) = socket.set_tcp_keepalive(&keepalive) {
        tracing::debug!(%error, "TCP keepalive not set on a session connection");
    }
    if let Err(error) = socket.set_tcp_user_timeout(Some(USER_TIMEOUT)) {
        tracing::debug!(%error, "TCP user timeout not set on a session connection");
    }
}
