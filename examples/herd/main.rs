//! The herd simulation: what each backoff strategy costs a server when many clients fail at
//! once, in virtual time (no real waiting), with the runtime's own delay functions.
//!
//! (a) The AWS Architecture Blog's optimistic-concurrency experiment ("Exponential Backoff
//! And Jitter", 2015): N clients each write one row, a write succeeds only if the version the
//! client read is still current, each network hop takes |Normal(10, 2)|, base 5, cap 2000
//! (one unit, a millisecond). Write calls and the time the last client is done, averaged over
//! the trials, for N from 10 to 190, and at N = 100.
//!
//! (b) A Gemini-like per-minute quota: a fixed number of requests per minute, a 429 with a
//! `RetryInfo` hint beyond it. Wasted 429s and completion time, with and without honouring
//! the hint.
//!
//! ```text
//! cargo run --release --example herd                 # 100 trials; writes docs/herd.png
//! cargo run --example herd -- --quick --plot out.png # 10 trials, for CI
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

mod plot;
mod sim;

use sim::{OccTable, QuotaRow, QuotaSetup, STRATEGIES};

/// Simulate a herd of clients retrying with each backoff strategy; print a table, draw a plot.
#[derive(Debug, Parser)]
#[command(override_usage = "cargo run --release --example herd -- [OPTIONS]")]
struct Args {
    /// Fewer trials (10 instead of 100), for CI and a quick look
    #[arg(long)]
    quick: bool,
    /// Trials averaged per point (overrides --quick's)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    trials: Option<u32>,
    /// Seed of the first trial; trial i uses seed + i
    #[arg(long, value_name = "N", default_value_t = 2015)]
    seed: u64,
    /// Where to write the PNG [default: docs/herd.png, or herd-quick.png in the temporary
    /// directory with --quick, so a quick run never replaces the committed plot]
    #[arg(long, value_name = "PATH")]
    plot: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let trials = args.trials.unwrap_or(if args.quick { 10 } else { 100 });
    let path = args.plot.unwrap_or_else(|| {
        if args.quick {
            std::env::temp_dir().join("herd-quick.png")
        } else {
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/herd.png"))
        }
    });

    let at_100 = sim::occ_table(&[100], trials, args.seed);
    let sweep = sim::occ_table(&sim::client_counts(), trials, args.seed);
    let setup = QuotaSetup::default();
    let quota = sim::quota_table(setup, trials, args.seed);

    println!(
        "## (a) AWS optimistic-concurrency experiment, {trials} trials, seed {}",
        args.seed
    );
    println!();
    print_at_100(&at_100);
    println!();
    print_sweep(&sweep, "write calls", |o| o.calls);
    println!();
    print_sweep(&sweep, "time until the last client is done (ms)", |o| {
        o.time
    });
    println!();
    println!(
        "## (b) per-minute quota: {} clients, {} requests per {} s, default policy, {trials} trials",
        setup.clients,
        setup.per_window,
        setup.window.as_secs()
    );
    println!();
    print_quota(&quota);
    println!();

    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty())
        && let Err(error) = std::fs::create_dir_all(dir)
    {
        eprintln!("cannot create {}: {error}", dir.display());
        return ExitCode::FAILURE;
    }
    match plot::draw(&path, &sweep, &quota) {
        Ok(()) => {
            println!("plot written to {}", path.display());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("cannot draw {}: {error}", path.display());
            ExitCode::FAILURE
        }
    }
}

fn print_at_100(table: &OccTable) {
    println!("| strategy (N = 100) | write calls | time until the last client is done (ms) |");
    println!("|---|---:|---:|");
    for row in &table.outcomes {
        for (jitter, outcome) in STRATEGIES.iter().zip(row) {
            println!("| {jitter} | {:.0} | {:.0} |", outcome.calls, outcome.time);
        }
    }
}

fn print_sweep(table: &OccTable, what: &str, value: impl Fn(&sim::Outcome) -> f64) {
    let names: Vec<_> = STRATEGIES.iter().map(|j| j.name()).collect();
    println!("| clients: {what} | {} |", names.join(" | "));
    println!("|---:|{}", "---:|".repeat(names.len()));
    for (n, row) in table.clients.iter().zip(&table.outcomes) {
        let cells: Vec<_> = row.iter().map(|o| format!("{:.0}", value(o))).collect();
        println!("| {n} | {} |", cells.join(" | "));
    }
}

fn print_quota(rows: &[QuotaRow]) {
    println!(
        "| strategy | RetryInfo hint | wasted 429s | last request accepted (s) | most attempts by one client | clients past 5 attempts |"
    );
    println!("|---|---|---:|---:|---:|---:|");
    for row in rows {
        let hint = if row.honour { "honoured" } else { "ignored" };
        let o = row.outcome;
        println!(
            "| {} | {hint} | {:.0} | {:.0} | {:.1} | {:.1} |",
            row.jitter, o.rejected, o.seconds, o.most_attempts, o.past_default_attempts
        );
    }
}
