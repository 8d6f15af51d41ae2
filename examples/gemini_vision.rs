//! Analyses a folder of images with Gemini's `generateContent` and survives its bad days:
//! 429s (with the server's `retryDelay`), 503s, 500s, stalled requests and connections reset
//! mid-answer are retried with exponential backoff; an image that still fails is kept as a
//! `failed` task with its error, its attempt count and the server's "retry after", never lost.
//!
//! By default everything is local: the example draws ten small PNGs into a temp folder and starts
//! a fake Gemini server on 127.0.0.1 that injects faults, so it needs no network and no key.
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
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use indicatif::{ProgressBar, ProgressStyle};
use resilience::http::{HttpError, error_for_status};
use resilience::{Classify, GiveUpReason, MediaProcessingError, retry_with_backoff};
use tracing::Instrument as _;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

const REAL_API: &str = "https://generativelanguage.googleapis.com";
const DEFAULT_MODEL: &str = "gemini-2.0-flash";
const PROMPT: &str = "Describe this image in one short sentence.";
/// How long one HTTP request may take before the client gives up on it and the retry takes
/// over. The fake server's stalls last longer than this.
const REQUEST_TIMEOUT: Duration = Duration::from_millis(1500);
/// How long a stalled answer of the fake server hangs (the client gives up first).
const FAKE_STALL: Duration = Duration::from_secs(5);

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

impl Endpoint {
    fn url(&self) -> String {
        format!(
            "{}/v1beta/models/{}:generateContent",
            self.base.trim_end_matches('/'),
            self.model
        )
    }
}

/// What the model says about an image.
#[derive(Debug)]
struct Analysis {
    text: String,
}

/// Everything `analyze_image` can fail with.
///
/// `#[derive(Classify)]` classifies each variant as the error it wraps: an `HttpError` by its
/// status, its `Retry-After` header and Gemini's `RetryInfo` in its body; a `reqwest::Error`
/// as a timeout or a failed connection. That holds through `#[error(transparent)]` too; here
/// the two variants have messages of their own only to keep the log lines short.
#[derive(Debug, thiserror::Error, Classify)]
enum GeminiError {
    /// Gemini answered with an error status: 429 and 5xx are retried, 400 and 401 are not.
    #[error("{}", http_text(.0))]
    Http(#[from] HttpError),
    /// No usable answer: timed out, connection refused, reset mid-body.
    #[error("{}", transport_text(.0))]
    Transport(#[from] reqwest::Error),
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
/// the design note's settings, which are the defaults: `#[retry_with_backoff(max_retries = 5)]`
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
) -> Result<Analysis, GeminiError> {
    let _attempt = AttemptClock::start();
    // A small local file: read in place (tokio's async read would use a blocking thread anyway).
    let bytes = std::fs::read(image).map_err(GeminiError::Image)?;
    let body = serde_json::json!({
        "contents": [{
            "parts": [
                { "text": endpoint.prompt },
                { "inline_data": {
                    "mime_type": mime_type(image),
                    "data": base64::engine::general_purpose::STANDARD.encode(&bytes),
                } },
            ],
        }],
    });
    let response = client
        .post(endpoint.url())
        .header("x-goog-api-key", &endpoint.api_key)
        .json(&body)
        .send()
        .await?;
    // An error status becomes an `HttpError` that keeps the status, `Retry-After` and the body.
    let response = error_for_status(response).await?;
    // Read the whole body first: a connection reset mid-body is a transport error (retried),
    // a complete body that is not what we expect is a bad answer (not retried).
    let answer = response.bytes().await?;
    let answer: serde_json::Value = serde_json::from_slice(&answer)
        .map_err(|e| GeminiError::BadAnswer(format!("not JSON: {e}")))?;
    let text = answer
        .pointer("/candidates/0/content/parts")
        .and_then(serde_json::Value::as_array)
        .map(|parts| {
            parts
                .iter()
                .filter_map(|part| part.get("text").and_then(serde_json::Value::as_str))
                .collect::<String>()
        })
        .filter(|text| !text.trim().is_empty())
        .ok_or_else(|| GeminiError::BadAnswer("no text in candidates[0]".into()))?;
    Ok(Analysis {
        text: text.trim().to_owned(),
    })
}

/// `HTTP 429 RESOURCE_EXHAUSTED: Resource has been exhausted`: the status and Gemini's own
/// words, short enough for a log line. The whole body stays in the `HttpError`.
fn http_text(error: &HttpError) -> String {
    let json: Option<serde_json::Value> = serde_json::from_str(error.body()).ok();
    let field = |name: &str| {
        json.as_ref()
            .and_then(|j| j.pointer(&format!("/error/{name}")))
            .and_then(serde_json::Value::as_str)
    };
    let mut text = format!("HTTP {}", error.status());
    match (field("status"), field("message")) {
        (Some(status), Some(message)) => {
            // The first clause says it: "The model is overloaded", "You exceeded your current
            // quota".
            let end = [". ", ", "]
                .iter()
                .filter_map(|stop| message.find(stop))
                .min()
                .unwrap_or(message.len());
            let first = message[..end].trim_end_matches('.');
            let _ = write!(text, " {status}: {}", shorten(first, 60));
        }
        _ => {
            let first_line = error.body().lines().next().unwrap_or("").trim();
            if !first_line.is_empty() {
                let _ = write!(text, ": {}", shorten(first_line, 60));
            }
        }
    }
    text
}

/// `timed out after 1.5s`, `cannot connect (...)`, `answer cut off (...)`: what happened, and
/// the innermost cause, without the URL that `reqwest::Error`'s own text repeats.
fn transport_text(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        return format!("timed out after {:.1}s", REQUEST_TIMEOUT.as_secs_f64());
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

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |name| name.to_string_lossy().into_owned(),
    )
}

fn mime_type(image: &Path) -> &'static str {
    let extension = image
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match extension.as_deref() {
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("webp") => "image/webp",
        Some("heic") => "image/heic",
        Some("heif") => "image/heif",
        _ => "image/png",
    }
}

// ---------------------------------------------------------------------------------------------
// Counting attempts and waits
// ---------------------------------------------------------------------------------------------

// The attribute counts attempts only when it gives up (`MediaProcessingError::attempts()`).
// To show attempts and time spent waiting for every image, each attempt checks in with the
// clock of its image's task.
tokio::task_local! {
    static ATTEMPTS: Arc<AttemptLog>;
}

/// The attempts of one image: how many, and how long they ran (the rest of the time was spent
/// waiting between them).
#[derive(Default)]
struct AttemptLog {
    count: AtomicU32,
    busy: Mutex<Duration>,
}

/// One attempt; adds its duration to the log when it ends, however it ends (even when the
/// call's `timeout` drops it mid-request).
struct AttemptClock {
    log: Option<Arc<AttemptLog>>,
    start: Instant,
}

impl AttemptClock {
    fn start() -> Self {
        let log = ATTEMPTS.try_with(Arc::clone).ok();
        if let Some(log) = &log {
            log.count.fetch_add(1, Ordering::Relaxed);
        }
        Self {
            log,
            start: Instant::now(),
        }
    }
}

impl Drop for AttemptClock {
    fn drop(&mut self) {
        if let Some(log) = &self.log {
            *log.busy.lock().unwrap_or_else(PoisonError::into_inner) += self.start.elapsed();
        }
    }
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
    let log = Arc::new(AttemptLog::default());
    let started = Instant::now();
    let result = ATTEMPTS
        .scope(log.clone(), analyze_image(client, endpoint, image))
        .await;
    let elapsed = started.elapsed();
    let busy = *log.busy.lock().unwrap_or_else(PoisonError::into_inner);
    let counted = log.count.load(Ordering::Relaxed);
    let (outcome, attempts) = match result {
        Ok(analysis) => {
            tracing::info!(target: "gemini_vision", "done: {}", shorten(&analysis.text, 70));
            (
                Outcome::Done {
                    text: analysis.text,
                },
                counted,
            )
        }
        // All retries spent, the timeout ran out, or the server asked to wait past it: keep the
        // task, with everything needed to retry it later.
        Err(GeminiError::Exhausted(error)) => {
            let retry_after = error.retry_after();
            let hint = retry_after
                .map(|d| format!(", server says retry after {}", seconds(d)))
                .unwrap_or_default();
            tracing::warn!(
                target: "gemini_vision",
                "saved as failed after {} attempts{hint}",
                error.attempts()
            );
            let text = match error.reason() {
                GiveUpReason::AttemptsExhausted => error.last_error_message().to_owned(),
                reason => format!("{reason}: {}", error.last_error_message()),
            };
            (
                Outcome::Failed {
                    error: text,
                    retry_after,
                },
                error.attempts(),
            )
        }
        // Not retryable (a 400, a 401, a per-day quota, a bad answer): returned at once, unchanged,
        // and saved the same way, with the server's "retry after" if it gave one.
        Err(error) => {
            tracing::warn!(target: "gemini_vision", "saved as failed, not retryable: {error}");
            let retry_after = match &error {
                GeminiError::Http(http) => http.retry_after(),
                _ => None,
            };
            (
                Outcome::Failed {
                    error: format!("not retryable: {error}"),
                    retry_after,
                },
                counted,
            )
        }
    };
    Task {
        image: file_name(image),
        outcome,
        attempts,
        waited: elapsed.saturating_sub(busy),
    }
}

// ---------------------------------------------------------------------------------------------
// main
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
struct Args {
    images: Option<PathBuf>,
    fault_rate: f64,
    seed: u64,
    real: bool,
    model: String,
    concurrency: usize,
    per_day_quota: bool,
}

const USAGE: &str = "\
Analyse a folder of images with Gemini, retrying 429s, 5xx, timeouts and resets.

Usage: cargo run --example gemini_vision -- [OPTIONS]

Options:
  --images DIR         analyse the images in DIR (png, jpg, webp, heic) instead of ten
                       generated ones
  --fault-rate RATE    share of requests the local fake server fails, 0 to 1 [default: 0.5]
  --seed N             seed of the fake server's faults [default: 3]
  --concurrency N      images analysed at the same time [default: 4]
  --model NAME         Gemini model [default: gemini-2.0-flash]
  --per-day-quota      make the fake server answer that the daily quota is spent: a 429 that
                       is not retried, since no wait of seconds can help
  --real               call the real Gemini API (needs GEMINI_API_KEY) instead of the fake
  -h, --help           print this help";

fn parse_args() -> anyhow::Result<Option<Args>> {
    let mut args = Args {
        images: None,
        fault_rate: 0.5,
        seed: 3,
        real: false,
        model: DEFAULT_MODEL.to_owned(),
        concurrency: 4,
        per_day_quota: false,
    };
    let mut raw = std::env::args_os().skip(1);
    while let Some(arg) = raw.next() {
        let arg = arg
            .into_string()
            .map_err(|a| anyhow::anyhow!("argument {a:?} is not UTF-8"))?;
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag.to_owned(), Some(value.into())),
            _ => (arg, None),
        };
        let mut value = |what: &str| -> anyhow::Result<std::ffi::OsString> {
            inline
                .clone()
                .or_else(|| raw.next())
                .with_context(|| format!("{flag} needs {what}"))
        };
        let text = |v: std::ffi::OsString| {
            v.into_string()
                .map_err(|v| anyhow::anyhow!("{v:?} is not UTF-8"))
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--images" => args.images = Some(value("a folder")?.into()),
            "--fault-rate" => {
                let rate = text(value("a rate between 0 and 1")?)?;
                args.fault_rate = rate
                    .parse()
                    .ok()
                    .filter(|r: &f64| (0.0..=1.0).contains(r))
                    .with_context(|| {
                        format!("--fault-rate must be between 0 and 1, not {rate:?}")
                    })?;
            }
            "--seed" => {
                let seed = text(value("a number")?)?;
                args.seed = seed
                    .parse()
                    .with_context(|| format!("--seed must be a whole number, not {seed:?}"))?;
            }
            "--concurrency" => {
                let n = text(value("a number")?)?;
                args.concurrency = n
                    .parse()
                    .ok()
                    .filter(|n| *n >= 1)
                    .with_context(|| format!("--concurrency must be at least 1, not {n:?}"))?;
            }
            "--model" => args.model = text(value("a model name")?)?,
            "--real" => args.real = true,
            "--per-day-quota" => args.per_day_quota = true,
            other => bail!("unknown argument {other:?}; see --help"),
        }
    }
    Ok(Some(args))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    if args.real && args.per_day_quota {
        bail!(
            "--per-day-quota asks the local fake server for a per-day quota 429; leave out --real"
        );
    }
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

    let (folder, generated) = match &args.images {
        Some(dir) => (dir.clone(), false),
        None => (generate_images()?, true),
    };
    let images = list_images(&folder)?;

    // The fake server lives as long as `server`, until the end of `run`.
    let (endpoint, server) = match real_key {
        Some(api_key) => (
            Endpoint {
                base: REAL_API.to_owned(),
                model: args.model.clone(),
                api_key,
                prompt: PROMPT.to_owned(),
            },
            None,
        ),
        None => {
            let server = fault_server::FaultServer::gemini(fault_server::GeminiFaults {
                fault_rate: args.fault_rate,
                seed: args.seed,
                stall: FAKE_STALL,
            })
            .await
            .context("cannot start the local fake Gemini server")?;
            let endpoint = Endpoint {
                base: server.base_url(),
                model: args.model.clone(),
                api_key: "fake-key-for-the-local-server".to_owned(),
                // The fake answers a prompt that mentions "per-day" with the 429 of a spent
                // daily quota.
                prompt: if args.per_day_quota {
                    format!("{PROMPT} (per-day quota demo)")
                } else {
                    PROMPT.to_owned()
                },
            };
            (endpoint, Some(server))
        }
    };

    println!(
        "Analysing {} images in {}{}",
        images.len(),
        folder.display(),
        if generated { " (generated)" } else { "" }
    );
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
    let tasks = analyze_all(client, endpoint, images, args.concurrency, &bar).await;
    bar.finish();
    if !bar.is_hidden() {
        eprintln!(); // ends the bar's line
    }

    print_summary(
        &tasks,
        server.as_ref().map(|s| s.requests()),
        started.elapsed(),
    );
    Ok(())
}

/// Runs up to `concurrency` images at a time; returns their tasks in the images' order.
async fn analyze_all(
    client: reqwest::Client,
    endpoint: Endpoint,
    images: Vec<PathBuf>,
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
    let mut tasks: Vec<Option<Task>> = images.iter().map(|_| None).collect();
    let (mut done, mut failed) = (0, 0);
    while let Some(joined) = running.join_next().await {
        match joined {
            Ok((index, task)) => {
                match task.outcome {
                    Outcome::Done { .. } => done += 1,
                    Outcome::Failed { .. } => failed += 1,
                }
                tasks[index] = Some(task);
            }
            // A panic in a task is a bug in this example; say so rather than lose the image.
            Err(e) => tracing::error!(target: "gemini_vision", "a task panicked: {e}"),
        }
        bar.inc(1);
        bar.set_message(format!("{done} done, {failed} failed"));
    }
    tasks
        .into_iter()
        .zip(&images)
        .map(|(task, image)| {
            task.unwrap_or_else(|| Task {
                image: file_name(image),
                outcome: Outcome::Failed {
                    error: "the task panicked".into(),
                    retry_after: None,
                },
                attempts: 0,
                waited: Duration::ZERO,
            })
        })
        .collect()
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
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .fmt_fields(fields)
        .with_writer(AboveTheBar(bar.clone()))
        .with_ansi(io::stderr().is_terminal())
        .without_time()
        .init();
}

#[derive(Clone)]
struct AboveTheBar(ProgressBar);

impl<'a> MakeWriter<'a> for AboveTheBar {
    type Writer = LogLine;

    fn make_writer(&'a self) -> LogLine {
        LogLine {
            bar: self.0.clone(),
            text: Vec::new(),
        }
    }
}

/// One event's text; printed in one piece when the event is written.
struct LogLine {
    bar: ProgressBar,
    text: Vec<u8>,
}

impl io::Write for LogLine {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.text.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        if !self.text.is_empty() {
            self.bar.suspend(|| {
                let _ = io::stderr().lock().write_all(&self.text);
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
        .chain([5])
        .max()
        .unwrap_or(5);
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
    let rule_width = rows
        .iter()
        .chain([&header])
        .map(|line| line.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    let _ = writeln!(out, "\n{header}\n{}", "-".repeat(rule_width));
    for row in &rows {
        let _ = writeln!(out, "{row}");
    }
    let done = tasks
        .iter()
        .filter(|t| matches!(t.outcome, Outcome::Done { .. }))
        .count();
    let failed = tasks.len() - done;
    let attempts: u32 = tasks.iter().map(|t| t.attempts).sum();
    let _ = writeln!(out);
    let _ = write!(
        out,
        "{} images in {}: {done} done, {failed} failed; {attempts} attempts",
        tasks.len(),
        seconds(elapsed),
    );
    if let Some(requests) = requests {
        let _ = write!(out, ", {requests} requests received by the server");
    }
    let _ = writeln!(out, ".");
    if failed == 0 && requests.is_some() {
        let _ = writeln!(
            out,
            "Every image made it. For a worse day: --fault-rate 0.8, or --per-day-quota."
        );
    }
    if failed > 0 {
        let _ = writeln!(
            out,
            "Nothing is lost: the failed tasks keep their error, attempts and any \"retry after\", \
             ready for a later retry."
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

/// The images in `folder` that Gemini reads inline, sorted by name.
fn list_images(folder: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(folder)
        .with_context(|| format!("cannot read the image folder {}", folder.display()))?;
    let mut images = Vec::new();
    for entry in entries {
        let path = entry
            .with_context(|| format!("cannot list {}", folder.display()))?
            .path();
        let extension = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        let is_image = matches!(
            extension.as_deref(),
            Some("png" | "jpg" | "jpeg" | "webp" | "heic" | "heif")
        );
        if is_image && path.is_file() {
            images.push(path);
        }
    }
    images.sort();
    if images.is_empty() {
        bail!(
            "no images (png, jpg, webp, heic) in {}; leave out --images to use generated ones",
            folder.display()
        );
    }
    Ok(images)
}

/// Draws ten small, recognisable pictures into a temp folder: PNGs from 24x24 to 42x42 pixels,
/// 2 to 5 KiB each, the same every run.
fn generate_images() -> anyhow::Result<PathBuf> {
    type Painter = fn(f64, f64) -> [u8; 3];
    const WHITE: [u8; 3] = [255, 255, 255];
    let pictures: [(&str, Painter); 10] = [
        ("01-red-circle.png", |x, y| {
            if (x - 0.5).hypot(y - 0.5) < 0.35 {
                [220, 30, 40]
            } else {
                WHITE
            }
        }),
        ("02-blue-square.png", |x, y| {
            if (0.2..0.8).contains(&x) && (0.2..0.8).contains(&y) {
                [30, 60, 200]
            } else {
                [250, 220, 60]
            }
        }),
        ("03-green-triangle.png", |x, y| {
            if y > 0.15 && y < 0.85 && (x - 0.5).abs() < (y - 0.15) * 0.6 {
                [40, 170, 70]
            } else {
                WHITE
            }
        }),
        ("04-rainbow.png", |_, y| {
            const BANDS: [[u8; 3]; 6] = [
                [230, 40, 40],
                [245, 140, 30],
                [245, 220, 40],
                [50, 170, 70],
                [40, 90, 210],
                [120, 50, 170],
            ];
            BANDS[((y * 6.0) as usize).min(5)]
        }),
        ("05-checkerboard.png", |x, y| {
            if ((x * 8.0) as u32 + (y * 8.0) as u32).is_multiple_of(2) {
                [20, 20, 20]
            } else {
                [235, 235, 235]
            }
        }),
        ("06-sunset.png", |x, y| {
            if (x - 0.5).hypot(y - 0.7) < 0.2 && y < 0.75 {
                [255, 210, 60]
            } else if y >= 0.75 {
                [20, 40, 90]
            } else {
                [250, (150.0 - 120.0 * y) as u8, (60.0 + 120.0 * y) as u8]
            }
        }),
        ("07-meadow.png", |x, y| {
            if y > 0.65 + 0.05 * (x * 9.0).sin() {
                [60, 160, 60]
            } else {
                [(120.0 + 100.0 * y) as u8, (180.0 + 60.0 * y) as u8, 250]
            }
        }),
        ("08-swiss-cross.png", |x, y| {
            let bar = |a: f64, b: f64| (0.4..0.6).contains(&a) && (0.2..0.8).contains(&b);
            if bar(x, y) || bar(y, x) {
                WHITE
            } else {
                [215, 25, 32]
            }
        }),
        ("09-stripes.png", |x, y| {
            if (((x + y) * 6.0) as u32).is_multiple_of(2) {
                [250, 200, 30]
            } else {
                [30, 30, 30]
            }
        }),
        ("10-smiley.png", |x, y| {
            let (dx, dy) = (x - 0.5, y - 0.5);
            let r = dx.hypot(dy);
            let eye = (x - 0.37).hypot(y - 0.38) < 0.06 || (x - 0.63).hypot(y - 0.38) < 0.06;
            let mouth = (0.2..0.28).contains(&r) && dy > 0.08;
            if r < 0.42 && !(eye || mouth) {
                [255, 215, 0]
            } else if r < 0.42 {
                [40, 30, 20]
            } else {
                [90, 170, 230]
            }
        }),
    ];
    let folder = std::env::temp_dir().join("resilience-gemini-vision-images");
    std::fs::create_dir_all(&folder)
        .with_context(|| format!("cannot create {}", folder.display()))?;
    for (side, (name, paint)) in (24..).step_by(2).zip(pictures) {
        let path = folder.join(name);
        std::fs::write(&path, png(side, side, paint))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(folder)
}

/// A minimal PNG encoder: 8-bit RGB, no filtering, deflate "stored" blocks (no compression),
/// so it needs no crate. `paint` gets the pixel's centre in `0..1` on both axes.
fn png(width: u32, height: u32, paint: fn(f64, f64) -> [u8; 3]) -> Vec<u8> {
    let mut raw = Vec::new();
    for y in 0..height {
        raw.push(0); // filter type: none
        for x in 0..width {
            let u = (f64::from(x) + 0.5) / f64::from(width);
            let v = (f64::from(y) + 0.5) / f64::from(height);
            raw.extend_from_slice(&paint(u, v));
        }
    }
    // zlib: header, stored blocks of at most 65535 bytes, Adler-32 of the raw data.
    let mut zlib = vec![0x78, 0x01];
    let mut blocks = raw.chunks(0xFFFF).peekable();
    while let Some(block) = blocks.next() {
        zlib.push(u8::from(blocks.peek().is_none()));
        let len = block.len() as u16;
        zlib.extend_from_slice(&len.to_le_bytes());
        zlib.extend_from_slice(&(!len).to_le_bytes());
        zlib.extend_from_slice(block);
    }
    let (a, b) = raw.iter().fold((1u32, 0u32), |(a, b), &byte| {
        let a = (a + u32::from(byte)) % 65521;
        (a, (b + a) % 65521)
    });
    zlib.extend_from_slice(&((b << 16) | a).to_be_bytes());

    let mut header = Vec::new();
    header.extend_from_slice(&width.to_be_bytes());
    header.extend_from_slice(&height.to_be_bytes());
    header.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit, RGB, deflate, no filter, no interlace

    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    for (kind, data) in [
        (b"IHDR", &header[..]),
        (b"IDAT", &zlib[..]),
        (b"IEND", &[][..]),
    ] {
        png.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let start = png.len();
        png.extend_from_slice(kind);
        png.extend_from_slice(data);
        let crc = crc32(&png[start..]);
        png.extend_from_slice(&crc.to_be_bytes());
    }
    png
}

/// CRC-32 (IEEE), as PNG chunks need it.
fn crc32(bytes: &[u8]) -> u32 {
    !bytes.iter().fold(!0u32, |crc, &byte| {
        (0..8).fold(crc ^ u32::from(byte), |crc, _| {
            (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg())
        })
    })
}
