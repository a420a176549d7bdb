//! Comparing replicas against the majority, and the verdicts and exit codes that follow.

use super::*;

fn value(rows: u64, sha: &str) -> TableValue {
    TableValue {
        rows,
        sha256: sha.to_string(),
    }
}

fn checked(id: u64, tables: &[(&str, u64, &str)]) -> NodeResult {
    NodeResult {
        id,
        addr: format!("127.0.0.1:{}", 9000 + id),
        checked: true,
        log_index: Some(42),
        last_applied: Some(42),
        tables: tables
            .iter()
            .map(|(t, rows, sha)| (t.to_string(), value(*rows, sha)))
            .collect(),
        differing_tables: Vec::new(),
        error: None,
    }
}

fn unchecked(id: u64, why: &str) -> NodeResult {
    NodeResult {
        checked: false,
        log_index: None,
        tables: BTreeMap::new(),
        error: Some(why.to_string()),
        ..checked(id, &[])
    }
}

const SAME: &[(&str, u64, &str)] = &[("workers", 2, "aa"), ("jobs", 1, "bb"), ("tasks", 5, "cc")];

fn report(nodes: Vec<NodeResult>) -> CheckReport {
    compare("check-1".into(), 42, nodes)
}

#[test]
fn replicas_with_equal_digests_agree() {
    let r = report(vec![checked(2, SAME), checked(1, SAME), checked(3, SAME)]);
    assert_eq!(r.verdict, Verdict::Agree);
    assert_eq!(r.exit_code(), 0);
    assert_eq!(r.nodes.iter().map(|n| n.id).collect::<Vec<_>>(), [1, 2, 3]);
    let names: Vec<&str> = r.tables.iter().map(|t| t.table.as_str()).collect();
    assert_eq!(names, ["workers", "jobs", "tasks"], "schema order");
    for t in &r.tables {
        assert_eq!(t.agreeing_nodes, [1, 2, 3]);
        assert!(t.differing_nodes.is_empty());
    }
    assert!(
        r.summary().starts_with("AGREE: all 3 nodes"),
        "{}",
        r.summary()
    );
}

#[test]
fn the_node_that_differs_from_the_majority_is_named_with_its_table() {
    let bad = &[("workers", 2, "aa"), ("jobs", 1, "bb"), ("tasks", 5, "XX")];
    let r = report(vec![checked(1, SAME), checked(2, SAME), checked(3, bad)]);
    assert_eq!(r.verdict, Verdict::Differ);
    assert_eq!(r.exit_code(), 1);
    let tasks = r.tables.iter().find(|t| t.table == "tasks").unwrap();
    assert_eq!(tasks.majority, Some(value(5, "cc")));
    assert_eq!(tasks.agreeing_nodes, [1, 2]);
    assert_eq!(tasks.differing_nodes, [3]);
    assert_eq!(r.nodes[2].differing_tables, ["tasks"]);
    assert!(r.nodes[0].differing_tables.is_empty());
    assert!(
        r.summary()
            .contains("node 3 (127.0.0.1:9003) differs in tasks"),
        "{}",
        r.summary()
    );
    let text = render(&r, Output::Table);
    assert!(text.contains("DIFFERS"), "{text}");
    assert!(text.contains("3 (5 rows, XX)"), "{text}");
}

#[test]
fn a_different_row_count_alone_is_a_difference() {
    let bad = &[("workers", 3, "aa"), ("jobs", 1, "bb"), ("tasks", 5, "cc")];
    let r = report(vec![checked(1, SAME), checked(2, bad), checked(3, SAME)]);
    assert_eq!(r.verdict, Verdict::Differ);
    assert_eq!(r.nodes[1].differing_tables, ["workers"]);
}

#[test]
fn an_unchecked_node_makes_the_check_incomplete() {
    let r = report(vec![
        checked(1, SAME),
        unchecked(2, "it could not be asked: connection refused"),
        checked(3, SAME),
    ]);
    assert_eq!(r.verdict, Verdict::Incomplete);
    assert_eq!(r.exit_code(), 2);
    assert!(
        r.summary()
            .contains("node 2 (127.0.0.1:9002) could not be checked: it could not be asked"),
        "{}",
        r.summary()
    );
    let text = render(&r, Output::Table);
    assert!(text.contains("UNCHECKED"), "{text}");
}

#[test]
fn a_difference_outranks_an_unchecked_node() {
    let bad = &[("workers", 2, "aa"), ("jobs", 1, "XX"), ("tasks", 5, "cc")];
    let r = report(vec![
        checked(1, SAME),
        checked(2, SAME),
        checked(3, bad),
        unchecked(4, "timed out"),
        checked(5, SAME),
    ]);
    assert_eq!(r.verdict, Verdict::Differ);
    assert_eq!(r.exit_code(), 1);
    assert!(r.summary().contains("node 3"), "{}", r.summary());
    assert!(r.summary().contains("node 4"), "{}", r.summary());
}

#[test]
fn without_a_majority_every_checked_node_is_reported() {
    let bad = &[("workers", 2, "aa"), ("jobs", 1, "XX"), ("tasks", 5, "cc")];
    let r = report(vec![
        checked(1, SAME),
        unchecked(2, "down"),
        checked(3, bad),
    ]);
    assert_eq!(r.verdict, Verdict::Differ);
    let jobs = r.tables.iter().find(|t| t.table == "jobs").unwrap();
    assert_eq!(jobs.majority, None);
    assert_eq!(jobs.differing_nodes, [1, 3]);
    let workers = r.tables.iter().find(|t| t.table == "workers").unwrap();
    assert_eq!(workers.majority, Some(value(2, "aa")));
    assert!(workers.differing_nodes.is_empty());
}

#[test]
fn a_node_missing_a_table_differs_on_it() {
    let short = &[("workers", 2, "aa"), ("jobs", 1, "bb")];
    let r = report(vec![checked(1, SAME), checked(2, SAME), checked(3, short)]);
    assert_eq!(r.verdict, Verdict::Differ);
    assert_eq!(r.nodes[2].differing_tables, ["tasks"]);
    assert!(render(&r, Output::Table).contains("3 (no such table)"));
}

#[test]
fn no_node_checked_is_incomplete() {
    let r = report(vec![unchecked(1, "down"), unchecked(2, "down")]);
    assert_eq!(r.verdict, Verdict::Incomplete);
    assert_eq!(r.exit_code(), 2);
    assert!(r.tables.is_empty());
    assert!(
        r.summary()
            .starts_with("INCOMPLETE: no node could be checked: node 1"),
        "{}",
        r.summary()
    );
}

#[test]
fn json_names_the_verdict_and_the_differing_tables() {
    let bad = &[("workers", 2, "aa"), ("jobs", 1, "bb"), ("tasks", 5, "XX")];
    let r = report(vec![checked(1, SAME), checked(2, SAME), checked(3, bad)]);
    let json: serde_json::Value = serde_json::from_str(&render(&r, Output::Json)).unwrap();
    assert_eq!(json["verdict"], "differ");
    assert_eq!(json["log_index"], 42);
    assert_eq!(json["nodes"][2]["differing_tables"][0], "tasks");
    assert_eq!(json["tables"][2]["differing_nodes"][0], 3);
}
