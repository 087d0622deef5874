//! What each connection says and what it must hear back: the payload written once connected
//! (filler bytes, a text, a file, or one HTTP/1.1 request), how the answer is read (a number
//! of bytes, or an HTTP response to its end), and the bytes the answer must start with.

use std::sync::Arc;
use std::time::Duration;

/// Everything a connection says and hears, as one value: what `flood`, `sweep` and `tune`
/// share (see [`crate::plan::PlanBuilder::exchange`]).
///
/// ```
/// use synack_load::exchange::{Exchange, HttpRequest};
///
/// let health = Exchange {
///     http: Some(HttpRequest::parse("GET /health").unwrap()),
///     expect: Some(b"HTTP/1.1 200".to_vec()),
///     ..Exchange::default()
/// };
/// assert!(health.talks());
/// assert!(!Exchange::default().talks());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    /// What to write once connected (not with `http`).
    pub payload: Payload,
    /// How to read the answer (not with `http`).
    pub answer: Answer,
    /// One HTTP/1.1 request per connection, its response read to its end.
    pub http: Option<HttpRequest>,
    /// The bytes every answer must start with.
    pub expect: Option<Vec<u8>>,
    /// How long the send, and then the answer, may each take.
    pub read_timeout: Duration,
}

impl Default for Exchange {
    fn default() -> Self {
        Exchange {
            payload: Payload::Filler(0),
            answer: Answer::Ignored,
            http: None,
            expect: None,
            read_timeout: Duration::from_secs(2),
        }
    }
}

impl Exchange {
    /// Whether a connection does anything past the handshake: writes, reads or checks.
    pub fn talks(&self) -> bool {
        !self.payload.is_empty()
            || self.answer != Answer::Ignored
            || self.http.is_some()
            || self.expect.is_some()
    }
}

/// What a connection writes once connected.
///
/// ```
/// use synack_load::exchange::Payload;
///
/// assert_eq!(Payload::Filler(3).len(), 3);
/// let text = Payload::text("PING\r\n");
/// assert_eq!(text.len(), 6);
/// assert!(Payload::Filler(0).is_empty());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// This many filler bytes (`x`), written from one buffer again and again (`--send N`).
    Filler(usize),
    /// These bytes (`--send-text`, `--send-file`, `--http`).
    Bytes(Arc<[u8]>),
}

impl Default for Payload {
    fn default() -> Self {
        Payload::Filler(0)
    }
}

impl Payload {
    /// The payload of a text, as given (no escapes: see [`unescape`]).
    pub fn text(s: &str) -> Self {
        Payload::Bytes(s.as_bytes().into())
    }

    /// Bytes to write in all.
    pub fn len(&self) -> usize {
        match self {
            Payload::Filler(n) => *n,
            Payload::Bytes(b) => b.len(),
        }
    }

    /// Whether nothing is written.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How a connection's answer is read.
///
/// ```
/// use std::time::Duration;
/// use synack_load::exchange::{Answer, HttpRequest};
/// use synack_load::plan::{Load, PlanBuilder};
///
/// let load = Load::Closed { concurrency: 1 };
/// let plan = PlanBuilder::new("127.0.0.1:8080", load, Duration::from_secs(1)).threads(Some(1));
/// assert_eq!(plan.clone().build()?.answer, Answer::Ignored);
/// // A HEAD request's response is read to the end of its head: it has no body.
/// let head = plan.http(Some(HttpRequest::parse("HEAD /").unwrap())).build()?;
/// assert_eq!(head.answer, Answer::Http { head_request: true });
/// # Ok::<(), synack_load::error::LoadError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Answer {
    /// Not read (besides the probe header and `--expect`'s bytes).
    #[default]
    Ignored,
    /// Read this many bytes, or until the server closes (`--read N`).
    Bytes(usize),
    /// One HTTP/1.1 response, read to its end: `Content-Length`, chunked, or the close.
    Http {
        /// The request was `HEAD`: the response has no body whatever its headers say.
        head_request: bool,
    },
}

/// One HTTP/1.1 request per connection (`--http "METHOD PATH"`), with `Connection: close`.
///
/// ```
/// use synack_load::exchange::HttpRequest;
///
/// let r = HttpRequest::parse("GET /health").unwrap();
/// let bytes = r.to_bytes("127.0.0.1:8080");
/// let text = String::from_utf8(bytes).unwrap();
/// assert!(text.starts_with("GET /health HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"));
/// assert!(text.ends_with("Connection: close\r\n\r\n"));
/// assert!(HttpRequest::parse("GET").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// The method, such as `GET`.
    pub method: String,
    /// The request target, such as `/health`.
    pub path: String,
    /// Extra header lines, `Name: value` (a `Host` here replaces the target's).
    pub headers: Vec<(String, String)>,
    /// The body (sent with its `Content-Length`).
    pub body: Vec<u8>,
}

/// Headers synack-load writes itself and will not take from `--header`: one request per
/// connection, its length counted here.
const OWN_HEADERS: [&str; 3] = ["connection", "content-length", "transfer-encoding"];

impl HttpRequest {
    /// Parses `METHOD PATH` (`GET /health`, `POST /api/orders`).
    ///
    /// # Errors
    ///
    /// A line naming the value and what is accepted: a method of token characters and a
    /// path that starts with `/` (or is `*`, or an absolute URL), without spaces.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut it = s.split_whitespace();
        let (Some(method), Some(path), None) = (it.next(), it.next(), it.next()) else {
            return Err(format!(
                "--http {s:?}: expected \"METHOD PATH\", such as \"GET /health\""
            ));
        };
        if !method.bytes().all(is_token) {
            return Err(format!(
                "--http {s:?}: the method {method:?} is not an HTTP token (such as GET, POST)"
            ));
        }
        if !(path.starts_with('/') || path == "*" || path.contains("://"))
            || path.bytes().any(|b| b.is_ascii_control())
        {
            return Err(format!(
                "--http {s:?}: the path {path:?} must start with / (or be * or an absolute URL)"
            ));
        }
        Ok(HttpRequest {
            method: method.to_string(),
            path: path.to_string(),
            headers: Vec::new(),
            body: Vec::new(),
        })
    }

    /// Adds a `Name: value` header line (`--header`).
    ///
    /// # Errors
    ///
    /// A line naming the header: not `Name: value`, a name that is not a token, a control
    /// character in the value, or a header synack-load writes itself (`Connection`,
    /// `Content-Length`, `Transfer-Encoding`).
    pub fn header(&mut self, line: &str) -> Result<(), String> {
        let Some((name, value)) = line.split_once(':') else {
            return Err(format!(
                "--header {line:?}: expected \"Name: value\", such as \"Accept: */*\""
            ));
        };
        let (name, value) = (name.trim(), value.trim());
        if name.is_empty() || !name.bytes().all(is_token) {
            return Err(format!(
                "--header {line:?}: {name:?} is not a header name (letters, digits, -)"
            ));
        }
        if value.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
            return Err(format!(
                "--header {line:?}: the value holds a control character"
            ));
        }
        if OWN_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            return Err(format!(
                "--header {line:?}: synack-load writes {name} itself (one request per connection, Connection: close, its body's Content-Length)"
            ));
        }
        self.headers.push((name.to_string(), value.to_string()));
        Ok(())
    }

    /// Whether the method is `HEAD` (its response has no body).
    pub fn is_head(&self) -> bool {
        self.method.eq_ignore_ascii_case("HEAD")
    }

    /// The request's bytes, with `Host: host` (the target as the user wrote it) unless a
    /// `Host` header was given.
    pub fn to_bytes(&self, host: &str) -> Vec<u8> {
        let mut out = format!("{} {} HTTP/1.1\r\n", self.method, self.path);
        if !self
            .headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("host"))
        {
            out.push_str(&format!("Host: {host}\r\n"));
        }
        for (n, v) in &self.headers {
            out.push_str(&format!("{n}: {v}\r\n"));
        }
        if !self.body.is_empty() || matches!(self.method.as_str(), "POST" | "PUT" | "PATCH") {
            out.push_str(&format!("Content-Length: {}\r\n", self.body.len()));
        }
        out.push_str("Connection: close\r\n\r\n");
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Turns the escapes of `--send-text` and `--expect` into bytes: `\r`, `\n`, `\t`, `\0`, `\\`
/// and `\xNN` (two hex digits); anything else after a backslash is refused.
///
/// ```
/// use synack_load::exchange::unescape;
///
/// assert_eq!(unescape("PING\\r\\n").unwrap(), b"PING\r\n");
/// assert_eq!(unescape("\\x00\\xff").unwrap(), vec![0, 255]);
/// assert!(unescape("bad \\q").is_err());
/// ```
///
/// # Errors
///
/// The escape that is not one of those, by its place in the text.
pub fn unescape(s: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes().enumerate();
    while let Some((i, b)) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        let bad = || {
            format!(
                "the escape at byte {i} ({:?}) is not one of \\r \\n \\t \\0 \\\\ \\xNN",
                s.get(i..(i + 4).min(s.len())).unwrap_or("\\")
            )
        };
        match bytes.next().map(|(_, c)| c) {
            Some(b'r') => out.push(b'\r'),
            Some(b'n') => out.push(b'\n'),
            Some(b't') => out.push(b'\t'),
            Some(b'0') => out.push(0),
            Some(b'\\') => out.push(b'\\'),
            Some(b'x') => {
                let hex: Vec<u8> = bytes.by_ref().take(2).map(|(_, c)| c).collect();
                let v = std::str::from_utf8(&hex)
                    .ok()
                    .filter(|h| h.len() == 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(bad)?;
                out.push(v);
            }
            _ => return Err(bad()),
        }
    }
    Ok(out)
}

/// The first line of an answer, for a report: up to 120 characters, control characters
/// escaped; `(empty)` for none.
pub fn first_line(bytes: &[u8]) -> String {
    let end = bytes
        .iter()
        .position(|&b| b == b'\n' || b == b'\r')
        .unwrap_or(bytes.len());
    if end == 0 {
        return "(empty)".into();
    }
    let text = String::from_utf8_lossy(&bytes[..end]);
    let mut out: String = text.chars().flat_map(char::escape_default).collect();
    if out.chars().count() > 120 {
        out = out.chars().take(117).collect::<String>() + "...";
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_carry_host_headers_body_and_close() {
        let mut r = HttpRequest::parse("POST /orders").unwrap();
        r.header("X-Test: 1").unwrap();
        r.body = b"{}".to_vec();
        let t = String::from_utf8(r.to_bytes("[::1]:80")).unwrap();
        assert_eq!(
            t,
            "POST /orders HTTP/1.1\r\nHost: [::1]:80\r\nX-Test: 1\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
        );
        // A Host of the user's replaces the target's.
        let mut r = HttpRequest::parse("GET /").unwrap();
        r.header("host: example.test").unwrap();
        let t = String::from_utf8(r.to_bytes("127.0.0.1:1")).unwrap();
        assert!(!t.contains("127.0.0.1"), "{t}");
        assert!(t.contains("host: example.test\r\n"), "{t}");
    }

    #[test]
    fn bad_requests_and_headers_are_named() {
        for bad in ["", "GET", "GET / extra", "G(T /", "GET health"] {
            let e = HttpRequest::parse(bad).unwrap_err();
            assert!(e.starts_with("--http"), "{e}");
        }
        let mut r = HttpRequest::parse("GET /").unwrap();
        for bad in [
            "no colon",
            ": v",
            "Bad Name: v",
            "Connection: keep-alive",
            "content-length: 5",
        ] {
            let e = r.header(bad).unwrap_err();
            assert!(e.starts_with("--header"), "{e}");
        }
    }

    #[test]
    fn escapes() {
        assert_eq!(unescape("a\\tb\\\\c\\0").unwrap(), b"a\tb\\c\0");
        assert!(unescape("\\x4").is_err());
        assert!(unescape("\\xzz").is_err());
        assert!(unescape("end\\").is_err());
        let e = unescape("ok \\q").unwrap_err();
        assert!(e.contains("byte 3"), "{e}");
    }

    #[test]
    fn first_lines_are_short_and_printable() {
        assert_eq!(
            first_line(b"HTTP/1.1 503 Busy\r\nx: y"),
            "HTTP/1.1 503 Busy"
        );
        assert_eq!(first_line(b""), "(empty)");
        assert_eq!(first_line(b"\x01hi"), "\\u{1}hi");
        assert_eq!(first_line(&[b'a'; 300]).chars().count(), 120);
    }
}
