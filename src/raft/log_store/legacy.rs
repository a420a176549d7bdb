//! Reading a log store in the old layout (version 1: one redb file, `raft-log.redb`), once, to
//! convert it to segments when a coordinator that used it is upgraded (`open.rs`).
//!
//! The old file held two tables: `raft_log_entries` (log index → encoded entry) and
//! `raft_log_meta` (`vote`, `last_purged_log_id`, `committed`, `format_version` → encoded
//! value). The encodings of entries and values are the same in both layouts, so they are
//! copied as they are.

use std::io;
use std::path::Path;

use openraft::RaftTypeConfig;
use openraft::type_config::alias::LogIdOf;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;

use super::segment::{MetaState, Saved};

const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log_entries");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_log_meta");

/// Entries as (index, encoding), in order.
pub(super) type Entries = Vec<(u64, Vec<u8>)>;

/// The small values and the entries of the old store at `file`.
pub(super) fn read<C>(file: &Path) -> Result<(MetaState, Entries), io::Error>
where
    C: RaftTypeConfig,
    LogIdOf<C>: DeserializeOwned,
{
    let fail = |e: &dyn std::fmt::Display| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "raft log store {}: cannot convert this log from the old layout: {e}. Move it \
                 aside and start the node again: it rejoins the cluster with an empty log and \
                 receives a snapshot from the leader",
                file.display()
            ),
        )
    };
    let db = Database::open(file).map_err(|e| fail(&e))?;
    let txn = db.begin_read().map_err(|e| fail(&e))?;
    let meta = txn.open_table(META).map_err(|e| fail(&e))?;
    let value = |key: &str| -> Result<Option<Vec<u8>>, io::Error> {
        Ok(meta
            .get(key)
            .map_err(|e| fail(&e))?
            .map(|v| v.value().to_vec()))
    };
    let log_id = |key: &str| -> Result<Option<Saved>, io::Error> {
        let Some(bytes) = value(key)? else {
            return Ok(None);
        };
        let id: LogIdOf<C> = super::decode(&bytes).map_err(|e| fail(&format!("{key}: {e}")))?;
        Ok(Some(Saved {
            index: id.index,
            bytes,
        }))
    };
    let state = MetaState {
        vote: value("vote")?,
        last_purged: log_id("last_purged_log_id")?,
        committed: log_id("committed")?,
    };
    let table = txn.open_table(ENTRIES).map_err(|e| fail(&e))?;
    let mut entries = Vec::new();
    for item in table.iter().map_err(|e| fail(&e))? {
        let (index, entry) = item.map_err(|e| fail(&e))?;
        entries.push((index.value(), entry.value().to_vec()));
    }
    Ok((state, entries))
}
