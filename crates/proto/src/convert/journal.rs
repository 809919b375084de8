//! The journal's events and audit records on the wire.

use berth_types::journal::{Actor, AuditRecord, Event};

use crate::pb;

impl From<&Actor> for pb::Actor {
    fn from(actor: &Actor) -> Self {
        pb::Actor {
            principal: actor.principal.name(),
            role: actor
                .principal
                .role()
                .map(|r| r.as_str().to_string())
                .unwrap_or_default(),
            operation: actor.operation.clone(),
            peer: actor.peer.clone(),
        }
    }
}

impl From<&Event> for pb::JournalEvent {
    fn from(event: &Event) -> Self {
        pb::JournalEvent {
            cursor: event.cursor.to_string(),
            at_ms: event.at_ms,
            actor: Some((&event.actor).into()),
            cluster: event.cluster.clone(),
            r#type: event.detail.event_type().as_str().to_string(),
            resource: event.resource(),
            summary: event.detail.summary(),
            // Plain data with string keys: encoding it cannot fail.
            detail_json: serde_json::to_string(&event.detail).unwrap_or_default(),
        }
    }
}

impl From<&AuditRecord> for pb::AuditRecord {
    fn from(record: &AuditRecord) -> Self {
        pb::AuditRecord {
            cursor: record.cursor.to_string(),
            at_ms: record.at_ms,
            actor: Some((&record.actor).into()),
            command: record.command.clone(),
            resource: record.resource.clone(),
            outcome: if record.error.is_some() {
                "failed"
            } else {
                "applied"
            }
            .to_string(),
            error: record.error.clone().unwrap_or_default(),
            server_id: 0,
            claimed: String::new(),
            code: String::new(),
        }
    }
}
