//! Pictures of a real cluster's history (`testfleet viz`, `viz::load`): a cluster with
//! workers loses its leader, and every picture made afterwards must tell that story — the
//! current leader named, one transition mark per `leader_transitions` row, SVGs that parse,
//! PNGs that decode.

use std::path::{Path, PathBuf};
use std::time::Duration;

use resvg::tiny_skia::Pixmap;
use testfleet::viz::load::{self, Source};
use testfleet::viz::{Kind, raster};
use tokio_util::sync::CancellationToken;

use super::cluster::TestCluster;
use super::support::{self, WorkerProcess, eventually, local_cluster};

/// `count(*)` of a table, read through the cluster (linearizable).
async fn count(addr: &str, table: &str) -> i64 {
    let mut client = support::client(addr).await;
    let rows =
        support::query_consistent(&mut client, &format!("SELECT count(*) FROM {table}")).await;
    rows[0][0].as_i64().expect("a count")
}

/// `testfleet viz ARGS --coordinator ADDRS` as an operator; its stdout, after checking it
/// exited 0.
fn viz(args: &[&str], addrs: &str, dir: &Path) -> String {
    let mut all = vec!["viz"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--coordinator", addrs]);
    let (code, stdout, stderr) = support::run(&all, dir);
    assert_eq!(code, 0, "testfleet {all:?} failed: {stderr}");
    stdout
}

fn decode_png(path: &Path) -> Pixmap {
    let bytes = std::fs::read(path).unwrap();
    Pixmap::decode_png(&bytes).unwrap_or_else(|e| panic!("{} is no PNG: {e}", path.display()))
}

fn parse_svg(path: &Path) -> String {
    let svg = std::fs::read_to_string(path).unwrap();
    raster::parse(&svg).unwrap_or_else(|e| panic!("{} is no SVG: {e}", path.display()));
    svg
}

/// The eight files of one `write_all` round in `dir`, checked: two per kind, named
/// `<stem>_<YYYYMMDDTHHMMSSZ>.svg|png` with one time, each SVG parsing and each PNG decoding.
fn check_round(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 8, "{files:?}");
    let mut stamps = std::collections::BTreeSet::new();
    for kind in Kind::ALL {
        for ext in ["svg", "png"] {
            let file = files
                .iter()
                .find(|f| {
                    let name = f.file_name().unwrap().to_str().unwrap();
                    name.starts_with(&format!("{}_", kind.file_stem()))
                        && name.ends_with(&format!(".{ext}"))
                })
                .unwrap_or_else(|| panic!("no {} .{ext} in {files:?}", kind.file_stem()));
            let name = file.file_name().unwrap().to_str().unwrap();
            let stamp = &name[kind.file_stem().len() + 1..name.len() - ext.len() - 1];
            assert_eq!(stamp.len(), 16, "{name}");
            assert!(
                stamp.ends_with('Z') && stamp.as_bytes()[8] == b'T',
                "{name}"
            );
            stamps.insert(stamp.to_string());
            if ext == "svg" {
                parse_svg(file);
            } else {
                let png = decode_png(file);
                assert!(png.width() >= 900 && png.height() >= 100, "{name}");
            }
        }
    }
    assert_eq!(stamps.len(), 1, "one time for the round: {stamps:?}");
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_picture_of_a_cluster_that_lost_its_leader_tells_it() {
    let dir = support::test_dir();
    let mut cluster = local_cluster(3, dir.path(), &[]);
    let first = cluster.leader(Duration::from_secs(60), None).await.unwrap();
    let addrs: Vec<String> = cluster.addresses().into_values().collect();
    let addrs = addrs.join(",");
    let _workers = [
        WorkerProcess::start(&addrs, "viz-w1", 1, dir.path()),
        WorkerProcess::start(&addrs, "viz-w2", 1, dir.path()),
    ];
    let any = cluster.addr(first).to_string();
    eventually(
        Duration::from_secs(30),
        "two workers registered",
        || async { (count(&any, "workers").await >= 2).then_some(()) },
    )
    .await;

    // A health sample of the leader in the log (one every 10 s): the failover gap is measured
    // from its last one.
    eventually(
        Duration::from_secs(60),
        "a health sample of the leader",
        || async {
            let table = format!("health_samples WHERE node_id = {first}");
            (count(&any, &table).await >= 1).then_some(())
        },
    )
    .await;

    // The leader dies; another is elected and records its election; the old one comes back
    // as a follower.
    cluster.kill(first);
    let leader = cluster
        .leader(Duration::from_secs(30), Some(first))
        .await
        .unwrap();
    let at = cluster.addr(leader).to_string();
    eventually(
        Duration::from_secs(30),
        "the second election recorded",
        || async { (count(&at, "leader_transitions").await >= 2).then_some(()) },
    )
    .await;
    cluster.restart(first).unwrap();
    let leader = cluster.settled(Duration::from_secs(60), 10).await.unwrap();
    let transitions = count(&at, "leader_transitions").await;
    let out = dir.path().join("pictures");
    std::fs::create_dir_all(&out).unwrap();
    let file = |name: &str| out.join(name);

    // Cluster: the leader, every coordinator, both workers.
    viz(
        &[
            "cluster",
            "--format",
            "svg",
            "--out",
            file("c.svg").to_str().unwrap(),
        ],
        &addrs,
        dir.path(),
    );
    let svg = parse_svg(&file("c.svg"));
    assert!(
        svg.contains(&format!(
            "<g class=\"node\" data-id=\"{leader}\" data-role=\"leader\" data-leader=\"true\">"
        )),
        "the leader {leader} is not marked: {svg}"
    );
    assert_eq!(svg.matches("class=\"node\"").count(), 3);
    assert!(svg.contains("data-id=\"viz-w1\"") && svg.contains("data-id=\"viz-w2\""));
    let text = viz(&["cluster"], &addrs, dir.path());
    assert!(text.contains(&format!("Leader: node {leader} (")), "{text}");
    assert!(text.contains("viz-w1") && text.contains("viz-w2"), "{text}");

    // Leaders: one mark per row of the table, the current leader named.
    viz(
        &[
            "leaders",
            "--format",
            "svg",
            "--out",
            file("l.svg").to_str().unwrap(),
        ],
        &addrs,
        dir.path(),
    );
    let svg = parse_svg(&file("l.svg"));
    let marks = svg.matches("class=\"transition\"").count() as i64;
    let now = count(&at, "leader_transitions").await;
    assert_eq!(now, transitions, "no election happened meanwhile");
    assert_eq!(marks, transitions, "one mark per leader_transitions row");
    assert!(transitions >= 2);
    // The election after the kill has a failover gap: the dead leader had sampled itself.
    assert!(svg.contains("class=\"gap\""), "no failover gap: {svg}");
    let text = viz(&["leaders"], &addrs, dir.path());
    assert!(
        text.contains(&format!("current leader: node {leader} (term")),
        "{text}"
    );
    assert!(text.contains(&format!("{transitions} elections")), "{text}");

    let text = viz(&["health"], &addrs, dir.path());
    assert!(text.contains(&format!("\nnode {first}: ")), "{text}");

    // Every kind as PNG (to a file and, stdout being a pipe here, to stdout), SVG and text.
    for kind in ["cluster", "health", "leaders", "recovery"] {
        let png = file(&format!("{kind}.png"));
        viz(
            &[kind, "--format", "png", "--out", png.to_str().unwrap()],
            &addrs,
            dir.path(),
        );
        let image = decode_png(&png);
        assert!(image.width() >= 900 && image.height() >= 100, "{kind}");
        let svg = file(&format!("{kind}.svg"));
        viz(
            &[kind, "--format", "svg", "--out", svg.to_str().unwrap()],
            &addrs,
            dir.path(),
        );
        parse_svg(&svg);
        let text = viz(&[kind], &addrs, dir.path());
        assert!(
            text.lines().all(|l| l.chars().count() <= 100),
            "{kind}: {text}"
        );
    }
    let mut all = vec!["viz", "leaders", "--format", "png", "--coordinator"];
    all.push(&addrs);
    let output = std::process::Command::new(support::binary())
        .args(&all)
        .env(
            "TESTFLEET_TOKEN_FILE",
            support::token_file(testfleet::auth::Role::Operator),
        )
        .output()
        .unwrap();
    assert!(output.status.success());
    assert!(Pixmap::decode_png(&output.stdout).is_ok(), "PNG on stdout");

    // All four at once, named by kind and time.
    let round = dir.path().join("round");
    let listed = viz(
        &["all", "--out-dir", round.to_str().unwrap()],
        &addrs,
        dir.path(),
    );
    let files = check_round(&round);
    assert_eq!(listed.lines().count(), 8, "{listed}");
    assert!(files.iter().all(|f| listed.contains(f.to_str().unwrap())));

    // To look at them: VIZ_SAMPLES=DIR keeps a copy.
    if let Some(keep) = std::env::var_os("VIZ_SAMPLES") {
        std::fs::create_dir_all(&keep).unwrap();
        for f in std::fs::read_dir(&out).unwrap() {
            let f = f.unwrap();
            std::fs::copy(f.path(), Path::new(&keep).join(f.file_name())).unwrap();
        }
    }

    // Usage errors say what to do.
    let (code, _, stderr) = support::run(&["viz", "all", "--coordinator", &addrs], dir.path());
    assert_eq!(code, 2);
    assert!(stderr.contains("--out-dir DIR"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_writes_the_pictures_from_its_own_state_until_cancelled() {
    let mut cluster = TestCluster::start(3).await;
    let first = cluster.leader().await;
    cluster.stop(first).await;
    let leader = cluster.leader().await;
    assert_ne!(leader, first);
    let node = cluster.node(leader).clone();
    let source = Source::Local(node.clone());

    // The election is recorded by the new leader a moment after it leads.
    let leaders = eventually(Duration::from_secs(30), "two elections", || async {
        let picture = load::leaders(&source).await.ok()?;
        (picture.transitions.len() >= 2).then_some(picture)
    })
    .await;
    assert_eq!(leaders.current().map(|t| t.leader), Some(leader));
    let state = node.state().clone();
    let rows = tokio::task::spawn_blocking(move || {
        state.flush().unwrap();
        let conn = state.reader().unwrap();
        testfleet::query::run_query(&conn, "SELECT count(*) FROM leader_transitions").unwrap()
    })
    .await
    .unwrap();
    assert_eq!(
        rows.rows[0][0].as_u64(),
        Some(leaders.transitions.len() as u64)
    );
    let svg = testfleet::viz::Picture::Leaders(leaders.clone()).svg();
    assert_eq!(
        svg.matches("class=\"transition\"").count(),
        leaders.transitions.len()
    );

    // The leader's own view of the cluster: itself leading, the others as members.
    let picture = load::cluster(&source).await.unwrap();
    assert_eq!(picture.leader_id, Some(leader));
    assert_eq!(picture.nodes.len(), 3);
    let me = picture.nodes.iter().find(|n| n.id == Some(leader)).unwrap();
    assert!(me.is_leader && me.role == "leader" && me.term.is_some());

    // Periodically, keeping one round: after several rounds, one round's eight files.
    let out = cluster.dir.path().join("periodic");
    let cancel = CancellationToken::new();
    let task = tokio::spawn(load::run_periodically(
        source.clone(),
        out.clone(),
        Duration::from_secs(1),
        1,
        cancel.clone(),
    ));
    let first_round = eventually(Duration::from_secs(30), "a first round", || async {
        let names = std::fs::read_dir(&out).ok()?.count();
        (names >= 8).then(|| std::fs::read_dir(&out).unwrap().count())
    })
    .await;
    assert!(first_round >= 8);
    let first_stamp = stamp_of(&out);
    eventually(Duration::from_secs(30), "a later round", || async {
        let stamp = stamp_of(&out);
        (stamp.is_some() && stamp != first_stamp).then_some(())
    })
    .await;
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("the writer stops when cancelled")
        .unwrap();
    check_round(&out);
}

/// The time of the newest cluster picture in `dir`.
fn stamp_of(dir: &Path) -> Option<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("cluster_status_") && n.ends_with(".svg"))
        .collect();
    names.sort();
    names.pop()
}

/// `--visualization-path DIR --visualization-interval 1s` on a real coordinator: while it
/// leads, rounds of the eight pictures appear in DIR, each complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_started_with_a_visualization_path_writes_the_pictures_there() {
    let dir = support::test_dir();
    let out = dir.path().join("pictures");
    let extra = [
        "--visualization-path".to_string(),
        out.display().to_string(),
        "--visualization-interval".to_string(),
        "1s".to_string(),
    ];
    let cluster = local_cluster(1, dir.path(), &extra);
    cluster.leader(Duration::from_secs(60), None).await.unwrap();
    // Two rounds: the first written, then a second with a later time.
    let first = eventually(
        Duration::from_secs(60),
        "a first round of pictures",
        || async { stamp_of(&out) },
    )
    .await;
    eventually(Duration::from_secs(60), "a second round", || async {
        stamp_of(&out).filter(|s| *s != first)
    })
    .await;
    // The first round is whole once the second began (rounds run one after the other).
    let stamp = &first["cluster_status_".len()..first.len() - ".svg".len()];
    let round = dir.path().join("round");
    std::fs::create_dir_all(&round).unwrap();
    for entry in std::fs::read_dir(&out).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if name.contains(stamp) && !name.starts_with('.') {
            std::fs::copy(&path, round.join(&name)).unwrap();
        }
    }
    check_round(&round);
}
