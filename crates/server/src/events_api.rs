//! EventService: the journal's events as a resumable stream, the audit log
//! (replicated records plus every server's local ones), and retention.

use std::sync::Arc;
use std::time::Duration;

use berth_proto::pb;
use berth_proto::pb::event_service_client::EventServiceClient;
use berth_types::journal::{Cursor, Event, EventFilter, EventType, Pruned, Retention};
use berth_types::{Command, FieldError};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::audit::{LocalAudit, LocalRecord};
use crate::error::ServerError;
use crate::node::BerthNode;

/// Events per stream message.
const PAGE: usize = 500;
/// How long a server waits for another's local audit records.
const PEER_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub struct EventsApi {
    pub node: BerthNode,
    pub local_audit: Arc<LocalAudit>,
    /// Turns true when the server starts shutting down: followed streams
    /// end then, or the server would wait for them instead of exiting
    /// (clients resume from their cursor on another server).
    pub closing: tokio::sync::watch::Receiver<bool>,
}

fn pruned(p: Pruned) -> Status {
    Status::out_of_range(format!(
        "events up to cursor {} were dropped by the journal's retention; resume from {} (or from a time with since_ms; the berth CLI: --since) and expect a gap",
        p.through, p.through
    ))
}

fn filter_of(req: &pb::WatchEventsRequest) -> Result<EventFilter, FieldError> {
    let types = req
        .types
        .iter()
        .map(|t| EventType::parse(t).map_err(|e| FieldError::new("types", e)))
        .collect::<Result<Vec<_>, _>>()?;
    let non_empty = |s: &String| Some(s.clone()).filter(|s| !s.is_empty());
    Ok(EventFilter {
        types,
        cluster: non_empty(&req.cluster),
        resource: non_empty(&req.resource),
        actor: non_empty(&req.actor),
        since_ms: Some(req.since_ms).filter(|s| *s > 0),
    })
}

/// The next page of matching events after `after`, and where the next
/// read starts: past every record examined, matching or not.
fn next_page(
    node: &BerthNode,
    after: Option<Cursor>,
    filter: &EventFilter,
) -> Result<(Vec<Event>, Option<Cursor>), Pruned> {
    let applied = node.state().read();
    let ring = applied.state.journal().events();
    let page = ring.after(after, PAGE, |e| filter.accepts(e))?;
    let next = if page.len() == PAGE {
        page.last().map(|e| e.cursor)
    } else {
        after.max(ring.newest())
    };
    Ok((page, next))
}

fn local_to_wire(record: LocalRecord) -> pb::AuditRecord {
    pb::AuditRecord {
        cursor: String::new(),
        at_ms: record.at_ms,
        actor: Some((&record.actor).into()),
        command: String::new(),
        resource: String::new(),
        outcome: record.outcome,
        error: record.reason,
        server_id: record.server_id,
        claimed: record.claimed,
        code: record.code,
    }
}

fn retention_reply(node: &BerthNode) -> pb::JournalRetention {
    let applied = node.state().read();
    let journal = applied.state.journal();
    let retention = journal.retention();
    pb::JournalRetention {
        max_records: retention.max_records,
        max_age_secs: u64::try_from(retention.max_age_ms / 1000).unwrap_or(0),
        events: u32::try_from(journal.events().len()).unwrap_or(u32::MAX),
        audit_records: u32::try_from(journal.audit().len()).unwrap_or(u32::MAX),
        pruned_through: journal
            .events()
            .pruned_through()
            .map(|c| c.to_string())
            .unwrap_or_default(),
    }
}

impl EventsApi {
    fn local_records(&self, req: &pb::ListAuditRecordsRequest) -> Vec<pb::AuditRecord> {
        self.local_audit
            .read()
            .into_iter()
            .filter(|r| req.since_ms <= 0 || r.at_ms >= req.since_ms)
            .filter(|r| {
                req.actor.is_empty()
                    || r.actor.principal.matches(&req.actor)
                    || r.claimed == req.actor
                    || r.claimed
                        .split_once(':')
                        .is_some_and(|(_, id)| id == req.actor)
            })
            // Local records name no resource: a resource filter selects
            // replicated records only.
            .filter(|_| req.resource.is_empty())
            .map(local_to_wire)
            .collect()
    }

    /// Every other member's local records; servers that do not answer are
    /// named in the reply rather than failing it.
    async fn peer_records(
        &self,
        req: &pb::ListAuditRecordsRequest,
    ) -> (Vec<pb::AuditRecord>, Vec<String>) {
        let membership = self.node.metrics().membership_config.membership().clone();
        let peers: Vec<(u64, String)> = membership
            .nodes()
            .filter(|(id, _)| **id != self.node.id())
            .map(|(id, node)| (*id, node.addr.clone()))
            .collect();
        let asks = peers.into_iter().map(|(id, addr)| {
            let mut ask = req.clone();
            ask.local_only = true;
            let channel = self.node.peers().channel(&addr);
            async move {
                let channel = channel.map_err(|e| format!("server {id} ({addr}): {e}"))?;
                let mut request = Request::new(ask);
                request.set_timeout(PEER_TIMEOUT);
                let mut client = EventServiceClient::new(channel);
                let call = client.list_audit_records(request);
                match tokio::time::timeout(PEER_TIMEOUT, call).await {
                    Ok(Ok(reply)) => Ok(reply.into_inner().records),
                    Ok(Err(status)) => Err(format!("server {id} ({addr}): {}", status.message())),
                    Err(_) => Err(format!("server {id} ({addr}): no answer in time")),
                }
            }
        });
        let mut records = Vec::new();
        let mut unreachable = Vec::new();
        for answer in futures::future::join_all(asks).await {
            match answer {
                Ok(r) => records.extend(r),
                Err(e) => unreachable.push(e),
            }
        }
        (records, unreachable)
    }
}

#[tonic::async_trait]
impl pb::event_service_server::EventService for EventsApi {
    type WatchEventsStream = ReceiverStream<Result<pb::WatchEventsResponse, Status>>;

    #[tracing::instrument(skip_all, fields(from = %request.get_ref().from, follow = request.get_ref().follow))]
    async fn watch_events(
        &self,
        request: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        let req = request.into_inner();
        let filter = filter_of(&req).map_err(ServerError::from_field)?;
        let mut after = match req.from.trim() {
            "" => None,
            text => Some(
                text.parse::<Cursor>()
                    .map_err(|e| ServerError::from_field(FieldError::new("from", e)))?,
            ),
        };
        // Everything acknowledged before the call is in the first answer,
        // whichever server serves it.
        self.node.read_barrier().await?;
        let mut wake = self.node.state().watch_journal();
        let (first, next) = next_page(&self.node, after, &filter).map_err(pruned)?;
        after = next;
        let (tx, rx) = mpsc::channel(4);
        let node = self.node.clone();
        let mut closing = self.closing.clone();
        tokio::spawn(async move {
            let mut page = first;
            loop {
                if !page.is_empty() {
                    let events = page.iter().map(Into::into).collect();
                    if tx
                        .send(Ok(pb::WatchEventsResponse { events }))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                let caught_up = page.len() < PAGE;
                if caught_up && !req.follow {
                    return;
                }
                if caught_up {
                    tokio::select! {
                        changed = wake.changed() => if changed.is_err() { return },
                        () = tx.closed() => return,
                        _ = closing.wait_for(|closing| *closing) => return,
                    }
                }
                match next_page(&node, after, &filter) {
                    Ok((events, next)) => {
                        page = events;
                        after = next;
                    }
                    Err(p) => {
                        let _ = tx.send(Err(pruned(p))).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    #[tracing::instrument(skip_all, fields(local_only = request.get_ref().local_only))]
    async fn list_audit_records(
        &self,
        request: Request<pb::ListAuditRecordsRequest>,
    ) -> Result<Response<pb::ListAuditRecordsResponse>, Status> {
        let req = request.into_inner();
        let mut records = self.local_records(&req);
        let mut unreachable = Vec::new();
        if !req.local_only {
            self.node.read_barrier().await?;
            let filter = EventFilter {
                resource: Some(req.resource.clone()).filter(|r| !r.is_empty()),
                actor: Some(req.actor.clone()).filter(|a| !a.is_empty()),
                since_ms: Some(req.since_ms).filter(|s| *s > 0),
                ..Default::default()
            };
            {
                let applied = self.node.state().read();
                let replicated = applied
                    .state
                    .journal()
                    .audit()
                    .after(None, usize::MAX, |r| filter.accepts_audit(r))
                    .unwrap_or_default();
                records.extend(replicated.iter().map(pb::AuditRecord::from));
            }
            let (remote, failed) = self.peer_records(&req).await;
            records.extend(remote);
            unreachable = failed;
            // Oldest first; ties keep replicated order, then server order.
            records.sort_by_key(|r| (r.at_ms, r.server_id));
        }
        if req.limit > 0 && records.len() > req.limit as usize {
            records.drain(..records.len() - req.limit as usize);
        }
        Ok(Response::new(pb::ListAuditRecordsResponse {
            records,
            unreachable,
        }))
    }

    async fn get_journal_retention(
        &self,
        _request: Request<pb::GetJournalRetentionRequest>,
    ) -> Result<Response<pb::JournalRetention>, Status> {
        self.node.read_barrier().await?;
        Ok(Response::new(retention_reply(&self.node)))
    }

    #[tracing::instrument(skip_all, fields(max_records = request.get_ref().max_records, max_age_secs = request.get_ref().max_age_secs))]
    async fn set_journal_retention(
        &self,
        request: Request<pb::SetJournalRetentionRequest>,
    ) -> Result<Response<pb::JournalRetention>, Status> {
        let req = request.into_inner();
        let retention = Retention {
            max_records: req.max_records,
            max_age_ms: i64::try_from(req.max_age_secs)
                .unwrap_or(i64::MAX / 1000)
                .saturating_mul(1000),
        };
        retention.validate().map_err(ServerError::from_field)?;
        self.node
            .write(Command::SetJournalRetention { retention })
            .await?;
        // Written through the leader; a follower answering has not
        // necessarily applied it yet, and the reply must show it.
        self.node.read_barrier().await?;
        Ok(Response::new(retention_reply(&self.node)))
    }
}
