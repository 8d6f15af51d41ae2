//! A shared breaker's view of the fleet's circuit, against a fake fleet backend that answers
//! as scripted and counts what it was asked: the fleet is asked only when a probe is due (and
//! an async call awaits it, never on the blocking path), its answers become the view, a held
//! open breaker wins over the fleet, and while the fleet is away the process decides alone
//! and still reports outcomes, so the backend can come back; a probe the limiter refuses goes
//! back, a fleet whose probes are all out is asked again soon; and a shared budget spends
//! here too what the fleet paid, so it does not start afresh when the fleet goes away.

use std::io;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use resilience::breaker::CircuitBreaker;
use resilience::budget::RetryBudget;
use resilience::fleet::{
    Answer, BreakerRule, BudgetRule, FleetCircuit, FleetGuards, FleetOutcome, FleetState, Gcra,
    OnCircuit, Pending, Reservation,
};
use resilience::keyed::Shared;
use resilience::limiter::RateLimiter;
use resilience::{GiveUpReason, MediaProcessingError, retry_with_backoff};

/// A fleet backend: its circuit as scripted, what it was asked, whether it answers.
struct FakeFleet {
    reachable: AtomicBool,
    circuit: Mutex<Option<FleetCircuit>>,
    probes_async: AtomicU32,
    probes_blocking: AtomicU32,
    records: Mutex<Vec<FleetOutcome>>,
    releases: AtomicU32,
}

impl FakeFleet {
    /// Reachable, with no circuit yet, nothing asked.
    const fn new() -> Self {
        FakeFleet {
            reachable: AtomicBool::new(true),
            circuit: Mutex::new(None),
            probes_async: AtomicU32::new(0),
            probes_blocking: AtomicU32::new(0),
            records: Mutex::new(Vec::new()),
            releases: AtomicU32::new(0),
        }
    }

    fn answer(&self) -> Answer<FleetCircuit> {
        match *self.circuit.lock().unwrap() {
            Some(circuit) if self.reachable.load(Ordering::SeqCst) => Answer::Decided(circuit),
            _ => Answer::Unavailable { share: 1 },
        }
    }
}

impl FleetState for FakeFleet {
    fn reserve<'a>(
        &'a self,
        _: &'a str,
        _: Gcra,
        _: Option<Duration>,
    ) -> Pending<'a, Answer<Reservation>> {
        Box::pin(std::future::ready(Answer::Unavailable { share: 1 }))
    }
    fn reserve_blocking(&self, _: &str, _: Gcra, _: Option<Duration>) -> Answer<Reservation> {
        Answer::Unavailable { share: 1 }
    }
    fn pause(&self, _: &str, _: Gcra, _: Duration) {}
}

impl FleetGuards for FakeFleet {
    fn is_reachable(&self) -> bool {
        self.reachable.load(Ordering::SeqCst)
    }
    fn breaker_probe<'a>(
        &'a self,
        _: &'a str,
        _: BreakerRule,
    ) -> Pending<'a, Answer<FleetCircuit>> {
        self.probes_async.fetch_add(1, Ordering::SeqCst);
        Box::pin(std::future::ready(self.answer()))
    }
    fn breaker_probe_blocking(&self, _: &str, _: BreakerRule) -> Answer<FleetCircuit> {
        self.probes_blocking.fetch_add(1, Ordering::SeqCst);
        self.answer()
    }
    fn budget_withdraw_blocking(&self, _: &str, _: BudgetRule, _: bool) -> Answer<bool> {
        if self.reachable.load(Ordering::SeqCst) {
            Answer::Decided(true)
        } else {
            Answer::Unavailable { share: 1 }
        }
    }
    fn breaker_release(&self, _: &str, _: BreakerRule) {
        self.releases.fetch_add(1, Ordering::SeqCst);
    }
    fn breaker_record(
        &self,
        _: &str,
        _: BreakerRule,
        outcome: FleetOutcome,
        _: f64,
        then: OnCircuit,
    ) {
        self.records.lock().unwrap().push(outcome);
        then(self.answer());
    }
}

static FLEET: FakeFleet = FakeFleet::new();
/// A fleet that pays every retry while it answers, for the budget's test alone.
static BUDGET_FLEET: FakeFleet = FakeFleet::new();
/// Two retries' worth of tokens in this process.
static TOKENS: RetryBudget = RetryBudget::token_bucket("tokens", 10)
    .retry_cost(5)
    .shared(&BUDGET_FLEET);

#[test]
fn the_retries_the_fleet_paid_for_are_spent_here_too() {
    let budget = Shared::of(&TOKENS);
    for _ in 0..3 {
        assert!(budget.pay_blocking(Instant::now, false), "the fleet pays");
    }
    // The fleet away: this process's own bucket decides, and it spent its two retries on
    // what the fleet paid, so it does not start afresh.
    BUDGET_FLEET.reachable.store(false, Ordering::SeqCst);
    assert!(!budget.pay_blocking(Instant::now, false));
    assert_eq!(TOKENS.available(Instant::now()), 0);
}

static SHARED: CircuitBreaker = CircuitBreaker::new("fake").shared(&FLEET);

fn set(circuit: FleetCircuit) {
    *FLEET.circuit.lock().unwrap() = Some(circuit);
}

#[retry_with_backoff(max_retries = 1, breaker = SHARED)]
async fn call(fail: bool) -> io::Result<()> {
    if fail {
        Err(io::Error::from(io::ErrorKind::ConnectionReset))
    } else {
        Ok(())
    }
}

/// One permit a minute: the second call within the minute would wait past its deadline.
static ONE_A_MINUTE: RateLimiter = RateLimiter::per_minute("one", 1);

#[retry_with_backoff(max_retries = 1, timeout = 1, breaker = SHARED, limiter = ONE_A_MINUTE)]
async fn limited() -> io::Result<()> {
    Ok(())
}

fn refused(outcome: io::Result<()>) -> Option<Duration> {
    let error = outcome.err()?;
    let give_up = error.get_ref()?.downcast_ref::<MediaProcessingError>()?;
    match give_up.reason() {
        GiveUpReason::CircuitOpen { retry_in, .. } => retry_in,
        _ => None,
    }
}

// One test: the backend and the breaker are statics, and each step depends on the last.
#[tokio::test]
async fn the_fleet_s_circuit_as_a_process_sees_it() {
    // Closed: calls pass without asking; each outcome is recorded with the fleet.
    set(FleetCircuit::Closed);
    call(false).await.unwrap();
    assert_eq!(
        FLEET.probes_async.load(Ordering::SeqCst) + FLEET.probes_blocking.load(Ordering::SeqCst),
        0
    );
    assert_eq!(FLEET.records.lock().unwrap().len(), 1);

    // The fleet answers a record with an open circuit: the next calls are refused without
    // asking, with the fleet's time.
    set(FleetCircuit::Open {
        retry_in: Duration::from_millis(200),
    });
    let _ = call(true).await;
    let retry_in = refused(call(false).await).expect("refused by the fleet's circuit");
    assert!(retry_in <= Duration::from_millis(200));
    assert_eq!(FLEET.probes_async.load(Ordering::SeqCst), 0);

    // Once that time is over a probe is due: asked on the async path, and granted.
    tokio::time::sleep(Duration::from_millis(250)).await;
    set(FleetCircuit::Probe);
    call(false).await.unwrap();
    assert_eq!(FLEET.probes_async.load(Ordering::SeqCst), 1);
    assert_eq!(
        FLEET.probes_blocking.load(Ordering::SeqCst),
        0,
        "never blocking in async"
    );
    assert!(
        FLEET
            .records
            .lock()
            .unwrap()
            .last()
            .is_some_and(|record| record.probe)
    );

    // A probe granted, then refused by the limiter (its permit would come past the
    // deadline): the probe's slot goes back to the fleet at once.
    limited().await.unwrap();
    assert_eq!(FLEET.releases.load(Ordering::SeqCst), 0);
    let error = limited().await.unwrap_err();
    let give_up = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<MediaProcessingError>())
        .expect("a give-up");
    assert!(matches!(give_up.reason(), GiveUpReason::RateLimited { .. }));
    assert_eq!(FLEET.releases.load(Ordering::SeqCst), 1);

    // The fleet's probes all out for another minute: refused, but asked again within half
    // a second, and the circuit the probes closed meanwhile is seen then.
    set(FleetCircuit::Busy {
        retry_in: Duration::from_secs(60),
    });
    let asked = FLEET.probes_async.load(Ordering::SeqCst);
    let retry_in = refused(call(false).await).expect("refused while the probes are out");
    assert!(retry_in <= Duration::from_millis(500), "{retry_in:?}");
    assert!(refused(call(false).await).is_some());
    assert_eq!(
        FLEET.probes_async.load(Ordering::SeqCst),
        asked + 1,
        "not asked again yet"
    );
    tokio::time::sleep(Duration::from_millis(550)).await;
    set(FleetCircuit::Closed);
    call(false).await.unwrap();
    assert_eq!(FLEET.probes_async.load(Ordering::SeqCst), asked + 2);

    // Held open by hand: refused whatever the fleet says.
    set(FleetCircuit::Closed);
    SHARED.open();
    assert!(call(false).await.is_err());
    SHARED.close();

    // The fleet away: this process's breaker decides, and outcomes still go to the fleet.
    FLEET.reachable.store(false, Ordering::SeqCst);
    let before = FLEET.records.lock().unwrap().len();
    call(false).await.unwrap();
    assert_eq!(FLEET.records.lock().unwrap().len(), before + 1);
}
