//! The embedding API ([`testfleet::embed::AutoRecoverySystem`]) for real: the shipped example
//! (three coordinators in one program) runs and its callbacks follow a real leader change; and
//! a system embedded in this test process sees a real worker's capabilities.

use std::time::Duration;

use testfleet::embed::AutoRecoverySystem;

use super::support::{WorkerProcess, auth_dir, binary, eventually, test_dir};

#[test]
fn the_embedding_example_follows_a_real_leader_change() {
    let example = std::path::Path::new(binary())
        .parent()
        .expect("the target directory")
        .join("examples")
        .join("embedded_cluster");
    assert!(
        example.exists(),
        "{} is missing: `cargo test` builds the examples",
        example.display()
    );
    let dir = test_dir();
    let out = std::process::Command::new(&example)
        .arg(dir.path())
        .output()
        .expect("run the example");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("PASS the callbacks followed a real leader change"),
        "{stdout}"
    );
    // Two survivors were told of the move from the old leader to the new one.
    let moves = stdout
        .lines()
        .filter(|l| l.contains("leader changed Some(") && l.contains("-> Some("))
        .count();
    assert_eq!(moves, 2, "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_coordinator_leads_and_sees_its_workers_capabilities() {
    let dir = test_dir();
    let db = dir.path().join("embedded.duckdb");
    // One coordinator: it lists only itself, by address.
    let port = testfleet::demo::launch::free_port().unwrap();
    let own = format!("127.0.0.1:{port}");
    let mut system = AutoRecoverySystem::new(&own, &own, &db, None)
        .unwrap()
        .with_auth_dir(auth_dir());
    let became = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = became.clone();
    system.on_become_leader(move || flag.store(true, std::sync::atomic::Ordering::SeqCst));
    system.start().await.unwrap();
    eventually(Duration::from_secs(30), "the embedded node to lead", || {
        let leads = system.is_leader();
        async move { leads.then_some(()) }
    })
    .await;
    assert!(became.load(std::sync::atomic::Ordering::SeqCst));
    assert_eq!(system.node_id(), Some(1));

    let _worker = WorkerProcess::start_with(
        &own,
        "gpu-box",
        dir.path(),
        &["--no-probe", "--capability", "cuda"],
    );
    let caps = eventually(Duration::from_secs(30), "the worker's capabilities", || {
        let caps = system.web_capabilities();
        async move { caps.offered_by.contains_key("cuda").then_some(caps) }
    })
    .await;
    assert_eq!(caps.offered_by["cuda"], ["gpu-box"]);
    assert_eq!(caps.workers.len(), 1);
    system.shutdown().await.unwrap();
    assert!(!system.is_leader());
}
