//! The design note's `call_gemini_api`, ported: one attribute turns a flaky call into one that
//! retries 429s, 503s and timeouts with exponential backoff, returns a bad request at once, and
//! gives up with a `MediaProcessingError` that the caller saves with the task, so nothing is lost.
//!
//! The "Gemini API" here is an in-process fake with a script per image; no network is used.
//!
//! Run it with `cargo run --example quickstart`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use resilience::{Classify, MediaProcessingError, retry_with_backoff};

/// What the model says about an image.
#[derive(Debug, Clone)]
struct Analysis {
    caption: String,
}

/// Everything `call_gemini_api` can fail with. `#[derive(Classify)]` classifies each
/// variant as the error it wraps, or by its text when it wraps none.
#[derive(Debug, thiserror::Error, Classify)]
enum ApiError {
    /// An HTTP error answer. Its text, like "429 Resource Exhausted", states the status, which
    /// the built-in rules read: 429, 503 and 500 are retried, 400 and 401 are not.
    #[error("{status} {reason}")]
    Http { status: u16, reason: &'static str },
    /// No answer in time. "timed out" in the text makes it retryable.
    #[error("request timed out after {0:?}")]
    Timeout(Duration),
    /// All attempts failed: the attribute returns this through `From`.
    #[error(transparent)]
    Exhausted(#[from] MediaProcessingError),
}

/// Analyses an image with the (fake) Gemini API.
///
/// Production code uses the design note's settings, which are also the defaults:
/// `#[retry_with_backoff(max_retries = 5, base_delay = 1.0, max_delay = 30.0)]` with up to 1 s
/// of jitter, so the waits are about 2.x, 4.x, 8.x and 16.x seconds. The example uses delays
/// twenty times shorter so that it runs in about two seconds.
#[retry_with_backoff(max_retries = 5, base_delay = 0.05, max_delay = 1.0, jitter = 0.05)]
async fn call_gemini_api(image_path: &Path) -> Result<Analysis, ApiError> {
    // `?` and `return` end this attempt only; the attribute decides whether another follows.
    let analysis = tokio::time::timeout(REQUEST_TIMEOUT, fake_gemini::generate_content(image_path))
        .await
        .map_err(|_elapsed| ApiError::Timeout(REQUEST_TIMEOUT))??;
    Ok(analysis)
}

/// How long one request may take before the client gives up on it (and the retry takes over).
const REQUEST_TIMEOUT: Duration = Duration::from_millis(200);

/// A stand-in for the Gemini API: each image has a script of answers.
mod fake_gemini {
    use super::*;

    /// Requests received so far, per image.
    static REQUESTS: Mutex<BTreeMap<PathBuf, u32>> = Mutex::new(BTreeMap::new());

    pub async fn generate_content(image_path: &Path) -> Result<Analysis, ApiError> {
        let request = {
            let mut requests = REQUESTS.lock().unwrap_or_else(PoisonError::into_inner);
            let count = requests.entry(image_path.to_path_buf()).or_default();
            *count += 1;
            *count
        };
        let name = image_path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("");
        let http = |status, reason| Err(ApiError::Http { status, reason });
        match (name, request) {
            // Rate limited twice, then fine: the design note's log example.
            ("beach.jpg", 1 | 2) => http(429, "Resource Exhausted"),
            // The service is briefly down.
            ("receipt.png", 1) => http(503, "Service Unavailable"),
            // The first request hangs past the client's timeout.
            ("scan.tiff", 1) => {
                tokio::time::sleep(Duration::from_secs(10)).await;
                http(504, "Gateway Timeout")
            }
            // A data error: repeating it cannot help, so it is not retried.
            ("corrupt.gif", _) => http(400, "Bad Request: invalid image format"),
            // The quota never comes back during this run.
            ("panorama.jpg", _) => http(429, "Resource Exhausted"),
            _ => {
                tokio::time::sleep(Duration::from_millis(5)).await;
                Ok(Analysis {
                    caption: format!("a photo ({name})"),
                })
            }
        }
    }

    /// How many requests the server received for `image_path`.
    pub fn requests(image_path: &Path) -> u32 {
        let requests = REQUESTS.lock().unwrap_or_else(PoisonError::into_inner);
        requests.get(image_path).copied().unwrap_or(0)
    }
}

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

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Done => "done",
            Status::Failed => "failed",
            Status::Rejected => "rejected",
        }
    }
}

/// One image's task, as the application stores it (in memory here; a later example uses
/// SQLite).
#[derive(Debug)]
struct Task {
    image: PathBuf,
    status: Status,
    attempts: u32,
    error_message: Option<String>,
}

/// Analyses one image and turns every outcome into a task to save: graceful degradation.
async fn analyze(image: &Path) -> Task {
    let task = |status, attempts, error_message| Task {
        image: image.to_path_buf(),
        status,
        attempts,
        error_message,
    };
    match call_gemini_api(image).await {
        Ok(analysis) => {
            tracing::info!("{}: {}", image.display(), analysis.caption);
            // The attribute does not count successful attempts; the fake server does.
            task(Status::Done, fake_gemini::requests(image), None)
        }
        // All retries spent: keep the task, with the error and the attempt count.
        Err(ApiError::Exhausted(error)) => {
            tracing::error!("Image analysis failed: {error}");
            task(Status::Failed, error.attempts(), Some(error.to_string()))
        }
        // Not retryable: returned unchanged after one attempt.
        Err(error) => {
            tracing::error!("Image rejected: {error}");
            task(Status::Rejected, 1, Some(error.to_string()))
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    // Shows the attribute's events (target `resilience`): WARN `Retry 1/5 after ...` and
    // INFO `Success on attempt 3`, with their fields.
    tracing_subscriber::fmt().without_time().init();

    let images = [
        "photos/sunset.jpg",
        "photos/beach.jpg",
        "photos/receipt.png",
        "photos/scan.tiff",
        "photos/corrupt.gif",
        "photos/panorama.jpg",
    ];
    let mut saved: Vec<Task> = Vec::new();
    for image in images {
        let image = Path::new(image);
        tracing::info!("Analysing {}", image.display());
        saved.push(analyze(image).await);
    }
    print_summary(&saved);
}

fn print_summary(tasks: &[Task]) {
    println!();
    println!("{:<22} {:<9} {:>8}  error", "image", "status", "attempts");
    for task in tasks {
        let error = task.error_message.as_deref().unwrap_or("-");
        println!(
            "{:<22} {:<9} {:>8}  {error}",
            task.image.display().to_string(),
            task.status.as_str(),
            task.attempts,
        );
    }
    let failed = tasks
        .iter()
        .filter(|t| !matches!(t.status, Status::Done))
        .count();
    println!(
        "\n{} of {} tasks saved; {failed} kept with their error for a later look.",
        tasks.len(),
        tasks.len()
    );
}
