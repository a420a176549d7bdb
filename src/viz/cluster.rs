//! The cluster status picture: the coordinators with their roles — the leader on top, the
//! nodes it replicates to below — and the workers grouped by status.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::Value as Json;

use super::rows::Row;
use super::svg::{self, INK, MUTED, escape, role_colour, status_colour};
use super::text::{WIDTH, fit, wrap};
use super::{VizError, utc};

/// One coordinator as the cluster reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeBox {
    /// Its Raft id; unknown for an address that never answered and no member named.
    pub id: Option<u64>,
    pub address: String,
    /// `leader`, `follower`, `candidate`, `learner`, or `unreachable`.
    pub role: String,
    pub is_leader: bool,
    /// The term it is in, when it answered.
    pub term: Option<u64>,
    /// Why it did not answer.
    pub error: Option<String>,
}

/// One worker and its status (`WorkerStatus`'s name); `drained` when an operator drained it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerBox {
    pub id: String,
    pub status: String,
    pub drained: bool,
}

/// The coordinators and workers at one moment.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterPicture {
    pub generated_at_us: i64,
    pub leader_id: Option<u64>,
    /// The highest term any coordinator reported.
    pub term: u64,
    pub nodes: Vec<NodeBox>,
    pub workers: Vec<WorkerBox>,
}

/// The order statuses are shown in: working, then troubled, then gone.
const STATUS_ORDER: [&str; 8] = [
    "healthy",
    "suspect",
    "draining",
    "recovering",
    "quarantined",
    "failed",
    "permanently_failed",
    "left",
];

/// Worker names shown per status group in the SVG; the rest are counted.
const SVG_NAMES_PER_GROUP: usize = 60;
/// Worker names shown per status group in the text.
const TEXT_NAMES_PER_GROUP: usize = 200;

/// The query [`workers_from_rows`] reads.
pub const WORKERS_SQL: &str =
    "SELECT id, status, drained_at IS NOT NULL AS drained FROM workers ORDER BY id";

/// Workers from the rows of [`WORKERS_SQL`].
pub fn workers_from_rows(rows: &[Vec<Json>]) -> Result<Vec<WorkerBox>, VizError> {
    rows.iter()
        .map(|cells| {
            let row = Row::new("workers", cells);
            Ok(WorkerBox {
                id: row.text(0, "id")?,
                status: row.text(1, "status")?,
                drained: row.bool(2, "drained")?,
            })
        })
        .collect()
}

impl ClusterPicture {
    /// The picture from what `testfleet status` collects and the workers.
    pub fn from_status(
        status: &crate::cli::status::ClusterStatus,
        workers: Vec<WorkerBox>,
        generated_at_us: i64,
    ) -> ClusterPicture {
        let nodes = status
            .nodes
            .iter()
            .map(|n| NodeBox {
                id: n.id,
                address: n.addr.clone(),
                role: n.role.clone().unwrap_or_else(|| "unreachable".to_string()),
                is_leader: n.id.is_some() && n.id == status.leader_id,
                term: n.term,
                error: n.error.clone(),
            })
            .collect();
        ClusterPicture {
            generated_at_us,
            leader_id: status.leader_id,
            term: status.term,
            nodes,
            workers,
        }
    }

    /// The workers by status: working, then troubled, then gone (healthy … left), then any
    /// other status by name.
    pub fn groups(&self) -> Vec<(String, Vec<&WorkerBox>)> {
        let mut by: BTreeMap<&str, Vec<&WorkerBox>> = BTreeMap::new();
        for w in &self.workers {
            by.entry(w.status.as_str()).or_default().push(w);
        }
        let mut groups = Vec::new();
        for status in STATUS_ORDER {
            if let Some(ws) = by.remove(status) {
                groups.push((status.to_string(), ws));
            }
        }
        groups.extend(by.into_iter().map(|(s, ws)| (s.to_string(), ws)));
        groups
    }

    fn leader(&self) -> Option<&NodeBox> {
        self.nodes.iter().find(|n| n.is_leader)
    }

    fn headline(&self) -> String {
        match self.leader() {
            Some(l) => format!(
                "Leader: node {} ({}), term {}",
                l.id.unwrap_or_default(),
                l.address,
                self.term
            ),
            None => format!("No leader known, term {}", self.term),
        }
    }

    /// The SVG: the leader's box on top, the other coordinators below it joined by the
    /// replication edges, then a panel per worker status.
    pub fn svg(&self) -> String {
        const WIDTH_PX: f64 = 1000.0;
        const BOX_W: f64 = 190.0;
        const BOX_H: f64 = 78.0;
        const GAP: f64 = 24.0;
        let mut body = String::new();
        body.push_str(&svg::text(20.0, 84.0, 14, "start", INK, "Coordinators"));
        let leader = self.leader();
        let others: Vec<&NodeBox> = self.nodes.iter().filter(|n| !n.is_leader).collect();
        let per_row = (((WIDTH_PX - 40.0 + GAP) / (BOX_W + GAP)) as usize).max(1);
        let row_x = |count: usize, i: usize| {
            let count = count.min(per_row) as f64;
            let total = count * BOX_W + (count - 1.0) * GAP;
            (WIDTH_PX - total) / 2.0 + (i % per_row) as f64 * (BOX_W + GAP)
        };
        let mut y = 96.0;
        let mut leader_anchor = None;
        if let Some(l) = leader {
            let x = row_x(1, 0);
            body.push_str(&node_box(l, x, y, BOX_W, BOX_H));
            leader_anchor = Some((x + BOX_W / 2.0, y + BOX_H));
            y += BOX_H + 56.0;
        }
        let mut edges = String::new();
        let mut boxes = String::new();
        for (i, n) in others.iter().enumerate() {
            let x = row_x(others.len() - (i / per_row) * per_row, i);
            let top = y + (i / per_row) as f64 * (BOX_H + GAP);
            if let Some((lx, ly)) = leader_anchor {
                let dash = if n.role == "unreachable" {
                    " stroke-dasharray=\"6 4\""
                } else {
                    ""
                };
                let _ = writeln!(
                    edges,
                    "<line class=\"edge\" x1=\"{lx:.1}\" y1=\"{ly:.1}\" x2=\"{:.1}\" y2=\"{top:.1}\" \
                     stroke=\"{MUTED}\" stroke-width=\"1.5\"{dash}/>",
                    x + BOX_W / 2.0
                );
            }
            boxes.push_str(&node_box(n, x, top, BOX_W, BOX_H));
        }
        body.push_str(&edges);
        body.push_str(&boxes);
        if !others.is_empty() {
            y += others.len().div_ceil(per_row) as f64 * (BOX_H + GAP);
        }
        if self.nodes.is_empty() {
            body.push_str(&svg::text(
                40.0,
                y + 10.0,
                12,
                "start",
                MUTED,
                "no coordinator answered",
            ));
            y += 30.0;
        }

        // Workers, one panel per status.
        y += 16.0;
        let summary = format!("Workers ({})", self.workers.len());
        body.push_str(&svg::text(20.0, y, 14, "start", INK, &summary));
        y += 14.0;
        if self.workers.is_empty() {
            body.push_str(&svg::text(
                40.0,
                y + 14.0,
                12,
                "start",
                MUTED,
                "no worker has registered",
            ));
            y += 30.0;
        }
        for (status, workers) in self.groups() {
            let colour = status_colour(&status);
            let _ = writeln!(
                body,
                "<g class=\"worker-group\" data-status=\"{}\" data-count=\"{}\">",
                escape(&status),
                workers.len()
            );
            y += 12.0;
            let _ = writeln!(
                body,
                "<rect x=\"20\" y=\"{:.1}\" width=\"12\" height=\"12\" rx=\"2\" fill=\"{colour}\"/>",
                y - 10.0
            );
            body.push_str(&svg::text(
                38.0,
                y,
                13,
                "start",
                INK,
                &format!("{status} ({})", workers.len()),
            ));
            y += 10.0;
            let (mut x, mut line_y) = (38.0, y);
            for w in workers.iter().take(SVG_NAMES_PER_GROUP) {
                let label = fit(&w.id, 40);
                let label = if w.drained {
                    format!("{label} (drained)")
                } else {
                    label
                };
                let width = label.chars().count() as f64 * 7.0 + 16.0;
                if x + width > WIDTH_PX - 20.0 && x > 38.0 {
                    x = 38.0;
                    line_y += 28.0;
                }
                let _ = writeln!(
                    body,
                    "<g class=\"worker\" data-id=\"{id}\" data-status=\"{st}\"><title>{id}: {st}{dr}</title>\
                     <rect x=\"{x:.1}\" y=\"{line_y:.1}\" width=\"{width:.1}\" height=\"22\" rx=\"11\" \
                     fill=\"{colour}\" fill-opacity=\"0.18\" stroke=\"{colour}\"/>{t}</g>",
                    id = escape(&w.id),
                    st = escape(&status),
                    dr = if w.drained { ", drained" } else { "" },
                    t = svg::text(x + width / 2.0, line_y + 15.5, 12, "middle", INK, &label)
                        .trim_end(),
                );
                x += width + 8.0;
            }
            y = line_y + 22.0;
            if workers.len() > SVG_NAMES_PER_GROUP {
                y += 16.0;
                body.push_str(&svg::text(
                    38.0,
                    y,
                    12,
                    "start",
                    MUTED,
                    &format!("and {} more", workers.len() - SVG_NAMES_PER_GROUP),
                ));
            }
            body.push_str("</g>\n");
            y += 8.0;
        }
        let height = (y + 24.0).ceil() as u32;
        let sub = format!("{} · {}", self.headline(), utc(self.generated_at_us));
        svg::document(WIDTH_PX as u32, height, "Cluster status", &sub, &body)
    }

    /// The terminal rendering: the leader, a table of coordinators, the workers by status.
    pub fn text(&self) -> String {
        let mut out = format!(
            "Cluster status at {}\n{}\n\n",
            utc(self.generated_at_us),
            fit(&self.headline(), WIDTH)
        );
        let rows: Vec<Vec<String>> = self
            .nodes
            .iter()
            .map(|n| {
                vec![
                    if n.is_leader { "*" } else { "" }.to_string(),
                    n.id.map_or("-".to_string(), |id| id.to_string()),
                    fit(&n.address, 30),
                    n.role.clone(),
                    n.term.map_or("-".to_string(), |t| t.to_string()),
                    fit(n.error.as_deref().unwrap_or(""), 40),
                ]
            })
            .collect();
        out.push_str(&crate::cli::table(
            &["", "NODE", "ADDRESS", "ROLE", "TERM", "ERROR"],
            &rows,
        ));
        let counts: Vec<String> = self
            .groups()
            .iter()
            .map(|(s, ws)| format!("{s} {}", ws.len()))
            .collect();
        let _ = writeln!(
            out,
            "\nWorkers ({}){}{}",
            self.workers.len(),
            if counts.is_empty() { "" } else { ": " },
            counts.join(", ")
        );
        for (status, workers) in self.groups() {
            let mut names: Vec<String> = workers
                .iter()
                .take(TEXT_NAMES_PER_GROUP)
                .map(|w| {
                    if w.drained {
                        format!("{} (drained)", w.id)
                    } else {
                        w.id.clone()
                    }
                })
                .collect();
            if workers.len() > TEXT_NAMES_PER_GROUP {
                names.push(format!("and {} more", workers.len() - TEXT_NAMES_PER_GROUP));
            }
            let head = format!("  {status} ({}): ", workers.len());
            let indent = head.chars().count();
            let _ = writeln!(out, "{head}{}", wrap(&names, indent));
        }
        out
    }
}

/// One coordinator's box: id, address, role and term; the leader's is framed in gold.
fn node_box(n: &NodeBox, x: f64, y: f64, w: f64, h: f64) -> String {
    let colour = role_colour(&n.role);
    let id = n.id.map_or("?".to_string(), |id| id.to_string());
    let (stroke_width, dash) = match (n.is_leader, n.role.as_str()) {
        (true, _) => (4.0, ""),
        (false, "unreachable") => (1.5, " stroke-dasharray=\"6 4\""),
        _ => (1.5, ""),
    };
    let mut out = format!(
        "<g class=\"node\" data-id=\"{id}\" data-role=\"{role}\" data-leader=\"{leader}\">\
         <title>node {id} at {addr}: {role}{why}</title>\n\
         <rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{h:.1}\" rx=\"8\" \
         fill=\"{colour}\" fill-opacity=\"0.15\" stroke=\"{colour}\" stroke-width=\"{stroke_width}\"{dash}/>\n",
        role = escape(&n.role),
        addr = escape(&n.address),
        leader = n.is_leader,
        why = n
            .error
            .as_deref()
            .map(|e| format!(" ({})", escape(e)))
            .unwrap_or_default(),
    );
    let cx = x + w / 2.0;
    let title = if n.is_leader {
        format!("★ node {id} — leader")
    } else {
        format!("node {id}")
    };
    out.push_str(&svg::text(cx, y + 24.0, 15, "middle", INK, &title));
    out.push_str(&svg::text(
        cx,
        y + 43.0,
        11,
        "middle",
        MUTED,
        &fit(&n.address, 30),
    ));
    let role_line = match n.term {
        Some(t) => format!("{} · term {t}", n.role),
        None => n.role.clone(),
    };
    out.push_str(&svg::text(cx, y + 63.0, 12, "middle", colour, &role_line));
    out.push_str("</g>\n");
    out
}
