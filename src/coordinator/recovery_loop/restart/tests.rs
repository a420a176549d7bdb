//! Restart commands: hostile values through a real `sh`, the timeout, and cancellation with
//! the leadership.

use std::path::Path;
use std::time::{Duration, Instant};

use super::*;
use crate::recovery::restart::{check_template, render};

/// Values a worker could send in its hello, each trying to run `touch MARKER`.
fn hostile_values(marker: &Path) -> Vec<String> {
    let m = marker.display();
    vec![
        format!("$(touch {m})"),
        format!("`touch {m}`"),
        format!("x; touch {m}"),
        format!("x && touch {m} #"),
        format!("x | touch {m}"),
        format!("'; touch {m}; echo '"),
        format!("\"; touch {m}; echo \""),
        format!("a\nb\ntouch {m}"),
        format!("\\'$(touch {m})\\'"),
        format!("x' '$(touch {m})"),
        format!("${{IFS}}touch${{IFS}}{m}"),
        format!("x > {m}"),
        "*".to_string(),
        "~".to_string(),
        "a  b\tc".to_string(),
        String::new(),
        "ünïcödé 'q' \"d\" \\ $ ` ! # & | ; < > ( ) { } [ ]".to_string(),
    ]
}

#[tokio::test]
async fn hostile_names_and_hosts_arrive_as_exactly_one_argument_each() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("marker");
    let out = dir.path().join("argv");
    // The command writes its argument count and each argument, NUL-terminated, to a file.
    let template = format!(
        "sh -c 'printf \"%s\\0\" \"$#\" \"$@\" > {}' _ {{worker}} {{host}}",
        out.display()
    );
    check_template(&template).unwrap();
    let never = CancellationToken::new();
    for value in hostile_values(&marker) {
        let _ = std::fs::remove_file(&out);
        let command = render(&template, |name| match name {
            "worker" => format!("w-{value}"),
            _ => value.clone(),
        })
        .unwrap();
        let ran = run(&command, Duration::from_secs(10), &never).await;
        assert!(
            matches!(
                ran,
                Ran::Finished {
                    exit_code: Some(0),
                    ..
                }
            ),
            "{value:?}: {ran:?}"
        );
        let written = std::fs::read(&out).unwrap_or_else(|e| panic!("{value:?}: no output: {e}"));
        let expected = format!("2\0w-{value}\0{value}\0");
        assert_eq!(
            String::from_utf8_lossy(&written),
            expected,
            "the arguments of {value:?}"
        );
        assert!(!marker.exists(), "{value:?} ran code");
    }
}

#[tokio::test]
async fn a_command_past_its_limit_is_killed() {
    let never = CancellationToken::new();
    let started = Instant::now();
    let ran = run("sleep 30", Duration::from_millis(300), &never).await;
    assert!(started.elapsed() < Duration::from_secs(10));
    match ran {
        Ran::Finished {
            exit_code: None,
            output_tail,
        } => assert!(output_tail.contains("was killed"), "{output_tail}"),
        other => panic!("expected a killed command, got {other:?}"),
    }
}

/// True once `pid` has exited (gone, or a zombie waiting for its parent).
fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[tokio::test]
async fn cancelling_kills_the_command_and_its_children() {
    let dir = tempfile::tempdir().unwrap();
    let shell_pid = dir.path().join("shell.pid");
    let child_pid = dir.path().join("child.pid");
    let command = format!(
        "echo $$ > {}.tmp && mv {0}.tmp {0}; sleep 60 & echo $! > {}.tmp && mv {1}.tmp {1}; wait",
        shell_pid.display(),
        child_pid.display()
    );
    let cancel = CancellationToken::new();
    let running = tokio::spawn({
        let cancel = cancel.clone();
        async move { run(&command, Duration::from_secs(120), &cancel).await }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let (shell, child) = loop {
        if let (Some(s), Some(c)) = (read_pid(&shell_pid), read_pid(&child_pid)) {
            break (s, c);
        }
        assert!(Instant::now() < deadline, "the command never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(!exited(shell) && !exited(child));
    cancel.cancel();
    let ran = tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("run returns soon after the cancel")
        .unwrap();
    assert_eq!(ran, Ran::Cancelled);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(exited(shell) && exited(child)) {
        assert!(
            Instant::now() < deadline,
            "the restart command's processes outlived the cancel"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
