//! HTTP/1.1 on an upstream connection, as bytes: the request head written from the prepared
//! headers, the response head parsed (with `httparse`, as hyper does) into `http`'s types,
//! and the response body's framing (RFC 9112 section 6): a length, chunked, or until the
//! connection closes. No I/O here: [`super::direct`] feeds these from its socket's buffer.

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};
use smallvec::SmallVec;

/// Largest response head accepted (hyper's default is about the same).
pub const MAX_HEAD: usize = 64 * 1024;

/// Most header lines in a response head.
const MAX_HEADERS: usize = 100;

/// Header lines a response head is first parsed with room for (see [`parse_head`]).
const FEW_HEADERS: usize = 24;

/// Headers the gateway may add to a relayed answer (backend, attempts, request id, four
/// `x-ratelimit-*`).
const ADDED_HEADERS: usize = 7;

/// Longest chunk-size line (size, extensions) or trailer line of a chunked body.
const MAX_CHUNK_LINE: usize = 4096;

/// Why an upstream exchange failed on the wire.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The socket failed (its error is the source, for the callers that look for one).
    #[error("upstream connection failed")]
    Io(#[from] std::io::Error),
    /// The backend closed the connection before its response head was complete.
    #[error("the backend closed the connection before answering")]
    ClosedBeforeHead,
    /// The backend closed the connection before the body its framing announced was complete.
    #[error("the backend closed the connection before its response body ended")]
    ClosedInBody,
    /// The response head is not HTTP/1.x.
    #[error("malformed response head from the backend: {0}")]
    Head(&'static str),
    /// The response head is larger than [`MAX_HEAD`].
    #[error("the backend's response head is larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
    /// A chunked body broke its framing.
    #[error("malformed chunked body from the backend: {0}")]
    Chunked(&'static str),
}

/// Writes the head of a request (origin-form `path`) with `headers` into `out`.
pub fn encode_head<'h>(
    method: &Method,
    path: &str,
    headers: impl Iterator<Item = (&'h HeaderName, &'h HeaderValue)>,
    out: &mut BytesMut,
) {
    out.reserve(method.as_str().len() + path.len() + 512);
    out.extend_from_slice(method.as_str().as_bytes());
    out.extend_from_slice(b" ");
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// A parsed response head.
#[derive(Debug)]
pub struct Head {
    /// Its status.
    pub status: StatusCode,
    /// HTTP/1.0 or HTTP/1.1.
    pub version: Version,
    /// Its header lines, in order.
    pub headers: HeaderMap,
    /// How its body is framed.
    pub framing: Framing,
    /// Whether the connection may carry another request after this response's body.
    pub keep_alive: bool,
}

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Exactly this many bytes remain.
    Length(u64),
    /// Chunked transfer coding, in this state.
    Chunked(Chunk),
    /// Everything until the backend closes the connection.
    UntilClose,
}

impl Framing {
    /// Whether nothing more belongs to the body.
    pub fn is_done(&self) -> bool {
        matches!(self, Framing::Length(0) | Framing::Chunked(Chunk::Done))
    }
}

/// Where a chunked body's decoder stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    /// At a chunk-size line.
    Size,
    /// Inside a chunk: this many data bytes remain.
    Data(u64),
    /// After a chunk's data, at its closing CRLF.
    DataEnd,
    /// After the last (zero-size) chunk: trailer lines, up to an empty line.
    Trailer,
    /// The body has ended.
    Done,
}

/// Parses a response head at the start of `buf` and removes it from `buf`: `None` while it
/// is incomplete. Interim (1xx) responses are skipped. The response answers a `POST`.
///
/// The hop-by-hop headers that only describe this connection (`Connection` when it names no
/// other header, `Keep-Alive`, `Transfer-Encoding`) are read for the framing and not kept:
/// the relay would remove them anyway.
pub fn parse_head(buf: &mut BytesMut) -> Result<Option<Head>, WireError> {
    loop {
        if buf.is_empty() {
            return Ok(None);
        }
        // Most answers have a handful of headers: a short list first, so that the common
        // case does not initialise room for a hundred.
        let parsed = match parse_into::<FEW_HEADERS>(buf)? {
            Parsed::TooMany => match parse_into::<MAX_HEADERS>(buf)? {
                Parsed::TooMany => return Err(WireError::Head("too many headers")),
                other => other,
            },
            other => other,
        };
        match parsed {
            Parsed::Partial => return Ok(None),
            Parsed::Interim(len) => buf.advance(len),
            Parsed::Final(head) => return Ok(Some(head)),
            Parsed::TooMany => unreachable!("handled above"),
        }
    }
}

/// What one parse of a response head found.
enum Parsed {
    /// More bytes are needed.
    Partial,
    /// More header lines than the list had room for.
    TooMany,
    /// An interim (1xx) response of this many bytes, to skip.
    Interim(usize),
    /// The final response's head (removed from the buffer).
    Final(Head),
}

/// Parses the head at the start of `buf` with room for `N` header lines.
fn parse_into<const N: usize>(buf: &mut BytesMut) -> Result<Parsed, WireError> {
    let mut lines = [httparse::EMPTY_HEADER; N];
    let mut resp = httparse::Response::new(&mut lines);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
            return Err(WireError::HeadTooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(httparse::Error::TooManyHeaders) => return Ok(Parsed::TooMany),
        Err(_) => return Err(WireError::Head("not an HTTP/1.x status line and headers")),
    };
    let code = resp.code.unwrap_or_default();
    let status =
        StatusCode::from_u16(code).map_err(|_| WireError::Head("status code out of range"))?;
    if status.is_informational() {
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return Err(WireError::Head("101 Switching Protocols was not asked for"));
        }
        return Ok(Parsed::Interim(len));
    }
    let version = if resp.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let mut close = version == Version::HTTP_10;
    let mut chunked = None;
    let mut length: Option<u64> = None;
    // Names now; values once the head is split off, as slices of it (not copies).
    let base = buf.as_ptr() as usize;
    let mut kept: SmallVec<[(HeaderName, usize, usize); 16]> = SmallVec::new();
    for line in resp.headers.iter() {
        let name = HeaderName::from_bytes(line.name.as_bytes())
            .map_err(|_| WireError::Head("invalid header name"))?;
        if name == header::CONTENT_LENGTH {
            let n = parse_length(line.value)?;
            if length.is_some_and(|l| l != n) {
                return Err(WireError::Head("conflicting Content-Length values"));
            }
            length = Some(n);
        } else if name == header::TRANSFER_ENCODING {
            // The last coding decides: chunked only when it is last.
            chunked = Some(last_token(line.value).eq_ignore_ascii_case(b"chunked"));
            continue;
        } else if name == header::CONNECTION {
            let mut names_others = false;
            for token in line.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    if version == Version::HTTP_10 {
                        close = false;
                    }
                } else if !token.is_empty() {
                    names_others = true;
                }
            }
            if !names_others {
                continue;
            }
        } else if name.as_str() == "keep-alive" {
            continue;
        }
        let start = line.value.as_ptr() as usize - base;
        kept.push((name, start, start + line.value.len()));
    }
    let head = buf.split_to(len).freeze();
    // Room for the headers the gateway adds to an answer it relays (see `attempts::relay`),
    // so the map is not grown again.
    let mut headers = HeaderMap::with_capacity(kept.len() + ADDED_HEADERS);
    for (name, start, end) in kept {
        let value = HeaderValue::from_maybe_shared(head.slice(start..end))
            .map_err(|_| WireError::Head("invalid header value"))?;
        headers.append(name, value);
    }
    if chunked.is_some() && version == Version::HTTP_10 {
        // RFC 9112 section 6.1: such framing cannot be trusted.
        return Err(WireError::Head(
            "an HTTP/1.0 response with Transfer-Encoding",
        ));
    }
    let no_body = status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
    let framing = match (no_body, chunked, length) {
        (true, _, _) => Framing::Length(0),
        (_, Some(true), _) => Framing::Chunked(Chunk::Size),
        // A coding other than chunked last: the body runs until the connection closes.
        (_, Some(false), _) => Framing::UntilClose,
        (_, None, Some(n)) => Framing::Length(n),
        (_, None, None) => Framing::UntilClose,
    };
    // With both Transfer-Encoding and Content-Length the message is suspect (RFC 9112
    // section 6.3): the connection is not used again.
    let keep_alive =
        !close && framing != Framing::UntilClose && !(chunked.is_some() && length.is_some());
    Ok(Parsed::Final(Head {
        status,
        version,
        headers,
        framing,
        keep_alive,
    }))
}

/// A Content-Length value: digits, or a list of the same digits repeated (RFC 9110 section
/// 8.6 lets a recipient take `5, 5` as 5).
fn parse_length(v: &[u8]) -> Result<u64, WireError> {
    let mut length = None;
    for item in v.split(|&b| b == b',') {
        let item = item.trim_ascii();
        if item.is_empty() || item.len() > 19 || !item.iter().all(u8::is_ascii_digit) {
            return Err(WireError::Head("invalid Content-Length"));
        }
        let n = item.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0'));
        if length.is_some_and(|l| l != n) {
            return Err(WireError::Head("conflicting Content-Length values"));
        }
        length = Some(n);
    }
    length.ok_or(WireError::Head("invalid Content-Length"))
}

/// The last comma-separated token of a header value.
fn last_token(v: &[u8]) -> &[u8] {
    v.rsplit(|&b| b == b',')
        .next()
        .unwrap_or_default()
        .trim_ascii()
}

/// Takes the next piece of body data out of `buf` under `framing` (advancing it): `Ok(None)`
/// when `buf` holds no data to give now (more must be read, or the body has ended: see
/// [`Framing::is_done`]). Framing bytes (chunk sizes, CRLFs, trailers) are consumed on the
/// way; data comes out as slices of `buf`, not copies.
pub fn take_data(framing: &mut Framing, buf: &mut BytesMut) -> Result<Option<Bytes>, WireError> {
    match framing {
        Framing::Length(0) => Ok(None),
        Framing::Length(left) => {
            if buf.is_empty() {
                return Ok(None);
            }
            let n = usize::try_from(*left).unwrap_or(usize::MAX).min(buf.len());
            *left -= n as u64;
            Ok(Some(buf.split_to(n).freeze()))
        }
        Framing::UntilClose => Ok((!buf.is_empty()).then(|| buf.split().freeze())),
        Framing::Chunked(state) => chunked(state, buf),
    }
}

/// [`take_data`] for a chunked body.
fn chunked(state: &mut Chunk, buf: &mut BytesMut) -> Result<Option<Bytes>, WireError> {
    loop {
        match *state {
            Chunk::Done => return Ok(None),
            Chunk::Size => {
                let Some(line) = take_line(buf)? else {
                    return Ok(None);
                };
                // Extensions after `;` are ignored.
                let digits = line[..]
                    .split(|&b| b == b';')
                    .next()
                    .unwrap_or_default()
                    .trim_ascii();
                // Leading zeros do not count toward the limit of 15 hex digits (2^60).
                let significant = match digits.iter().position(|&d| d != b'0') {
                    Some(at) => &digits[at..],
                    None => &digits[digits.len().saturating_sub(1)..],
                };
                if digits.is_empty() || significant.len() > 15 {
                    return Err(WireError::Chunked("invalid chunk size"));
                }
                let mut size = 0u64;
                for d in significant {
                    let v = (*d as char)
                        .to_digit(16)
                        .ok_or(WireError::Chunked("invalid chunk size"))?;
                    size = size * 16 + u64::from(v);
                }
                *state = if size == 0 {
                    Chunk::Trailer
                } else {
                    Chunk::Data(size)
                };
            }
            Chunk::Data(left) => {
                if buf.is_empty() {
                    return Ok(None);
                }
                let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                let data = buf.split_to(n).freeze();
                let left = left - n as u64;
                *state = if left == 0 {
                    Chunk::DataEnd
                } else {
                    Chunk::Data(left)
                };
                return Ok(Some(data));
            }
            Chunk::DataEnd => {
                let Some(line) = take_line(buf)? else {
                    return Ok(None);
                };
                if !line.is_empty() {
                    return Err(WireError::Chunked("chunk data longer than its size"));
                }
                *state = Chunk::Size;
            }
            Chunk::Trailer => {
                let Some(line) = take_line(buf)? else {
                    return Ok(None);
                };
                if line.is_empty() {
                    *state = Chunk::Done;
                }
            }
        }
    }
}

/// Takes one line (without its CRLF, or a bare LF) out of `buf`: `None` while it is
/// incomplete.
fn take_line(buf: &mut BytesMut) -> Result<Option<BytesMut>, WireError> {
    match memchr::memchr(b'\n', buf) {
        Some(end) => {
            let mut line = buf.split_to(end + 1);
            line.truncate(end);
            if line.last() == Some(&b'\r') {
                line.truncate(end - 1);
            }
            Ok(Some(line))
        }
        None if buf.len() > MAX_CHUNK_LINE => Err(WireError::Chunked("line too long")),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> (Head, BytesMut) {
        let mut buf = BytesMut::from(text);
        let head = parse_head(&mut buf).unwrap().unwrap();
        (head, buf)
    }

    /// Everything `framing` yields from `wire` fed in pieces of `step` bytes, and whether
    /// the body ended.
    fn body(mut framing: Framing, wire: &[u8], step: usize) -> (Vec<u8>, bool) {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in wire.chunks(step) {
            buf.extend_from_slice(piece);
            while let Some(d) = take_data(&mut framing, &mut buf).unwrap() {
                out.extend_from_slice(&d);
            }
        }
        (out, framing.is_done())
    }

    #[test]
    fn a_request_head_has_its_line_then_every_header_then_a_blank_line() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("b:8000"));
        h.append("x-a", HeaderValue::from_static("1"));
        h.append("x-a", HeaderValue::from_static("2"));
        let mut out = BytesMut::new();
        encode_head(&Method::POST, "/v1/chat/completions", h.iter(), &mut out);
        assert_eq!(
            &out[..],
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: b:8000\r\nx-a: 1\r\nx-a: 2\r\n\r\n"
        );
    }

    #[test]
    fn a_response_head_is_parsed_and_removed_and_the_body_stays() {
        let (h, rest) = head("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nX-A: 1\r\nX-A: 2\r\n\r\nok");
        assert_eq!(h.status, 200);
        assert_eq!(h.framing, Framing::Length(2));
        assert!(h.keep_alive);
        assert_eq!(h.headers["content-type"], "application/json");
        assert_eq!(h.headers.get_all("x-a").iter().count(), 2);
        assert_eq!(&rest[..], b"ok");
    }

    #[test]
    fn an_incomplete_head_waits_and_a_huge_one_is_refused() {
        let mut buf = BytesMut::from("HTTP/1.1 200 OK\r\nContent-Le");
        assert!(parse_head(&mut buf).unwrap().is_none());
        let mut huge = BytesMut::from("HTTP/1.1 200 OK\r\nx: ");
        huge.extend_from_slice(&vec![b'a'; MAX_HEAD]);
        assert!(matches!(
            parse_head(&mut huge),
            Err(WireError::HeadTooLarge)
        ));
        let mut bad = BytesMut::from("SSH-2.0-OpenSSH\r\n\r\n");
        assert!(matches!(parse_head(&mut bad), Err(WireError::Head(_))));
    }

    #[test]
    fn a_head_with_many_headers_is_parsed_whole_and_hop_by_hop_ones_are_not_kept() {
        let mut text = String::from("HTTP/1.1 200 OK\r\nconnection: keep-alive\r\nkeep-alive: timeout=5\r\ntransfer-encoding: chunked\r\n");
        for i in 0..60 {
            text.push_str(&format!("x-h{i}: {i}\r\n"));
        }
        text.push_str("\r\n");
        let (h, _) = head(&text);
        assert_eq!(h.headers.len(), 60);
        assert_eq!(h.headers["x-h59"], "59");
        assert!(h.headers.get("connection").is_none());
        assert!(h.headers.get("keep-alive").is_none());
        assert!(h.headers.get("transfer-encoding").is_none());
        assert_eq!(h.framing, Framing::Chunked(Chunk::Size));
        // A Connection header that names another header is kept, for the relay to act on.
        let (h, _) = head(
            "HTTP/1.1 200 OK\r\nconnection: close, x-hop\r\nx-hop: 1\r\ncontent-length: 0\r\n\r\n",
        );
        assert_eq!(h.headers["connection"], "close, x-hop");
        assert!(!h.keep_alive);
        let mut too_many = String::from("HTTP/1.1 200 OK\r\n");
        for i in 0..MAX_HEADERS + 1 {
            too_many.push_str(&format!("x-h{i}: {i}\r\n"));
        }
        too_many.push_str("\r\n");
        let mut buf = BytesMut::from(too_many.as_str());
        assert!(matches!(
            parse_head(&mut buf),
            Err(WireError::Head("too many headers"))
        ));
    }

    #[test]
    fn interim_responses_are_skipped() {
        let (h, rest) = head("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: x\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n");
        assert_eq!(h.status, 201);
        assert!(h.framing.is_done());
        assert!(rest.is_empty());
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let f = |t: &str| head(t).0;
        let chunked = f("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
        assert_eq!(chunked.framing, Framing::Chunked(Chunk::Size));
        assert!(chunked.keep_alive);
        // A coding other than chunked last: read until close, not reused.
        let gz = f("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n");
        assert_eq!(gz.framing, Framing::UntilClose);
        assert!(!gz.keep_alive);
        // Both: chunked wins and the connection is not reused.
        let both = f("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(both.framing, Framing::Chunked(Chunk::Size));
        assert!(!both.keep_alive);
        let none = f("HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!(none.framing, Framing::UntilClose);
        assert!(!none.keep_alive);
        let no_content = f("HTTP/1.1 204 No Content\r\ncontent-length: 9\r\n\r\n");
        assert!(no_content.framing.is_done());
        assert!(!f("HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n").keep_alive);
        assert!(!f("HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n").keep_alive);
        assert!(
            f("HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\ncontent-length: 0\r\n\r\n").keep_alive
        );
        let mut conflict =
            BytesMut::from("HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n");
        assert!(parse_head(&mut conflict).is_err());
        let mut signed = BytesMut::from("HTTP/1.1 200 OK\r\ncontent-length: +1\r\n\r\n");
        assert!(parse_head(&mut signed).is_err());
    }

    #[test]
    fn lengths_that_repeat_one_value_are_one_length_and_http_1_0_may_not_chunk() {
        let (h, _) = head("HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\n\r\n");
        assert_eq!(h.framing, Framing::Length(5));
        let mut differ = BytesMut::from("HTTP/1.1 200 OK\r\ncontent-length: 5, 6\r\n\r\n");
        assert!(parse_head(&mut differ).is_err());
        let mut old = BytesMut::from("HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n");
        assert!(parse_head(&mut old).is_err());
        // Leading zeros of a chunk size are no overflow.
        let (out, done) = body(
            Framing::Chunked(Chunk::Size),
            b"0000000000000000000003\r\nabc\r\n0\r\n\r\n",
            4,
        );
        assert_eq!(out, b"abc");
        assert!(done);
    }

    #[test]
    fn a_length_body_ends_at_its_length_and_leaves_what_follows() {
        let mut framing = Framing::Length(5);
        let mut buf = BytesMut::from("helloHTTP/1.1");
        assert_eq!(take_data(&mut framing, &mut buf).unwrap().unwrap(), "hello");
        assert!(framing.is_done());
        assert!(take_data(&mut framing, &mut buf).unwrap().is_none());
        assert_eq!(&buf[..], b"HTTP/1.1");
    }

    #[test]
    fn a_chunked_body_decodes_whatever_the_pieces_it_arrives_in() {
        let wire = b"5;ext=1\r\nhello\r\n7\r\n, world\r\nA\nabcdefghij\n0\r\nx-trailer: 1\r\n\r\n";
        for step in [1, 2, 3, 7, wire.len()] {
            let (out, done) = body(Framing::Chunked(Chunk::Size), wire, step);
            assert_eq!(out, b"hello, worldabcdefghij", "step {step}");
            assert!(done, "step {step}");
        }
        let (out, done) = body(Framing::Chunked(Chunk::Size), b"5\r\nhel", 2);
        assert_eq!(out, b"hel");
        assert!(!done);
    }

    #[test]
    fn a_broken_chunked_body_is_an_error() {
        for wire in [&b"zz\r\n"[..], b"3\r\nabcd\r\n", b"1234567890abcdef0\r\n"] {
            let mut framing = Framing::Chunked(Chunk::Size);
            let mut buf = BytesMut::from(wire);
            let r = (0..4).try_for_each(|_| take_data(&mut framing, &mut buf).map(|_| ()));
            assert!(r.is_err(), "{:?}", String::from_utf8_lossy(wire));
        }
    }

    #[test]
    fn a_body_until_close_takes_everything() {
        let (out, done) = body(Framing::UntilClose, b"abc", 1);
        assert_eq!(out, b"abc");
        assert!(!done);
    }
}
