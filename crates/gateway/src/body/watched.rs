//! A response body watched on its way to the client by what the request left riding on it:
//! its admission [`Permit`] (concurrency slots, the pool's waiting room, the usage that
//! reconciles limits and spend) and its decision record in the making ([`Pending`]).
//!
//! A proxied answer's [`Relay`] is put in this box when it is made (see
//! [`GatewayBody::relay`]), and the permit and the record join it there: a request pays one
//! allocation and one poll layer for all three, and the response that carries them moves as
//! a pointer.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};

use super::{BodyError, GatewayBody, Relay};
use crate::admission::Permit;
use crate::decisions::Pending;

/// The body a [`Watched`] carries. (The relay sits inline: the whole lives in one box.)
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(super) enum Inner {
    /// An upstream body in transit.
    Relay(Relay),
    /// Any other body (a gateway's own answer whose record is kept).
    Body(GatewayBody),
}

/// A body with what watches it (see the module docs).
#[derive(Debug)]
pub struct Watched {
    /// The body itself. Declared first so that it is dropped first: a relay gives its
    /// backend's slot back before the permit lets the pool's next request go.
    inner: Inner,
    /// The request's admission slot, given back when the body ends or is dropped.
    pub permit: Option<Permit>,
    /// The request's decision record, completed when the body ends (or is dropped).
    pub pending: Option<Pending>,
}

impl Watched {
    pub(super) fn new(inner: Inner) -> Self {
        Self {
            inner,
            permit: None,
            pending: None,
        }
    }

    /// Whether the permit reads the response's usage itself (so the record takes its
    /// reading instead of reading the body again).
    pub fn metered(&self) -> bool {
        self.permit.as_ref().is_some_and(Permit::meters)
    }

    /// See [`GatewayBody::is_sse`].
    pub(super) fn is_sse(&self, headers: &http::HeaderMap) -> bool {
        match &self.inner {
            Inner::Relay(r) if r.translate.is_none() => r.sse,
            Inner::Relay(_) => super::content_type_is_sse(headers),
            Inner::Body(b) => b.is_sse(headers),
        }
    }

    pub(super) fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Relay(r) => r.is_end_stream(),
            Inner::Body(b) => b.is_end_stream(),
        }
    }

    pub(super) fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Relay(r) => r.size_hint(),
            Inner::Body(b) => b.size_hint(),
        }
    }

    /// Polls the body; each frame passes the permit first (which may take a usage-only chunk
    /// out), then the record. The moment the body ends, the permit is given back and the
    /// record completed, before the client can see the end.
    pub(super) fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let polled = match &mut self.inner {
            Inner::Relay(r) => r.poll_relay(cx),
            Inner::Body(b) => Pin::new(b).poll_frame(cx),
        };
        if self.permit.is_none() && self.pending.is_none() {
            return polled;
        }
        let out = polled.map(|f| {
            f.map(|r| {
                r.map(|mut frame| {
                    if let Some(p) = &mut self.permit {
                        frame = p.observe(frame);
                    }
                    if let Some(p) = &mut self.pending {
                        frame = p.observe(frame);
                    }
                    frame
                })
            })
        });
        if matches!(out, Poll::Ready(None)) || self.is_end_stream() {
            let ended_at = match &self.inner {
                Inner::Relay(r) => r.ended_at,
                Inner::Body(_) => None,
            };
            let usage = self.permit.as_mut().and_then(|p| {
                p.end_at(ended_at);
                p.usage()
            });
            if let Some(p) = &mut self.pending {
                p.end(usage);
            }
        }
        out
    }
}
