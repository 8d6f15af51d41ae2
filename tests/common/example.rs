//! The examples' binaries, built by cargo for the tests that run them as a user would.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, PoisonError};

/// Builds the example `name` (once per test binary) and returns its path.
pub fn binary(name: &str) -> PathBuf {
    binary_with(name, &[])
}

/// [`binary`] with these cargo arguments too (`["--features", "redis"]`).
pub fn binary_with(name: &str, cargo_args: &[&str]) -> PathBuf {
    static BUILT: Mutex<Vec<(String, PathBuf)>> = Mutex::new(Vec::new());
    // Held while building, so that parallel tests build each example once.
    let mut built = BUILT.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((_, path)) = built.iter().find(|(built, _)| built == name) {
        return path.clone();
    }
    let path = build(name, cargo_args);
    built.push((name.to_owned(), path.clone()));
    path
}

/// `cargo`, without the variables Cargo gives a test about the package under test
/// (`CARGO_MANIFEST_DIR`, `CARGO_PKG_NAME`, ...): passed on, they would describe the wrong
/// package to a nested build, and some build scripts (ring's) rebuild when one of them
/// changes, which would rebuild half the dependencies on every run, and again for the next
/// plain `cargo build`.
pub fn cargo() -> Command {
    let mut cargo = Command::new(env!("CARGO"));
    for (variable, _) in std::env::vars_os() {
        let Some(variable) = variable.to_str() else {
            continue;
        };
        let set_for_tests = ["CARGO_PKG_", "CARGO_BIN_EXE_", "CARGO_MANIFEST_"]
            .iter()
            .any(|prefix| variable.starts_with(prefix))
            || [
                "CARGO_CRATE_NAME",
                "CARGO_BIN_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "CARGO_RUSTC_CURRENT_DIR",
            ]
            .contains(&variable);
        if set_for_tests {
            cargo.env_remove(variable);
        }
    }
    cargo
}

fn build(name: &str, cargo_args: &[&str]) -> PathBuf {
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let mut cargo = cargo();
    let output = cargo
        .args(["build", "--example", name, "--manifest-path", manifest])
        .args(cargo_args)
        .args(["--message-format", "json-render-diagnostics"])
        .stderr(Stdio::inherit())
        .output()
        .expect("run cargo build");
    assert!(
        output.status.success(),
        "cargo build --example {name} failed"
    );
    // Cargo says where it put the binary; a `target-dir` in a config file counts too.
    let reported = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|msg| msg["reason"] == "compiler-artifact")
        .filter(|msg| msg["target"]["name"] == name)
        .find_map(|msg| msg["executable"].as_str().map(PathBuf::from));
    let binary = reported.unwrap_or_else(|| {
        let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).join("target"),
            |dir| Path::new(env!("CARGO_MANIFEST_DIR")).join(dir),
        );
        target
            .join("debug/examples")
            .join(format!("{name}{}", std::env::consts::EXE_SUFFIX))
    });
    assert!(binary.is_file(), "no binary at {}", binary.display());
    binary
}
