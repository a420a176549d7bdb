//! `testfleet cluster ...`: the coordinators themselves — who they are (`members`), who leads
//! (`transfer-leader`), changing them (`add-node`, `remove-node`), backing their state up and
//! restoring it (`snapshot`, `restore`), and checking the replicas agree (`check`).
//!
//! Membership changes go through any node to the leader (`Control.AddNode`, `RemoveNode`),
//! which judges and carries them out ([`crate::coordinator::membership`]). `snapshot --out`
//! asks the leader for a snapshot, then downloads that node's snapshot file; `restore` is
//! offline: it seeds an empty data directory with such a file, on every node of a cluster
//! rebuilt from a backup.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_stream::StreamExt;

use super::args::Target;
use super::jobs::with_retry_control;
use super::{CliError, Output};
use crate::proto::control_client::ControlClient;
use crate::proto::{
    AddNodeRequest, FetchSnapshotRequest, MembershipReply, RemoveNodeRequest, SnapshotRequest,
    snapshot_part,
};

#[derive(clap::Subcommand)]
pub enum ClusterCommand {
    /// The Raft members as the leader sees them: id, address, voter or learner, how far each
    /// log matches the leader's and how far it lags
    Members {
        #[command(flatten)]
        target: Target,
    },
    /// Add a coordinator (started with `--node-id ID --join ...`): it joins as a learner and
    /// is promoted to voter once its log caught up
    AddNode {
        /// Its Raft id (its --node-id)
        id: u64,
        /// Its address as the other coordinators reach it, HOST:PORT
        addr: String,
        /// Keep it a learner: it replicates, but does not vote or lead
        #[arg(long)]
        learner: bool,
        /// How long it may take to catch up before it is promoted, e.g. 5m
        #[arg(long, default_value = "5m", value_parser = crate::plan::parse_duration)]
        wait: Duration,
        #[command(flatten)]
        target: Target,
    },
    /// Remove a coordinator from the cluster (a leader hands over first); then stop it
    RemoveNode {
        id: u64,
        #[command(flatten)]
        target: Target,
    },
    /// Hand leadership to another voter (the most caught-up follower without ID) and wait
    /// until it leads
    TransferLeader {
        /// The node id to lead next
        id: Option<u64>,
        #[command(flatten)]
        target: Target,
    },
    /// Make the leader take a snapshot now; with --out, download it (a backup)
    Snapshot {
        /// Write the snapshot to this file
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        target: Target,
    },
    /// Offline: seed an empty node's data directory from a backup snapshot. Do it on every
    /// node of the cluster being rebuilt, then start them with the backed-up ids and addresses
    Restore {
        /// The backup, written by `cluster snapshot --out`
        file: PathBuf,
        /// The node's DuckDB file (must not exist yet)
        #[arg(long)]
        db_path: PathBuf,
        /// The node's data directory [default: the DuckDB file's directory]
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Compare every replica's DuckDB tables at one log index; exit 0 all agree, 1 a node
    /// differs, 2 a node could not be checked
    Check {
        #[command(flatten)]
        target: Target,
        /// How long to wait for each node to reach the check's log entry, e.g. 30s, 2m
        #[arg(long, default_value = "30s", value_parser = crate::plan::parse_duration)]
        wait: Duration,
    },
}

/// Runs one `cluster` subcommand, printing its result.
pub async fn run(command: ClusterCommand) -> Result<(), CliError> {
    match command {
        ClusterCommand::Members { target } => {
            let members = super::members::members(&target.remote()?).await?;
            print!("{}", super::members::render(&members, target.output));
            Ok(())
        }
        ClusterCommand::AddNode {
            id,
            addr,
            learner,
            wait,
            target,
        } => {
            let request = AddNodeRequest {
                id,
                addr,
                learner_only: learner,
                wait_ms: wait.as_millis().max(1) as u64,
            };
            let reply = with_retry_control(&target.remote()?, |mut client| {
                let request = request.clone();
                async move { client.add_node(request).await.map(|r| r.into_inner()) }
            })
            .await?;
            print!("{}", render_change(&reply, target.output));
            Ok(())
        }
        ClusterCommand::RemoveNode { id, target } => {
            let reply = with_retry_control(&target.remote()?, |mut client| async move {
                client
                    .remove_node(RemoveNodeRequest { id })
                    .await
                    .map(|r| r.into_inner())
            })
            .await?;
            print!("{}", render_change(&reply, target.output));
            Ok(())
        }
        ClusterCommand::TransferLeader { id, target } => {
            let remote = target.remote()?;
            let text = super::members::transfer_leader(&remote, id, target.output).await?;
            print!("{text}");
            Ok(())
        }
        ClusterCommand::Snapshot { out, target } => snapshot(&target, out.as_deref()).await,
        ClusterCommand::Restore {
            file,
            db_path,
            data_dir,
        } => {
            print!("{}", restore(&file, &db_path, data_dir.as_deref()).await?);
            Ok(())
        }
        ClusterCommand::Check { target, wait } => {
            use super::cluster_check;
            let remote = target.remote()?;
            let report = match cluster_check::run(&remote, wait).await {
                Ok(report) => report,
                Err(e) => {
                    eprintln!("error: {e}");
                    return Err(CliError::Exit(cluster_check::EXIT_UNCHECKED));
                }
            };
            print!("{}", cluster_check::render(&report, target.output));
            match report.exit_code() {
                0 => Ok(()),
                code => Err(CliError::Exit(code)),
            }
        }
    }
}

/// What `add-node` and `remove-node` print: the summary and the membership after it.
fn render_change(reply: &MembershipReply, output: Output) -> String {
    if output == Output::Json {
        let members: Vec<serde_json::Value> = reply
            .members
            .iter()
            .map(|m| {
                serde_json::json!({
                    "id": m.id,
                    "addr": m.addr,
                    "role": if m.voter { "voter" } else { "learner" },
                })
            })
            .collect();
        return serde_json::json!({
            "summary": reply.summary,
            "millis": reply.millis,
            "leader_id": reply.leader_id,
            "members": members,
        })
        .to_string()
            + "\n";
    }
    let mut rows: Vec<Vec<String>> = reply
        .members
        .iter()
        .map(|m| {
            vec![
                m.id.to_string(),
                m.addr.clone(),
                if m.voter { "voter" } else { "learner" }.to_string(),
            ]
        })
        .collect();
    rows.sort();
    format!(
        "{} ({} ms)\n\n{}",
        reply.summary,
        reply.millis,
        super::table(&["ID", "ADDRESS", "ROLE"], &rows)
    )
}

/// `cluster snapshot [--out FILE]`.
async fn snapshot(target: &Target, out: Option<&Path>) -> Result<(), CliError> {
    let remote = target.remote()?;
    let reply = with_retry_control(&remote, |mut client| async move {
        client
            .snapshot(SnapshotRequest {})
            .await
            .map(|r| r.into_inner())
    })
    .await?;
    let mut text = format!(
        "node {} took a snapshot up to index {} (term {}) in {} ms",
        reply.leader_id, reply.index, reply.term, reply.millis
    );
    if let Some(first) = reply.first_log_index {
        text.push_str(&format!("; its log now starts at {first}"));
    }
    text.push('\n');
    let mut written = None;
    if let Some(out) = out {
        let channel = super::channel(&reply.leader_addr, &remote.credentials).await?;
        let mut stream = ControlClient::new(channel)
            .fetch_snapshot(FetchSnapshotRequest {
                min_index: reply.index,
            })
            .await
            .map_err(|e| CliError::Unavailable(format!("cannot fetch the snapshot: {e}")))?
            .into_inner();
        let mut bytes = Vec::new();
        let mut header = None;
        while let Some(part) = stream.next().await {
            let part =
                part.map_err(|e| CliError::Unavailable(format!("the download failed: {e}")))?;
            match part.part {
                Some(snapshot_part::Part::Header(h)) => header = Some(h),
                Some(snapshot_part::Part::Data(chunk)) => bytes.extend_from_slice(&chunk),
                None => {}
            }
        }
        let header = header.ok_or_else(|| CliError::Other("the download had no header".into()))?;
        if bytes.len() as u64 != header.size {
            return Err(CliError::Unavailable(format!(
                "the download was cut short: {} of {} bytes",
                bytes.len(),
                header.size
            )));
        }
        write_atomically(out, &bytes)?;
        text.push_str(&format!(
            "wrote {} ({} bytes, index {}, from node {})\n",
            out.display(),
            bytes.len(),
            header.index,
            header.node_id
        ));
        written = Some((header.index, bytes.len()));
    }
    if target.output == Output::Json {
        text = serde_json::json!({
            "leader_id": reply.leader_id,
            "index": reply.index,
            "term": reply.term,
            "millis": reply.millis,
            "first_log_index": reply.first_log_index,
            "file": out.map(|p| p.display().to_string()),
            "bytes": written.map(|(_, n)| n),
        })
        .to_string()
            + "\n";
    }
    print!("{text}");
    Ok(())
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    crate::raft::state_machine::write_atomically(path, bytes)
        .map_err(|e| CliError::Other(format!("cannot write {}: {e}", path.display())))
}

/// Creates the restored node's Raft log holding one vote: for the node that led the term of
/// the snapshot's last entry, in that term (a vote that node did win). Without it the node
/// starts with no vote while it holds entries of that term, and openraft campaigns in the term
/// after its vote's — term 1 — so an elected node would append entries of a lower term than
/// the entries before them (openraft's own debug assertion stops it: "vote must GE
/// last_leader_log_ids"). With it, the first campaign is in the next term.
async fn seed_vote(
    log: &Path,
    meta: &crate::raft::state_machine::SnapshotFileMeta,
) -> Result<(), CliError> {
    use openraft::storage::RaftLogStorage;
    if meta.term == 0 {
        return Ok(());
    }
    let failed = |e: std::io::Error| CliError::Other(format!("cannot seed the Raft log: {e}"));
    let path = log.to_path_buf();
    let mut store = tokio::task::spawn_blocking(move || {
        crate::raft::log_store::LogStore::<crate::raft::TypeConfig>::open(&path)
    })
    .await
    .map_err(|e| CliError::Other(format!("cannot seed the Raft log: {e}")))?
    .map_err(failed)?;
    store
        .save_vote(&openraft::Vote::new(meta.term, meta.leader))
        .await
        .map_err(failed)
}

/// `cluster restore FILE --db-path P [--data-dir D]`: checks the backup and the empty data
/// directory, then installs the file as the node's current snapshot and seeds the node's vote
/// (see `seed_vote`). The node loads the snapshot into its fresh DuckDB file when it starts.
pub async fn restore(
    file: &Path,
    db_path: &Path,
    data_dir: Option<&Path>,
) -> Result<String, CliError> {
    let bytes = std::fs::read(file)
        .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", file.display())))?;
    let meta = crate::raft::state_machine::snapshot_file_meta(&bytes)
        .map_err(|e| CliError::Usage(format!("{}: {e}", file.display())))?;
    let config = crate::config::CoordinatorConfig {
        db_path: db_path.to_path_buf(),
        data_dir: data_dir.map(Path::to_path_buf),
        ..Default::default()
    };
    let log = config.log_path();
    for (what, path) in [("Raft log", &log), ("DuckDB file", &config.db_path)] {
        if path.exists() {
            return Err(CliError::Usage(format!(
                "{} exists ({what}): restore only into an empty data directory; move the \
                 node's files aside first",
                path.display()
            )));
        }
    }
    let dir = config.snapshot_dir();
    std::fs::create_dir_all(&dir)
        .map_err(|e| CliError::Other(format!("cannot create {}: {e}", dir.display())))?;
    write_atomically(&dir.join("current.snapshot"), &bytes)?;
    seed_vote(&log, &meta).await?;
    let members: Vec<String> = meta
        .members
        .iter()
        .map(|(id, addr, voter)| format!("{id}={addr}{}", if *voter { "" } else { " (learner)" }))
        .collect();
    Ok(format!(
        "restored the state up to index {} (term {}) into {}\nmembers: {}\nrestore the same \
         file on every member, then start each with its id and these addresses (--peers {})\n",
        meta.index,
        meta.term,
        config.data_dir().display(),
        members.join(", "),
        meta.members
            .iter()
            .map(|(id, addr, _)| format!("{id}={addr}"))
            .collect::<Vec<_>>()
            .join(",")
    ))
}
