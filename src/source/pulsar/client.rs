//! A hand-written client of the subset of Pulsar's binary protocol weir needs, on a glommio
//! `TcpStream`: connect, partitioned-topic metadata, lookup, subscribe, flow, seek, cumulative
//! ack, get-last-message-id, close; and a producer (create, send, receipts) for tests and
//! benchmarks. [`blocking`] runs it off a shard (planning on the driver, test set-up) on a
//! short-lived glommio executor thread.
//!
//! Invariants: requests carry fresh request ids and their answers are matched by id; a `PING`
//! from the broker is answered with `PONG` wherever frames are read; every wait has a timeout;
//! frames are size-checked before they are buffered ([`super::proto::MAX_FRAME_BYTES`]).

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

use super::proto::{self, kind, BaseCommand, Frame, MessageIdData};
use crate::error::{Result, WeirError};

/// `pulsar://host:port` → address (TLS `pulsar+ssl://` is refused with the reason).
pub fn resolve_service_url(url: &str) -> std::result::Result<SocketAddr, String> {
    let rest = url
        .strip_prefix("pulsar://")
        .ok_or_else(|| format!("'{url}' is not a pulsar:// URL (weir's Pulsar client has no TLS)"))?;
    let hostport = rest.trim_end_matches('/');
    let with_port = if hostport.contains(':') {
        hostport.to_string()
    } else {
        format!("{hostport}:6650")
    };
    with_port
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| format!("cannot resolve {url}"))
}

/// `t` → `persistent://public/default/t`; `tenant/ns/t` → `persistent://tenant/ns/t`.
pub fn full_topic_name(topic: &str) -> String {
    if topic.contains("://") {
        topic.to_string()
    } else if topic.matches('/').count() == 2 {
        format!("persistent://{topic}")
    } else {
        format!("persistent://public/default/{topic}")
    }
}

/// One connection to a broker.
pub struct Connection {
    stream: TcpStream,
    buf: Vec<u8>,
    chunk: Vec<u8>,
    next_request: u64,
    pub address: SocketAddr,
    timeout: Duration,
}

impl Connection {
    /// Connect and complete the `CONNECT` / `CONNECTED` handshake.
    pub async fn open(address: SocketAddr, timeout: Duration) -> std::result::Result<Self, String> {
        let stream = TcpStream::connect_timeout(address, timeout)
            .await
            .map_err(|e| format!("connect to {address}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let _ = stream.set_write_timeout(Some(timeout));
        let mut c = Connection {
            stream,
            buf: Vec::new(),
            chunk: vec![0; 64 << 10],
            next_request: 1,
            address,
            timeout,
        };
        let mut cmd = BaseCommand::of(kind::CONNECT);
        cmd.connect = Some(proto::CommandConnect {
            client_version: concat!("weir-", env!("CARGO_PKG_VERSION")).into(),
            protocol_version: Some(proto::PROTOCOL_VERSION),
        });
        c.send(&cmd).await?;
        loop {
            let f = c.read_frame(timeout).await?.ok_or("no answer to CONNECT")?;
            match f.command.r#type {
                kind::CONNECTED => return Ok(c),
                kind::ERROR => return Err(format!("CONNECT refused: {}", f.command.error.map(|e| e.message).unwrap_or_default())),
                _ => {}
            }
        }
    }

    pub fn request_id(&mut self) -> u64 {
        self.next_request += 1;
        self.next_request
    }

    pub async fn send(&mut self, cmd: &BaseCommand) -> std::result::Result<(), String> {
        let mut out = Vec::with_capacity(64);
        proto::encode_command(cmd, &mut out);
        self.write(&out).await
    }

    pub async fn write(&mut self, bytes: &[u8]) -> std::result::Result<(), String> {
        self.stream.write_all(bytes).await.map_err(|e| format!("write to {}: {e}", self.address))
    }

    /// The next frame, answering pings; `Ok(None)` if nothing arrived within `wait`.
    pub async fn read_frame(&mut self, wait: Duration) -> std::result::Result<Option<Frame>, String> {
        loop {
            if let Some((frame, used)) = proto::decode_frame(&self.buf).map_err(|e| format!("from {}: {e}", self.address))? {
                self.buf.drain(..used);
                if frame.command.r#type == kind::PING {
                    self.send(&BaseCommand::of(kind::PONG)).await?;
                    continue;
                }
                return Ok(Some(frame));
            }
            let _ = self.stream.set_read_timeout(Some(wait.max(Duration::from_millis(1))));
            match self.stream.read(&mut self.chunk).await {
                Ok(0) => return Err(format!("{} closed the connection", self.address)),
                Ok(n) => self.buf.extend_from_slice(&self.chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return Ok(None),
                Err(e) => return Err(format!("read from {}: {e}", self.address)),
            }
        }
    }

    /// Send `cmd` (whose request id is `request_id`) and wait for its answer; frames for other
    /// requests meanwhile are dropped (call this only while no consumer on the connection flows).
    pub async fn request(&mut self, cmd: &BaseCommand, request_id: u64) -> std::result::Result<BaseCommand, String> {
        self.send(cmd).await?;
        let deadline = std::time::Instant::now() + self.timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(format!("no answer from {} to request {request_id} within {:?}", self.address, self.timeout));
            }
            let Some(f) = self.read_frame(left).await? else { continue };
            let c = f.command;
            let id = match c.r#type {
                kind::SUCCESS => c.success.as_ref().map(|s| s.request_id),
                kind::ERROR => c.error.as_ref().map(|e| e.request_id),
                kind::PRODUCER_SUCCESS => c.producer_success.as_ref().map(|s| s.request_id),
                kind::PARTITIONED_METADATA_RESPONSE => c.partition_metadata_response.as_ref().map(|s| s.request_id),
                kind::LOOKUP_RESPONSE => c.lookup_topic_response.as_ref().map(|s| s.request_id),
                kind::GET_LAST_MESSAGE_ID_RESPONSE => c.get_last_message_id_response.as_ref().map(|s| s.request_id),
                _ => None,
            };
            if id == Some(request_id) {
                if let Some(e) = &c.error {
                    return Err(format!("broker error {}: {}", e.error, e.message));
                }
                return Ok(c);
            }
        }
    }

    /// Partitions of `topic` (0: not partitioned).
    pub async fn partitions(&mut self, topic: &str) -> std::result::Result<u32, String> {
        let id = self.request_id();
        let mut cmd = BaseCommand::of(kind::PARTITIONED_METADATA);
        cmd.partition_metadata = Some(proto::CommandPartitionedTopicMetadata {
            topic: topic.to_string(),
            request_id: id,
        });
        let r = self.request(&cmd, id).await?;
        let m = r.partition_metadata_response.ok_or("no partition metadata in the answer")?;
        if m.response == Some(1) {
            return Err(format!("partition metadata of {topic}: {}", m.message.unwrap_or_default()));
        }
        Ok(m.partitions.unwrap_or(0))
    }

    /// The broker serving `topic` (following redirects, at most 5).
    pub async fn lookup(&mut self, topic: &str) -> std::result::Result<Option<String>, String> {
        let id = self.request_id();
        let mut cmd = BaseCommand::of(kind::LOOKUP);
        cmd.lookup_topic = Some(proto::CommandLookupTopic {
            topic: topic.to_string(),
            request_id: id,
            authoritative: Some(false),
        });
        let r = self.request(&cmd, id).await?;
        let l = r.lookup_topic_response.ok_or("no lookup answer")?;
        match l.response {
            Some(2) => Err(format!("lookup of {topic}: {}", l.message.unwrap_or_default())),
            _ if l.proxy_through_service_url == Some(true) => Ok(None),
            _ => Ok(l.broker_service_url),
        }
    }

    /// Subscribe consumer `consumer_id` (`sub_type`: 0 Exclusive, 2 Failover; `earliest`: a new
    /// subscription starts at the first message, else at the end).
    pub async fn subscribe(&mut self, topic: &str, subscription: &str, sub_type: i32, consumer_id: u64, earliest: bool) -> std::result::Result<(), String> {
        let id = self.request_id();
        let mut cmd = BaseCommand::of(kind::SUBSCRIBE);
        cmd.subscribe = Some(proto::CommandSubscribe {
            topic: topic.to_string(),
            subscription: subscription.to_string(),
            sub_type,
            consumer_id,
            request_id: id,
            consumer_name: Some(format!("weir-{}-{consumer_id}", std::process::id())),
            durable: Some(true),
            initial_position: Some(if earliest { 1 } else { 0 }),
        });
        self.request(&cmd, id)
            .await
            .map(|_| ())
            .map_err(|e| format!("subscribing `{subscription}` to {topic}: {e}"))
    }

    pub async fn seek(&mut self, consumer_id: u64, to: MessageIdData) -> std::result::Result<(), String> {
        let id = self.request_id();
        let mut cmd = BaseCommand::of(kind::SEEK);
        cmd.seek = Some(proto::CommandSeek {
            consumer_id,
            request_id: id,
            message_id: Some(to),
        });
        self.request(&cmd, id).await.map(|_| ()).map_err(|e| format!("seek: {e}"))
    }

    pub async fn last_message_id(&mut self, consumer_id: u64) -> std::result::Result<proto::CommandGetLastMessageIdResponse, String> {
        let id = self.request_id();
        let mut cmd = BaseCommand::of(kind::GET_LAST_MESSAGE_ID);
        cmd.get_last_message_id = Some(proto::CommandGetLastMessageId { consumer_id, request_id: id });
        let r = self.request(&cmd, id).await?;
        r.get_last_message_id_response.ok_or_else(|| "no last message id in the answer".into())
    }

    pub async fn flow(&mut self, consumer_id: u64, permits: u32) -> std::result::Result<(), String> {
        let mut cmd = BaseCommand::of(kind::FLOW);
        cmd.flow = Some(proto::CommandFlow {
            consumer_id,
            message_permits: permits,
        });
        self.send(&cmd).await
    }

    pub async fn ack_cumulative(&mut self, consumer_id: u64, id: MessageIdData) -> std::result::Result<(), String> {
        let mut cmd = BaseCommand::of(kind::ACK);
        cmd.ack = Some(proto::CommandAck {
            consumer_id,
            ack_type: 1,
            message_id: vec![id],
        });
        self.send(&cmd).await
    }

    pub async fn close_consumer(&mut self, consumer_id: u64) -> std::result::Result<(), String> {
        let id = self.request_id();
        let mut cmd = BaseCommand::of(kind::CLOSE_CONSUMER);
        cmd.close_consumer = Some(proto::CommandCloseConsumer { consumer_id, request_id: id });
        self.request(&cmd, id).await.map(|_| ())
    }
}

/// A producer on one topic (tests and benchmarks): messages are pipelined, at most `window`
/// unacknowledged.
pub struct Producer {
    conn: Connection,
    producer_id: u64,
    name: String,
    next_sequence: u64,
    in_flight: u64,
    window: u64,
}

impl Producer {
    pub async fn create(service: SocketAddr, topic: &str, timeout: Duration) -> std::result::Result<Self, String> {
        let mut conn = Connection::open(service, timeout).await?;
        let id = conn.request_id();
        let mut cmd = BaseCommand::of(kind::PRODUCER);
        cmd.producer = Some(proto::CommandProducer {
            topic: full_topic_name(topic),
            producer_id: 1,
            request_id: id,
            producer_name: None,
        });
        let r = conn.request(&cmd, id).await.map_err(|e| format!("creating a producer on {topic}: {e}"))?;
        let name = r.producer_success.map(|s| s.producer_name).unwrap_or_else(|| "weir".into());
        Ok(Self {
            conn,
            producer_id: 1,
            name,
            next_sequence: 0,
            in_flight: 0,
            window: 1000,
        })
    }

    /// Send one message (`key` as partition key); waits only when the window is full.
    pub async fn send(&mut self, key: Option<&str>, value: &[u8], event_time_ms: Option<u64>) -> std::result::Result<(), String> {
        while self.in_flight >= self.window {
            self.receipt().await?;
        }
        let mut cmd = BaseCommand::of(kind::SEND);
        cmd.send = Some(proto::CommandSend {
            producer_id: self.producer_id,
            sequence_id: self.next_sequence,
            num_messages: Some(1),
        });
        let meta = proto::MessageMetadata {
            producer_name: self.name.clone(),
            sequence_id: self.next_sequence,
            publish_time: crate::time::now_ms() as u64,
            partition_key: key.map(str::to_string),
            event_time: event_time_ms,
            ..Default::default()
        };
        let mut out = Vec::with_capacity(value.len() + 64);
        proto::encode_send(&cmd, &meta, value, &mut out);
        self.conn.write(&out).await?;
        self.next_sequence += 1;
        self.in_flight += 1;
        Ok(())
    }

    async fn receipt(&mut self) -> std::result::Result<(), String> {
        let f = self
            .conn
            .read_frame(self.conn.timeout)
            .await?
            .ok_or_else(|| format!("no send receipt within {:?}", self.conn.timeout))?;
        match f.command.r#type {
            kind::SEND_RECEIPT => self.in_flight -= 1,
            kind::SEND_ERROR => return Err(format!("send failed: {}", f.command.send_error.map(|e| e.message).unwrap_or_default())),
            _ => {}
        }
        Ok(())
    }

    /// Wait until every message sent was acknowledged by the broker.
    pub async fn flush(&mut self) -> std::result::Result<(), String> {
        while self.in_flight > 0 {
            self.receipt().await?;
        }
        Ok(())
    }
}

/// Run `work` to completion on a fresh glommio executor on a helper thread (off the shards).
pub fn blocking<R: Send + 'static, F>(work: impl FnOnce() -> F + Send + 'static) -> Result<R>
where
    F: std::future::Future<Output = R> + 'static,
{
    std::thread::Builder::new()
        .name("weir-pulsar-client".into())
        .spawn(move || {
            glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
                .io_memory(1 << 20)
                .make()
                .map_err(|e| WeirError::Other(format!("pulsar: starting a client executor: {e}")))
                .map(|ex| ex.run(work()))
        })
        .map_err(|e| WeirError::Other(format!("pulsar: starting the client thread: {e}")))?
        .join()
        .map_err(|_| WeirError::Other("pulsar: the client thread panicked".into()))?
}

/// Produce `(key, value)` messages to `topic` and wait for every receipt (tests, benchmarks).
pub fn produce(service_url: &str, topic: &str, messages: Vec<(Option<String>, Vec<u8>)>) -> Result<()> {
    let address = resolve_service_url(service_url).map_err(WeirError::Config)?;
    let topic = topic.to_string();
    blocking(move || async move {
        let mut p = Producer::create(address, &topic, Duration::from_secs(10)).await?;
        for (k, v) in &messages {
            p.send(k.as_deref(), v, None).await?;
        }
        p.flush().await
    })?
    .map_err(|e| WeirError::Other(format!("pulsar: producing: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_are_completed() {
        assert_eq!(full_topic_name("t"), "persistent://public/default/t");
        assert_eq!(full_topic_name("a/b/t"), "persistent://a/b/t");
        assert_eq!(full_topic_name("non-persistent://a/b/t"), "non-persistent://a/b/t");
        assert!(resolve_service_url("pulsar+ssl://h:6651").is_err());
        assert_eq!(resolve_service_url("pulsar://127.0.0.1:6650").unwrap().port(), 6650);
    }
}
