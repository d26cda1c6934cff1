//! Bad input: a clear message that says what and how to fix, and a non-zero exit.

use std::{net::TcpListener, process::Command};

use crate::support::{BINARY, config_file, path_str, privileged};

fn run(args: &[&str]) -> (bool, String) {
    let out = Command::new(BINARY).args(args).env_remove("RUST_LOG").output().expect("run kernsight");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn unknown_config_key_is_named_with_its_line() {
    let (_dir, file) = config_file("[metrics]\nlisten = \"127.0.0.1:0\"\n\n[syscalls]\nlatency = true\n");
    let (ok, stderr) = run(&["run", "--config", path_str(&file)]);
    assert!(!ok);
    assert!(stderr.contains("unknown field `latency`"), "{stderr}");
    assert!(stderr.contains("line 5"), "{stderr}");
    assert!(stderr.contains("latency_histogram"), "lists the valid keys: {stderr}");
    assert!(stderr.contains(path_str(&file)), "{stderr}");
}

#[test]
fn missing_config_file_says_which() {
    let (ok, stderr) = run(&["run", "--config", "/nonexistent/kernsight.toml"]);
    assert!(!ok);
    assert!(stderr.contains("cannot read config file /nonexistent/kernsight.toml"), "{stderr}");
}

#[test]
fn port_in_use_is_a_clear_error() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let (ok, stderr) = run(&["run", "--listen", &address]);
    assert!(!ok);
    assert!(stderr.contains(&format!("cannot listen on {address}")), "{stderr}");
    assert!(stderr.contains("--listen"), "says how to fix it: {stderr}");
}

#[test]
fn missing_privileges_are_named() {
    let dropped: Vec<&str> = if privileged() {
        // Root with an empty bounding set: no capability survives the exec.
        vec![
            "setpriv",
            "--bounding-set",
            "-all",
            "--inh-caps",
            "-all",
            "--ambient-caps",
            "-all",
            "--",
            BINARY,
        ]
    } else {
        vec![BINARY]
    };
    let out = Command::new(dropped[0])
        .args(&dropped[1..])
        .args(["run", "--listen", "127.0.0.1:0"])
        .output()
        .expect("setpriv (util-linux)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("CAP_BPF and CAP_PERFMON"), "{stderr}");
    assert!(stderr.contains("run kernsight as root"), "{stderr}");
}
