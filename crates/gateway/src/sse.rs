//! Whole-event framing of a relayed SSE stream: [`EventFramer`] lets through only bytes that
//! end on an event boundary (a blank line) and holds back a trailing partial event until its
//! end arrives. So when an upstream stream breaks or stalls in the middle of an event, the
//! partial event is dropped and the gateway's error event starts on a fresh boundary: the
//! client never sees a half event glued to an error (which the `openai` SDK reports as a JSON
//! decode error instead of an API error).
//!
//! Lines end with `\r\n`, `\n` or `\r` (the SSE grammar); an event ends at an empty line. A
//! chunk that ends with `\n\n` (every engine's usual chunk) passes through without a copy.

use bytes::{Bytes, BytesMut};

/// Most bytes held back for one partial event. An event larger than this (never a token
/// chunk) is let through as it comes, without the whole-event guarantee.
pub const MAX_HELD_EVENT: usize = 1 << 20;

/// Splits a byte stream into whole SSE events (see the module doc).
#[derive(Debug, Default)]
pub struct EventFramer {
    /// The partial event held back.
    held: BytesMut,
    /// The byte before the scan position ended a line (so a line ending now ends an event).
    at_line_start: bool,
    /// The byte before the scan position was `\r` (so a `\n` now completes `\r\n`).
    after_cr: bool,
    /// The bytes let through so far end with a `\r` that ended an event: a `\n` that
    /// completes it goes out at once, as part of that boundary.
    ended_on_cr: bool,
}

impl EventFramer {
    /// A framer at the start of a stream.
    pub fn new() -> Self {
        Self {
            held: BytesMut::new(),
            at_line_start: true,
            after_cr: false,
            ended_on_cr: false,
        }
    }

    /// Takes the next chunk; returns the bytes that now end on an event boundary (held bytes
    /// first), or `None` when everything is held.
    pub fn push(&mut self, chunk: Bytes) -> Option<Bytes> {
        if chunk.is_empty() {
            return None;
        }
        if chunk.ends_with(b"\n\n") {
            // Ends on a boundary whatever came before.
            self.at_line_start = true;
            self.after_cr = false;
            self.ended_on_cr = false;
            return Some(self.release(chunk, None));
        }
        let mut end = None;
        for (i, &b) in chunk.iter().enumerate() {
            match b {
                b'\n' if self.after_cr => {
                    // Completes `\r\n`: an event that ended at the `\r` takes it along.
                    self.after_cr = false;
                    if end == Some(i) || (i == 0 && self.ended_on_cr) {
                        end = Some(i + 1);
                    }
                }
                b'\n' | b'\r' => {
                    if self.at_line_start {
                        end = Some(i + 1);
                    }
                    self.at_line_start = true;
                    self.after_cr = b == b'\r';
                }
                _ => {
                    self.at_line_start = false;
                    self.after_cr = false;
                }
            }
        }
        if let Some(end) = end {
            self.ended_on_cr = chunk[end - 1] == b'\r';
        }
        match end {
            Some(end) if end == chunk.len() => Some(self.release(chunk, None)),
            Some(end) => Some(self.release(chunk, Some(end))),
            None if self.held.len() + chunk.len() > MAX_HELD_EVENT => {
                self.ended_on_cr = false;
                // Too large to hold: let it through as it is.
                let mut all = std::mem::take(&mut self.held);
                all.extend_from_slice(&chunk);
                Some(all.freeze())
            }
            None => {
                self.held.extend_from_slice(&chunk);
                None
            }
        }
    }

    /// The held bytes, then `chunk` up to `end` (all of it when `None`); the rest of `chunk`
    /// is held.
    fn release(&mut self, chunk: Bytes, end: Option<usize>) -> Bytes {
        let end = end.unwrap_or(chunk.len());
        let out = if self.held.is_empty() {
            chunk.slice(..end)
        } else {
            let mut all = std::mem::take(&mut self.held);
            all.extend_from_slice(&chunk[..end]);
            all.freeze()
        };
        if end < chunk.len() {
            self.held.extend_from_slice(&chunk[end..]);
        }
        out
    }

    /// Nothing is held.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// The stream ended cleanly: whatever is held, as the upstream sent it.
    pub fn finish(&mut self) -> Option<Bytes> {
        (!self.held.is_empty()).then(|| std::mem::take(&mut self.held).freeze())
    }

    /// The stream failed: the partial event is dropped. Returns whether there was one.
    pub fn abandon(&mut self) -> bool {
        let had = !self.held.is_empty();
        self.held.clear();
        had
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(f: &mut EventFramer, parts: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in parts {
            if let Some(b) = f.push(Bytes::copy_from_slice(p)) {
                out.extend_from_slice(&b);
            }
        }
        out
    }

    #[test]
    fn whole_events_pass_and_a_partial_one_waits_for_its_end() {
        let mut f = EventFramer::new();
        let out = feed(&mut f, &[b"data: 1\n\ndata: 2\n\nda", b"ta: 3\n", b"\n"]);
        assert_eq!(out, b"data: 1\n\ndata: 2\n\ndata: 3\n\n");
        assert_eq!(f.finish(), None);
    }

    #[test]
    fn every_line_ending_ends_events() {
        for (stream, first) in [
            (&b"data: a\r\n\r\ndata: b"[..], &b"data: a\r\n\r\n"[..]),
            (b"data: a\r\rdata: b", b"data: a\r\r"),
            (b"data: a\n\r\ndata: b", b"data: a\n\r\n"),
            (b"event: x\ndata: a\n\ndata: b\n", b"event: x\ndata: a\n\n"),
        ] {
            let mut f = EventFramer::new();
            assert_eq!(feed(&mut f, &[stream]), first, "{stream:?}");
            assert!(f.abandon(), "the partial event is held: {stream:?}");
        }
    }

    #[test]
    fn a_single_newline_does_not_end_an_event() {
        let mut f = EventFramer::new();
        assert_eq!(f.push(Bytes::from_static(b"data: 1\n")), None);
        assert_eq!(f.finish(), Some(Bytes::from_static(b"data: 1\n")));
    }

    #[test]
    fn a_crlf_that_ends_an_event_across_chunks_goes_out_with_it() {
        let mut f = EventFramer::new();
        assert_eq!(
            f.push(Bytes::from_static(b"data: 1\r\n\r")).as_deref(),
            Some(&b"data: 1\r\n\r"[..])
        );
        assert_eq!(
            f.push(Bytes::from_static(b"\ndata: 2")).as_deref(),
            Some(&b"\n"[..])
        );
        assert!(f.abandon());
    }

    #[test]
    fn a_crlf_split_across_chunks_is_one_line_ending() {
        let mut f = EventFramer::new();
        let out = feed(&mut f, &[b"data: 1\r", b"\n", b"data: 2\r\n\r\n"]);
        assert_eq!(out, b"data: 1\r\ndata: 2\r\n\r\n");
    }

    #[test]
    fn an_oversized_event_is_let_through() {
        let mut f = EventFramer::new();
        let big = vec![b'x'; MAX_HELD_EVENT + 1];
        assert_eq!(
            f.push(Bytes::from(big)).map(|b| b.len()),
            Some(MAX_HELD_EVENT + 1)
        );
    }
}
