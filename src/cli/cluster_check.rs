//! `testfleet cluster check`: do all replicas hold the same rows? (Like etcd's hash-KV check.)
//!
//! 1. The membership is found as `testfleet status` finds it ([`super::status::collect`]).
//! 2. A `CheckReplicas` marker is appended to the Raft log (`StartCheck`, forwarded to the
//!    leader). Each node that applies it digests its own DuckDB tables as of exactly that
//!    entry ([`crate::raft::replica_check`]): a row count and a SHA-256 per replicated table.
//! 3. Every member is asked for its digests (`GetCheckDigest`), concurrently, each polled
//!    until it has reached the marker and hashed its tables, or until `--wait` runs out. A
//!    node that has not answered at all within [`UNREACHABLE_AFTER`] is taken to be down and
//!    reported as such, rather than holding up the whole check.
//! 4. Per table, the value (rows, digest) held by a strict majority of the checked nodes is
//!    the reference; every node holding anything else differs. Without a majority, every
//!    checked node is reported as differing on that table: the check cannot tell which is
//!    right.
//!
//! Exit status: 0 when every member was checked and all agree; 1 when any node differs
//! from the majority on any table (even if another node could not be checked); 2 when no
//! difference was found but a node could not be checked, or the check could not start.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{CliError, Output, Remote, connect, table};
use crate::auth::Credentials;
use crate::proto::{CheckDigestReply, CheckDigestRequest, CheckState, StartCheckRequest};

/// Exit status when every replica agrees.
pub const EXIT_AGREE: u8 = 0;
/// Exit status when a replica differs from the majority.
pub const EXIT_DIFFER: u8 = 1;
/// Exit status when a node (or the whole cluster) could not be checked.
pub const EXIT_UNCHECKED: u8 = 2;

/// How long a node that never answers (down, or not listening) is asked before it is
/// reported unreachable; a node that answers is waited for up to the whole `--wait`.
pub const UNREACHABLE_AFTER: Duration = Duration::from_secs(5);

/// The outcome of a check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Every member was checked and holds the same rows in every table.
    Agree,
    /// At least one node differs from the majority on at least one table.
    Differ,
    /// No difference found, but at least one member could not be checked.
    Incomplete,
}

impl Verdict {
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Agree => EXIT_AGREE,
            Verdict::Differ => EXIT_DIFFER,
            Verdict::Incomplete => EXIT_UNCHECKED,
        }
    }
}

/// One table as one node holds it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct TableValue {
    pub rows: u64,
    pub sha256: String,
}

/// One member's result.
#[derive(Clone, Debug, Serialize)]
pub struct NodeResult {
    pub id: u64,
    pub addr: String,
    /// True when its digests were obtained.
    pub checked: bool,
    /// The log index its digests correspond to (the marker's), when checked.
    pub log_index: Option<u64>,
    /// Its last applied index when it last answered.
    pub last_applied: Option<u64>,
    /// Its digests, by table, when checked.
    pub tables: BTreeMap<String, TableValue>,
    /// The tables on which it differs from the majority.
    pub differing_tables: Vec<String>,
    /// Why it could not be checked.
    pub error: Option<String>,
}

/// One table across the checked nodes.
#[derive(Clone, Debug, Serialize)]
pub struct TableResult {
    pub table: String,
    /// The value held by a strict majority of the checked nodes, if any.
    pub majority: Option<TableValue>,
    pub agreeing_nodes: Vec<u64>,
    pub differing_nodes: Vec<u64>,
}

/// The whole report (`-o json` prints it as is).
#[derive(Clone, Debug, Serialize)]
pub struct CheckReport {
    pub check_id: String,
    /// Log index of the marker: the state every node digested.
    pub log_index: u64,
    pub verdict: Verdict,
    pub nodes: Vec<NodeResult>,
    pub tables: Vec<TableResult>,
}

impl CheckReport {
    pub fn exit_code(&self) -> u8 {
        self.verdict.exit_code()
    }

    /// One line: the verdict, naming every differing node with its tables and every node
    /// that could not be checked.
    pub fn summary(&self) -> String {
        let checked = self.nodes.iter().filter(|n| n.checked).count();
        let mut parts = Vec::new();
        for n in self.nodes.iter().filter(|n| !n.differing_tables.is_empty()) {
            parts.push(format!(
                "node {} ({}) differs in {}",
                n.id,
                n.addr,
                n.differing_tables.join(", ")
            ));
        }
        for n in self.nodes.iter().filter(|n| !n.checked) {
            parts.push(format!(
                "node {} ({}) could not be checked: {}",
                n.id,
                n.addr,
                n.error.as_deref().unwrap_or("no answer")
            ));
        }
        match self.verdict {
            Verdict::Agree => format!(
                "AGREE: all {checked} nodes hold the same rows in all {} tables at log index {}",
                self.tables.len(),
                self.log_index
            ),
            Verdict::Differ => format!("DIFFER: {}", parts.join("; ")),
            Verdict::Incomplete if checked == 0 => {
                format!("INCOMPLETE: no node could be checked: {}", parts.join("; "))
            }
            Verdict::Incomplete => format!(
                "INCOMPLETE: the {checked} nodes checked agree, but {}",
                parts.join("; ")
            ),
        }
    }
}

/// Runs a check against the cluster that `addrs` (any of its members) belongs to, waiting up
/// to `wait` for each member to reach the marker and hash its tables.
pub async fn run(remote: &Remote, wait: Duration) -> Result<CheckReport, CliError> {
    let cluster = super::status::collect(remote).await?;
    let credentials = &remote.credentials;
    let members: Vec<(u64, String)> = cluster
        .nodes
        .iter()
        .filter(|n| n.voter.is_some())
        .filter_map(|n| Some((n.id?, n.addr.clone())))
        .collect();
    if members.is_empty() {
        return Err(CliError::Unavailable(
            "no coordinator that answered knows the cluster membership yet".into(),
        ));
    }
    // The leader first (a follower would forward the request to it anyway).
    let mut targets: Vec<String> = cluster.leader_addr.iter().cloned().collect();
    for (_, addr) in &members {
        if !targets.contains(addr) {
            targets.push(addr.clone());
        }
    }
    let check_id = uuid::Uuid::new_v4().to_string();
    let log_index = start(&targets, credentials, &check_id, wait).await?;
    let deadline = Instant::now() + wait;
    let asks = members.into_iter().map(|(id, addr)| {
        let check_id = check_id.clone();
        async move {
            let outcome = poll(&addr, credentials, &check_id, log_index, deadline, wait).await;
            (id, addr, outcome)
        }
    });
    let answers = futures::future::join_all(asks).await;
    let nodes = answers
        .into_iter()
        .map(|(id, addr, outcome)| node_result(id, addr, log_index, outcome))
        .collect();
    Ok(compare(check_id, log_index, nodes))
}

/// Appends the marker through the first of `targets` that takes it, retrying (an election
/// may be under way) until `wait` has passed; returns the marker's log index.
async fn start(
    targets: &[String],
    credentials: &Credentials,
    check_id: &str,
    wait: Duration,
) -> Result<u64, CliError> {
    let deadline = Instant::now() + wait;
    let mut errors: BTreeMap<String, String> = BTreeMap::new();
    loop {
        for addr in targets {
            let ask = async {
                let mut client = connect(addr, credentials).await?;
                client
                    .start_check(StartCheckRequest {
                        check_id: check_id.to_string(),
                    })
                    .await
                    .map(|r| r.into_inner().log_index)
                    .map_err(super::from_status)
            };
            match tokio::time::timeout(Duration::from_secs(10), ask).await {
                Ok(Ok(index)) => return Ok(index),
                Ok(Err(e @ (CliError::Usage(_) | CliError::Denied(_)))) => return Err(e),
                Ok(Err(e)) => {
                    errors.insert(addr.clone(), e.to_string());
                }
                Err(_) => {
                    errors.insert(addr.clone(), "no answer within 10 s".into());
                }
            }
        }
        if Instant::now() >= deadline {
            let why: Vec<String> = errors.iter().map(|(a, e)| format!("{a}: {e}")).collect();
            return Err(CliError::Unavailable(format!(
                "cannot start the check: no coordinator appended its marker within {wait:?} ({})",
                why.join("; ")
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// How asking one node for its digests ended.
enum Outcome {
    Done(CheckDigestReply),
    /// Could not be checked; the reason, and its last applied index if it answered.
    Unchecked(String, Option<u64>),
}

/// Asks `addr` for its digests every 100 ms until it has them, says it never will, or
/// `deadline` passes.
async fn poll(
    addr: &str,
    credentials: &Credentials,
    check_id: &str,
    log_index: u64,
    deadline: Instant,
    wait: Duration,
) -> Outcome {
    let give_up_unheard = Instant::now() + UNREACHABLE_AFTER.min(wait);
    let mut heard = false;
    loop {
        // An error is (whether asking again could help, what went wrong).
        let ask = async {
            let mut client = connect(addr, credentials)
                .await
                .map_err(|e| (true, e.to_string()))?;
            client
                .get_check_digest(CheckDigestRequest {
                    check_id: check_id.to_string(),
                    log_index,
                })
                .await
                .map(|r| r.into_inner())
                .map_err(|e| match e.code() {
                    tonic::Code::Unimplemented => (
                        false,
                        "it does not support replica checks (an older version?)".to_string(),
                    ),
                    _ => (true, e.message().to_string()),
                })
        };
        let answer = tokio::time::timeout(Duration::from_secs(3), ask)
            .await
            .unwrap_or_else(|_| Err((true, "no answer within 3 s".into())));
        heard |= answer.is_ok();
        let last = match answer {
            Ok(reply) => {
                let applied = Some(reply.last_applied).filter(|a| *a > 0);
                match reply.state() {
                    CheckState::Done => return Outcome::Done(reply),
                    CheckState::Failed => {
                        return Outcome::Unchecked(
                            format!("its digest failed: {}", reply.error),
                            applied,
                        );
                    }
                    CheckState::Missed => return Outcome::Unchecked(reply.error, applied),
                    CheckState::Unspecified => {
                        return Outcome::Unchecked(
                            "it answered with no check state".into(),
                            applied,
                        );
                    }
                    CheckState::Pending | CheckState::Computing => Ok(reply),
                }
            }
            Err((false, e)) => return Outcome::Unchecked(e, None),
            // Perhaps restarting: asked again until the deadline.
            Err((true, e)) => Err(e),
        };
        if !heard
            && Instant::now() >= give_up_unheard
            && let Err(e) = &last
        {
            return Outcome::Unchecked(
                format!("it could not be asked for {UNREACHABLE_AFTER:?}: {e}"),
                None,
            );
        }
        if Instant::now() >= deadline {
            return match last {
                Ok(reply) if reply.state() == CheckState::Computing => Outcome::Unchecked(
                    format!("it was still hashing its tables after {wait:?}"),
                    Some(reply.last_applied),
                ),
                Ok(reply) => Outcome::Unchecked(
                    format!(
                        "it did not apply the check's log entry {log_index} within {wait:?} \
                         (it has applied up to {})",
                        reply.last_applied
                    ),
                    Some(reply.last_applied).filter(|a| *a > 0),
                ),
                Err(e) => Outcome::Unchecked(format!("it could not be asked: {e}"), None),
            };
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn node_result(id: u64, addr: String, log_index: u64, outcome: Outcome) -> NodeResult {
    let mut node = NodeResult {
        id,
        addr,
        checked: false,
        log_index: None,
        last_applied: None,
        tables: BTreeMap::new(),
        differing_tables: Vec::new(),
        error: None,
    };
    match outcome {
        Outcome::Done(reply) if reply.log_index != log_index => {
            node.last_applied = Some(reply.last_applied);
            node.error = Some(format!(
                "it digested log index {}, not the check's {log_index}",
                reply.log_index
            ));
        }
        Outcome::Done(reply) => {
            node.checked = true;
            node.log_index = Some(reply.log_index);
            node.last_applied = Some(reply.last_applied);
            node.tables = reply
                .tables
                .into_iter()
                .map(|t| {
                    (
                        t.table,
                        TableValue {
                            rows: t.rows,
                            sha256: t.sha256,
                        },
                    )
                })
                .collect();
        }
        Outcome::Unchecked(why, applied) => {
            node.last_applied = applied;
            node.error = Some(why);
        }
    }
    node
}

/// Compares the checked nodes table by table against the majority.
pub fn compare(check_id: String, log_index: u64, mut nodes: Vec<NodeResult>) -> CheckReport {
    nodes.sort_by_key(|n| n.id);
    // Every table any checked node reported; a node without one of them differs on it.
    let mut names: Vec<String> = Vec::new();
    for node in nodes.iter().filter(|n| n.checked) {
        for name in node.tables.keys() {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
    }
    sort_as_schema(&mut names);
    let checked: Vec<usize> = (0..nodes.len()).filter(|i| nodes[*i].checked).collect();
    let mut tables = Vec::with_capacity(names.len());
    for name in names {
        let mut holders: BTreeMap<Option<&TableValue>, Vec<u64>> = BTreeMap::new();
        for &i in &checked {
            holders
                .entry(nodes[i].tables.get(&name))
                .or_default()
                .push(nodes[i].id);
        }
        let majority = holders
            .iter()
            .find(|(_, ids)| ids.len() * 2 > checked.len())
            .and_then(|(value, _)| value.cloned());
        let (agreeing, differing): (Vec<&NodeResult>, Vec<&NodeResult>) = checked
            .iter()
            .map(|&i| &nodes[i])
            .partition(|n| majority.is_some() && n.tables.get(&name) == majority.as_ref());
        tables.push(TableResult {
            agreeing_nodes: agreeing.iter().map(|n| n.id).collect(),
            differing_nodes: differing.iter().map(|n| n.id).collect(),
            table: name,
            majority,
        });
    }
    for node in &mut nodes {
        node.differing_tables = tables
            .iter()
            .filter(|t| t.differing_nodes.contains(&node.id))
            .map(|t| t.table.clone())
            .collect();
    }
    let verdict = if nodes.iter().any(|n| !n.differing_tables.is_empty()) {
        Verdict::Differ
    } else if checked.len() < nodes.len() || checked.is_empty() {
        Verdict::Incomplete
    } else {
        Verdict::Agree
    };
    CheckReport {
        check_id,
        log_index,
        verdict,
        nodes,
        tables,
    }
}

/// Orders table names as the schema lists them; unknown names go last, by name.
fn sort_as_schema(names: &mut [String]) {
    let position = |name: &str| {
        crate::state::schema::REPLICATED_TABLES
            .iter()
            .position(|t| t.name == name)
            .unwrap_or(usize::MAX)
    };
    names.sort_by(|a, b| position(a).cmp(&position(b)).then_with(|| a.cmp(b)));
}

fn short(sha: &str) -> &str {
    sha.get(..16).unwrap_or(sha)
}

fn ids(ids: &[u64]) -> String {
    if ids.is_empty() {
        return "-".to_string();
    }
    ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

/// Renders the report.
pub fn render(report: &CheckReport, output: Output) -> String {
    match output {
        Output::Json => serde_json::to_string_pretty(report).unwrap_or_default() + "\n",
        Output::Table => {
            let mut out = format!(
                "Replica check {} at log index {}\n{}\n\n",
                report.check_id,
                report.log_index,
                report.summary()
            );
            let rows: Vec<Vec<String>> = report
                .nodes
                .iter()
                .map(|n| {
                    let (result, detail) = if !n.checked {
                        ("UNCHECKED", n.error.clone().unwrap_or_default())
                    } else if n.differing_tables.is_empty() {
                        ("agrees", String::new())
                    } else {
                        ("DIFFERS", n.differing_tables.join(", "))
                    };
                    vec![
                        n.id.to_string(),
                        n.addr.clone(),
                        n.log_index
                            .or(n.last_applied)
                            .map_or("-".to_string(), |i| i.to_string()),
                        result.to_string(),
                        detail,
                    ]
                })
                .collect();
            out.push_str(&table(
                &[
                    "NODE",
                    "ADDRESS",
                    "INDEX",
                    "RESULT",
                    "DIFFERING TABLES / ERROR",
                ],
                &rows,
            ));
            let rows: Vec<Vec<String>> = report
                .tables
                .iter()
                .map(|t| {
                    let differing: Vec<String> = t
                        .differing_nodes
                        .iter()
                        .map(|id| {
                            let held = report
                                .nodes
                                .iter()
                                .find(|n| n.id == *id)
                                .and_then(|n| n.tables.get(&t.table));
                            match held {
                                Some(v) => format!("{id} ({} rows, {})", v.rows, short(&v.sha256)),
                                None => format!("{id} (no such table)"),
                            }
                        })
                        .collect();
                    vec![
                        t.table.clone(),
                        t.majority
                            .as_ref()
                            .map_or("-".to_string(), |m| m.rows.to_string()),
                        t.majority.as_ref().map_or_else(
                            || "no majority".to_string(),
                            |m| short(&m.sha256).to_string(),
                        ),
                        ids(&t.agreeing_nodes),
                        if differing.is_empty() {
                            "-".to_string()
                        } else {
                            differing.join("; ")
                        },
                    ]
                })
                .collect();
            out.push('\n');
            out.push_str(&table(
                &["TABLE", "ROWS", "SHA-256 (MAJORITY)", "AGREE", "DIFFER"],
                &rows,
            ));
            out
        }
    }
}

#[cfg(test)]
mod tests;
