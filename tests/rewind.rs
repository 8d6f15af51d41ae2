//! `#[rewind]` (README, "Parameters"): a file or reader argument is read by every attempt from
//! where the call started. Without it, a file marked `#[no_clone]` shares one cursor between
//! attempts: attempt 1 reads the file and meets a 503, attempt 2 reads 0 bytes, uploads an
//! empty body, and the call logs `Success on attempt 2`.

mod common;

use std::fs::File;
use std::io::{self, Cursor, Read, Seek, SeekFrom, Write};
use std::time::Duration;

use fault_server::{Fault, FaultServer};
use resilience::http::{HttpError, error_for_status};
use resilience::{Classify, GiveUpReason, MediaProcessingError, retry_with_backoff};

#[derive(Debug, thiserror::Error, Classify)]
enum UploadError {
    #[error("{0}")]
    Http(#[from] HttpError),
    #[error("{0}")]
    Transport(#[from] reqwest::Error),
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error(transparent)]
    GaveUp(#[from] MediaProcessingError),
}

/// Reads the whole file and POSTs it: what an upload of an image from disk does.
#[retry_with_backoff(max_retries = 3, base_delay = 0.01, jitter = 0)]
async fn upload(
    client: &reqwest::Client,
    url: &str,
    #[rewind] file: File,
) -> Result<usize, UploadError> {
    let mut body = Vec::new();
    file.read_to_end(&mut body)?;
    let sent = body.len();
    error_for_status(client.post(url).body(body).send().await?).await?;
    Ok(sent)
}

/// The same through `&mut`: a reader the caller keeps.
#[retry_with_backoff(max_retries = 3, base_delay = 0, jitter = 0)]
fn checksum(#[rewind] reader: &mut Cursor<Vec<u8>>, fail_first: &mut bool) -> io::Result<u32> {
    let mut bytes = Vec::new();
    reader.read_to_end(&mut bytes)?;
    if std::mem::take(fail_first) {
        return Err(io::Error::from(io::ErrorKind::ConnectionReset));
    }
    Ok(bytes.iter().map(|&b| u32::from(b)).sum())
}

/// An "image" on disk, 10 KB of a pattern, in a temp dir removed with it.
struct Image {
    path: std::path::PathBuf,
    bytes: Vec<u8>,
}

impl Image {
    fn write(test: &str) -> Image {
        let path = std::env::temp_dir().join(format!(
            "resilience-rewind-{test}-{}.png",
            std::process::id()
        ));
        // Printable, because the fault server records bodies as text.
        let bytes: Vec<u8> = (0..10_240u32).map(|n| b'a' + (n % 26) as u8).collect();
        File::create(&path)
            .and_then(|mut file| file.write_all(&bytes))
            .expect("write the image");
        Image { path, bytes }
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[tokio::test]
async fn an_upload_through_a_503_sends_every_byte_each_time() {
    let (logs, _guard) = common::capture();
    let image = Image::write("upload");
    let server = FaultServer::start([Fault::status(503, "try again"), Fault::ok("stored")])
        .await
        .expect("a fault server");
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("a client");
    let file = File::open(&image.path).expect("open the image");
    let sent = upload(&client, &server.url("/upload"), file)
        .await
        .expect("stored on the second attempt");
    assert_eq!(sent, image.bytes.len());
    let bodies: Vec<usize> = server.recorded().iter().map(|r| r.body.len()).collect();
    assert_eq!(
        bodies,
        [image.bytes.len(), image.bytes.len()],
        "every byte, each time"
    );
    let last = server.recorded().pop().expect("two requests");
    assert_eq!(last.body.as_bytes(), image.bytes.as_slice());
    assert_eq!(
        logs.messages().last().map(String::as_str),
        Some("Success on attempt 2")
    );
}

#[test]
fn a_borrowed_reader_is_read_from_where_the_call_started() {
    let mut reader = Cursor::new(b"skip:abc".to_vec());
    reader.set_position(5);
    let mut fail_first = true;
    let sum = checksum(&mut reader, &mut fail_first).expect("the second attempt");
    assert_eq!(sum, u32::from(b'a') + u32::from(b'b') + u32::from(b'c'));
    assert_eq!(
        reader.position(),
        8,
        "the caller sees where the last attempt left it"
    );
}

/// A reader that reads and cannot seek back: a pipe, a socket.
struct Pipe(Cursor<Vec<u8>>);

impl Read for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl Seek for Pipe {
    fn seek(&mut self, _: SeekFrom) -> io::Result<u64> {
        Err(io::Error::new(io::ErrorKind::Unsupported, "illegal seek"))
    }
}

#[retry_with_backoff(max_retries = 3, base_delay = 0, jitter = 0)]
fn drain(#[rewind] pipe: Pipe, calls: &mut u32) -> io::Result<usize> {
    *calls += 1;
    let mut bytes = Vec::new();
    pipe.read_to_end(&mut bytes)?;
    Err(io::Error::from(io::ErrorKind::TimedOut))
}

/// What cannot be rewound is never read twice: the call gives up before the second attempt,
/// with the reason, rather than send what the first attempt left of the stream.
#[test]
fn a_reader_that_cannot_seek_gives_up_instead_of_sending_a_partial_body() {
    let mut calls = 0;
    let error = drain(Pipe(Cursor::new(vec![1, 2, 3])), &mut calls).expect_err("gives up");
    assert_eq!(calls, 1, "no attempt reads the rest of the stream");
    let give_up = common::media_error(&error);
    assert_eq!(
        give_up.reason(),
        GiveUpReason::RewindFailed { argument: "pipe" }
    );
    assert_eq!(give_up.attempts(), 1);
    assert_eq!(
        give_up.to_string(),
        "Failed after 1 retries: could not rewind `pipe` to where the call started: illegal seek"
    );
}
