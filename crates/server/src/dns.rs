//! Service discovery over DNS: every server answers, from its own applied
//! state, for the `berth.` zone:
//!
//! - `SERVICE.CLUSTER.berth.` A/AAAA: the addresses of the service's
//!   endpoints (its healthy RUNNING tasks' instances);
//! - `_PORT._tcp.SERVICE.CLUSTER.berth.` (or `_udp`) SRV: one record per
//!   endpoint publishing container port PORT, naming the host port and
//!   `TASK.SERVICE.CLUSTER.berth.` as target, whose address is in the
//!   additional section (and answers an A query of its own);
//! - anything else under `berth.`: NXDOMAIN; a service with no endpoints
//!   right now: no records (NOERROR).
//!
//! Names outside the zone are forwarded to `--dns-upstream` (by default the
//! first nameserver of berthd's /etc/resolv.conf), so tasks can use this
//! server for every name; with no upstream they are REFUSED. Answers carry
//! a TTL of [`TTL_SECS`] so a stopped task is forgotten quickly.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use berth_store::StateReader;
use berth_types::endpoints::{live_service_endpoints, Endpoint};
use berth_types::state::State;
use berth_types::Protocol;
use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

/// The zone Berth answers for.
pub const ZONE: &str = "berth";
/// Short, so that a task that stopped or failed its checks is not used for
/// long by clients that cache.
pub const TTL_SECS: u32 = 5;
/// The largest UDP answer without EDNS (RFC 1035); larger ones are sent
/// truncated, and the client asks again over TCP.
const UDP_PLAIN_LIMIT: usize = 512;
const UDP_EDNS_LIMIT: usize = 4096;
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(3);
/// Concurrent TCP clients; more wait for the accept.
const MAX_TCP_CLIENTS: usize = 256;

/// What to do with a query.
#[derive(Debug)]
pub enum Outcome {
    /// The answer, from the applied state.
    Answer(Message),
    /// A name outside the zone: ask the upstream resolver.
    Forward,
}

/// Answers `request` from `state` (pure: no I/O), or says it is not for us.
pub fn answer(state: &State, request: &Message) -> Outcome {
    let mut response = response_to(request);
    let [query] = request.queries() else {
        response.set_response_code(ResponseCode::FormErr);
        return Outcome::Answer(response);
    };
    if request.op_code() != OpCode::Query {
        response.set_response_code(ResponseCode::NotImp);
        return Outcome::Answer(response);
    }
    let name = query.name().to_lowercase();
    let labels: Vec<String> = name
        .iter()
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect();
    let Some((last, rest)) = labels.split_last() else {
        return Outcome::Forward;
    };
    if last != ZONE {
        return Outcome::Forward;
    }
    response.set_authoritative(true);
    let records = match rest {
        // SERVICE.CLUSTER
        [service, cluster] => service_records(state, cluster, service, &name, query.query_type()),
        // TASK.SERVICE.CLUSTER
        [task, service, cluster] if !task.starts_with('_') => {
            task_records(state, cluster, service, task, &name, query.query_type())
        }
        // _PORT._PROTO.SERVICE.CLUSTER
        [port, proto, service, cluster] => {
            srv_records(state, cluster, service, port, proto, query.query_type())
        }
        _ => None,
    };
    match records {
        Some((answers, additionals)) => {
            for record in answers {
                response.add_answer(record);
            }
            for record in additionals {
                response.add_additional(record);
            }
        }
        None => {
            response.set_response_code(ResponseCode::NXDomain);
        }
    }
    Outcome::Answer(response)
}

fn response_to(request: &Message) -> Message {
    let mut response = Message::new();
    response
        .set_id(request.id())
        .set_message_type(MessageType::Response)
        .set_op_code(request.op_code())
        .set_recursion_desired(request.recursion_desired())
        .set_recursion_available(false);
    for query in request.queries() {
        response.add_query(query.clone());
    }
    response
}

type Records = (Vec<Record>, Vec<Record>);

fn address_record(name: &Name, address: &str, query_type: RecordType) -> Option<Record> {
    let rdata = match (address.parse::<IpAddr>().ok()?, query_type) {
        (IpAddr::V4(ip), RecordType::A | RecordType::ANY) => RData::A(A(ip)),
        (IpAddr::V6(ip), RecordType::AAAA | RecordType::ANY) => RData::AAAA(AAAA(ip)),
        _ => return None,
    };
    Some(Record::from_rdata(name.clone(), TTL_SECS, rdata))
}

/// The endpoints DNS hands out: those that take new traffic. A draining
/// (DEACTIVATING) task, or one of a blue/green deployment that gets no
/// traffic yet, is left out, so clients follow the load balancers.
fn serving_endpoints(state: &State, cluster: &str, service: &str) -> Option<Vec<Endpoint>> {
    let mut endpoints = live_service_endpoints(state, cluster, service)?;
    endpoints.retain(Endpoint::takes_new_traffic);
    Some(endpoints)
}

fn service_records(
    state: &State,
    cluster: &str,
    service: &str,
    name: &Name,
    query_type: RecordType,
) -> Option<Records> {
    let endpoints = serving_endpoints(state, cluster, service)?;
    let mut addresses: Vec<&str> = endpoints.iter().map(|e| e.address.as_str()).collect();
    addresses.sort_unstable();
    addresses.dedup();
    let answers = addresses
        .into_iter()
        .filter_map(|a| address_record(name, a, query_type))
        .collect();
    Some((answers, Vec::new()))
}

fn task_records(
    state: &State,
    cluster: &str,
    service: &str,
    task: &str,
    name: &Name,
    query_type: RecordType,
) -> Option<Records> {
    let endpoints = serving_endpoints(state, cluster, service)?;
    let endpoint = endpoints
        .iter()
        .find(|e| e.task_id.eq_ignore_ascii_case(task))?;
    let answers = address_record(name, &endpoint.address, query_type)
        .into_iter()
        .collect();
    Some((answers, Vec::new()))
}

fn srv_records(
    state: &State,
    cluster: &str,
    service: &str,
    port: &str,
    proto: &str,
    query_type: RecordType,
) -> Option<Records> {
    let container_port: u32 = port.strip_prefix('_')?.parse().ok()?;
    let protocol = match proto {
        "_tcp" => Protocol::Tcp,
        "_udp" => Protocol::Udp,
        _ => return None,
    };
    let endpoints = serving_endpoints(state, cluster, service)?;
    let owner = Name::from_ascii(format!("{port}.{proto}.{service}.{cluster}.{ZONE}.")).ok()?;
    let (mut answers, mut additionals) = (Vec::new(), Vec::new());
    if !matches!(query_type, RecordType::SRV | RecordType::ANY) {
        return Some((answers, additionals));
    }
    for e in endpoints
        .iter()
        .filter(|e| e.container_port == container_port && e.protocol == protocol)
    {
        let Ok(host_port) = u16::try_from(e.port) else {
            continue;
        };
        let Ok(target) = Name::from_ascii(format!("{}.{service}.{cluster}.{ZONE}.", e.task_id))
        else {
            continue;
        };
        if let Some(address) = address_record(&target, &e.address, RecordType::ANY) {
            additionals.push(address);
        }
        answers.push(Record::from_rdata(
            owner.clone(),
            TTL_SECS,
            RData::SRV(SRV::new(0, 10, host_port, target)),
        ));
    }
    Some((answers, additionals))
}

/// The first `nameserver` of a resolv.conf, on port 53.
pub fn upstream_from_resolv_conf(text: &str) -> Option<SocketAddr> {
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("nameserver"))
        .find_map(|rest| rest.trim().parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
}

/// Where the resolver reads the applied state: the server's
/// [`StateReader`], or a plain state in tests.
pub trait StateSource: Send + Sync + 'static {
    fn answer(&self, request: &Message) -> Outcome;
}

impl StateSource for StateReader {
    fn answer(&self, request: &Message) -> Outcome {
        answer(&self.read().state, request)
    }
}

impl StateSource for std::sync::RwLock<State> {
    fn answer(&self, request: &Message) -> Outcome {
        answer(&self.read().unwrap_or_else(|p| p.into_inner()), request)
    }
}

struct Resolver<S> {
    state: S,
    upstream: Option<SocketAddr>,
}

impl<S: StateSource> Resolver<S> {
    /// The wire answer to a wire query; `limit` caps its size (UDP), with
    /// the truncation bit set when the records do not fit.
    async fn respond(&self, query: &[u8], limit: Option<usize>) -> Option<Vec<u8>> {
        let request = match Message::from_vec(query) {
            Ok(request) => request,
            Err(e) => {
                tracing::debug!(error = %e, "undecodable DNS query dropped");
                return None;
            }
        };
        let outcome = self.state.answer(&request);
        let response = match outcome {
            Outcome::Answer(response) => response,
            Outcome::Forward => return self.forward(query, &request).await,
        };
        let limit = limit.map(|plain| {
            request.extensions().as_ref().map_or(plain, |edns| {
                usize::from(edns.max_payload()).clamp(plain, UDP_EDNS_LIMIT)
            })
        });
        let bytes = response.to_vec().ok()?;
        match limit {
            Some(limit) if bytes.len() > limit => {
                let mut truncated = response_to(&request);
                truncated.set_authoritative(true).set_truncated(true);
                truncated.to_vec().ok()
            }
            _ => Some(bytes),
        }
    }

    async fn forward(&self, query: &[u8], request: &Message) -> Option<Vec<u8>> {
        let refused = || {
            let mut response = response_to(request);
            response.set_response_code(ResponseCode::Refused);
            response.to_vec().ok()
        };
        let Some(upstream) = self.upstream else {
            return refused();
        };
        let bind: SocketAddr = if upstream.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let exchange = async {
            let socket = UdpSocket::bind(bind).await?;
            socket.connect(upstream).await?;
            socket.send(query).await?;
            let mut buf = vec![0u8; UDP_EDNS_LIMIT];
            let n = socket.recv(&mut buf).await?;
            buf.truncate(n);
            Ok::<_, std::io::Error>(buf)
        };
        let failure = match tokio::time::timeout(UPSTREAM_TIMEOUT, exchange).await {
            Ok(Ok(answer)) => return Some(answer),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {UPSTREAM_TIMEOUT:?}"),
        };
        tracing::debug!(%upstream, error = %failure, "upstream DNS failed");
        let mut response = response_to(request);
        response.set_response_code(ResponseCode::ServFail);
        response.to_vec().ok()
    }
}

/// How many fresh ports `bind_udp_and_tcp` tries when the OS chooses one.
const FRESH_PORT_ATTEMPTS: usize = 8;

/// Binds UDP and TCP on one port. With port 0 the OS picks the UDP port
/// only; another process may already hold that number for TCP, so a few
/// fresh ports are tried before giving up. A port the caller named is
/// tried once: its error is the caller's to see.
async fn bind_udp_and_tcp(addr: SocketAddr) -> std::io::Result<(UdpSocket, TcpListener)> {
    let attempts = if addr.port() == 0 {
        FRESH_PORT_ATTEMPTS
    } else {
        1
    };
    let mut attempt = 1;
    loop {
        let udp = UdpSocket::bind(addr).await?;
        match TcpListener::bind(udp.local_addr()?).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && attempt < attempts => {
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Serves DNS on `addr`, UDP and TCP; returns the bound address (the same
/// port for both).
pub async fn serve<S: StateSource>(
    addr: SocketAddr,
    state: S,
    upstream: Option<SocketAddr>,
) -> std::io::Result<SocketAddr> {
    let (udp, tcp) = bind_udp_and_tcp(addr).await?;
    let bound = udp.local_addr()?;
    let resolver = Arc::new(Resolver { state, upstream });
    tracing::info!(%bound, ?upstream, "DNS serving the berth. zone");

    let udp = Arc::new(udp);
    let udp_resolver = resolver.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; UDP_EDNS_LIMIT];
        loop {
            let (n, peer) = match udp.recv_from(&mut buf).await {
                Ok(got) => got,
                Err(e) => {
                    tracing::warn!(error = %e, "DNS UDP receive failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let query = buf[..n].to_vec();
            let (socket, resolver) = (udp.clone(), udp_resolver.clone());
            // Forwarded queries wait on the upstream: never in this loop.
            tokio::spawn(async move {
                if let Some(answer) = resolver.respond(&query, Some(UDP_PLAIN_LIMIT)).await {
                    let _ = socket.send_to(&answer, peer).await;
                }
            });
        }
    });

    let clients = Arc::new(tokio::sync::Semaphore::new(MAX_TCP_CLIENTS));
    tokio::spawn(async move {
        loop {
            let Ok(permit) = clients.clone().acquire_owned().await else {
                return;
            };
            let (mut stream, _) = match tcp.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "DNS TCP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let resolver = resolver.clone();
            tokio::spawn(async move {
                let _permit = permit;
                // Length-prefixed messages (RFC 1035 4.2.2) until the client
                // closes or idles out.
                loop {
                    let read = async {
                        let len = stream.read_u16().await?;
                        let mut query = vec![0u8; usize::from(len)];
                        stream.read_exact(&mut query).await?;
                        Ok::<_, std::io::Error>(query)
                    };
                    let Ok(Ok(query)) = tokio::time::timeout(Duration::from_secs(10), read).await
                    else {
                        return;
                    };
                    let Some(answer) = resolver.respond(&query, None).await else {
                        return;
                    };
                    let Ok(len) = u16::try_from(answer.len()) else {
                        return;
                    };
                    if stream.write_u16(len).await.is_err()
                        || stream.write_all(&answer).await.is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    Ok(bound)
}

#[cfg(test)]
#[path = "dns_tests.rs"]
mod tests;
