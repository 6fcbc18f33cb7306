//! GitHub's rate limit headers and when polling must pause because of them.
//!
//! GitHub says: when `x-ratelimit-remaining` is 0, wait until `x-ratelimit-reset` (epoch
//! seconds); when a response carries `retry-after`, wait that many seconds; after a secondary
//! rate limit without either header, wait at least a minute. Pure: the time comes in.

use axum::http::HeaderMap;
use chrono::{DateTime, TimeDelta, Utc};

/// Wait this long after a rate-limit answer that says nothing about how long to wait.
pub const DEFAULT_PAUSE: TimeDelta = TimeDelta::seconds(60);
/// `x-ratelimit-reset` has one-second resolution and clocks differ: wait a little past it.
const RESET_MARGIN: TimeDelta = TimeDelta::seconds(1);

/// The rate limit headers of one response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateLimit {
    pub limit: Option<u64>,
    pub remaining: Option<u64>,
    pub reset: Option<DateTime<Utc>>,
    /// `retry-after`, in seconds.
    pub retry_after: Option<u64>,
}

impl RateLimit {
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let number = |name: &str| {
            headers
                .get(name)
                .and_then(|value| value.to_str().ok())
                .and_then(|text| text.trim().parse::<u64>().ok())
        };
        RateLimit {
            limit: number("x-ratelimit-limit"),
            remaining: number("x-ratelimit-remaining"),
            reset: number("x-ratelimit-reset")
                .and_then(|seconds| i64::try_from(seconds).ok())
                .and_then(|seconds| DateTime::from_timestamp(seconds, 0)),
            retry_after: number("retry-after"),
        }
    }

    /// Until when no request may be sent after a response with `status` and these headers,
    /// or `None` to go on.
    pub fn pause_until(&self, status: u16, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if let Some(seconds) = self.retry_after {
            let seconds = i64::try_from(seconds).unwrap_or(i64::MAX / 2_000);
            return Some(now + TimeDelta::seconds(seconds));
        }
        if self.remaining == Some(0) {
            return Some(match self.reset {
                Some(reset) if reset > now => reset + RESET_MARGIN,
                Some(_) => now + RESET_MARGIN,
                None => now + DEFAULT_PAUSE,
            });
        }
        // A secondary rate limit: 429, or 403 with rate limit headers present but not at 0.
        // A bare 403 is a permission problem, reported as such rather than waited out.
        if status == 429 || (status == 403 && self.remaining.is_some()) {
            return Some(now + DEFAULT_PAUSE);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn when_polling_pauses() {
        let now: DateTime<Utc> = "2026-11-26T09:00:00Z".parse().unwrap();
        let reset = now.timestamp() + 600;
        let reset_text = reset.to_string();
        let past_text = (now.timestamp() - 5).to_string();
        let cases: Vec<(u16, HeaderMap, Option<i64>)> = vec![
            // Plenty left: go on.
            (
                200,
                headers(&[
                    ("x-ratelimit-remaining", "4999"),
                    ("x-ratelimit-reset", &reset_text),
                ]),
                None,
            ),
            (304, headers(&[("x-ratelimit-remaining", "17")]), None),
            // Exhausted: wait until the reset, a second past it.
            (
                200,
                headers(&[
                    ("x-ratelimit-remaining", "0"),
                    ("x-ratelimit-reset", &reset_text),
                ]),
                Some(601),
            ),
            (
                403,
                headers(&[
                    ("x-ratelimit-remaining", "0"),
                    ("x-ratelimit-reset", &reset_text),
                ]),
                Some(601),
            ),
            // A reset already past: try again in a second.
            (
                403,
                headers(&[
                    ("x-ratelimit-remaining", "0"),
                    ("x-ratelimit-reset", &past_text),
                ]),
                Some(1),
            ),
            // retry-after wins.
            (
                429,
                headers(&[
                    ("retry-after", "30"),
                    ("x-ratelimit-remaining", "0"),
                    ("x-ratelimit-reset", &reset_text),
                ]),
                Some(30),
            ),
            (403, headers(&[("retry-after", "120")]), Some(120)),
            // Secondary limits without a time: a minute.
            (429, headers(&[]), Some(60)),
            (403, headers(&[("x-ratelimit-remaining", "4000")]), Some(60)),
            // A plain 403 is not a rate limit.
            (403, headers(&[]), None),
        ];
        for (status, headers, expected) in cases {
            let limit = RateLimit::from_headers(&headers);
            let pause = limit
                .pause_until(status, now)
                .map(|until| (until - now).num_seconds());
            assert_eq!(pause, expected, "{status} {headers:?}");
        }
    }
}
