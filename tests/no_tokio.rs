//! README, "Feature flags": without `tokio`, "an `async fn` under the attribute gets one
//! compile error that names the feature".
//!
//! The test suite itself is built with `tokio`, and trybuild compiles its cases with the
//! suite's features, so this test writes a crate of its own that depends on `resilience` with
//! `default-features = false` and runs `cargo check` on it. Its target directory sits under
//! this build's, kept between runs: only the first run compiles the dependencies.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

const LIB: &str = r#"use resilience::retry_with_backoff;

#[retry_with_backoff(max_retries = 3)]
pub async fn fetch(image: &str) -> std::io::Result<usize> {
    Ok(image.len())
}

/// A sync function still works without `tokio`: only the `async fn` is refused.
#[retry_with_backoff(max_retries = 2)]
pub fn fetch_blocking(image: &str) -> std::io::Result<usize> {
    Ok(image.len())
}
"#;

/// Writes `contents` unless the file already holds it: an unchanged file keeps its mtime, so
/// cargo does not check the crate again for nothing, and a concurrent run reads a whole file.
fn write_if_changed(path: &Path, contents: &str) {
    if fs::read_to_string(path).ok().as_deref() != Some(contents) {
        fs::write(path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }
}

/// The fixture crate, written under this build's target directory.
fn fixture() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"));
    // `CARGO_TARGET_TMPDIR` is `<target>/tmp`: the fixture goes beside it, in `<target>`.
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target directory")
        .join("no-tokio-fixture");
    let dir = target.join("crate");
    fs::create_dir_all(dir.join("src")).expect("the fixture's directories");
    // An empty `[workspace]`: the fixture sits inside this workspace's directory but is not
    // one of its members.
    let manifest = format!(
        r#"[package]
name = "no-tokio-fixture"
version = "0.0.0"
edition = "2024"
publish = false

[dependencies]
resilience = {{ path = {workspace:?}, default-features = false }}

[workspace]
"#,
        workspace = workspace.display().to_string(),
    );
    write_if_changed(&dir.join("Cargo.toml"), &manifest);
    write_if_changed(&dir.join("src/lib.rs"), LIB);
    // The workspace's lock file pins the same versions this build uses, all downloaded
    // already, so the check runs offline. Copied once: cargo then trims it to the fixture.
    let lock = dir.join("Cargo.lock");
    if !lock.exists() {
        fs::copy(workspace.join("Cargo.lock"), &lock).expect("copy Cargo.lock");
    }
    dir
}

/// `cargo check` on the fixture, with JSON diagnostics.
fn check(dir: &Path) -> (bool, Vec<Value>, String) {
    // `--target-dir` below wins over a `CARGO_TARGET_DIR` of the workspace's.
    let mut cargo = common::example::cargo();
    let output = cargo
        .current_dir(dir)
        .args(["check", "--offline", "--quiet", "--message-format=json"])
        .arg("--manifest-path")
        .arg(dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(dir.parent().expect("the fixture's target").join("target"))
        .output()
        .expect("run cargo check");
    let messages = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-message")
        .filter(|m| {
            m["target"]["name"]
                .as_str()
                .is_some_and(|name| name.replace('-', "_") == "no_tokio_fixture")
        })
        .map(|m| m["message"].clone())
        .collect();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status.success(), messages, stderr)
}

#[test]
fn without_tokio_an_async_fn_gets_one_error_naming_the_feature() {
    let dir = fixture();
    let (success, messages, stderr) = check(&dir);
    assert!(!success, "the async fn must not compile without tokio");
    let errors: Vec<&Value> = messages
        .iter()
        .filter(|m| m["level"] == "error")
        // rustc's closing "aborting due to 1 previous error" has no span.
        .filter(|m| m["spans"].as_array().is_some_and(|s| !s.is_empty()))
        .collect();
    let rendered: Vec<&str> = messages
        .iter()
        .filter_map(|m| m["rendered"].as_str())
        .collect();
    assert_eq!(
        errors.len(),
        1,
        "exactly one error:\n{}\n{stderr}",
        rendered.join("\n")
    );
    let error = errors[0];
    let text = error["message"].as_str().unwrap_or_default();
    assert!(
        text.contains("`tokio` feature"),
        "names the feature: {}",
        error["rendered"]
    );
    // On the user's own code: the function's `async`, which the error is about, not the
    // attribute, a line of the expansion or of a dependency.
    let primary: Vec<&Value> = error["spans"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|span| span["is_primary"] == true)
        .collect();
    assert_eq!(primary.len(), 1, "{}", error["rendered"]);
    let span = primary[0];
    assert_eq!(span["file_name"], "src/lib.rs", "{}", error["rendered"]);
    assert_eq!(
        span["line_start"], span["line_end"],
        "{}",
        error["rendered"]
    );
    let line = span["line_start"].as_u64().unwrap_or_default();
    let (start, end) = (
        span["column_start"].as_u64().unwrap_or_default() as usize,
        span["column_end"].as_u64().unwrap_or_default() as usize,
    );
    let spanned = LIB
        .lines()
        .nth(line.saturating_sub(1) as usize)
        .and_then(|text| text.get(start.saturating_sub(1)..end.saturating_sub(1)));
    assert_eq!(spanned, Some("async"), "{}", error["rendered"]);
    // The note says how to fix it; the message names nothing the user did not write.
    let rendered = error["rendered"].as_str().unwrap_or_default();
    assert!(rendered.contains(r#"features = ["tokio"]"#), "{rendered}");
    for generated in ["__private", "__resilience", "ErrorText"] {
        assert!(!rendered.contains(generated), "{rendered}");
    }
}
