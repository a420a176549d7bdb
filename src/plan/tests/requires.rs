//! The typed requirements: what each becomes, how entries override `[defaults]`, and what
//! each wrong value is told.

use super::*;

fn capabilities_of(text: &str) -> Vec<Vec<String>> {
    parse_ok(text)
        .tasks
        .into_iter()
        .map(|t| t.capabilities)
        .collect()
}

#[test]
fn each_typed_requirement_becomes_its_expression() {
    let plan = r#"
[[task]]
name = "all"
command = ["true"]
requires = { webgpu = true, webnn = true, gpu_type = "Discrete", browser = "chromium", min_memory_gb = 8, min_gpu_buffer_mb = 1024, capabilities = ["fpga", "webgpu"], labels = { pool = "ml" } }
[[task]]
name = "half-a-gig"
command = ["true"]
requires = { min_memory_gb = 0.5, webgpu = false }
"#;
    assert_eq!(
        capabilities_of(plan),
        [
            vec![
                "fpga",
                "webgpu",
                "webnn",
                "gpu_type=discrete",
                "browser.chromium",
                "memory_gb>=8",
                "gpu_buffer_mb>=1024",
            ],
            vec!["memory_gb>=0.5"],
        ]
    );
    assert_eq!(parse_ok(plan).tasks[0].labels, map(&[("pool", "ml")]));
}

#[test]
fn an_entry_overrides_the_defaults_key_by_key() {
    let plan = r#"
[defaults]
requires = { webgpu = true, browser = "chromium", min_memory_gb = 4 }
[[task]]
name = "inherits"
command = ["true"]
[[task]]
name = "overrides"
command = ["true"]
requires = { webgpu = false, browser = "firefox" }
"#;
    assert_eq!(
        capabilities_of(plan),
        [
            vec!["webgpu", "browser.chromium", "memory_gb>=4"],
            vec!["browser.firefox", "memory_gb>=4"],
        ]
    );
}

#[test]
fn wrong_values_are_told_what_to_write() {
    let with = |requires: &str| {
        format!("[[task]]\nname = \"t\"\ncommand = [\"true\"]\nrequires = {{ {requires} }}\n")
    };
    let cases = [
        (
            r#"gpu_type = "fast""#,
            r#"gpu_type "fast" is not one of "discrete", "integrated", "virtual", "other", "cpu""#,
        ),
        (
            r#"browser = "safari""#,
            r#"browser "safari" is not one of "chromium", "chrome", "edge", "firefox""#,
        ),
        (
            "min_memory_gb = 0",
            "min_memory_gb must be a number of GB above 0",
        ),
        ("min_memory_gb = -2.5", "not -2.5"),
        (
            "min_gpu_buffer_mb = 0",
            "min_gpu_buffer_mb must be a whole number of MiB from 1",
        ),
        ("min_gpu_buffer_mb = 1.5", "a whole number"),
        (r#"webgpu = "yes""#, "invalid type"),
        ("gpu = true", "unknown field `gpu`"),
    ];
    for (requires, needle) in cases {
        assert_error(&with(requires), 4, needle);
    }
}
