//! [`PagedOnly`]: a policy that is told every backend has a paged prefix cache, whatever its
//! engine: how Switchyard's `prefix_aware` routed before it knew engine kinds, kept to measure
//! the engine-aware cache models against on llama.cpp-like slot fleets.

use switchyard_core::routing::NoCandidate;
use switchyard_core::{BackendView, CacheModel, Decision, FleetView, Policy, RequestProfile};

/// Wraps `inner`, showing it every backend as [`CacheModel::Paged`].
#[derive(Debug)]
pub struct PagedOnly {
    inner: Box<dyn Policy>,
    name: &'static str,
}

impl PagedOnly {
    /// `inner` under the name `name` (reports tell the two apart by it).
    pub fn new(inner: Box<dyn Policy>, name: &'static str) -> Self {
        Self { inner, name }
    }
}

impl Policy for PagedOnly {
    fn name(&self) -> &'static str {
        self.name
    }

    fn decide(
        &self,
        request: &RequestProfile,
        fleet: &FleetView<'_>,
    ) -> Result<Decision, NoCandidate> {
        let views: Vec<BackendView> = fleet
            .backends
            .iter()
            .map(|b| BackendView {
                cache: CacheModel::Paged,
                ..*b
            })
            .collect();
        let paged = FleetView {
            backends: &views,
            ..*fleet
        };
        self.inner.decide(request, &paged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use switchyard_core::BackendId;

    #[test]
    fn the_inner_policy_sees_only_paged_caches() {
        /// Fails unless every backend it sees is paged.
        #[derive(Debug)]
        struct Probe;
        impl Policy for Probe {
            fn name(&self) -> &'static str {
                "probe"
            }
            fn decide(
                &self,
                _: &RequestProfile,
                fleet: &FleetView<'_>,
            ) -> Result<Decision, NoCandidate> {
                if fleet.backends.iter().all(|b| b.cache == CacheModel::Paged) {
                    Ok(Decision::new(
                        BackendId(0),
                        switchyard_core::Reason::text("probe", "first backend"),
                    ))
                } else {
                    Err(NoCandidate)
                }
            }
        }
        let mut pool = vec![BackendView::idle(BackendId(0), 1)];
        pool[0].cache = CacheModel::Slots {
            slots: 2,
            ctx_tokens: 100,
        };
        let req = switchyard_core::RequestProfile::parse(
            switchyard_core::EndpointKind::Completions,
            br#"{"model":"m","prompt":"x"}"#,
            Default::default(),
        )
        .unwrap();
        let fleet = FleetView::new(&pool, Duration::ZERO);
        assert!(Probe.decide(&req, &fleet).is_err());
        let wrapped = PagedOnly::new(Box::new(Probe), "paged");
        assert!(wrapped.decide(&req, &fleet).is_ok());
        assert_eq!(wrapped.name(), "paged");
    }
}
