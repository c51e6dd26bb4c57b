//! MQTT ingestion (MQTT 3.1.1, QoS 1): the gateway subscribes to topic filters on a broker and
//! appends every message's payload to its log as one event; the broker gets the `PUBACK` only
//! once the event is durable. So nothing acknowledged is lost, and with a *persistent session*
//! (`clean session = 0`, a fixed client id) nothing published while weir is down is lost either:
//! the broker queues it and delivers it on reconnect.
//!
//! Redelivery: a message the broker sent but did not see acknowledged (weir crashed between the
//! append and the `PUBACK`, or the connection dropped) comes again with the DUP flag and the same
//! packet id. Each message is appended under the idempotency key `mqtt/<client>/<packet id>/<hash
//! of topic and payload>`; a DUP message whose key is in the gateway's bounded dedup window is
//! acknowledged without being appended again. A message without DUP always counts as new (its
//! key replaces an older one: packet ids are reused).
//!
//! The client runs on the gateway thread (glommio socket), reconnecting with a bounded backoff.
//! Messages read together are appended together and acknowledged after one group commit.
//!
//! Invariants: a `PUBACK` is sent only after the message's event is durable (or found durable
//! as a duplicate); packets are decoded with bounds checks (no input panics); a packet larger
//! than `max_body_bytes` closes the connection.

use std::net::SocketAddr;
use std::time::Duration;

/// MQTT settings of a gateway.
#[derive(Clone, Debug)]
pub struct MqttConfig {
    /// Broker address (resolved before start).
    pub broker: SocketAddr,
    /// Client id of the persistent session (keep it stable across restarts).
    pub client_id: String,
    /// Topic filters subscribed with QoS 1 (`+` and `#` wildcards).
    pub topics: Vec<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Keep-alive interval announced to the broker (a PINGREQ is sent at this period).
    pub keep_alive: Duration,
    /// Tests: close the connection without acknowledging after this many appended messages
    /// (once), so the broker redelivers them with DUP.
    pub drop_before_ack_after: Option<u64>,
}

pub const CONNECT: u8 = 1;
pub const CONNACK: u8 = 2;
pub const PUBLISH: u8 = 3;
pub const PUBACK: u8 = 4;
pub const SUBSCRIBE: u8 = 8;
pub const SUBACK: u8 = 9;
pub const PINGREQ: u8 = 12;
pub const PINGRESP: u8 = 13;

/// Append a remaining-length varint.
fn put_len(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            break;
        }
    }
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    put_len(&mut out, body.len());
    out.extend_from_slice(body);
    out
}

/// A CONNECT packet (protocol level 4).
pub fn connect_packet(client_id: &str, clean_session: bool, keep_alive_secs: u16, username: Option<&str>, password: Option<&str>) -> Vec<u8> {
    let mut body = Vec::new();
    put_str(&mut body, b"MQTT");
    body.push(4);
    let mut flags = if clean_session { 0x02 } else { 0 };
    if username.is_some() {
        flags |= 0x80;
    }
    if password.is_some() {
        flags |= 0x40;
    }
    body.push(flags);
    body.extend_from_slice(&keep_alive_secs.to_be_bytes());
    put_str(&mut body, client_id.as_bytes());
    if let Some(u) = username {
        put_str(&mut body, u.as_bytes());
    }
    if let Some(p) = password {
        put_str(&mut body, p.as_bytes());
    }
    packet(CONNECT << 4, &body)
}

/// A SUBSCRIBE packet for `topics` at QoS 1.
pub fn subscribe_packet(packet_id: u16, topics: &[String]) -> Vec<u8> {
    let mut body = packet_id.to_be_bytes().to_vec();
    for t in topics {
        put_str(&mut body, t.as_bytes());
        body.push(1);
    }
    packet((SUBSCRIBE << 4) | 0x02, &body)
}

/// A QoS 1 PUBLISH packet.
pub fn publish_packet(topic: &str, packet_id: u16, payload: &[u8], dup: bool) -> Vec<u8> {
    let mut body = Vec::new();
    put_str(&mut body, topic.as_bytes());
    body.extend_from_slice(&packet_id.to_be_bytes());
    body.extend_from_slice(payload);
    packet((PUBLISH << 4) | if dup { 0x08 } else { 0 } | 0x02, &body)
}

pub fn puback_packet(packet_id: u16) -> Vec<u8> {
    packet(PUBACK << 4, &packet_id.to_be_bytes())
}

pub fn pingreq_packet() -> Vec<u8> {
    vec![PINGREQ << 4, 0]
}

/// A whole packet in a buffer: its first byte, the range of its body, its total length.
pub type PacketAt = (u8, std::ops::Range<usize>, usize);

/// A whole packet at the start of `buf`: `Ok(Some(..))`, `Ok(None)` if more bytes are needed,
/// `Err` if it is malformed or longer than `max`.
pub fn split_packet(buf: &[u8], max: usize) -> Result<Option<PacketAt>, &'static str> {
    if buf.is_empty() {
        return Ok(None);
    }
    let mut len = 0usize;
    let mut mult = 1usize;
    let mut i = 1;
    loop {
        let Some(&b) = buf.get(i) else { return Ok(None) };
        len += (b & 0x7f) as usize * mult;
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
        mult *= 128;
        if i > 4 {
            return Err("malformed remaining length");
        }
    }
    if len > max {
        return Err("packet larger than the limit");
    }
    if buf.len() < i + len {
        return Ok(None);
    }
    Ok(Some((buf[0], i..i + len, i + len)))
}

/// A received PUBLISH.
#[derive(Debug, PartialEq, Eq)]
pub struct Publish<'a> {
    pub topic: &'a [u8],
    pub qos: u8,
    pub dup: bool,
    pub packet_id: Option<u16>,
    pub payload: &'a [u8],
}

/// Decode a PUBLISH body (`first` is the packet's first byte).
pub fn decode_publish(first: u8, body: &[u8]) -> Result<Publish<'_>, &'static str> {
    let qos = (first >> 1) & 3;
    if qos == 3 {
        return Err("QoS 3");
    }
    let tl = u16::from_be_bytes([*body.first().ok_or("short publish")?, *body.get(1).ok_or("short publish")?]) as usize;
    let topic = body.get(2..2 + tl).ok_or("topic past the packet end")?;
    let mut at = 2 + tl;
    let packet_id = if qos > 0 {
        let id = body.get(at..at + 2).ok_or("packet id past the packet end")?;
        at += 2;
        Some(u16::from_be_bytes([id[0], id[1]]))
    } else {
        None
    };
    Ok(Publish {
        topic,
        qos,
        dup: first & 0x08 != 0,
        packet_id,
        payload: &body[at..],
    })
}

/// The idempotency key of a message (see the module docs).
pub fn message_key(client_id: &str, p: &Publish<'_>) -> Vec<u8> {
    // FNV-1a over topic, a separator and payload.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in p.topic.iter().chain(std::iter::once(&0u8)).chain(p.payload) {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("mqtt/{client_id}/{}/{h:016x}", p.packet_id.unwrap_or(0)).into_bytes()
}

/// A blocking QoS 1 publisher (tests and tools; never on a shard).
pub struct MqttPublisher {
    stream: std::net::TcpStream,
    next_id: u16,
}

impl MqttPublisher {
    pub fn connect(broker: SocketAddr, client_id: &str, timeout: Duration) -> std::io::Result<Self> {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect_timeout(&broker, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_nodelay(true)?;
        stream.write_all(&connect_packet(client_id, true, 60, None, None))?;
        let mut ack = [0u8; 4];
        stream.read_exact(&mut ack)?;
        if ack[0] >> 4 != CONNACK || ack[3] != 0 {
            return Err(std::io::Error::other(format!("CONNACK refused: {ack:?}")));
        }
        Ok(Self { stream, next_id: 1 })
    }

    /// Publish at QoS 1 and wait for the broker's PUBACK.
    pub fn publish(&mut self, topic: &str, payload: &[u8]) -> std::io::Result<()> {
        use std::io::{Read, Write};
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        self.stream.write_all(&publish_packet(topic, id, payload, false))?;
        let mut ack = [0u8; 4];
        self.stream.read_exact(&mut ack)?;
        if ack[0] >> 4 != PUBACK || u16::from_be_bytes([ack[2], ack[3]]) != id {
            return Err(std::io::Error::other(format!("expected PUBACK {id}, got {ack:?}")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_round_trip_and_garbage_is_refused() {
        let p = publish_packet("sensors/a/temp", 513, b"{\"t\":21}", true);
        let (first, range, total) = split_packet(&p, 1 << 20).unwrap().unwrap();
        assert_eq!(total, p.len());
        let d = decode_publish(first, &p[range]).unwrap();
        assert_eq!(
            d,
            Publish {
                topic: b"sensors/a/temp",
                qos: 1,
                dup: true,
                packet_id: Some(513),
                payload: b"{\"t\":21}"
            }
        );
        assert_eq!(split_packet(&p[..3], 1 << 20).unwrap(), None);
        assert!(split_packet(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01], 1 << 20).is_err());
        assert!(split_packet(&p, 4).is_err());
        assert!(decode_publish(0x32, &[0, 9, b'a']).is_err());
        let mut long = Vec::new();
        put_len(&mut long, 321);
        assert_eq!(long, vec![0xc1, 0x02]);
        let k1 = message_key("c", &d);
        let k2 = message_key("c", &Publish { payload: b"other", ..d });
        assert_ne!(k1, k2);
    }
}
