//! AWS Signature Version 4 for the Kinesis JSON API: the `Authorization`, `X-Amz-Date` (and
//! `X-Amz-Security-Token`) headers of one `POST /` request.
//!
//! Invariants: the signed headers are exactly `content-type`, `host`, `x-amz-date`,
//! (`x-amz-security-token`,) `x-amz-target`, in that (sorted) order, and the request sends them
//! with the same values; the payload hash covers the exact body bytes sent. Secrets never
//! appear in errors or `Debug` output.

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// Static credentials (Flink's `aws.credentials.provider` = `BASIC`, or the `AWS_*` environment).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<hidden>")
            .field("session_token", &self.session_token.as_ref().map(|_| "<hidden>"))
            .finish()
    }
}

impl Credentials {
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and optionally `AWS_SESSION_TOKEN`.
    pub fn from_env() -> Option<Self> {
        let id = std::env::var("AWS_ACCESS_KEY_ID").ok().filter(|v| !v.is_empty())?;
        let secret = std::env::var("AWS_SECRET_ACCESS_KEY").ok().filter(|v| !v.is_empty())?;
        Some(Self {
            access_key_id: id,
            secret_access_key: secret,
            session_token: std::env::var("AWS_SESSION_TOKEN").ok().filter(|v| !v.is_empty()),
        })
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// The signing key of a day (`yyyymmdd`), region and service.
pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> Vec<u8> {
    let k_date = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k_region = hmac(&k_date, region.as_bytes());
    let k_service = hmac(&k_region, service.as_bytes());
    hmac(&k_service, b"aws4_request")
}

/// `yyyymmddThhmmssZ` of a time in ms since the epoch.
pub fn amz_date(now_ms: i64) -> String {
    let secs = now_ms.div_euclid(1000);
    let (y, m, d) = crate::sql::types::civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!("{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z", s / 3600, s / 60 % 60, s % 60)
}

/// One `POST /` request to sign.
pub struct Request<'a> {
    /// The `Host` header.
    pub host: &'a str,
    /// The `X-Amz-Target` header (`Kinesis_20131202.GetRecords`).
    pub target: &'a str,
    pub content_type: &'a str,
    pub body: &'a [u8],
}

/// The headers to add to `request` (see the module docs for what is signed).
pub fn sign(credentials: &Credentials, region: &str, service: &str, request: &Request<'_>, now_ms: i64) -> Vec<(&'static str, String)> {
    let Request {
        host,
        target,
        content_type,
        body,
    } = *request;
    let date_time = amz_date(now_ms);
    let date = &date_time[..8];
    let mut canonical_headers = format!("content-type:{content_type}\nhost:{host}\nx-amz-date:{date_time}\n");
    let mut signed = String::from("content-type;host;x-amz-date");
    if let Some(token) = &credentials.session_token {
        canonical_headers.push_str(&format!("x-amz-security-token:{token}\n"));
        signed.push_str(";x-amz-security-token");
    }
    canonical_headers.push_str(&format!("x-amz-target:{target}\n"));
    signed.push_str(";x-amz-target");
    let canonical = format!("POST\n/\n\n{canonical_headers}\n{signed}\n{}", hex(&Sha256::digest(body)));
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let to_sign = format!("AWS4-HMAC-SHA256\n{date_time}\n{scope}\n{}", hex(&Sha256::digest(canonical.as_bytes())));
    let signature = hex(&hmac(&signing_key(&credentials.secret_access_key, date, region, service), to_sign.as_bytes()));
    let mut headers = vec![
        (
            "Authorization",
            format!(
                "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed}, Signature={signature}",
                credentials.access_key_id
            ),
        ),
        ("X-Amz-Date", date_time),
    ];
    if let Some(token) = &credentials.session_token {
        headers.push(("X-Amz-Security-Token", token.clone()));
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signing_key_matches_the_published_example() {
        // AWS's documented derivation example (IAM, us-east-1, 2012-02-15).
        let key = signing_key("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "20120215", "us-east-1", "iam");
        assert_eq!(hex(&key), "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d");
    }

    #[test]
    fn dates_are_formatted_in_utc() {
        assert_eq!(amz_date(0), "19700101T000000Z");
        assert_eq!(amz_date(1_329_305_400_000), "20120215T113000Z");
    }

    fn req(body: &[u8]) -> Request<'_> {
        Request {
            host: "127.0.0.1:4567",
            target: "Kinesis_20131202.GetRecords",
            content_type: "application/x-amz-json-1.1",
            body,
        }
    }

    #[test]
    fn authorization_names_scope_and_signed_headers() {
        let c = Credentials {
            access_key_id: "AKID".into(),
            secret_access_key: "s3cr3t-value".into(),
            session_token: Some("t0k3n-value".into()),
        };
        let h = sign(&c, "eu-west-1", "kinesis", &req(b"{}"), 0);
        let auth = &h[0].1;
        assert!(
            auth.starts_with("AWS4-HMAC-SHA256 Credential=AKID/19700101/eu-west-1/kinesis/aws4_request, "),
            "{auth}"
        );
        assert!(auth.contains("SignedHeaders=content-type;host;x-amz-date;x-amz-security-token;x-amz-target, Signature="));
        assert_eq!(auth.rsplit('=').next().unwrap().len(), 64);
        assert_eq!(h[2], ("X-Amz-Security-Token", "t0k3n-value".to_string()));
        // Deterministic for the same input; differs with the body.
        assert_eq!(h, sign(&c, "eu-west-1", "kinesis", &req(b"{}"), 0));
        assert_ne!(h, sign(&c, "eu-west-1", "kinesis", &req(b"{ }"), 0));
        assert!(!format!("{c:?}").contains("s3cr3t-value") && !format!("{c:?}").contains("t0k3n-value"));
    }
}
