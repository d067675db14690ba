//! A response body watched on its way to the client by what the request left riding on it:
//! its admission [`Permit`] (concurrency slots, the pool's waiting room, the usage that
//! reconciles limits and spend) and its decision record in the making ([`Pending`]).
//!
//! Both ride in one box beside the body, so a request pays one allocation and one poll layer
//! for them, whichever of the two it carries.

use bytes::Bytes;
use http_body::{Body, Frame};
use std::pin::Pin;
use std::task::{Context, Poll};

use super::{BodyError, GatewayBody};
use crate::admission::Permit;
use crate::decisions::Pending;

/// A body with what watches it (see the module docs).
#[derive(Debug)]
pub struct Watched {
    /// The body itself. Declared first so that it is dropped first: a relay gives its
    /// backend's slot back before the permit lets the pool's next request go.
    pub body: GatewayBody,
    /// The request's admission slot, given back when the body ends or is dropped.
    pub permit: Option<Permit>,
    /// The request's decision record, completed when the body ends (or is dropped).
    pub pending: Option<Pending>,
}

impl Watched {
    /// Whether the permit reads the response's usage itself (so the record takes its
    /// reading instead of reading the body again).
    pub fn metered(&self) -> bool {
        self.permit.as_ref().is_some_and(Permit::meters)
    }

    /// Polls the body; each frame passes the permit first (which may take a usage-only chunk
    /// out), then the record. The moment the body ends, the permit is given back and the
    /// record completed, before the client can see the end.
    pub(super) fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
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
        if matches!(out, Poll::Ready(None)) || self.body.is_end_stream() {
            let usage = self.permit.as_mut().and_then(|p| {
                p.end();
                p.usage()
            });
            if let Some(p) = &mut self.pending {
                p.end(usage);
            }
        }
        out
    }
}
