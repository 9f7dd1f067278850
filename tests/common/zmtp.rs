//! A raw ZMTP 3.0 client over TCP, for tests that speak the wire the way an attacker would:
//! greeting, NULL-mechanism READY, hand-made frames.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// The 64-byte ZMTP 3.0 greeting of a client using the NULL mechanism.
pub fn greeting() -> [u8; 64] {
    let mut g = [0u8; 64];
    g[0] = 0xff;
    g[9] = 0x7f;
    g[10] = 3; // version 3.0
    g[12..16].copy_from_slice(b"NULL");
    g
}

/// A READY command announcing `socket_type`.
pub fn ready(socket_type: &str) -> Vec<u8> {
    let mut body = vec![5u8];
    body.extend_from_slice(b"READY");
    body.push(11);
    body.extend_from_slice(b"Socket-Type");
    body.extend_from_slice(&(socket_type.len() as u32).to_be_bytes());
    body.extend_from_slice(socket_type.as_bytes());
    let mut f = vec![0x04, body.len() as u8];
    f.extend_from_slice(&body);
    f
}

/// A short frame; `more` sets the MORE flag.
pub fn frame(body: &[u8], more: bool) -> Vec<u8> {
    assert!(body.len() < 256);
    let mut f = vec![u8::from(more), body.len() as u8];
    f.extend_from_slice(body);
    f
}

/// A long command frame header declaring `2^50` bytes: the flags byte and a big-endian u64.
pub fn huge_frame_header() -> [u8; 9] {
    let mut h = [0u8; 9];
    h[0] = 0x06; // LONG | COMMAND
    h[1..].copy_from_slice(&(1u64 << 50).to_be_bytes());
    h
}

/// Connects and exchanges greetings; with `socket_type`, also the READY commands.
pub fn handshake(port: u16, socket_type: Option<&str>) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(&greeting()).expect("greeting");
    let mut theirs = [0u8; 64];
    s.read_exact(&mut theirs).expect("peer greeting");
    assert_eq!(theirs[0], 0xff, "a ZMTP greeting");
    if let Some(t) = socket_type {
        s.write_all(&ready(t)).expect("ready");
        let mut head = [0u8; 2];
        s.read_exact(&mut head).expect("peer READY");
        let mut body = vec![0u8; head[1] as usize];
        s.read_exact(&mut body).expect("peer READY body");
        assert!(body.starts_with(b"\x05READY"), "peer READY: {body:?}");
    }
    s
}

/// True when the peer closes the connection within `limit` (reads until EOF or reset).
pub fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    s.set_read_timeout(Some(limit)).expect("timeout");
    let mut buf = [0u8; 4096];
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
    false
}
