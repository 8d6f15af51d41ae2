//! Analyses a folder of images with Gemini's `generateContent` and survives its bad days:
//! 429s (with the server's `retryDelay`), 503s, 500s, stalled requests and connections reset
//! mid-answer are retried with exponential backoff; an image that still fails is kept as a
//! `failed` task with its error, its attempt count and the server's "retry after", never lost.
//!
//! By default everything is local: the example reads the ten small PNGs in `examples/images/`
//! and starts `fault-server`'s fake Gemini on 127.0.0.1, which injects faults at a seeded rate,
//! so it needs no network and no key.
//!
//! The fake's faults depend only on the seed and each request, so every run meets the same
//! faults and ends the same way (only the jittered waits and the order of the log lines
//! differ). With the defaults (fault rate 0.5, seed 2336) 11 of its 20 requests meet a fault, of
//! all five kinds; `04-rainbow.png` needs all five attempts, and `06-sunset.png` gives up
//! after five and is kept as failed with its last error, a 500: "9 done, 1 failed; 20
//! attempts, 20 requests received by the server". `tests/gemini_example.rs` runs this binary
//! and checks that story.
//!
//! ```text
//! cargo run --example gemini_vision                        # local fake Gemini, 50% faults
//! cargo run --example gemini_vision -- --fault-rate 0.8    # a very bad day
//! cargo run --example gemini_vision -- --seed 7            # another sequence of faults
//! cargo run --example gemini_vision -- --per-day-quota     # a 429 that is not retried
//! GEMINI_API_KEY=... cargo run --example gemini_vision -- --real --images ~/Pictures
//! ```
//!
//! Logs go to stderr through the progress bar (`RUST_LOG=debug` for more); the summary table
//! goes to stdout. The exit code is 0 whenever every image ended `done` or `failed`: a failed
//! image is an expected outcome, saved for later. Only a setup error (bad flag, unreadable
//! folder, no key for `--real`) exits non-zero.

use std::fmt::Write as _;
use std::io::{self, IsTerminal, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use clap::Parser;
use fault_server::{FaultServer, GeminiFaults};
use indicatif::{ProgressBar, ProgressStyle};
use resilience::http::{HttpError, error_for_status};
use resilience::stats::record_async;
use resilience::{Classify, GiveUpReason, MediaProcessingError, retry_with_backoff};
use tracing::Instrument as _;
use tracing_subscriber::EnvFilter;

const REAL_API: &str = "https://generativelanguage.googleapis.com";
const PROMPT: &str = "Describe this image in one short sentence.";
/// How long one HTTP request may take before the client gives up on it and the retry takes
/// over. The fake server's stalls last longer than this.
const REQUEST_TIMEOUT: Duration = Duration::from_millis(1500);
/// How long a stalled answer of the fake server hangs (the client gives up first).
const FAKE_STALL: Duration = Duration::from_secs(5);

/// Analyse a folder of images with Gemini, retrying 429s, 5xx, timeouts and resets.
#[derive(Debug, Parser)]
#[command(override_usage = "cargo run --example gemini_vision -- [OPTIONS]")]
struct Args {
    /// Analyse the images in DIR (png, jpg, webp, heic) instead of the ten in examples/images
    #[arg(long, value_name = "DIR")]
    images: Option<PathBuf>,
    /// Share of requests the local fake server fails, 0 to 1
    #[arg(long, value_name = "RATE", default_value_t = 0.5, value_parser = rate)]
    fault_rate: f64,
    /// Seed of the fake server's faults
    // 2336: one image of each ending (see the doc comment above), every kind of fault.
    #[arg(long, value_name = "N", default_value_t = 2336)]
    seed: u64,
    /// Images analysed at the same time
    #[arg(long, value_name = "N", default_value_t = 4,
          value_parser = clap::value_parser!(u16).range(1..))]
    concurrency: u16,
    /// Gemini model
    #[arg(long, value_name = "NAME", default_value = "gemini-2.0-flash")]
    model: String,
    /// Make the fake server answer that the daily quota is spent: a 429 that is not retried,
    /// since no wait of seconds can help
    #[arg(long, conflicts_with = "real")]
    per_day_quota: bool,
    /// Call the real Gemini API (needs GEMINI_API_KEY) instead of the fake
    #[arg(long)]
    real: bool,
}

fn rate(text: &str) -> Result<f64, String> {
    text.parse()
        .ok()
        .filter(|rate| (0.0..=1.0).contains(rate))
        .ok_or_else(|| "must be a number between 0 and 1".to_owned())
}

// ---------------------------------------------------------------------------------------------
// The call
// ---------------------------------------------------------------------------------------------

/// Where `generateContent` lives, the key to call it with, and what to ask.
struct Endpoint {
    base: String,
    model: String,
    api_key: String,
    prompt: String,
}

/// Everything `analyze_image` can fail with.
///
/// `#[derive(Classify)]` classifies each variant as the error it wraps: an `HttpError` by its
/// status, its `Retry-After` header and Gemini's `RetryInfo` in its body; a `reqwest::Error`
/// as a timeout or a failed connection. These two are not `#[from]` (not a `source()`), so the
/// log lines show their short texts and not, after them, the whole body or URL again.
#[derive(Debug, thiserror::Error, Classify)]
enum GeminiError {
    /// Gemini answered with an error status: 429 and 5xx are retried, 400 and 401 are not.
    #[error("{}", http_text(.0))]
    Http(HttpError),
    /// No usable answer: timed out, connection refused, reset mid-body.
    #[error("{}", transport_text(.0))]
    Transport(reqwest::Error),
    /// The image file cannot be read: not retried (unless the OS calls it transient).
    #[error("cannot read the image: {0}")]
    Image(#[source] std::io::Error),
    /// A 200 answer without text in it: a repeat will not fix it, so it is not retried.
    #[error("unexpected answer: {0}")]
    BadAnswer(String),
    /// Every attempt failed (or the server asked to wait past the timeout).
    #[error("{0}")]
    Exhausted(#[from] MediaProcessingError),
}

/// Asks Gemini to describe one image.
///
/// The waits here are short for the demo: about 0.4 s, 0.8 s, 1.6 s, then 2 s, plus up to
/// 0.2 s of jitter, and at most 20 s for the whole call, waits included. Production code uses
/// the defaults (the Python original's settings): `#[retry_with_backoff(max_retries = 5)]`
/// waits about 2, 4, 8 and 16 s (base 1 s, cap 30 s, up to 1 s of jitter).
#[retry_with_backoff(
    max_retries = 5,
    base_delay = 0.2,
    max_delay = 2.0,
    jitter = 0.2,
    timeout = 20
)]
async fn analyze_image(
    client: &reqwest::Client,
    endpoint: &Endpoint,
    image: &Path,
) -> Result<String, GeminiError> {
    // A small local file: read in place (tokio's async read would use a blocking thread anyway).
    let bytes = std::fs::read(image).map_err(GeminiError::Image)?;
    let body = serde_json::json!({
        "contents": [{
            "parts": [
                { "text": endpoint.prompt },
                { "inline_data": {
                    "mime_type": mime_type(image).unwrap_or("image/png"),
                    "data": base64::engine::general_purpose::STANDARD.encode(&bytes),
                } },
            ],
        }],
    });
    let url = format!(
        "{}/v1beta/models/{}:generateContent",
        endpoint.base, endpoint.model
    );
    let response = client
        .post(url)
        .header("x-goog-api-key", &endpoint.api_key)
        .json(&body)
        .send()
        .await
        .map_err(GeminiError::Transport)?;
    // An error status becomes an `HttpError` that keeps the status, `Retry-After` and the body.
    let response = error_for_status(response)
        .await
        .map_err(GeminiError::Http)?;
    // Read the whole body first: a connection reset mid-body is a transport error (retried),
    // a complete body that is not what we expect is a bad answer (not retried).
    let answer = response.bytes().await.map_err(GeminiError::Transport)?;
    let answer: serde_json::Value = serde_json::from_slice(&answer)
        .map_err(|e| GeminiError::BadAnswer(format!("not JSON: {e}")))?;
    let text: String = answer
        .pointer("/candidates/0/content/parts")
        .and_then(serde_json::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|part| part.get("text")?.as_str())
        .collect();
    match text.trim() {
        "" => Err(GeminiError::BadAnswer("no text in candidates[0]".into())),
        text => Ok(text.to_owned()),
    }
}

/// `HTTP 429 RESOURCE_EXHAUSTED: You exceeded your current quota`: the status and the first
/// clause of Gemini's own words, short enough for a log line. The whole body stays in the
/// `HttpError`.
fn http_text(error: &HttpError) -> String {
    let json: serde_json::Value = serde_json::from_str(error.body()).unwrap_or_default();
    let field = |name: &str| json["error"][name].as_str();
    match (field("status"), field("message")) {
        (Some(status), Some(message)) => {
            let end = [". ", ", "]
                .iter()
                .filter_map(|stop| message.find(stop))
                .min()
                .unwrap_or(message.len());
            let first = message[..end].trim_end_matches('.');
            format!("HTTP {} {status}: {}", error.status(), shorten(first, 60))
        }
        _ => match error.body().lines().next().map(str::trim) {
            Some(line) if !line.is_empty() => {
                format!("HTTP {}: {}", error.status(), shorten(line, 60))
            }
            _ => format!("HTTP {}", error.status()),
        },
    }
}

/// `timed out after 1.5s`, `cannot connect (...)`, `answer cut off (...)`: what happened, and
/// the innermost cause, without the URL that `reqwest::Error`'s own text repeats.
fn transport_text(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        return format!("timed out after {}", seconds(REQUEST_TIMEOUT));
    }
    let what = if error.is_connect() {
        "cannot connect"
    } else if error.is_body() || error.is_decode() {
        "answer cut off"
    } else {
        "request failed"
    };
    let mut root: &dyn std::error::Error = error;
    while let Some(source) = root.source() {
        root = source;
    }
    format!("{what} ({root})")
}

// ---------------------------------------------------------------------------------------------
// Tasks: every image ends `done` or `failed`
// ---------------------------------------------------------------------------------------------

/// One image's task, as an application would save it.
struct Task {
    image: String,
    outcome: Outcome,
    attempts: u32,
    waited: Duration,
}

enum Outcome {
    Done {
        text: String,
    },
    Failed {
        /// The last error, and why the retries stopped if not for lack of attempts.
        error: String,
        /// How long the server asked to wait, if it said.
        retry_after: Option<Duration>,
    },
}

/// Analyses one image and turns every outcome into a task to save: graceful degradation.
async fn process(client: &reqwest::Client, endpoint: &Endpoint, image: &Path) -> Task {
    // The facts of the call, whatever its ending: its retries and the waits before them.
    let (result, stats) = record_async(analyze_image(client, endpoint, image)).await;
    let attempts = stats.attempts();
    let outcome = match result {
        Ok(text) => {
            tracing::info!(target: "gemini_vision", "done: {}", shorten(&text, 70));
            Outcome::Done { text }
        }
        // All retries spent, the timeout ran out, or the server asked to wait past it: keep the
        // task, with everything needed to retry it later.
        Err(GeminiError::Exhausted(error)) => {
            let retry_after = error.retry_after();
            let hint = retry_after
                .map(|d| format!(", server says retry after {}", seconds(d)))
                .unwrap_or_default();
            tracing::warn!(target: "gemini_vision", "saved as failed after {attempts} attempts{hint}");
            let error = match error.reason() {
                GiveUpReason::AttemptsExhausted => error.last_error_message().to_owned(),
                reason => format!("{reason}: {}", error.last_error_message()),
            };
            Outcome::Failed { error, retry_after }
        }
        // Not retryable (a 400, a 401, a per-day quota, a bad answer): returned at once, unchanged,
        // and saved the same way, with the server's "retry after" if it gave one.
        Err(error) => {
            tracing::warn!(target: "gemini_vision", "saved as failed, not retryable: {error}");
            let retry_after = match &error {
                GeminiError::Http(http) => http.retry_after(),
                _ => None,
            };
            let error = format!("not retryable: {error}");
            Outcome::Failed { error, retry_after }
        }
    };
    Task {
        image: file_name(image),
        outcome,
        attempts,
        waited: stats.waited,
    }
}

// ---------------------------------------------------------------------------------------------
// main
// ---------------------------------------------------------------------------------------------

fn main() -> ExitCode {
    // A bad flag prints clap's error and the usage, and exits with code 2.
    let args = Args::parse();
    let result = tokio::runtime::Runtime::new()
        .context("cannot start the tokio runtime")
        .and_then(|runtime| runtime.block_on(run(args)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    // Checked before anything else, so that `--real` without a key fails at once and clearly.
    let real_key = if args.real {
        match std::env::var("GEMINI_API_KEY") {
            Ok(key) if !key.trim().is_empty() => Some(key.trim().to_owned()),
            _ => bail!(
                "--real calls the real Gemini API and needs a key: set GEMINI_API_KEY \
                 (get one at https://aistudio.google.com/apikey), or leave out --real to use \
                 the local fake server"
            ),
        }
    } else {
        None
    };
    let folder = args
        .images
        .clone()
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/images"));
    let images = list_images(&folder)?;

    // The fake server lives as long as `server`, until the end of `run`.
    let server = match real_key {
        Some(_) => None,
        None => Some(
            FaultServer::gemini(GeminiFaults {
                fault_rate: args.fault_rate,
                seed: args.seed,
                stall: FAKE_STALL,
            })
            .await
            .context("cannot start the local fake Gemini server")?,
        ),
    };
    let endpoint = Endpoint {
        base: server
            .as_ref()
            .map_or_else(|| REAL_API.to_owned(), FaultServer::base_url),
        model: args.model.clone(),
        api_key: real_key.unwrap_or_else(|| "fake-key-for-the-local-server".to_owned()),
        // The fake answers a prompt that mentions "per-day" with the 429 of a spent daily quota.
        prompt: if args.per_day_quota {
            format!("{PROMPT} (per-day quota demo)")
        } else {
            PROMPT.to_owned()
        },
    };

    println!("Analysing {} images in {}", images.len(), folder.display());
    match &server {
        Some(_) => println!(
            "Gemini: local fake server at {} (fault rate {}, seed {}; --real for the real API)",
            endpoint.base, args.fault_rate, args.seed
        ),
        None => println!("Gemini: {} (model {})", endpoint.base, endpoint.model),
    }
    println!();
    let _ = io::stdout().flush();

    let bar = progress_bar(images.len());
    init_logging(&bar);

    let mut client = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(REQUEST_TIMEOUT);
    if server.is_some() {
        // 127.0.0.1 is reached directly, even where HTTP_PROXY is set.
        client = client.no_proxy();
    }
    let client = client.build().context("cannot build the HTTP client")?;
    let started = Instant::now();
    let concurrency = usize::from(args.concurrency);
    let tasks = analyze_all(client, endpoint, &images, concurrency, &bar).await;
    bar.finish();
    if !bar.is_hidden() {
        eprintln!(); // ends the bar's line
    }
    let requests = server.as_ref().map(FaultServer::requests);
    print_summary(&tasks, requests, started.elapsed());
    Ok(())
}

/// Runs up to `concurrency` images at a time; returns their tasks in the images' order.
async fn analyze_all(
    client: reqwest::Client,
    endpoint: Endpoint,
    images: &[PathBuf],
    concurrency: usize,
    bar: &ProgressBar,
) -> Vec<Task> {
    let endpoint = Arc::new(endpoint);
    let permits = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut running = tokio::task::JoinSet::new();
    for (index, image) in images.iter().cloned().enumerate() {
        let (client, endpoint, permits) = (client.clone(), endpoint.clone(), permits.clone());
        let span = tracing::info_span!("image", name = file_name(&image));
        running.spawn(
            async move {
                let _permit = permits.acquire_owned().await;
                (index, process(&client, &endpoint, &image).await)
            }
            .instrument(span),
        );
    }
    // A task that panics (a bug in this example) keeps this placeholder: no image goes missing.
    let mut tasks: Vec<Task> = images
        .iter()
        .map(|image| Task {
            image: file_name(image),
            outcome: Outcome::Failed {
                error: "the task panicked".into(),
                retry_after: None,
            },
            attempts: 0,
            waited: Duration::ZERO,
        })
        .collect();
    let (mut done, mut failed) = (0, 0);
    while let Some(joined) = running.join_next().await {
        match joined {
            Ok((index, task)) => {
                match task.outcome {
                    Outcome::Done { .. } => done += 1,
                    Outcome::Failed { .. } => failed += 1,
                }
                tasks[index] = task;
            }
            Err(e) => {
                failed += 1;
                tracing::error!(target: "gemini_vision", "a task panicked: {e}");
            }
        }
        bar.inc(1);
        bar.set_message(format!("{done} done, {failed} failed"));
    }
    tasks
}

// ---------------------------------------------------------------------------------------------
// Progress bar and logs
// ---------------------------------------------------------------------------------------------

fn progress_bar(len: usize) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    // A fixed template: it cannot fail to parse, but a fallback keeps this free of `unwrap`.
    let style = ProgressStyle::with_template(
        "{spinner:.cyan} [{elapsed_precise}] {bar:30.cyan/blue} {pos}/{len} images  {msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    bar.set_style(style);
    bar.set_message("0 done, 0 failed");
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

/// Sends `tracing` events to stderr, each line printed with the bar out of the way, so the
/// bar stays at the bottom and the log lines above it stay whole. When stderr is not a
/// terminal the bar is hidden and the lines are printed as they are.
///
/// The retry events also carry the fields `function`, `attempt`, `max_retries` and `delay_ms`
/// for machines; their text already says the same, so this terminal view leaves them out.
fn init_logging(bar: &ProgressBar) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fields = tracing_subscriber::fmt::format::debug_fn(|out, field, value| {
        match field.name() {
            "message" => write!(out, "{value:?}"),
            "function" | "attempt" | "max_retries" | "delay_ms" => Ok(()),
            // The image span: `image{03-green-triangle.png}`.
            "name" => write!(out, "{}", format!("{value:?}").trim_matches('"')),
            name => write!(out, " {name}={value:?}"),
        }
    });
    let bar = bar.clone();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .fmt_fields(fields)
        .with_writer(move || LogLine(bar.clone(), Vec::new()))
        .with_ansi(io::stderr().is_terminal())
        .without_time()
        .init();
}

/// One event's text, printed in one piece, above the bar, when the event is written.
struct LogLine(ProgressBar, Vec<u8>);

impl io::Write for LogLine {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.1.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        if !self.1.is_empty() {
            self.0.suspend(|| {
                let _ = io::stderr().lock().write_all(&self.1);
            });
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Summary
// ---------------------------------------------------------------------------------------------

fn print_summary(tasks: &[Task], requests: Option<usize>, elapsed: Duration) {
    let width = tasks
        .iter()
        .map(|t| t.image.chars().count())
        .max()
        .unwrap_or(0)
        .max(5);
    let header = format!(
        "{:<width$}  {:<6}  {:>8}  {:>6}  answer / error",
        "image", "status", "attempts", "waited"
    );
    let rows: Vec<String> = tasks
        .iter()
        .map(|task| {
            let (status, note) = match &task.outcome {
                Outcome::Done { text } => ("done", text.clone()),
                Outcome::Failed { error, retry_after } => {
                    let hint = retry_after
                        .map(|d| format!("[retry after {}] ", seconds(d)))
                        .unwrap_or_default();
                    ("failed", format!("{hint}{error}"))
                }
            };
            format!(
                "{:<width$}  {status:<6}  {:>8}  {:>6}  {}",
                task.image,
                task.attempts,
                seconds(task.waited),
                shorten(&note, 64),
            )
        })
        .collect();
    let rule = rows
        .iter()
        .chain([&header])
        .map(|l| l.chars().count())
        .max();
    let mut out = format!("\n{header}\n{}\n", "-".repeat(rule.unwrap_or(0)));
    for row in &rows {
        let _ = writeln!(out, "{row}");
    }
    let done = tasks
        .iter()
        .filter(|t| matches!(t.outcome, Outcome::Done { .. }))
        .count();
    let failed = tasks.len() - done;
    let attempts: u32 = tasks.iter().map(|t| t.attempts).sum();
    let _ = write!(
        out,
        "\n{} images in {}: {done} done, {failed} failed; {attempts} attempts",
        tasks.len(),
        seconds(elapsed),
    );
    if let Some(requests) = requests {
        let _ = write!(out, ", {requests} requests received by the server");
    }
    out.push_str(".\n");
    if failed > 0 {
        out.push_str(
            "Nothing is lost: the failed tasks keep their error, attempts and any \"retry after\", \
             ready for a later retry.\n",
        );
    } else if requests.is_some() {
        out.push_str(
            "Every image made it. For a worse day: --fault-rate 0.8, or --per-day-quota.\n",
        );
    }
    let _ = io::stdout().lock().write_all(out.as_bytes());
}

/// `text` on one line, cut to `max` characters (on a character boundary) with `...`.
fn shorten(text: &str, max: usize) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(max.saturating_sub(3)) {
        Some((cut, _)) if one_line.chars().count() > max => format!("{}...", &one_line[..cut]),
        _ => one_line,
    }
}

/// `0.4s`, `53.0s`, or `12h34m16s` for the long waits of a spent daily quota.
fn seconds(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{:.1}s", d.as_secs_f64()),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m{:02}s", s / 3600, s / 60 % 60, s % 60),
    }
}

// ---------------------------------------------------------------------------------------------
// Images
// ---------------------------------------------------------------------------------------------

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |name| name.to_string_lossy().into_owned(),
    )
}

/// The types Gemini reads inline, by extension.
fn mime_type(image: &Path) -> Option<&'static str> {
    let extension = image.extension()?.to_str()?.to_ascii_lowercase();
    Some(match extension.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "heic" => "image/heic",
        "heif" => "image/heif",
        _ => return None,
    })
}

/// The images in `folder` that Gemini reads inline, sorted by name.
fn list_images(folder: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(folder)
        .with_context(|| format!("cannot read the image folder {}", folder.display()))?;
    let mut images = Vec::new();
    for entry in entries {
        let path = entry
            .with_context(|| format!("cannot list {}", folder.display()))?
            .path();
        if mime_type(&path).is_some() && path.is_file() {
            images.push(path);
        }
    }
    images.sort();
    if images.is_empty() {
        bail!(
            "no images (png, jpg, webp, heic) in {}; leave out --images to use the ten in \
             examples/images",
            folder.display()
        );
    }
    Ok(images)
}
