//! The leader transition picture: every election in `leader_transitions` on a timeline — who
//! led which term and for how long — with each failover's gap.
//!
//! **The gap** is estimated, because the log records when a leader was elected, not when its
//! predecessor stopped: it runs from the deposed leader's last health sample that reached the
//! log (every coordinator samples itself every 10 s, `coordinator::self_health`) to the new
//! leader's election. It is an upper bound of the time without a leader, coarse by up to the
//! sampling interval; none is shown when the deposed leader has no sample before the election.

use std::fmt::Write as _;

use serde_json::Value as Json;

use super::rows::Row;
use super::svg::{self, INK, MUTED, TimeAxis, series_colour};
use super::text::{WIDTH, fit, timeline};
use super::{VizError, span, utc};

/// One election.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    pub term: u64,
    pub leader: u64,
    pub elected_at_us: i64,
    /// The leader of the election before, if any.
    pub previous_leader: Option<u64>,
    /// The previous leader's last health sample before this election.
    pub previous_last_seen_us: Option<i64>,
}

impl Transition {
    /// The estimated time without a leader before this election (see the module docs).
    pub fn failover_gap_us(&self) -> Option<i64> {
        self.previous_last_seen_us
            .map(|seen| (self.elected_at_us - seen).max(0))
    }
}

/// Every election, oldest first.
#[derive(Clone, Debug, PartialEq)]
pub struct LeaderPicture {
    pub generated_at_us: i64,
    pub transitions: Vec<Transition>,
    /// Elections in the table, when more than `transitions` were read.
    pub total: u64,
}

/// The most transitions read: the newest this many.
pub const MAX_TRANSITIONS: u32 = 10_000;

/// The query [`LeaderPicture::from_rows`] reads: each election with its predecessor and the
/// predecessor's last health sample before it, and the number of rows in a last column.
pub fn sql() -> String {
    format!(
        "WITH t AS (SELECT id, term, leader_id, elected_at, \
           lag(leader_id) OVER (ORDER BY term, id) AS previous FROM leader_transitions) \
         SELECT * FROM (SELECT term, leader_id, epoch_us(elected_at) AS elected_us, previous, \
           (SELECT epoch_us(max(h.sampled_at)) FROM health_samples h \
             WHERE h.node_id = t.previous AND h.sampled_at <= t.elected_at) AS previous_seen_us, \
           count(*) OVER () AS total, id \
         FROM t ORDER BY term DESC, id DESC LIMIT {MAX_TRANSITIONS}) ORDER BY term, id"
    )
}

impl LeaderPicture {
    /// The picture from the rows of [`sql`].
    pub fn from_rows(rows: &[Vec<Json>], generated_at_us: i64) -> Result<LeaderPicture, VizError> {
        let mut transitions = Vec::with_capacity(rows.len());
        let mut total = 0;
        for cells in rows {
            let row = Row::new("leader_transitions", cells);
            transitions.push(Transition {
                term: row.i64(0, "term")? as u64,
                leader: row.i64(1, "leader_id")? as u64,
                elected_at_us: row.i64(2, "elected_at")?,
                previous_leader: row.opt_i64(3, "previous")?.map(|p| p as u64),
                previous_last_seen_us: row.opt_i64(4, "previous_seen_us")?,
            });
            total = row.i64(5, "total")? as u64;
        }
        Ok(LeaderPicture {
            generated_at_us,
            total: total.max(transitions.len() as u64),
            transitions,
        })
    }

    /// The leader of the newest election.
    pub fn current(&self) -> Option<&Transition> {
        self.transitions.last()
    }

    /// How long each term's leader led: until the next election, the last until now.
    fn tenures(&self) -> Vec<(i64, i64)> {
        self.transitions
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let end = self
                    .transitions
                    .get(i + 1)
                    .map_or(self.generated_at_us, |n| n.elected_at_us);
                (t.elected_at_us, end.max(t.elected_at_us))
            })
            .collect()
    }

    /// The coordinators that led, sorted.
    fn leaders(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.transitions.iter().map(|t| t.leader).collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    fn headline(&self) -> String {
        match self.current() {
            Some(c) => format!(
                "{} election{}; current leader: node {} (term {})",
                self.total,
                if self.total == 1 { "" } else { "s" },
                c.leader,
                c.term
            ),
            None => "no election recorded".to_string(),
        }
    }

    /// The SVG: a lane of failover gaps, a lane per coordinator with a bar per term it led and
    /// a mark (`class="transition"`) per election, then a table of the newest elections.
    pub fn svg(&self) -> String {
        const WIDTH_PX: f64 = 1000.0;
        const LEFT: f64 = 130.0;
        const LANE: f64 = 38.0;
        const TABLE_ROWS: usize = 12;
        let leaders = self.leaders();
        let lane_of = |id: u64| leaders.iter().position(|l| *l == id).unwrap_or(0);
        let start = self
            .transitions
            .iter()
            .flat_map(|t| std::iter::once(t.elected_at_us).chain(t.previous_last_seen_us))
            .min()
            .unwrap_or(self.generated_at_us - 60_000_000);
        let axis = TimeAxis::new(start, self.generated_at_us, LEFT, WIDTH_PX - 30.0);
        let top = 74.0;
        let gap_y = top + LANE / 2.0;
        let lane_y = |i: usize| top + LANE * (i as f64 + 1.5);
        let bottom = top + LANE * (leaders.len() as f64 + 1.0) + 10.0;
        let mut body = String::new();

        // Lane labels and guides.
        body.push_str(&svg::text(
            LEFT - 12.0,
            gap_y + 4.0,
            12,
            "end",
            "#c0392b",
            "failover gap",
        ));
        for (i, id) in leaders.iter().enumerate() {
            let y = lane_y(i);
            body.push_str(&svg::text(
                LEFT - 12.0,
                y + 4.0,
                13,
                "end",
                INK,
                &format!("node {id}"),
            ));
            let _ = writeln!(
                body,
                "<line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"{}\"/>",
                axis.x1,
                svg::GRID
            );
        }
        body.push_str(&axis.draw(bottom, top));
        if self.transitions.is_empty() {
            body.push_str(&svg::text(
                LEFT + 20.0,
                gap_y + 4.0,
                13,
                "start",
                MUTED,
                "no election recorded",
            ));
        }

        // Terms as bars in their leader's lane.
        for (t, (from, to)) in self.transitions.iter().zip(self.tenures()) {
            let lane = lane_of(t.leader);
            let (x0, x1) = (axis.x(from), axis.x(to));
            let _ = writeln!(
                body,
                "<rect class=\"term\" data-term=\"{term}\" x=\"{x0:.1}\" y=\"{:.1}\" width=\"{:.1}\" \
                 height=\"16\" fill=\"{c}\" fill-opacity=\"0.35\" stroke=\"{c}\">\
                 <title>term {term}: node {l} led for {d}</title></rect>",
                lane_y(lane) - 8.0,
                (x1 - x0).max(1.0),
                c = series_colour(lane),
                term = t.term,
                l = t.leader,
                d = span(to - from),
            );
        }
        // Failover gaps.
        for t in &self.transitions {
            if let (Some(seen), Some(gap)) = (t.previous_last_seen_us, t.failover_gap_us()) {
                let (x0, x1) = (axis.x(seen), axis.x(t.elected_at_us));
                let _ = writeln!(
                    body,
                    "<rect class=\"gap\" data-term=\"{term}\" x=\"{x0:.1}\" y=\"{:.1}\" \
                     width=\"{:.1}\" height=\"12\" fill=\"#c0392b\" fill-opacity=\"0.6\">\
                     <title>before term {term}: at most {g} without a leader (node {p} last seen \
                     {s})</title></rect>",
                    gap_y - 6.0,
                    (x1 - x0).max(2.0),
                    term = t.term,
                    g = span(gap),
                    p = t.previous_leader.unwrap_or_default(),
                    s = utc(seen),
                );
            }
        }
        // One mark per election, labelled with its term where there is room.
        let mut last_label = f64::NEG_INFINITY;
        for t in &self.transitions {
            let x = axis.x(t.elected_at_us);
            let y = lane_y(lane_of(t.leader));
            let gap = t
                .failover_gap_us()
                .map(|g| format!("; failover gap at most {}", span(g)))
                .unwrap_or_default();
            let label = if x - last_label >= 30.0 {
                last_label = x;
                svg::text(x, y - 12.0, 11, "middle", INK, &format!("t{}", t.term))
            } else {
                String::new()
            };
            let _ = writeln!(
                body,
                "<g class=\"transition\" data-term=\"{term}\" data-leader=\"{l}\">\
                 <title>term {term}: node {l} elected at {at}{gap}</title>\
                 <line x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{x:.1}\" y2=\"{bottom:.1}\" stroke=\"{INK}\" \
                 stroke-opacity=\"0.25\"/>\
                 <circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"6\" fill=\"{gold}\" stroke=\"{INK}\"/>{label}</g>",
                top,
                term = t.term,
                l = t.leader,
                at = utc(t.elected_at_us),
                gold = svg::role_colour("leader"),
                label = label.trim_end(),
            );
        }

        // The newest elections as a table.
        let mut y = bottom + 64.0;
        let shown: Vec<(usize, &Transition)> = self
            .transitions
            .iter()
            .enumerate()
            .rev()
            .take(TABLE_ROWS)
            .collect();
        let heading = if self.transitions.len() > TABLE_ROWS {
            format!("The newest {TABLE_ROWS} of {} elections", self.total)
        } else {
            "Elections".to_string()
        };
        body.push_str(&svg::text(20.0, y, 14, "start", INK, &heading));
        y += 22.0;
        let columns = [
            (20.0, "term"),
            (90.0, "leader"),
            (170.0, "elected at (UTC)"),
            (420.0, "failover gap (at most)"),
            (620.0, "previous term lasted"),
        ];
        for (x, name) in columns {
            body.push_str(&svg::text(x, y, 12, "start", MUTED, name));
        }
        let tenures = self.tenures();
        for (i, t) in shown {
            y += 18.0;
            let cells = [
                t.term.to_string(),
                format!("node {}", t.leader),
                utc(t.elected_at_us),
                t.failover_gap_us().map_or("-".to_string(), span),
                i.checked_sub(1)
                    .map_or("-".to_string(), |p| span(tenures[p].1 - tenures[p].0)),
            ];
            for ((x, _), cell) in columns.iter().zip(cells) {
                body.push_str(&svg::text(*x, y, 12, "start", INK, &cell));
            }
        }
        let height = (y + 24.0).ceil() as u32;
        let sub = format!("{} · {}", self.headline(), utc(self.generated_at_us));
        svg::document(WIDTH_PX as u32, height, "Leader transitions", &sub, &body)
    }

    /// The terminal rendering: a timeline of elections (each mark the new leader's id) and a
    /// table of the newest ones.
    pub fn text(&self) -> String {
        const ROWS: usize = 50;
        let mut out = format!(
            "Leader transitions at {}: {}\n",
            utc(self.generated_at_us),
            self.headline()
        );
        if self.transitions.is_empty() {
            return out;
        }
        let start = self.transitions[0].elected_at_us;
        let marks: Vec<(i64, char)> = self
            .transitions
            .iter()
            .map(|t| {
                let digit = char::from_digit((t.leader % 10) as u32, 10).unwrap_or('?');
                (t.elected_at_us, digit)
            })
            .collect();
        let cells = WIDTH - 12;
        let _ = writeln!(
            out,
            "\nelections  {}\n{:<11}{}{:>w$}",
            timeline(start, self.generated_at_us.max(start), cells, &marks),
            "",
            utc(start),
            format!("now {}", utc(self.generated_at_us)),
            w = cells.saturating_sub(utc(start).len()),
        );
        out.push_str("(each mark is the elected node's id, its last digit)\n\n");
        if self.transitions.len() > ROWS {
            let _ = writeln!(out, "the newest {ROWS} of {} elections:", self.total);
        }
        let tenures = self.tenures();
        let rows: Vec<Vec<String>> = self
            .transitions
            .iter()
            .enumerate()
            .rev()
            .take(ROWS)
            .map(|(i, t)| {
                vec![
                    t.term.to_string(),
                    t.leader.to_string(),
                    utc(t.elected_at_us),
                    t.failover_gap_us()
                        .map_or("-".to_string(), |g| format!("<= {}", span(g))),
                    i.checked_sub(1)
                        .map_or("-".to_string(), |p| span(tenures[p].1 - tenures[p].0)),
                ]
            })
            .collect();
        let table = crate::cli::table(
            &[
                "TERM",
                "LEADER",
                "ELECTED AT",
                "FAILOVER GAP",
                "PREVIOUS TERM LASTED",
            ],
            &rows,
        );
        for line in table.lines() {
            let _ = writeln!(out, "{}", fit(line, WIDTH));
        }
        out.push_str(
            "\nfailover gap: from the deposed leader's last health sample (one every 10 s) to \
             the election\n",
        );
        out
    }
}
