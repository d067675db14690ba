//! When each workload request reaches the gateway in a fleet run: at its workload time (open
//! loop), or, for later turns of a chat session, a think time after the previous turn's answer
//! ended (closed loop), possibly with a fixed number of users (fixed concurrency).
//!
//! Open loop replays the workload's clock: a client that sends whatever happens. Closed loop
//! is how a chat user behaves: turn `k + 1` resends the answer to turn `k`, so it cannot leave
//! before that answer is complete. In closed loop a session's first turn arrives at its
//! workload time and each later turn arrives its think time (the gap between the two turns'
//! workload arrivals) after the previous turn's last token. With `Users(n)`, `n` users each run
//! the workload's sessions one after another (in the order their first turns arrive), a user
//! starting the next session as soon as its previous one's last answer ends: a fixed
//! concurrency, so a fleet that answers faster serves more turns per second, and output
//! throughput measures its capacity (the way benchmark clients with a fixed number of
//! concurrent conversations measure it). Requests without a session are sessions of one turn
//! under `Users(n)`, and arrive at their workload time otherwise.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};

use crate::workload::Workload;

/// How a fleet run times its arrivals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Arrivals {
    /// Every request at its workload time.
    #[default]
    OpenLoop,
    /// Later turns of a session a think time after the previous turn completes.
    ClosedLoop,
    /// Closed loop with this many users running sessions back to back (at least 1).
    Users(usize),
}

/// Arrivals not yet delivered, earliest first (ties in workload order).
#[derive(Debug)]
pub(super) struct Schedule {
    /// `(time as bits, index)`: times are finite and non-negative, so their bit patterns
    /// order as the numbers do.
    heap: BinaryHeap<Reverse<(u64, usize)>>,
    /// In closed loop, each request's next turn and the think time before it.
    next_turn: Vec<Option<(usize, f64)>>,
    /// With `Users`: first turns of the sessions no user has started yet, in order.
    unstarted: VecDeque<usize>,
}

impl Schedule {
    /// The schedule of a validated workload (arrivals finite, non-negative and sorted).
    pub(super) fn new(workload: &Workload, mode: Arrivals) -> Self {
        let n = workload.requests.len();
        let mut next_turn = vec![None; n];
        let mut heap = BinaryHeap::with_capacity(n);
        let mut last_of_session: HashMap<u64, usize> = HashMap::new();
        let mut first_turns = Vec::new();
        for (i, r) in workload.requests.iter().enumerate() {
            let previous = match (mode, r.session) {
                (Arrivals::OpenLoop, _) | (_, None) => None,
                (_, Some(s)) => last_of_session.insert(s, i),
            };
            match previous {
                Some(p) => {
                    let think = r.arrival - workload.requests[p].arrival;
                    next_turn[p] = Some((i, think.max(0.0)));
                }
                None => first_turns.push(i),
            }
        }
        let users = match mode {
            Arrivals::Users(n) => n.max(1),
            _ => usize::MAX,
        };
        let mut unstarted: VecDeque<usize> = first_turns.into();
        while heap.len() < users {
            let Some(i) = unstarted.pop_front() else {
                break;
            };
            heap.push(Reverse((workload.requests[i].arrival.to_bits(), i)));
        }
        Self {
            heap,
            next_turn,
            unstarted,
        }
    }

    /// The time of the next arrival, `INFINITY` if none is scheduled.
    pub(super) fn peek(&self) -> f64 {
        self.heap
            .peek()
            .map_or(f64::INFINITY, |Reverse((t, _))| f64::from_bits(*t))
    }

    /// The next arrival's request index.
    pub(super) fn pop(&mut self) -> Option<usize> {
        self.heap.pop().map(|Reverse((_, i))| i)
    }

    /// Request `index` ended (answered or refused) at `t`: schedules what its user sends next
    /// (its session's next turn in closed loop, else with `Users` the next session's first
    /// turn, at once) and returns that request and its arrival time.
    pub(super) fn ended(&mut self, index: usize, t: f64) -> Option<(usize, f64)> {
        let (next, at) = match self.next_turn.get_mut(index).and_then(Option::take) {
            Some((next, think)) => (next, t + think),
            None => (self.unstarted.pop_front()?, t),
        };
        self.heap.push(Reverse((at.to_bits(), next)));
        Some((next, at))
    }

    /// Turns that will never be sent because the turn before them was never answered (the
    /// run ended first), following each chain from `index`.
    pub(super) fn orphans(&mut self, index: usize) -> Vec<usize> {
        let mut out = Vec::new();
        let mut i = index;
        while let Some((next, _)) = self.next_turn.get_mut(i).and_then(Option::take) {
            out.push(next);
            i = next;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::{Prompt, WorkloadRequest};

    fn req(arrival: f64, session: Option<u64>) -> WorkloadRequest {
        WorkloadRequest {
            arrival,
            session,
            prompt: Prompt::Text("hi".into()),
            max_output_tokens: 1,
            output_seed: 0,
        }
    }

    #[test]
    fn closed_loop_holds_later_turns_until_the_previous_one_ends() {
        let w = Workload::new(vec![
            req(0.0, Some(1)),
            req(1.0, None),
            req(2.0, Some(1)), // 2 s think after turn 0
            req(5.0, Some(1)), // 3 s think after turn 1
        ]);
        let mut open = Schedule::new(&w, Arrivals::OpenLoop);
        let order: Vec<usize> = std::iter::from_fn(|| open.pop()).collect();
        assert_eq!(order, [0, 1, 2, 3]);
        assert_eq!(open.ended(0, 10.0), None);

        let mut closed = Schedule::new(&w, Arrivals::ClosedLoop);
        assert_eq!((closed.peek(), closed.pop()), (0.0, Some(0)));
        assert_eq!((closed.peek(), closed.pop()), (1.0, Some(1)));
        assert_eq!(closed.peek(), f64::INFINITY);
        // Turn 0's answer ends at 10 s: turn 1 leaves 2 s later.
        assert_eq!(closed.ended(0, 10.0), Some((2, 12.0)));
        assert_eq!((closed.peek(), closed.pop()), (12.0, Some(2)));
        assert_eq!(closed.ended(1, 11.0), None);
        assert_eq!(closed.orphans(2), [3]);
        assert_eq!(closed.ended(2, 20.0), None);
    }

    #[test]
    fn users_run_sessions_back_to_back_at_a_fixed_concurrency() {
        let w = Workload::new(vec![
            req(0.0, Some(1)),
            req(0.5, Some(2)),
            req(1.0, None),
            req(2.0, Some(1)),
        ]);
        let mut s = Schedule::new(&w, Arrivals::Users(2));
        // Two users: sessions 1 and 2 start; the lone request waits for a free user.
        assert_eq!(s.pop(), Some(0));
        assert_eq!(s.pop(), Some(1));
        assert_eq!(s.pop(), None);
        // Session 2 (one turn) ends at 3 s: that user sends the lone request at once.
        assert_eq!(s.ended(1, 3.0), Some((2, 3.0)));
        // Session 1's first turn ends at 4 s: its second turn follows its 2 s think time.
        assert_eq!(s.ended(0, 4.0), Some((3, 6.0)));
        assert_eq!(s.ended(2, 5.0), None);
        assert_eq!(s.ended(3, 9.0), None);
    }
}
