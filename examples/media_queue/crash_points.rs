//! Named points between two writes of the worker, where a test can crash it or hold it.
//!
//! A random SIGKILL lands where the timing puts it, mostly in an attempt's wait; whether one
//! ever lands between the status update and the completion record is luck. These points make
//! each such moment reachable on purpose, in the real binary, with nothing compiled in or out:
//!
//! - `MEDIA_QUEUE_CRASH_AT=status_updated@2` aborts the process (`SIGABRT`: no destructor,
//!   no rollback, no flush, as a kill) the second time the worker reaches `status_updated`;
//!   `@1` may be left out.
//! - `MEDIA_QUEUE_PAUSE_AT=analyzed@1` prints `paused at analyzed@1` on stdout and waits for a
//!   line on stdin before going on: a test holds a live worker there, for example until its
//!   lease has run out and another worker has taken its task over.
//!
//! The points, in the order a task meets them, are [`Point::ALL`]. Unset, the variables cost a
//! relaxed atomic increment per point.
//!
//! The `fail` crate does the same inside one process; its `pause` can only be released from
//! that process, and a test here drives the worker from outside.

use std::io::{BufRead, Write};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, bail};

/// A moment between two writes of the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    /// The claim has committed: the task is `processing`, under this worker's lease.
    Claimed,
    /// One attempt of `analyze` has its answer (or its error); the retry wait, if any, is next.
    Attempted,
    /// `analyze` has returned; nothing about the outcome is written yet.
    Analyzed,
    /// Inside the finishing transaction: the task's status is updated, its completion row not
    /// yet inserted. A crash here must leave neither.
    StatusUpdated,
    /// The finishing transaction has committed.
    Finished,
}

impl Point {
    /// Every point, in the order a task meets them.
    pub const ALL: [Point; 5] = [
        Point::Claimed,
        Point::Attempted,
        Point::Analyzed,
        Point::StatusUpdated,
        Point::Finished,
    ];

    /// The name the environment variables use.
    pub fn name(self) -> &'static str {
        match self {
            Point::Claimed => "claimed",
            Point::Attempted => "attempted",
            Point::Analyzed => "analyzed",
            Point::StatusUpdated => "status_updated",
            Point::Finished => "finished",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// "Do this the `nth` time `point` is reached".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Trigger {
    point: Point,
    nth: u32,
}

/// Reads `point` or `point@n` (`n` from 1).
fn parse_trigger(text: &str) -> anyhow::Result<Trigger> {
    let (name, nth) = match text.split_once('@') {
        Some((name, nth)) => {
            let nth: u32 = nth
                .parse()
                .ok()
                .filter(|&n| n >= 1)
                .with_context(|| format!("`{text}`: after `@` comes a count from 1"))?;
            (name, nth)
        }
        None => (text, 1),
    };
    let Some(point) = Point::ALL.into_iter().find(|p| p.name() == name) else {
        let names: Vec<_> = Point::ALL.iter().map(|p| p.name()).collect();
        bail!(
            "`{text}`: no point named `{name}`; the points are {}",
            names.join(", ")
        );
    };
    Ok(Trigger { point, nth })
}

struct Hooks {
    crash: Option<Trigger>,
    pause: Option<Trigger>,
    reached: [AtomicU32; Point::ALL.len()],
}

static HOOKS: OnceLock<Hooks> = OnceLock::new();

/// Reads `MEDIA_QUEUE_CRASH_AT` and `MEDIA_QUEUE_PAUSE_AT`; a value that names no point is an
/// error, so that a typo in a test cannot make it pass by never crashing.
pub fn install_from_env() -> anyhow::Result<()> {
    let read = |variable: &str| -> anyhow::Result<Option<Trigger>> {
        match std::env::var(variable) {
            Ok(text) => parse_trigger(&text).map(Some).context(variable.to_owned()),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => bail!("{variable} is not UTF-8"),
        }
    };
    let hooks = Hooks {
        crash: read("MEDIA_QUEUE_CRASH_AT")?,
        pause: read("MEDIA_QUEUE_PAUSE_AT")?,
        reached: Default::default(),
    };
    // Installed once, by `main`; a second call keeps the first set.
    let _ = HOOKS.set(hooks);
    Ok(())
}

/// The worker is at `point`: crash or pause here if asked to.
pub fn reached(point: Point) {
    let Some(hooks) = HOOKS.get() else { return };
    let nth = hooks.reached[point.index()].fetch_add(1, Ordering::Relaxed) + 1;
    let now = Trigger { point, nth };
    if hooks.crash == Some(now) {
        eprintln!("crash point {}@{nth}: aborting", point.name());
        std::process::abort();
    }
    if hooks.pause == Some(now) {
        println!("paused at {}@{nth}", point.name());
        let _ = std::io::stdout().flush();
        // Blocks the worker's only thread on purpose: nothing of it may move while held.
        let mut line = String::new();
        let _ = std::io::stdin().lock().read_line(&mut line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn triggers_name_a_point_and_an_arrival() {
        let status = parse_trigger("status_updated@2").unwrap();
        assert_eq!((status.point, status.nth), (Point::StatusUpdated, 2));
        assert_eq!(parse_trigger("claimed").unwrap().nth, 1);
        for bad in ["", "claim", "claimed@0", "claimed@", "claimed@x", "@1"] {
            assert!(parse_trigger(bad).is_err(), "{bad}");
        }
    }
}
