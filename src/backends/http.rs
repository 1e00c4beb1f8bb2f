//! The HTTP client under OpenDAL's S3 and B2 services. OpenDAL's retry layer backs off
//! exponentially but ignores `Retry-After`; a server that sends it (429 Too Many Requests,
//! 503 Slow Down) expects no request before then. So a response carrying it is held back
//! here for that long (at most [`MAX_RETRY_AFTER`]) before OpenDAL sees it and retries.

use opendal::raw::{HttpBody, HttpFetch};
use opendal::Buffer;
use std::time::Duration;

/// Longer waits are cut short: the retry layer's own backoff and attempt count still bound
/// the whole operation.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

pub struct RetryAfterClient(pub reqwest::Client);

/// Seconds to wait from a `Retry-After` header (the delay-seconds form; an HTTP date is not
/// used by S3 or B2).
pub fn retry_after(resp: &http::Response<HttpBody>) -> Option<Duration> {
    let s = resp.status().as_u16();
    if s != 429 && s != 503 {
        return None;
    }
    let secs: u64 = resp
        .headers()
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

impl HttpFetch for RetryAfterClient {
    async fn fetch(&self, req: http::Request<Buffer>) -> opendal::Result<http::Response<HttpBody>> {
        let resp = self.0.fetch(req).await?;
        if let Some(d) = retry_after(&resp) {
            tokio::time::sleep(d).await;
        }
        Ok(resp)
    }
}
