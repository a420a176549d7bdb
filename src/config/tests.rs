//! Unit tests of configuration layering and validation.

use super::*;
use std::io::Write as _;

/// Args that point the database into `dir`, so path validation passes.
fn args_in(dir: &Path) -> CoordinatorArgs {
    CoordinatorArgs {
        db_path: Some(dir.join("state.duckdb")),
        ..CoordinatorArgs::default()
    }
}

fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("coordinator.toml");
    let mut file = fs::File::create(&path).expect("create config file");
    file.write_all(text.as_bytes()).expect("write config file");
    path
}

#[test]
fn defaults_are_the_documented_ones() {
    let dir = tempfile::tempdir().unwrap();
    let config = CoordinatorConfig::resolve(&args_in(dir.path())).unwrap();
    let expected = CoordinatorConfig {
        db_path: dir.path().join("state.duckdb"),
        ..CoordinatorConfig::default()
    };
    assert_eq!(config, expected);
    assert_eq!(config.node_id, 1);
    assert_eq!(config.listen, "127.0.0.1:8080".parse().unwrap());
    assert!(config.peers.is_empty());
    assert_eq!(
        (
            config.heartbeat_interval_ms,
            config.election_timeout_min_ms,
            config.election_timeout_max_ms
        ),
        (100, 250, 500)
    );
    assert_eq!(config.snapshot_logs_since_last, 20_000);
    assert_eq!(config.max_in_snapshot_log_to_keep, 1000);
    assert_eq!(config.duckdb_threads, 2);
    assert_eq!(config.duckdb_memory_limit, "1GB");
    assert!(!config.disable_auto_recovery);
    assert_eq!(config.data_dir(), dir.path());
    assert_eq!(config.log_path(), dir.path().join("raft-log"));
    assert_eq!(config.snapshot_dir(), dir.path().join("snapshots"));
}

#[test]
fn default_db_path_is_in_the_working_directory() {
    let config = CoordinatorConfig::default();
    assert_eq!(config.data_dir(), PathBuf::from("."));
    assert_eq!(config.log_path(), PathBuf::from("./raft-log"));
}

#[test]
fn file_overrides_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("raft");
    fs::create_dir(&data).unwrap();
    let db = dir.path().join("from-file.duckdb");
    let path = write_config(
        dir.path(),
        &format!(
            r#"
node_id = 2
listen = "0.0.0.0:9002"
auth_dir = "/etc/testfleet/auth"
db_path = "{}"
data_dir = "{}"
heartbeat_interval_ms = 50
election_timeout_min_ms = 300
election_timeout_max_ms = 600
duckdb_memory_limit = "256MB"
disable_auto_recovery = true

[peers]
1 = "127.0.0.1:9001"
2 = "127.0.0.1:9002"
"#,
            db.display(),
            data.display()
        ),
    );
    let args = CoordinatorArgs {
        config: Some(path),
        ..CoordinatorArgs::default()
    };
    let config = CoordinatorConfig::resolve(&args).unwrap();
    assert_eq!(config.node_id, 2);
    assert_eq!(config.listen, "0.0.0.0:9002".parse().unwrap());
    assert_eq!(config.db_path, db);
    assert_eq!(config.data_dir(), data);
    assert_eq!(config.log_path(), data.join("raft-log"));
    assert_eq!(config.heartbeat_interval_ms, 50);
    assert_eq!(config.election_timeout_min_ms, 300);
    assert_eq!(config.election_timeout_max_ms, 600);
    assert_eq!(config.duckdb_memory_limit, "256MB");
    assert!(config.disable_auto_recovery);
    assert_eq!(config.peers.len(), 2);
    assert_eq!(config.peers[&1], "127.0.0.1:9001");
    // Untouched keys keep their defaults.
    assert_eq!(config.duckdb_threads, 2);
    assert_eq!(config.snapshot_logs_since_last, 20_000);
}

#[test]
fn flags_and_env_override_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        r#"
node_id = 1
listen = "0.0.0.0:9001"
insecure = true
duckdb_threads = 4
disable_auto_recovery = true
[peers]
1 = "127.0.0.1:9001"
"#,
    );
    // clap fills these from a flag or, failing that, the TESTFLEET_* variable; resolve()
    // cannot tell the two apart, so one construction covers both layers.
    let args = CoordinatorArgs {
        config: Some(path),
        node_id: Some(3),
        port: Some(7003),
        peers: Some("1=127.0.0.1:7001, 2=127.0.0.1:7002 ,3=localhost:7003,".to_owned()),
        duckdb_threads: Some(1),
        disable_auto_recovery: Some(false),
        ..args_in(dir.path())
    };
    let config = CoordinatorConfig::resolve(&args).unwrap();
    assert_eq!(config.node_id, 3);
    // --port replaces only the port; the file's IP stays.
    assert_eq!(config.listen, "0.0.0.0:7003".parse().unwrap());
    assert_eq!(config.duckdb_threads, 1);
    assert!(!config.disable_auto_recovery);
    assert_eq!(
        config.peers.values().cloned().collect::<Vec<_>>(),
        ["127.0.0.1:7001", "127.0.0.1:7002", "localhost:7003"]
    );

    let args = CoordinatorArgs {
        bind: Some("::1".parse().unwrap()),
        ..args_in(dir.path())
    };
    let config = CoordinatorConfig::resolve(&args).unwrap();
    assert_eq!(config.listen, "[::1]:8080".parse().unwrap());
}

#[test]
fn clap_reads_flags_and_boolish_values() {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: CoordinatorArgs,
    }
    let cli = Cli::try_parse_from([
        "testfleet",
        "--port",
        "9000",
        "--peers",
        "1=a:1",
        "--disable-auto-recovery",
    ])
    .unwrap();
    assert_eq!(cli.args.port, Some(9000));
    assert_eq!(cli.args.peers.as_deref(), Some("1=a:1"));
    assert_eq!(cli.args.disable_auto_recovery, Some(true));
    let cli = Cli::try_parse_from(["testfleet", "--disable-auto-recovery=no"]).unwrap();
    assert_eq!(cli.args.disable_auto_recovery, Some(false));
}

#[test]
fn malformed_file_names_the_file_and_position() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "node_id = 1\nlisten = \n");
    let args = CoordinatorArgs {
        config: Some(path.clone()),
        ..args_in(dir.path())
    };
    let err = CoordinatorConfig::resolve(&args).unwrap_err();
    assert!(matches!(err, ConfigError::ParseFile { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("line 2"), "{message}");
}

#[test]
fn wrong_value_type_in_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "duckdb_threads = \"many\"\n");
    let err = CoordinatorConfig::from_file(&path).unwrap_err();
    assert!(matches!(err, ConfigError::ParseFile { .. }), "{err:?}");
}

#[test]
fn unknown_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "node_id = 1\nheartbeat_ms = 10\n");
    let err = CoordinatorConfig::from_file(&path).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("unknown field `heartbeat_ms`"),
        "{message}"
    );
    assert!(message.contains("line 2"), "{message}");
}

#[test]
fn missing_config_file_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let args = CoordinatorArgs {
        config: Some(dir.path().join("absent.toml")),
        ..args_in(dir.path())
    };
    let err = CoordinatorConfig::resolve(&args).unwrap_err();
    assert!(matches!(err, ConfigError::ReadFile { .. }), "{err:?}");
    assert!(err.to_string().contains("absent.toml"));
}

#[test]
fn peers_parse() {
    let peers = parse_peers("1=127.0.0.1:9001,2=[::1]:9002,3=node-c.example:9003").unwrap();
    assert_eq!(peers.len(), 3);
    assert_eq!(peers[&2], "[::1]:9002");
    assert!(parse_peers("").unwrap().is_empty());
    assert!(parse_peers(" , ").unwrap().is_empty());
}

#[test]
fn bad_peers_name_the_item() {
    let cases = [
        ("1=127.0.0.1:9001,2", "2", "expected `id=host:port`"),
        (
            "x=127.0.0.1:9001",
            "x=127.0.0.1:9001",
            "non-negative integer",
        ),
        (
            "-1=127.0.0.1:9001",
            "-1=127.0.0.1:9001",
            "non-negative integer",
        ),
        ("1=127.0.0.1", "1=127.0.0.1", "host:port"),
        ("1=127.0.0.1:0", "1=127.0.0.1:0", "not a port"),
        ("1=127.0.0.1:99999", "1=127.0.0.1:99999", "not a port"),
        ("1=:9001", "1=:9001", "empty host"),
        ("1=::1:9001", "1=::1:9001", "brackets"),
        ("1=a:1,1=b:2", "1=b:2", "more than once"),
    ];
    for (text, item, reason) in cases {
        match parse_peers(text) {
            Err(ConfigError::BadPeer {
                item: got,
                reason: why,
                ..
            }) => {
                assert_eq!(got, item, "{text}");
                assert!(why.contains(reason), "{text}: {why}");
            }
            other => panic!("{text}: expected BadPeer, got {other:?}"),
        }
    }
}

#[test]
fn bad_peers_flag_fails_resolve() {
    let dir = tempfile::tempdir().unwrap();
    let args = CoordinatorArgs {
        peers: Some("1=127.0.0.1:9001;2=127.0.0.1:9002".to_owned()),
        ..args_in(dir.path())
    };
    let err = CoordinatorConfig::resolve(&args).unwrap_err();
    assert!(matches!(err, ConfigError::BadPeer { .. }), "{err:?}");
}

#[test]
fn peers_must_contain_this_node() {
    let dir = tempfile::tempdir().unwrap();
    let args = CoordinatorArgs {
        node_id: Some(3),
        peers: Some("1=127.0.0.1:9001,2=127.0.0.1:9002".to_owned()),
        ..args_in(dir.path())
    };
    let err = CoordinatorConfig::resolve(&args).unwrap_err();
    assert!(
        matches!(err, ConfigError::SelfNotInPeers { node_id: 3, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("1, 2"));
}

#[test]
fn bad_peer_in_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "[peers]\n1 = \"nowhere\"\n");
    let args = CoordinatorArgs {
        config: Some(path),
        ..args_in(dir.path())
    };
    let err = CoordinatorConfig::resolve(&args).unwrap_err();
    assert!(matches!(err, ConfigError::BadPeer { .. }), "{err:?}");
}

#[test]
fn timings_must_be_ordered() {
    let dir = tempfile::tempdir().unwrap();
    for (hb, min, max) in [(500, 500, 1000), (100, 1000, 1000), (100, 900, 800)] {
        let args = CoordinatorArgs {
            heartbeat_interval_ms: Some(hb),
            election_timeout_min_ms: Some(min),
            election_timeout_max_ms: Some(max),
            ..args_in(dir.path())
        };
        let err = CoordinatorConfig::resolve(&args).unwrap_err();
        assert!(matches!(err, ConfigError::Timing { .. }), "{err:?}");
    }
}

#[test]
fn single_values_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    // Each with the config-file key and the flag the message must name.
    let cases = [
        (
            CoordinatorArgs {
                heartbeat_interval_ms: Some(0),
                ..args_in(dir.path())
            },
            "`heartbeat_interval_ms` (--heartbeat-interval-ms)",
        ),
        (
            CoordinatorArgs {
                duckdb_threads: Some(0),
                ..args_in(dir.path())
            },
            "`duckdb_threads` (--duckdb-threads)",
        ),
        (
            CoordinatorArgs {
                snapshot_logs_since_last: Some(0),
                ..args_in(dir.path())
            },
            "`snapshot_logs_since_last` (--snapshot-logs-since-last)",
        ),
        (
            CoordinatorArgs {
                duckdb_memory_limit: Some("lots".to_owned()),
                ..args_in(dir.path())
            },
            "`duckdb_memory_limit` (--duckdb-memory-limit)",
        ),
        (
            CoordinatorArgs {
                duckdb_memory_limit: Some("1GB'; DROP TABLE x; --".to_owned()),
                ..args_in(dir.path())
            },
            "`duckdb_memory_limit` (--duckdb-memory-limit)",
        ),
        (
            CoordinatorArgs {
                db_path: Some(PathBuf::new()),
                ..CoordinatorArgs::default()
            },
            "`db_path` (--db-path)",
        ),
        (
            CoordinatorArgs {
                restart_command: Some("ssh '{host}' x".to_owned()),
                ..args_in(dir.path())
            },
            "`restart_command` (--restart-command)",
        ),
    ];
    for (args, named) in cases {
        let err = CoordinatorConfig::resolve(&args).unwrap_err();
        assert!(matches!(err, ConfigError::Invalid { .. }), "{err:?}");
        assert!(err.to_string().contains(named), "{named}: {err}");
    }
    for ok in ["512MB", "1GB", "1.5 GiB", "100000bytes"] {
        assert!(validate_memory_limit(ok).is_ok(), "{ok}");
    }
}

#[test]
fn a_restart_command_that_quotes_a_placeholder_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let with = |template: &str| CoordinatorArgs {
        restart_command: Some(template.to_owned()),
        ..args_in(dir.path())
    };
    let err = CoordinatorConfig::resolve(&with("ssh '{host}' systemctl restart w")).unwrap_err();
    match err {
        ConfigError::Invalid { key, reason, .. } => {
            assert_eq!(key, "restart_command");
            assert!(
                reason.contains("{host} is inside single quotes"),
                "{reason}"
            );
        }
        other => panic!("expected an invalid restart_command, got {other:?}"),
    }
    let config = CoordinatorConfig::resolve(&with("ssh {host} systemctl restart w")).unwrap();
    assert_eq!(
        config.restart_command.as_deref(),
        Some("ssh {host} systemctl restart w")
    );
}

#[test]
fn missing_db_directory_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir");
    let args = CoordinatorArgs {
        db_path: Some(missing.join("state.duckdb")),
        ..CoordinatorArgs::default()
    };
    let err = CoordinatorConfig::resolve(&args).unwrap_err();
    match &err {
        ConfigError::DirMissing { what, dir } => {
            assert_eq!(*what, "database");
            assert_eq!(dir, &missing);
        }
        other => panic!("expected DirMissing, got {other:?}"),
    }
    assert!(err.to_string().contains("mkdir -p"));
}

#[test]
fn missing_data_directory_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let args = CoordinatorArgs {
        data_dir: Some(dir.path().join("raft")),
        ..args_in(dir.path())
    };
    let err = CoordinatorConfig::resolve(&args).unwrap_err();
    assert!(
        matches!(err, ConfigError::DirMissing { what: "data", .. }),
        "{err:?}"
    );
}

#[test]
fn db_directory_under_a_regular_file_is_unwritable() {
    // Permission bits do not stop root (CI runs as root), but no one can create a file
    // inside a regular file.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    fs::write(&file, b"not a directory").unwrap();
    let args = CoordinatorArgs {
        db_path: Some(file.join("state.duckdb")),
        ..CoordinatorArgs::default()
    };
    let err = CoordinatorConfig::resolve(&args).unwrap_err();
    assert!(
        matches!(
            err,
            ConfigError::NotADirectory {
                what: "database",
                ..
            }
        ),
        "{err:?}"
    );
    let args = CoordinatorArgs {
        db_path: Some(file.join("sub").join("state.duckdb")),
        ..CoordinatorArgs::default()
    };
    let err = CoordinatorConfig::resolve(&args).unwrap_err();
    assert!(matches!(err, ConfigError::NotADirectory { .. }), "{err:?}");
}

#[cfg(unix)]
#[test]
fn read_only_db_directory_is_reported_when_permissions_apply() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let ro = dir.path().join("read-only");
    fs::create_dir(&ro).unwrap();
    fs::set_permissions(&ro, fs::Permissions::from_mode(0o555)).unwrap();
    // Root (as on CI) writes regardless of mode bits; then there is nothing to refuse.
    let writes_anyway = fs::write(ro.join("probe"), b"").is_ok();
    let args = CoordinatorArgs {
        db_path: Some(ro.join("state.duckdb")),
        ..CoordinatorArgs::default()
    };
    let result = CoordinatorConfig::resolve(&args);
    if writes_anyway {
        assert!(result.is_ok(), "{result:?}");
    } else {
        let err = result.unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::NotWritable {
                    what: "database",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("read-only"));
    }
    fs::set_permissions(&ro, fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn db_path_that_is_a_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let args = CoordinatorArgs {
        db_path: Some(dir.path().to_owned()),
        ..CoordinatorArgs::default()
    };
    let err = CoordinatorConfig::resolve(&args).unwrap_err();
    assert!(
        matches!(err, ConfigError::DbPathIsDirectory { .. }),
        "{err:?}"
    );
}

#[test]
fn config_round_trips_through_toml() {
    let config = CoordinatorConfig {
        peers: parse_peers("1=127.0.0.1:9001,2=127.0.0.1:9002").unwrap(),
        data_dir: Some(PathBuf::from("/var/lib/testfleet")),
        ..CoordinatorConfig::default()
    };
    let text = toml::to_string(&config).unwrap();
    let back: CoordinatorConfig = toml::from_str(&text).unwrap();
    assert_eq!(back, config);
}

#[test]
fn the_original_design_spelling_names_this_node_and_lists_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let args = CoordinatorArgs {
        db_path: Some(dir.path().join("s.duckdb")),
        high_availability: true,
        coordinator_addresses: Some("localhost:8081,localhost:8082".into()),
        coordinator_id: Some("coordinator1".into()),
        port: Some(8080),
        ..CoordinatorArgs::default()
    };
    let config = CoordinatorConfig::resolve(&args).unwrap();
    assert_eq!(config.node_id, 1);
    assert_eq!(config.name.as_deref(), Some("coordinator1"));
    assert_eq!(config.listen.port(), 8080);
    // The others' ids are learned by asking them at start.
    assert!(config.peers.is_empty());
    assert_eq!(config.discover, ["localhost:8081", "localhost:8082"]);

    // Its own address in a list of all: its id is its position, its port from the list.
    let by_address = CoordinatorArgs {
        coordinator_addresses: Some("127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003".into()),
        coordinator_id: Some("127.0.0.1:7003".into()),
        port: None,
        ..args.clone()
    };
    let config = CoordinatorConfig::resolve(&by_address).unwrap();
    assert_eq!((config.node_id, config.listen.port()), (3, 7003));
    assert_eq!(config.discover.len(), 3);

    let numeric = CoordinatorArgs {
        coordinator_id: Some("9".into()),
        ..args.clone()
    };
    let config = CoordinatorConfig::resolve(&numeric).unwrap();
    assert_eq!((config.node_id, config.name), (9, None));

    let unknown = CoordinatorArgs {
        coordinator_id: Some("no spaces please".into()),
        ..args.clone()
    };
    let err = CoordinatorConfig::resolve(&unknown)
        .unwrap_err()
        .to_string();
    assert!(err.contains("for --coordinator-id:"), "{err}");

    // A bad address is named as written there.
    let bad = CoordinatorArgs {
        coordinator_addresses: Some("127.0.0.1:7001,nowhere".into()),
        coordinator_id: Some("1".into()),
        ..args_in(dir.path())
    };
    let err = CoordinatorConfig::resolve(&bad).unwrap_err().to_string();
    assert!(
        err.contains("bad peer `nowhere` in --coordinator-addresses"),
        "{err}"
    );
}

#[test]
fn coordinator_names_give_readable_stable_ids() {
    use crate::config::node_id_of;
    assert_eq!(node_id_of("coordinator1"), Some(1));
    assert_eq!(node_id_of("coord-12"), Some(12));
    assert_eq!(node_id_of("7"), Some(7));
    let east = node_id_of("east").unwrap();
    assert_eq!(node_id_of("east"), Some(east), "stable");
    assert_ne!(node_id_of("west"), Some(east));
    assert!((1 << 47..1 << 48).contains(&east), "{east}");
    for bad in ["", "0", "node0", "a b", "x/y"] {
        assert_eq!(node_id_of(bad), None, "{bad:?}");
    }
}

#[test]
fn a_joining_node_names_the_cluster_and_lists_no_peers() {
    let dir = tempfile::tempdir().unwrap();
    let args = CoordinatorArgs {
        node_id: Some(4),
        join: Some("127.0.0.1:7001, 127.0.0.1:7002".into()),
        ..args_in(dir.path())
    };
    let config = CoordinatorConfig::resolve(&args).unwrap();
    assert_eq!(
        config.join_addresses(),
        ["127.0.0.1:7001", "127.0.0.1:7002"]
    );
    let bad = CoordinatorArgs {
        join: Some("127.0.0.1:7001,nowhere".into()),
        ..args
    };
    let err = CoordinatorConfig::resolve(&bad).unwrap_err().to_string();
    assert!(
        err.contains("bad peer `nowhere` in `join` (--join)"),
        "{err}"
    );
}

#[test]
fn a_public_address_needs_credentials_or_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.duckdb");
    let public = CoordinatorConfig {
        listen: "0.0.0.0:9000".parse().unwrap(),
        db_path: db,
        ..CoordinatorConfig::default()
    };
    let e = public.validate().unwrap_err().to_string();
    for flag in ["--auth-dir", "--insecure", "testfleet auth init"] {
        assert!(e.contains(flag), "{e}");
    }
    for fixed in [
        CoordinatorConfig {
            auth_dir: Some("/etc/testfleet/auth".into()),
            ..public.clone()
        },
        CoordinatorConfig {
            insecure: true,
            ..public.clone()
        },
        CoordinatorConfig {
            listen: "127.0.0.1:9000".parse().unwrap(),
            ..public.clone()
        },
    ] {
        fixed.validate().unwrap();
    }
    let partial = CoordinatorConfig {
        tls_cert: Some("peer.pem".into()),
        ..public.clone()
    };
    let err = partial.validate().unwrap_err().to_string();
    assert!(err.contains("all three"), "{err}");
    assert!(
        err.contains("`tls_cert` is set, `tls_key` and `tls_ca` are missing"),
        "{err}"
    );
    assert!(err.contains("--tls-key"), "{err}");
    // The address is named by its key and by the flags that set it.
    assert!(e.contains("`listen`, --bind / --port"), "{e}");
}

#[test]
fn worker_timing_errors_name_the_setting_that_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let with = |heartbeat: u64, failure: u64| CoordinatorArgs {
        worker_heartbeat_interval_ms: Some(heartbeat),
        worker_failure_timeout_ms: Some(failure),
        ..args_in(dir.path())
    };
    // A zero heartbeat used to be reported as a bad worker_failure_timeout_ms.
    let err = CoordinatorConfig::resolve(&with(0, 5000)).unwrap_err();
    assert!(
        matches!(&err, ConfigError::Invalid { key, .. } if *key == "worker_heartbeat_interval_ms"),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("`worker_heartbeat_interval_ms` (--worker-heartbeat-interval-ms)"),
        "{err}"
    );
    let err = CoordinatorConfig::resolve(&with(1000, 0)).unwrap_err();
    assert!(
        matches!(&err, ConfigError::Invalid { key, .. } if *key == "worker_failure_timeout_ms"),
        "{err:?}"
    );
    // Too short a timeout says what it must exceed in the user's settings, not in the
    // detector's internal names (`suspect_after_missed` is not a setting).
    let err = CoordinatorConfig::resolve(&with(1000, 2500))
        .unwrap_err()
        .to_string();
    assert!(err.contains("more than 3 ×"), "{err}");
    assert!(err.contains("= 3000 ms"), "{err}");
    assert!(err.contains("--worker-failure-timeout-ms"), "{err}");
    assert!(!err.contains("suspect_after_missed"), "{err}");
    CoordinatorConfig::resolve(&with(1000, 3001)).unwrap();
}

#[test]
fn directory_and_peer_errors_name_key_and_flag() {
    let dir = tempfile::tempdir().unwrap();
    let missing = CoordinatorArgs {
        db_path: Some(dir.path().join("nope").join("s.duckdb")),
        ..CoordinatorArgs::default()
    };
    let err = CoordinatorConfig::resolve(&missing)
        .unwrap_err()
        .to_string();
    assert!(err.contains("(from `db_path`, --db-path)"), "{err}");
    let data = CoordinatorArgs {
        data_dir: Some(dir.path().join("nope")),
        ..args_in(dir.path())
    };
    let err = CoordinatorConfig::resolve(&data).unwrap_err().to_string();
    assert!(err.contains("(from `data_dir`, --data-dir)"), "{err}");
    let err = CoordinatorConfig::resolve(&CoordinatorArgs {
        node_id: Some(3),
        peers: Some("1=127.0.0.1:9001".to_owned()),
        ..args_in(dir.path())
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("`node_id`, --node-id"), "{err}");
    assert!(err.contains("`peers` (--peers)"), "{err}");
    let path = write_config(dir.path(), "[peers]\n1 = \"nowhere\"\n");
    let err = CoordinatorConfig::resolve(&CoordinatorArgs {
        config: Some(path),
        ..args_in(dir.path())
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("bad peer `1=nowhere` in `peers`"), "{err}");
    assert!(err.contains("under `[peers]` in the config file"), "{err}");
    for key in ["listen", "db_path", "data_dir", "heartbeat_interval_ms"] {
        let named = super::setting(key);
        assert!(named.contains(&format!("`{key}`")), "{named}");
        assert!(named.contains("--"), "{named}");
    }
}

#[test]
fn breakers_are_set_from_the_file_and_turned_off_by_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        r#"
[breakers.worker]
window = { kind = "time", span_ms = 30000 }
minimum_calls = 3
open_wait_ms = 2000

[breakers.levels.low]
max_recovery_attempts = 2
recovery_interval_ms = 1500
"#,
    );
    let args = CoordinatorArgs {
        config: Some(path.clone()),
        ..args_in(dir.path())
    };
    let config = CoordinatorConfig::resolve(&args).unwrap();
    assert!(config.breakers.enabled);
    assert_eq!(config.breakers.worker.minimum_calls, 3);
    assert_eq!(config.breakers.worker.open_wait_ms, 2000);
    assert_eq!(config.breakers.worker.half_open_trials, 3, "untouched key");
    assert_eq!(config.breakers.levels.low.recovery_interval_ms, 1500);
    assert_eq!(config.breakers.levels.high.max_recovery_attempts, 10);
    assert_eq!(config.breakers.open_requeue_rate, 2.0, "the default");
    let off = CoordinatorArgs {
        disable_circuit_breaker: Some(true),
        ..args
    };
    assert!(!CoordinatorConfig::resolve(&off).unwrap().breakers.enabled);

    let bad = write_config(
        dir.path(),
        "[breakers.worker]\nfailure_rate_threshold = 1.5\n",
    );
    let error = CoordinatorConfig::resolve(&CoordinatorArgs {
        config: Some(bad),
        ..args_in(dir.path())
    })
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("breakers.worker") && error.contains("failure_rate_threshold"),
        "{error}"
    );
    for (rate, ok) in [("0.5", true), ("0", false), ("-1", false), ("1e9", false)] {
        let file = write_config(
            dir.path(),
            &format!("[breakers]\nopen_requeue_rate = {rate}\n"),
        );
        let resolved = CoordinatorConfig::resolve(&CoordinatorArgs {
            config: Some(file),
            ..args_in(dir.path())
        });
        match resolved {
            Ok(config) => {
                assert!(ok, "{rate} accepted");
                assert_eq!(config.breakers.open_requeue_rate, 0.5);
            }
            Err(e) => {
                assert!(!ok, "{rate}: {e}");
                assert!(
                    e.to_string().contains("breakers.open_requeue_rate is"),
                    "{e}"
                );
            }
        }
    }
}

#[test]
fn the_visualization_interval_is_a_duration_of_a_second_to_a_day() {
    let dir = tempfile::tempdir().unwrap();
    let args = |interval: &str| {
        let mut args = args_in(dir.path());
        args.visualization_interval_ms =
            Some(crate::plan::parse_duration(interval).unwrap().as_millis() as u64);
        args.visualization_path = Some(dir.path().join("pictures"));
        args
    };
    let config = CoordinatorConfig::resolve(&args("5m")).unwrap();
    assert_eq!(config.visualization_interval_ms, 300_000);
    assert_eq!(config.visualization_path, Some(dir.path().join("pictures")));
    assert_eq!(
        CoordinatorConfig::resolve(&args_in(dir.path()))
            .unwrap()
            .visualization_interval_ms,
        60_000,
        "the default"
    );
    for bad in ["500ms", "25h"] {
        let error = CoordinatorConfig::resolve(&args(bad))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("visualization_interval_ms"),
            "{bad}: {error}"
        );
    }
}
