//! A shared breaker's view of the fleet's circuit, against a fake fleet backend that answers
//! as scripted and counts what it was asked: the fleet is asked only when a probe is due (and
//! an async call awaits it, never on the blocking path), its answers become the view, a held
//! open breaker wins over the fleet, and while the fleet is away the process decides alone
//! and still reports outcomes, so the backend can come back.

use std::io;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use resilience::breaker::CircuitBreaker;
use resilience::fleet::{
    Answer, BreakerRule, FleetCircuit, FleetGuards, FleetOutcome, FleetState, Gcra, OnCircuit,
    Pending, Reservation,
};
use resilience::{GiveUpReason, MediaProcessingError, retry_with_backoff};

/// A fleet backend: its circuit as scripted, what it was asked, whether it answers.
#[derive(Default)]
struct FakeFleet {
    reachable: AtomicBool,
    circuit: Mutex<Option<FleetCircuit>>,
    probes_async: AtomicU32,
    probes_blocking: AtomicU32,
    records: Mutex<Vec<FleetOutcome>>,
}

impl FakeFleet {
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

static FLEET: FakeFleet = FakeFleet {
    reachable: AtomicBool::new(true),
    circuit: Mutex::new(None),
    probes_async: AtomicU32::new(0),
    probes_blocking: AtomicU32::new(0),
    records: Mutex::new(Vec::new()),
};
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
