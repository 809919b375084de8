//! berthd: a Berth control-plane server. It runs one Raft node (openraft;
//! the log in segment files, the vote in sled; tonic transport) and serves
//! the control API on the same port as the Raft traffic.

pub mod api;
pub mod audit;
pub mod auth;
pub mod backup_api;
pub mod dev;
pub mod dns;
pub mod downloads;
pub mod driver;
pub mod ecs;
pub mod error;
pub mod events_api;
pub mod identity;
pub mod identity_api;
pub mod limits;
pub mod metrics;
pub mod network;
pub mod node;
pub mod ops;
mod pipeline;
pub mod raft_service;
pub mod recovery;
pub mod rejoin;
pub mod schedules_api;
pub mod secrets_api;
pub mod services_api;
pub mod session;
mod session_wire;
pub mod small_pages;
pub mod stats;
pub mod stats_api;
pub mod tags_api;
pub mod tasks_api;
pub mod tls;
pub mod upgrade;
mod write_batching;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use berth_proto::pb;
use berth_store::NodeId;

pub use error::ServerError;
pub use node::{BerthNode, NodeConfig};

#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub node_id: NodeId,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub advertise: String,
    /// Members that form the cluster on first start; `None` for a server
    /// that will be added to an existing cluster with `berth server add`.
    pub initial_cluster: Option<BTreeMap<NodeId, String>>,
    pub heartbeat_ms: u64,
    pub election_timeout_ms: u64,
    pub snapshot_threshold: u64,
    pub keep_logs_after_snapshot: u64,
    pub request_timeout: Duration,
    /// Holds `ca.crt`, `ca.key`, `server.crt`, `server.key`, `admin.token`.
    pub pki_dir: PathBuf,
    pub agent_cert_lifetime: Duration,
    pub session: session::SessionConfig,
    /// Plain-HTTP /healthz and /readyz, when set.
    pub health_listen: Option<SocketAddr>,
    /// DNS for the `berth.` zone, when set (`dns`).
    pub dns_listen: Option<SocketAddr>,
    /// Where names outside the zone are forwarded; `None`: refused.
    pub dns_upstream: Option<SocketAddr>,
    /// The agent binary served at /downloads/berth-agent.
    pub agent_binary: Option<PathBuf>,
    /// `berthd dev`: run a local agent next to the server.
    pub dev_agent: Option<dev::DevAgentConfig>,
    pub limits: limits::Limits,
    /// The ECS-compatible API, when set (`ecs`).
    pub ecs: Option<EcsOptions>,
    /// Where Raft runs (its core, replication to the other servers, the
    /// state machine and the channels to the peers), apart from the agent
    /// sessions and API calls: a leader busy with thousands of sessions
    /// then still answers and sends heartbeats within openraft's deadline
    /// (one heartbeat interval). `None`: the runtime `start` is called on.
    pub raft_runtime: Option<tokio::runtime::Handle>,
}

/// `--ecs-listen` and its companions.
#[derive(Debug, Clone)]
pub struct EcsOptions {
    pub listen: SocketAddr,
    /// Plain HTTP instead of HTTPS: only allowed on a loopback address.
    pub plain_http: bool,
    /// The account id in ARNs.
    pub account_id: String,
    /// `berthd dev` only: any well-formed signature from loopback is an
    /// admin's.
    pub accept_any_signature: bool,
}

/// Parses `1=host:port,2=host:port`.
/// gRPC server reflection over every file in `proto/berth/v1`, in both
/// protocol versions (grpcurl asks for v1 and falls back to v1alpha; some
/// tools know only v1alpha). It reveals the schema alone, which is public
/// in `proto/`: the auth layer lets anyone call it (`auth::classify`).
#[allow(clippy::type_complexity)]
fn reflection() -> Result<
    (
        tonic_reflection::server::v1::ServerReflectionServer<
            impl tonic_reflection::server::v1::ServerReflection,
        >,
        tonic_reflection::server::v1alpha::ServerReflectionServer<
            impl tonic_reflection::server::v1alpha::ServerReflection,
        >,
    ),
    ServerError,
> {
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
    };
    let broken = |e: tonic_reflection::server::Error| {
        ServerError::internal(format!(
            "gRPC reflection: the built-in file descriptors are unusable: {e}"
        ))
    };
    Ok((
        builder().build_v1().map_err(broken)?,
        builder().build_v1alpha().map_err(broken)?,
    ))
}

pub fn parse_initial_cluster(text: &str) -> Result<BTreeMap<NodeId, String>, String> {
    let mut members = BTreeMap::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('=')
            .ok_or_else(|| format!("--initial-cluster entry {part:?} is not ID=HOST:PORT"))?;
        let id: NodeId = id.trim().parse().ok().filter(|id| *id > 0).ok_or_else(|| {
            format!("--initial-cluster entry {part:?}: node id must be a number of 1 or more")
        })?;
        let addr = addr.trim();
        if addr
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok())
            .is_none()
        {
            return Err(format!(
                "--initial-cluster entry {part:?}: {addr:?} is not HOST:PORT"
            ));
        }
        if members.insert(id, addr.to_string()).is_some() {
            return Err(format!("--initial-cluster names node {id} twice"));
        }
    }
    if members.is_empty() {
        return Err("--initial-cluster is empty; list the members as ID=HOST:PORT,...".into());
    }
    Ok(members)
}

/// How long a stopping leader tries to hand leadership over before it
/// stops anyway (a caught-up voter normally takes over in milliseconds).
const HANDOVER_WITHIN: Duration = Duration::from_secs(2);

/// A running server: its node and the task serving gRPC.
pub struct Server {
    pub node: BerthNode,
    log: berth_store::LogStore,
    pki: Arc<tls::SharedPki>,
    agent_cert_lifetime: Duration,
    hub: session::SessionHub,
    agent_binary: Option<PathBuf>,
    limits: limits::Limits,
    data_dir: PathBuf,
    ecs: Option<(EcsOptions, tokio::net::TcpListener)>,
}

impl Server {
    /// Opens the data dir, starts Raft, forms the cluster if this is the
    /// first start, and serves until `shutdown` resolves.
    pub async fn run(
        options: ServeOptions,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let fresh = identity::claim(&options)?;
        let pki = Arc::new(tls::SharedPki::load(&options.pki_dir, options.node_id)?);
        let (log, sm) = berth_store::open(&options.data_dir).map_err(|e| {
            ServerError::FailedPrecondition(format!(
                "data dir {} is not usable: {e}",
                options.data_dir.display()
            ))
        })?;
        let listener = tokio::net::TcpListener::bind(options.listen)
            .await
            .map_err(|e| {
                ServerError::FailedPrecondition(format!("cannot listen on {}: {e}", options.listen))
            })?;
        // Bound before anything starts, so a taken port fails the start.
        let ecs = match &options.ecs {
            Some(ecs) => Some((
                ecs.clone(),
                tokio::net::TcpListener::bind(ecs.listen)
                    .await
                    .map_err(|e| {
                        ServerError::FailedPrecondition(format!(
                            "cannot listen on --ecs-listen {}: {e}",
                            ecs.listen
                        ))
                    })?,
            )),
            None => None,
        };
        let config = NodeConfig {
            node_id: options.node_id,
            advertise: options.advertise.clone(),
            heartbeat_ms: options.heartbeat_ms,
            election_timeout_min_ms: options.election_timeout_ms,
            // openraft's leader lease equals the maximum election timeout,
            // and followers refuse votes until it runs out: a narrow window
            // keeps failover short while still spreading candidates apart.
            election_timeout_max_ms: options.election_timeout_ms + options.election_timeout_ms / 4,
            snapshot_threshold: options.snapshot_threshold,
            keep_logs_after_snapshot: options.keep_logs_after_snapshot,
            request_timeout: options.request_timeout,
        };
        let peers = Arc::new(
            network::Peers::new(pki.current().peer_tls()).on_runtime(options.raft_runtime.clone()),
        );
        tokio::spawn(reload_pki_on_hangup(pki.clone(), peers.clone()));
        let session_events = sm.reader().subscribe_events();
        let controller_events = sm.reader().subscribe_events();
        let transport: Arc<dyn network::Transport> = peers.clone();
        let node = BerthNode::start_on(
            &config,
            log.clone(),
            sm,
            peers,
            transport,
            options.raft_runtime.as_ref(),
        )
        .await?;
        let hub = session::SessionHub::new(node.clone(), options.session);
        tokio::spawn(hub.clone().route_events(session_events));
        tokio::spawn(hub.clone().write_reports());
        spawn_controllers(&node, &hub, controller_events);
        tokio::spawn(upgrade::learn_member_levels(node.clone()));
        let server = Server {
            node,
            log,
            pki,
            agent_cert_lifetime: options.agent_cert_lifetime,
            hub,
            agent_binary: options.agent_binary.clone(),
            limits: options.limits,
            data_dir: options.data_dir.clone(),
            ecs,
        };
        if let Some(config) = options.dev_agent.clone() {
            tokio::spawn(dev::run_local_agent(
                server.node.clone(),
                server.pki.current(),
                config,
            ));
        }
        if let Some(addr) = options.dns_listen {
            dns::serve(addr, server.node.state().clone(), options.dns_upstream)
                .await
                .map_err(|e| {
                    ServerError::FailedPrecondition(format!(
                        "cannot listen on --dns-listen {addr}: {e}"
                    ))
                })?;
        }
        if let Some(addr) = options.health_listen {
            let health = berth_daemon::HealthState::default();
            let bound = berth_daemon::serve_health(addr, health.clone())
                .await
                .map_err(|e| {
                    ServerError::FailedPrecondition(format!(
                        "cannot listen on --health-listen {addr}: {e}"
                    ))
                })?;
            tracing::info!(%bound, "health endpoint serving");
            let (node, hub) = (server.node.clone(), server.hub.clone());
            health.set_metrics(Arc::new(move || node.render_metrics(hub.connected_count())));
            let node = server.node.clone();
            health.set_route(
                "/sd/agents",
                "application/json",
                Arc::new(move || {
                    let applied = node.state().read();
                    let groups = berth_types::monitoring::agent_targets(&applied.state);
                    serde_json::to_string(&groups).unwrap_or_else(|_| "[]".into())
                }),
            );
            let node = server.node.clone();
            health.set_route(
                "/sd/servers",
                "application/json",
                Arc::new(move || server_targets(&node, bound.port())),
            );
            let node = server.node.clone();
            tokio::spawn(async move {
                loop {
                    health.set_ready(node.is_ready());
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            });
        }

        rejoin::form_or_rejoin(
            &server.node,
            &options.data_dir,
            fresh,
            options.initial_cluster.as_ref(),
        )
        .await?;
        if let Some(token) = server.pki.current().admin_token.clone() {
            tokio::spawn(bootstrap_admin_token(server.node.clone(), token));
        }
        tracing::info!(
            node_id = options.node_id,
            cluster_id = %server.pki.current().cluster_id(),
            listen = %options.listen,
            advertise = %options.advertise,
            "berthd serving"
        );
        server.serve(listener, shutdown).await
    }

    async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let ops = ops::Ops::new(self.node.clone());
        let api = api::Api {
            node: self.node.clone(),
            ops: ops.clone(),
        };
        // Set when shutdown starts: endless streams (agent sessions, event
        // watches, peers' Raft pipelines) end then, or the server would wait
        // for them instead of exiting.
        let (closing_tx, closing) = tokio::sync::watch::channel(false);
        let raft = raft_service::RaftRpc {
            node: self.node.clone(),
            closing: closing.clone(),
        };
        let identity = identity_api::IdentityApi {
            node: self.node.clone(),
            pki: self.pki.clone(),
            agent_cert_lifetime: self.agent_cert_lifetime,
            ops: ops.clone(),
        };
        let secrets = secrets_api::SecretsApi {
            node: self.node.clone(),
            pki: self.pki.clone(),
        };
        let local_audit = Arc::new(audit::LocalAudit::new(
            &self.data_dir,
            audit::DEFAULT_MAX_BYTES,
            audit::DEFAULT_KEEP,
        ));
        if let Some((ecs, listener)) = self.ecs {
            let endpoint = Arc::new(ecs::http::EcsEndpoint {
                api: ecs::EcsApi {
                    ops: ops.clone(),
                    account_id: ecs.account_id.clone(),
                    pki: Some(self.pki.clone()),
                },
                node: self.node.clone(),
                pki: self.pki.clone(),
                audit: local_audit.clone(),
                accept_any_signature: ecs.accept_any_signature,
            });
            let acceptors = (!ecs.plain_http).then(|| self.pki.acceptors());
            ecs::http::spawn(
                endpoint,
                listener,
                acceptors,
                self.limits.tls_handshake_timeout,
            );
            tracing::info!(
                listen = %ecs.listen,
                https = !ecs.plain_http,
                "ECS-compatible API serving"
            );
        }
        let auth = auth::AuthLayer {
            authorizer: auth::Authorizer::audited(
                self.node.clone(),
                self.pki.current().cluster_id().to_string(),
                limits::AddressRate::new(&self.limits),
                local_audit.clone(),
            ),
        };
        let max = network::MAX_MESSAGE_BYTES;
        let api_max = limits::MAX_API_MESSAGE_BYTES;
        let (reflection_v1, reflection_v1alpha) = reflection()?;
        // Agents that chose the session transport in the handshake are
        // served beside the gRPC server; every other connection goes to it.
        let session_hub = self.hub.clone();
        let session_authorizer = auth.authorizer.clone();
        let incoming = tokio_stream::StreamExt::filter_map(
            limits::tls_incoming(
                listener,
                self.pki.acceptors(),
                self.limits.tls_handshake_timeout,
            ),
            move |connection| match connection {
                Ok(tls) if session_wire::is_session(&tls) => {
                    tokio::spawn(session_wire::serve(
                        session_hub.clone(),
                        session_authorizer.clone(),
                        tls,
                    ));
                    None
                }
                other => Some(other.map(write_batching::BatchedWrites::new)),
            },
        );
        // Agent sessions are endless streams: end them when shutdown starts,
        // or the server would wait for them instead of exiting (the agents
        // reconnect to another server).
        //
        // A storage failure (a full disk, an I/O error) stops Raft for good:
        // after a failed write the end of the log on disk is unknown (only
        // replay on the next start settles it), and openraft shuts its core
        // down on any storage error. Like etcd after a failed
        // WAL write, the server then stops serving and exits non-zero, and
        // its supervisor (systemd, compose) starts it again: it recovers from
        // its data dir once the disk has room. Nothing was acknowledged that
        // is not on disk.
        let hub = self.hub.clone();
        let node = self.node.clone();
        let failed = Arc::new(std::sync::OnceLock::new());
        let failed_in = failed.clone();
        let data_dir = self.data_dir.clone();
        let shutdown = async move {
            tokio::select! {
                () = shutdown => {
                    // Still serving, so the successor's vote request reaches
                    // this server, which grants it.
                    if let Some(leader) = node.hand_over_leadership(HANDOVER_WITHIN).await {
                        tracing::info!(new_leader = leader, "stopping after the handover");
                    }
                }
                error = node.fatal() => {
                    tracing::error!(
                        %error,
                        data_dir = %data_dir.display(),
                        "Raft stopped: its storage failed (is the disk full or failing?); \
                         this server acknowledges no more writes and exits so that its \
                         supervisor restarts it once the disk is usable; every write it \
                         acknowledged is on disk"
                    );
                    let _ = failed_in.set(error);
                }
            }
            hub.drop_all_sessions("");
            closing_tx.send_replace(true);
        };
        let result = tonic::transport::Server::builder()
            .timeout(limits::REQUEST_TIMEOUT)
            .max_concurrent_streams(limits::MAX_CONCURRENT_STREAMS)
            .http2_max_header_list_size(limits::MAX_HEADER_LIST_BYTES)
            // Finds dead peers (a host that vanished) on idle connections.
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(20)))
            // HTTP/1.1 for plain HTTPS downloads (curl in the installer).
            .accept_http1(true)
            .layer(auth)
            .add_service(
                pb::raft_service_server::RaftServiceServer::new(raft)
                    .max_decoding_message_size(max)
                    .max_encoding_message_size(max),
            )
            .add_service(
                pb::cluster_service_server::ClusterServiceServer::new(api.clone())
                    .max_decoding_message_size(api_max),
            )
            .add_service(
                pb::task_definition_service_server::TaskDefinitionServiceServer::new(api.clone())
                    .max_decoding_message_size(api_max),
            )
            .add_service(
                pb::tag_service_server::TagServiceServer::new(api.clone())
                    .max_decoding_message_size(api_max),
            )
            .add_service(
                pb::control_plane_service_server::ControlPlaneServiceServer::new(api)
                    .max_decoding_message_size(api_max),
            )
            .add_service(
                pb::auth_service_server::AuthServiceServer::new(identity.clone())
                    .max_decoding_message_size(api_max),
            )
            .add_service(
                pb::activation_service_server::ActivationServiceServer::new(identity.clone())
                    .max_decoding_message_size(api_max),
            )
            .add_service(
                pb::instance_service_server::InstanceServiceServer::new(identity.clone())
                    .max_decoding_message_size(api_max),
            )
            .add_service(
                pb::agent_service_server::AgentServiceServer::new(identity)
                    .max_decoding_message_size(api_max),
            )
            .add_service(
                pb::agent_session_service_server::AgentSessionServiceServer::new(self.hub.clone())
                    .max_decoding_message_size(session::MAX_AGENT_MESSAGE_BYTES),
            )
            .add_service(downloads::Downloads::new(self.agent_binary.clone()))
            .add_service(
                pb::task_service_server::TaskServiceServer::new(tasks_api::TasksApi {
                    hub: self.hub.clone(),
                    ops: ops.clone(),
                })
                .max_decoding_message_size(api_max),
            )
            .add_service(
                pb::stats_service_server::StatsServiceServer::new(stats_api::StatsApi {
                    node: self.node.clone(),
                    hub: self.hub.clone(),
                })
                .max_decoding_message_size(api_max),
            )
            .add_service(
                pb::schedule_service_server::ScheduleServiceServer::new(
                    schedules_api::SchedulesApi { ops: ops.clone() },
                )
                .max_decoding_message_size(api_max),
            )
            .add_service(
                pb::secret_service_server::SecretServiceServer::new(secrets.clone())
                    .max_decoding_message_size(api_max),
            )
            .add_service(pb::agent_secrets_service_server::AgentSecretsServiceServer::new(secrets))
            .add_service(
                pb::service_service_server::ServiceServiceServer::new(services_api::ServicesApi {
                    ops,
                })
                .max_decoding_message_size(api_max),
            )
            .add_service(pb::backup_service_server::BackupServiceServer::new(
                backup_api::BackupApi {
                    node: self.node.clone(),
                },
            ))
            .add_service(
                pb::event_service_server::EventServiceServer::new(events_api::EventsApi {
                    node: self.node.clone(),
                    local_audit,
                    closing,
                })
                .max_decoding_message_size(api_max),
            )
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await;
        // In-flight requests have been answered; now stop Raft and make sure
        // everything it wrote is on disk before the process exits.
        tracing::info!("shutting down");
        self.node.shutdown().await;
        if let Err(e) = self.log.flush().await {
            tracing::error!(error = %e, "final flush failed");
        }
        if let Some(error) = failed.get() {
            return Err(ServerError::Unavailable(format!(
                "stopped because the Raft storage in {} failed ({error}); free space or \
                 repair the disk, then start berthd again",
                self.data_dir.display()
            )));
        }
        result.map_err(|e| ServerError::Internal(format!("serving: {e}")))
    }
}

/// Prometheus HTTP service discovery for the servers: each member's host
/// (from its Raft address) with this server's health port, which assumes
/// every server listens for health on the same port (as the packaged
/// configurations do).
fn server_targets(node: &BerthNode, health_port: u16) -> String {
    let metrics = node.metrics();
    let groups: Vec<serde_json::Value> = metrics
        .membership_config
        .membership()
        .nodes()
        .filter_map(|(id, member)| {
            let host = member.addr.rsplit_once(':').map(|(h, _)| h)?;
            Some(serde_json::json!({
                "targets": [format!("{host}:{health_port}")],
                "labels": { "berth_server_id": id.to_string() },
            }))
        })
        .collect();
    serde_json::Value::Array(groups).to_string()
}

/// Starts the leader's controllers on this server (they act only while it
/// leads) and ends the agent sessions whenever it stops leading.
fn spawn_controllers(
    node: &BerthNode,
    hub: &session::SessionHub,
    events: tokio::sync::mpsc::UnboundedReceiver<Arc<[berth_types::StateEvent]>>,
) {
    let session = hub.config();
    let liveness = berth_controllers::liveness::Liveness {
        disconnect_after_ms: millis(session.disconnect_after()),
        grace_ms: millis(session.grace),
    };
    let driver = driver::Driver::new(node.clone(), driver::SystemClock, Arc::new(hub.clone()))
        .with(liveness)
        .with(berth_controllers::services::Services)
        .with(berth_controllers::scheduling::Scheduling)
        .with(berth_controllers::purge::Purge)
        .with(berth_controllers::schedules::Schedules);
    let mut leading = driver.leadership();
    tokio::spawn(driver.run(events));
    let (node, hub) = (node.clone(), hub.clone());
    tokio::spawn(async move {
        while leading.changed().await.is_ok() {
            if !*leading.borrow_and_update() {
                hub.drop_all_sessions(&session::leader_address(&node));
            }
        }
    });
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Puts the bootstrap admin token into the replicated state once, from
/// whichever server leads. Idempotent: once the token exists (even revoked)
/// the command changes nothing.
/// Reads the PKI dir again on every SIGHUP: the listener's next handshake
/// and the next connection to a peer use what is there (a reissued
/// certificate, a rotated CA's trust bundle, a new data key). A dir that
/// does not load is logged and changes nothing.
async fn reload_pki_on_hangup(pki: Arc<tls::SharedPki>, peers: Arc<network::Peers>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(hangups) => hangups,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; the PKI reloads only at restart");
            return;
        }
    };
    while hangups.recv().await.is_some() {
        match pki.reload() {
            Ok(current) => {
                peers.set_tls(current.peer_tls());
                let roots = berth_pki::trust::roots(&current.root_pem)
                    .map(|roots| {
                        roots
                            .iter()
                            .map(|root| root.digest[..16].to_string())
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .unwrap_or_default();
                tracing::info!(trusted_roots = %roots, "PKI reloaded on SIGHUP");
            }
            Err(e) => {
                tracing::error!(error = %e, "PKI reload on SIGHUP failed; the certificates in use stay")
            }
        }
    }
}

async fn bootstrap_admin_token(node: BerthNode, token: berth_pki::tokens::ApiTokenSecret) {
    loop {
        let present = node.state().read().state.api_token(&token.id).is_some();
        if present {
            return;
        }
        if node.is_leader() {
            let command = berth_types::Command::BootstrapAdminToken {
                id: token.id.clone(),
                secret_hash: berth_pki::tokens::hash_secret(&token.secret),
                at_ms: api::now_ms(),
            };
            match node.write(command).await {
                Ok(_) => {
                    tracing::info!(token_id = %token.id, "bootstrap admin token installed");
                    return;
                }
                Err(e) => tracing::debug!(error = %e, "bootstrap admin token not installed yet"),
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_cluster_parses_and_rejects_bad_entries() {
        let members = parse_initial_cluster("1=127.0.0.1:7401, 2=127.0.0.1:7402").unwrap();
        assert_eq!(members.len(), 2);
        assert_eq!(members[&2], "127.0.0.1:7402");
        for (bad, needle) in [
            ("1=127.0.0.1:7401,1=127.0.0.1:7402", "twice"),
            ("x=127.0.0.1:7401", "node id"),
            ("0=127.0.0.1:7401", "node id"),
            ("1=127.0.0.1", "HOST:PORT"),
            ("127.0.0.1:7401", "ID=HOST:PORT"),
            ("", "empty"),
        ] {
            let err = parse_initial_cluster(bad).unwrap_err();
            assert!(err.contains(needle), "{bad:?}: {err}");
        }
    }
}
