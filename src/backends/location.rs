//! Repository locations as users write them: `/path`, `local:/path`,
//! `s3:https://ENDPOINT/BUCKET[/PREFIX]`, `b2:BUCKET[/PREFIX]`.

use super::BackendError;
use opendal::layers::{HttpClientLayer, RetryLayer, TimeoutLayer};
use opendal::raw::HttpClient;
use opendal::Operator;
use std::fmt;
use std::time::Duration;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    Local(String),
    S3 {
        endpoint: String,
        bucket: String,
        prefix: String,
    },
    B2 {
        bucket: String,
        prefix: String,
    },
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Local(p) => write!(f, "{p}"),
            Location::S3 {
                endpoint,
                bucket,
                prefix,
            } => write!(f, "s3:{endpoint}/{bucket}/{prefix}"),
            Location::B2 { bucket, prefix } => write!(f, "b2:{bucket}/{prefix}"),
        }
    }
}

fn split_bucket(s: &str) -> (String, String) {
    let s = s.trim_matches('/');
    match s.split_once('/') {
        Some((b, p)) => (b.to_string(), p.trim_matches('/').to_string()),
        None => (s.to_string(), String::new()),
    }
}

impl Location {
    pub fn parse(s: &str) -> Result<Location, BackendError> {
        let bad = |why: &str| BackendError::BadLocation(s.to_string(), why.to_string());
        if let Some(rest) = s.strip_prefix("s3:") {
            let (scheme, rest) = rest
                .split_once("://")
                .ok_or_else(|| bad("expected s3:https://ENDPOINT/BUCKET[/PREFIX]"))?;
            let (host, path) = rest
                .split_once('/')
                .ok_or_else(|| bad("missing bucket after the endpoint"))?;
            let (bucket, prefix) = split_bucket(path);
            if bucket.is_empty() {
                return Err(bad("missing bucket after the endpoint"));
            }
            return Ok(Location::S3 {
                endpoint: format!("{scheme}://{host}"),
                bucket,
                prefix,
            });
        }
        if let Some(rest) = s.strip_prefix("b2:") {
            let (bucket, prefix) = split_bucket(rest);
            if bucket.is_empty() {
                return Err(bad("expected b2:BUCKET[/PREFIX]"));
            }
            return Ok(Location::B2 { bucket, prefix });
        }
        let path = s.strip_prefix("local:").unwrap_or(s);
        if path.is_empty() {
            return Err(bad("empty path"));
        }
        let abs = std::path::absolute(path).map_err(|e| bad(&e.to_string()))?;
        Ok(Location::Local(abs.to_string_lossy().into_owned()))
    }

    /// Local path of a local repository.
    pub fn local_path(&self) -> Option<&str> {
        match self {
            Location::Local(p) => Some(p),
            _ => None,
        }
    }

    pub(super) fn operator(&self, timeout: Duration) -> Result<Operator, BackendError> {
        let fail = |e: opendal::Error| BackendError::BadLocation(self.to_string(), e.to_string());
        match self {
            Location::Local(path) => {
                let tmp = format!("{}/{}", path.trim_end_matches('/'), super::local::TMP_DIR);
                let b = opendal::services::Fs::default().root(path).atomic_write_dir(&tmp);
                Ok(Operator::new(b).map_err(fail)?.finish())
            }
            Location::S3 {
                endpoint,
                bucket,
                prefix,
            } => {
                let region = std::env::var("AWS_REGION")
                    .or_else(|_| std::env::var("AWS_DEFAULT_REGION"))
                    .unwrap_or_else(|_| "us-east-1".into());
                let b = opendal::services::S3::default()
                    .endpoint(endpoint)
                    .bucket(bucket)
                    .root(&format!("/{prefix}"))
                    .region(&region)
                    .disable_ec2_metadata()
                    .disable_config_load();
                let b = match (
                    std::env::var("AWS_ACCESS_KEY_ID"),
                    std::env::var("AWS_SECRET_ACCESS_KEY"),
                ) {
                    (Ok(k), Ok(s)) => b.access_key_id(&k).secret_access_key(&s),
                    _ => b,
                };
                Ok(remote_layers(Operator::new(b).map_err(fail)?.finish(), timeout))
            }
            Location::B2 { bucket, prefix } => {
                let id = std::env::var("B2_ACCOUNT_ID").unwrap_or_default();
                let key = std::env::var("B2_ACCOUNT_KEY").unwrap_or_default();
                let bucket_id = std::env::var("B2_BUCKET_ID").unwrap_or_default();
                let b = opendal::services::B2::default()
                    .bucket(bucket)
                    .bucket_id(&bucket_id)
                    .application_key_id(&id)
                    .application_key(&key)
                    .root(&format!("/{prefix}"));
                Ok(remote_layers(Operator::new(b).map_err(fail)?.finish(), timeout))
            }
        }
    }
}

/// Retries with exponential backoff and jitter on errors OpenDAL marks temporary (5xx, 429,
/// timeouts, cut connections); permanent errors (credentials, missing bucket) fail at once.
/// The timeout bounds each attempt: a whole request, so a pack's PUT must fit in it.
fn remote_layers(op: Operator, timeout: Duration) -> Operator {
    let client = HttpClient::with(super::http::RetryAfterClient(reqwest::Client::new()));
    op.layer(HttpClientLayer::new(client))
        .layer(TimeoutLayer::new().with_timeout(timeout).with_io_timeout(timeout))
        .layer(
            RetryLayer::new()
                .with_jitter()
                .with_max_times(5)
                .with_min_delay(Duration::from_millis(100))
                .with_max_delay(Duration::from_secs(5)),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_locations() {
        assert_eq!(
            Location::parse("local:/srv/repo").unwrap(),
            Location::Local("/srv/repo".into())
        );
        assert_eq!(
            Location::parse("/srv/repo").unwrap(),
            Location::Local("/srv/repo".into())
        );
        assert_eq!(
            Location::parse("s3:https://s3.us-west-004.backblazeb2.com/bkt/hosts/a").unwrap(),
            Location::S3 {
                endpoint: "https://s3.us-west-004.backblazeb2.com".into(),
                bucket: "bkt".into(),
                prefix: "hosts/a".into()
            }
        );
        assert_eq!(
            Location::parse("b2:bkt").unwrap(),
            Location::B2 {
                bucket: "bkt".into(),
                prefix: "".into()
            }
        );
        assert!(Location::parse("s3:nohost").is_err());
        assert!(Location::parse("b2:").is_err());
    }
}
