//! The `gemini_vision` example's claims, run as tests: this file builds the example's binary
//! and runs it as `cargo run --example gemini_vision` would, against the local fake Gemini it
//! starts itself, then reads its summary table (stdout) and its retry log (stderr).
//!
//! The claims (the example's doc comment and the README's first lines): the run is the same
//! every time; with the defaults (fault rate 0.5, seed 2336) about half of the requests meet a
//! fault, of every kind the fake has; one image needs all five attempts and one gives up and
//! is kept with its error; `--per-day-quota` gets a 429 that is not retried.
//!
//! The default run waits in real time, with the example's own demo settings (0.4 to 2 s
//! between attempts, a 1.5 s client timeout on the stalled request): about 7 s, for the image
//! that needs five attempts. The example has no flag for shorter waits, so the three runs
//! here start at once and the file takes about that long.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The example's binary, built once for all tests.
fn binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| common::example::binary("gemini_vision"))
}

/// What one run printed.
struct Run {
    stdout: String,
    stderr: String,
}

/// Runs the example once per entry of `arg_lists`, all at the same time (each mostly waits),
/// and returns what each printed. A run that has not ended after two minutes (the default run
/// takes about 7 s) is killed and fails the test.
fn run_all(arg_lists: &[&[&str]]) -> Vec<Run> {
    let binary = binary();
    let children: Vec<_> = arg_lists
        .iter()
        .map(|args| {
            let mut child = Command::new(binary)
                .args(*args)
                // The log filter is the example's default (`info`), whatever the caller's.
                .env_remove("RUST_LOG")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start the example");
            // Read both pipes while the run goes on, so a full pipe cannot stall it.
            let read = |pipe: Option<Box<dyn Read + Send>>| {
                std::thread::spawn(move || {
                    let mut text = String::new();
                    if let Some(mut pipe) = pipe {
                        pipe.read_to_string(&mut text).expect("UTF-8 output");
                    }
                    text
                })
            };
            let stdout = read(child.stdout.take().map(|p| Box::new(p) as _));
            let stderr = read(child.stderr.take().map(|p| Box::new(p) as _));
            (args, child, stdout, stderr)
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    children
        .into_iter()
        .map(|(args, mut child, stdout, stderr)| {
            let status = loop {
                if let Some(status) = child.try_wait().expect("wait for the example") {
                    break status;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    panic!("gemini_vision {args:?} did not end within two minutes");
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            let run = Run {
                stdout: stdout.join().expect("stdout"),
                stderr: stderr.join().expect("stderr"),
            };
            assert!(
                status.success(),
                "gemini_vision {args:?}: {status}\n{}\n{}",
                run.stdout,
                run.stderr
            );
            run
        })
        .collect()
}

/// One row of the summary table, without its `waited` column (the jitter makes it vary).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Row {
    image: String,
    status: String,
    attempts: u32,
    note: String,
}

impl Run {
    /// The rows of the summary table: the lines between its rule and the blank line.
    fn rows(&self) -> Vec<Row> {
        self.stdout
            .lines()
            .skip_while(|line| !line.starts_with("---"))
            .skip(1)
            .take_while(|line| !line.is_empty())
            .map(|line| {
                // `image  status  attempts  waited  note`: the names hold no spaces, and the
                // note is on one line with single spaces.
                let mut words = line.split_whitespace();
                let mut next = || words.next().unwrap_or_default().to_owned();
                let (image, status, attempts, _waited) = (next(), next(), next(), next());
                Row {
                    image,
                    status,
                    attempts: attempts.parse().unwrap_or_else(|_| panic!("{line}")),
                    note: words.collect::<Vec<_>>().join(" "),
                }
            })
            .collect()
    }

    /// The summary line without the run's duration: `10 images: 9 done, 1 failed; ...`.
    fn summary(&self) -> String {
        let line = self
            .stdout
            .lines()
            // Not the first line, `Analysing 10 images in DIR`.
            .rfind(|line| line.contains(" images in "))
            .unwrap_or_else(|| panic!("no summary line:\n{}", self.stdout));
        let (count, rest) = line.split_once(" images in ").unwrap_or_default();
        let (_duration, rest) = rest.split_once(": ").unwrap_or_default();
        format!("{count} images: {rest}")
    }

    /// The error of each `Retry n/5 after {error}: waiting ...` line, per image, in order.
    fn retries(&self) -> BTreeMap<String, Vec<String>> {
        let mut retries: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for line in self.stderr.lines() {
            let Some((image, event)) = image_event(line) else {
                continue;
            };
            let Some(retry) = event.strip_prefix("Retry ") else {
                continue;
            };
            let (attempt, rest) = retry.split_once(" after ").unwrap_or_default();
            let (error, _wait) = rest.rsplit_once(": waiting ").unwrap_or_default();
            let errors = retries.entry(image.to_owned()).or_default();
            assert_eq!(
                attempt,
                format!("{}/5", errors.len() + 1),
                "retries of one image are logged in order: {line}"
            );
            errors.push(error.to_owned());
        }
        retries
    }

    /// The events of the retry log that are not `Retry` lines, per image, in order.
    fn other_events(&self) -> BTreeMap<String, Vec<String>> {
        let mut events: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for line in self.stderr.lines() {
            if let Some((image, event)) = image_event(line)
                && !event.starts_with("Retry ")
            {
                events
                    .entry(image.to_owned())
                    .or_default()
                    .push(event.to_owned());
            }
        }
        events
    }
}

/// ` WARN image{06-sunset.png}: gemini_vision: Retry 1/5 ...` as the image and the event's
/// text.
fn image_event(line: &str) -> Option<(&str, &str)> {
    let (_, rest) = line.split_once("image{")?;
    let (image, rest) = rest.split_once("}: ")?;
    let (_target, event) = rest.split_once(": ")?;
    Some((image, event))
}

/// Which fault a retried error was, from the example's short texts.
fn kind(error: &str) -> &'static str {
    match error {
        e if e.starts_with("HTTP 429 RESOURCE_EXHAUSTED") => "429",
        e if e.starts_with("HTTP 503 UNAVAILABLE") => "503",
        e if e.starts_with("HTTP 500 INTERNAL") => "500",
        e if e.starts_with("timed out after 1.5s") => "stall",
        // The reset mid-body: its cause is the OS's text.
        e if e.starts_with("answer cut off (") => "reset",
        _ => "other",
    }
}

const DONE: &str = "done";
const FAILED: &str = "failed";

#[test]
fn the_default_run_is_the_same_every_time_and_tells_its_story() {
    let runs = run_all(&[&[], &[]]);
    let (first, second) = (&runs[0], &runs[1]);

    // The same run twice: every outcome, count, retried error and give-up, in every detail
    // but the jittered waits and the order in which concurrent images log.
    assert_eq!(first.rows(), second.rows());
    assert_eq!(first.summary(), second.summary());
    assert_eq!(first.retries(), second.retries());
    assert_eq!(first.other_events(), second.other_events());

    assert!(
        first.stdout.contains("(fault rate 0.5, seed 2336; "),
        "the defaults the README names:\n{}",
        first.stdout
    );
    // 11 of the 20 requests meet a fault: about half.
    assert_eq!(
        first.summary(),
        "10 images: 9 done, 1 failed; 20 attempts, 20 requests received by the server."
    );
    assert!(
        first
            .stdout
            .contains("Nothing is lost: the failed tasks keep their error")
    );

    let rows = first.rows();
    let outcomes: Vec<(&str, &str, u32)> = rows
        .iter()
        .map(|r| (r.image.as_str(), r.status.as_str(), r.attempts))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("01-red-circle.png", DONE, 1),
            ("02-blue-square.png", DONE, 2),
            ("03-green-triangle.png", DONE, 1),
            // Needs all five attempts.
            ("04-rainbow.png", DONE, 5),
            ("05-checkerboard.png", DONE, 2),
            // Gives up after five, and is kept with its error.
            ("06-sunset.png", FAILED, 5),
            ("07-meadow.png", DONE, 1),
            ("08-swiss-cross.png", DONE, 1),
            ("09-stripes.png", DONE, 1),
            ("10-smiley.png", DONE, 1),
        ]
    );
    for row in &rows {
        let expected = match row.status.as_str() {
            DONE => "gemini-2.0-flash saw a ",
            _ => "HTTP 500 INTERNAL: An internal error has occurred",
        };
        assert!(row.note.starts_with(expected), "{row:?}");
    }

    // Every kind of fault the fake has, each retried, in this order per image.
    let kinds: BTreeMap<String, Vec<&str>> = first
        .retries()
        .into_iter()
        .map(|(image, errors)| (image, errors.iter().map(|e| kind(e)).collect()))
        .collect();
    let expected: BTreeMap<String, Vec<&str>> = [
        ("02-blue-square.png", vec!["503"]),
        ("04-rainbow.png", vec!["stall", "500", "reset", "500"]),
        ("05-checkerboard.png", vec!["503"]),
        ("06-sunset.png", vec!["429", "reset", "503", "reset"]),
    ]
    .into_iter()
    .map(|(image, kinds)| (image.to_owned(), kinds))
    .collect();
    assert_eq!(kinds, expected);

    let events = first.other_events();
    let sunset = &events["06-sunset.png"];
    assert_eq!(
        sunset,
        &[
            "Giving up after 5 attempts (all attempts failed): HTTP 500 INTERNAL: An internal \
             error has occurred",
            "saved as failed after 5 attempts",
        ]
    );
    assert_eq!(events["04-rainbow.png"][0], "Success on attempt 5");
}

#[test]
fn a_per_day_quota_is_not_retried_and_every_image_is_kept() {
    let runs = run_all(&[&["--per-day-quota"]]);
    let run = &runs[0];
    assert_eq!(
        run.summary(),
        "10 images: 0 done, 10 failed; 10 attempts, 10 requests received by the server."
    );
    let rows = run.rows();
    assert_eq!(rows.len(), 10);
    for row in &rows {
        assert_eq!((row.status.as_str(), row.attempts), (FAILED, 1), "{row:?}");
        // The server's "retry after" is saved with the task, although it is not waited
        // for (the table cuts the note at 64 characters).
        assert_eq!(
            row.note, "[retry after 12h34m16s] not retryable: HTTP 429 RESOURCE_EXHA...",
            "{row:?}"
        );
    }
    assert!(run.retries().is_empty(), "no retry:\n{}", run.stderr);
    for (image, events) in run.other_events() {
        assert_eq!(
            events,
            [
                "Not retrying: HTTP 429 RESOURCE_EXHAUSTED: You exceeded your current quota \
                 (the server names a per-day quota)",
                "saved as failed, not retryable: HTTP 429 RESOURCE_EXHAUSTED: You exceeded \
                 your current quota",
            ],
            "{image}"
        );
    }
    assert_eq!(run.other_events().len(), 10);
}
