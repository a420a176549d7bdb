//! Three Testfleet coordinators embedded in one program with [`AutoRecoverySystem`], named as
//! the original design names them (`coordinator1..3`, each given the others' addresses). It
//! waits for a leader, stops that leader's system, and shows the callbacks of the other two
//! reporting the change and the new leader taking over. Exit 0 when all of that happened
//! within a minute, 1 otherwise.
//!
//! ```text
//! cargo run --example embedded_cluster [DIR]
//! ```
//!
//! DIR holds each coordinator's DuckDB file and Raft log (a temporary directory by default).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use testfleet::embed::AutoRecoverySystem;

/// What the callbacks saw: (coordinator, event).
type Events = Arc<Mutex<Vec<(usize, String)>>>;

#[tokio::main]
async fn main() {
    let code = match run().await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("FAIL {e}");
            1
        }
    };
    std::process::exit(code);
}

async fn run() -> Result<(), String> {
    let temp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let dir = std::env::args()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| temp.path().to_path_buf());
    let ports: Vec<u16> = (0..3)
        .map(|_| testfleet::demo::launch::free_port().map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    let events: Events = Arc::default();

    let mut systems = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let others: Vec<String> = (ports.iter().enumerate())
            .filter(|(j, _)| *j != i)
            .map(|(_, p)| format!("127.0.0.1:{p}"))
            .collect();
        let home = dir.join(format!("coordinator{}", i + 1));
        std::fs::create_dir_all(&home).map_err(|e| e.to_string())?;
        let mut system = AutoRecoverySystem::new(
            &format!("coordinator{}", i + 1),
            &others.join(","),
            home.join("state.duckdb"),
            None,
        )
        .map_err(|e| e.to_string())?
        .with_port(*port);
        let seen = events.clone();
        system.on_leader_changed(move |old, new| {
            println!("coordinator{}: leader changed {old:?} -> {new:?}", i + 1);
            let event = format!("changed {old:?} -> {new:?}");
            seen.lock().unwrap().push((i, event));
        });
        let seen = events.clone();
        system.on_become_leader(move || {
            println!("coordinator{}: became leader", i + 1);
            seen.lock().unwrap().push((i, "became leader".into()));
        });
        system.start().await.map_err(|e| e.to_string())?;
        systems.push(system);
    }

    let first = wait_for(|| systems.iter().position(|s| s.is_leader()), "a leader").await?;
    let old_id = systems[first].node_id();
    println!("leader: coordinator{} (node {old_id:?})", first + 1);
    let caps = systems[first].web_capabilities();
    println!(
        "web capabilities: {} workers",
        serde_json::to_value(&caps)
            .ok()
            .and_then(|v| v["workers"].as_array().map(Vec::len))
            .unwrap_or(0)
    );

    systems[first].shutdown().await.map_err(|e| e.to_string())?;
    println!("stopped coordinator{}", first + 1);
    let second = wait_for(
        || {
            (systems.iter().enumerate())
                .find(|(i, s)| *i != first && s.is_leader())
                .map(|(i, _)| i)
        },
        "a new leader",
    )
    .await?;
    let new_id = systems[second].node_id();
    println!("new leader: coordinator{} (node {new_id:?})", second + 1);

    // Every survivor's callback sees the old leader give way (each learns of the new leader
    // in its own time); the new one is told it leads.
    let change = format!("changed {old_id:?} -> {new_id:?}");
    for i in (0..3).filter(|i| *i != first) {
        let seen = events.clone();
        let change = change.clone();
        wait_for(
            move || {
                (seen.lock().unwrap().iter())
                    .any(|(j, e)| *j == i && *e == change)
                    .then_some(())
            },
            &format!("leader change seen by coordinator{}", i + 1),
        )
        .await?;
    }
    let told = events
        .lock()
        .unwrap()
        .iter()
        .any(|(j, e)| *j == second && e == "became leader");
    if !told {
        return Err(format!("coordinator{} was not told it leads", second + 1));
    }
    println!("PASS the callbacks followed a real leader change");
    for system in &mut systems {
        system.shutdown().await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Polls `check` every 50 ms for up to a minute.
async fn wait_for<T>(mut check: impl FnMut() -> Option<T>, what: &str) -> Result<T, String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(value) = check() {
            return Ok(value);
        }
        if Instant::now() > deadline {
            return Err(format!("no {what} within 60 s"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
