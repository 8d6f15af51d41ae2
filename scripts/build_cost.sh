#!/usr/bin/env bash
# The clean-build cost of the attribute: a minimal binary with one annotated `async fn` and
# tokio (`rt`, `macros`, `time`), against the same binary retrying through backon. Builds
# each from clean, alternating, and prints the times and their ratio.
#
#   scripts/build_cost.sh        # 3 runs each
#   scripts/build_cost.sh 5      # 5 runs each
#
# Needs cargo and the network (or a filled cargo cache) for the two binaries' dependencies.
# `cargo build --timings` on such a binary shows where the time goes.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
runs=${1:-3}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Every build from clean, with no cache in between: each binary's own target folder, and no
# compiler wrapper (sccache) that would serve the crates from an earlier build.
unset RUSTC_WRAPPER CARGO_BUILD_RUSTC_WRAPPER CARGO_BUILD_TARGET_DIR

mkdir -p "$work/attribute/src" "$work/backon/src"
cat >"$work/attribute/Cargo.toml" <<TOML
[package]
name = "with-attribute"
version = "0.1.0"
edition = "2024"
[workspace]
[dependencies]
resilience = { path = "$repo" }
tokio = { version = "1", features = ["rt", "macros", "time"] }
TOML
cat >"$work/attribute/src/main.rs" <<'RS'
use std::io;

use resilience::retry_with_backoff;

#[retry_with_backoff(max_retries = 3, base_delay = 0.01)]
async fn fetch(id: u32) -> io::Result<u32> {
    if id == 0 {
        return Err(io::Error::from(io::ErrorKind::ConnectionReset));
    }
    Ok(id * 2)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    println!("{:?}", fetch(21).await);
}
RS
cat >"$work/backon/Cargo.toml" <<'TOML'
[package]
name = "with-backon"
version = "0.1.0"
edition = "2024"
[workspace]
[dependencies]
backon = "1"
tokio = { version = "1", features = ["rt", "macros", "time"] }
TOML
cat >"$work/backon/src/main.rs" <<'RS'
use std::io;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};

async fn fetch(id: u32) -> io::Result<u32> {
    if id == 0 {
        return Err(io::Error::from(io::ErrorKind::ConnectionReset));
    }
    Ok(id * 2)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let policy = ExponentialBuilder::default()
        .with_max_times(2)
        .with_min_delay(Duration::from_millis(10));
    println!("{:?}", (|| fetch(21)).retry(policy).await);
}
RS

# Fetch first, so that no run times a download.
for binary in attribute backon; do
    (cd "$work/$binary" && CARGO_TARGET_DIR="$work/$binary/target" cargo fetch -q)
done

declare -A total
for binary in attribute backon; do total[$binary]=0; done
for ((run = 1; run <= runs; run++)); do
    for binary in attribute backon; do
        rm -rf "$work/$binary/target"
        start=$(date +%s.%N)
        (cd "$work/$binary" && CARGO_TARGET_DIR="$work/$binary/target" cargo build -q)
        end=$(date +%s.%N)
        seconds=$(awk -v s="$start" -v e="$end" 'BEGIN { printf "%.2f", e - s }')
        total[$binary]=$(awk -v t="${total[$binary]}" -v s="$seconds" 'BEGIN { print t + s }')
        echo "run $run: $binary $seconds s"
    done
done
attribute=$(awk -v t="${total[attribute]}" -v n="$runs" 'BEGIN { printf "%.2f", t / n }')
backon=$(awk -v t="${total[backon]}" -v n="$runs" 'BEGIN { printf "%.2f", t / n }')
ratio=$(awk -v a="$attribute" -v b="$backon" 'BEGIN { printf "%.2f", a / b }')
echo
echo "clean build, mean of $runs on $(nproc) cores: attribute $attribute s, backon $backon s: ${ratio}x"
