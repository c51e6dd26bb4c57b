//! A small S3 client for the S3 connectors ([`crate::sink::s3`], [`crate::source::s3`]):
//! HTTP/1.1 on a glommio `TcpStream` with AWS Signature V4, so S3 requests never block a
//! shard. Configuration ([`S3Options`] → [`S3Config`]) comes from connector options and the
//! usual `AWS_*` environment variables; [`S3Url`] parses `s3://bucket/prefix` paths.
//!
//! Invariants:
//! - every host name is resolved when a connector is created (on the driver), never on a shard;
//! - secrets never appear in `Debug` output or error messages;
//! - only `http://` endpoints are served (weir has no TLS stack yet): an `https://` endpoint
//!   is refused with a message saying so, rather than sending credentials in clear text to
//!   a TLS port.

pub mod client;
pub mod sigv4;
pub mod xml;

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

pub use client::{ObjectInfo, S3Client, S3Error};
pub use sigv4::Credentials;

use crate::error::{Result, WeirError};

/// An `s3://bucket/prefix` path (also `s3a://`, `s3p://`: Flink's S3 plugin schemes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Url {
    pub bucket: String,
    /// The key prefix, without a leading `/` (may be empty).
    pub prefix: String,
}

impl S3Url {
    /// True if `path` names S3 (`s3://`, `s3a://`, `s3p://`).
    pub fn is_s3(path: &str) -> bool {
        ["s3://", "s3a://", "s3p://"].iter().any(|s| path.starts_with(s))
    }

    pub fn parse(path: &str) -> std::result::Result<Self, String> {
        let rest = ["s3://", "s3a://", "s3p://"]
            .iter()
            .find_map(|s| path.strip_prefix(s))
            .ok_or_else(|| format!("'{path}' is not an s3:// path"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let valid = (3..=63).contains(&bucket.len())
            && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
            && !bucket.starts_with(['-', '.'])
            && !bucket.ends_with(['-', '.']);
        if !valid {
            return Err(format!(
                "'{bucket}' in '{path}' is not a valid bucket name (3 to 63 lower-case letters, digits, '-' or '.')"
            ));
        }
        Ok(Self {
            bucket: bucket.to_string(),
            prefix: prefix.trim_start_matches('/').to_string(),
        })
    }

    /// The prefix as a folder: empty, or ending with `/`.
    pub fn folder(&self) -> String {
        if self.prefix.is_empty() || self.prefix.ends_with('/') {
            self.prefix.clone()
        } else {
            format!("{}/", self.prefix)
        }
    }
}

impl std::fmt::Display for S3Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.prefix)
    }
}

/// Connection settings as given (options win over the environment; see [`Self::resolve`]).
#[derive(Clone, Default)]
pub struct S3Options {
    /// `http://host:port` (`s3.endpoint`; env `AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`).
    pub endpoint: Option<String>,
    /// `s3.region` (env `AWS_REGION`, `AWS_DEFAULT_REGION`; default `us-east-1`).
    pub region: Option<String>,
    /// `s3.access-key` (env `AWS_ACCESS_KEY_ID`).
    pub access_key: Option<String>,
    /// `s3.secret-key` (env `AWS_SECRET_ACCESS_KEY`).
    pub secret_key: Option<String>,
    /// `s3.session-token` (env `AWS_SESSION_TOKEN`).
    pub session_token: Option<String>,
    /// `s3.path.style.access`: `http://endpoint/bucket/key` instead of `http://bucket.endpoint/key`
    /// (default: on for an IP address or `localhost` endpoint, off otherwise).
    pub path_style: Option<bool>,
    /// Per request: connect, send, answer (`s3.request-timeout`, default 30 s).
    pub request_timeout: Option<Duration>,
    /// Retries of a request failing with 5xx / 429 / a connection error (`s3.max-retries`, default 8).
    pub max_retries: Option<u32>,
    /// First retry delay, doubled per retry (`s3.retry-backoff`, default 100 ms).
    pub retry_backoff: Option<Duration>,
}

impl std::fmt::Debug for S3Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Options")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key", &self.access_key)
            .field("secret_key", &self.secret_key.as_ref().map(|_| "***"))
            .field("path_style", &self.path_style)
            .finish()
    }
}

/// Resolved connection settings.
#[derive(Clone, Debug)]
pub struct S3Config {
    /// Endpoint host (no port) and port.
    pub host: String,
    pub port: u16,
    pub region: String,
    pub credentials: Credentials,
    pub path_style: bool,
    pub request_timeout: Duration,
    pub max_retries: u32,
    pub retry_backoff: Duration,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl S3Options {
    /// Fill what the options leave open from the `AWS_*` environment variables and defaults.
    pub fn resolve(&self) -> std::result::Result<S3Config, String> {
        let region = self
            .region
            .clone()
            .or_else(|| env("AWS_REGION"))
            .or_else(|| env("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|| "us-east-1".into());
        let endpoint = self
            .endpoint
            .clone()
            .or_else(|| env("AWS_ENDPOINT_URL_S3"))
            .or_else(|| env("AWS_ENDPOINT_URL"))
            .unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"));
        let hostport = match endpoint.strip_prefix("http://") {
            Some(h) => h.trim_end_matches('/'),
            None if endpoint.starts_with("https://") => {
                return Err(format!(
                    "S3 endpoint '{endpoint}' uses TLS, which weir's S3 client does not speak yet: \
                     set 's3.endpoint' (or AWS_ENDPOINT_URL) to an http:// endpoint, e.g. a MinIO / garage server or a TLS-terminating proxy"
                ))
            }
            None => return Err(format!("S3 endpoint '{endpoint}' is not an http:// URL (e.g. 'http://127.0.0.1:9000')")),
        };
        if hostport.contains('/') {
            return Err(format!("S3 endpoint '{endpoint}' must not have a path"));
        }
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || hostport.starts_with('[') => {
                let port = p.parse::<u16>().map_err(|_| format!("S3 endpoint '{endpoint}': '{p}' is not a port"))?;
                (h.to_string(), port)
            }
            _ => (hostport.to_string(), 80),
        };
        if host.is_empty() {
            return Err(format!("S3 endpoint '{endpoint}' has no host"));
        }
        let access_key = self.access_key.clone().or_else(|| env("AWS_ACCESS_KEY_ID"));
        let secret_key = self.secret_key.clone().or_else(|| env("AWS_SECRET_ACCESS_KEY"));
        let (Some(access_key), Some(secret_key)) = (access_key, secret_key) else {
            return Err("S3 credentials are missing: set 's3.access-key' and 's3.secret-key' (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)".into());
        };
        let literal_host = host.parse::<std::net::IpAddr>().is_ok() || host.trim_matches(['[', ']']).parse::<std::net::IpAddr>().is_ok() || host == "localhost";
        Ok(S3Config {
            host,
            port,
            region,
            credentials: Credentials {
                access_key,
                secret_key,
                session_token: self.session_token.clone().or_else(|| env("AWS_SESSION_TOKEN")),
            },
            path_style: self.path_style.unwrap_or(literal_host),
            request_timeout: self.request_timeout.unwrap_or(Duration::from_secs(30)),
            max_retries: self.max_retries.unwrap_or(8),
            retry_backoff: self.retry_backoff.unwrap_or(Duration::from_millis(100)),
        })
    }
}

/// Where the requests for one bucket go (resolved on the driver).
#[derive(Clone, Debug)]
pub struct BucketTarget {
    pub bucket: String,
    pub address: SocketAddr,
    /// The `Host` header.
    pub host: String,
    /// `/bucket` (path style) or empty (virtual-hosted style); object paths are this + `/key`.
    pub path_prefix: String,
}

impl S3Config {
    /// Resolve the address serving `bucket` (DNS now, on the calling thread).
    pub fn target(&self, bucket: &str) -> Result<BucketTarget> {
        let (host, path_prefix) = if self.path_style {
            (self.host.clone(), format!("/{bucket}"))
        } else {
            (format!("{bucket}.{}", self.host), String::new())
        };
        let address = (host.trim_matches(['[', ']']), self.port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| WeirError::Config(format!("cannot resolve S3 endpoint host '{host}' (bucket {bucket})")))?;
        let host_header = if self.port == 80 { host } else { format!("{host}:{}", self.port) };
        Ok(BucketTarget {
            bucket: bucket.to_string(),
            address,
            host: host_header,
            path_prefix,
        })
    }
}

/// Run `work` on a fresh glommio executor on a helper thread and wait for it: for S3 calls
/// made outside a shard (listing a source's objects when the job is built, tests, tools).
pub fn blocking<T, F, Fut>(work: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
{
    std::thread::Builder::new()
        .name("weir-s3".into())
        .spawn(move || {
            glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
                .io_memory(1 << 20)
                .make()
                .map(|ex| ex.run(work()))
                .map_err(|e| WeirError::Other(format!("starting an executor for S3 requests: {e}")))
        })
        .map_err(|e| WeirError::Other(format!("starting a thread for S3 requests: {e}")))?
        .join()
        .map_err(|_| WeirError::Other("the S3 request thread panicked".into()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_paths_and_endpoints() {
        let u = S3Url::parse("s3://my-bucket/out/counts").unwrap();
        assert_eq!(
            (u.bucket.as_str(), u.prefix.as_str(), u.folder().as_str()),
            ("my-bucket", "out/counts", "out/counts/")
        );
        assert_eq!(S3Url::parse("s3a://b12").unwrap().folder(), "");
        assert!(S3Url::parse("s3://Bad_Bucket/x").unwrap_err().contains("not a valid bucket name"));
        assert!(S3Url::parse("/tmp/x").is_err());
        let o = S3Options {
            endpoint: Some("http://127.0.0.1:9000/".into()),
            access_key: Some("a".into()),
            secret_key: Some("s".into()),
            region: Some("eu-west-1".into()),
            ..Default::default()
        };
        let c = o.resolve().unwrap();
        assert_eq!(
            (c.host.as_str(), c.port, c.path_style, c.region.as_str()),
            ("127.0.0.1", 9000, true, "eu-west-1")
        );
        let t = c.target("bkt").unwrap();
        assert_eq!((t.host.as_str(), t.path_prefix.as_str()), ("127.0.0.1:9000", "/bkt"));
        let tls = S3Options {
            endpoint: Some("https://s3.amazonaws.com".into()),
            ..o.clone()
        };
        assert!(tls.resolve().unwrap_err().contains("TLS"));
        assert!(!format!("{o:?}").contains("\"s\""), "no secret in Debug");
    }
}
