//! `iotpipe rules check` and `iotpipe rules test` as the contract describes them.

use std::process::{Command, Output};

fn iotpipe(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_iotpipe")).args(args).output().expect("the binary runs")
}

const SQL: &str =
    r#"SELECT temperature AS t, deviceName() AS dn FROM "/a1demo/+/user/update" WHERE temperature > 38"#;

fn test_args(payload: &str) -> Vec<&str> {
    vec![
        "rules",
        "test",
        "--sql",
        SQL,
        "--topic",
        "/a1demo/dev1/user/update",
        "--payload",
        payload,
        "--device-name",
        "dev1",
    ]
}

#[test]
fn rules_test_acceptance() {
    let out = iotpipe(&test_args(r#"{"temperature":40}"#));
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "{\"t\":40,\"dn\":\"dev1\"}\n");

    let out = iotpipe(&test_args(r#"{"temperature":30}"#));
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "no match\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("WHERE"));
}

#[test]
fn rules_test_errors_exit_1_with_a_position() {
    let out = iotpipe(&[
        "rules",
        "test",
        "--sql",
        "SELECT order FROM \"/a/+\"",
        "--topic",
        "/a/b",
        "--payload",
        "{}",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("<sql>:1:8:") && err.contains("\"order\""), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");

    let out = iotpipe(&[
        "rules",
        "test",
        "--sql",
        "SELECT 1 / a AS x FROM \"/a/+\"",
        "--topic",
        "/a/b",
        "--payload",
        "{\"a\":0}",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("division by zero"));

    let out = iotpipe(&[
        "rules",
        "test",
        "--sql",
        "SELECT 1 AS x FROM \"/a/+\"",
        "--topic",
        "/b/c",
        "--payload",
        "{}",
    ]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not match"));
}

#[test]
fn rules_check_reports_every_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("good.sql"), "SELECT a FROM \"/a/+\"").unwrap();
    std::fs::write(dir.path().join("bad.sql"), "-- acton: amqp G\nSELECT a FROM \"/a/+\" WHERE nope(a)")
        .unwrap();
    let out = iotpipe(&["rules", "check", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let bad = dir.path().join("bad.sql").display().to_string();
    assert!(err.contains(&format!("{bad}:1:4: unknown header key")), "{err}");
    assert!(err.contains(&format!("{bad}:2:28: unknown function nope()")), "{err}");

    let out = iotpipe(&["rules", "check", dir.path().join("good.sql").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/rules/examples");
    let out = iotpipe(&["rules", "check", examples, concat!(env!("CARGO_MANIFEST_DIR"), "/rules")]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}
