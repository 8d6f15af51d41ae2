//! Properties of `redact` over generated texts: redacting twice is redacting once, no text
//! makes it panic, text without secrets comes back as it was, and a generated secret of each
//! class never shows in what it returns, whatever text stands around it.

use proptest::prelude::*;
use retry_runtime::redact::{REDACTED, redact};

/// Every generated secret holds these letters (every third character is one), and the text
/// around it never does: either showing in the output means part of a secret leaked.
const MARKS: [char; 2] = ['Q', 'Z'];

/// `body` with every third character, from the first, replaced by a marker letter.
fn marked(body: &str) -> String {
    body.chars()
        .enumerate()
        .map(|(i, c)| if i % 3 == 0 { MARKS[(i / 3) % 2] } else { c })
        .collect()
}

/// Pieces likely to form secrets, or to look almost like them.
const FRAGMENTS: &[&str] = &[
    "key",
    "api_key",
    "apiKey",
    "token",
    "Token",
    "Count",
    "_id",
    "Id",
    "session",
    "secret",
    "password",
    "Authorization",
    "auth",
    "Cookie",
    "Bearer ",
    "bearer",
    "Basic ",
    "=",
    ":",
    ": ",
    "\"",
    "'",
    "\\\"",
    "\\",
    "://",
    "@",
    "/",
    "?",
    "&",
    "#",
    " ",
    "\n",
    "\t",
    "(",
    ")",
    "{",
    "}",
    "[",
    "]",
    "<",
    ">",
    ",",
    ";",
    ".",
    "-",
    "Some(",
    "None",
    "null",
    "Secret(",
    "AIza",
    "sk-",
    "sk_live_",
    "AKIA",
    "ghp_",
    "github_pat_",
    "xoxb-",
    "eyJ",
    "abc",
    "x9",
    "0123456789abcdefghijklmnopqrstuvwxyzAB",
    "ABCDEFGHIJKLMNOP",
    "REDACTED",
    REDACTED,
    "é",
    "ключ",
    "🔑",
    "u:p@",
    "Authorization: ",
    "\"key\": \"",
    "key=",
    "key: ",
    "Auth {",
    "a=b; ",
    "\\\"token\\\":\\\"",
    "Digest ",
    "x=\"",
    "\r",
    "_",
    "1",
    "AAAAAAAAAAAAAAAAAAAA",
];

fn fragments() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(FRAGMENTS), 0..40).prop_map(|parts| parts.concat())
}

/// Any text, arbitrary or built from fragments, without the marker letters.
fn context() -> impl Strategy<Value = String> {
    prop_oneof![any::<String>(), fragments()].prop_map(|text| text.replace(&MARKS[..], ""))
}

/// What may stand just before a name or a token.
fn before() -> impl Strategy<Value = &'static str> {
    prop::sample::select(&[" ", "?", "&", "\n", "(", "{", "\t", ", ", "[", "\""][..])
}

/// `before`, `secret` (holding `embedded`), `after`: the secret must not show.
fn check_hidden(
    before: &str,
    embedded: &str,
    secret: &str,
    after: &str,
) -> Result<(), TestCaseError> {
    let text = format!("{before}{embedded}{after}");
    let out = redact(&text);
    prop_assert!(!out.contains(secret), "{secret:?} shows in {out:?}");
    prop_assert!(
        !out.contains(&MARKS[..]),
        "part of {secret:?} shows in {out:?}"
    );
    // And what was hidden stays hidden the same way.
    prop_assert_eq!(redact(&out), out.clone());
    Ok(())
}

/// Names whose value is secret.
const SECRET_NAMES: &[&str] = &[
    "apiKey",
    "api_key",
    "API_KEY",
    "access_token",
    "refreshToken",
    "X-Amz-Signature",
    "X-Amz-Credential",
    "X-Amz-Security-Token",
    "client_secret",
    "X-Api-Key",
    "x-goog-api-key",
    "Authorization",
    "Proxy-Authorization",
    "password",
    "passwd",
    "pwd",
    "sig",
    "sessionId",
    "session_id",
    "cache_key",
    "key",
    "privateKey",
    "authToken",
    "x-auth-token",
    "Set-Cookie",
    "secret",
];

fn secret_name() -> impl Strategy<Value = &'static str> {
    prop::sample::select(SECRET_NAMES)
}

/// A value written without quotes: no delimiter in it.
fn bare_value() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._~+/=:@%!*$-]{8,40}".prop_map(|body| marked(&body))
}

/// A value written in quotes: anything but the quote, a backslash or a line end.
fn quoted_value(quote: char) -> impl Strategy<Value = String> {
    "[^\\\\\"'\n\r]{8,40}".prop_map(move |body| marked(&body.replace(quote, "x")))
}

fn bare_end() -> impl Strategy<Value = &'static str> {
    prop::sample::select(
        &[
            "&", "#", " ", "\n", "\r\n", ",", ";", ")", "}", "]", ">", "\"", "'",
        ][..],
    )
}

/// `name=value`, `Name: value`, `"name": "value"`, `name: Some("value")` and their kin, with
/// the value that must not show.
fn named_value() -> impl Strategy<Value = (String, String)> {
    let bare = (secret_name(), bare_value(), bare_end(), 0..5usize).prop_map(
        |(name, value, end, form)| {
            let embedded = match form {
                0 => format!("{name}={value}{end}"),
                1 => format!("{name}: {value}{end}"),
                2 => format!("\"{name}\": {value}{end}"),
                3 => format!("{name}: Some({value}){end}"),
                _ => format!("{name} = {value}{end}"),
            };
            (embedded, value)
        },
    );
    let quoted = (secret_name(), quoted_value('"'), 0..5usize).prop_map(|(name, value, form)| {
        let embedded = match form {
            0 => format!("\"{name}\": \"{value}\""),
            1 => format!("\"{name}\":\"{value}\""),
            2 => format!("{name}: \"{value}\""),
            3 => format!("{name}: Some(\"{value}\")"),
            _ => format!("\\\"{name}\\\": \\\"{value}\\\""),
        };
        (embedded, value)
    });
    let single = (secret_name(), quoted_value('\''))
        .prop_map(|(name, value)| (format!("{name}='{value}'"), value));
    prop_oneof![bare, quoted, single]
}

/// `Authorization: <scheme> <credentials>`, with the credentials.
fn auth_scheme() -> impl Strategy<Value = (String, String)> {
    let scheme = prop::sample::select(
        &[
            "Bearer",
            "Basic",
            "Token",
            "Digest",
            "Bot",
            "AWS4-HMAC-SHA256",
            "Negotiate",
        ][..],
    );
    let name = prop::sample::select(
        &[
            "Authorization",
            "authorization",
            "Proxy-Authorization",
            "auth",
        ][..],
    );
    (name, scheme, bare_value(), bare_end())
        .prop_map(|(name, scheme, value, end)| (format!("{name}: {scheme} {value}{end}"), value))
}

/// `Bearer <token>` anywhere, with the token.
fn bearer() -> impl Strategy<Value = (String, String)> {
    let word = prop::sample::select(&["Bearer", "bearer", "BEARER"][..]);
    let token = "[A-Za-z0-9._~+/=-]{8,60}".prop_map(|body| marked(&body));
    (word, token, bare_end()).prop_map(|(word, token, end)| (format!("{word} {token}{end}"), token))
}

/// `scheme://user:password@host`, with the user and password.
fn userinfo() -> impl Strategy<Value = (String, String)> {
    let scheme =
        prop::sample::select(&["https", "http", "postgres", "redis", "amqp", "mongodb+srv"][..]);
    let part = "[A-Za-z0-9._~!$&'()*+,;=%-]{8,24}".prop_map(|body| marked(&body));
    let end = prop::sample::select(&["/", "?", "#", " ", "\n", ":5432/app", ")"][..]);
    (scheme, part.clone(), part, "[a-z0-9.-]{1,20}", end).prop_map(
        |(scheme, user, password, host, end)| {
            let userinfo = format!("{user}:{password}");
            (format!("{scheme}://{userinfo}@{host}{end}"), userinfo)
        },
    )
}

/// A key of a well-known shape.
fn key_shape() -> impl Strategy<Value = String> {
    let with = |prefixes: &'static [&'static str], body: &'static str| {
        (prop::sample::select(prefixes), body)
            .prop_map(|(prefix, body)| format!("{prefix}{}", marked(&body)))
    };
    let jwt = (
        "[A-Za-z0-9_-]{4,30}",
        "[A-Za-z0-9_-]{4,30}",
        "[A-Za-z0-9_-]{0,40}",
    )
        .prop_map(|(header, payload, signature)| {
            format!(
                "eyJ{}.eyJ{}.{}",
                marked(&header),
                marked(&payload),
                marked(&signature)
            )
        });
    prop_oneof![
        with(&["AIza"], "[A-Za-z0-9_-]{35}"),
        with(
            &["sk-", "sk-proj-", "sk-ant-api03-"],
            "[A-Za-z0-9_-]{20,60}"
        ),
        with(&["sk_live_", "sk_test_", "rk_live_"], "[A-Za-z0-9]{16,40}"),
        with(&["AKIA", "ASIA"], "[A-Z0-9]{16}"),
        with(
            &["ghp_", "gho_", "ghu_", "ghs_", "ghr_"],
            "[A-Za-z0-9]{36,40}"
        ),
        with(&["github_pat_"], "[A-Za-z0-9_]{22,82}"),
        with(
            &["xoxa-", "xoxb-", "xoxp-", "xoxr-", "xoxs-"],
            "[A-Za-z0-9-]{10,40}"
        ),
        jwt,
    ]
}

/// What may follow a key: anything that cannot continue it.
fn key_end() -> impl Strategy<Value = &'static str> {
    prop::sample::select(&[" ", ".", ",", ")", "\n", "\"", "&", "/", ":", ";", "]", "'"][..])
}

proptest! {
    #[test]
    fn redacting_twice_is_redacting_once(text in prop_oneof![any::<String>(), fragments()]) {
        let once = redact(&text).into_owned();
        prop_assert_eq!(redact(&once), once.as_str(), "from {:?}", text);
    }

    #[test]
    fn no_text_makes_it_panic(text in any::<String>(), built in fragments(), bytes in any::<Vec<u8>>()) {
        let _ = redact(&text);
        let _ = redact(&String::from_utf8_lossy(&bytes));
        // Every cut-off form of a text likely to hold secrets.
        for (cut, _) in built.char_indices() {
            let _ = redact(&built[..cut]);
        }
        let _ = redact(&built);
    }

    #[test]
    fn text_without_secret_words_is_kept(
        text in "[bcdfghjlmnqrtvwxzBCDFGHJLMNRTVWXZ0-9 =:,;{}\\[\\]()\"'&?/#\n.é-]{0,200}"
    ) {
        // No vowel but `u`, no `p`, `s`, `_` or `@`: no secret word, key prefix or URL
        // password can form.
        let out = redact(&text);
        prop_assert!(matches!(out, std::borrow::Cow::Borrowed(_)), "{:?} became {:?}", text, out);
    }

    #[test]
    fn named_values_do_not_leak(
        before in context(), sep in before(), (embedded, secret) in named_value(), after in context()
    ) {
        check_hidden(&format!("{before}{sep}"), &embedded, &secret, &after)?;
    }

    #[test]
    fn auth_schemes_do_not_leak(
        before in context(), sep in before(), (embedded, secret) in auth_scheme(), after in context()
    ) {
        check_hidden(&format!("{before}{sep}"), &embedded, &secret, &after)?;
    }

    #[test]
    fn bearer_tokens_do_not_leak(
        before in context(), sep in before(), (embedded, secret) in bearer(), after in context()
    ) {
        check_hidden(&format!("{before}{sep}"), &embedded, &secret, &after)?;
    }

    #[test]
    fn url_passwords_do_not_leak(
        before in context(), sep in before(), (embedded, secret) in userinfo(), after in context()
    ) {
        check_hidden(&format!("{before}{sep}"), &embedded, &secret, &after)?;
    }

    #[test]
    fn key_shapes_do_not_leak(
        before in context(),
        sep in prop::sample::select(&[" ", "?", "&", "\n", "(", "{", "=", "\"", ":", "."][..]),
        key in key_shape(),
        end in key_end(),
        after in context(),
    ) {
        check_hidden(&format!("{before}{sep}"), &key, &key, &format!("{end}{after}"))?;
    }
}
