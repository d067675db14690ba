//! Agent sessions: the multi-turn shape of coding agents and tool-using assistants, a child of
//! [`crate::workload`] that reuses its seeded draws.
//!
//! An agent session starts from a long system prompt carrying the tool definitions (shared by
//! every session of the same agent product), then the user's task. Each later turn resends the
//! whole history (task, every earlier tool call the model wrote, every tool result) plus the
//! newest tool result, and asks for a short answer: the next tool call or the final reply. So
//! prompts are long and grow by a few hundred tokens a turn while answers stay short (50-200
//! tokens): a turn's GPU time is mostly prefill unless the history is already cached, which is
//! where routing each session back to the replica holding its history pays. The gap between
//! turns is the tool's run time, short next to a human's think time.

use serde::Serialize;

use super::{Length, Rng, Segment, Workload};
use crate::tokenizer::mix64;

/// Parameters of [`agent_sessions`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct AgentSpec {
    /// Sessions (agent tasks) to generate.
    pub sessions: usize,
    /// Mean session starts per second (Poisson); under closed-loop arrivals with a fixed
    /// number of users only their order matters.
    pub session_rate: f64,
    /// Distinct agent products, each with its own system prompt and tool set; a session's
    /// agent is drawn uniformly.
    pub agents: u32,
    /// Length of each agent's system prompt with its tool definitions.
    pub system_tokens: u32,
    /// The user's task that opens a session.
    pub task_tokens: Length,
    /// Turns (model calls) per session, drawn uniformly in this range; a session ends earlier
    /// if the next turn would not fit `max_context_tokens`.
    pub turns: (u32, u32),
    /// Each tool result appended to the history before the next turn.
    pub tool_result_tokens: Length,
    /// Each answer (a tool call, or the final reply).
    pub output_tokens: Length,
    /// Mean time a tool runs between an answer and the next turn (exponential), seconds.
    pub tool_time_s: f64,
    /// The model's context window: prompt plus answer never exceed it.
    pub max_context_tokens: u32,
}

impl Default for AgentSpec {
    /// A coding-agent shape sized for an 8k-context model: a 2,000-token system prompt with
    /// tools, a 200-token task, 10 to 30 turns of 300-token (median) tool results and 50-200
    /// token answers, tools running 1 s on average.
    fn default() -> Self {
        Self {
            sessions: 200,
            session_rate: 2.0,
            agents: 4,
            system_tokens: 2000,
            task_tokens: Length::LogNormal {
                median: 200.0,
                sigma: 0.6,
                min: 20,
                max: 1000,
            },
            turns: (10, 30),
            tool_result_tokens: Length::LogNormal {
                median: 300.0,
                sigma: 0.8,
                min: 10,
                max: 2000,
            },
            output_tokens: Length::Uniform { min: 50, max: 200 },
            tool_time_s: 1.0,
            max_context_tokens: 8000,
        }
    }
}

/// Agent sessions: turn 1 sends `system(agent) + task`; turn `k > 1` sends everything turn
/// `k - 1` sent, its answer, and the newest tool result.
pub fn agent_sessions(spec: &AgentSpec, seed: u64) -> Workload {
    let rng = Rng::new(seed);
    let agents = u64::from(spec.agents.max(1));
    let (lo, hi) = (spec.turns.0.max(1), spec.turns.1.max(spec.turns.0.max(1)));
    let mut requests = Vec::new();
    let mut start = 0.0;
    for _ in 0..spec.sessions {
        start += rng.exp(1.0 / spec.session_rate);
        let session = rng.u64();
        let agent = rng.0.below(agents);
        let mut history = Vec::new();
        if spec.system_tokens > 0 {
            history.push(Segment {
                seed: mix64(seed ^ mix64(0x4147_454e_5453 + agent)),
                tokens: spec.system_tokens,
            });
        }
        let mut context = spec.system_tokens;
        let turns = rng.length(Length::Uniform { min: lo, max: hi });
        let mut t = start;
        for turn in 0..turns {
            let added = Segment {
                seed: rng.u64(),
                tokens: rng
                    .length(if turn == 0 {
                        spec.task_tokens
                    } else {
                        spec.tool_result_tokens
                    })
                    .max(1),
            };
            let output = rng.length(spec.output_tokens).max(1);
            let output_seed = rng.u64();
            if context.saturating_add(added.tokens).saturating_add(output) > spec.max_context_tokens
            {
                break;
            }
            context += super::push_turn(
                &mut requests,
                &mut history,
                session,
                t,
                added,
                output,
                output_seed,
            );
            t += rng.exp(spec.tool_time_s);
        }
    }
    Workload::new(requests)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::{Prompt, WorkloadRequest};

    #[test]
    fn agent_turns_resend_history_with_answers_and_share_system_prompts() {
        let spec = AgentSpec::default();
        let w = agent_sessions(&spec, 3);
        assert_eq!(w, agent_sessions(&spec, 3));
        let segs = |r: &WorkloadRequest| match &r.prompt {
            Prompt::Segments(s) => s.clone(),
            Prompt::Text(_) => unreachable!(),
        };
        let first = w.requests[0].session;
        let turns: Vec<&WorkloadRequest> =
            w.requests.iter().filter(|r| r.session == first).collect();
        assert!(turns.len() >= 5, "{}", turns.len());
        for pair in turns.windows(2) {
            let (a, b) = (segs(pair[0]), segs(pair[1]));
            assert_eq!(b[..a.len()], a[..]);
            assert_eq!(b[a.len()].seed, pair[0].output_seed);
            assert_eq!(b.len(), a.len() + 2);
        }
        let mut systems: Vec<u64> = w.requests.iter().map(|r| segs(r)[0].seed).collect();
        systems.sort_unstable();
        systems.dedup();
        assert_eq!(systems.len(), 4);
        assert!(w.requests.iter().all(|r| {
            (50..=200).contains(&r.max_output_tokens)
                && r.prompt.tokens() + r.max_output_tokens <= spec.max_context_tokens
        }));
    }
}
