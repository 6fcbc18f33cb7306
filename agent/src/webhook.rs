//! `POST /webhooks/github`: GitHub's `release` events start runs at once.
//!
//! Every delivery must carry `X-Hub-Signature-256: sha256=<hex>`, the HMAC-SHA256 of the raw
//! body under the webhook secret; it is checked in constant time before the body is parsed.
//! Unsigned or wrongly signed deliveries get 401 and a log line naming the delivery, never the
//! payload. A valid `published` (or `released`) release event goes through the same claim as
//! polling, so a release seen both ways still starts one run; like polling, it ignores a
//! release published before the agent began watching the repository.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

use crate::metrics::WebhookResult;
use crate::poller::WebhookOffer;
use crate::release::Release;
use crate::scheduler::Offer;
use crate::web::App;

/// Largest delivery read; GitHub caps payloads at 25 MB, release events are a few KB.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Why a delivery's signature was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("no X-Hub-Signature-256 header")]
    Missing,
    #[error("X-Hub-Signature-256 is not `sha256=` and 64 hex digits")]
    Malformed,
    #[error("X-Hub-Signature-256 does not match the body and the webhook secret")]
    Mismatch,
}

/// Check `signature` (the `X-Hub-Signature-256` value) against `body` and `secret`, in
/// constant time.
pub fn verify_signature(
    secret: &[u8],
    body: &[u8],
    signature: Option<&str>,
) -> Result<(), SignatureError> {
    let signature = signature.ok_or(SignatureError::Missing)?;
    let hex_digest = signature
        .trim()
        .strip_prefix("sha256=")
        .ok_or(SignatureError::Malformed)?;
    let expected = hex::decode(hex_digest).map_err(|_| SignatureError::Malformed)?;
    if expected.len() != 32 {
        return Err(SignatureError::Malformed);
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    mac.verify_slice(&expected)
        .map_err(|_| SignatureError::Mismatch)
}

/// The parts of a `release` event the agent reads.
#[derive(Debug, Deserialize)]
struct ReleaseEvent {
    action: String,
    release: Release,
    repository: EventRepository,
}

#[derive(Debug, Deserialize)]
struct EventRepository {
    full_name: String,
}

/// A header as text for a log line: short, printable, or `-`.
fn header_text(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(|text| {
            text.chars()
                .filter(|c| c.is_ascii_graphic())
                .take(64)
                .collect::<String>()
        })
        .filter(|text| !text.is_empty())
        .unwrap_or_else(|| "-".to_owned())
}

fn json(status: StatusCode, value: serde_json::Value) -> Response {
    (status, axum::Json(value)).into_response()
}

/// The handler of `POST /webhooks/github`.
pub async fn receive(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(secret) = &app.webhook_secret else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let delivery = header_text(&headers, "x-github-delivery");
    let event = header_text(&headers, "x-github-event");
    let signature = headers
        .get("x-hub-signature-256")
        .map(|value| value.to_str().unwrap_or("invalid"));
    if let Err(error) = verify_signature(secret.expose().as_bytes(), &body, signature) {
        app.metrics.webhook(WebhookResult::Rejected);
        tracing::warn!(
            delivery = %delivery,
            event = %event,
            bytes = body.len(),
            "rejected a webhook delivery: {error}; check that GitHub and the agent use the same secret"
        );
        return json(
            StatusCode::UNAUTHORIZED,
            serde_json::json!({"error": "the signature is missing or wrong"}),
        );
    }
    match event.as_str() {
        "ping" => {
            app.metrics.webhook(WebhookResult::Accepted);
            return json(StatusCode::OK, serde_json::json!({"pong": true}));
        }
        "release" => {}
        _ => {
            app.metrics.webhook(WebhookResult::Ignored);
            return json(
                StatusCode::ACCEPTED,
                serde_json::json!({"ignored": format!("`{event}` events start nothing; subscribe to release events only")}),
            );
        }
    }
    let payload: ReleaseEvent = match serde_json::from_slice(&body) {
        Ok(payload) => payload,
        Err(error) => {
            app.metrics.webhook(WebhookResult::Ignored);
            tracing::warn!(delivery = %delivery, "a signed release event could not be read: {error}");
            return json(
                StatusCode::BAD_REQUEST,
                serde_json::json!({"error": "not a release event payload"}),
            );
        }
    };
    if !matches!(payload.action.as_str(), "published" | "released") {
        app.metrics.webhook(WebhookResult::Ignored);
        return json(
            StatusCode::ACCEPTED,
            serde_json::json!({"ignored": format!("release action `{}` starts nothing", payload.action)}),
        );
    }
    let repository = payload.repository.full_name;
    let release = payload.release;
    let offer = app.poller.offer_webhook(&repository, &release).await;
    tracing::info!(
        delivery = %delivery,
        repository = %repository,
        "webhook: release {} of {repository}: {offer}",
        release.tag_name
    );
    match offer {
        WebhookOffer::NotWatched => {
            app.metrics.webhook(WebhookResult::Ignored);
            json(
                StatusCode::ACCEPTED,
                serde_json::json!({"ignored": format!("{repository} is not watched by this agent")}),
            )
        }
        WebhookOffer::Skipped(reason) => {
            app.metrics.webhook(WebhookResult::Ignored);
            json(
                StatusCode::ACCEPTED,
                serde_json::json!({"ignored": format!("release {} is {reason}", release.tag_name)}),
            )
        }
        WebhookOffer::Offered(Offer::Started(run)) => {
            app.metrics.webhook(WebhookResult::Accepted);
            json(StatusCode::CREATED, serde_json::json!({"run": run}))
        }
        WebhookOffer::Offered(Offer::AlreadyStarted(run)) => {
            app.metrics.webhook(WebhookResult::Accepted);
            json(
                StatusCode::OK,
                serde_json::json!({"run": run, "already_started": true}),
            )
        }
        WebhookOffer::Offered(Offer::Busy) => {
            app.metrics.webhook(WebhookResult::Accepted);
            json(
                StatusCode::ACCEPTED,
                serde_json::json!({"pending": "the run is being started; polling finishes the job if this agent cannot"}),
            )
        }
        WebhookOffer::Offered(Offer::NotStartable(message)) => {
            app.metrics.webhook(WebhookResult::Ignored);
            json(
                StatusCode::UNPROCESSABLE_ENTITY,
                serde_json::json!({"error": message}),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GitHub's documented example (docs.github.com, "Validating webhook deliveries").
    const SECRET: &str = "It's a Secret to Everybody";
    const PAYLOAD: &str = "Hello, World!";
    const SIGNATURE: &str =
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    #[test]
    fn githubs_test_vector_passes() {
        assert_eq!(
            verify_signature(SECRET.as_bytes(), PAYLOAD.as_bytes(), Some(SIGNATURE)),
            Ok(())
        );
    }

    #[test]
    fn everything_else_is_refused() {
        let flipped = SIGNATURE.replace("e17", "e18");
        let cases = [
            (None, SignatureError::Missing),
            (Some(""), SignatureError::Malformed),
            (Some("sha1=757107ea"), SignatureError::Malformed),
            (Some("sha256=zz"), SignatureError::Malformed),
            (Some("sha256=757107ea"), SignatureError::Malformed),
            (Some(flipped.as_str()), SignatureError::Mismatch),
        ];
        for (signature, expected) in cases {
            assert_eq!(
                verify_signature(SECRET.as_bytes(), PAYLOAD.as_bytes(), signature),
                Err(expected),
                "{signature:?}"
            );
        }
        // The right signature over another body, or under another secret.
        assert_eq!(
            verify_signature(SECRET.as_bytes(), b"Hello, World?", Some(SIGNATURE)),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(b"another secret", PAYLOAD.as_bytes(), Some(SIGNATURE)),
            Err(SignatureError::Mismatch)
        );
    }
}
