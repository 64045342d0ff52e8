//! One HTTP call as every connector makes it: send, map a failure to its
//! class, read a bounded body, and (for the connectors that opt in) retry a
//! throttled call after the SIEM's `Retry-After`.
//!
//! Bodies are read only to take numbers, ids and hashes out of them; they are
//! never logged or returned.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable as _};
use picket_proto::ErrorClass;
use reqwest::{RequestBuilder, Response};

use super::{classify_status, classify_transport};

/// Largest answer a connector reads (4 MiB); a larger one is a [`ErrorClass::SiemError`].
pub const MAX_REPLY_BYTES: usize = 4 * 1024 * 1024;

/// Longest `Retry-After` honoured (30 s): a SIEM asking for more is treated as
/// throttling beyond the job's budget (the job runner's deadline bounds the rest).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// Throttled attempts retried before giving up with [`ErrorClass::RateLimited`].
pub const RATE_LIMIT_RETRIES: usize = 3;

/// A failed call: its class, the HTTP status when there was one and the
/// `Retry-After` the SIEM asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    /// HTTP status, when the SIEM answered.
    pub status: Option<u16>,
    /// The class reported for it.
    pub class: ErrorClass,
    /// `Retry-After` of a 429, in seconds form.
    pub retry_after: Option<Duration>,
}

impl From<ErrorClass> for Failure {
    fn from(class: ErrorClass) -> Self {
        Failure {
            status: None,
            class,
            retry_after: None,
        }
    }
}

/// A successful answer: the status and the (bounded) body.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status (2xx).
    pub status: u16,
    /// The body, at most [`MAX_REPLY_BYTES`].
    pub body: Vec<u8>,
}

impl Reply {
    /// The body as JSON.
    ///
    /// # Errors
    /// [`ErrorClass::SiemError`] when it is not JSON of the expected shape.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, ErrorClass> {
        serde_json::from_slice(&self.body).map_err(|_| ErrorClass::SiemError)
    }
}

/// Sends one request and reads its answer. `op` and `siem` name the call in
/// debug logs (with the status and class only).
///
/// # Errors
/// A [`Failure`] for transport errors, non-2xx statuses and oversize bodies.
pub async fn send(
    siem: &'static str,
    op: &'static str,
    request: RequestBuilder,
) -> Result<Reply, Failure> {
    let response = request.send().await.map_err(|error| {
        let class = classify_transport(&error);
        tracing::debug!(siem, op, class = class.as_str(), "SIEM call failed");
        Failure::from(class)
    })?;
    let status = response.status().as_u16();
    if !response.status().is_success() {
        let class = classify_status(status);
        let retry_after = retry_after(&response);
        tracing::debug!(siem, op, status, class = class.as_str(), "SIEM call failed");
        return Err(Failure {
            status: Some(status),
            class,
            retry_after,
        });
    }
    let body = read_body(response).await.map_err(|class| {
        tracing::debug!(
            siem,
            op,
            status,
            class = class.as_str(),
            "SIEM answer unreadable"
        );
        Failure {
            status: Some(status),
            class,
            retry_after: None,
        }
    })?;
    tracing::debug!(siem, op, status, "SIEM call succeeded");
    Ok(Reply { status, body })
}

/// Like [`send`], retrying a 429 up to [`RATE_LIMIT_RETRIES`] times: after the
/// answer's `Retry-After` (capped at [`MAX_RETRY_AFTER`]) when given, else on
/// an exponential schedule with jitter (500 ms, 1 s, 2 s). `make` builds the
/// request afresh for each attempt.
///
/// # Errors
/// The last attempt's [`Failure`].
pub async fn send_retrying<F>(
    siem: &'static str,
    op: &'static str,
    make: F,
) -> Result<Reply, Failure>
where
    F: Fn() -> Result<RequestBuilder, ErrorClass>,
{
    let attempt = || async {
        let request = make().map_err(Failure::from)?;
        send(siem, op, request).await
    };
    attempt
        .retry(
            ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(500))
                .with_max_delay(MAX_RETRY_AFTER)
                .with_max_times(RATE_LIMIT_RETRIES)
                .with_jitter(),
        )
        .sleep(tokio::time::sleep)
        .when(|f: &Failure| f.status == Some(429))
        .adjust(|f: &Failure, planned| match (f.retry_after, planned) {
            // Stop when the schedule is exhausted; otherwise wait what the SIEM asked.
            (_, None) => None,
            (Some(asked), Some(_)) => Some(asked.min(MAX_RETRY_AFTER)),
            (None, planned) => planned,
        })
        .notify(|f: &Failure, wait| {
            tracing::debug!(
                siem,
                op,
                status = f.status,
                wait_ms = wait.as_millis() as u64,
                "SIEM throttled the call; retrying"
            );
        })
        .await
}

/// `Retry-After` in its delta-seconds form (the HTTP-date form is treated as absent).
fn retry_after(response: &Response) -> Option<Duration> {
    response
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// Reads a body up to [`MAX_REPLY_BYTES`].
async fn read_body(mut response: Response) -> Result<Vec<u8>, ErrorClass> {
    if response
        .content_length()
        .is_some_and(|len| len > MAX_REPLY_BYTES as u64)
    {
        return Err(ErrorClass::SiemError);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| classify_transport(&e))? {
        if body.len() + chunk.len() > MAX_REPLY_BYTES {
            return Err(ErrorClass::SiemError);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Appends percent-encoded path segments to `base` (whose own path is kept).
///
/// # Errors
/// [`ErrorClass::MalformedJob`] when `base` cannot take a path.
pub fn join(base: &reqwest::Url, segments: &[&str]) -> Result<reqwest::Url, ErrorClass> {
    let mut url = base.clone();
    url.path_segments_mut()
        .map_err(|()| ErrorClass::MalformedJob)?
        .pop_if_empty()
        .extend(segments);
    Ok(url)
}
