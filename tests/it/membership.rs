//! Membership changes on real coordinator processes: `cluster add-node` (a node started with
//! `--join` joins as a learner and becomes a voter), `remove-node` (a learner, a voter, a dead
//! voter, the leader itself), and every refusal — an id or an address in use, a node that is
//! someone else or nobody, a non-member, a change while another one runs, a removal that would
//! cost the quorum, the last voter. Then `cluster snapshot --out` and `cluster restore`: a
//! backup brought up on a fresh node holds the state.

use std::time::Duration;

use serde_json::Value;

use super::support::{
    client, commit_bench, count_reaches, eventually, local_cluster, run, start_coordinator,
    test_dir,
};

const LIMIT: Duration = Duration::from_secs(60);

/// `testfleet cluster <args> -o json --coordinator <via>`: (exit code, JSON or stderr).
fn cluster(args: &[&str], via: &str, dir: &std::path::Path) -> (i32, Value, String) {
    let mut all = vec!["cluster"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json", "--coordinator", via]);
    let (code, out, err) = run(&all, dir);
    let json = serde_json::from_str(&out).unwrap_or(Value::Null);
    (code, json, err)
}

/// The members of a reply, as (id, role) pairs sorted by id.
fn roles(reply: &Value) -> Vec<(u64, String)> {
    let mut roles: Vec<(u64, String)> = reply["members"]
        .as_array()
        .unwrap_or_else(|| panic!("no members in {reply}"))
        .iter()
        .map(|m| {
            (
                m["id"].as_u64().unwrap(),
                m["role"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    roles.sort();
    roles
}

fn refused(args: &[&str], via: &str, dir: &std::path::Path, because: &str) {
    let (code, _, err) = cluster(args, via, dir);
    assert_ne!(code, 0, "{args:?} was accepted");
    assert!(
        err.contains(because),
        "{args:?}: expected {because:?} in {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_join_leave_and_unsafe_changes_are_refused() {
    let dir = test_dir();
    let mut cluster3 = local_cluster(3, dir.path(), &[]);
    let leader = cluster3.leader(LIMIT, None).await.unwrap();
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let via = cluster3.addr(follower).to_string();
    commit_bench(&via, 200, 8).await;
    let join = cluster3
        .addresses()
        .values()
        .cloned()
        .collect::<Vec<_>>()
        .join(",");
    let d = dir.path();

    // A new node started with --join waits; added, it catches up and becomes a voter.
    let four_dir = d.join("n4");
    std::fs::create_dir_all(&four_dir).unwrap();
    let db4 = four_dir.join("n4.duckdb").display().to_string();
    let four = start_coordinator(&["--node-id", "4", "--join", &join, "--db-path", &db4], d);
    let (code, reply, err) = cluster(&["add-node", "4", &four.addr], &via, d);
    assert_eq!(code, 0, "{err}");
    assert!(
        reply["summary"].as_str().unwrap().contains("is a voter"),
        "{reply}"
    );
    let voters: Vec<(u64, String)> = (1..=4).map(|id| (id, "voter".to_string())).collect();
    assert_eq!(roles(&reply), voters);
    // It holds what was written before it came.
    count_reaches(&four.addr, "SELECT count(*) FROM bench_log", 200, LIMIT).await;

    // Refusals that need no second node.
    refused(
        &["add-node", "4", &four.addr],
        &via,
        d,
        "node 4 is already a voter",
    );
    refused(&["add-node", "5", &four.addr], &via, d, "already node 4's");
    refused(
        &["add-node", "6", "127.0.0.1:1"],
        &via,
        d,
        "cannot reach node 6",
    );
    refused(&["remove-node", "9"], &via, d, "node 9 is not a member");

    // A node that answers with another id is not added under a wrong one.
    let five_dir = d.join("n5");
    std::fs::create_dir_all(&five_dir).unwrap();
    let db5 = five_dir.join("n5.duckdb").display().to_string();
    let five = start_coordinator(&["--node-id", "5", "--join", &join, "--db-path", &db5], d);
    refused(
        &["add-node", "7", &five.addr],
        &via,
        d,
        "is node 5, not node 7",
    );

    // While one change waits for a learner to catch up, no other starts. The learner has a
    // long log to receive (a snapshot and a tail), and is stopped (SIGSTOP) the moment the
    // leader begins adding it, so the add waits until it is continued.
    commit_bench(&via, 21_000, 64).await;
    let pid5 = five.child.id().to_string();
    let (addr5, dir_path, via2) = (five.addr.clone(), d.to_path_buf(), via.clone());
    let slow_add = std::thread::spawn(move || {
        cluster(
            &["add-node", "5", &addr5, "--learner", "--wait", "60s"],
            &via2,
            &dir_path,
        )
    });
    let deadline = std::time::Instant::now() + LIMIT;
    while !cluster3
        .log(leader)
        .contains("an operator adds a coordinator as a learner id=5")
    {
        assert!(std::time::Instant::now() < deadline, "the add never began");
        std::thread::sleep(Duration::from_millis(2));
    }
    std::process::Command::new("kill")
        .args(["-STOP", &pid5])
        .status()
        .unwrap();
    refused(
        &["remove-node", "4"],
        &via,
        d,
        "another membership change is under way (adding node 5)",
    );
    std::process::Command::new("kill")
        .args(["-CONT", &pid5])
        .status()
        .unwrap();
    let (code, reply, err) = slow_add.join().unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(roles(&reply).contains(&(5, "learner".into())), "{reply}");

    // A learner goes at once; then the voter added above.
    let (code, reply, err) = cluster(&["remove-node", "5"], &via, d);
    assert_eq!(code, 0, "{err}");
    assert!(!roles(&reply).iter().any(|(id, _)| *id == 5), "{reply}");
    let (code, reply, err) = cluster(&["remove-node", "4"], &via, d);
    assert_eq!(code, 0, "{err}");
    assert_eq!(roles(&reply).len(), 3, "{reply}");
    drop(four);
    drop(five);

    // One follower dead: removing the other live one would leave no quorum; removing the
    // dead one is what an operator should do, and leaves two voters.
    let leader = cluster3.leader(LIMIT, None).await.unwrap();
    let mut followers = (1..=3).filter(|id| *id != leader);
    let (dead, live) = (followers.next().unwrap(), followers.next().unwrap());
    cluster3.kill(dead);
    let via = cluster3.addr(leader).to_string();
    eventually(
        LIMIT,
        "the leader to stop hearing from the dead follower",
        || {
            let (via, d) = (via.clone(), d.to_path_buf());
            async move {
                let (code, view, _) = cluster(&["members"], &via, &d);
                let heard = view["members"]
                    .as_array()?
                    .iter()
                    .find(|m| m["id"].as_u64() == Some(dead))?["heard_ms"]
                    .as_u64()?;
                (code == 0 && heard > 3_500).then_some(())
            }
        },
    )
    .await;
    refused(
        &["remove-node", &live.to_string()],
        &via,
        d,
        "fewer than the quorum",
    );
    let (code, reply, err) = cluster(&["remove-node", &dead.to_string()], &via, d);
    assert_eq!(code, 0, "{err}");
    assert_eq!(roles(&reply).len(), 2, "{reply}");

    // The leader asked to remove itself hands over first, then is removed by its successor.
    let via = cluster3.addr(live).to_string();
    let (code, reply, err) = cluster(&["remove-node", &leader.to_string()], &via, d);
    assert_eq!(code, 0, "{err}");
    assert_eq!(roles(&reply), vec![(live, "voter".to_string())], "{reply}");
    assert_eq!(reply["leader_id"].as_u64(), Some(live), "{reply}");
    refused(
        &["remove-node", &live.to_string()],
        &via,
        d,
        "is the last voter",
    );
    // The survivor still commits.
    commit_bench(&via, 10, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_backup_restores_a_whole_cluster() {
    let dir = test_dir();
    let d = dir.path();
    let mut three = local_cluster(3, d, &[]);
    let leader = three.leader(LIMIT, None).await.unwrap();
    let via = three.addr(leader).to_string();
    commit_bench(&via, 300, 8).await;
    // Into a later term: a restored node holds entries of that term and must campaign above it.
    let other = (1..=3).find(|id| *id != leader).unwrap();
    let (code, _, err) = run(
        &[
            "cluster",
            "transfer-leader",
            &other.to_string(),
            "--coordinator",
            &via,
        ],
        d,
    );
    assert_eq!(code, 0, "{err}");
    let via = three.addr(other).to_string();
    commit_bench(&via, 10, 2).await;
    let backup = d.join("backup.snapshot");
    let (code, reply, err) = cluster(
        &["snapshot", "--out", &backup.display().to_string()],
        &via,
        d,
    );
    assert_eq!(code, 0, "{err}");
    let index = reply["index"].as_u64().unwrap();
    assert!(index >= 300, "{reply}");
    assert_eq!(
        reply["bytes"].as_u64(),
        Some(std::fs::metadata(&backup).unwrap().len())
    );
    // Written after the backup: lost by the restore.
    commit_bench(&via, 20, 2).await;
    for id in 1..=3 {
        three.kill(id);
    }

    // Restore refuses a directory that holds a node already.
    let node_db = |id: u64| {
        d.join(format!("node-{id}"))
            .join("state.duckdb")
            .display()
            .to_string()
    };
    let restore = |db: &str| {
        run(
            &[
                "cluster",
                "restore",
                &backup.display().to_string(),
                "--db-path",
                db,
            ],
            d,
        )
    };
    let (code, _, err) = restore(&node_db(1));
    assert_ne!(code, 0);
    assert!(
        err.contains("restore only into an empty data directory"),
        "{err}"
    );
    // The documented procedure: every node's directory moved aside and seeded from the
    // backup, then every node started as before.
    for id in 1..=3 {
        let home = d.join(format!("node-{id}"));
        std::fs::rename(&home, d.join(format!("node-{id}.old"))).unwrap();
        std::fs::create_dir_all(&home).unwrap();
        let (code, out, err) = restore(&node_db(id));
        assert_eq!(code, 0, "{err}");
        assert!(out.contains(&format!("up to index {index}")), "{out}");
        assert!(
            !out.contains("(term 1)"),
            "the backup should be of a later term: {out}"
        );
    }
    for id in 1..=3 {
        three.restart(id).unwrap();
    }
    let leader = three.leader(LIMIT, None).await.unwrap();
    let via = three.addr(leader).to_string();
    for id in 1..=3 {
        count_reaches(three.addr(id), "SELECT count(*) FROM bench_log", 310, LIMIT).await;
    }
    // And it goes on from there.
    commit_bench(&via, 5, 1).await;
    let mut control = client(&via).await;
    let rows =
        super::support::query_consistent(&mut control, "SELECT count(*) FROM bench_log").await;
    assert_eq!(rows[0][0].as_u64(), Some(315), "{rows:?}");
}
