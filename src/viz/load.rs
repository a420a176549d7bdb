//! The I/O of the pictures: reading their rows from a cluster or from this node, and writing
//! them to a directory, once ([`write_all`]) or every interval ([`run_periodically`]).
//!
//! A [`Source`] is where the rows come from:
//!
//! * [`Source::Remote`] — through the cluster, as every client command reads: SQL through the
//!   leader (a linearizable read, `Query` with `consistent`), and `Status` from every member
//!   as `testfleet status` asks it, so the cluster picture shows each node's own word on its
//!   role and the nodes that did not answer.
//! * [`Source::Local`] — inside a coordinator, from its own DuckDB copy (flushed first, as the
//!   recovery loop's history read does) and its Raft metrics. This is what a leader uses: no
//!   network and no credentials. The roles are the leader's view: every member of its
//!   membership is a follower (or learner) unless it has acknowledged no heartbeat for
//!   [`SILENT_AFTER`], when it shows as unreachable.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::cluster::{self, ClusterPicture, NodeBox};
use super::{Format, leaders, recovery};
use super::{HealthPicture, Kind, LeaderPicture, Picture, RecoveryPicture, VizError, health};
use crate::cli::Remote;
use crate::coordinator::Coordinator;
use crate::query::QueryResult;

/// Where the pictures' rows come from.
#[derive(Clone)]
pub enum Source {
    /// Any subset of the coordinators, reached as a client.
    Remote(Remote),
    /// This coordinator's own state.
    Local(Arc<Coordinator>),
}

/// A follower that has acknowledged no heartbeat for this long shows as unreachable in a
/// leader's own cluster picture.
pub const SILENT_AFTER: Duration = Duration::from_secs(5);

/// What [`run_periodically`] keeps of each kind and format by default: an hour of pictures
/// at the default interval of 60 s.
pub const KEEP_DEFAULT: usize = 60;

/// Formats [`write_all`] writes.
const FILE_FORMATS: [Format; 2] = [Format::Svg, Format::Png];

impl Source {
    async fn query(&self, sql: &str) -> Result<QueryResult, VizError> {
        match self {
            Source::Remote(remote) => Ok(crate::cli::query_result(remote, sql, true).await?),
            Source::Local(node) => {
                let state = node.state().clone();
                let sql = sql.to_string();
                // A flush and a query block: never on a runtime thread.
                tokio::task::spawn_blocking(move || {
                    state.flush().map_err(|e| VizError::Local(e.to_string()))?;
                    let conn = state.reader().map_err(|e| VizError::Local(e.to_string()))?;
                    crate::query::run_query(&conn, &sql).map_err(|e| VizError::Local(e.to_string()))
                })
                .await
                .map_err(|e| VizError::Local(format!("the query task failed: {e}")))?
            }
        }
    }
}

/// Now, in microseconds since the epoch.
fn now_us() -> i64 {
    crate::state::command::Timestamp::now().0
}

/// The cluster picture: coordinators and their roles, workers and their statuses.
pub async fn cluster(source: &Source) -> Result<ClusterPicture, VizError> {
    let workers = cluster::workers_from_rows(&source.query(cluster::WORKERS_SQL).await?.rows)?;
    match source {
        Source::Remote(remote) => {
            let status = crate::cli::status::collect(remote).await?;
            Ok(ClusterPicture::from_status(&status, workers, now_us()))
        }
        Source::Local(node) => {
            let metrics = node.metrics();
            let (nodes, leader_id) = nodes_from_metrics(&metrics);
            Ok(ClusterPicture {
                generated_at_us: now_us(),
                leader_id,
                term: metrics.current_term,
                nodes,
                workers,
            })
        }
    }
}

/// The members and roles as this node's Raft metrics show them (see the module docs), and
/// the leader it knows.
fn nodes_from_metrics(
    metrics: &openraft::RaftMetrics<crate::raft::TypeConfig>,
) -> (Vec<NodeBox>, Option<u64>) {
    let membership = metrics.membership_config.membership();
    let voters: std::collections::BTreeSet<u64> = membership.voter_ids().collect();
    let mut nodes: Vec<NodeBox> = membership
        .nodes()
        .map(|(&id, node)| {
            let is_leader = metrics.current_leader == Some(id);
            let silent = metrics.heartbeat.as_ref().and_then(|beats| {
                let since = beats
                    .get(&id)?
                    .as_ref()
                    .map(|at| openraft::Instant::elapsed(&**at));
                match since {
                    Some(d) if d < SILENT_AFTER => None,
                    Some(d) => Some(format!("no heartbeat acknowledged for {} s", d.as_secs())),
                    None => Some("no heartbeat acknowledged yet".to_string()),
                }
            });
            let role = if id == metrics.id {
                crate::coordinator::control::role_name(metrics.state).to_string()
            } else if is_leader {
                "leader".to_string()
            } else if silent.is_some() {
                "unreachable".to_string()
            } else if voters.contains(&id) {
                "follower".to_string()
            } else {
                "learner".to_string()
            };
            NodeBox {
                id: Some(id),
                address: node.addr.clone(),
                role,
                is_leader,
                term: (id == metrics.id).then_some(metrics.current_term),
                error: if id == metrics.id { None } else { silent },
            }
        })
        .collect();
    nodes.sort_by_key(|n| n.id);
    (nodes, metrics.current_leader)
}

/// The health picture.
pub async fn health(source: &Source) -> Result<HealthPicture, VizError> {
    let rows = source.query(&health::sql()).await?.rows;
    HealthPicture::from_rows(&rows, now_us())
}

/// The leader transition picture.
pub async fn leaders(source: &Source) -> Result<LeaderPicture, VizError> {
    let rows = source.query(&leaders::sql()).await?.rows;
    LeaderPicture::from_rows(&rows, now_us())
}

/// The recovery timeline.
pub async fn recovery(source: &Source) -> Result<RecoveryPicture, VizError> {
    let rows = source.query(&recovery::sql()).await?.rows;
    RecoveryPicture::from_rows(&rows, now_us())
}

/// One picture of `kind`.
pub async fn picture(source: &Source, kind: Kind) -> Result<Picture, VizError> {
    Ok(match kind {
        Kind::Cluster => Picture::Cluster(cluster(source).await?),
        Kind::Health => Picture::Health(health(source).await?),
        Kind::Leaders => Picture::Leaders(leaders(source).await?),
        Kind::Recovery => Picture::Recovery(recovery(source).await?),
    })
}

/// `micros` as the time in file names: `20260512T101500Z` (UTC, to the second).
pub fn file_time(micros: i64) -> String {
    let full = super::utc(micros);
    let mut out: String = full
        .chars()
        .take(19)
        .filter(|c| *c != '-' && *c != ':')
        .collect();
    out.push('Z');
    out
}

/// Renders all four pictures into `dir` (created if missing) as `<stem>_<UTC time>.svg` and
/// `.png` — `cluster_status_20260512T101500Z.svg`, `health_metrics_…`,
/// `leader_transitions_…`, `recovery_timeline_…` — all eight with the same time, and returns
/// their paths. Each file is written under a temporary name and renamed, so a reader of the
/// directory never sees half a picture. A picture that cannot be read fails the call (the
/// ones before it are written).
pub async fn write_all(source: &Source, dir: &Path) -> Result<Vec<PathBuf>, VizError> {
    let failed = |path: &Path| {
        let path = path.to_path_buf();
        move |source| VizError::Write { path, source }
    };
    tokio::fs::create_dir_all(dir).await.map_err(failed(dir))?;
    let stamp = file_time(now_us());
    let mut written = Vec::new();
    for kind in Kind::ALL {
        let picture = picture(source, kind).await?;
        for format in FILE_FORMATS {
            // Rasterising takes tens of milliseconds of CPU: off the runtime threads.
            let bytes = {
                let picture = picture.clone();
                tokio::task::spawn_blocking(move || picture.render(format))
                    .await
                    .map_err(|e| VizError::Render(format!("the render task failed: {e}")))??
            };
            let name = format!("{}_{stamp}.{}", kind.file_stem(), format.extension());
            let path = dir.join(&name);
            let partial = dir.join(format!(".{name}.partial"));
            tokio::fs::write(&partial, &bytes)
                .await
                .map_err(failed(&partial))?;
            tokio::fs::rename(&partial, &path)
                .await
                .map_err(failed(&path))?;
            written.push(path);
        }
    }
    Ok(written)
}

/// Removes all but the newest `keep` files of each kind and format that [`write_all`] wrote
/// into `dir` (the names sort by time); other files are left alone. Returns how many it
/// removed.
pub fn prune(dir: &Path, keep: usize) -> std::io::Result<usize> {
    let mut names: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    names.sort_unstable();
    let mut removed = 0;
    for kind in Kind::ALL {
        for format in FILE_FORMATS {
            let ours: Vec<&String> = names
                .iter()
                .filter(|n| is_picture_name(n, kind, format))
                .collect();
            for name in ours.iter().take(ours.len().saturating_sub(keep)) {
                std::fs::remove_file(dir.join(name))?;
                removed += 1;
            }
        }
    }
    Ok(removed)
}

/// Whether `name` is `<stem>_<YYYYMMDDTHHMMSSZ>.<ext>` of `kind` and `format`.
fn is_picture_name(name: &str, kind: Kind, format: Format) -> bool {
    let Some(rest) = name
        .strip_prefix(kind.file_stem())
        .and_then(|r| r.strip_prefix('_'))
    else {
        return false;
    };
    let Some(stamp) = rest
        .strip_suffix(format.extension())
        .and_then(|r| r.strip_suffix('.'))
    else {
        return false;
    };
    stamp.len() == 16
        && stamp.char_indices().all(|(i, c)| match i {
            8 => c == 'T',
            15 => c == 'Z',
            _ => c.is_ascii_digit(),
        })
}

/// Writes all four pictures into `dir` every `interval` (the first at once) until `cancel`
/// fires (a round in progress finishes first), keeping the newest `keep` files of each kind and format ([`prune`];
/// [`KEEP_DEFAULT`] is an hour at 60 s). A failed round is logged and the next one tried.
///
/// The leader runs it for `--visualization-path DIR` with `--visualization-interval`:
/// spawn it when the node's leader loops start, with its own data and the term's
/// cancellation token, so it stops when leadership ends:
///
/// ```ignore
/// tokio::spawn(viz::load::run_periodically(
///     viz::load::Source::Local(node.clone()),
///     dir,
///     interval,
///     viz::load::KEEP_DEFAULT,
///     leadership_cancel.child_token(),
/// ));
/// ```
pub async fn run_periodically(
    source: Source,
    dir: PathBuf,
    interval: Duration,
    keep: usize,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(interval.max(Duration::from_secs(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        // A round in progress is finished, so no half-written file is left behind.
        match write_all(&source, &dir).await {
            Ok(paths) => {
                tracing::debug!(dir = %dir.display(), files = paths.len(), "visualizations written");
                let pruning = {
                    let dir = dir.clone();
                    tokio::task::spawn_blocking(move || prune(&dir, keep.max(1))).await
                };
                if let Ok(Err(e)) = pruning {
                    tracing::warn!(dir = %dir.display(), "cannot remove old visualizations: {e}");
                }
            }
            Err(e) => tracing::warn!(dir = %dir.display(), "cannot write visualizations: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_times_are_compact_utc() {
        // 2026-05-12T10:15:00.123Z
        assert_eq!(file_time(1_778_580_900_123_456), "20260512T101500Z");
    }

    #[test]
    fn prune_keeps_the_newest_of_each_kind_and_format_only() {
        let dir = tempfile::tempdir().unwrap();
        let touch = |name: &str| std::fs::write(dir.path().join(name), b"x").unwrap();
        for minute in 0..5 {
            for kind in Kind::ALL {
                for ext in ["svg", "png"] {
                    touch(&format!(
                        "{}_20260512T10{minute:02}00Z.{ext}",
                        kind.file_stem()
                    ));
                }
            }
        }
        touch("notes.txt");
        touch("cluster_status_latest.svg");
        assert_eq!(prune(dir.path(), 2).unwrap(), 3 * 8);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left.len(), 2 * 8 + 2);
        assert!(left.contains(&"cluster_status_20260512T100400Z.png".to_string()));
        assert!(left.contains(&"cluster_status_20260512T100300Z.svg".to_string()));
        assert!(!left.contains(&"cluster_status_20260512T100200Z.svg".to_string()));
        assert!(left.contains(&"notes.txt".to_string()));
        assert!(left.contains(&"cluster_status_latest.svg".to_string()));
    }
}
