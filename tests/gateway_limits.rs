//! Abusive clients do not stop a legitimate one: an oversized body is refused from its
//! `Content-Length` before a byte of it is read; 1 000 idle connections (from 25 loopback
//! addresses, under the per-client limit, over the total limit) and connections trickling their
//! headers one byte at a time are evicted or timed out while a legitimate client keeps getting
//! every batch acknowledged; a client over its connection limit gets 429.
//! Waits are bounded polls; the only sleeps pace the trickling attacker.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use weir::source::gateway::protocol::{connect_from, read_response, HttpClient, Status, TcpClient};
use weir::source::gateway::{Gateway, GatewayConfig};

const TIMEOUT: Duration = Duration::from_secs(10);

fn attacker_ip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 1, 2 + (i / 40) as u8))
}

/// Post `batch` with a key, retrying when the keep-alive connection was closed under us (as
/// any HTTP client does; the key makes the retry safe).
fn post_batch(client: &mut HttpClient, batch: usize) -> serde_json::Value {
    let body: String = (0..20).map(|i| format!("{{\"batch\":{batch},\"i\":{i}}}\n")).collect();
    let key = format!("Idempotency-Key: legit-{batch}");
    for _ in 0..3 {
        match client.post("/v1/events", body.as_bytes(), std::slice::from_ref(&key)) {
            Ok(r) => {
                assert_eq!(r.status, 200, "{}", r.body);
                return serde_json::from_str(&r.body).unwrap();
            }
            Err(_) => continue,
        }
    }
    panic!("batch {batch} was not acknowledged in 3 attempts");
}

#[test]
fn idle_trickling_and_oversized_clients_do_not_stop_a_legitimate_client() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(
        "limits",
        GatewayConfig {
            http_address: Some("127.0.0.1:0".into()),
            tcp_address: Some("127.0.0.1:0".into()),
            log_dir: dir.path().join("log"),
            max_connections: 400,
            max_connections_per_client: 40,
            header_timeout: Duration::from_secs(2),
            max_body_bytes: 64 << 10,
            max_inflight_bytes: 256 << 10,
            ..Default::default()
        },
    )
    .unwrap();
    let (http, tcp) = (gateway.http_addr().unwrap(), gateway.tcp_addr().unwrap());

    // 1. Oversized bodies: refused from the head alone, with and without Expect: 100-continue.
    let mut s = TcpStream::connect(http).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.write_all(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 104857600\r\n\r\n")
        .unwrap();
    let r = read_response(&mut s).unwrap();
    assert_eq!(r.status, 413, "answered before any body byte was sent: {}", r.body);
    let big = vec![b'x'; 128 << 10];
    let r = HttpClient::new(http, TIMEOUT).post_expect_continue("/v1/events", &big, &[]).unwrap();
    assert_eq!(r.status, 413);
    let mut t = TcpClient::connect(tcp, None, TIMEOUT).unwrap();
    let reply = t.send_raw(&(100u32 << 20).to_be_bytes()).unwrap();
    assert_eq!(reply.status, Status::TooLarge);
    let stats = gateway.stats();
    assert_eq!((stats.body_bytes_read, stats.inflight_bytes_high_water), (0, 0), "{stats:?}");
    assert_eq!(stats.rejected_too_large, 3, "{stats:?}");

    // 2. A client over its own connection limit gets 429.
    let own: Vec<TcpStream> = (0..40).map(|_| connect_from(attacker_ip(0), http, TIMEOUT).unwrap()).collect();
    let mut over = connect_from(attacker_ip(0), http, TIMEOUT).unwrap();
    over.set_read_timeout(Some(TIMEOUT)).unwrap();
    let r = read_response(&mut over).unwrap();
    assert_eq!((r.status, r.retry_after), (429, Some(1)));
    drop(own);

    // 3. 1 000 idle connections (25 addresses × 40) and 20 tricklers.
    let mut idle = Vec::new();
    for i in 0..1000 {
        idle.push(connect_from(attacker_ip(i), http, TIMEOUT).unwrap());
    }
    let trickle_addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 2, 1)), 0);
    let mut tricklers: Vec<TcpStream> = (0..20).map(|_| connect_from(trickle_addr.ip(), http, TIMEOUT).unwrap()).collect();
    for t in &mut tricklers {
        t.write_all(b"POST /v1/events HTTP/1.1\r\n").unwrap();
        t.set_nonblocking(true).unwrap();
    }
    let trickler = std::thread::spawn(move || {
        // Pace: one header byte per connection every 50 ms, for at most 5 s.
        let started = Instant::now();
        let mut closed_after = vec![None; tricklers.len()];
        while started.elapsed() < Duration::from_secs(5) && closed_after.iter().any(Option::is_none) {
            for (k, t) in tricklers.iter_mut().enumerate() {
                if closed_after[k].is_some() {
                    continue;
                }
                let mut buf = [0u8; 512];
                let gone = match t.read(&mut buf) {
                    Ok(_) => true, // an answer (408) or end of stream
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => t.write_all(b"X").is_err(),
                    Err(_) => true,
                };
                if gone {
                    closed_after[k] = Some(started.elapsed());
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        closed_after
    });

    // The legitimate client, over HTTP (keep-alive) and TCP.
    let started = Instant::now();
    let mut client = HttpClient::new(http, TIMEOUT);
    for batch in 0..50 {
        let v = post_batch(&mut client, batch);
        assert_eq!(v["accepted"], 20);
    }
    let mut legit_tcp = TcpClient::connect(tcp, None, TIMEOUT).unwrap();
    for k in 0..20u64 {
        let reply = legit_tcp.send(k, format!("tcp-{k}").as_bytes(), &[&b"{\"tcp\":true}"[..]]).unwrap();
        assert!(reply.status.accepted(), "{reply:?}");
    }
    assert!(started.elapsed() < Duration::from_secs(20), "legitimate traffic took {:?}", started.elapsed());

    let closed_after = trickler.join().unwrap();
    for (k, c) in closed_after.iter().enumerate() {
        let c = c.unwrap_or_else(|| panic!("trickling connection {k} was never closed"));
        assert!(c < Duration::from_millis(4500), "trickler {k} lived {c:?} with a 2 s header timeout");
    }
    let stats = gateway.stats();
    assert_eq!(stats.events_accepted, 50 * 20 + 20, "{stats:?}");
    // Over the total limit nobody is refused: the longest-waiting idle connection is evicted
    // instead. Which of the 1 000 idle connections leave by eviction and which by the header
    // timeout depends on how fast this machine opens them (a slow CI machine has timed out 40 %
    // of them before the limit was reached), so the test counts both; at least one eviction must
    // have happened (the limit was reached within 2 s of the first idle connection).
    assert_eq!(stats.rejected_connection_limit, 0, "a connection was refused at the total limit: {stats:?}");
    assert!(
        stats.connections_evicted + stats.timeouts >= 1000 - 400 + 20,
        "idle connections beyond the limit were not closed by eviction or header timeout: {stats:?}"
    );
    assert!(stats.connections_evicted > 0, "the limit never evicted an idle connection: {stats:?}");
    assert!(stats.connections_open <= 400, "{stats:?}");
    drop(idle);
}
