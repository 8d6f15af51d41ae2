//! Raw HTTP/1.1: one request in, one answer (or a fault) out. Written by hand so that the
//! faults are exact: a reset happens where it is scripted, not where a framework allows.

use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::Recorded;

/// The longest request head read; a longer one gets a 431.
const MAX_HEAD: usize = 64 * 1024;
/// The largest body read; a larger one gets a 413. Images sent inline to the fake Gemini are
/// a few KiB, base64-encoded.
pub(crate) const MAX_BODY: usize = 32 * 1024 * 1024;
/// How long a client may take to send its request: a silent client must not hold a task
/// (and its socket) forever.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Why no request could be read.
#[derive(Debug)]
pub(crate) enum BadRequest {
    /// The client closed or went silent before a whole request arrived: nobody to answer.
    Gone,
    /// The bytes are not a request this server reads: answer this status and reason.
    Malformed(u16, &'static str),
}

/// Reads one request: the head, then a `Content-Length` body.
pub(crate) async fn read_request<S>(stream: &mut S) -> Result<Recorded, BadRequest>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match tokio::time::timeout(READ_TIMEOUT, read_request_untimed(stream)).await {
        Ok(result) => result,
        Err(_elapsed) => Err(BadRequest::Gone),
    }
}

async fn read_request_untimed<S>(stream: &mut S) -> Result<Recorded, BadRequest>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = Vec::with_capacity(4096);
    let head_end = loop {
        if let Some(at) = find(&buf, b"\r\n\r\n") {
            break at;
        }
        if buf.len() > MAX_HEAD {
            return Err(BadRequest::Malformed(431, "request head too large"));
        }
        let mut chunk = [0u8; 4096];
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|_| BadRequest::Gone)?;
        if n == 0 {
            return Err(if buf.is_empty() {
                BadRequest::Gone
            } else {
                BadRequest::Malformed(400, "the request ended inside its head")
            });
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let received = Instant::now();
    let head = std::str::from_utf8(&buf[..head_end])
        .map_err(|_| BadRequest::Malformed(400, "the request head is not UTF-8"))?;
    let mut request = parse_head(head, received)?;

    if request.header("transfer-encoding").is_some() {
        return Err(BadRequest::Malformed(
            501,
            "chunked bodies are not supported",
        ));
    }
    let length = match request.header("content-length") {
        None => 0,
        Some(value) => value
            .trim()
            .parse::<usize>()
            .map_err(|_| BadRequest::Malformed(400, "bad Content-Length"))?,
    };
    if length > MAX_BODY {
        return Err(BadRequest::Malformed(413, "body too large"));
    }
    if length > 0
        && request
            .header("expect")
            .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
    {
        // curl waits a second for this before it sends a large body.
        stream
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .await
            .map_err(|_| BadRequest::Gone)?;
    }
    let mut body = buf.split_off(head_end + 4);
    if body.len() < length {
        let already = body.len();
        body.resize(length, 0);
        stream
            .read_exact(&mut body[already..])
            .await
            .map_err(|_| BadRequest::Gone)?;
    }
    // Bytes past the body would be a second request; this server reads one per connection.
    body.truncate(length);
    request.body = String::from_utf8_lossy(&body).into_owned();
    Ok(request)
}

fn parse_head(head: &str, received: Instant) -> Result<Recorded, BadRequest> {
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(BadRequest::Malformed(400, "bad request line"));
    };
    if method.is_empty() || !target.starts_with('/') || !version.starts_with("HTTP/1.") {
        return Err(BadRequest::Malformed(400, "bad request line"));
    }
    let mut headers = Vec::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(BadRequest::Malformed(400, "bad header line"));
        };
        let name = name.trim();
        if name.is_empty() {
            return Err(BadRequest::Malformed(400, "bad header line"));
        }
        headers.push((name.to_owned(), value.trim().to_owned()));
    }
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query.to_owned())),
        None => (target, None),
    };
    Ok(Recorded {
        method: method.to_owned(),
        path: path.to_owned(),
        query,
        headers,
        body: String::new(),
        received,
    })
}

/// The bytes of an answer: status line, the given headers, then ours, then the body.
pub(crate) fn answer(status: u16, headers: &[(String, String)], body: &str) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    let mut has_type = false;
    for (name, value) in headers {
        // The framing is the server's: a second Content-Length would make the answer invalid.
        if name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("connection") {
            continue;
        }
        has_type |= name.eq_ignore_ascii_case("content-type");
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    if !has_type {
        let looks_json = matches!(body.trim_start().as_bytes().first(), Some(b'{' | b'['));
        let kind = if looks_json {
            "application/json"
        } else {
            "text/plain; charset=utf-8"
        };
        out.push_str(&format!("Content-Type: {kind}\r\n"));
    }
    out.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    let mut out = out.into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

/// The head of a [`Fault::ResetMidBody`](crate::Fault::ResetMidBody) answer, with the
/// first 10 of the 1000 bytes it announces.
pub(crate) fn truncated_answer() -> Vec<u8> {
    let mut out = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
        Content-Length: 1000\r\nConnection: close\r\n\r\n"
        .to_vec();
    out.extend_from_slice(b"{\"candidat");
    out
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Writes `bytes` and closes the sending side, ignoring a client that has already left.
pub(crate) async fn send<S: AsyncWrite + Unpin>(stream: &mut S, bytes: &[u8]) {
    if stream.write_all(bytes).await.is_ok() {
        let _ = stream.flush().await;
        let _ = stream.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parse(bytes: &[u8]) -> Result<Recorded, BadRequest> {
        let (mut client, mut server) = tokio::io::duplex(1 << 20);
        client.write_all(bytes).await.expect("write");
        drop(client);
        read_request(&mut server).await
    }

    #[tokio::test]
    async fn a_post_with_query_headers_and_body() {
        let r = parse(b"POST /v1/x?key=abc&alt=json HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nX-Goog-Api-Key:  k \r\n\r\nhello")
            .await
            .expect("a request");
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/v1/x");
        assert_eq!(r.query.as_deref(), Some("key=abc&alt=json"));
        assert_eq!(r.header("x-goog-api-key"), Some("k"));
        assert_eq!(r.body, "hello");
    }

    #[tokio::test]
    async fn malformed_input_is_refused_without_panicking() {
        let cases: &[&[u8]] = &[
            b"\r\n\r\n",
            b"GET\r\n\r\n",
            b"GET / HTTP/1.1 extra\r\n\r\n",
            b"GET nope HTTP/1.1\r\n\r\n",
            b"GET / SPDY/3\r\n\r\n",
            b"GET / HTTP/1.1\r\nno colon\r\n\r\n",
            b"GET / HTTP/1.1\r\n: empty\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: 999999999\r\n\r\n",
            b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET /\xff HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost",
        ];
        for case in cases {
            assert!(
                matches!(parse(case).await, Err(BadRequest::Malformed(..))),
                "{:?}",
                String::from_utf8_lossy(case)
            );
        }
        assert!(matches!(parse(b"").await, Err(BadRequest::Gone)));
        // A body shorter than announced: the client left.
        assert!(matches!(
            parse(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc").await,
            Err(BadRequest::Gone)
        ));
    }

    #[test]
    fn answers_frame_themselves() {
        let bytes = answer(
            503,
            &[
                ("Retry-After".into(), "1".into()),
                ("Content-Length".into(), "99".into()),
            ],
            "{}",
        );
        let text = String::from_utf8(bytes).expect("UTF-8");
        assert_eq!(
            text,
            "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: application/json\r\n\
             Content-Length: 2\r\nConnection: close\r\n\r\n{}"
        );
    }
}
