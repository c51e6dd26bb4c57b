//! Gateway authentication: requests without a token, with a wrong token or another auth scheme
//! are rejected over HTTP and the TCP protocol, and not one event reaches the log; the right
//! token is accepted; a non-loopback address without a token is refused at start.

use std::io::{Read, Write};
use std::time::Duration;

use weir::source::gateway::protocol::{encode_events, HttpClient, Status, TcpClient};
use weir::source::gateway::{Gateway, GatewayConfig};

const TIMEOUT: Duration = Duration::from_secs(10);
const BODY: &[u8] = b"{\"device\":1}\n{\"device\":2}\n";

#[test]
fn only_requests_with_a_valid_token_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(
        "secured",
        GatewayConfig {
            http_address: Some("127.0.0.1:0".into()),
            tcp_address: Some("127.0.0.1:0".into()),
            log_dir: dir.path().join("log"),
            tokens: vec!["s3cret-token".into(), "second".into()],
            ..Default::default()
        },
    )
    .unwrap();
    let (http, tcp) = (gateway.http_addr().unwrap(), gateway.tcp_addr().unwrap());

    let rejected_headers: [&[String]; 4] = [
        &[],
        &["Authorization: Bearer wrong".into()],
        &["Authorization: Bearer s3cret-token2".into()],
        &["Authorization: Basic czNjcmV0LXRva2Vu".into()],
    ];
    for headers in rejected_headers {
        let mut c = HttpClient::new(http, TIMEOUT);
        let r = c.post("/v1/events", BODY, headers).unwrap();
        assert_eq!(r.status, 401, "{headers:?}: {}", r.body);
        assert!(r.close, "an unauthorized request's connection is closed (its body is never read)");
        let r = HttpClient::new(http, TIMEOUT).post_expect_continue("/v1/events", BODY, headers).unwrap();
        assert_eq!(r.status, 401);
    }
    let r = HttpClient::new(http, TIMEOUT).request("GET", "/v1/stats", b"", &[]).unwrap();
    assert_eq!(r.status, 401, "stats need the token too");
    let r = HttpClient::new(http, TIMEOUT).request("POST", "/v1/drain", b"", &[]).unwrap();
    assert_eq!(r.status, 401, "so does draining");

    // TCP: events before AUTH, a wrong AUTH.
    let mut raw = std::net::TcpStream::connect(tcp).unwrap();
    raw.set_read_timeout(Some(TIMEOUT)).unwrap();
    raw.write_all(&encode_events(5, b"", &[&b"{\"device\":3}"[..]])).unwrap();
    let mut len = [0u8; 4];
    raw.read_exact(&mut len).unwrap();
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    raw.read_exact(&mut body).unwrap();
    let reply = weir::source::gateway::protocol::Reply::decode(&body).unwrap();
    assert_eq!((reply.status, reply.request_id), (Status::Unauthorized, 5));
    let mut rest = Vec::new();
    assert_eq!(raw.read_to_end(&mut rest).unwrap_or(0), 0, "the server closes after refusing");
    let err = TcpClient::connect(tcp, Some("wrong"), TIMEOUT).err().expect("wrong token refused");
    assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied, "{err}");

    let stats = gateway.stats();
    assert_eq!(stats.events_accepted, 0, "{stats:?}");
    assert_eq!(stats.body_bytes_read, 0, "no rejected body was read: {stats:?}");
    assert!(stats.partitions.iter().all(|p| p.durable_next == 1), "nothing in the log: {stats:?}");
    assert!(stats.rejected_unauthorized >= 12, "{stats:?}");

    // The right tokens work on both protocols.
    let mut c = HttpClient::new(http, TIMEOUT);
    let r = c.post("/v1/events", BODY, &["Authorization: Bearer s3cret-token".into()]).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let r = c.request("GET", "/v1/stats", b"", &["Authorization: Bearer second".into()]).unwrap();
    assert_eq!(r.status, 200);
    let stats: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(stats["events_accepted"], 2);
    let mut t = TcpClient::connect(tcp, Some("second"), TIMEOUT).unwrap();
    assert_eq!(t.send(1, b"", &[&b"{\"device\":4}"[..]]).unwrap().status, Status::Ok);
    assert_eq!(gateway.stats().events_accepted, 3);

    // Without a token only loopback addresses may be bound.
    let open = Gateway::start(
        "open",
        GatewayConfig {
            http_address: Some("0.0.0.0:0".into()),
            log_dir: dir.path().join("open"),
            ..Default::default()
        },
    );
    let err = open.err().expect("a non-loopback bind without a token is refused").to_string();
    assert!(err.contains("needs an auth token"), "{err}");
    // Two gateways never share a log folder.
    let twice = Gateway::start(
        "twice",
        GatewayConfig {
            log_dir: dir.path().join("log"),
            ..Default::default()
        },
    );
    let err = twice.err().expect("the log folder is locked").to_string();
    assert!(err.contains("in use"), "{err}");
}
