//! Plan files: what a plan expands to, and what each mistake in one is told.

use std::fs;

use super::*;

mod requires;

fn parse_ok(text: &str) -> Plan {
    parse(text, Path::new("plan.toml")).unwrap_or_else(|e| panic!("plan should parse: {e}"))
}

fn parse_err(text: &str) -> PlanError {
    match parse(text, Path::new("plan.toml")) {
        Ok(plan) => panic!("plan should be refused, got {plan:?}"),
        Err(e) => e,
    }
}

/// Asserts the error is on `line` of plan.toml and its message contains `needle`.
fn assert_error(text: &str, line: usize, needle: &str) {
    let error = parse_err(text);
    let shown = error.to_string();
    assert_eq!(error.line(), Some(line), "wrong line in: {shown}");
    assert!(
        shown.starts_with(&format!("plan.toml:{line}:")),
        "not located: {shown}"
    );
    assert!(
        shown.contains(needle),
        "{shown:?} should contain {needle:?}"
    );
}

/// A task with the built-in defaults, for comparisons.
fn task(name: &str, command: &[&str]) -> PlannedTask {
    PlannedTask {
        name: name.to_string(),
        command: command.iter().map(|s| s.to_string()).collect(),
        env: BTreeMap::new(),
        cwd: None,
        timeout_ms: 600_000,
        priority: 0,
        labels: BTreeMap::new(),
        capabilities: Vec::new(),
        max_retries: 3,
        timeout_retries: 1,
        flaky_retries: 0,
    }
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn names(plan: &Plan) -> Vec<&str> {
    plan.tasks.iter().map(|t| t.name.as_str()).collect()
}

// ---- What a plan expands to -----------------------------------------------------------------

#[test]
fn a_task_gets_every_field_it_names() {
    let plan = parse_ok(
        r#"
name = "suite"
[[task]]
name = "gpu-test"
command = ["./run", "--fast"]
env = { RUST_LOG = "debug", EMPTY = "" }
cwd = "/srv/checkout"
timeout = "1h30m"
priority = -7
max_retries = 5
timeout_retries = 2
flaky_retries = 4
requires = { labels = { os = "linux", arch = "x86_64" }, capabilities = ["webgpu", "gpu=discrete"] }
"#,
    );
    assert_eq!(plan.name, "suite");
    let expected = PlannedTask {
        env: map(&[("RUST_LOG", "debug"), ("EMPTY", "")]),
        cwd: Some("/srv/checkout".into()),
        timeout_ms: 90 * 60 * 1000,
        priority: -7,
        labels: map(&[("os", "linux"), ("arch", "x86_64")]),
        capabilities: vec!["webgpu".into(), "gpu=discrete".into()],
        max_retries: 5,
        timeout_retries: 2,
        flaky_retries: 4,
        ..task("gpu-test", &["./run", "--fast"])
    };
    assert_eq!(plan.tasks, vec![expected]);
}

#[test]
fn built_in_defaults_fill_what_nothing_gives() {
    let plan = parse_ok("[[task]]\nname = \"t\"\ncommand = [\"true\"]\n");
    assert_eq!(plan.tasks, vec![task("t", &["true"])]);
    assert_eq!(plan.tasks[0].timeout_ms, DEFAULT_TIMEOUT.as_millis() as u64);
}

#[test]
fn the_job_is_named_after_the_file_when_the_plan_does_not_say() {
    let text = "[[task]]\nname = \"t\"\ncommand = [\"true\"]\n";
    let plan = parse(text, Path::new("/ci/nightly-gpu.toml")).unwrap();
    assert_eq!(plan.name, "nightly-gpu");
}

#[test]
fn a_timeout_may_be_a_number_of_seconds() {
    let plan = parse_ok("[[task]]\nname = \"t\"\ncommand = [\"true\"]\ntimeout = 45\n");
    assert_eq!(plan.tasks[0].timeout_ms, 45_000);
}

#[test]
fn defaults_apply_and_entries_override_them() {
    let plan = parse_ok(
        r#"
[defaults]
timeout = "300s"
max_retries = 1
priority = 5
cwd = "/srv/checkout"
env = { RUST_BACKTRACE = "1", MODE = "ci" }
requires = { labels = { os = "linux" }, capabilities = ["webgpu"] }

[[task]]
name = "plain"
command = ["true"]

[[task]]
name = "custom"
command = ["false"]
timeout = "5m"
priority = 9
cwd = "/tmp"
env = { MODE = "local", EXTRA = "x" }
requires = { labels = { os = "macos", gpu = "yes" }, capabilities = ["webnn", "webgpu"] }
"#,
    );
    let plain = PlannedTask {
        timeout_ms: 300_000,
        max_retries: 1,
        priority: 5,
        cwd: Some("/srv/checkout".into()),
        env: map(&[("RUST_BACKTRACE", "1"), ("MODE", "ci")]),
        labels: map(&[("os", "linux")]),
        capabilities: vec!["webgpu".into()],
        ..task("plain", &["true"])
    };
    let custom = PlannedTask {
        name: "custom".into(),
        command: vec!["false".into()],
        timeout_ms: 5 * 60 * 1000,
        priority: 9,
        cwd: Some("/tmp".into()),
        env: map(&[("RUST_BACKTRACE", "1"), ("MODE", "local"), ("EXTRA", "x")]),
        labels: map(&[("os", "macos"), ("gpu", "yes")]),
        capabilities: vec!["webgpu".into(), "webnn".into()],
        ..plain.clone()
    };
    assert_eq!(plan.tasks, vec![plain, custom]);
}

#[test]
fn defaults_may_give_the_command() {
    let plan = parse_ok(
        r#"
[defaults]
command = ["make", "test"]
[[task]]
name = "a"
[[task]]
name = "b"
command = ["make", "lint"]
"#,
    );
    assert_eq!(plan.tasks[0].command, ["make", "test"]);
    assert_eq!(plan.tasks[1].command, ["make", "lint"]);
}

#[test]
fn a_matrix_makes_one_task_per_item_with_item_and_index_filled_in() {
    let plan = parse_ok(
        r#"
[defaults]
cwd = "/work/{index}"
[[matrix]]
name = "unit-{item}"
command = ["python3", "-m", "pytest", "{item}", "--shard={index}"]
env = { TEST_FILE = "{item}", SHARD = "{index}" }
items = ["tests/test_a.py", "tests/test_b.py"]
requires = { labels = { os = "linux" } }
"#,
    );
    let unit = |item: &str, index: &str| PlannedTask {
        env: map(&[("TEST_FILE", item), ("SHARD", index)]),
        cwd: Some(format!("/work/{index}")),
        labels: map(&[("os", "linux")]),
        ..task(
            &format!("unit-{item}"),
            &["python3", "-m", "pytest", item, &format!("--shard={index}")],
        )
    };
    assert_eq!(
        plan.tasks,
        vec![unit("tests/test_a.py", "0"), unit("tests/test_b.py", "1")]
    );
}

#[test]
fn braces_outside_a_matrix_are_plain_text() {
    let plan = parse_ok("[[task]]\nname = \"t-{item}\"\ncommand = [\"echo\", \"{index}\"]\n");
    assert_eq!(plan.tasks, vec![task("t-{item}", &["echo", "{index}"])]);
}

#[test]
fn a_matrix_reads_its_items_file_next_to_the_plan() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("lists")).unwrap();
    fs::write(
        dir.path().join("lists/shards.txt"),
        "# shards to run\n\n  alpha  \r\nbeta\n   # indented comment\ngamma",
    )
    .unwrap();
    let plan_path = dir.path().join("plan.toml");
    fs::write(
        &plan_path,
        "[[matrix]]\nname = \"s-{item}\"\ncommand = [\"run\", \"{item}\"]\n\
         items_file = \"lists/shards.txt\"\n",
    )
    .unwrap();
    let plan = load(&plan_path).unwrap();
    assert_eq!(names(&plan), ["s-alpha", "s-beta", "s-gamma"]);
    assert_eq!(plan.tasks[2].command, ["run", "gamma"]);
}

#[test]
fn tasks_keep_the_order_of_their_entries() {
    let plan = parse_ok(
        r#"
[[task]]
name = "first"
command = ["true"]
[[matrix]]
name = "m{index}"
command = ["true"]
items = ["x", "y"]
[[task]]
name = "last"
command = ["true"]
"#,
    );
    assert_eq!(names(&plan), ["first", "m0", "m1", "last"]);
}

#[test]
fn into_specs_gives_each_task_an_id_in_order() {
    let plan = parse_ok(
        "[[matrix]]\nname = \"t{item}\"\ncommand = [\"true\"]\nitems = [\"a\", \"b\", \"c\"]\n",
    );
    let mut next = 0;
    let specs = plan.into_specs(|| {
        next += 1;
        format!("id-{next}")
    });
    let ids: Vec<_> = specs
        .iter()
        .map(|s| (s.id.as_str(), s.name.as_str()))
        .collect();
    assert_eq!(ids, [("id-1", "ta"), ("id-2", "tb"), ("id-3", "tc")]);
    assert_eq!(specs[0].timeout_ms, 600_000);
    assert_eq!(specs[0].timeout_retries, 1);
}

#[test]
fn the_shipped_example_plan_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/plan.toml");
    let plan = load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(plan.name, "example");
    assert_eq!(
        names(&plan),
        [
            "hello",
            "arithmetic",
            "fails-on-purpose",
            "echo-alpha",
            "echo-beta",
            "echo-gamma"
        ]
    );
    assert!(plan.tasks.iter().all(|t| t.command[0] == "sh"));
    assert!(
        plan.tasks
            .iter()
            .all(|t| t.labels.is_empty() && t.capabilities.is_empty())
    );
    assert_eq!(plan.tasks[4].command, ["sh", "-c", "echo beta"]);
    assert_eq!(plan.tasks[4].env, map(&[("ITEM_INDEX", "1")]));
}

// ---- What each mistake is told ------------------------------------------------------------

#[test]
fn messages_read_like_compiler_errors() {
    let text = "[[task]]\nname = \"t\"\ncommand = [\"true\"]\ntimeout = \"5 minutes\"\n";
    assert_eq!(
        parse_err(text).to_string(),
        r#"plan.toml:4:11: bad duration "5 minutes": use a number with a unit, like "300s", "5m" or "1h30m""#
    );
}

#[test]
fn a_missing_items_file_names_where_it_was_looked_for() {
    let dir = tempfile::tempdir().unwrap();
    let origin = dir.path().join("plan.toml");
    let text = "[[matrix]]\nname = \"m-{item}\"\ncommand = [\"t\"]\nitems_file = \"list.txt\"\n";
    let error = parse(text, &origin).unwrap_err();
    let resolved = std::path::absolute(dir.path().join("list.txt")).unwrap();
    assert_eq!(
        error.to_string(),
        format!(
            "{}:4:14: cannot read items file list.txt (resolved to {}): No such file or directory",
            origin.display(),
            resolved.display()
        )
    );
}

#[test]
fn an_items_file_without_items_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("list.txt"), "# nothing yet\n\n").unwrap();
    let text = "[[matrix]]\nname = \"m-{item}\"\ncommand = [\"t\"]\nitems_file = \"list.txt\"\n";
    let error = parse(text, &dir.path().join("plan.toml")).unwrap_err();
    assert_eq!(error.line(), Some(4));
    assert!(error.to_string().contains("lists no items"), "{error}");
}

/// The common head of the error cases: a valid start, so each case's line numbers are easy
/// to read (the case's own text starts on line 4).
const HEAD: &str = "name = \"s\"\n[[task]]\nname = \"ok\"\ncommand = [\"true\"]\n";

#[test]
fn each_mistake_is_located_and_explained() {
    // (what, text after HEAD, line of the error, part of the message)
    let cases: &[(&str, &str, usize, &str)] = &[
        (
            "unknown key in a task",
            "[[task]]\nname = \"b\"\ncommand = [\"x\"]\ntimout = \"5s\"\n",
            8,
            "unknown field `timout`",
        ),
        (
            "unknown key in a matrix",
            "[[matrix]]\nname = \"m{item}\"\nitem = [\"a\"]\n",
            7,
            "unknown field `item`",
        ),
        (
            "unknown key in defaults",
            "[defaults]\nretries = 2\n",
            6,
            "unknown field `retries`",
        ),
        (
            "unknown key in requires",
            "[[task]]\nname = \"b\"\ncommand = [\"x\"]\nrequires = { label = { os = \"linux\" } }\n",
            8,
            "unknown field `label`",
        ),
        (
            "empty command",
            "[[task]]\nname = \"b\"\ncommand = []\n",
            7,
            "command is empty: give at least the program",
        ),
        (
            "empty program",
            "[[task]]\nname = \"b\"\ncommand = [\"\", \"x\"]\n",
            7,
            "the program (the first element of command) is empty",
        ),
        (
            "command not an array",
            "[[task]]\nname = \"b\"\ncommand = \"cargo test\"\n",
            7,
            r#"command must be an array of strings, like ["cargo", "test"]; to run it through a shell, use ["sh", "-c", "cargo test"]"#,
        ),
        (
            "command element not a string",
            "[[task]]\nname = \"b\"\ncommand = [\"x\",\n  3]\n",
            8,
            "invalid type: integer `3`, expected a string",
        ),
        (
            "command of the wrong type",
            "[[task]]\nname = \"b\"\ncommand = 3\n",
            7,
            r#"expected an array of strings, like ["cargo", "test"]"#,
        ),
        (
            "task without a command",
            "[[task]]\nname = \"b\"\n",
            5,
            r#"task "b" has no command"#,
        ),
        (
            "task without a name",
            "\n[[task]]\ncommand = [\"x\"]\n",
            6,
            "[[task]] entry has no name",
        ),
        (
            "empty name",
            "[[task]]\nname = \" \"\ncommand = [\"x\"]\n",
            6,
            "task name is empty",
        ),
        (
            "bad duration",
            "[[task]]\nname = \"b\"\ncommand = [\"x\"]\ntimeout = \"5min\"\n",
            8,
            r#"bad duration "5min": unknown unit "min"; use h, m, s or ms"#,
        ),
        (
            "bad duration in defaults, even when unused",
            "[defaults]\ntimeout = \"10 minutes\"\n",
            6,
            r#"bad duration "10 minutes": use a number with a unit"#,
        ),
        (
            "zero timeout",
            "[[task]]\nname = \"b\"\ncommand = [\"x\"]\ntimeout = \"0s\"\n",
            8,
            "timeout must be more than zero",
        ),
        (
            "timeout past the limit",
            "[[task]]\nname = \"b\"\ncommand = [\"x\"]\ntimeout = \"999h\"\n",
            8,
            "timeout is too long (at most 30 days)",
        ),
        (
            "negative timeout",
            "[[task]]\nname = \"b\"\ncommand = [\"x\"]\ntimeout = -5\n",
            8,
            "timeout must be a positive number of seconds, not -5",
        ),
        (
            "fractional timeout",
            "[[task]]\nname = \"b\"\ncommand = [\"x\"]\ntimeout = 1.5\n",
            8,
            r#"expected a duration like "300s" or "5m", or a whole number of seconds"#,
        ),
        (
            "negative max_retries",
            "[[task]]\nname = \"b\"\ncommand = [\"x\"]\nmax_retries = -1\n",
            8,
            "max_retries must be 0 or more, not -1",
        ),
        (
            "negative flaky_retries in defaults",
            "[defaults]\nflaky_retries = -2\n",
            6,
            "flaky_retries must be 0 or more, not -2",
        ),
        (
            "huge timeout_retries",
            "[[task]]\nname = \"b\"\ncommand = [\"x\"]\ntimeout_retries = 5000000000\n",
            8,
            "timeout_retries 5000000000 is too large (at most 100)",
        ),
        (
            // Accepted before it was bounded: the u32 overflowed DuckDB's INTEGER column on
            // every replica.
            "flaky_retries past the limit",
            "[[task]]\nname = \"b\"\ncommand = [\"x\"]\nflaky_retries = 4294967295\n",
            8,
            "flaky_retries 4294967295 is too large (at most 100)",
        ),
        (
            "retries as a string",
            "[[task]]\nname = \"b\"\ncommand = [\"x\"]\nmax_retries = \"3\"\n",
            8,
            "invalid type: string \"3\", expected a whole number, without quotes",
        ),
        (
            "priority out of range",
            "[[task]]\nname = \"b\"\ncommand = [\"x\"]\npriority = 3000000000\n",
            8,
            "priority 3000000000 is out of range",
        ),
        (
            "env value not a string",
            "[[task]]\nname = \"b\"\ncommand = [\"x\"]\nenv = { N = 1 }\n",
            8,
            "invalid type: integer `1`, expected a string",
        ),
        (
            "env name with =",
            "[[task]]\nname = \"b\"\ncommand = [\"x\"]\nenv = { \"A=B\" = \"1\" }\n",
            8,
            r#"bad env variable name "A=B""#,
        ),
        (
            "bad capability",
            "[[task]]\nname = \"b\"\ncommand = [\"x\"]\nrequires = { capabilities = [\"webgpu\",\n \"gpu = discrete\"] }\n",
            9,
            r#"bad capability "gpu = discrete""#,
        ),
        (
            "both items and items_file",
            "[[matrix]]\nname = \"m{item}\"\ncommand = [\"x\"]\nitems = [\"a\"]\nitems_file = \"l.txt\"\n",
            9,
            "a [[matrix]] takes either items or items_file, not both",
        ),
        (
            "neither items nor items_file",
            "[[matrix]]\nname = \"m{item}\"\ncommand = [\"x\"]\n",
            5,
            r#"a [[matrix]] needs items = ["..."] or items_file = "...""#,
        ),
        (
            "empty items",
            "[[matrix]]\nname = \"m{item}\"\ncommand = [\"x\"]\nitems = []\n",
            8,
            "items is empty",
        ),
        (
            "empty item",
            "[[matrix]]\nname = \"m{item}\"\ncommand = [\"x\"]\nitems = [\"a\",\n\"\"]\n",
            9,
            "an item is empty",
        ),
        (
            "items in a task",
            "[[task]]\nname = \"b\"\ncommand = [\"x\"]\nitems = [\"a\"]\n",
            8,
            "items belongs in a [[matrix]] entry, not in [[task]]",
        ),
        (
            "items_file in defaults",
            "[defaults]\nitems_file = \"l.txt\"\n",
            6,
            "items_file belongs in a [[matrix]] entry, not in [defaults]",
        ),
        (
            "duplicate task names",
            "[[task]]\nname = \"ok\"\ncommand = [\"x\"]\n",
            6,
            r#"duplicate task name "ok" (first used on line 3)"#,
        ),
        (
            "a matrix task named like an earlier task",
            "[[matrix]]\nname = \"{item}\"\ncommand = [\"x\"]\nitems = [\"new\", \"ok\"]\n",
            6,
            r#"duplicate task name "ok" (first used on line 3)"#,
        ),
        (
            "a matrix whose names do not vary",
            "[[matrix]]\nname = \"unit\"\ncommand = [\"x\"]\nitems = [\"a\", \"b\"]\n",
            6,
            "put {item} or {index} in a [[matrix]] name",
        ),
        (
            "malformed: unclosed string",
            "[[task]]\nname = \"b\ncommand = [\"x\"]\n",
            6,
            "invalid basic string",
        ),
        (
            "malformed: missing =",
            "[[task]]\nname \"b\"\n",
            6,
            "expected `=`",
        ),
        (
            "malformed: key given twice",
            "[[task]]\nname = \"b\"\nname = \"c\"\ncommand = [\"x\"]\n",
            7,
            "duplicate key `name`",
        ),
        (
            "malformed: unclosed array at the end",
            "[[task]]\nname = \"b\"\ncommand = [\"x\",",
            7,
            "",
        ),
    ];
    for (what, tail, line, needle) in cases {
        let text = format!("{HEAD}{tail}");
        let error = match parse(&text, Path::new("plan.toml")) {
            Ok(_) => panic!("{what}: should be refused"),
            Err(e) => e,
        };
        let shown = error.to_string();
        assert_eq!(error.line(), Some(*line), "{what}: wrong line in {shown:?}");
        assert!(
            shown.starts_with(&format!("plan.toml:{line}:")),
            "{what}: not located: {shown:?}"
        );
        assert!(shown.contains(needle), "{what}: {shown:?} lacks {needle:?}");
        assert!(!shown.contains('\n'), "{what}: one line please: {shown:?}");
    }
}

#[test]
fn an_unknown_top_level_key_is_refused() {
    assert_error(
        &format!("name = \"s\"\nversion = 2\n{}", &HEAD[11..]),
        2,
        "unknown field `version`, expected one of `name`, `defaults`, `task`, `matrix`",
    );
    // `[[tasks]]` for `[[task]]` is the likely slip.
    assert_error("[[tasks]]\nname = \"t\"\n", 1, "unknown field `tasks`");
}

#[test]
fn the_plan_name_must_not_be_empty() {
    assert_error(
        "name = \"\"\n[[task]]\nname = \"t\"\ncommand = [\"x\"]\n",
        1,
        "the plan's name is empty",
    );
}

#[test]
fn an_error_points_at_the_column_of_the_value() {
    let error = parse_err("[[task]]\nname = \"t\"\n  command = []\n");
    assert_eq!(error.to_string().split(": ").next(), Some("plan.toml:3:13"));
}

#[test]
fn a_plan_without_tasks_is_refused() {
    for text in ["", "name = \"s\"\n", "[defaults]\ntimeout = \"5s\"\n"] {
        let error = parse_err(text);
        assert_eq!(error.line(), None, "{error}");
        assert_eq!(
            error.to_string(),
            "plan.toml: the plan has no tasks: add a [[task]] or a [[matrix]] entry"
        );
    }
}

#[test]
fn a_missing_plan_file_is_a_read_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.toml");
    let error = load(&path).unwrap_err();
    assert!(matches!(error, PlanError::Read { .. }));
    assert_eq!(
        error.to_string(),
        format!(
            "{}: cannot read plan file: No such file or directory",
            path.display()
        )
    );
}

#[test]
fn parse_duration_reads_numbers_with_units() {
    let ok: &[(&str, u64)] = &[
        ("250ms", 250),
        ("0s", 0),
        ("30s", 30_000),
        ("300s", 300_000),
        ("5m", 300_000),
        ("1h", 3_600_000),
        ("1h30m", 5_400_000),
        ("2h0m15s", 7_215_000),
        ("1m30s500ms", 90_500),
        ("007s", 7_000),
    ];
    for (text, ms) in ok {
        assert_eq!(
            parse_duration(text),
            Ok(Duration::from_millis(*ms)),
            "{text}"
        );
    }
    let hint = r#"use a number with a unit, like "300s", "5m" or "1h30m""#;
    let order = r#"give each unit once, largest first, like "1h30m""#;
    let bad: &[(&str, &str)] = &[
        ("", hint),
        ("300", hint),
        ("5 minutes", hint),
        (" 5s", hint),
        ("5s ", hint),
        ("-5s", hint),
        ("1.5h", hint),
        ("s", hint),
        ("5m3", hint),
        ("5min", r#"unknown unit "min"; use h, m, s or ms"#),
        ("5S", r#"unknown unit "S"; use h, m, s or ms"#),
        ("2d", r#"unknown unit "d"; use h, m, s or ms"#),
        ("30m1h", order),
        ("1m1m", order),
        ("99999999999999999999s", "too long"),
        ("9999999999999999h", "too long"),
        ("5ü", hint),
    ];
    for (text, why) in bad {
        assert_eq!(
            parse_duration(text),
            Err(format!("bad duration {text:?}: {why}")),
            "{text}"
        );
    }
}

#[test]
fn positions_count_lines_and_characters() {
    let text = "ab\nçé = 1\n";
    assert_eq!(position(text, 0), Position { line: 1, column: 1 });
    assert_eq!(position(text, 3), Position { line: 2, column: 1 });
    // 'ç' and 'é' are two bytes each; byte 7 is the space after them.
    assert_eq!(position(text, 7), Position { line: 2, column: 3 });
    // Inside a character, or past the end: clamped, never a panic.
    assert_eq!(position(text, 4), Position { line: 2, column: 1 });
    assert_eq!(position(text, 999), Position { line: 3, column: 1 });
}

/// Every prefix of a full plan, and seeded single-character mutations of it, either parse or
/// give a one-line error; none panics.
#[test]
fn no_input_makes_it_panic() {
    let full = r#"name = "s"
[defaults]
timeout = "1h30m"
env = { A = "ü{index}" }
[[task]]
name = "t"
command = ["sh", "-c", "true"]
priority = -1
requires = { labels = { os = "linux" }, capabilities = ["gpu=discrete"] }
[[matrix]]
name = "m-{item}"
command = ["{item}"]
items = ["a", "b"]
timeout = 30
"#;
    let check = |text: &str| {
        if let Err(e) = parse(text, Path::new("plan.toml")) {
            assert!(!e.to_string().contains('\n'), "{e:?}");
        }
    };
    for (end, _) in full.char_indices() {
        check(&full[..end]);
    }
    let replacements = [
        '"', '[', ']', '{', '}', '=', '\n', '#', '-', '0', 'x', ',', 'é', '\'',
    ];
    let chars: Vec<char> = full.chars().collect();
    let mut seed: u64 = 0x5eed;
    for _ in 0..3000 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let at = (seed >> 33) as usize % chars.len();
        let with = replacements[(seed >> 17) as usize % replacements.len()];
        let mut mutated = chars.clone();
        mutated[at] = with;
        check(&mutated.into_iter().collect::<String>());
    }
}

#[test]
fn the_plans_in_the_readme_and_examples_parse() {
    let readme = include_str!("../../README.md");
    let start = readme
        .find("```toml\nname = ")
        .expect("the README shows a plan");
    let body = &readme[start + "```toml\n".len()..];
    let plan = &body[..body.find("```").expect("the block ends")];
    let parsed = parse(plan, Path::new("README.md")).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<&str> = parsed.tasks.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "unit",
            "webgpu-conformance",
            "known-flaky",
            "pytest-tests/test_a.py",
            "pytest-tests/test_b.py"
        ]
    );
    assert_eq!(
        parsed.tasks[1].capabilities,
        ["webgpu", "browser.chromium", "gpu_buffer_mb>=128"]
    );
    let flaky = &parsed.tasks[2];
    assert_eq!((flaky.flaky_retries, flaky.max_retries), (2, 3));
    let example = include_str!("../../examples/plan.toml");
    parse(example, Path::new("examples/plan.toml")).unwrap_or_else(|e| panic!("{e}"));
}
