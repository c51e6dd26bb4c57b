//! Helpers of the S3 tests: the test server's settings (`.ci/services.sh` starts moto with
//! authentication on and exports `WEIR_TEST_S3`, `WEIR_TEST_S3_ACCESS_KEY`,
//! `WEIR_TEST_S3_SECRET_KEY`), a fresh bucket per test, and blocking reads of what a job wrote.
#![allow(dead_code)]

use std::sync::Arc;

use weir::s3::{ObjectInfo, S3Client, S3Options};

/// The test server's endpoint and credentials, or `None` (skips; fails under CI).
pub struct Server {
    pub endpoint: String,
    pub access_key: String,
    pub secret_key: String,
}

pub fn server() -> Option<Server> {
    let endpoint = super::test_server("WEIR_TEST_S3")?;
    Some(Server {
        endpoint,
        access_key: std::env::var("WEIR_TEST_S3_ACCESS_KEY").expect("WEIR_TEST_S3_ACCESS_KEY set with WEIR_TEST_S3"),
        secret_key: std::env::var("WEIR_TEST_S3_SECRET_KEY").expect("WEIR_TEST_S3_SECRET_KEY set with WEIR_TEST_S3"),
    })
}

impl Server {
    pub fn options(&self) -> S3Options {
        S3Options {
            endpoint: Some(self.endpoint.clone()),
            access_key: Some(self.access_key.clone()),
            secret_key: Some(self.secret_key.clone()),
            ..Default::default()
        }
    }

    /// The connection options of a SQL table (`'s3.endpoint' = ..., ...`).
    pub fn sql_options(&self) -> String {
        format!(
            "'s3.endpoint' = '{}', 's3.access-key' = '{}', 's3.secret-key' = '{}', 's3.path.style.access' = 'true'",
            self.endpoint, self.access_key, self.secret_key
        )
    }

    /// Run `f` with a client of `bucket` on a helper executor.
    pub fn with_client<T: Send + 'static, Fut: std::future::Future<Output = T>>(&self, bucket: &str, f: impl FnOnce(S3Client) -> Fut + Send + 'static) -> T {
        let config = Arc::new(self.options().resolve().unwrap());
        let target = config.target(bucket).unwrap();
        weir::s3::blocking(move || f(S3Client::new(config, target))).unwrap()
    }

    /// Create a bucket named after the test and this process (unique per run).
    pub fn fresh_bucket(&self, test: &str) -> String {
        let bucket = format!("{test}-{}", std::process::id());
        self.with_client(&bucket, |mut c| async move { c.create_bucket().await.unwrap() });
        bucket
    }

    /// Objects whose key starts with `prefix`. (Listed by the prefix up to its first `/` and
    /// filtered here: moto checks the signature of a query value with `/` decoded.)
    pub fn list(&self, bucket: &str, prefix: &str) -> Vec<ObjectInfo> {
        let (wanted, listed) = (prefix.to_string(), prefix.split('/').next().unwrap_or("").to_string());
        self.with_client(bucket, move |mut c| async move {
            let mut all = c.list_objects(&listed).await.unwrap();
            all.retain(|o| o.key.starts_with(&wanted));
            all
        })
    }

    /// Unfinished multipart uploads in the bucket.
    pub fn unfinished_uploads(&self, bucket: &str) -> Vec<(String, String)> {
        self.with_client(bucket, move |mut c| async move { c.list_multipart_uploads("").await.unwrap() })
    }

    pub fn put(&self, bucket: &str, key: &str, body: Vec<u8>) {
        let key = key.to_string();
        self.with_client(bucket, move |mut c| async move { c.put_object(&key, &body).await.unwrap() });
    }

    /// Every line of every object under `prefix`, sorted.
    pub fn lines(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let objects = self.list(bucket, prefix);
        let mut lines = self.with_client(bucket, move |mut c| async move {
            let mut lines = Vec::new();
            for o in objects {
                let body = c.get_object(&o.key).await.unwrap();
                lines.extend(String::from_utf8(body).unwrap().lines().map(str::to_string));
            }
            lines
        });
        lines.sort();
        lines
    }
}
