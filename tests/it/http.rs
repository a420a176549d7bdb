//! HTTP on the coordinators' gRPC port, end to end on a real 3-node cluster with tokens on:
//! every endpoint fetched from every node and its content checked; `/metrics` parsed with a
//! Prometheus text parser and its numbers compared with the cluster's; `/api` refused without
//! the operator token, admitted with it in a header or in the cookie `/login` sets; the
//! standard gRPC health service answering beside it; `--metrics-auth` closing `/metrics`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use testfleet::auth::Role;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::support::{
    WorkerProcess, count_reaches, eventually, local_cluster, submit_plan, test_dir, token_file,
};

const LIMIT: Duration = Duration::from_secs(60);

/// One HTTP/1.1 exchange: status, headers (lowercase names), body.
struct Reply {
    status: u16,
    headers: BTreeMap<String, String>,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// Sends `method path` with `headers` and `body` to `addr` and reads the whole reply.
async fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &str,
) -> Reply {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut text = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        text.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() {
        text.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    text.push_str("\r\n");
    text.push_str(body);
    stream.write_all(text.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read");
    let raw = String::from_utf8_lossy(&raw).to_string();
    let (head, rest) = raw.split_once("\r\n\r\n").expect("a head and a body");
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let body = if headers
        .get("transfer-encoding")
        .is_some_and(|v| v == "chunked")
    {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    Reply {
        status,
        headers,
        body,
    }
}

fn dechunk(mut text: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = text.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        text = &rest[n + 2..];
    }
    out
}

async fn get(addr: &str, path: &str, headers: &[(&str, String)]) -> Reply {
    request(addr, "GET", path, headers, "").await
}

fn token(role: Role) -> String {
    std::fs::read_to_string(token_file(role))
        .unwrap()
        .trim()
        .to_string()
}

/// The samples of `/metrics` by name and labels.
fn metrics(text: &str) -> Vec<prometheus_parse::Sample> {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    prometheus_parse::Scrape::parse(lines)
        .unwrap_or_else(|e| panic!("/metrics does not parse: {e}\n{text}"))
        .samples
}

fn value(samples: &[prometheus_parse::Sample], name: &str, label: Option<(&str, &str)>) -> f64 {
    let found = samples
        .iter()
        .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)));
    match found.map(|s| &s.value) {
        Some(
            prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Untyped(v),
        ) => *v,
        other => panic!("{name} {label:?}: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_answers_on_every_node_with_the_clusters_numbers() {
    let dir = test_dir();
    let cluster = local_cluster(3, dir.path(), &[]);
    let leader = cluster.leader(LIMIT, None).await.unwrap();
    let addr = cluster.addr(leader).to_string();
    let _w1 = WorkerProcess::start_with(&addr, "w1", dir.path(), &["--no-probe"]);
    let _w2 = WorkerProcess::start_with(&addr, "w2", dir.path(), &["--no-probe"]);
    let plan = "[[matrix]]\nname = \"t{item}\"\ncommand = [\"true\"]\nitems = [\"1\", \"2\", \"3\", \"4\", \"5\"]\n";
    let job = submit_plan(dir.path(), &addr, "plan.toml", plan);
    count_reaches(
        &addr,
        "SELECT count(*) FROM tasks WHERE status = 'passed'",
        5,
        LIMIT,
    )
    .await;
    let operator = vec![("Authorization", format!("Bearer {}", token(Role::Operator)))];

    let mut leaders = 0.0;
    for (id, node) in cluster.addresses() {
        // Probes, open to anyone.
        let live = get(&node, "/livez", &[]).await;
        assert_eq!(
            (live.status, live.body.as_str()),
            (200, "ok\n"),
            "node {id}"
        );
        let ready = get(&node, "/readyz?verbose", &[]).await;
        assert_eq!(ready.status, 200, "node {id}: {}", ready.body);
        for check in [
            "[+]raft ok",
            "[+]duckdb ok",
            "[+]serving ok",
            "readyz check passed",
        ] {
            assert!(ready.body.contains(check), "node {id}: {}", ready.body);
        }

        // Metrics, open to scrapers by default, parsed as Prometheus parses them. Every node
        // reports the replicated counts once it applied them.
        let samples = eventually(
            LIMIT,
            &format!("node {id}'s metrics: 5 passed, health sampled"),
            || {
                let node = node.clone();
                async move {
                    let reply = get(&node, "/metrics", &[]).await;
                    assert_eq!(reply.status, 200, "{}", reply.body);
                    assert!(
                        reply.headers["content-type"].contains("text"),
                        "{:?}",
                        reply.headers
                    );
                    let samples = metrics(&reply.body);
                    (samples
                        .iter()
                        .any(|s| s.metric == "testfleet_health_cpu_cores")
                        && value(&samples, "testfleet_tasks", Some(("status", "passed"))) == 5.0)
                        .then_some(samples)
                }
            },
        )
        .await;
        assert_eq!(
            value(&samples, "testfleet_workers", Some(("status", "healthy"))),
            2.0
        );
        assert_eq!(value(&samples, "testfleet_queue_depth", None), 0.0);
        assert_eq!(
            value(&samples, "testfleet_raft_members", Some(("voter", "true"))),
            3.0
        );
        assert!(value(&samples, "testfleet_raft_term", None) >= 1.0);
        assert!(value(&samples, "testfleet_leader_changes_total", None) >= 1.0);
        assert_eq!(
            value(&samples, "testfleet_jobs", Some(("status", "finished"))),
            1.0
        );
        let is_leader = value(&samples, "testfleet_raft_is_leader", None);
        leaders += is_leader;
        if is_leader == 1.0 {
            for worker in ["w1", "w2"] {
                let age = value(
                    &samples,
                    "testfleet_worker_heartbeat_age_seconds",
                    Some(("worker", worker)),
                );
                assert!(age < 5.0, "{worker}: {age}");
            }
            let commits = samples
                .iter()
                .find(|s| s.metric == "testfleet_commit_latency_seconds_count")
                .map(|s| match s.value {
                    prometheus_parse::Value::Untyped(v)
                    | prometheus_parse::Value::Counter(v)
                    | prometheus_parse::Value::Gauge(v) => v,
                    _ => 0.0,
                });
            assert!(commits.unwrap_or(0.0) > 0.0, "the leader timed its commits");
        }

        // The API: refused without the operator token, with a pointer to the login form.
        let refused = get(&node, "/api/status", &[]).await;
        assert_eq!(refused.status, 401, "node {id}: {}", refused.body);
        assert_eq!(refused.json()["login"], "/login");
        let worker = vec![("Authorization", format!("Bearer {}", token(Role::Worker)))];
        assert_eq!(
            get(&node, "/api/workers", &worker).await.status,
            403,
            "a worker's token"
        );
        let status = get(&node, "/api/status", &operator).await.json();
        assert_eq!(status["node_id"], id, "{status}");
        assert_eq!(status["members"].as_array().unwrap().len(), 3, "{status}");
        assert_eq!(status["leader_id"], leader, "{status}");

        let workers = get(&node, "/api/workers", &operator).await.json();
        let names: Vec<&str> = (workers["rows"].as_array().unwrap().iter())
            .map(|w| w["id"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["w1", "w2"], "{workers}");
        assert_eq!(workers["node"], id);
        let tasks = get(&node, &format!("/api/tasks?job={job}"), &operator)
            .await
            .json();
        assert_eq!(tasks["rows"].as_array().unwrap().len(), 5, "{tasks}");
        let jobs = get(&node, "/api/jobs?limit=5", &operator).await.json();
        assert_eq!(jobs["rows"][0]["passed"], 5, "{jobs}");
        let recovery = get(&node, "/api/recovery", &operator).await;
        assert_eq!(recovery.status, 200, "{}", recovery.body);
        assert!(recovery.json()["rows"].is_array(), "{}", recovery.body);
        let bad = get(&node, "/api/tasks?job=x'%20OR%201=1", &operator).await;
        assert_eq!(bad.status, 400, "{}", bad.body);
    }
    assert_eq!(leaders, 1.0, "exactly one node says it leads");

    // The dashboard's pictures, as SVG, from any node.
    for kind in ["cluster", "health", "leaders", "recovery"] {
        let svg = get(&addr, &format!("/viz/{kind}.svg"), &operator).await;
        assert_eq!(svg.status, 200, "{kind}: {}", svg.body);
        assert_eq!(svg.headers["content-type"], "image/svg+xml");
        assert!(svg.body.contains("<svg"), "{kind}");
    }
    assert_eq!(get(&addr, "/viz/nope.svg", &operator).await.status, 404);
    // Only system recovery reports are served from the data directory, and none exists yet.
    for path in [
        "/reports/system-recovery-1.md",
        "/reports/raft-log.redb",
        "/reports/..%2Fraft-log.redb",
    ] {
        assert_eq!(get(&addr, path, &operator).await.status, 404, "{path}");
    }
    assert_eq!(get(&addr, "/viz/cluster.svg", &[]).await.status, 401);

    // The login form sets the token as a cookie that then opens the API.
    let form = format!("token={}&next=/api/status", token(Role::Operator));
    let headers = [(
        "Content-Type",
        "application/x-www-form-urlencoded".to_string(),
    )];
    let login = request(&addr, "POST", "/login", &headers, &form).await;
    assert_eq!(login.status, 303, "{}", login.body);
    let cookie = login.headers["set-cookie"]
        .split(';')
        .next()
        .unwrap()
        .to_string();
    assert!(
        login.headers["set-cookie"].contains("HttpOnly"),
        "{:?}",
        login.headers
    );
    let by_cookie = get(&addr, "/api/workers", &[("Cookie", cookie)]).await;
    assert_eq!(by_cookie.status, 200, "{}", by_cookie.body);
    let wrong = request(&addr, "POST", "/login", &headers, "token=nope").await;
    assert_eq!(wrong.status, 401);

    // The standard gRPC health service, without credentials.
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let health = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health check");
    assert_eq!(
        health.into_inner().status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_auth_closes_metrics_but_not_the_probes() {
    let dir = test_dir();
    let extra = [
        "--metrics-auth".to_string(),
        "--http-port".to_string(),
        "0".to_string(),
    ];
    let cluster = local_cluster(1, dir.path(), &extra);
    let leader = cluster.leader(LIMIT, None).await.unwrap();
    let addr = cluster.addr(leader).to_string();
    assert_eq!(get(&addr, "/metrics", &[]).await.status, 401);
    let worker = [("Authorization", format!("Bearer {}", token(Role::Worker)))];
    let scraped = get(&addr, "/metrics", &worker).await;
    assert_eq!(scraped.status, 200, "any role's token scrapes");
    assert!(
        scraped.body.contains("testfleet_raft_is_leader 1"),
        "{}",
        scraped.body
    );
    assert_eq!(get(&addr, "/livez", &[]).await.status, 200);
    assert_eq!(get(&addr, "/readyz", &[]).await.status, 200);

    // --http-port: the same routes on a port of their own (0 here: the log says which).
    let log = cluster.log(leader);
    let line = (log.lines())
        .find(|l| l.contains("HTTP also on its own port"))
        .unwrap_or_else(|| panic!("no HTTP port in the log:\n{log}"));
    let http = line
        .split("addr=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("an address")
        .to_string();
    assert_ne!(http, addr);
    assert_eq!(get(&http, "/livez", &[]).await.body, "ok\n");
    assert_eq!(
        get(&http, "/metrics", &[]).await.status,
        401,
        "the same rules there"
    );
    assert_eq!(get(&http, "/metrics", &worker).await.status, 200);
}
