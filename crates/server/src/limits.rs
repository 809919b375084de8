//! Limits that keep one caller from exhausting a server: a per-address rate
//! for unauthenticated calls, the TLS accept loop (handshake timeout, a cap
//! on handshakes in progress), and the bounds of HTTP/2 and gRPC messages.
//! Field-level bounds of requests live in `berth_types::limits`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;

/// Largest gRPC message of the control API and agent sessions (Raft's own
/// service allows `network::MAX_MESSAGE_BYTES` for snapshot chunks). A task
/// definition is at most 64 KiB encoded, and no other request comes close.
pub const MAX_API_MESSAGE_BYTES: usize = 1024 * 1024;
/// Concurrent HTTP/2 streams on one connection (an agent uses one, plus a
/// few for log reads; a CLI a handful).
pub const MAX_CONCURRENT_STREAMS: u32 = 256;
/// Headers of one HTTP/2 request, all together (a bearer token and gRPC's
/// own headers are well under 1 KiB).
pub const MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;
/// TLS handshakes in progress at once; more connections wait in the
/// kernel's backlog to be accepted (a fleet of agents starting at once
/// queues, it is not refused). A few tens of KiB each at most.
pub const MAX_PENDING_HANDSHAKES: usize = 1024;
/// How long a unary call may take before the server gives up on it. Long
/// enough for `berth server add` (which waits up to 120 s for a learner);
/// streams (sessions, log follows) are not bound by it.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(150);
/// Addresses the rate limiter remembers; beyond it, addresses whose bucket
/// is full again are forgotten, and an unknown address is refused while
/// none can be.
const MAX_TRACKED_ADDRESSES: usize = 65_536;

/// The server's DoS limits that operators can tune.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Unauthenticated calls (registration, downloads) per second from one
    /// address; 0 turns the limit off.
    pub anonymous_per_sec: f64,
    /// Unauthenticated calls one address may make at once before the rate
    /// applies.
    pub anonymous_burst: u32,
    /// A connection that has not finished its TLS handshake by then is closed.
    pub tls_handshake_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            anonymous_per_sec: 5.0,
            anonymous_burst: 20,
            tls_handshake_timeout: Duration::from_secs(10),
        }
    }
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// A token bucket per client address (per /64 for IPv6, which a single
/// host often has whole).
pub struct AddressRate {
    per_sec: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl AddressRate {
    /// `None` when the limit is off.
    pub fn new(limits: &Limits) -> Option<Arc<Self>> {
        (limits.anonymous_per_sec > 0.0).then(|| {
            Arc::new(Self {
                per_sec: limits.anonymous_per_sec,
                burst: f64::from(limits.anonymous_burst.max(1)),
                buckets: Mutex::new(HashMap::new()),
            })
        })
    }

    /// Takes one token for `ip`; false when its bucket is empty.
    pub fn allow(&self, ip: IpAddr) -> bool {
        self.allow_at(ip, Instant::now())
    }

    fn refill(&self, bucket: &Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        (bucket.tokens + elapsed * self.per_sec).min(self.burst)
    }

    fn allow_at(&self, ip: IpAddr, now: Instant) -> bool {
        let key = match ip {
            IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            IpAddr::V4(_) => ip,
        };
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if !buckets.contains_key(&key) && buckets.len() >= MAX_TRACKED_ADDRESSES {
            let burst = self.burst;
            buckets.retain(|_, b| self.refill(b, now) < burst);
            if buckets.len() >= MAX_TRACKED_ADDRESSES {
                return false;
            }
        }
        let bucket = buckets.entry(key).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        bucket.tokens = self.refill(bucket, now);
        bucket.at = now;
        if bucket.tokens < 1.0 {
            return false;
        }
        bucket.tokens -= 1.0;
        true
    }
}

/// Accepts TCP connections and completes their TLS handshakes, each within
/// `handshake_timeout` and at most [`MAX_PENDING_HANDSHAKES`] at once, so a
/// client that opens connections and never speaks holds nothing for long.
/// (tonic's own TLS acceptor waits for a handshake forever.)
pub fn tls_incoming(
    listener: TcpListener,
    acceptors: tokio::sync::watch::Receiver<TlsAcceptor>,
    handshake_timeout: Duration,
) -> ReceiverStream<Result<TlsStream<tokio::net::TcpStream>, std::io::Error>> {
    let (tx, rx) = mpsc::channel(MAX_PENDING_HANDSHAKES);
    let pending = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let Ok(permit) = pending.clone().acquire_owned().await else {
                return;
            };
            let (tcp, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors and the like: back off
                        // rather than spin.
                        tracing::warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = tx.closed() => return,
            };
            // Nagle's algorithm with delayed ACKs adds ~40 ms to every
            // small request/response.
            let _ = tcp.set_nodelay(true);
            // The newest one: a reloaded PKI serves the next handshake.
            let acceptor = acceptors.borrow().clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let _permit = permit;
                match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(tls)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::info!(
                        %peer,
                        timeout_ms = u64::try_from(handshake_timeout.as_millis()).unwrap_or(u64::MAX),
                        "TLS handshake not finished in time; connection closed"
                    ),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(per_sec: f64, burst: u32) -> Arc<AddressRate> {
        AddressRate::new(&Limits {
            anonymous_per_sec: per_sec,
            anonymous_burst: burst,
            ..Limits::default()
        })
        .expect("a limit")
    }

    #[test]
    fn each_address_gets_its_burst_then_the_rate() {
        let limit = rate(2.0, 3);
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let t0 = Instant::now();
        assert!((0..3).all(|_| limit.allow_at(a, t0)));
        assert!(!limit.allow_at(a, t0), "the burst is used up");
        assert!(limit.allow_at(b, t0), "another address has its own bucket");
        // Two tokens a second: after half a second, one more call.
        let later = t0 + Duration::from_millis(500);
        assert!(limit.allow_at(a, later));
        assert!(!limit.allow_at(a, later));
    }

    #[test]
    fn an_ipv6_host_cannot_escape_by_changing_its_interface_id() {
        let limit = rate(1.0, 1);
        let t0 = Instant::now();
        assert!(limit.allow_at("2001:db8::1".parse().unwrap(), t0));
        assert!(!limit.allow_at("2001:db8::2".parse().unwrap(), t0));
        assert!(limit.allow_at("2001:db8:0:1::1".parse().unwrap(), t0));
    }

    #[test]
    fn a_zero_rate_turns_the_limit_off() {
        assert!(AddressRate::new(&Limits {
            anonymous_per_sec: 0.0,
            ..Limits::default()
        })
        .is_none());
    }
}
