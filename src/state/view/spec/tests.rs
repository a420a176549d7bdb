//! The compact spec reads back exactly what was submitted, with or without a base, and
//! shares what a job's tasks have in common.

use super::*;

fn full() -> TaskSpec {
    TaskSpec {
        env: BTreeMap::from([
            ("A".to_string(), "1".to_string()),
            ("EMPTY".to_string(), String::new()),
            ("ü".to_string(), "long ".repeat(40)),
        ]),
        cwd: Some("repo/sub".to_string()),
        timeout_ms: 12_345,
        priority: -7,
        labels: BTreeMap::from([("os".to_string(), "linux".to_string())]),
        capabilities: vec!["webgpu".to_string(), "memory_gb>=16".to_string()],
        max_retries: 5,
        timeout_retries: 2,
        flaky_retries: 1,
        ..TaskSpec::new(
            "t-1",
            "tests/test_x.py::test_y[ä]",
            vec![
                "python".into(),
                "-m".into(),
                "pytest".into(),
                "tests/test_x.py::test_y[ä]".into(),
                "x".repeat(300),
            ],
        )
    }
}

fn pytest(n: usize) -> TaskSpec {
    let test = format!("tests/test_m.py::test_{n}");
    TaskSpec {
        env: BTreeMap::from([("PYTHONHASHSEED".to_string(), "0".to_string())]),
        cwd: Some("repo".to_string()),
        ..TaskSpec::new(
            format!("task-{n:04}"),
            test.clone(),
            ["python", "-m", "pytest", &test, "-q", "--tb=short"]
                .map(str::to_string)
                .to_vec(),
        )
    }
}

fn others() -> Vec<TaskSpec> {
    vec![
        full(),
        TaskSpec::new("", "", vec![]),
        TaskSpec {
            cwd: Some(String::new()),
            ..TaskSpec::new("a", "b", vec![String::new()])
        },
        pytest(1),
        pytest(2),
        TaskSpec {
            cwd: None,
            command: vec!["repo".into(), "python".into()],
            ..pytest(3)
        },
    ]
}

fn assert_reads_back(stored: &StoredSpec, spec: &TaskSpec) {
    assert_eq!(&stored.to_spec(), spec);
    assert_eq!(stored.id(), spec.id);
    assert_eq!(stored.name(), spec.name);
    assert_eq!(stored.cwd(), spec.cwd.as_deref());
    assert_eq!(stored.command(), spec.command);
    let env: Vec<(&str, &str)> = spec.env.iter().map(|(k, v)| (&**k, &**v)).collect();
    assert_eq!(stored.env(), env);
    let labels: Vec<(&str, &str)> = spec.labels.iter().map(|(k, v)| (&**k, &**v)).collect();
    assert_eq!(stored.labels(), labels);
    assert_eq!(stored.capabilities(), spec.capabilities);
}

#[test]
fn every_field_reads_back_as_submitted_whatever_the_base() {
    for spec in others() {
        let alone = StoredSpec::new(&spec);
        assert_reads_back(&alone, &spec);
        for base in others() {
            let base = StoredSpec::new(&base);
            let based = StoredSpec::based_on(&spec, Some(&base));
            assert_reads_back(&based, &spec);
            assert_eq!(based, alone);
            // A base that is itself based on another: its own base is used.
            let chained = StoredSpec::based_on(&spec, Some(&based));
            assert_reads_back(&chained, &spec);
        }
    }
}

#[test]
fn a_jobs_tasks_share_what_they_have_in_common() {
    let first = StoredSpec::new(&pytest(0));
    let second = StoredSpec::based_on(&pytest(1), Some(&first));
    assert!(second.base.is_some());
    // Its own bytes: the counts, the id, the test's node id once (the name; the argument
    // refers to it) and a byte per shared string.
    let node_id = "tests/test_m.py::test_1".len();
    assert!(
        second.own_bytes() <= 5 + 10 + node_id + 2 + 10,
        "{} bytes",
        second.own_bytes()
    );
    assert!(first.own_bytes() > second.own_bytes() + 30);
    // Copies share the text.
    let copy = second.clone();
    assert!(Arc::ptr_eq(&copy.text, &second.text));
    // Nothing in common: no base kept.
    let unrelated = StoredSpec::based_on(&TaskSpec::new("z", "z", vec![]), Some(&first));
    assert!(unrelated.base.is_none());
    assert_reads_back(&unrelated, &TaskSpec::new("z", "z", vec![]));
}

#[test]
fn a_damaged_buffer_reads_as_empty_strings_without_panicking() {
    let stored = StoredSpec::based_on(&full(), Some(&StoredSpec::new(&pytest(0))));
    for cut in 0..stored.text.len() {
        let damaged = StoredSpec {
            text: Arc::from(&stored.text[..cut]),
            ..stored.clone()
        };
        let _ = damaged.to_spec();
    }
    let garbage = StoredSpec {
        text: Arc::from(vec![0xff; 20]),
        ..stored.clone()
    };
    assert_eq!(garbage.id(), "");
    let _ = garbage.to_spec();
    let wild_reference = StoredSpec {
        text: Arc::from(vec![0, 0, 0, 0, 0, 2, b'a', 201, 1]),
        ..stored
    };
    assert_eq!(wild_reference.id(), "a");
    assert_eq!(wild_reference.name(), "");
}
