//! `berth server backup --out FILE`: an online backup, kept only once it is
//! whole and on disk.

use std::path::Path;

use anyhow::Context;
use berth_client::BerthClient;
use serde::Serialize;

use crate::output::{render, Format};

/// What `-o json|yaml` prints about a saved backup.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Saved {
    file: String,
    bytes: usize,
    sha256: String,
    applied_index: u64,
    applied_term: u64,
    server: u64,
    data_format: u32,
}

pub async fn save(client: &BerthClient, format: Format, out: &Path) -> anyhow::Result<String> {
    let backup = client.backup().await?;
    // Synced before it is named FILE, so FILE is never a partial backup.
    berth_daemon::write_file(out, &backup.bytes, 0o600).with_context(|| {
        format!(
            "the backup was taken but could not be saved to {}",
            out.display()
        )
    })?;
    let saved = Saved {
        file: out.display().to_string(),
        bytes: backup.bytes.len(),
        sha256: backup.sha256,
        applied_index: backup.applied_index,
        applied_term: backup.applied_term,
        server: backup.answered_by,
        data_format: backup.data_format,
    };
    render(format, &saved, |s| {
        format!(
            "saved a backup of the state at log entry {} (term {}) from server {} to {}: {} bytes, \
             data format {}, sha256 {}\nrestore it with: berthd restore --from {} --data-dir DIR --node-id N\n",
            s.applied_index,
            s.applied_term,
            s.server,
            s.file,
            s.bytes,
            s.data_format,
            s.sha256,
            s.file
        )
    })
}
