//! Connection workers: threads that each run a single-threaded tokio runtime and serve the
//! client connections handed to them, as nginx's and Envoy's workers do.
//!
//! The accept loop stays on the caller's runtime (with the admin API, health checks, scrapes
//! and reloads) and gives every accepted connection to the next worker in turn. A connection
//! and everything its requests spawn then live on one thread: no task moves between threads,
//! and a busy worker never wakes an idle one to steal from it. On a work-stealing runtime
//! under load, those wake-ups (a futex call and a context switch each) cost as much CPU as the
//! requests themselves in some runs (`bench/results/instructions-2026-11-29-workers-s21.md`).
//!
//! Shared state (the gateway, its snapshot, pools, limits) is the same as on one runtime:
//! everything it holds is `Send + Sync` already.

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::runtime::Handle;
use tokio::sync::oneshot;

thread_local! {
    /// This thread's worker number, from 1; 0 on any other thread.
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// The worker this thread is (from 1), or 0 when it is none: what per-worker state is
/// indexed by.
pub(crate) fn current() -> usize {
    WORKER.with(Cell::get)
}

/// Threads that serve connections, each on a runtime of its own. Dropping it stops them:
/// each runtime ends with the tasks still on it (the server drains before it drops them).
#[derive(Debug)]
pub(crate) struct Workers {
    handles: Vec<Handle>,
    /// Where the next connection goes.
    next: AtomicUsize,
    /// Dropped (so resolved) with the pool: each thread then leaves its runtime.
    _stop: Vec<oneshot::Sender<()>>,
}

impl Workers {
    /// Starts `n` workers (at least one), named `switchyard-worker-<i>`.
    pub(crate) fn start(n: usize) -> io::Result<Self> {
        let n = n.max(1);
        let mut handles = Vec::with_capacity(n);
        let mut stops = Vec::with_capacity(n);
        for i in 0..n {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(rt.handle().clone());
            let (stop, stopped) = oneshot::channel::<()>();
            stops.push(stop);
            std::thread::Builder::new()
                .name(format!("switchyard-worker-{i}"))
                .spawn(move || {
                    WORKER.with(|w| w.set(i + 1));
                    // Resolves when the pool drops its sender.
                    let _ = rt.block_on(stopped);
                })?;
        }
        Ok(Self {
            handles,
            next: AtomicUsize::new(0),
            _stop: stops,
        })
    }

    /// Runs `task` on the next worker in turn.
    pub(crate) fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        drop(self.handles[i].spawn(task));
    }
}

#[cfg(test)]
mod tests {
    use super::Workers;
    use std::collections::HashSet;
    use std::sync::{Arc, Mutex};

    #[test]
    fn tasks_go_to_every_worker_in_turn_and_run_on_its_thread() {
        let workers = Workers::start(3).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let seen = Arc::new(Mutex::new(Vec::new()));
        for _ in 0..6 {
            let tx = tx.clone();
            let seen = seen.clone();
            workers.spawn(async move {
                // A timer needs the worker's own runtime (enable_all).
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                let name = std::thread::current().name().unwrap_or("").to_owned();
                assert_eq!(
                    super::current().to_string(),
                    (name.rsplit('-').next().unwrap().parse::<usize>().unwrap() + 1).to_string()
                );
                seen.lock().unwrap().push(name);
                tx.send(()).unwrap();
            });
        }
        for _ in 0..6 {
            rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
        }
        let names: HashSet<String> = seen.lock().unwrap().iter().cloned().collect();
        let want: HashSet<String> = (0..3).map(|i| format!("switchyard-worker-{i}")).collect();
        assert_eq!(names, want);
        assert_eq!(seen.lock().unwrap().len(), 6);
    }

    #[test]
    fn dropping_the_pool_ends_its_threads_tasks() {
        let workers = Workers::start(1).unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        workers.spawn(async move {
            // Never finishes on its own; dropping the runtime drops it, and `tx` with it.
            let _tx = tx;
            std::future::pending::<()>().await;
        });
        drop(workers);
        assert_eq!(
            rx.recv_timeout(std::time::Duration::from_secs(10)),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected)
        );
    }
}
