//! The subset of Pulsar's binary protocol (`PulsarApi.proto`) weir speaks, as `prost` messages
//! written by hand (field numbers and defaults as in the upstream file), and the frame codec.
//!
//! Frames: `[total size u32][command size u32][BaseCommand]`, and for `SEND` / `MESSAGE`
//! additionally `[0x0e01][crc32c u32][metadata size u32][MessageMetadata][payload]` (an optional
//! broker-entry-metadata block `[0x0e02][size u32][..]` before it is skipped). Batches: the
//! payload is `[size u32][SingleMessageMetadata][data]` repeated `num_messages_in_batch` times.
//!
//! Invariants: decoding never panics on bytes from the network (sizes are checked against the
//! frame and [`MAX_FRAME_BYTES`]); the checksum of received payloads is verified when present.

#![allow(clippy::derive_partial_eq_without_eq)]

use prost::Message;

/// Frames larger than this are refused (Pulsar's default `maxMessageSize` is 5 MB).
pub const MAX_FRAME_BYTES: usize = 64 << 20;

pub const PROTOCOL_VERSION: i32 = 19;

#[derive(Clone, PartialEq, Message)]
pub struct MessageIdData {
    #[prost(uint64, required, tag = "1")]
    pub ledger_id: u64,
    #[prost(uint64, required, tag = "2")]
    pub entry_id: u64,
    #[prost(int32, optional, tag = "3", default = "-1")]
    pub partition: Option<i32>,
    #[prost(int32, optional, tag = "4", default = "-1")]
    pub batch_index: Option<i32>,
    #[prost(int64, repeated, packed = "false", tag = "5")]
    pub ack_set: Vec<i64>,
    #[prost(int32, optional, tag = "6")]
    pub batch_size: Option<i32>,
}

#[derive(Clone, PartialEq, Message)]
pub struct KeyValue {
    #[prost(string, required, tag = "1")]
    pub key: String,
    #[prost(string, required, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct MessageMetadata {
    #[prost(string, required, tag = "1")]
    pub producer_name: String,
    #[prost(uint64, required, tag = "2")]
    pub sequence_id: u64,
    #[prost(uint64, required, tag = "3")]
    pub publish_time: u64,
    #[prost(message, repeated, tag = "4")]
    pub properties: Vec<KeyValue>,
    #[prost(string, optional, tag = "6")]
    pub partition_key: Option<String>,
    /// 0 = NONE, 1 = LZ4, 2 = ZLIB, 3 = ZSTD, 4 = SNAPPY.
    #[prost(int32, optional, tag = "8")]
    pub compression: Option<i32>,
    #[prost(uint32, optional, tag = "9")]
    pub uncompressed_size: Option<u32>,
    #[prost(int32, optional, tag = "11")]
    pub num_messages_in_batch: Option<i32>,
    #[prost(uint64, optional, tag = "12")]
    pub event_time: Option<u64>,
    #[prost(bool, optional, tag = "25")]
    pub null_value: Option<bool>,
}

#[derive(Clone, PartialEq, Message)]
pub struct SingleMessageMetadata {
    #[prost(message, repeated, tag = "1")]
    pub properties: Vec<KeyValue>,
    #[prost(string, optional, tag = "2")]
    pub partition_key: Option<String>,
    #[prost(int32, required, tag = "3")]
    pub payload_size: i32,
    #[prost(bool, optional, tag = "4")]
    pub compacted_out: Option<bool>,
    #[prost(uint64, optional, tag = "5")]
    pub event_time: Option<u64>,
    #[prost(bool, optional, tag = "9")]
    pub null_value: Option<bool>,
}

#[derive(Clone, PartialEq, Message)]
pub struct CommandConnect {
    #[prost(string, required, tag = "1")]
    pub client_version: String,
    #[prost(int32, optional, tag = "4")]
    pub protocol_version: Option<i32>,
}

#[derive(Clone, PartialEq, Message)]
pub struct CommandConnected {
    #[prost(string, required, tag = "1")]
    pub server_version: String,
    #[prost(int32, optional, tag = "2")]
    pub protocol_version: Option<i32>,
    #[prost(int32, optional, tag = "3")]
    pub max_message_size: Option<i32>,
}

#[derive(Clone, PartialEq, Message)]
pub struct CommandSubscribe {
    #[prost(string, required, tag = "1")]
    pub topic: String,
    #[prost(string, required, tag = "2")]
    pub subscription: String,
    /// 0 = Exclusive, 1 = Shared, 2 = Failover, 3 = Key_Shared.
    #[prost(int32, required, tag = "3")]
    pub sub_type: i32,
    #[prost(uint64, required, tag = "4")]
    pub consumer_id: u64,
    #[prost(uint64, required, tag = "5")]
    pub request_id: u64,
    #[prost(string, optional, tag = "6")]
    pub consumer_name: Option<String>,
    #[prost(bool, optional, tag = "8")]
    pub durable: Option<bool>,
    /// 0 = Latest, 1 = Earliest.
    #[prost(int32, optional, tag = "13")]
    pub initial_position: Option<i32>,
}

#[derive(Clone, PartialEq, Message)]
pub struct CommandPartitionedTopicMetadata {
    #[prost(string, required, tag = "1")]
    pub topic: String,
    #[prost(uint64, required, tag = "2")]
    pub request_id: u64,
}

#[derive(Clone, PartialEq, Message)]
pub struct CommandPartitionedTopicMetadataResponse {
    #[prost(uint32, optional, tag = "1")]
    pub partitions: Option<u32>,
    #[prost(uint64, required, tag = "2")]
    pub request_id: u64,
    /// 0 = Success, 1 = Failed.
    #[prost(int32, optional, tag = "3")]
    pub response: Option<i32>,
    #[prost(int32, optional, tag = "4")]
    pub error: Option<i32>,
    #[prost(string, optional, tag = "5")]
    pub message: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
pub struct CommandLookupTopic {
    #[prost(string, required, tag = "1")]
    pub topic: String,
    #[prost(uint64, required, tag = "2")]
    pub request_id: u64,
    #[prost(bool, optional, tag = "3")]
    pub authoritative: Option<bool>,
}

#[derive(Clone, PartialEq, Message)]
pub struct CommandLookupTopicResponse {
    #[prost(string, optional, tag = "1")]
    pub broker_service_url: Option<String>,
    /// 0 = Redirect, 1 = Connect, 2 = Failed.
    #[prost(int32, optional, tag = "3")]
    pub response: Option<i32>,
    #[prost(uint64, required, tag = "4")]
    pub request_id: u64,
    #[prost(bool, optional, tag = "5")]
    pub authoritative: Option<bool>,
    #[prost(int32, optional, tag = "6")]
    pub error: Option<i32>,
    #[prost(string, optional, tag = "7")]
    pub message: Option<String>,
    #[prost(bool, optional, tag = "8")]
    pub proxy_through_service_url: Option<bool>,
}

#[derive(Clone, PartialEq, Message)]
pub struct CommandProducer {
    #[prost(string, required, tag = "1")]
    pub topic: String,
    #[prost(uint64, required, tag = "2")]
    pub producer_id: u64,
    #[prost(uint64, required, tag = "3")]
    pub request_id: u64,
    #[prost(string, optional, tag = "4")]
    pub producer_name: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
pub struct CommandProducerSuccess {
    #[prost(uint64, required, tag = "1")]
    pub request_id: u64,
    #[prost(string, required, tag = "2")]
    pub producer_name: String,
    #[prost(int64, optional, tag = "3")]
    pub last_sequence_id: Option<i64>,
}

#[derive(Clone, PartialEq, Message)]
pub struct CommandSend {
    #[prost(uint64, required, tag = "1")]
    pub producer_id: u64,
    #[prost(uint64, required, tag = "2")]
    pub sequence_id: u64,
    #[prost(int32, optional, tag = "3")]
    pub num_messages: Option<i32>,
}

#[derive(Clone, PartialEq, Message)]
pub struct CommandSendReceipt {
    #[prost(uint64, required, tag = "1")]
    pub producer_id: u64,
    #[prost(uint64, required, tag = "2")]
    pub sequence_id: u64,
    #[prost(message, optional, tag = "3")]
    pub message_id: Option<MessageIdData>,
}

#[derive(Clone, PartialEq, Message)]
pub struct CommandSendError {
    #[prost(uint64, required, tag = "1")]
    pub producer_id: u64,
    #[prost(uint64, required, tag = "2")]
    pub sequence_id: u64,
    #[prost(int32, required, tag = "3")]
    pub error: i32,
    #[prost(string, required, tag = "4")]
    pub message: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct CommandMessage {
    #[prost(uint64, required, tag = "1")]
    pub consumer_id: u64,
    #[prost(message, required, tag = "2")]
    pub message_id: MessageIdData,
    #[prost(uint32, optional, tag = "3")]
    pub redelivery_count: Option<u32>,
}

#[derive(Clone, PartialEq, Message)]
pub struct CommandAck {
    #[prost(uint64, required, tag = "1")]
    pub consumer_id: u64,
    /// 0 = Individual, 1 = Cumulative.
    #[prost(int32, required, tag = "2")]
    pub ack_type: i32,
    #[prost(message, repeated, tag = "3")]
    pub message_id: Vec<MessageIdData>,
}

#[derive(Clone, PartialEq, Message)]
pub struct CommandFlow {
    #[prost(uint64, required, tag = "1")]
    pub consumer_id: u64,
    #[prost(uint32, required, tag = "2")]
    pub message_permits: u32,
}

#[derive(Clone, PartialEq, Message)]
pub struct CommandSeek {
    #[prost(uint64, required, tag = "1")]
    pub consumer_id: u64,
    #[prost(uint64, required, tag = "2")]
    pub request_id: u64,
    #[prost(message, optional, tag = "3")]
    pub message_id: Option<MessageIdData>,
}

#[derive(Clone, PartialEq, Message)]
pub struct CommandCloseConsumer {
    #[prost(uint64, required, tag = "1")]
    pub consumer_id: u64,
    #[prost(uint64, required, tag = "2")]
    pub request_id: u64,
}

#[derive(Clone, PartialEq, Message)]
pub struct CommandCloseProducer {
    #[prost(uint64, required, tag = "1")]
    pub producer_id: u64,
    #[prost(uint64, required, tag = "2")]
    pub request_id: u64,
}

#[derive(Clone, PartialEq, Message)]
pub struct CommandSuccess {
    #[prost(uint64, required, tag = "1")]
    pub request_id: u64,
}

#[derive(Clone, PartialEq, Message)]
pub struct CommandError {
    #[prost(uint64, required, tag = "1")]
    pub request_id: u64,
    #[prost(int32, required, tag = "2")]
    pub error: i32,
    #[prost(string, required, tag = "3")]
    pub message: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct CommandPing {}

#[derive(Clone, PartialEq, Message)]
pub struct CommandPong {}

#[derive(Clone, PartialEq, Message)]
pub struct CommandGetLastMessageId {
    #[prost(uint64, required, tag = "1")]
    pub consumer_id: u64,
    #[prost(uint64, required, tag = "2")]
    pub request_id: u64,
}

#[derive(Clone, PartialEq, Message)]
pub struct CommandGetLastMessageIdResponse {
    #[prost(message, required, tag = "1")]
    pub last_message_id: MessageIdData,
    #[prost(uint64, required, tag = "2")]
    pub request_id: u64,
    #[prost(message, optional, tag = "3")]
    pub consumer_mark_delete_position: Option<MessageIdData>,
}

#[derive(Clone, PartialEq, Message)]
pub struct CommandReachedEndOfTopic {
    #[prost(uint64, required, tag = "1")]
    pub consumer_id: u64,
}

/// `BaseCommand.Type` values used here.
pub mod kind {
    pub const CONNECT: i32 = 2;
    pub const CONNECTED: i32 = 3;
    pub const SUBSCRIBE: i32 = 4;
    pub const PRODUCER: i32 = 5;
    pub const SEND: i32 = 6;
    pub const SEND_RECEIPT: i32 = 7;
    pub const SEND_ERROR: i32 = 8;
    pub const MESSAGE: i32 = 9;
    pub const ACK: i32 = 10;
    pub const FLOW: i32 = 11;
    pub const SUCCESS: i32 = 13;
    pub const ERROR: i32 = 14;
    pub const CLOSE_PRODUCER: i32 = 15;
    pub const CLOSE_CONSUMER: i32 = 16;
    pub const PRODUCER_SUCCESS: i32 = 17;
    pub const PING: i32 = 18;
    pub const PONG: i32 = 19;
    pub const PARTITIONED_METADATA: i32 = 21;
    pub const PARTITIONED_METADATA_RESPONSE: i32 = 22;
    pub const LOOKUP: i32 = 23;
    pub const LOOKUP_RESPONSE: i32 = 24;
    pub const REACHED_END_OF_TOPIC: i32 = 27;
    pub const SEEK: i32 = 28;
    pub const GET_LAST_MESSAGE_ID: i32 = 29;
    pub const GET_LAST_MESSAGE_ID_RESPONSE: i32 = 30;
}

#[derive(Clone, PartialEq, Message)]
pub struct BaseCommand {
    #[prost(int32, required, tag = "1")]
    pub r#type: i32,
    #[prost(message, optional, tag = "2")]
    pub connect: Option<CommandConnect>,
    #[prost(message, optional, tag = "3")]
    pub connected: Option<CommandConnected>,
    #[prost(message, optional, tag = "4")]
    pub subscribe: Option<CommandSubscribe>,
    #[prost(message, optional, tag = "5")]
    pub producer: Option<CommandProducer>,
    #[prost(message, optional, tag = "6")]
    pub send: Option<CommandSend>,
    #[prost(message, optional, tag = "7")]
    pub send_receipt: Option<CommandSendReceipt>,
    #[prost(message, optional, tag = "8")]
    pub send_error: Option<CommandSendError>,
    #[prost(message, optional, tag = "9")]
    pub message: Option<CommandMessage>,
    #[prost(message, optional, tag = "10")]
    pub ack: Option<CommandAck>,
    #[prost(message, optional, tag = "11")]
    pub flow: Option<CommandFlow>,
    #[prost(message, optional, tag = "13")]
    pub success: Option<CommandSuccess>,
    #[prost(message, optional, tag = "14")]
    pub error: Option<CommandError>,
    #[prost(message, optional, tag = "15")]
    pub close_producer: Option<CommandCloseProducer>,
    #[prost(message, optional, tag = "16")]
    pub close_consumer: Option<CommandCloseConsumer>,
    #[prost(message, optional, tag = "17")]
    pub producer_success: Option<CommandProducerSuccess>,
    #[prost(message, optional, tag = "18")]
    pub ping: Option<CommandPing>,
    #[prost(message, optional, tag = "19")]
    pub pong: Option<CommandPong>,
    #[prost(message, optional, tag = "21")]
    pub partition_metadata: Option<CommandPartitionedTopicMetadata>,
    #[prost(message, optional, tag = "22")]
    pub partition_metadata_response: Option<CommandPartitionedTopicMetadataResponse>,
    #[prost(message, optional, tag = "23")]
    pub lookup_topic: Option<CommandLookupTopic>,
    #[prost(message, optional, tag = "24")]
    pub lookup_topic_response: Option<CommandLookupTopicResponse>,
    #[prost(message, optional, tag = "27")]
    pub reached_end_of_topic: Option<CommandReachedEndOfTopic>,
    #[prost(message, optional, tag = "28")]
    pub seek: Option<CommandSeek>,
    #[prost(message, optional, tag = "29")]
    pub get_last_message_id: Option<CommandGetLastMessageId>,
    #[prost(message, optional, tag = "30")]
    pub get_last_message_id_response: Option<CommandGetLastMessageIdResponse>,
}

impl BaseCommand {
    pub fn of(kind: i32) -> Self {
        BaseCommand {
            r#type: kind,
            ..Default::default()
        }
    }
}

/// CRC-32C (Castagnoli), the checksum of payload frames.
pub fn crc32c(data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, e) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 { 0x82f6_3b78 ^ (c >> 1) } else { c >> 1 };
            }
            *e = c;
        }
        t
    });
    let mut crc = !0u32;
    for &b in data {
        crc = table[((crc ^ b as u32) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

/// Encode a command frame (no payload).
pub fn encode_command(cmd: &BaseCommand, out: &mut Vec<u8>) {
    let len = cmd.encoded_len();
    out.extend_from_slice(&((len + 4) as u32).to_be_bytes());
    out.extend_from_slice(&(len as u32).to_be_bytes());
    cmd.encode(out).expect("a Vec grows");
}

/// Encode a `SEND` frame: command, checksum, metadata and payload.
pub fn encode_send(cmd: &BaseCommand, metadata: &MessageMetadata, payload: &[u8], out: &mut Vec<u8>) {
    let cmd_len = cmd.encoded_len();
    let meta_len = metadata.encoded_len();
    let mut checked = Vec::with_capacity(4 + meta_len + payload.len());
    checked.extend_from_slice(&(meta_len as u32).to_be_bytes());
    metadata.encode(&mut checked).expect("a Vec grows");
    checked.extend_from_slice(payload);
    let total = 4 + cmd_len + 2 + 4 + checked.len();
    out.extend_from_slice(&(total as u32).to_be_bytes());
    out.extend_from_slice(&(cmd_len as u32).to_be_bytes());
    cmd.encode(out).expect("a Vec grows");
    out.extend_from_slice(&[0x0e, 0x01]);
    out.extend_from_slice(&crc32c(&checked).to_be_bytes());
    out.extend_from_slice(&checked);
}

/// A decoded frame: the command and, for messages, metadata and payload.
pub struct Frame {
    pub command: BaseCommand,
    pub metadata: Option<MessageMetadata>,
    pub payload: Vec<u8>,
}

/// Decode one frame from the front of `buf`: `Ok(None)` if incomplete, else the frame and
/// the bytes it took.
pub fn decode_frame(buf: &[u8]) -> Result<Option<(Frame, usize)>, String> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let total = u32::from_be_bytes(buf[..4].try_into().expect("4 bytes")) as usize;
    if total > MAX_FRAME_BYTES {
        return Err(format!("frame of {total} bytes exceeds the {MAX_FRAME_BYTES}-byte limit"));
    }
    if buf.len() < 4 + total {
        return Ok(None);
    }
    let frame = &buf[4..4 + total];
    if frame.len() < 4 {
        return Err("frame without a command size".into());
    }
    let cmd_len = u32::from_be_bytes(frame[..4].try_into().expect("4 bytes")) as usize;
    if 4 + cmd_len > frame.len() {
        return Err("command size exceeds the frame".into());
    }
    let command = BaseCommand::decode(&frame[4..4 + cmd_len]).map_err(|e| format!("bad command: {e}"))?;
    let mut rest = &frame[4 + cmd_len..];
    let mut metadata = None;
    let mut payload = Vec::new();
    if !rest.is_empty() {
        if rest.len() >= 6 && rest[..2] == [0x0e, 0x02] {
            let n = u32::from_be_bytes(rest[2..6].try_into().expect("4 bytes")) as usize;
            if 6 + n > rest.len() {
                return Err("broker entry metadata exceeds the frame".into());
            }
            rest = &rest[6 + n..];
        }
        if rest.len() >= 6 && rest[..2] == [0x0e, 0x01] {
            let sum = u32::from_be_bytes(rest[2..6].try_into().expect("4 bytes"));
            rest = &rest[6..];
            if crc32c(rest) != sum {
                return Err("payload checksum mismatch".into());
            }
        }
        if rest.len() < 4 {
            return Err("payload without metadata size".into());
        }
        let meta_len = u32::from_be_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
        if 4 + meta_len > rest.len() {
            return Err("metadata size exceeds the frame".into());
        }
        metadata = Some(MessageMetadata::decode(&rest[4..4 + meta_len]).map_err(|e| format!("bad message metadata: {e}"))?);
        payload = rest[4 + meta_len..].to_vec();
    }
    Ok(Some((Frame { command, metadata, payload }, 4 + total)))
}

/// One message of an entry: a batch member or the whole (non-batched) payload.
pub struct EntryMessage<'a> {
    /// -1 for a non-batched entry.
    pub batch_index: i32,
    pub key: Option<&'a str>,
    /// `None`: a null value (tombstone).
    pub value: Option<&'a [u8]>,
    pub event_time: Option<u64>,
}

/// Split an entry's payload into its messages (one unless batched).
pub fn entry_messages<'a>(
    metadata: &'a MessageMetadata,
    payload: &'a [u8],
    out: &mut Vec<EntryMessage<'a>>,
    scratch: &'a mut Vec<SingleMessageMetadata>,
) -> Result<(), String> {
    if metadata.compression.unwrap_or(0) != 0 {
        return Err(format!("compressed entries (codec {}) are not supported", metadata.compression.unwrap_or(0)));
    }
    let Some(n) = metadata.num_messages_in_batch else {
        out.push(EntryMessage {
            batch_index: -1,
            key: metadata.partition_key.as_deref(),
            value: (!metadata.null_value.unwrap_or(false)).then_some(payload),
            event_time: metadata.event_time.filter(|t| *t > 0),
        });
        return Ok(());
    };
    let mut rest = payload;
    let mut parts: Vec<(usize, usize)> = Vec::with_capacity(n.max(0) as usize);
    let mut offset = 0usize;
    scratch.clear();
    for _ in 0..n.max(0) {
        if rest.len() < 4 {
            return Err("batch shorter than its message count".into());
        }
        let meta_len = u32::from_be_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
        if 4 + meta_len > rest.len() {
            return Err("batch member metadata exceeds the entry".into());
        }
        let single = SingleMessageMetadata::decode(&rest[4..4 + meta_len]).map_err(|e| format!("bad batch member metadata: {e}"))?;
        let size = usize::try_from(single.payload_size).map_err(|_| "negative batch member size".to_string())?;
        if 4 + meta_len + size > rest.len() {
            return Err("batch member exceeds the entry".into());
        }
        parts.push((offset + 4 + meta_len, size));
        offset += 4 + meta_len + size;
        rest = &rest[4 + meta_len + size..];
        scratch.push(single);
    }
    for (i, (single, (start, size))) in scratch.iter().zip(parts).enumerate() {
        if single.compacted_out.unwrap_or(false) {
            continue;
        }
        out.push(EntryMessage {
            batch_index: i as i32,
            key: single.partition_key.as_deref(),
            value: (!single.null_value.unwrap_or(false)).then_some(&payload[start..start + size]),
            event_time: single.event_time.filter(|t| *t > 0),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
    }

    #[test]
    fn frames_round_trip_and_partial_frames_wait() {
        let mut cmd = BaseCommand::of(kind::FLOW);
        cmd.flow = Some(CommandFlow {
            consumer_id: 7,
            message_permits: 100,
        });
        let mut buf = Vec::new();
        encode_command(&cmd, &mut buf);
        assert!(decode_frame(&buf[..buf.len() - 1]).unwrap().is_none());
        let (f, n) = decode_frame(&buf).unwrap().unwrap();
        assert_eq!(n, buf.len());
        assert_eq!(f.command.flow.unwrap().message_permits, 100);

        let mut send = BaseCommand::of(kind::SEND);
        send.send = Some(CommandSend {
            producer_id: 1,
            sequence_id: 2,
            num_messages: Some(1),
        });
        let meta = MessageMetadata {
            producer_name: "p".into(),
            sequence_id: 2,
            publish_time: 5,
            partition_key: Some("k".into()),
            ..Default::default()
        };
        let mut buf = Vec::new();
        encode_send(&send, &meta, b"hello", &mut buf);
        let (f, _) = decode_frame(&buf).unwrap().unwrap();
        assert_eq!(f.payload, b"hello");
        assert_eq!(f.metadata.unwrap().partition_key.as_deref(), Some("k"));
        // A flipped payload bit fails the checksum instead of decoding garbage.
        let last = buf.len() - 1;
        buf[last] ^= 1;
        assert!(decode_frame(&buf).is_err());
        // Oversized and truncated sizes are errors, never panics.
        assert!(decode_frame(&[0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(decode_frame(&[0, 0, 0, 2, 0, 0]).is_err());
    }

    #[test]
    fn batches_are_split_into_messages() {
        let mut payload = Vec::new();
        for (k, v) in [("a", &b"one"[..]), ("b", &b"three"[..])] {
            let single = SingleMessageMetadata {
                partition_key: Some(k.into()),
                payload_size: v.len() as i32,
                ..Default::default()
            };
            payload.extend_from_slice(&(single.encoded_len() as u32).to_be_bytes());
            single.encode(&mut payload).unwrap();
            payload.extend_from_slice(v);
        }
        let meta = MessageMetadata {
            num_messages_in_batch: Some(2),
            ..Default::default()
        };
        let (mut out, mut scratch) = (Vec::new(), Vec::new());
        entry_messages(&meta, &payload, &mut out, &mut scratch).unwrap();
        let indexes: Vec<i32> = out.iter().map(|m| m.batch_index).collect();
        let keys: Vec<Option<&str>> = out.iter().map(|m| m.key).collect();
        let values: Vec<Option<&[u8]>> = out.iter().map(|m| m.value).collect();
        assert_eq!((indexes, keys), (vec![0, 1], vec![Some("a"), Some("b")]));
        assert_eq!(values, vec![Some(&b"one"[..]), Some(&b"three"[..])]);
        let mut out = Vec::new();
        let mut scratch = Vec::new();
        assert!(entry_messages(&meta, &payload[..payload.len() - 2], &mut out, &mut scratch).is_err());
    }
}
