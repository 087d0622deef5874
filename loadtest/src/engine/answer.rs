//! Reading one connection's answer, without a socket: the bytes the event loop read go in,
//! and out comes whether the answer is complete, wanting more, or not what was asked
//! (`--expect` not matched, an HTTP response malformed or cut short). An HTTP response is
//! read to its end by its own framing: `Content-Length`, chunked, or the server's close.

use crate::exchange::{Answer, first_line};

/// The most bytes of an HTTP response head kept while it is incomplete.
pub(super) const HEAD_MAX: usize = 64 * 1024;

/// The answer's first bytes kept for a report's sample of an unexpected answer.
const SAMPLE_MAX: usize = 256;

/// What the answer read so far amounts to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Fed {
    /// Not complete yet: read on.
    More,
    /// Complete (with the HTTP status, where there is one).
    Done,
    /// Not what was asked: why.
    Bad(String),
}

/// One answer being read.
#[derive(Debug, Default)]
pub(super) struct AnswerReader {
    /// Answer bytes read (the probe header apart).
    pub got: usize,
    /// `--expect`'s bytes matched so far; `None` once decided (or when there is none).
    expect_at: Option<usize>,
    /// The first bytes, for a sample.
    first: Vec<u8>,
    http: Option<HttpReader>,
    /// The HTTP status, once its head came.
    pub status: Option<u16>,
}

impl AnswerReader {
    pub fn new(answer: Answer, expect: Option<&[u8]>) -> Self {
        AnswerReader {
            expect_at: expect.filter(|e| !e.is_empty()).map(|_| 0),
            http: match answer {
                Answer::Http { head_request } => Some(HttpReader::new(head_request)),
                _ => None,
            },
            ..Default::default()
        }
    }

    /// Whether answers are sampled (there is something an answer can fail).
    fn samples(&self, expect: Option<&[u8]>) -> bool {
        self.http.is_some() || expect.is_some()
    }

    /// Takes the bytes just read.
    pub fn feed(&mut self, answer: Answer, expect: Option<&[u8]>, data: &[u8]) -> Fed {
        if self.samples(expect) && self.first.len() < SAMPLE_MAX {
            let n = data.len().min(SAMPLE_MAX - self.first.len());
            self.first.extend_from_slice(&data[..n]);
        }
        self.got += data.len();
        // The HTTP reader first, so a response's status counts whatever else it fails.
        let fed = match &mut self.http {
            Some(h) => {
                let fed = h.feed(data);
                self.status = h.status;
                fed
            }
            None => match answer {
                Answer::Bytes(want) if self.got < want => Fed::More,
                _ => Fed::Done,
            },
        };
        if let (Some(at), Some(e)) = (self.expect_at, expect) {
            let n = data.len().min(e.len() - at);
            if data[..n] != e[at..at + n] {
                self.expect_at = None;
                return Fed::Bad(format!("did not start with --expect: {}", self.sample()));
            }
            self.expect_at = (at + n < e.len()).then_some(at + n);
        }
        match fed {
            // The answer is complete only once `--expect`'s bytes came too.
            Fed::Done if self.expect_at.is_some() => Fed::More,
            Fed::Bad(why) => Fed::Bad(format!("{why}: {}", self.sample())),
            other => other,
        }
    }

    /// The server closed: what the answer amounts to.
    pub fn eof(&mut self, answer: Answer) -> Fed {
        if self.expect_at.is_some() {
            return Fed::Bad(format!(
                "closed after {} bytes, before --expect's: {}",
                self.got,
                self.sample()
            ));
        }
        match &mut self.http {
            Some(h) => match h.eof() {
                Fed::Bad(why) => Fed::Bad(format!("{why}: {}", self.sample())),
                other => other,
            },
            // `--read N` reads N bytes or to the close.
            None => {
                let _ = answer;
                Fed::Done
            }
        }
    }

    /// At the read deadline, with part of the answer in: whether what came is short of what
    /// was asked (an HTTP response not ended, `--expect`'s bytes not all there).
    pub fn incomplete(&self) -> bool {
        self.expect_at.is_some() || self.http.as_ref().is_some_and(|h| !h.done())
    }

    /// The first line of the answer so far.
    pub fn sample(&self) -> String {
        first_line(&self.first)
    }
}

/// How an HTTP body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// This many bytes left.
    Length(u64),
    /// Chunked, where in the chunk framing.
    Chunked(Chunk),
    /// At the server's close.
    Close,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Reading a chunk-size line (its length so far).
    Size(usize),
    /// This many bytes of chunk data left.
    Data(u64),
    /// The CRLF after a chunk's data: bytes of it seen.
    DataEnd(u8),
    /// The trailer section after the last chunk: bytes of the current line.
    Trailer(usize),
}

#[derive(Debug)]
enum State {
    Head,
    Body(Framing),
    Done,
}

/// An HTTP/1.1 response, read incrementally to its end.
#[derive(Debug)]
struct HttpReader {
    head_request: bool,
    state: State,
    head: Vec<u8>,
    /// The chunk-size line being read.
    line: Vec<u8>,
    status: Option<u16>,
}

impl HttpReader {
    fn new(head_request: bool) -> Self {
        HttpReader {
            head_request,
            state: State::Head,
            head: Vec::new(),
            line: Vec::new(),
            status: None,
        }
    }

    fn done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    fn feed(&mut self, mut data: &[u8]) -> Fed {
        while !data.is_empty() {
            match &mut self.state {
                State::Done => break,
                State::Head => {
                    let searched = self.head.len().saturating_sub(3);
                    self.head.extend_from_slice(data);
                    data = &[];
                    let Some(end) = find(&self.head[searched..], b"\r\n\r\n") else {
                        if self.head.len() > HEAD_MAX {
                            return Fed::Bad(format!(
                                "no end of the HTTP head in its first {HEAD_MAX} bytes"
                            ));
                        }
                        continue;
                    };
                    let end = searched + end + 4;
                    let rest = self.head.split_off(end);
                    match self.parse_head() {
                        Ok(Some(framing)) => self.state = State::Body(framing),
                        // An interim (1xx) response: the real one follows.
                        Ok(None) => self.state = State::Head,
                        Err(why) => return Fed::Bad(why),
                    }
                    self.head.clear();
                    if matches!(self.state, State::Body(Framing::Length(0))) {
                        self.state = State::Done;
                    }
                    if !rest.is_empty() {
                        return self.feed(&rest);
                    }
                }
                State::Body(Framing::Close) => data = &[],
                State::Body(Framing::Length(left)) => {
                    let n = (data.len() as u64).min(*left);
                    *left -= n;
                    data = &data[n as usize..];
                    if *left == 0 {
                        self.state = State::Done;
                    }
                }
                State::Body(Framing::Chunked(c)) => match c {
                    Chunk::Size(len) => {
                        let nl = data.iter().position(|&b| b == b'\n');
                        let take = nl.map_or(data.len(), |p| p + 1);
                        *len += take;
                        if *len > 1024 {
                            return Fed::Bad("a chunk-size line longer than 1024 bytes".into());
                        }
                        self.line.extend_from_slice(&data[..take]);
                        data = &data[take..];
                        if nl.is_some() {
                            let size = match httparse::parse_chunk_size(&self.line) {
                                Ok(httparse::Status::Complete((_, size))) => size,
                                _ => {
                                    return Fed::Bad(format!(
                                        "a malformed chunk size {:?}",
                                        first_line(&self.line)
                                    ));
                                }
                            };
                            self.line.clear();
                            *c = if size == 0 {
                                Chunk::Trailer(0)
                            } else {
                                Chunk::Data(size)
                            };
                        }
                    }
                    Chunk::Data(left) => {
                        let n = (data.len() as u64).min(*left);
                        *left -= n;
                        data = &data[n as usize..];
                        if *left == 0 {
                            *c = Chunk::DataEnd(0);
                        }
                    }
                    Chunk::DataEnd(seen) => {
                        let want = b"\r\n"[*seen as usize];
                        if data[0] != want {
                            return Fed::Bad("chunk data not followed by CRLF".into());
                        }
                        data = &data[1..];
                        *seen += 1;
                        if *seen == 2 {
                            *c = Chunk::Size(0);
                        }
                    }
                    Chunk::Trailer(len) => {
                        let b = data[0];
                        data = &data[1..];
                        match b {
                            // An empty line ends the trailers (and the response).
                            b'\n' if *len == 0 => self.state = State::Done,
                            b'\n' => *len = 0,
                            b'\r' => {}
                            _ => *len += 1,
                        }
                    }
                },
            }
        }
        if self.done() { Fed::Done } else { Fed::More }
    }

    /// The head in `self.head` (ending with its empty line): the body's framing, or `None`
    /// for an interim response.
    fn parse_head(&mut self) -> Result<Option<Framing>, String> {
        let mut headers = [httparse::EMPTY_HEADER; 100];
        let mut r = httparse::Response::new(&mut headers);
        match r.parse(&self.head) {
            Ok(httparse::Status::Complete(_)) => {}
            Ok(httparse::Status::Partial) => return Err("an incomplete HTTP head".into()),
            Err(e) => return Err(format!("not an HTTP/1.x response ({e})")),
        }
        let status = r.code.unwrap_or(0);
        if (100..200).contains(&status) && status != 101 {
            return Ok(None);
        }
        self.status = Some(status);
        if self.head_request || status == 204 || status == 304 || status == 101 {
            return Ok(Some(Framing::Length(0)));
        }
        let mut length: Option<u64> = None;
        let mut chunked = false;
        for h in r.headers.iter() {
            if h.name.eq_ignore_ascii_case("transfer-encoding") {
                // The last coding decides; chunked must be it for the framing to be chunks.
                chunked = std::str::from_utf8(h.value).is_ok_and(|v| {
                    v.rsplit(',')
                        .next()
                        .is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked"))
                });
            } else if h.name.eq_ignore_ascii_case("content-length") {
                let v = std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .ok_or_else(|| "a Content-Length that is not a number".to_string())?;
                if length.is_some_and(|l| l != v) {
                    return Err("two different Content-Lengths".into());
                }
                length = Some(v);
            }
        }
        Ok(Some(if chunked {
            Framing::Chunked(Chunk::Size(0))
        } else if let Some(l) = length {
            Framing::Length(l)
        } else {
            Framing::Close
        }))
    }

    fn eof(&mut self) -> Fed {
        match &self.state {
            State::Done | State::Body(Framing::Close) => {
                self.state = State::Done;
                Fed::Done
            }
            State::Head => Fed::Bad("closed before the end of the HTTP head".into()),
            State::Body(Framing::Length(left)) => {
                Fed::Bad(format!("closed with {left} body bytes still to come"))
            }
            State::Body(Framing::Chunked(_)) => Fed::Bad("closed before the last chunk".into()),
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HTTP: Answer = Answer::Http {
        head_request: false,
    };

    /// Feeds `parts` one after another; the last result, and the status.
    fn read(answer: Answer, expect: Option<&[u8]>, parts: &[&[u8]]) -> (Fed, Option<u16>) {
        let mut r = AnswerReader::new(answer, expect);
        let mut last = Fed::More;
        for p in parts {
            last = r.feed(answer, expect, p);
            if last != Fed::More {
                break;
            }
        }
        (last, r.status)
    }

    /// Every split of `whole` into two parts reads the same.
    fn every_split(answer: Answer, whole: &[u8]) -> Vec<(Fed, Option<u16>)> {
        (1..whole.len())
            .map(|i| read(answer, None, &[&whole[..i], &whole[i..]]))
            .collect()
    }

    #[test]
    fn a_content_length_response_ends_with_its_body() {
        let whole = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n";
        assert_eq!(read(HTTP, None, &[whole]), (Fed::Done, Some(200)));
        for r in every_split(HTTP, whole) {
            assert_eq!(r, (Fed::Done, Some(200)));
        }
        // Short of its body: more to come, and a close there is a cut.
        let mut r = AnswerReader::new(HTTP, None);
        assert_eq!(r.feed(HTTP, None, &whole[..whole.len() - 1]), Fed::More);
        assert!(r.incomplete());
        assert!(matches!(r.eof(HTTP), Fed::Bad(w) if w.contains("1 body bytes still to come")));
    }

    #[test]
    fn a_chunked_response_ends_with_its_last_chunk_and_trailers() {
        let whole =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\nX-T: 1\r\n\r\n";
        assert_eq!(read(HTTP, None, &[whole]), (Fed::Done, Some(200)));
        for r in every_split(HTTP, whole) {
            assert_eq!(r, (Fed::Done, Some(200)));
        }
        let bad = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        assert!(matches!(read(HTTP, None, &[bad]).0, Fed::Bad(w) if w.contains("chunk size")));
        let bad = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab";
        assert!(matches!(read(HTTP, None, &[bad]).0, Fed::Bad(w) if w.contains("CRLF")));
    }

    #[test]
    fn a_response_without_length_ends_at_the_close() {
        let mut r = AnswerReader::new(HTTP, None);
        assert_eq!(
            r.feed(HTTP, None, b"HTTP/1.0 200 OK\r\n\r\nbody"),
            Fed::More
        );
        assert_eq!(r.eof(HTTP), Fed::Done);
        assert_eq!(r.status, Some(200));
    }

    #[test]
    fn bodiless_responses_end_with_their_head() {
        let head = Answer::Http { head_request: true };
        assert_eq!(
            read(
                head,
                None,
                &[b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n"]
            ),
            (Fed::Done, Some(200))
        );
        for code in [204, 304] {
            let t = format!("HTTP/1.1 {code} X\r\nContent-Length: 5\r\n\r\n");
            assert_eq!(read(HTTP, None, &[t.as_bytes()]), (Fed::Done, Some(code)));
        }
        // An interim 100 is skipped; the final response counts.
        let t = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(read(HTTP, None, &[t]), (Fed::Done, Some(201)));
    }

    #[test]
    fn what_is_not_http_is_bad_with_its_first_line() {
        let (fed, _) = read(HTTP, None, &[b"SSH-2.0-OpenSSH\r\n\r\n"]);
        assert!(
            matches!(&fed, Fed::Bad(w) if w.contains("not an HTTP/1.x response") && w.ends_with("SSH-2.0-OpenSSH")),
            "{fed:?}"
        );
        let mut r = AnswerReader::new(HTTP, None);
        assert_eq!(r.feed(HTTP, None, b"HTTP/1.1 200"), Fed::More);
        assert!(matches!(r.eof(HTTP), Fed::Bad(w) if w.contains("end of the HTTP head")));
        let big = vec![b'a'; HEAD_MAX + 10];
        assert!(matches!(read(HTTP, None, &[&big]).0, Fed::Bad(w) if w.contains("no end")));
        let two = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n";
        assert!(matches!(read(HTTP, None, &[two]).0, Fed::Bad(w) if w.contains("two different")));
    }

    #[test]
    fn expect_decides_on_the_first_bytes() {
        let e: &[u8] = b"HTTP/1.1 200";
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(read(HTTP, Some(e), &[&ok[..5], &ok[5..]]).0, Fed::Done);
        let busy = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n";
        let (fed, status) = read(HTTP, Some(e), &[busy]);
        assert_eq!(
            fed,
            Fed::Bad("did not start with --expect: HTTP/1.1 503 Service Unavailable".into())
        );
        // Its status counts all the same.
        assert_eq!(status, Some(503));
        // Raw: --read 1 still waits for all of --expect's bytes.
        let raw = Answer::Bytes(1);
        assert_eq!(read(raw, Some(b"hello"), &[b"he"]).0, Fed::More);
        assert_eq!(read(raw, Some(b"hello"), &[b"he", b"llo"]).0, Fed::Done);
        let mut r = AnswerReader::new(raw, Some(b"hello"));
        assert_eq!(r.feed(raw, Some(b"hello"), b"he"), Fed::More);
        assert!(r.incomplete());
        assert!(matches!(r.eof(raw), Fed::Bad(w) if w.contains("closed after 2 bytes")));
        // Without --expect a raw answer is done at N bytes, or at the close.
        assert_eq!(read(Answer::Bytes(2), None, &[b"h"]).0, Fed::More);
        assert_eq!(read(Answer::Bytes(2), None, &[b"hi!"]).0, Fed::Done);
    }
}
