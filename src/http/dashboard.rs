//! The dashboard at `/`: server-rendered HTML that keeps itself current over a server-sent
//! event stream, with no JavaScript build step.
//!
//! [`page`] renders the whole page once; its few lines of inline script open `/events`
//! ([`events`]), on which the node sends the sections again — cluster, workers, jobs,
//! recovery, and the four pictures of `crate::viz` (served as SVG by [`picture`] at
//! `/viz/{kind}.svg`) — as one JSON object of HTML fragments whenever one of them changed (checked every
//! second), and the script swaps them in. So a worker that dies turns `failed` on the screen
//! within about a second of the leader recording it, without a reload.
//!
//! Every section is rendered here from this node's own state: the Raft metrics and the
//! applied state machine (members, workers, breakers), and its DuckDB (leader history, jobs,
//! failures with their output tails, the recovery timeline). A follower serves the same
//! page, a flush behind at most; the header says which node answered. All text from the
//! cluster is HTML-escaped ([`super::html_escape`]).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::Html;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;

use super::{Http, html_escape as esc};
use crate::coordinator::Coordinator;

/// How often the event stream looks for changes.
const REFRESH: Duration = Duration::from_secs(1);

/// The sections, by element id.
type Sections = BTreeMap<&'static str, String>;

/// The sections in page order.
const ORDER: [&str; 5] = ["cluster", "workers", "jobs", "recovery", "pictures"];

/// Whether `name` is a system recovery report's file name (`system-recovery-<µs>.md`):
/// nothing else under the reports directory is served, and no path.
fn is_report(name: &str) -> bool {
    name.strip_prefix("system-recovery-")
        .and_then(|rest| rest.strip_suffix(".md"))
        .is_some_and(|stamp| !stamp.is_empty() && stamp.bytes().all(|b| b.is_ascii_digit()))
}

/// The newest `n` system recovery reports in this node's data directory, newest first.
fn system_reports(node: &Coordinator, n: usize) -> Vec<String> {
    let dir = node.config().data_dir().join("reports");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|name| is_report(name))
                .collect()
        })
        .unwrap_or_default();
    // Equal-length stamps sort by time; longer ones are later.
    names.sort_by(|a, b| (b.len(), b).cmp(&(a.len(), a)));
    names.truncate(n);
    names
}

/// `/reports/{name}`: one system recovery report of this node, as Markdown text.
pub async fn report(
    State(http): State<Http>,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> axum::response::Response {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    if !is_report(&name) {
        return (StatusCode::NOT_FOUND, "no such report").into_response();
    }
    let path = http.node.config().data_dir().join("reports").join(&name);
    match tokio::fs::read_to_string(&path).await {
        Ok(text) => (
            [(header::CONTENT_TYPE, "text/markdown; charset=utf-8")],
            text,
        )
            .into_response(),
        Err(_) => (StatusCode::NOT_FOUND, "no such report on this node").into_response(),
    }
}

/// `/viz/{kind}`: one of the four pictures (`crate::viz`) of this node's state, as SVG.
pub async fn picture(
    State(http): State<Http>,
    axum::extract::Path(kind): axum::extract::Path<String>,
) -> axum::response::Response {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    let kind = match kind.trim_end_matches(".svg") {
        "cluster" => crate::viz::Kind::Cluster,
        "health" => crate::viz::Kind::Health,
        "leaders" => crate::viz::Kind::Leaders,
        "recovery" => crate::viz::Kind::Recovery,
        other => {
            let message = format!("no picture {other:?}: cluster, health, leaders or recovery");
            return (StatusCode::NOT_FOUND, message).into_response();
        }
    };
    let source = crate::viz::load::Source::Local(http.node.clone());
    match crate::viz::load::picture(&source, kind).await {
        Ok(picture) => ([(header::CONTENT_TYPE, "image/svg+xml")], picture.svg()).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// The pictures, their addresses carrying the applied index so that they load again when
/// the state changed.
fn pictures(node: &Coordinator) -> String {
    let applied = node.metrics().last_applied.as_ref().map_or(0, |l| l.index);
    let images: String = ["cluster", "health", "leaders", "recovery"]
        .iter()
        .map(|kind| {
            format!(
                "<figure><img src=\"/viz/{kind}.svg?at={applied}\" alt=\"{kind}\" loading=\"lazy\">\
                 <figcaption>{kind}</figcaption></figure>"
            )
        })
        .collect();
    format!("<h2>Pictures</h2><div class=\"pictures\">{images}</div>")
}

pub async fn page(State(http): State<Http>) -> Html<String> {
    let sections = render(&http.node).await;
    let node = http.node.node_id();
    let body: String = ORDER
        .iter()
        .map(|id| {
            let html = sections.get(id).map_or("", String::as_str);
            format!("<section id=\"{id}\">{html}</section>\n")
        })
        .collect();
    Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Testfleet</title>\
         <style>{STYLE}</style></head><body>\
         <header><h1>Testfleet</h1><span>answered by node {node} · \
         <span id=\"live\">connecting…</span></span></header>\n{body}\
         <script>{SCRIPT}</script></body></html>"
    ))
}

/// Sends the sections as JSON `{id: html}` whenever they changed, checked every `REFRESH`.
pub async fn events(
    State(http): State<Http>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let node = http.node.clone();
    let start = (node, None::<String>, None);
    let stream = futures::stream::unfold(start, |(node, last, mut history)| async move {
        loop {
            if last.is_some() {
                tokio::time::sleep(REFRESH).await;
            }
            let sections = render_with(&node, &mut history).await;
            let json = serde_json::to_string(&sections).unwrap_or_default();
            if last.as_deref() != Some(json.as_str()) {
                let event = Event::default().event("sections").data(json.clone());
                return Some((Ok(event), (node, Some(json), history)));
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// All four sections of `node`, rendered.
pub async fn render(node: &Arc<Coordinator>) -> Sections {
    render_with(node, &mut None).await
}

/// The sections read from DuckDB (jobs, recovery) and the applied index they were read at.
type History = Option<(u64, String, String)>;

/// All sections of `node`; the DuckDB ones only when the applied index moved since `history`
/// was read (an open dashboard asks every second, the log moves far less often).
async fn render_with(node: &Arc<Coordinator>, history: &mut History) -> Sections {
    let applied = node.metrics().last_applied.as_ref().map_or(0, |l| l.index);
    let mut sections = Sections::new();
    sections.insert("cluster", cluster(node));
    sections.insert("workers", workers(node));
    if history.as_ref().is_none_or(|(at, _, _)| *at != applied) {
        let (jobs, recovery) = match read_history(node).await {
            Ok(parts) => parts,
            Err(e) => {
                let failed = format!(
                    "<p class=\"error\">cannot read this node's DuckDB: {}</p>",
                    esc(&e)
                );
                (failed.clone(), failed)
            }
        };
        *history = Some((applied, jobs, recovery));
    }
    if let Some((_, jobs, recovery)) = history.as_ref() {
        sections.insert("jobs", jobs.clone());
        sections.insert("recovery", recovery.clone());
    }
    sections.insert("pictures", pictures(node));
    sections
}

fn cluster(node: &Coordinator) -> String {
    let m = node.metrics();
    let membership = m.membership_config.membership();
    let voters: std::collections::BTreeSet<u64> = membership.voter_ids().collect();
    let applied = m.last_applied.as_ref().map_or(0, |l| l.index);
    let mut rows = String::new();
    for (id, n) in membership.nodes() {
        let role = if m.current_leader == Some(*id) {
            "leader"
        } else if voters.contains(id) {
            "follower"
        } else {
            "learner"
        };
        // The leader knows how far each follower's log matches its own.
        let matched = m
            .replication
            .as_ref()
            .and_then(|r| r.get(id))
            .and_then(|l| l.as_ref().map(|l| l.index));
        let lag = match matched {
            Some(index) => format!("{}", m.last_log_index.unwrap_or(0).saturating_sub(index)),
            None if *id == m.id => format!("applied {applied}"),
            None => "—".to_string(),
        };
        rows.push_str(&format!(
            "<tr class=\"{role}\" data-node=\"{id}\"><td>{id}</td><td>{}</td><td>{role}</td><td>{lag}</td></tr>",
            esc(&n.addr)
        ));
    }
    let leader = m
        .current_leader
        .map_or("none known".to_string(), |l| format!("node {l}"));
    format!(
        "<h2>Cluster</h2><p>Leader: <b id=\"leader\">{leader}</b> · term {} · this node: {} \
         ({})</p><table><tr><th>node</th><th>address</th><th>role</th><th>replication lag \
         (entries)</th></tr>{rows}</table>",
        m.current_term,
        m.id,
        crate::coordinator::control::role_name(m.state)
    )
}

fn workers(node: &Coordinator) -> String {
    let ages: BTreeMap<String, Duration> = node
        .leadership()
        .map(|l| l.heartbeat_ages().into_iter().collect())
        .unwrap_or_default();
    let rows: Vec<String> = node.state().with_machine(|m| {
        m.workers()
            .values()
            .filter(|w| w.status != crate::state::command::WorkerStatus::Left)
            .map(|w| {
                let caps = crate::capabilities::WorkerCapabilities::parse(&w.id, "", &w.capabilities_json);
                let breaker = m.breaker(&crate::state::command::worker_scope(&w.id));
                let age = ages
                    .get(&w.id)
                    .map_or("—".to_string(), |a| format!("{:.1} s", a.as_secs_f64()));
                format!(
                    "<tr data-worker=\"{id}\" class=\"{status}\"><td>{id}</td><td class=\"status\">{status}</td>\
                     <td>{}</td><td>{}</td><td>{age}</td><td>{}</td></tr>",
                    esc(&caps.summary()),
                    breaker.as_str(),
                    esc(&w.status_reason),
                    id = esc(&w.id),
                    status = w.status.as_str(),
                )
            })
            .collect()
    });
    if rows.is_empty() {
        return "<h2>Workers</h2><p>No workers yet.</p>".to_string();
    }
    format!(
        "<h2>Workers</h2><table><tr><th>worker</th><th>status</th><th>capabilities</th>\
         <th>breaker</th><th>last heard</th><th>reason</th></tr>{}</table>",
        rows.concat()
    )
}

/// The jobs and recovery sections, from this node's DuckDB.
async fn read_history(node: &Arc<Coordinator>) -> Result<(String, String), String> {
    let node = node.clone();
    tokio::task::spawn_blocking(move || {
        node.state().flush().map_err(|e| e.to_string())?;
        let reader = node.state().reader().map_err(|e| e.to_string())?;
        let query = |sql: &str| crate::query::run_query(&reader, sql).map_err(|e| e.to_string());
        let jobs = query(
            "SELECT j.id, j.name, j.status, count(t.id), \
             count(t.id) FILTER (WHERE t.status = 'passed'), \
             count(t.id) FILTER (WHERE t.status IN ('failed', 'timed_out', 'error', 'abandoned', 'cancelled')), \
             count(t.id) FILTER (WHERE t.status IN ('queued', 'assigned', 'running')) \
             FROM jobs j LEFT JOIN tasks t ON t.job_id = j.id \
             GROUP BY j.id, j.name, j.status, j.submitted_at \
             ORDER BY j.submitted_at DESC LIMIT 10",
        )?;
        let failures = query(
            "SELECT t.name, t.status, a.worker_id, right(coalesce(a.output_tail, ''), 400) \
             FROM tasks t JOIN task_attempts a ON a.task_id = t.id AND a.attempt = t.attempt \
             WHERE t.status IN ('failed', 'timed_out', 'error', 'abandoned') \
             ORDER BY t.finished_at DESC LIMIT 5",
        )?;
        let leaders = query(
            "SELECT term, leader_id, elected_at FROM leader_transitions ORDER BY id DESC LIMIT 10",
        )?;
        let recovery = query(
            "SELECT * FROM (SELECT recovery_time AS t, 'worker ' || worker_id AS subject, \
             recovery_type AS kind, success FROM worker_recovery_history UNION ALL \
             SELECT recovery_time, 'task ' || task_id, recovery_type, success FROM task_recovery_history \
             UNION ALL SELECT recovery_time, 'system', system_status, success FROM system_recovery_history) \
             ORDER BY t DESC LIMIT 20",
        )?;
        let cell = |v: &serde_json::Value| match v {
            serde_json::Value::String(s) => esc(s),
            serde_json::Value::Null => "—".to_string(),
            other => esc(&other.to_string()),
        };
        let table = |head: &[&str], rows: &[Vec<serde_json::Value>]| {
            let head: String = head.iter().map(|h| format!("<th>{h}</th>")).collect();
            let body: String = rows
                .iter()
                .map(|r| format!("<tr>{}</tr>", r.iter().map(|v| format!("<td>{}</td>", cell(v))).collect::<String>()))
                .collect();
            format!("<table><tr>{head}</tr>{body}</table>")
        };
        let mut jobs_html = String::from("<h2>Jobs</h2>");
        if jobs.rows.is_empty() {
            jobs_html.push_str("<p>No jobs yet.</p>");
        } else {
            jobs_html.push_str(&table(
                &["job", "name", "status", "tasks", "passed", "not passed", "open"],
                &jobs.rows,
            ));
        }
        if !failures.rows.is_empty() {
            jobs_html.push_str("<h3>Latest failures</h3>");
            for f in &failures.rows {
                jobs_html.push_str(&format!(
                    "<details><summary>{} — {} on {}</summary><pre>{}</pre></details>",
                    cell(&f[0]),
                    cell(&f[1]),
                    cell(&f[2]),
                    cell(&f[3])
                ));
            }
        }
        let reports = system_reports(&node, 10);
        let mut recovery_html = String::from("<h2>Leaders</h2>");
        recovery_html.push_str(&table(&["term", "leader", "elected at"], &leaders.rows));
        recovery_html.push_str("<h2>Recovery</h2>");
        if recovery.rows.is_empty() {
            recovery_html.push_str("<p>No recovery recorded.</p>");
        } else {
            recovery_html.push_str(&table(&["at", "what", "kind", "succeeded"], &recovery.rows));
        }
        if !reports.is_empty() {
            recovery_html.push_str("<h3>System recovery reports (written by this node while it led)</h3><ul>");
            for name in reports {
                recovery_html.push_str(&format!(
                    "<li><a href=\"/reports/{name}\">{name}</a></li>",
                    name = esc(&name)
                ));
            }
            recovery_html.push_str("</ul>");
        }
        Ok((jobs_html, recovery_html))
    })
    .await
    .map_err(|e| e.to_string())?
}

const STYLE: &str = "body{font-family:sans-serif;margin:1.5em;color:#222}\
header{display:flex;gap:1em;align-items:baseline}\
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.2em .6em;text-align:left}\
tr.leader td,tr.healthy td.status{background:#e6f4ea}\
tr.failed td.status,tr.permanently_failed td.status{background:#fde7e9}\
tr.suspect td.status,tr.recovering td.status,tr.quarantined td.status,tr.draining td.status{background:#fff4e5}\
pre{background:#f6f6f6;padding:.5em;white-space:pre-wrap}.error{color:#b00}\
.pictures img{max-width:100%;border:1px solid #ddd}figure{margin:.5em 0}";

/// Opens the event stream and swaps in the sections it sends; says whether it is live.
const SCRIPT: &str = "(function(){var live=document.getElementById('live');\
var es=new EventSource('/events');\
es.addEventListener('sections',function(e){var s=JSON.parse(e.data);\
for(var id in s){var el=document.getElementById(id);if(el){el.innerHTML=s[id];}}\
live.textContent='live, updated '+new Date().toLocaleTimeString();});\
es.onerror=function(){live.textContent='reconnecting…';};})();";

#[cfg(test)]
mod tests {
    #[test]
    fn only_report_names_are_served() {
        for (name, ok) in [
            ("system-recovery-1765000000000000.md", true),
            ("system-recovery-.md", false),
            ("system-recovery-12.md.bak", false),
            ("../raft-log.redb", false),
            ("system-recovery-1/../../x.md", false),
        ] {
            assert_eq!(super::is_report(name), ok, "{name}");
        }
    }
}
