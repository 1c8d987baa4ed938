//! Response bodies, read without trusting their size and decoded without confusing damage
//! with a wrong shape: a truncated or non-JSON body is [`Error::Malformed`] (a retry may
//! mend it), well-formed JSON of the wrong type is [`Error::Contract`] (it will not).

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use serde::de::DeserializeOwned;

use crate::{Error, error::bounded, http::Endpoint};

/// How much of an error (non-2xx) body is read: enough for any `{"error", "message"}`.
pub(crate) const ERROR_BODY_CAP: usize = 64 * 1024;

/// Longest decoder message kept in an error: it can quote a value the server sent.
const DETAIL_CAP: usize = 300;

/// Reads a 2xx body of at most `cap` bytes. A `Content-Length` over the cap is refused before
/// a byte is read; a body without one is read chunk by chunk and abandoned (the connection
/// dropped) as soon as it passes the cap.
pub(crate) async fn read_capped(
    mut response: reqwest::Response,
    endpoint: Endpoint,
    cap: usize,
    timeout: Duration,
) -> Result<Bytes, Error> {
    let too_large = || Error::TooLarge {
        what: endpoint.label(),
        limit: cap,
    };
    if response
        .content_length()
        .is_some_and(|len| len > cap as u64)
    {
        return Err(too_large());
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| Error::from_reqwest(&e, timeout))?
    {
        if body.len() + chunk.len() > cap {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Reads at most [`ERROR_BODY_CAP`] bytes of an error body. The status already says what
/// happened, so a body that breaks off or runs long is used as far as it was read.
pub(crate) async fn read_error_body(mut response: reqwest::Response) -> Bytes {
    let mut body = BytesMut::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        let room = ERROR_BODY_CAP - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= ERROR_BODY_CAP {
            break;
        }
    }
    body.freeze()
}

/// Decodes a 2xx body as `T`, telling damage ([`Error::Malformed`]) from a wrong shape
/// ([`Error::Contract`]).
pub(crate) fn decode<T: DeserializeOwned>(body: &[u8], endpoint: Endpoint) -> Result<T, Error> {
    serde_json::from_slice(body).map_err(|e| {
        let what = endpoint.label();
        // serde quotes the offending value ("invalid type: string \"...\""): in a token
        // answer that value may be the token itself, so only the position is kept there.
        let detail = if endpoint == Endpoint::Auth {
            format!(
                "{} at line {} column {}",
                if e.is_data() {
                    "unexpected field type or missing field"
                } else {
                    "invalid JSON"
                },
                e.line(),
                e.column()
            )
        } else {
            bounded(&e.to_string(), DETAIL_CAP)
        };
        // serde_json calls some wrong shapes syntax errors (an array with more elements than
        // the struct has fields: "trailing characters"): a body that is well-formed JSON is a
        // wrong shape whatever the decoder says, and a retry would get the same.
        if e.is_data() || serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok() {
            Error::Contract { what, detail }
        } else {
            Error::Malformed { what, detail }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use adsync_domain::wire::{CampaignPage, TokenResponse};

    #[test]
    fn damage_is_malformed_and_a_wrong_shape_is_a_contract_error() {
        let page = |s: &str| decode::<CampaignPage>(s.as_bytes(), Endpoint::ListCampaigns);
        for damaged in [
            "",
            "{\"data\": [",
            "<html>502 Bad Gateway</html>",
            "{\"data\": [], \"pagination\": {\"page\": 1, \"limit\": 1, \"has_more\": false}} x",
        ] {
            let err = page(damaged).unwrap_err();
            assert!(
                matches!(err, Error::Malformed { .. }),
                "{damaged:?}: {err:?}"
            );
            assert!(err.is_transient());
        }
        for wrong in [
            "{\"campaigns\": [], \"next\": null}",
            "{\"data\": \"nope\", \"pagination\": {\"page\": 1, \"limit\": 10, \"has_more\": false}}",
            "[]",
            "42",
            // Found by fuzzing (fuzz/fuzz_targets/platform_answers.rs): serde_json reports the
            // extra elements as "trailing characters", a syntax error.
            r#"[[], {"page": 1, "limit": 1, "has_more": false}, 3]"#,
        ] {
            let err = page(wrong).unwrap_err();
            assert!(matches!(err, Error::Contract { .. }), "{wrong:?}: {err:?}");
            assert!(!err.is_transient());
        }
    }

    #[test]
    fn a_token_of_the_wrong_type_is_not_quoted_in_the_error() {
        let body = br#"{"access_token": {"secret": "0123456789abcdef"}, "expires_in": 3600}"#;
        let err = decode::<TokenResponse>(body, Endpoint::Auth).unwrap_err();
        assert!(matches!(err, Error::Contract { .. }), "{err:?}");
        assert!(!format!("{err} {err:?}").contains("0123456789abcdef"));
    }

    #[test]
    fn long_decoder_messages_are_bounded() {
        let long = "x".repeat(10_000);
        let body = format!(
            "{{\"data\": [], \"pagination\": {{\"page\": \"{long}\", \"limit\": 1, \"has_more\": false}}}}"
        );
        let err = decode::<CampaignPage>(body.as_bytes(), Endpoint::ListCampaigns).unwrap_err();
        assert!(err.to_string().len() < 1000, "{}", err.to_string().len());
    }
}
