//! The Python original's `call_gemini_api`, ported: one attribute turns a flaky call into one that
//! retries 429s, 503s and timeouts with exponential backoff, returns a bad request at once, and
//! gives up with a `MediaProcessingError` that the caller saves with the task, so nothing is lost.
//!
//! The "Gemini API" is `fault-server`'s fake Gemini on 127.0.0.1, called over HTTP with
//! `reqwest`; a script per image (`flaky_gemini`, at the end) decides its answers, so every
//! run tells the same story. No network is used.
//!
//! Run it with `cargo run --example quickstart`.

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use fault_server::{FakeGemini, Fault, FaultServer, GeminiFaults};
use resilience::http::{HttpError, error_for_status};
use resilience::{Classify, MediaProcessingError, retry_with_backoff};

/// What the model says about an image.
#[derive(Debug, Clone)]
struct Analysis {
    caption: String,
}

/// Everything `call_gemini_api` can fail with. `#[derive(Classify)]` classifies each variant
/// as the error it wraps.
#[derive(Debug, thiserror::Error, Classify)]
enum ApiError {
    /// An error answer, such as `HTTP 429: Resource Exhausted`: the status decides. 429, 503
    /// and 500 are retried, 400 and 401 are not.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// No answer: a timeout or a refused connection is retried.
    #[error(transparent)]
    Request(#[from] reqwest::Error),
    /// The image cannot be read.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// All attempts failed: the attribute returns this through `From`.
    #[error(transparent)]
    Exhausted(#[from] MediaProcessingError),
}

/// The client and the `generateContent` URL.
struct Gemini {
    client: reqwest::Client,
    url: String,
}

/// Analyses an image with Gemini.
///
/// Production code uses the Python original's settings, which are also the defaults:
/// `#[retry_with_backoff(max_retries = 5, base_delay = 1.0, max_delay = 30.0)]` with up to 1 s
/// of jitter, so the waits are about 2.x, 4.x, 8.x and 16.x seconds. The example uses delays
/// twenty times shorter so that it runs in about two seconds.
#[retry_with_backoff(max_retries = 5, base_delay = 0.05, max_delay = 1.0, jitter = 0.05)]
async fn call_gemini_api(gemini: &Gemini, image_path: &Path) -> Result<Analysis, ApiError> {
    // `?` and `return` end this attempt only; the attribute decides whether another follows.
    let image = std::fs::read(image_path)?;
    let request = serde_json::json!({ "contents": [{ "parts": [
        { "text": format!("Describe {} in one short sentence.", name(image_path)) },
        { "inline_data": {
            "mime_type": "image/png",
            "data": base64::engine::general_purpose::STANDARD.encode(image),
        } },
    ] }] });
    let response = gemini
        .client
        .post(&gemini.url)
        .json(&request)
        .send()
        .await?;
    let answer: serde_json::Value = error_for_status(response).await?.json().await?;
    let caption = answer["candidates"][0]["content"]["parts"][0]["text"].as_str();
    Ok(Analysis {
        caption: caption.unwrap_or_default().to_owned(),
    })
}

/// How long one request may take before the client gives up on it (and the retry takes over).
const REQUEST_TIMEOUT: Duration = Duration::from_millis(200);

/// Where a task ended up.
#[derive(Debug, Clone, Copy)]
enum Status {
    /// Analysed.
    Done,
    /// Every attempt failed with a retryable error: worth a manual retry later.
    Failed,
    /// The API refused the input itself: retrying will not help, the input must be fixed.
    Rejected,
}

/// One image's task, as the application stores it (in memory here; `media_queue` uses SQLite).
#[derive(Debug)]
struct Task {
    image: String,
    status: Status,
    attempts: usize,
    error_message: Option<String>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    // Shows the attribute's events (target `resilience`): WARN `Retry 1/5 after ...` and
    // INFO `Success on attempt 3`, with their fields.
    tracing_subscriber::fmt().without_time().init();

    // The fake Gemini on 127.0.0.1, scripted per image (`flaky_gemini`, at the end).
    let server = FaultServer::gemini(flaky_gemini()).await?;
    // `no_proxy`: 127.0.0.1 is reached directly, even where HTTP_PROXY is set.
    let client = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .no_proxy();
    let gemini = Gemini {
        client: client.build()?,
        url: server.url("/v1beta/models/gemini-2.0-flash:generateContent"),
    };

    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/images");
    let mut saved: Vec<Task> = Vec::new();
    for image in IMAGES.map(|name| folder.join(name)) {
        tracing::info!("Analysing {}", name(&image));
        // The attribute counts attempts only when it gives up; the server counts requests.
        let before = server.requests();
        let result = call_gemini_api(&gemini, &image).await;
        let attempts = server.requests() - before;
        saved.push(task(&image, result, attempts));
    }
    print_summary(&saved);
    Ok(())
}

/// Turns every outcome into a task to save: graceful degradation.
fn task(image: &Path, result: Result<Analysis, ApiError>, attempts: usize) -> Task {
    let (status, error_message) = match result {
        Ok(analysis) => {
            tracing::info!("{}: {}", name(image), analysis.caption);
            (Status::Done, None)
        }
        // All retries spent: keep the task, with the error and the attempt count.
        Err(ApiError::Exhausted(error)) => {
            tracing::error!("Image analysis failed: {error}");
            (Status::Failed, Some(error.to_string()))
        }
        // Not retryable: returned unchanged after one attempt.
        Err(error) => {
            tracing::error!("Image rejected: {error}");
            (Status::Rejected, Some(error.to_string()))
        }
    };
    Task {
        image: name(image),
        status,
        attempts,
        error_message,
    }
}

fn print_summary(tasks: &[Task]) {
    println!();
    println!("{:<22} {:<9} {:>8}  error", "image", "status", "attempts");
    for task in tasks {
        let error = task.error_message.as_deref().unwrap_or("-");
        let status = format!("{:?}", task.status).to_lowercase();
        println!(
            "{:<22} {status:<9} {:>8}  {error}",
            task.image, task.attempts
        );
    }
    let kept = tasks
        .iter()
        .filter(|t| !matches!(t.status, Status::Done))
        .count();
    println!(
        "\n{} of {} tasks saved; {kept} kept with their error for a later look.",
        tasks.len(),
        tasks.len()
    );
}

fn name(path: &Path) -> String {
    path.file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}

/// The images analysed, from `examples/images/`.
const IMAGES: [&str; 6] = [
    "06-sunset.png",
    "07-meadow.png",
    "02-blue-square.png",
    "05-checkerboard.png",
    "09-stripes.png",
    "04-rainbow.png",
];

/// The fake Gemini's script: which image meets which answer; the others are answered at once.
/// Short bodies keep the log lines short (`gemini_vision` shows Gemini's whole error answers).
fn flaky_gemini() -> FakeGemini {
    let rate_limited = || Fault::status(429, "Resource Exhausted");
    FakeGemini::new(GeminiFaults::NONE)
        // Rate limited twice, then fine: the README's log example.
        .script("07-meadow.png", [rate_limited(), rate_limited()])
        // The service is briefly down.
        .script(
            "02-blue-square.png",
            [Fault::status(503, "Service Unavailable")],
        )
        // The first request hangs past the client's timeout.
        .script(
            "05-checkerboard.png",
            [Fault::Stall(Duration::from_secs(5))],
        )
        // A data error: repeating it cannot help, so it is not retried.
        .always("09-stripes.png", Fault::status(400, "invalid image format"))
        // The quota never comes back during this run.
        .always("04-rainbow.png", rate_limited())
}
