//! The herd simulation's core: discrete events in virtual time, no real sleeping. Every wait
//! a client takes comes from the runtime's own backoff (`BackoffState::delay_with`), and every
//! server hint from its own `RetryInfo` reader (`hint::read_text`), so the figures are those
//! of the library's code, not of a model of it.
//!
//! Shared by `examples/herd/main.rs` and `tests/herd.rs` (through `#[path]`), so the test
//! checks the very code the example prints.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use resilience::RetryPolicy;
use resilience::backoff::BackoffState;
use resilience::strategy::Jitter;

/// The strategies compared, in the order of the table and the plot's legend.
pub const STRATEGIES: [Jitter; 5] = [
    Jitter::None,
    Jitter::Additive,
    Jitter::Equal,
    Jitter::Full,
    Jitter::Decorrelated,
];

/// The client counts of the AWS experiment: 10 to 190 in steps of 20.
pub fn client_counts() -> Vec<usize> {
    (10..=190).step_by(20).collect()
}

/// One virtual time unit, which the AWS study calls a millisecond: its network delay (10),
/// base (5) and cap (2000) are all in it.
const UNIT: Duration = Duration::from_millis(1);

/// The policy of every client in the AWS experiment: base 5, cap 2000, the given jitter.
///
/// The additive jitter's spread is 5, the base: the design note's `jitter = 1 s` on a
/// `base_delay = 1 s`, scaled to this experiment's base, so the note's formula is measured
/// at the proportions it ships with.
pub fn occ_policy(jitter: Jitter) -> RetryPolicy {
    RetryPolicy::builder()
        .max_retries(u32::MAX)
        .base_delay(UNIT * 5)
        .max_delay(UNIT * 2000)
        .jitter(UNIT * 5)
        .jitter_strategy(jitter)
        .build()
        .unwrap_or_else(|error| panic!("the experiment's policy is valid: {error}"))
}

/// `|Normal(mean, sd)|`, by Box-Muller on the simulation's generator (one dependency fewer
/// than `rand_distr`, and the AWS simulator's own model of a network hop).
fn abs_normal(rng: &mut SmallRng, mean: f64, sd: f64) -> f64 {
    // `1 - U` lies in (0, 1], so the logarithm is finite.
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random::<f64>();
    let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
    (mean + sd * z).abs()
}

fn units(wait: Duration) -> f64 {
    wait.as_secs_f64() / UNIT.as_secs_f64()
}

/// An event at a virtual time; the heap pops the earliest, and among equal times the one
/// scheduled first, so a seed always replays the same run.
struct Event<K> {
    at: f64,
    seq: u64,
    kind: K,
}

impl<K> PartialEq for Event<K> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl<K> Eq for Event<K> {}
impl<K> PartialOrd for Event<K> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<K> Ord for Event<K> {
    fn cmp(&self, other: &Self) -> Ordering {
        // Reversed: `BinaryHeap` is a max-heap.
        other
            .at
            .total_cmp(&self.at)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

/// A queue of events in virtual time.
struct Queue<K> {
    heap: BinaryHeap<Event<K>>,
    seq: u64,
}

impl<K> Queue<K> {
    fn new() -> Self {
        Self {
            heap: BinaryHeap::new(),
            seq: 0,
        }
    }

    fn push(&mut self, at: f64, kind: K) {
        self.seq += 1;
        self.heap.push(Event {
            at,
            seq: self.seq,
            kind,
        });
    }

    fn pop(&mut self) -> Option<(f64, K)> {
        self.heap.pop().map(|event| (event.at, event.kind))
    }
}

/// What one run, or the mean of several, measured.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Outcome {
    /// Write calls the server received (AWS's "calls"), successful ones included.
    pub calls: f64,
    /// When the last client was done, in the experiment's unit.
    pub time: f64,
}

/// The messages of the optimistic-concurrency experiment, each at the moment it arrives.
enum Occ {
    /// A client's read reaches the server.
    Read { client: usize },
    /// The version the server read comes back to the client.
    ReadReply { client: usize, version: u64 },
    /// A client's conditional write reaches the server.
    Write { client: usize, version: u64 },
    /// The server's answer to a write comes back.
    WriteReply { client: usize, written: bool },
}

/// One run of the AWS experiment ("Exponential Backoff And Jitter", 2015): `clients` clients
/// each read the row's version, then write the row on condition that the version is still
/// current; a client whose write lost the race backs off, then reads again. Each hop takes
/// `|Normal(10, 2)|`.
pub fn occ_run(clients: usize, jitter: Jitter, seed: u64) -> Outcome {
    let policy = occ_policy(jitter);
    let mut rng = SmallRng::seed_from_u64(seed);
    let hop = |rng: &mut SmallRng| abs_normal(rng, 10.0, 2.0);
    let mut backoff = vec![BackoffState::new(); clients];
    let mut failed = vec![0u32; clients];
    let mut version = 0u64;
    let mut calls = 0u64;
    let mut last = 0.0f64;
    let mut queue = Queue::new();
    for client in 0..clients {
        let at = hop(&mut rng);
        queue.push(at, Occ::Read { client });
    }
    while let Some((now, event)) = queue.pop() {
        last = now;
        match event {
            Occ::Read { client } => {
                let at = now + hop(&mut rng);
                queue.push(at, Occ::ReadReply { client, version });
            }
            Occ::ReadReply { client, version } => {
                let at = now + hop(&mut rng);
                queue.push(at, Occ::Write { client, version });
            }
            Occ::Write {
                client,
                version: read,
            } => {
                calls += 1;
                let written = read == version;
                if written {
                    version += 1;
                }
                let at = now + hop(&mut rng);
                queue.push(at, Occ::WriteReply { client, written });
            }
            Occ::WriteReply { client, written } => {
                if !written {
                    failed[client] += 1;
                    // The runtime's wait after failed attempt `n`, `n` counted from 1 as the
                    // attribute counts it (and as AWS's simulator does).
                    let wait = backoff[client].delay_with(&policy, failed[client], &mut rng);
                    let at = now + hop(&mut rng) + units(wait);
                    queue.push(at, Occ::Read { client });
                }
            }
        }
    }
    Outcome {
        calls: calls as f64,
        time: last,
    }
}

/// The mean of `trials` runs of [`occ_run`]; trial `i` uses seed `seed + i` for every
/// strategy, so the strategies meet the same network.
pub fn occ_mean(clients: usize, jitter: Jitter, trials: u32, seed: u64) -> Outcome {
    let mut sum = Outcome::default();
    for trial in 0..trials {
        let run = occ_run(clients, jitter, seed.wrapping_add(u64::from(trial)));
        sum.calls += run.calls;
        sum.time += run.time;
    }
    let n = f64::from(trials.max(1));
    Outcome {
        calls: sum.calls / n,
        time: sum.time / n,
    }
}

/// The experiment's results: for each client count, one outcome per strategy of
/// [`STRATEGIES`].
#[derive(Debug, Clone)]
pub struct OccTable {
    /// The client counts, in order.
    pub clients: Vec<usize>,
    /// `outcomes[i][s]`: `clients[i]` clients with `STRATEGIES[s]`.
    pub outcomes: Vec<[Outcome; STRATEGIES.len()]>,
}

/// Runs the experiment for every client count and strategy.
pub fn occ_table(clients: &[usize], trials: u32, seed: u64) -> OccTable {
    let outcomes = clients
        .iter()
        .map(|&n| STRATEGIES.map(|jitter| occ_mean(n, jitter, trials, seed)))
        .collect();
    OccTable {
        clients: clients.to_vec(),
        outcomes,
    }
}

/// The settings of the quota scenario.
#[derive(Debug, Clone, Copy)]
pub struct QuotaSetup {
    /// Clients, each with one request to get through, all starting together (a batch job).
    pub clients: usize,
    /// Requests the server accepts per window; beyond them it answers 429.
    pub per_window: u32,
    /// The quota's window: a minute, as Gemini's requests-per-minute limits.
    pub window: Duration,
}

impl Default for QuotaSetup {
    fn default() -> Self {
        Self {
            clients: 50,
            per_window: 10,
            window: Duration::from_secs(60),
        }
    }
}

/// What the quota scenario measured, averaged over its trials.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct QuotaOutcome {
    /// Answers 429 the clients received: requests that only spent quota checks.
    pub rejected: f64,
    /// Seconds until the last client's request was accepted.
    pub seconds: f64,
    /// The most attempts one client needed.
    pub most_attempts: f64,
    /// Clients that needed more attempts than the default `max_retries` (5): with the
    /// attribute's defaults they would have given up, their task saved as failed.
    pub past_default_attempts: f64,
}

/// A Gemini-like answer to a request over the quota: a 429 whose `RetryInfo` says when the
/// window resets, in whole seconds as Gemini writes it.
fn quota_body(retry_in: Duration) -> String {
    let seconds = retry_in.as_secs() + u64::from(retry_in.subsec_nanos() > 0);
    format!(
        r#"{{"error": {{"code": 429, "status": "RESOURCE_EXHAUSTED", "details": [{{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "{seconds}s"}}]}}}}"#
    )
}

/// One run of the quota scenario with the attribute's default policy and `jitter`: a fixed
/// number of requests per window, a 429 with a `RetryInfo` hint beyond it. When `honour` is
/// set, a client waits the longer of its backoff and the hint (the runtime's rule in
/// `Attempts::after_failure`); otherwise the backoff alone. Attempts are not limited, so
/// every client gets through and the run measures what each way costs.
pub fn quota_run(setup: QuotaSetup, jitter: Jitter, honour: bool, seed: u64) -> QuotaOutcome {
    let policy = RetryPolicy::builder()
        .jitter_strategy(jitter)
        .build()
        .unwrap_or_else(|error| panic!("the default policy with a jitter is valid: {error}"));
    let mut rng = SmallRng::seed_from_u64(seed);
    // One hop: 100 ms or so each way.
    let hop = |rng: &mut SmallRng| Duration::from_secs_f64(abs_normal(rng, 0.1, 0.02));
    let window = setup.window.as_secs_f64();
    let mut backoff = vec![BackoffState::new(); setup.clients];
    let mut attempts = vec![0u32; setup.clients];
    let mut queue = Queue::new();
    for client in 0..setup.clients {
        let at = hop(&mut rng).as_secs_f64();
        queue.push(at, client);
    }
    let (mut current, mut used) = (0u64, 0u32);
    let (mut rejected, mut last) = (0u64, 0.0f64);
    while let Some((now, client)) = queue.pop() {
        attempts[client] += 1;
        let index = (now / window) as u64;
        if index != current {
            (current, used) = (index, 0);
        }
        if used < setup.per_window {
            used += 1;
            last = last.max(now + hop(&mut rng).as_secs_f64());
            continue;
        }
        rejected += 1;
        let resets_in = Duration::from_secs_f64((index + 1) as f64 * window - now);
        let answer = now + hop(&mut rng).as_secs_f64();
        let mut wait = backoff[client].delay_with(&policy, attempts[client], &mut rng);
        if honour {
            // The runtime reads the hint from the answer's text, as it does a real Gemini
            // error body; the wait is the longer of the two.
            if let Some(hint) = resilience::hint::read_text(&quota_body(resets_in)).retry_after {
                wait = wait.max(hint);
            }
        }
        let at = answer + wait.as_secs_f64() + hop(&mut rng).as_secs_f64();
        queue.push(at, client);
    }
    let past_default = attempts
        .iter()
        .filter(|&&n| n > RetryPolicy::DEFAULT_MAX_RETRIES)
        .count();
    QuotaOutcome {
        rejected: rejected as f64,
        seconds: last,
        most_attempts: f64::from(attempts.iter().copied().max().unwrap_or(0)),
        past_default_attempts: past_default as f64,
    }
}

/// The mean of `trials` runs of [`quota_run`].
pub fn quota_mean(
    setup: QuotaSetup,
    jitter: Jitter,
    honour: bool,
    trials: u32,
    seed: u64,
) -> QuotaOutcome {
    let mut sum = QuotaOutcome::default();
    for trial in 0..trials {
        let run = quota_run(setup, jitter, honour, seed.wrapping_add(u64::from(trial)));
        sum.rejected += run.rejected;
        sum.seconds += run.seconds;
        sum.most_attempts += run.most_attempts;
        sum.past_default_attempts += run.past_default_attempts;
    }
    let n = f64::from(trials.max(1));
    QuotaOutcome {
        rejected: sum.rejected / n,
        seconds: sum.seconds / n,
        most_attempts: sum.most_attempts / n,
        past_default_attempts: sum.past_default_attempts / n,
    }
}

/// One row of the quota table.
#[derive(Debug, Clone, Copy)]
pub struct QuotaRow {
    /// The strategy of the default policy.
    pub jitter: Jitter,
    /// Whether the clients honoured the `RetryInfo` hint.
    pub honour: bool,
    /// What it cost.
    pub outcome: QuotaOutcome,
}

/// The quota scenario for the default strategy and full jitter, each with and without the
/// hint.
pub fn quota_table(setup: QuotaSetup, trials: u32, seed: u64) -> Vec<QuotaRow> {
    [Jitter::Additive, Jitter::Full]
        .into_iter()
        .flat_map(|jitter| [false, true].map(|honour| (jitter, honour)))
        .map(|(jitter, honour)| QuotaRow {
            jitter,
            honour,
            outcome: quota_mean(setup, jitter, honour, trials, seed),
        })
        .collect()
}
