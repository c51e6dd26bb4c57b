//! Turning Kafka messages into records: the value through the file source's CSV / JSON / raw
//! parsers (one message = one line), optionally wrapped with the message's metadata
//! ([`KafkaRecord`]).
//!
//! Invariants: a message without a value (a tombstone) is skipped, as Flink's formats skip a
//! null value; one trailing `\n` (or `\r\n`) of a value is dropped, so line-oriented producers
//! and the file source agree; a value that does not parse is a [`BadLine`] (the caller applies
//! the bad-record policy), never a panic.

use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::source::file::csv::{CsvOptions, CsvParser};
use crate::source::file::json::JsonParser;
use crate::source::file::{BadLine, LineInfo, ParseLine};

/// A message as the decoder sees it (borrowed from librdkafka's buffer).
pub struct MessageView<'a> {
    pub topic: &'a Arc<str>,
    pub partition: i32,
    pub offset: i64,
    /// Create or log-append time in ms since the epoch (`i64::MIN` if the broker gave none).
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
}

/// A record with the Kafka message's metadata (the source's `with_metadata()` mode): use
/// `timestamp` as event time with `assign_timestamps_and_watermarks(.., |r| r.timestamp)`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KafkaRecord<V> {
    pub value: V,
    pub key: Option<Vec<u8>>,
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    /// Message timestamp in ms since the epoch.
    pub timestamp: i64,
}

/// Decodes messages of one partition into records of `T`.
pub trait DecodeMessage<T> {
    /// Push zero or one record for `msg`.
    fn decode(&mut self, msg: &MessageView<'_>, out: &mut Vec<T>) -> Result<(), BadLine>;
}

/// Builds a decoder per split.
pub type DecoderFactory<T> = Arc<dyn Fn() -> Box<dyn DecodeMessage<T>> + Send + Sync>;

/// The value's bytes without one trailing newline.
fn strip_newline(v: &[u8]) -> &[u8] {
    let v = v.strip_suffix(b"\n").unwrap_or(v);
    v.strip_suffix(b"\r").unwrap_or(v)
}

/// The value through a file-source line parser.
pub(crate) struct ValueDecoder<T> {
    parser: Box<dyn ParseLine<T>>,
    info: LineInfo,
}

impl<T> ValueDecoder<T> {
    pub(crate) fn new(parser: Box<dyn ParseLine<T>>) -> Self {
        Self {
            parser,
            info: LineInfo { file: Arc::from(""), line: 0 },
        }
    }
}

impl<T> DecodeMessage<T> for ValueDecoder<T> {
    fn decode(&mut self, msg: &MessageView<'_>, out: &mut Vec<T>) -> Result<(), BadLine> {
        let Some(value) = msg.value else { return Ok(()) };
        self.parser.parse(strip_newline(value), &self.info, out)
    }
}

/// Raw values as UTF-8 text (invalid UTF-8 is bad).
pub(crate) struct RawDecoder;

impl DecodeMessage<String> for RawDecoder {
    fn decode(&mut self, msg: &MessageView<'_>, out: &mut Vec<String>) -> Result<(), BadLine> {
        let Some(value) = msg.value else { return Ok(()) };
        match std::str::from_utf8(strip_newline(value)) {
            Ok(text) => {
                out.push(text.to_string());
                Ok(())
            }
            Err(e) => Err(BadLine {
                field: None,
                message: format!("invalid UTF-8 at byte {}", e.valid_up_to() + 1),
            }),
        }
    }
}

/// Wraps another decoder's records with the message metadata.
pub(crate) struct WithMetadata<V> {
    inner: Box<dyn DecodeMessage<V>>,
    scratch: Vec<V>,
}

impl<V> DecodeMessage<KafkaRecord<V>> for WithMetadata<V> {
    fn decode(&mut self, msg: &MessageView<'_>, out: &mut Vec<KafkaRecord<V>>) -> Result<(), BadLine> {
        self.inner.decode(msg, &mut self.scratch)?;
        for value in self.scratch.drain(..) {
            out.push(KafkaRecord {
                value,
                key: msg.key.map(<[u8]>::to_vec),
                topic: msg.topic.clone(),
                partition: msg.partition,
                offset: msg.offset,
                timestamp: msg.timestamp,
            });
        }
        Ok(())
    }
}

pub(crate) fn json<T: DeserializeOwned + 'static>() -> DecoderFactory<T> {
    Arc::new(|| Box::new(ValueDecoder::new(Box::new(JsonParser::<T>::new()))))
}

pub(crate) fn csv<T: DeserializeOwned + 'static>(delimiter: u8) -> DecoderFactory<T> {
    Arc::new(move || {
        let options = CsvOptions { has_header: false, delimiter };
        Box::new(ValueDecoder::new(Box::new(CsvParser::<T>::new(options))))
    })
}

pub(crate) fn raw() -> DecoderFactory<String> {
    Arc::new(|| Box::new(RawDecoder))
}

pub(crate) fn with_metadata<V: 'static>(inner: DecoderFactory<V>) -> DecoderFactory<KafkaRecord<V>> {
    Arc::new(move || {
        Box::new(WithMetadata {
            inner: inner(),
            scratch: Vec::with_capacity(1),
        })
    })
}
