//! choir's settings through the real binary: a run with flags and environment (the outer
//! environment's main settings removed first), and the effective configuration it prints.

use std::process::{Command, Output};

use serde_json::Value;

/// Runs choir with `args` and `env` to its exit.
pub fn choir(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_choir"));
    cmd.args(args);
    for var in [
        "SFU_ANNOUNCED_IP",
        "RTC_MIN_PORT",
        "RTC_MAX_PORT",
        "CHOIR_LISTEN",
        "CHOIR_SHARDS",
        "CHOIR_CONSENT_TIMEOUT",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run choir")
}

/// `choir --print-config` with `args` and `env`.
pub fn print_config(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut all = vec!["--print-config"];
    all.extend_from_slice(args);
    choir(&all, env)
}

/// The effective configuration for `args` and `env` (which must be valid).
pub fn effective(args: &[&str], env: &[(&str, &str)]) -> Value {
    let out = print_config(args, env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}
