//! The original design's command lines start a real 3-node cluster as written:
//! `testfleet coordinator --high-availability --coordinator-id coordinator1
//! --coordinator-addresses localhost:8081,localhost:8082 --port 8080 --db-path ...` — names
//! for ids, each node listing the *other* coordinators (one of them lists all three, the other
//! form), `--visualization-path` on one. The nodes ask each other who they are, the lowest id
//! starts the cluster, and it elects a leader and replicates. Ports are free ones rather than
//! 8080–8082, so tests can run side by side.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::support::{binary, client, commit_bench, count_reaches, eventually, run, test_dir};

struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_original_flag_lines_start_a_three_node_cluster() {
    let dir = test_dir();
    let d = dir.path();
    let ports: Vec<u16> = (0..3)
        .map(|_| testfleet::demo::launch::free_port().unwrap())
        .collect();
    let addr = |i: usize| format!("localhost:{}", ports[i]);
    let viz = d.join("viz");
    let mut nodes = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let others: Vec<String> = (0..3).filter(|j| *j != i).map(addr).collect();
        // coordinator2 lists every coordinator, itself included; the others list the others.
        let list = if i == 1 {
            (0..3).map(addr).collect::<Vec<_>>().join(",")
        } else {
            others.join(",")
        };
        let name = format!("coordinator{}", i + 1);
        // Each node its own directory, as each would be on its own host.
        let home = d.join(&name);
        std::fs::create_dir_all(&home).unwrap();
        let db = home.join("benchmark_db.duckdb").display().to_string();
        let port = port.to_string();
        let mut line = vec![
            "coordinator",
            "--high-availability",
            "--coordinator-id",
            &name,
            "--coordinator-addresses",
            &list,
            "--port",
            &port,
            "--db-path",
            &db,
        ];
        let viz_path = viz.display().to_string();
        if i == 0 {
            line.extend(["--visualization-path", &viz_path]);
        }
        let log = std::fs::File::create(d.join(format!("{name}.log"))).unwrap();
        let child = Command::new(binary())
            .args(&line)
            .current_dir(d)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        nodes.push(Node(child));
    }

    // A leader, and three voters whose ids come from the names.
    let via = addr(2);
    let members = eventually(Duration::from_secs(60), "a led 3-node cluster", || {
        let via = via.clone();
        async move {
            let (code, out, _) = run(
                &["cluster", "members", "-o", "json", "--coordinator", &via],
                d,
            );
            let view: Value = serde_json::from_str(&out).ok()?;
            let voters = view["members"].as_array()?.len();
            (code == 0 && voters == 3).then_some(view)
        }
    })
    .await;
    let mut ids: Vec<(u64, String)> = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["id"].as_u64().unwrap(),
                m["addr"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    ids.sort();
    assert_eq!(ids.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [1, 2, 3]);
    // The others are known by the addresses the lists give them.
    assert_eq!(ids[1].1, addr(1));
    assert_eq!(ids[2].1, addr(2));

    // Each node says its name; writes replicate to all.
    for i in 0..3 {
        let status = client(&addr(i))
            .await
            .status(testfleet::proto::StatusRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(status.name, format!("coordinator{}", i + 1));
        assert_eq!(status.node_id, i as u64 + 1);
    }
    commit_bench(&addr(0), 50, 4).await;
    for i in 0..3 {
        count_reaches(
            &addr(i),
            "SELECT count(*) FROM bench_log",
            50,
            Duration::from_secs(30),
        )
        .await;
    }
    drop(nodes);
}
