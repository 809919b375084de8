//! The journal: events as a stream that resumes after the last cursor it
//! delivered (on another server too), and the audit log.

use berth_proto::pb;
use berth_proto::pb::event_service_client::EventServiceClient;

use crate::{BerthClient, ClientError, Conn, Kind};

fn event_service(conn: Conn) -> EventServiceClient<Conn> {
    EventServiceClient::new(conn)
}

/// An open WatchEvents call. A broken stream is opened again, on any
/// server, from the cursor of the last event delivered, so no event is
/// missed or repeated.
pub struct EventWatch {
    client: BerthClient,
    request: pb::WatchEventsRequest,
    stream: Option<tonic::Streaming<pb::WatchEventsResponse>>,
}

impl BerthClient {
    /// Events matching `request` (its `from` is where to start).
    pub fn watch_events(&self, request: pb::WatchEventsRequest) -> EventWatch {
        EventWatch {
            client: self.clone(),
            request,
            stream: None,
        }
    }

    pub async fn list_audit_records(
        &self,
        request: &pb::ListAuditRecordsRequest,
    ) -> Result<pb::ListAuditRecordsResponse, ClientError> {
        self.call(Kind::Read, |conn| {
            let request = request.clone();
            async move { event_service(conn).list_audit_records(request).await }
        })
        .await
    }

    pub async fn journal_retention(&self) -> Result<pb::JournalRetention, ClientError> {
        self.call(Kind::Read, |conn| async move {
            event_service(conn)
                .get_journal_retention(pb::GetJournalRetentionRequest {})
                .await
        })
        .await
    }

    /// Setting the same bounds twice is harmless, so a lost reply is retried.
    pub async fn set_journal_retention(
        &self,
        max_records: u32,
        max_age_secs: u64,
    ) -> Result<pb::JournalRetention, ClientError> {
        let request = pb::SetJournalRetentionRequest {
            max_records,
            max_age_secs,
        };
        self.call(Kind::Idempotent, |conn| async move {
            event_service(conn).set_journal_retention(request).await
        })
        .await
    }
}

impl EventWatch {
    /// The next events; `None` once a stream without `follow` has delivered
    /// everything.
    pub async fn next(&mut self) -> Result<Option<Vec<pb::JournalEvent>>, ClientError> {
        let mut backoff = crate::backoff::Backoff::new(
            std::time::Duration::from_millis(100),
            std::time::Duration::from_secs(2),
            0.5..=1.0,
        );
        loop {
            let stream = match self.stream.as_mut() {
                Some(stream) => stream,
                None => {
                    let request = self.request.clone();
                    let (stream, _) = self
                        .client
                        .call_indexed(Kind::Read, |conn| {
                            let request = request.clone();
                            async move { event_service(conn).watch_events(request).await }
                        })
                        .await?;
                    self.stream.insert(stream)
                }
            };
            let broken = match stream.message().await {
                Ok(Some(page)) => {
                    if let Some(last) = page.events.last() {
                        self.request.from = last.cursor.clone();
                    }
                    return Ok(Some(page.events));
                }
                Ok(None) if !self.request.follow => return Ok(None),
                Ok(None) => "the server ended the stream".to_string(),
                Err(status) => match crate::error::classify(status) {
                    crate::error::Failure::Server(status) => {
                        return Err(ClientError::from_status(&status))
                    }
                    crate::error::Failure::NotSent(reason)
                    | crate::error::Failure::Lost(reason) => reason,
                },
            };
            tracing::debug!(reason = %broken, from = %self.request.from, "event stream broken; resuming");
            self.stream = None;
            let delay = backoff.next(&mut rand::thread_rng());
            tokio::time::sleep(delay).await;
        }
    }
}
