//! `testfleet cluster members` on a real 3-node cluster: asked through a follower, it shows the
//! leader's view — three voters, one of them the leader, each log matching the leader's;
//! with one follower killed and more written, that member lags and the others do not; back,
//! it catches up.

use std::time::Duration;

use serde_json::Value;

use super::support::{eventually, local_cluster, run, submit_plan, test_dir};

const LIMIT: Duration = Duration::from_secs(60);

fn members(addr: &str, dir: &std::path::Path) -> Value {
    let (code, out, err) = run(
        &["cluster", "members", "-o", "json", "--coordinator", addr],
        dir,
    );
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// The membership, or `None` while no leader is known (exit 5: a node that just started may
/// not have heard from the leader yet).
fn members_once_led(addr: &str, dir: &std::path::Path) -> Option<Value> {
    let (code, out, err) = run(
        &["cluster", "members", "-o", "json", "--coordinator", addr],
        dir,
    );
    if code == 5 && err.contains("no leader is known") {
        return None;
    }
    assert_eq!(code, 0, "{err}");
    Some(serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}")))
}

/// Each member's lag by id.
fn lags(view: &Value) -> Vec<(u64, Option<u64>)> {
    view["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["id"].as_u64().unwrap(), m["lag"].as_u64()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_shows_roles_positions_and_a_lagging_follower() {
    let dir = test_dir();
    let mut cluster = local_cluster(3, dir.path(), &[]);
    let leader = cluster.leader(LIMIT, None).await.unwrap();
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let other = (1..=3).find(|id| *id != leader && *id != follower).unwrap();
    let via = cluster.addr(follower).to_string();

    let view = eventually(LIMIT, "every member caught up", || {
        let (via, dir) = (via.clone(), dir.path().to_path_buf());
        async move {
            let view = members_once_led(&via, &dir)?;
            lags(&view)
                .iter()
                .all(|(_, lag)| *lag == Some(0))
                .then_some(view)
        }
    })
    .await;
    assert_eq!(view["leader_id"], leader, "{view}");
    let list = view["members"].as_array().unwrap();
    assert_eq!(list.len(), 3, "{view}");
    for m in list {
        assert_eq!(m["role"], "voter", "{view}");
        assert_eq!(m["leader"], m["id"] == leader, "{view}");
        assert_eq!(m["addr"], cluster.addr(m["id"].as_u64().unwrap()), "{view}");
    }
    let (code, table, _) = run(&["cluster", "members", "--coordinator", &via], dir.path());
    assert_eq!(code, 0);
    assert!(table.contains("ROLE") && table.contains("LAG"), "{table}");

    // One follower down while the others keep writing: it lags, the other does not.
    cluster.kill(other);
    let leader_addr = cluster.addr(leader).to_string();
    submit_plan(
        dir.path(),
        &leader_addr,
        "p.toml",
        "[[task]]\nname = \"t\"\ncommand = [\"true\"]\n",
    );
    eventually(LIMIT, "the killed follower to lag", || {
        let (via, dir) = (via.clone(), dir.path().to_path_buf());
        async move {
            let lags = lags(&members(&via, &dir));
            let of = |id: u64| lags.iter().find(|(i, _)| *i == id).and_then(|(_, l)| *l);
            (of(other).is_none_or(|l| l > 0) && of(follower) == Some(0)).then_some(())
        }
    })
    .await;

    // Back, it catches up.
    cluster.restart(other).unwrap();
    eventually(LIMIT, "the restarted follower to catch up", || {
        let (via, dir) = (via.clone(), dir.path().to_path_buf());
        async move {
            let lags = lags(&members(&via, &dir));
            lags.iter().all(|(_, lag)| *lag == Some(0)).then_some(())
        }
    })
    .await;

    // Handing over: to a named follower, then to whoever is most caught up.
    let (code, out, err) = run(
        &[
            "cluster",
            "transfer-leader",
            &follower.to_string(),
            "--coordinator",
            &via,
        ],
        dir.path(),
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("to node {follower}")), "{out}");
    assert_eq!(members(&via, dir.path())["leader_id"], follower);
    let (code, _, err) = run(
        &[
            "cluster",
            "transfer-leader",
            &follower.to_string(),
            "--coordinator",
            &via,
        ],
        dir.path(),
    );
    assert_ne!(code, 0);
    assert!(err.contains("already leads"), "{err}");
    let (code, _, err) = run(
        &["cluster", "transfer-leader", "9", "--coordinator", &via],
        dir.path(),
    );
    assert_ne!(code, 0);
    assert!(err.contains("not a member"), "{err}");
    let (code, out, err) = run(
        &[
            "cluster",
            "transfer-leader",
            "-o",
            "json",
            "--coordinator",
            &leader_addr,
        ],
        dir.path(),
    );
    assert_eq!(code, 0, "{err}");
    let moved: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(moved["from"], follower, "{moved}");
    assert_ne!(moved["to"], follower, "{moved}");
}
