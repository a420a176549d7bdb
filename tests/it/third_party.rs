//! A test suite this project did not write — toolz's own tests, as installed from PyPI — runs
//! through `testfleet run` on three workers, one task per test file; each file's outcome must
//! match a direct pytest run. The test finds a Python with pytest and toolz, or makes one (a
//! virtual environment in Cargo's scratch directory, packages from PyPI), so the README's test
//! command needs nothing installed by hand beyond `python3`.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use crate::support::local_cluster;
use testfleet::auth::Role;

use super::support::{WorkerProcess, binary, token_file};

/// The versions the tests run with: toolz's and pyflakes' suites (`pytest_kill`), and pytest.
const PACKAGES: [&str; 3] = ["pytest==9.2.0", "toolz==1.2.0", "pyflakes==4.1.0"];

/// A Python interpreter that imports pytest, toolz and pyflakes: `python3` if it does, else one this test
/// provisions once under Cargo's scratch directory (a virtual environment, or a `--target`
/// package directory where `venv` is not installed).
pub(crate) fn python() -> &'static (String, Option<String>) {
    static PYTHON: std::sync::OnceLock<(String, Option<String>)> = std::sync::OnceLock::new();
    PYTHON.get_or_init(|| {
        let imports = |python: &str, path: Option<&str>| {
            let mut command = Command::new(python);
            command.args(["-c", "import pytest, toolz, pyflakes"]);
            if let Some(path) = path {
                command.env("PYTHONPATH", path);
            }
            command.output().is_ok_and(|o| o.status.success())
        };
        if imports("python3", None) {
            return ("python3".to_string(), None);
        }
        let scratch = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
        let venv = scratch.join("py-venv");
        let venv_python = venv.join("bin/python3").display().to_string();
        if imports(&venv_python, None) {
            return (venv_python, None);
        }
        let made = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .expect("python3 must be installed to run toolz's tests")
            .success();
        if made {
            pip(&venv_python, &[]);
            return (venv_python, None);
        }
        // No venv module (Debian without python3-venv): packages into a directory of their own.
        let target = scratch.join("py-packages").display().to_string();
        if !imports("python3", Some(&target)) {
            pip("python3", &["--target", &target]);
        }
        ("python3".to_string(), Some(target))
    })
}

/// `python -m pip install` of [`PACKAGES`] from PyPI, with `extra` arguments.
fn pip(python: &str, extra: &[&str]) {
    let out = Command::new(python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(extra)
        .args(PACKAGES)
        .output()
        .expect("run pip");
    assert!(
        out.status.success(),
        "cannot install {PACKAGES:?} from PyPI for toolz's tests: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `python` with the provisioned package directory, if any, on its path.
pub(crate) fn python_command() -> Command {
    let (python, path) = python();
    let mut command = Command::new(python);
    if let Some(path) = path {
        command.env("PYTHONPATH", path);
    }
    command
}

fn toolz_tests() -> Vec<String> {
    let out = python_command()
        .args([
            "-c",
            "import os, toolz, pytest; d = os.path.join(os.path.dirname(toolz.__file__), 'tests'); \
             print('\\n'.join(sorted(os.path.join(d, f) for f in os.listdir(d) \
             if f.startswith('test_') and f.endswith('.py'))))",
        ])
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "cannot list toolz's tests: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn pytest(file: &str) -> &'static str {
    let status = python_command()
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", file])
        .output()
        .expect("run pytest")
        .status;
    if status.success() { "passed" } else { "failed" }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn toolz_test_files_give_the_same_outcomes_through_testfleet() {
    let files = toolz_tests();
    assert!(
        files.len() >= 10,
        "expected toolz's test modules, found {files:?}"
    );
    let dir = super::support::test_dir();
    std::fs::write(dir.path().join("files.txt"), files.join("\n")).unwrap();
    let (python, path) = python();
    let env = match path {
        Some(path) => format!("env = {{ PYTHONPATH = {path:?} }}\n"),
        None => String::new(),
    };
    std::fs::write(
        dir.path().join("plan.toml"),
        format!(
            r#"name = "toolz"
[defaults]
timeout = "5m"
{env}[[matrix]]
name = "{{item}}"
command = [{python:?}, "-m", "pytest", "-q", "-p", "no:cacheprovider", "{{item}}"]
items_file = "files.txt"
"#
        ),
    )
    .unwrap();

    let cluster = local_cluster(3, dir.path(), &[]);
    cluster.leader(Duration::from_secs(60), None).await.unwrap();
    let addrs = cluster
        .addresses()
        .into_values()
        .collect::<Vec<_>>()
        .join(",");
    let _workers: Vec<WorkerProcess> = (1..=3)
        .map(|i| WorkerProcess::start(&addrs, &format!("py{i}"), 2, dir.path()))
        .collect();
    let plan = dir.path().join("plan.toml");
    let run = tokio::task::spawn_blocking({
        let addrs = addrs.clone();
        move || {
            Command::new(binary())
                .env("TESTFLEET_TOKEN_FILE", token_file(Role::Operator))
                .args([
                    "run",
                    plan.to_str().unwrap(),
                    "--coordinator",
                    &addrs,
                    "-o",
                    "json",
                ])
                .output()
                .expect("run testfleet run")
        }
    })
    .await
    .unwrap();
    let summary: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap_or_else(|e| {
        panic!(
            "testfleet run printed no JSON ({e}); stderr:\n{}",
            String::from_utf8_lossy(&run.stderr)
        )
    });
    let through_testfleet: BTreeMap<String, String> = summary["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_string(),
                t["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let direct: BTreeMap<String, String> = files
        .iter()
        .map(|f| (f.clone(), pytest(f).to_string()))
        .collect();
    assert_eq!(through_testfleet, direct);
    let workers: std::collections::BTreeSet<&str> = summary["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["worker_id"].as_str())
        .collect();
    assert!(
        workers.len() >= 2,
        "the files should spread over the workers: {workers:?}"
    );
    let expected_code = if direct.values().all(|s| s == "passed") {
        0
    } else {
        1
    };
    assert_eq!(run.status.code(), Some(expected_code));
}
