//! A tiny HTTP/1.1 client over std TcpStream for the tests (no extra dependencies).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use flux_order_test_apiserver::TestServer;
use serde_json::Value;

/// A response.
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Value,
    pub raw: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn connect(server: &TestServer) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", server.port())).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

fn write_req(
    s: &mut TcpStream,
    method: &str,
    path: &str,
    ct: Option<&str>,
    body: &str,
    extra: &[(&str, &str)],
) {
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nUser-Agent: raw-test/1.0\r\n"
    );
    if let Some(ct) = ct {
        req.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(req.as_bytes()).unwrap();
}

fn read_head(r: &mut BufReader<TcpStream>) -> Option<(u16, Vec<(String, String)>)> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let status: u16 = line.split_whitespace().nth(1)?.parse().ok()?;
    let mut headers = vec![];
    loop {
        let mut l = String::new();
        r.read_line(&mut l).ok()?;
        let l = l.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    Some((status, headers))
}

fn read_chunk(r: &mut BufReader<TcpStream>) -> Option<Vec<u8>> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let n = usize::from_str_radix(line.trim(), 16).ok()?;
    if n == 0 {
        return None;
    }
    let mut buf = vec![0; n + 2];
    r.read_exact(&mut buf).ok()?;
    buf.truncate(n);
    Some(buf)
}

/// Send a request, read the whole response. Panics on a dropped connection.
pub fn try_req(
    server: &TestServer,
    method: &str,
    path: &str,
    ct: Option<&str>,
    body: &str,
    extra: &[(&str, &str)],
) -> Option<Resp> {
    let mut s = connect(server);
    write_req(&mut s, method, path, ct, body, extra);
    let mut r = BufReader::new(s);
    let (status, headers) = read_head(&mut r)?;
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let mut raw = vec![];
    if chunked {
        while let Some(c) = read_chunk(&mut r) {
            raw.extend(c);
        }
    } else {
        r.read_to_end(&mut raw).ok()?;
    }
    let raw = String::from_utf8_lossy(&raw).to_string();
    let body = serde_json::from_str(&raw).unwrap_or(Value::Null);
    Some(Resp {
        status,
        headers,
        body,
        raw,
    })
}

pub fn req(server: &TestServer, method: &str, path: &str, ct: Option<&str>, body: &str) -> Resp {
    try_req(server, method, path, ct, body, &[]).expect("response")
}

pub fn get(server: &TestServer, path: &str) -> Resp {
    req(server, "GET", path, None, "")
}

pub fn post(server: &TestServer, path: &str, body: &Value) -> Resp {
    req(
        server,
        "POST",
        path,
        Some("application/json"),
        &body.to_string(),
    )
}

pub fn put(server: &TestServer, path: &str, body: &Value) -> Resp {
    req(
        server,
        "PUT",
        path,
        Some("application/json"),
        &body.to_string(),
    )
}

pub fn apply(server: &TestServer, path: &str, body: &Value) -> Resp {
    req(
        server,
        "PATCH",
        path,
        Some("application/apply-patch+yaml"),
        &body.to_string(),
    )
}

pub fn merge(server: &TestServer, path: &str, body: &Value) -> Resp {
    req(
        server,
        "PATCH",
        path,
        Some("application/merge-patch+json"),
        &body.to_string(),
    )
}

pub fn delete(server: &TestServer, path: &str) -> Resp {
    req(server, "DELETE", path, None, "")
}

/// A streaming watch connection.
pub struct Watch {
    r: BufReader<TcpStream>,
    pending: Vec<u8>,
    pub status: u16,
}

impl Watch {
    pub fn open(server: &TestServer, path: &str) -> Watch {
        let mut s = connect(server);
        write_req(&mut s, "GET", path, None, "", &[]);
        let mut r = BufReader::new(s);
        let (status, _) = read_head(&mut r).expect("watch head");
        Watch {
            r,
            pending: vec![],
            status,
        }
    }

    /// Next event, or None at end of stream.
    pub fn next(&mut self) -> Option<Value> {
        loop {
            if let Some(i) = self.pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=i).collect();
                return serde_json::from_slice(&line).ok();
            }
            let c = read_chunk(&mut self.r)?;
            self.pending.extend(c);
        }
    }

    /// Next event matching `f`, within `timeout` (the read timeout bounds each wait).
    pub fn next_matching(
        &mut self,
        timeout: Duration,
        f: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let e = self.next()?;
            if f(&e) {
                return Some(e);
            }
        }
        None
    }
}

/// Poll until `f` returns Some, or panic after `timeout`.
pub fn eventually<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(t) = f() {
            return t;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}
