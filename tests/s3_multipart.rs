//! The S3 sink's multipart uploads and size rolling, through the Rust API: 26 MiB of JSON rows
//! from one shard into `S3Sink` with 5 MiB parts and `file_size` 12 MiB (no checkpoints, so a
//! file is completed when it rolls and at the end). Every file but the last is just over 12 MiB
//! and made of three parts (5 + 5 + the rest, the multipart ETag's `-3`); the lines read back
//! are exactly the rows written. Needs the S3 server of `.ci/services.sh`.

mod common;

use weir::prelude::*;
use weir::sink::format::Format;
use weir::sink::s3::{RollingPolicy, S3Sink};

#[derive(Clone, Debug, serde::Serialize)]
struct Row {
    id: u64,
    payload: String,
}

#[test]
fn large_output_is_uploaded_in_parts_and_rolled_by_size() {
    let Some(server) = common::s3::server() else { return };
    let bucket = server.fresh_bucket("multipart");
    let mut rng = common::Rng::new(0x4D50);
    let rows: Vec<Row> = (0..280_000u64)
        .map(|id| Row {
            id,
            payload: (0..80).map(|_| (b'a' + (rng.next_u64() % 26) as u8) as char).collect(),
        })
        .collect();
    let expected: Vec<String> = {
        let mut v: Vec<String> = rows.iter().map(|r| serde_json::to_string(r).unwrap()).collect();
        v.sort();
        v
    };
    let total: usize = expected.iter().map(|l| l.len() + 1).sum();
    assert!(total > 25 << 20, "{total} bytes");

    let sink = S3Sink::new(&format!("s3://{bucket}/big"), Format::Json, &server.options())
        .unwrap()
        .part_size(5 << 20)
        .rolling(RollingPolicy {
            file_size: 12 << 20,
            ..Default::default()
        });
    let env = StreamEnv::new(EngineConfig {
        cores: 1,
        pin_cores: false,
        ..Default::default()
    });
    env.from_collection(rows).without_event_time().sink(sink);
    env.execute().unwrap();

    let objects = server.list(&bucket, "big/");
    assert_eq!(objects.len(), 3, "{objects:?}");
    for o in &objects[..2] {
        assert!(o.size >= 12 << 20 && o.size < 13 << 20, "{o:?}");
        assert!(o.etag.trim_matches('"').ends_with("-3"), "three parts: {o:?}");
    }
    assert_eq!(objects.iter().map(|o| o.size as usize).sum::<usize>(), total);
    assert_eq!(server.lines(&bucket, "big/"), expected);
    assert!(server.unfinished_uploads(&bucket).is_empty());
}
