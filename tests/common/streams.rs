//! Helpers of the Kinesis and Pulsar source tests: a sink whose records the test can watch
//! while the job runs, and producers for the test servers (`WEIR_TEST_KINESIS`,
//! `WEIR_TEST_PULSAR`, started by `.ci/services.sh`).
#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use weir::batch::Batch;
use weir::operator::Push;
use weir::prelude::*;
use weir::shard::BuildCtx;
use weir::sink::Sink;
use weir::source::kinesis::client::{self, KinesisEndpoint};
use weir::source::kinesis::sigv4::Credentials;

/// Records pushed into a shared vector as they arrive (readable while the job runs).
#[derive(Clone)]
pub struct SharedSink<T>(pub Arc<Mutex<Vec<T>>>);

impl<T> Default for SharedSink<T> {
    fn default() -> Self {
        Self(Arc::new(Mutex::new(Vec::new())))
    }
}

impl<T: Clone> SharedSink<T> {
    pub fn snapshot(&self) -> Vec<T> {
        self.0.lock().unwrap().clone()
    }
}

impl<T: Clone + Send + 'static> Sink<T> for SharedSink<T> {
    fn name(&self) -> String {
        "shared".into()
    }
    fn build(&self, _ctx: &mut BuildCtx<'_>, _name: &str) -> weir::error::Result<Box<dyn Push<T>>> {
        Ok(Box::new(SharedPush(self.0.clone())))
    }
}

struct SharedPush<T>(Arc<Mutex<Vec<T>>>);

impl<T: Clone> Push<T> for SharedPush<T> {
    fn push(&mut self, batch: &mut Batch<T>) {
        self.0.lock().unwrap().extend(batch.records.drain(..));
        batch.clear();
    }
    fn watermark(&mut self, _wm: Timestamp) {}
    fn processing_time(&mut self, _now_ms: Timestamp) {}
    fn end(&mut self) {}
    fn barrier(&mut self, _epoch: u64, _snapshot: &mut weir::checkpoint::runtime::TaskSnapshot) {}
}

/// Test credentials (kinesalite checks their form, not the signature).
pub const ACCESS_KEY: &str = "weir-test";
pub const SECRET_KEY: &str = "weir-test-secret";

pub fn kinesis_endpoint(url: &str) -> Arc<KinesisEndpoint> {
    Arc::new(
        KinesisEndpoint::new(
            url,
            "us-east-1",
            Credentials {
                access_key_id: ACCESS_KEY.into(),
                secret_access_key: SECRET_KEY.into(),
                session_token: None,
            },
        )
        .unwrap(),
    )
}

/// Create `stream` with `shards` shards (ACTIVE on return).
pub fn create_stream(url: &str, stream: &str, shards: u32) {
    let stream = stream.to_string();
    client::blocking(kinesis_endpoint(url), move |mut c| async move { c.create_stream(&stream, shards).await })
        .unwrap()
        .unwrap();
}

/// Put `(partition key, data)` records in order (to one shard when `hash_key` is given).
pub fn put_records(url: &str, stream: &str, records: Vec<(String, Vec<u8>)>, hash_key: Option<&str>) -> Vec<String> {
    let (stream, hash_key) = (stream.to_string(), hash_key.map(str::to_string));
    client::blocking(kinesis_endpoint(url), move |mut c| async move { c.put_records(&stream, &records, hash_key.as_deref()).await })
        .unwrap()
        .unwrap()
}

/// A name unique to this test process and `what`.
pub fn unique(what: &str) -> String {
    format!("weir-{what}-{}-{}", std::process::id(), weir::time::now_ms())
}
