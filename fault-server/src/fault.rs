//! What the server does with one request: answer, stall, or reset the connection.

use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

/// The answer to one request. Every answer closes the connection afterwards, so each
/// request of a client arrives on a connection of its own and meets the next scripted fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// A complete answer. `Content-Length` and `Connection: close` are always written by the
    /// server (headers of those names given here are skipped); `Content-Type` defaults to
    /// JSON when the body looks like JSON, else plain text.
    Respond {
        /// The status code, such as 200 or 503.
        status: u16,
        /// Extra headers, written in this order.
        headers: Vec<(String, String)>,
        /// The body, sent whole.
        body: String,
    },
    /// Reads the request, answers nothing for this long, then closes: a client with a
    /// shorter timeout sees a timeout.
    Stall(Duration),
    /// Sends a `200` head announcing a `Content-Length` of 1000, then 10 bytes of body, then
    /// resets the connection (`SO_LINGER` 0): the client fails while reading the body.
    ResetMidBody,
    /// Reads the request, then resets the connection without a byte of answer.
    ResetBeforeResponse,
}

/// What the server did with one request: a [`Fault`] without its payload, as
/// [`FaultServer::served`](crate::FaultServer::served) records it, so that a test can compare
/// what each request met with what its client saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// [`Fault::Respond`] with this status.
    Respond(u16),
    /// [`Fault::Stall`] of this long.
    Stall(Duration),
    /// [`Fault::ResetMidBody`].
    ResetMidBody,
    /// [`Fault::ResetBeforeResponse`].
    ResetBeforeResponse,
}

/// The Gemini model named in the canned answers.
const MODEL: &str = "gemini-2.0-flash";

impl Fault {
    /// What this fault does, without its headers and body.
    pub fn kind(&self) -> FaultKind {
        match self {
            Fault::Respond { status, .. } => FaultKind::Respond(*status),
            Fault::Stall(duration) => FaultKind::Stall(*duration),
            Fault::ResetMidBody => FaultKind::ResetMidBody,
            Fault::ResetBeforeResponse => FaultKind::ResetBeforeResponse,
        }
    }

    /// A `200` with `body`.
    pub fn ok(body: impl Into<String>) -> Self {
        Self::status(200, body)
    }

    /// An answer with status `code` and `body`.
    pub fn status(code: u16, body: impl Into<String>) -> Self {
        Fault::Respond {
            status: code,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// The same answer with one more header. On faults that are not a [`Fault::Respond`]
    /// there is no header to add, and the fault is returned unchanged.
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        if let Fault::Respond { headers, .. } = &mut self {
            headers.push((name.into(), value.into()));
        }
        self
    }

    /// A successful Gemini `generateContent` answer whose
    /// `candidates[0].content.parts[0].text` is `text`.
    pub fn gemini_ok(text: &str) -> Self {
        let answer = gemini_answer(text);
        // `Value`'s `Display` is infallible JSON.
        Self::json(200, format!("{answer:#}\n"))
    }

    /// A Gemini `429 RESOURCE_EXHAUSTED` for a per-minute quota, as the API sends it: a
    /// `google.rpc.QuotaFailure`, a `google.rpc.Help` and a `google.rpc.RetryInfo` whose
    /// `retryDelay` is `retry_delay` (such as `"53s"` or `"0.4s"`).
    pub fn gemini_429(retry_delay: &str) -> Self {
        Self::json(
            429,
            resource_exhausted(
                "You exceeded your current quota, please check your plan and billing details. \
                 For more information on this error, head to: \
                 https://ai.google.dev/gemini-api/docs/rate-limits.",
                "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
                "15",
                retry_delay,
            ),
        )
    }

    /// A Gemini `429` for the free tier's per-day quota: no wait of minutes helps, although
    /// the message says "Your quota will reset after 12h34m16s." and a `RetryInfo` is present
    /// (real answers carry one too).
    pub fn gemini_429_per_day() -> Self {
        Self::json(
            429,
            resource_exhausted(
                "You exceeded your current quota, please check your plan and billing details. \
                 Your quota will reset after 12h34m16s.",
                "GenerateRequestsPerDayPerProjectPerModel-FreeTier",
                "200",
                "45256s",
            ),
        )
    }

    /// A Gemini error answer: `{"error": {"code", "message", "status"}}` with HTTP status
    /// `code`, such as `gemini_error(503, "UNAVAILABLE", "The model is overloaded.")`.
    pub fn gemini_error(code: u16, status: &str, message: &str) -> Self {
        let body = format!(
            "{{\n  \"error\": {{\n    \"code\": {code},\n    \"message\": {},\n    \"status\": {}\n  }}\n}}\n",
            quote(message),
            quote(status),
        );
        Self::json(code, body)
    }

    fn json(status: u16, body: String) -> Self {
        Self::status(status, body).with_header("Content-Type", "application/json; charset=UTF-8")
    }
}

/// `at` as an HTTP date (`Wed, 21 Oct 2015 07:28:00 GMT`), for a `Retry-After` header in
/// date form. HTTP dates have whole seconds: the fraction of `at` is dropped.
pub fn http_date(at: SystemTime) -> String {
    httpdate::fmt_http_date(at)
}

pub(crate) fn gemini_answer(text: &str) -> Value {
    let words = u64::try_from(text.split_whitespace().count()).unwrap_or(u64::MAX);
    json!({
        "candidates": [{
            "content": { "parts": [{ "text": text }], "role": "model" },
            "finishReason": "STOP",
            "index": 0
        }],
        "usageMetadata": {
            "promptTokenCount": 264,
            "candidatesTokenCount": words,
            "totalTokenCount": words.saturating_add(264)
        },
        "modelVersion": MODEL
    })
}

/// A JSON string literal: `text` quoted and escaped.
fn quote(text: &str) -> String {
    Value::from(text).to_string()
}

/// Written as a template, not built as a `Value`: Google's servers send the fields in this
/// order (`code`, `message`, `status`, `details`), and a client's error text, often cut after
/// a few hundred characters, then shows what it would show with the real API.
fn resource_exhausted(message: &str, quota_id: &str, quota_value: &str, delay: &str) -> String {
    let (message, quota_id, quota_value, delay) = (
        quote(message),
        quote(quota_id),
        quote(quota_value),
        quote(delay),
    );
    format!(
        r#"{{
  "error": {{
    "code": 429,
    "message": {message},
    "status": "RESOURCE_EXHAUSTED",
    "details": [
      {{
        "@type": "type.googleapis.com/google.rpc.QuotaFailure",
        "violations": [
          {{
            "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
            "quotaId": {quota_id},
            "quotaDimensions": {{
              "location": "global",
              "model": "{MODEL}"
            }},
            "quotaValue": {quota_value}
          }}
        ]
      }},
      {{
        "@type": "type.googleapis.com/google.rpc.Help",
        "links": [
          {{
            "description": "Learn more about Gemini API quotas",
            "url": "https://ai.google.dev/gemini-api/docs/rate-limits"
          }}
        ]
      }},
      {{
        "@type": "type.googleapis.com/google.rpc.RetryInfo",
        "retryDelay": {delay}
      }}
    ]
  }}
}}
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(fault: &Fault) -> Value {
        match fault {
            Fault::Respond { body, .. } => serde_json::from_str(body).expect("JSON"),
            other => panic!("not an answer: {other:?}"),
        }
    }

    #[test]
    fn gemini_ok_has_the_text_where_clients_look() {
        let v = body(&Fault::gemini_ok("a cat"));
        assert_eq!(v["candidates"][0]["content"]["parts"][0]["text"], "a cat");
    }

    #[test]
    fn gemini_429_carries_quota_and_retry_info() {
        let fault = Fault::gemini_429("0.4s");
        let v = body(&fault);
        assert_eq!(v["error"]["status"], "RESOURCE_EXHAUSTED");
        let details = v["error"]["details"].as_array().expect("details");
        assert!(details.iter().any(|d| d["retryDelay"] == "0.4s"));
        assert!(details.iter().any(|d| {
            d["violations"][0]["quotaId"] == "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"
        }));
        let Fault::Respond { status, .. } = fault else {
            unreachable!()
        };
        assert_eq!(status, 429);
    }

    #[test]
    fn error_bodies_are_valid_json_in_google_order() {
        let weird = "quotes \" and \\ and\nlines";
        let v = body(&Fault::gemini_error(503, "UNAVAILABLE", weird));
        assert_eq!(v["error"]["message"], weird);
        assert_eq!(v["error"]["code"], 503);
        let Fault::Respond { body, .. } = Fault::gemini_429("53s") else {
            unreachable!()
        };
        let at = |needle: &str| body.find(needle).expect(needle);
        assert!(at("\"code\"") < at("\"message\""));
        assert!(at("\"status\"") < at("\"details\""));
    }

    #[test]
    fn per_day_quota_says_reset() {
        let fault = Fault::gemini_429_per_day();
        let v = body(&fault);
        let message = v["error"]["message"].as_str().expect("message");
        assert!(message.ends_with("Your quota will reset after 12h34m16s."));
        assert!(
            v.to_string()
                .contains("GenerateRequestsPerDayPerProjectPerModel-FreeTier")
        );
    }

    #[test]
    fn with_header_adds_to_answers_only() {
        let fault = Fault::ok("x").with_header("Retry-After", "1");
        assert_eq!(
            fault,
            Fault::Respond {
                status: 200,
                headers: vec![("Retry-After".into(), "1".into())],
                body: "x".into(),
            }
        );
        assert_eq!(
            Fault::ResetMidBody.with_header("a", "b"),
            Fault::ResetMidBody
        );
    }

    #[test]
    fn kinds_drop_the_payload() {
        assert_eq!(
            Fault::gemini_429("1s").with_header("a", "b").kind(),
            FaultKind::Respond(429)
        );
        assert_eq!(
            Fault::Stall(Duration::from_millis(5)).kind(),
            FaultKind::Stall(Duration::from_millis(5))
        );
        assert_eq!(Fault::ResetMidBody.kind(), FaultKind::ResetMidBody);
        assert_eq!(
            Fault::ResetBeforeResponse.kind(),
            FaultKind::ResetBeforeResponse
        );
    }

    #[test]
    fn http_dates_drop_the_fraction() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_445_412_480_900);
        assert_eq!(http_date(at), "Wed, 21 Oct 2015 07:28:00 GMT");
    }
}
