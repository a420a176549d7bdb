//! The recovery timeline: every recovery decision of the three history tables over time — a
//! lane for system recovery episodes, one per worker that had recovery attempts, one for the
//! decisions about tasks — each mark coloured by its recovery type and shaped by its outcome.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::Value as Json;

use super::rows::Row;
use super::svg::{self, INK, MUTED, TimeAxis, escape, series_colour};
use super::text::{WIDTH, fit, timeline};
use super::{VizError, utc};

/// Which history table a decision comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RecoveryScope {
    System,
    Worker,
    Task,
}

impl RecoveryScope {
    pub fn name(self) -> &'static str {
        match self {
            RecoveryScope::System => "system",
            RecoveryScope::Worker => "worker",
            RecoveryScope::Task => "task",
        }
    }
}

/// One recovery decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveryEvent {
    pub at_us: i64,
    pub scope: RecoveryScope,
    /// The worker or task it is about; `system` for an episode.
    pub subject: String,
    /// `recovery_type`: `reconnect`, `restart`, `quarantine`, `requeue`, `timeout`…; an
    /// episode's is `episode`.
    pub recovery_type: String,
    pub attempt: Option<i64>,
    pub success: bool,
    /// The error message, or an episode's status and reach.
    pub note: String,
}

/// Recovery decisions, oldest first.
#[derive(Clone, Debug, PartialEq)]
pub struct RecoveryPicture {
    pub generated_at_us: i64,
    pub events: Vec<RecoveryEvent>,
    /// Rows in each table (more than `events` holds when the newest were cut).
    pub totals: BTreeMap<RecoveryScope, u64>,
}

/// The most decisions read: the newest this many.
pub const MAX_EVENTS: u32 = 5000;
/// Worker lanes in the SVG; workers beyond share one lane.
const WORKER_LANES: usize = 16;

/// The query [`RecoveryPicture::from_rows`] reads.
pub fn sql() -> String {
    format!(
        "SELECT * FROM (\
           SELECT 'worker' AS scope, worker_id AS subject, epoch_us(recovery_time) AS at_us, \
             attempt_number, success, recovery_type, left(error_message, 200) AS note, \
             count(*) OVER () AS total FROM worker_recovery_history \
             WHERE recovery_time IS NOT NULL \
           UNION ALL SELECT 'task', task_id, epoch_us(recovery_time), attempt_number, success, \
             recovery_type, left(error_message, 200), count(*) OVER () \
             FROM task_recovery_history WHERE recovery_time IS NOT NULL \
           UNION ALL SELECT 'system', 'system', epoch_us(recovery_time), NULL, success, \
             'episode', concat(system_status, ': ', affected_workers, ' workers, ', \
             affected_tasks, ' tasks'), count(*) OVER () \
             FROM system_recovery_history WHERE recovery_time IS NOT NULL \
         ) ORDER BY at_us DESC, scope, subject LIMIT {MAX_EVENTS}"
    )
}

impl RecoveryPicture {
    /// The picture from the rows of [`sql`] (in any order).
    pub fn from_rows(
        rows: &[Vec<Json>],
        generated_at_us: i64,
    ) -> Result<RecoveryPicture, VizError> {
        let mut events = Vec::with_capacity(rows.len());
        let mut totals = BTreeMap::new();
        for cells in rows {
            let row = Row::new("recovery history", cells);
            let scope = match row.text(0, "scope")?.as_str() {
                "worker" => RecoveryScope::Worker,
                "task" => RecoveryScope::Task,
                "system" => RecoveryScope::System,
                other => {
                    return Err(VizError::Row {
                        table: "recovery history",
                        why: format!("unknown scope {other:?}"),
                    });
                }
            };
            events.push(RecoveryEvent {
                scope,
                subject: row.text(1, "subject")?,
                at_us: row.i64(2, "recovery_time")?,
                attempt: row.opt_i64(3, "attempt_number")?,
                success: row.bool(4, "success")?,
                recovery_type: row.text(5, "recovery_type")?,
                note: row.text(6, "note")?,
            });
            totals.insert(scope, row.i64(7, "total")? as u64);
        }
        events.sort_by(|a, b| (a.at_us, a.scope, &a.subject).cmp(&(b.at_us, b.scope, &b.subject)));
        Ok(RecoveryPicture {
            generated_at_us,
            events,
            totals,
        })
    }

    fn total(&self) -> u64 {
        self.totals
            .values()
            .sum::<u64>()
            .max(self.events.len() as u64)
    }

    /// Recovery types in order of first appearance in the table's type names, sorted.
    fn types(&self) -> Vec<&str> {
        let mut types: Vec<&str> = self
            .events
            .iter()
            .map(|e| e.recovery_type.as_str())
            .collect();
        types.sort_unstable();
        types.dedup();
        types
    }

    /// The lanes: `system`, then each worker with attempts (the first [`WORKER_LANES`] by name,
    /// the rest together), then `tasks`; each with the indices of its events.
    fn lanes(&self) -> Vec<(String, Vec<usize>)> {
        let mut system = Vec::new();
        let mut workers: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        let mut tasks = Vec::new();
        for (i, e) in self.events.iter().enumerate() {
            match e.scope {
                RecoveryScope::System => system.push(i),
                RecoveryScope::Worker => workers.entry(e.subject.as_str()).or_default().push(i),
                RecoveryScope::Task => tasks.push(i),
            }
        }
        let mut lanes = vec![("system".to_string(), system)];
        let mut rest: Vec<usize> = Vec::new();
        for (n, (worker, events)) in workers.into_iter().enumerate() {
            if n < WORKER_LANES {
                lanes.push((format!("worker {worker}"), events));
            } else {
                rest.extend(events);
            }
        }
        if !rest.is_empty() {
            rest.sort_unstable();
            lanes.push(("other workers".to_string(), rest));
        }
        lanes.push(("tasks".to_string(), tasks));
        lanes
    }

    /// Per (scope, type): decisions, successes, the last time.
    fn summary(&self) -> BTreeMap<(RecoveryScope, &str), (u64, u64, i64)> {
        let mut by: BTreeMap<(RecoveryScope, &str), (u64, u64, i64)> = BTreeMap::new();
        for e in &self.events {
            let s = by
                .entry((e.scope, e.recovery_type.as_str()))
                .or_insert((0, 0, e.at_us));
            s.0 += 1;
            s.1 += u64::from(e.success);
            s.2 = s.2.max(e.at_us);
        }
        by
    }

    fn headline(&self) -> String {
        let parts: Vec<String> = [
            RecoveryScope::Worker,
            RecoveryScope::Task,
            RecoveryScope::System,
        ]
        .iter()
        .map(|s| format!("{} {}", s.name(), self.totals.get(s).copied().unwrap_or(0)))
        .collect();
        let shown = if (self.events.len() as u64) < self.total() {
            format!(", the newest {} shown", self.events.len())
        } else {
            String::new()
        };
        format!(
            "{} recovery decisions ({}){shown}",
            self.total(),
            parts.join(", ")
        )
    }

    /// The SVG: a lane per subject with a mark per decision (`class="event"`: a filled circle
    /// when it succeeded, a cross when it failed, coloured by type), a legend, and a summary
    /// table per scope and type.
    pub fn svg(&self) -> String {
        const WIDTH_PX: f64 = 1000.0;
        const LEFT: f64 = 170.0;
        const LANE: f64 = 30.0;
        let lanes = self.lanes();
        let types = self.types();
        let colour_of = |t: &str| series_colour(types.iter().position(|x| *x == t).unwrap_or(0));
        let start = self
            .events
            .first()
            .map_or(self.generated_at_us - 60_000_000, |e| e.at_us);
        let axis = TimeAxis::new(start, self.generated_at_us, LEFT, WIDTH_PX - 30.0);
        let top = 74.0;
        let lane_y = |i: usize| top + LANE * (i as f64 + 0.5);
        let bottom = top + LANE * lanes.len() as f64 + 8.0;
        let mut body = String::new();
        for (i, (name, _)) in lanes.iter().enumerate() {
            let y = lane_y(i);
            body.push_str(&svg::text(
                LEFT - 12.0,
                y + 4.0,
                12,
                "end",
                INK,
                &fit(name, 24),
            ));
            let _ = writeln!(
                body,
                "<line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"{}\"/>",
                axis.x1,
                svg::GRID
            );
        }
        body.push_str(&axis.draw(bottom, top));
        if self.events.is_empty() {
            body.push_str(&svg::text(
                LEFT + 20.0,
                top + 20.0,
                13,
                "start",
                MUTED,
                "no recovery decision recorded",
            ));
        }
        for (lane, (_, events)) in lanes.iter().enumerate() {
            let y = lane_y(lane);
            for &i in events {
                let e = &self.events[i];
                let x = axis.x(e.at_us);
                let c = colour_of(&e.recovery_type);
                let shape = if e.success {
                    format!("<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"5.5\" fill=\"{c}\"/>")
                } else {
                    format!(
                        "<path d=\"M{:.1},{:.1}L{:.1},{:.1}M{:.1},{:.1}L{:.1},{:.1}\" stroke=\"{c}\" \
                         stroke-width=\"3\"/>",
                        x - 5.0,
                        y - 5.0,
                        x + 5.0,
                        y + 5.0,
                        x - 5.0,
                        y + 5.0,
                        x + 5.0,
                        y - 5.0
                    )
                };
                let attempt = e
                    .attempt
                    .map(|a| format!(", attempt {a}"))
                    .unwrap_or_default();
                let note = if e.note.is_empty() {
                    String::new()
                } else {
                    format!(": {}", e.note)
                };
                let _ = writeln!(
                    body,
                    "<g class=\"event\" data-scope=\"{scope}\" data-type=\"{ty}\" data-success=\"{ok}\">\
                     <title>{at} {scope} {subject}: {ty}{attempt} {outcome}{note}</title>{shape}</g>",
                    scope = e.scope.name(),
                    ty = escape(&e.recovery_type),
                    ok = e.success,
                    at = utc(e.at_us),
                    subject = escape(&e.subject),
                    outcome = if e.success { "succeeded" } else { "failed" },
                    note = escape(&note),
                );
            }
        }

        // Legend: types by colour, outcome by shape.
        let mut y = bottom + 58.0;
        let mut x = 20.0;
        for t in &types {
            let _ = writeln!(
                body,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"5.5\" fill=\"{}\"/>",
                x + 6.0,
                y - 4.0,
                colour_of(t)
            );
            body.push_str(&svg::text(x + 16.0, y, 12, "start", INK, t));
            x += t.chars().count() as f64 * 7.0 + 40.0;
            if x > WIDTH_PX - 200.0 {
                x = 20.0;
                y += 20.0;
            }
        }
        body.push_str(&svg::text(
            WIDTH_PX - 30.0,
            y,
            12,
            "end",
            MUTED,
            "● succeeded   × failed",
        ));

        // Summary per scope and type.
        y += 34.0;
        let columns = [
            (20.0, "scope"),
            (110.0, "type"),
            (300.0, "decisions"),
            (400.0, "succeeded"),
            (500.0, "failed"),
            (590.0, "last (UTC)"),
        ];
        for (x, name) in columns {
            body.push_str(&svg::text(x, y, 12, "start", MUTED, name));
        }
        for ((scope, ty), (n, ok, last)) in self.summary() {
            y += 18.0;
            let cells = [
                scope.name().to_string(),
                fit(ty, 26),
                n.to_string(),
                ok.to_string(),
                (n - ok).to_string(),
                utc(last),
            ];
            for ((x, _), cell) in columns.iter().zip(cells) {
                body.push_str(&svg::text(*x, y, 12, "start", INK, &cell));
            }
        }
        let height = (y + 24.0).ceil() as u32;
        let sub = format!("{} · {}", self.headline(), utc(self.generated_at_us));
        svg::document(WIDTH_PX as u32, height, "Recovery timeline", &sub, &body)
    }

    /// The terminal rendering: a character timeline per lane, a summary per scope and type,
    /// and the newest decisions.
    pub fn text(&self) -> String {
        const NEWEST: usize = 20;
        const LABEL: usize = 18;
        let mut out = format!(
            "Recovery timeline at {}: {}\n",
            utc(self.generated_at_us),
            self.headline()
        );
        if self.events.is_empty() {
            return out;
        }
        let start = self.events[0].at_us;
        let end = self.generated_at_us.max(start);
        let cells = WIDTH - LABEL;
        out.push('\n');
        for (name, events) in self.lanes() {
            // Failures last, so a cell with both shows the failure.
            let mut marks: Vec<(bool, i64, char)> = events
                .iter()
                .map(|&i| {
                    let e = &self.events[i];
                    (!e.success, e.at_us, if e.success { '●' } else { '×' })
                })
                .collect();
            marks.sort_unstable();
            let marks: Vec<(i64, char)> = marks.into_iter().map(|(_, t, c)| (t, c)).collect();
            let _ = writeln!(
                out,
                "{:<LABEL$}{}",
                fit(&name, LABEL - 1),
                timeline(start, end, cells, &marks)
            );
        }
        let _ = writeln!(
            out,
            "{:<LABEL$}{}{:>w$}",
            "",
            utc(start),
            format!("now {}", utc(end)),
            w = cells.saturating_sub(utc(start).len())
        );
        out.push_str("(● succeeded, × failed)\n\n");
        let rows: Vec<Vec<String>> = self
            .summary()
            .into_iter()
            .map(|((scope, ty), (n, ok, last))| {
                vec![
                    scope.name().to_string(),
                    fit(ty, 24),
                    n.to_string(),
                    ok.to_string(),
                    (n - ok).to_string(),
                    utc(last),
                ]
            })
            .collect();
        out.push_str(&crate::cli::table(
            &["SCOPE", "TYPE", "DECISIONS", "SUCCEEDED", "FAILED", "LAST"],
            &rows,
        ));
        let _ = writeln!(out, "\nthe newest {}:", NEWEST.min(self.events.len()));
        let rows: Vec<Vec<String>> = self
            .events
            .iter()
            .rev()
            .take(NEWEST)
            .map(|e| {
                vec![
                    utc(e.at_us),
                    e.scope.name().to_string(),
                    fit(&e.subject, 14),
                    fit(&e.recovery_type, 14),
                    e.attempt.map_or("-".to_string(), |a| a.to_string()),
                    if e.success { "ok" } else { "failed" }.to_string(),
                    e.note.clone(),
                ]
            })
            .collect();
        let table = crate::cli::table(
            &[
                "AT", "SCOPE", "SUBJECT", "TYPE", "ATTEMPT", "OUTCOME", "NOTE",
            ],
            &rows,
        );
        for line in table.lines() {
            let _ = writeln!(out, "{}", fit(line.trim_end(), WIDTH));
        }
        out
    }
}
