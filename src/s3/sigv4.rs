//! AWS Signature Version 4 for S3 requests (header authentication), written against the AWS
//! documentation and checked with its published example.
//!
//! The canonical request is `METHOD \n URI \n QUERY \n HEADERS \n SIGNED \n PAYLOAD-HASH`; the
//! string to sign is `AWS4-HMAC-SHA256 \n DATE \n SCOPE \n hex(sha256(canonical request))`;
//! the key is the HMAC chain `AWS4<secret>` → date → region → `s3` → `aws4_request`.
//!
//! Invariants: the URI path and the query given here are already encoded with
//! [`uri_encode`] (S3 does not normalise paths: the path is signed exactly as sent); the
//! query parameters are signed sorted by name, and must be sent in that order too; header
//! names are lower-case and the signed headers always include `host`,
//! `x-amz-content-sha256` and `x-amz-date`.

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// The static credentials of a request.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key: String,
    pub secret_key: String,
    /// `AWS_SESSION_TOKEN` of temporary credentials, sent as `x-amz-security-token`.
    pub session_token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.debug_struct("Credentials")
            .field("access_key", &self.access_key)
            .field("secret_key", &"***")
            .field("session_token", &self.session_token.as_ref().map(|_| "***"))
            .finish()
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Hex SHA-256 of `bytes` (the `x-amz-content-sha256` of a body).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length");
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

/// AWS's URI encoding: unreserved characters (`A-Z a-z 0-9 - _ . ~`) kept, every other byte
/// `%XX` (upper-case hex); `/` kept when `keep_slash` (object key paths), encoded otherwise
/// (query values).
pub fn uri_encode(text: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for &b in text.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A UTC time as `YYYYMMDDTHHMMSSZ` (the `x-amz-date` form) from seconds since the epoch.
pub fn amz_date(unix_secs: u64) -> String {
    let days = (unix_secs / 86_400) as i64;
    let secs = unix_secs % 86_400;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z", secs / 3600, secs % 3600 / 60, secs % 60)
}

/// What is signed of one request.
pub struct SignInput<'a> {
    pub method: &'a str,
    /// Encoded path (`/bucket/key` or `/key`).
    pub path: &'a str,
    /// `(name, value)` pairs, unencoded; a parameter without value (`?uploads`) has `""`.
    pub query: &'a [(String, String)],
    /// Headers to sign besides the three always signed (lower-case names).
    pub extra_headers: &'a [(String, String)],
    pub host: &'a str,
    pub payload_sha256: &'a str,
    /// `x-amz-date`.
    pub date: &'a str,
    pub region: &'a str,
}

/// The encoded, sorted query string (as it must be sent and signed).
pub fn canonical_query(query: &[(String, String)]) -> String {
    let mut pairs: Vec<(String, String)> = query.iter().map(|(k, v)| (uri_encode(k, false), uri_encode(v, false))).collect();
    pairs.sort();
    pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&")
}

/// The headers to send for `input` signed with `creds`: `x-amz-date`, `x-amz-content-sha256`,
/// `x-amz-security-token` (with a session token) and `authorization` (besides `host` and the
/// extra headers, which the caller sends itself).
pub fn sign(input: &SignInput<'_>, creds: &Credentials) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = vec![
        ("host".into(), input.host.to_string()),
        ("x-amz-content-sha256".into(), input.payload_sha256.to_string()),
        ("x-amz-date".into(), input.date.to_string()),
    ];
    if let Some(token) = &creds.session_token {
        headers.push(("x-amz-security-token".into(), token.clone()));
    }
    headers.extend(input.extra_headers.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string())));
    headers.sort();
    let signed: Vec<&str> = headers.iter().map(|(k, _)| k.as_str()).collect();
    let signed = signed.join(";");
    let mut canonical = format!("{}\n{}\n{}\n", input.method, input.path, canonical_query(input.query));
    for (k, v) in &headers {
        canonical.push_str(&format!("{k}:{v}\n"));
    }
    canonical.push_str(&format!("\n{signed}\n{}", input.payload_sha256));
    let day = &input.date[..8];
    let scope = format!("{day}/{}/s3/aws4_request", input.region);
    let to_sign = format!("AWS4-HMAC-SHA256\n{}\n{scope}\n{}", input.date, sha256_hex(canonical.as_bytes()));
    let mut key = hmac(format!("AWS4{}", creds.secret_key).as_bytes(), day.as_bytes());
    for part in [input.region, "s3", "aws4_request"] {
        key = hmac(&key, part.as_bytes());
    }
    let signature = hex(&hmac(&key, to_sign.as_bytes()));
    let mut out = vec![
        ("x-amz-date".to_string(), input.date.to_string()),
        ("x-amz-content-sha256".to_string(), input.payload_sha256.to_string()),
    ];
    if let Some(token) = &creds.session_token {
        out.push(("x-amz-security-token".into(), token.clone()));
    }
    out.push((
        "authorization".into(),
        format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed}, Signature={signature}",
            creds.access_key
        ),
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example_creds() -> Credentials {
        Credentials {
            access_key: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
        }
    }

    /// The GET Object example of AWS's "Signature Calculations for the Authorization Header".
    #[test]
    fn signs_the_documented_get_object_example() {
        let empty = sha256_hex(b"");
        assert_eq!(empty, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        let headers = sign(
            &SignInput {
                method: "GET",
                path: "/test.txt",
                query: &[],
                extra_headers: &[("range".into(), "bytes=0-9".into())],
                host: "examplebucket.s3.amazonaws.com",
                payload_sha256: &empty,
                date: "20130524T000000Z",
                region: "us-east-1",
            },
            &example_creds(),
        );
        let auth = &headers.iter().find(|(k, _)| k == "authorization").unwrap().1;
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, \
             SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, \
             Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    #[test]
    fn encodes_dates_and_uris() {
        assert_eq!(amz_date(0), "19700101T000000Z");
        assert_eq!(amz_date(1_369_353_600), "20130524T000000Z");
        assert_eq!(amz_date(951_825_599), "20000229T115959Z");
        assert_eq!(uri_encode("a b/c~d+é", true), "a%20b/c~d%2B%C3%A9");
        assert_eq!(uri_encode("a/b", false), "a%2Fb");
        let q = vec![("prefix".to_string(), "out/x y".to_string()), ("uploads".to_string(), String::new())];
        assert_eq!(canonical_query(&q), "prefix=out%2Fx%20y&uploads=");
        assert!(!format!("{:?}", example_creds()).contains("EXAMPLEKEY"));
    }
}
