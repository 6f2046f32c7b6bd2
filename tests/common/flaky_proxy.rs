//! An HTTP proxy on 127.0.0.1 that fails a share of requests the way an
//! overloaded object store does (`503 Slow Down`) and forwards the rest to
//! a real server, one request per connection. For tests that every command
//! rides out transient storage failures.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub struct FlakyProxy {
    pub port: u16,
    /// Requests refused so far, and requests seen.
    pub failed: Arc<AtomicU64>,
    pub seen: Arc<AtomicU64>,
}

impl FlakyProxy {
    /// Starts a proxy to `upstream_port` failing `percent` of requests.
    pub fn start(upstream_port: u16, percent: u32) -> FlakyProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let failed = Arc::new(AtomicU64::new(0));
        let seen = Arc::new(AtomicU64::new(0));
        let (f, s) = (failed.clone(), seen.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (f, s) = (f.clone(), s.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, upstream_port, percent, &f, &s);
                });
            }
        });
        FlakyProxy { port, failed, seen }
    }
}

fn roll(percent: u32) -> bool {
    let mut b = [0u8; 2];
    getrandom::fill(&mut b).unwrap();
    (u16::from_le_bytes(b) as u32 % 100) < percent
}

/// Reads a request or response head (up to the blank line) and its body as
/// Content-Length says; returns the head lines and the body.
fn read_message(r: &mut BufReader<TcpStream>) -> std::io::Result<Option<(Vec<String>, Vec<u8>)>> {
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        let line = line.trim_end_matches(['\r', '\n']).to_string();
        if line.is_empty() {
            break;
        }
        head.push(line);
    }
    let len = head
        .iter()
        .find_map(|h| {
            let (k, v) = h.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    Ok(Some((head, body)))
}

fn write_message(w: &mut TcpStream, head: &[String], body: &[u8]) -> std::io::Result<()> {
    let mut out = String::new();
    for (i, h) in head.iter().enumerate() {
        if i > 0 && h.to_ascii_lowercase().starts_with("connection:") {
            continue;
        }
        out.push_str(h);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    w.write_all(out.as_bytes())?;
    w.write_all(body)?;
    w.flush()
}

fn serve(
    client: TcpStream,
    upstream_port: u16,
    percent: u32,
    failed: &AtomicU64,
    seen: &AtomicU64,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let Some((head, body)) = read_message(&mut reader)? else {
        return Ok(());
    };
    seen.fetch_add(1, Ordering::Relaxed);
    let mut client = client;
    if roll(percent) {
        failed.fetch_add(1, Ordering::Relaxed);
        let xml = b"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";
        let head = vec![
            "HTTP/1.1 503 Slow Down".to_string(),
            "Content-Type: application/xml".to_string(),
            format!("Content-Length: {}", xml.len()),
        ];
        return write_message(&mut client, &head, xml);
    }
    let mut up = TcpStream::connect(("127.0.0.1", upstream_port))?;
    write_message(&mut up, &head, &body)?;
    let mut up_reader = BufReader::new(up);
    // HEAD responses carry a Content-Length but no body.
    let is_head = head[0].starts_with("HEAD ");
    let mut resp_head = Vec::new();
    loop {
        let mut line = String::new();
        if up_reader.read_line(&mut line)? == 0 {
            break;
        }
        let line = line.trim_end_matches(['\r', '\n']).to_string();
        if line.is_empty() {
            break;
        }
        resp_head.push(line);
    }
    let mut body = Vec::new();
    if !is_head {
        up_reader.read_to_end(&mut body)?;
    }
    write_message(&mut client, &resp_head, &body)
}
