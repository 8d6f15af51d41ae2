//! A stand-in for Gemini's `generateContent`: valid answers about the image it is sent, and,
//! at a seeded rate or as scripted per image, the faults the real API is known for.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use serde_json::Value;

use crate::{Fault, Recorded};

/// How often and how the fake Gemini misbehaves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GeminiFaults {
    /// The share of requests, from 0.0 to 1.0, that meet a fault instead of an answer.
    pub fault_rate: f64,
    /// Seeds the choice of faults: the same seed gives each request the same fault, whatever
    /// order concurrent requests arrive in (the choice depends on the seed, the request's
    /// content and how many times that content was sent before), on every platform and with
    /// every Rust version: the hash and the generator behind the draw are written out in this
    /// crate (see [`FakeGemini`]), not borrowed from `std` or `rand`, which promise no stable
    /// output.
    pub seed: u64,
    /// How long a stalled request waits before its connection closes; make it longer than
    /// the client's timeout.
    pub stall: Duration,
}

impl Default for GeminiFaults {
    /// A fault on 30 % of the requests, seed 42, stalls of 5 s.
    fn default() -> Self {
        Self {
            fault_rate: 0.3,
            seed: 42,
            stall: Duration::from_secs(5),
        }
    }
}

impl GeminiFaults {
    /// No fault at random: every request that no script covers gets a valid answer.
    pub const NONE: GeminiFaults = GeminiFaults {
        fault_rate: 0.0,
        seed: 0,
        stall: Duration::from_secs(5),
    };
}

/// The `retryDelay` of the fake's per-minute 429s: short, so demos do not drag.
pub const FAKE_RETRY_DELAY: &str = "0.3s";

/// Decides the answer of the fake Gemini to each request; [`FaultServer::gemini`] serves it.
///
/// - `POST /v1beta/models/{model}:generateContent` with a JSON body gets a valid answer
///   whose text describes the image sent inline (`"a 2048-byte image/png image"`) or named
///   by a `file_data` URI (`"the image/jpeg file gs://b/x.jpg"`), or, with
///   probability `fault_rate`, one of: a 429 with `RetryInfo` ([`FAKE_RETRY_DELAY`]), a 503,
///   a 500, a stall of `stall`, a reset mid-body.
/// - A request that names an image given to [`script`](FakeGemini::script) or
///   [`always`](FakeGemini::always) (in its prompt or a `file_data` URI) gets the scripted
///   answers first: a story that plays out the same way every run.
/// - A prompt whose text contains `per-day` always gets the per-day quota 429, and no other
///   request ever does: the demo of "not retried" is opt-in.
/// - Another path gets a 404, another method a 405, a body that is not JSON a 400, each in
///   Gemini's error format.
///
/// The draw, exactly, so that a seeded run stays the same run: the request body's bytes are
/// hashed with 64-bit FNV-1a (offset basis `0xcbf29ce484222325`, prime `0x100000001b3`); the
/// seed, that hash and the request's repetition (1 for the first time this body is sent, 2
/// for the second, ...), each as 8 little-endian bytes, are hashed again the same way; the
/// result seeds a SplitMix64 generator (Steele, Lea and Flood, 2014: the increment
/// `0x9e3779b97f4a7c15` and the mixer of Java's `SplittableRandom`). Its first output `x`
/// decides whether the request meets a fault: `(x >> 11) / 2^53 < fault_rate`. Its second,
/// `y`, picks which: `(y * 5) >> 64` is 0 for the 429, 1 the 503, 2 the 500, 3 the stall and
/// 4 the reset. Neither `std`'s `DefaultHasher` nor `rand`'s `SmallRng` promises its output
/// across versions, so neither is used.
///
/// [`FaultServer::gemini`]: crate::FaultServer::gemini
#[derive(Debug, Clone)]
pub struct FakeGemini {
    faults: GeminiFaults,
    /// How many times each request content (by its FNV-1a hash) was seen: retries of one
    /// image get fresh draws, and the draws do not depend on the other images.
    seen: HashMap<u64, u64>,
    /// Scripted answers, in the order they were given.
    scripts: Vec<Script>,
}

/// The answers for the requests that name `name`.
#[derive(Debug, Clone)]
struct Script {
    name: String,
    answers: VecDeque<Fault>,
    /// The last answer repeats instead of running out.
    repeat_last: bool,
}

impl From<GeminiFaults> for FakeGemini {
    fn from(faults: GeminiFaults) -> Self {
        Self::new(faults)
    }
}

impl FakeGemini {
    /// A fake that misbehaves as `faults` says.
    pub fn new(faults: GeminiFaults) -> Self {
        Self {
            faults,
            seen: HashMap::new(),
            scripts: Vec::new(),
        }
    }

    /// The requests that name `name` (their prompt or a `file_data` URI contains it) get
    /// `answers`, one each, in order; once they are spent, such requests are treated as any
    /// other. A name given twice plays its scripts one after the other.
    ///
    /// ```
    /// use fault_server::{Fault, FakeGemini, GeminiFaults};
    ///
    /// // beach.png is rate limited twice, then answered; the other images are answered.
    /// let fake = FakeGemini::new(GeminiFaults::NONE)
    ///     .script("beach.png", [Fault::gemini_429("0.1s"), Fault::gemini_429("0.1s")]);
    /// ```
    #[must_use]
    pub fn script(
        mut self,
        name: impl Into<String>,
        answers: impl IntoIterator<Item = Fault>,
    ) -> Self {
        self.scripts.push(Script {
            name: name.into(),
            answers: answers.into_iter().collect(),
            repeat_last: false,
        });
        self
    }

    /// Every request that names `name` gets `answer`, as many times as it is sent.
    #[must_use]
    pub fn always(mut self, name: impl Into<String>, answer: Fault) -> Self {
        self.scripts.push(Script {
            name: name.into(),
            answers: VecDeque::from([answer]),
            repeat_last: true,
        });
        self
    }

    /// The next scripted answer for a request whose names (prompt and file URIs) are `names`.
    fn scripted(&mut self, names: &str) -> Option<Fault> {
        let script = self
            .scripts
            .iter_mut()
            .find(|s| !s.answers.is_empty() && names.contains(s.name.as_str()))?;
        if script.repeat_last && script.answers.len() == 1 {
            script.answers.front().cloned()
        } else {
            script.answers.pop_front()
        }
    }

    /// The generator for this request: seeded by the seed, the content and its repetition,
    /// as [`FakeGemini`] documents.
    fn rng_for(&mut self, body: &str) -> SplitMix64 {
        let content = fnv1a64(body.as_bytes());
        let repetition = self.seen.entry(content).or_insert(0);
        *repetition = repetition.saturating_add(1);
        let mut key = [0u8; 24];
        key[..8].copy_from_slice(&self.faults.seed.to_le_bytes());
        key[8..16].copy_from_slice(&content.to_le_bytes());
        key[16..].copy_from_slice(&repetition.to_le_bytes());
        SplitMix64(fnv1a64(&key))
    }

    /// The answer to `request`.
    pub fn answer(&mut self, request: &Recorded) -> Fault {
        let Some(model) = request
            .path
            .strip_prefix("/v1beta/models/")
            .and_then(|rest| rest.strip_suffix(":generateContent"))
            .filter(|model| !model.is_empty() && !model.contains('/'))
        else {
            return Fault::gemini_error(
                404,
                "NOT_FOUND",
                "Requested entity was not found: the fake serves \
                 POST /v1beta/models/{model}:generateContent",
            );
        };
        if request.method != "POST" {
            return Fault::gemini_error(405, "METHOD_NOT_ALLOWED", "Use POST.");
        }
        let Ok(body) = serde_json::from_str::<Value>(&request.body) else {
            return Fault::gemini_error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.");
        };
        let prompt = prompt_text(&body);
        if let Some(fault) = self.scripted(&format!("{prompt}\n{}", file_uris(&body))) {
            return fault;
        }
        if prompt.contains("per-day") {
            return Fault::gemini_429_per_day();
        }
        let mut rng = self.rng_for(&request.body);
        // A NaN rate compares false: no fault. A rate of 1 or more always faults, since the
        // draw is below 1; one of 0 or less never does.
        if rng.unit() < self.faults.fault_rate {
            return match rng.below(5) {
                0 => Fault::gemini_429(FAKE_RETRY_DELAY),
                1 => Fault::gemini_error(
                    503,
                    "UNAVAILABLE",
                    "The model is overloaded. Please try again later.",
                ),
                2 => Fault::gemini_error(
                    500,
                    "INTERNAL",
                    "An internal error has occurred. Please retry or report in \
                     https://developers.generativeai.google/guide/troubleshooting",
                ),
                3 => Fault::Stall(self.faults.stall),
                _ => Fault::ResetMidBody,
            };
        }
        Fault::gemini_ok(&describe(model, &body))
    }
}

/// 64-bit FNV-1a over `bytes` (Fowler, Noll and Vo): a hash whose every output is fixed by
/// its definition, unlike `std`'s `DefaultHasher`.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// SplitMix64 (Steele, Lea and Flood, "Fast splittable pseudorandom number generators",
/// 2014), as in Java's `SplittableRandom` and Vigna's `splitmix64.c`: a generator whose every
/// output is fixed by its definition, unlike `rand`'s `SmallRng`.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `[0, 1)`, from the top 53 bits of the next output (every such double is
    /// exact).
    fn unit(&mut self) -> f64 {
        // 53 bits convert to `f64` exactly; `as` cannot lose anything here.
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A number in `0..n`, by Lemire's multiply-shift: `(x * n) >> 64`, whose bias (below
    /// `n / 2^64`) no test can see.
    fn below(&mut self, n: u64) -> u64 {
        let wide = u128::from(self.next()) * u128::from(n);
        // The high half of a product of two 64-bit numbers fits in 64 bits.
        u64::try_from(wide >> 64).unwrap_or(u64::MAX)
    }
}

/// The text parts of every content, joined.
fn prompt_text(body: &Value) -> String {
    parts(body)
        .filter_map(|part| part.get("text").and_then(Value::as_str))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The `file_data` URIs of every content, joined.
fn file_uris(body: &Value) -> String {
    parts(body)
        .filter_map(|part| file_uri(file_data(part)?))
        .collect::<Vec<_>>()
        .join("\n")
}

fn file_data(part: &Value) -> Option<&Value> {
    part.get("file_data").or_else(|| part.get("fileData"))
}

fn file_uri(file: &Value) -> Option<&str> {
    file.get("file_uri")
        .or_else(|| file.get("fileUri"))
        .and_then(Value::as_str)
}

fn mime_type(data: &Value) -> &str {
    data.get("mime_type")
        .or_else(|| data.get("mimeType"))
        .and_then(Value::as_str)
        .unwrap_or("unknown")
}

fn parts(body: &Value) -> impl Iterator<Item = &Value> {
    body.get("contents")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|content| content.get("parts").and_then(Value::as_array))
        .flatten()
}

/// What the fake "sees": the size and type of each inline image, the type and URI of each
/// file (either JSON spelling).
fn describe(model: &str, body: &Value) -> String {
    let images: Vec<String> = parts(body)
        .filter_map(|part| {
            if let Some(data) = part.get("inline_data").or_else(|| part.get("inlineData")) {
                let size = data
                    .get("data")
                    .and_then(Value::as_str)
                    .map_or(0, decoded_len);
                return Some(format!("a {size}-byte {} image", mime_type(data)));
            }
            let file = file_data(part)?;
            let uri = file_uri(file).unwrap_or("?");
            Some(format!("the {} file {uri}", mime_type(file)))
        })
        .collect();
    if images.is_empty() {
        format!("{model} saw no image, only text.")
    } else {
        format!("{model} saw {}.", images.join(", "))
    }
}

/// The length of the bytes that base64 `data` encodes, without decoding it.
fn decoded_len(data: &str) -> usize {
    let symbols = data.bytes().filter(|b| !b.is_ascii_whitespace()).count();
    let padding = data
        .trim_end()
        .bytes()
        .rev()
        .take_while(|&b| b == b'=')
        .count();
    (symbols / 4 * 3 + symbols % 4 * 3 / 4).saturating_sub(padding)
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn request(path: &str, body: &str) -> Recorded {
        Recorded {
            method: "POST".into(),
            path: path.into(),
            query: None,
            headers: Vec::new(),
            body: body.into(),
            received: Instant::now(),
        }
    }

    const PATH: &str = "/v1beta/models/gemini-2.0-flash:generateContent";

    fn image_request(prompt: &str) -> Recorded {
        // "AAAA" * 512 decodes to 1536 bytes.
        let body = serde_json::json!({ "contents": [{ "parts": [
            { "text": prompt },
            { "inline_data": { "mime_type": "image/png", "data": "AAAA".repeat(512) } }
        ]}]});
        request(PATH, &body.to_string())
    }

    fn no_faults() -> GeminiFaults {
        GeminiFaults {
            fault_rate: 0.0,
            ..GeminiFaults::default()
        }
    }

    #[test]
    fn faults_do_not_depend_on_the_order_of_requests() {
        let half = GeminiFaults {
            fault_rate: 0.5,
            seed: 7,
            ..GeminiFaults::default()
        };
        let prompts: Vec<String> = (0..6).map(|i| format!("image {i}")).collect();
        let mut forward = FakeGemini::new(half);
        let mut backward = FakeGemini::new(half);
        let mut seen_forward = Vec::new();
        for round in 0..3 {
            for prompt in &prompts {
                seen_forward.push((
                    round,
                    prompt.clone(),
                    forward.answer(&image_request(prompt)),
                ));
            }
        }
        for round in 0..3 {
            for prompt in prompts.iter().rev() {
                let answer = backward.answer(&image_request(prompt));
                let expected = seen_forward
                    .iter()
                    .find(|(r, p, _)| *r == round && p == prompt)
                    .map(|(_, _, a)| a.clone());
                assert_eq!(Some(answer), expected, "round {round}, {prompt}");
            }
        }
        // Retries of one request get fresh draws: not every answer to it is the same.
        let answers: Vec<Fault> = seen_forward.iter().map(|(_, _, a)| a.clone()).collect();
        assert!(answers.windows(2).any(|w| w[0] != w[1]));
    }

    #[test]
    fn a_valid_answer_describes_the_image() {
        let fault = FakeGemini::new(no_faults()).answer(&image_request("Describe it"));
        let Fault::Respond { status, body, .. } = fault else {
            panic!("not an answer")
        };
        assert_eq!(status, 200);
        let v: Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(
            v["candidates"][0]["content"]["parts"][0]["text"],
            "gemini-2.0-flash saw a 1536-byte image/png image."
        );
    }

    #[test]
    fn base64_lengths() {
        for (data, len) in [
            ("", 0),
            ("QQ==", 1),
            ("QUI=", 2),
            ("QUJD", 3),
            ("QQ", 1),
            ("QUI", 2),
        ] {
            assert_eq!(decoded_len(data), len, "{data}");
        }
    }

    #[test]
    fn faults_are_seeded_and_follow_the_rate() {
        let faults = GeminiFaults {
            fault_rate: 0.5,
            seed: 7,
            stall: Duration::from_millis(1),
        };
        let run = |n| {
            let mut fake = FakeGemini::new(faults);
            (0..n)
                .map(|_| fake.answer(&image_request("x")))
                .collect::<Vec<_>>()
        };
        let first = run(200);
        assert_eq!(first, run(200), "same seed, same faults");
        let ok = first
            .iter()
            .filter(|f| matches!(f, Fault::Respond { status: 200, .. }))
            .count();
        assert!((60..140).contains(&ok), "{ok} answers of 200");
        let mut always = FakeGemini::new(GeminiFaults {
            fault_rate: 1.0,
            ..faults
        });
        for _ in 0..50 {
            let fault = always.answer(&image_request("x"));
            assert!(!matches!(fault, Fault::Respond { status: 200, .. }));
            assert_ne!(fault, Fault::gemini_429_per_day());
        }
    }

    #[test]
    fn the_hash_and_the_generator_are_the_published_ones() {
        // FNV-1a's published test vectors (Noll's `test_fnv.c`).
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
        // Vigna's `splitmix64.c` seeded with 0, and with 1234567.
        let mut zero = SplitMix64(0);
        assert_eq!(
            [zero.next(), zero.next(), zero.next()],
            [
                0xe220_a839_7b1d_cdaf,
                0x6e78_9e6a_a1b9_65f4,
                0x06c4_5d18_8009_454f
            ]
        );
        let mut other = SplitMix64(1_234_567);
        assert_eq!(other.next(), 6_457_827_717_110_365_317);
        assert_eq!(other.next(), 3_203_168_211_198_807_973);
        // The first output of seed 0 is 0.8833... of 2^64: the unit draw is that fraction, and
        // `below(5)` is 4 (0.8833 * 5 = 4.4).
        assert_eq!(SplitMix64(0).unit(), 0.883_310_808_213_642_6);
        assert_eq!(SplitMix64(0).below(5), 4);
    }

    /// The exact faults a seeded run meets, request by request: they are part of what a
    /// seed means (the `gemini_vision` example's story rests on its seed), so a change of the
    /// hash, of the generator or of how a draw picks a fault must show up here.
    #[test]
    fn a_seeded_run_meets_these_faults_exactly() {
        use crate::FaultKind::{self, ResetMidBody, Respond, Stall};

        let stall = Duration::from_millis(1);
        let mut fake = FakeGemini::new(GeminiFaults {
            fault_rate: 0.5,
            seed: 7,
            stall,
        });
        let met: Vec<[FaultKind; 3]> = (0..4)
            .map(|_| {
                ["a.png", "b.png", "c.png"].map(|image| fake.answer(&image_request(image)).kind())
            })
            .collect();
        assert_eq!(
            met,
            [
                // a.png, b.png, c.png: first sent, then sent again, ...
                [Respond(200), ResetMidBody, Respond(200)],
                [Respond(429), Respond(200), Respond(500)],
                [Respond(503), Respond(503), Respond(200)],
                [Respond(200), Stall(stall), Respond(200)],
            ]
        );
    }

    #[test]
    fn scripts_play_in_order_then_the_fake_answers_as_usual() {
        let mut fake = FakeGemini::new(no_faults())
            .script(
                "beach.png",
                [Fault::status(503, "a"), Fault::status(429, "b")],
            )
            .always("corrupt.gif", Fault::status(400, "c"))
            .script("beach.png", [Fault::Stall(Duration::from_millis(1))]);
        let status = |f: Fault| match f {
            Fault::Respond { status, .. } => status,
            other => panic!("{other:?}"),
        };
        let beach = image_request("Describe beach.png");
        assert_eq!(status(fake.answer(&beach)), 503);
        assert_eq!(status(fake.answer(&beach)), 429);
        // The second script of the same name follows the first.
        assert_eq!(fake.answer(&beach), Fault::Stall(Duration::from_millis(1)));
        assert_eq!(status(fake.answer(&beach)), 200);
        for _ in 0..3 {
            assert_eq!(status(fake.answer(&image_request("corrupt.gif?"))), 400);
        }
        assert_eq!(status(fake.answer(&image_request("sunset.png"))), 200);
    }

    #[test]
    fn files_are_named_by_their_uri() {
        let body = serde_json::json!({ "contents": [{ "parts": [
            { "text": "Describe it" },
            { "fileData": { "mimeType": "image/jpeg", "fileUri": "gs://b/image-0002.jpg" } }
        ]}]});
        let request = request(PATH, &body.to_string());
        let mut fake =
            FakeGemini::new(no_faults()).always("image-0002.jpg", Fault::status(400, "bad"));
        assert_eq!(fake.answer(&request), Fault::status(400, "bad"));
        let Fault::Respond { body, .. } = FakeGemini::new(no_faults()).answer(&request) else {
            panic!("not an answer")
        };
        assert!(
            body.contains("gemini-2.0-flash saw the image/jpeg file gs://b/image-0002.jpg."),
            "{body}"
        );
    }

    #[test]
    fn per_day_only_when_asked() {
        let mut fake = FakeGemini::new(no_faults());
        assert_eq!(
            fake.answer(&image_request("simulate a per-day quota")),
            Fault::gemini_429_per_day()
        );
    }

    #[test]
    fn wrong_requests_get_gemini_errors() {
        let mut fake = FakeGemini::new(GeminiFaults {
            fault_rate: f64::NAN,
            ..no_faults()
        });
        let status = |f: Fault| match f {
            Fault::Respond { status, .. } => status,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            status(fake.answer(&request("/v1beta/models/:generateContent", "{}"))),
            404
        );
        assert_eq!(status(fake.answer(&request("/elsewhere", "{}"))), 404);
        assert_eq!(status(fake.answer(&request(PATH, "not json"))), 400);
        let mut get = request(PATH, "{}");
        get.method = "GET".into();
        assert_eq!(status(fake.answer(&get)), 405);
        assert_eq!(status(fake.answer(&request(PATH, "{}"))), 200);
    }
}
