//! Workloads: timed requests for the virtual-time fleet, and seeded generators for the shapes
//! that matter to an LLM load balancer.
//!
//! - [`shared_prefix`]: a few long system prompts or documents, each shared by many users who
//!   append a short question — where prefix-aware routing pays most.
//! - [`multi_turn`]: chat sessions whose every turn resends the growing history (the previous
//!   turns' questions *and* the model's answers) — where session affinity pays.
//! - [`sharegpt_like`]: independent prompts with heavy-tailed (log-normal) lengths, like the
//!   ShareGPT set vLLM's benchmarks use — where plain load balancing is all there is to do.
//! - [`agent_sessions`] (in [`agent`]): tool-using agent sessions, a long system prompt with
//!   tool definitions and a history of tool results resent every turn, short answers.
//!
//! Arrivals are Poisson (exponential gaps) at a given rate; [`Workload::merge`] mixes shapes.
//! A prompt is a list of [`Segment`]s of synthetic text (see [`crate::tokenizer`]) or literal
//! text, so a shared prefix is the same segment in several prompts and a multi-turn history
//! includes the engine's own output (same seed, same length) and hits the blocks cached for it.
//! Everything is a pure function of the spec and the seed.

use serde::Serialize;
use switchyard_core::rng::SplitMix;

use crate::tokenizer::{mix64, push_synthetic, push_synthetic_text, token_count, tokenize_into};

pub mod agent;
pub use agent::{agent_sessions, AgentSpec};

/// A span of synthetic text: `tokens` tokens named by `seed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Segment {
    /// Names the text; equal seeds give equal text.
    pub seed: u64,
    /// Length in tokens (four bytes each).
    pub tokens: u32,
}

/// A request's prompt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Prompt {
    /// Literal text, e.g. from a trace file.
    Text(String),
    /// Synthetic text segments, in order.
    Segments(Vec<Segment>),
}

impl Prompt {
    /// Appends the prompt's text to `out`.
    pub fn render(&self, out: &mut String) {
        match self {
            Prompt::Text(t) => out.push_str(t),
            Prompt::Segments(segs) => {
                for s in segs {
                    push_synthetic_text(s.seed, s.tokens, out);
                }
            }
        }
    }

    /// Appends the prompt's text to `text` and its tokens to `tokens` in one pass (what
    /// [`render`](Self::render) then [`tokenize_into`] give).
    pub fn render_tokens(&self, text: &mut String, tokens: &mut Vec<u32>) {
        match self {
            Prompt::Text(t) => {
                text.push_str(t);
                tokenize_into(t, tokens);
            }
            Prompt::Segments(segs) => {
                for s in segs {
                    push_synthetic(s.seed, s.tokens, text, Some(tokens));
                }
            }
        }
    }

    /// Length in tokens.
    pub fn tokens(&self) -> u32 {
        match self {
            Prompt::Text(t) => u32::try_from(token_count(t)).unwrap_or(u32::MAX),
            Prompt::Segments(segs) => segs.iter().map(|s| s.tokens).sum(),
        }
    }
}

/// One request of a workload.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkloadRequest {
    /// When the client sends it, seconds from the start of the run.
    pub arrival: f64,
    /// The client's session (the gateway's session key), if it has one.
    pub session: Option<u64>,
    /// What it asks.
    pub prompt: Prompt,
    /// How many tokens it gets back (the engine never stops early).
    pub max_output_tokens: u32,
    /// Names the answer's text (see [`crate::SimRequest::output_seed`]).
    pub output_seed: u64,
}

/// Requests in arrival order.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Workload {
    /// Sorted by `arrival`.
    pub requests: Vec<WorkloadRequest>,
}

impl Workload {
    /// A workload from requests in any order (sorted stably by arrival).
    pub fn new(mut requests: Vec<WorkloadRequest>) -> Self {
        requests.sort_by(|a, b| a.arrival.total_cmp(&b.arrival));
        Self { requests }
    }

    /// Several workloads played at once.
    pub fn merge(parts: impl IntoIterator<Item = Workload>) -> Self {
        Self::new(parts.into_iter().flat_map(|w| w.requests).collect())
    }

    /// Number of requests.
    pub fn len(&self) -> usize {
        self.requests.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.requests.is_empty()
    }
}

/// A distribution of lengths in tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum Length {
    /// Always this many.
    Fixed(u32),
    /// Uniform in `min..=max`.
    Uniform {
        /// Smallest.
        min: u32,
        /// Largest.
        max: u32,
    },
    /// Log-normal with this median and shape (σ of the log), clamped to `min..=max`: the
    /// heavy tail of real prompt and answer lengths.
    LogNormal {
        /// Median length.
        median: f64,
        /// Standard deviation of `ln(length)`; 1.0 gives a mean of 1.65 × the median.
        sigma: f64,
        /// Smallest.
        min: u32,
        /// Largest.
        max: u32,
    },
}

/// Seeded draws over core's SplitMix.
struct Rng(SplitMix);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(SplitMix::new(seed))
    }

    fn u64(&self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in (0, 1].
    fn unit(&self) -> f64 {
        ((self.0.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    /// Exponential with this mean.
    fn exp(&self, mean: f64) -> f64 {
        -mean * self.unit().ln()
    }

    fn length(&self, d: Length) -> u32 {
        match d {
            Length::Fixed(n) => n,
            Length::Uniform { min, max } => {
                min + self.0.below(u64::from(max.saturating_sub(min)) + 1) as u32
            }
            Length::LogNormal {
                median,
                sigma,
                min,
                max,
            } => {
                // Box–Muller.
                let z = (-2.0 * self.unit().ln()).sqrt()
                    * (2.0 * std::f64::consts::PI * self.unit()).cos();
                let v = (median.max(1.0).ln() + sigma * z).exp().round();
                (v.clamp(f64::from(min), f64::from(max))) as u32
            }
        }
    }
}

/// Parameters of [`shared_prefix`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SharedPrefixSpec {
    /// Requests to generate.
    pub requests: usize,
    /// Mean arrivals per second.
    pub rate: f64,
    /// Distinct shared prefixes (system prompts, documents).
    pub groups: u32,
    /// Length of each shared prefix.
    pub prefix_tokens: u32,
    /// Users per group; each user is a session.
    pub users_per_group: u32,
    /// Popularity skew of the groups: group `g` (from 0) is drawn with weight `1 / (g + 1)^s`
    /// (Zipf). 0 makes them equally popular; real system prompts and documents are not: one
    /// product's assistant or one hot document draws most of the traffic.
    pub group_skew: f64,
    /// Each request's own question after the prefix.
    pub suffix_tokens: Length,
    /// Answer length.
    pub output_tokens: Length,
}

impl Default for SharedPrefixSpec {
    fn default() -> Self {
        Self {
            requests: 1000,
            rate: 10.0,
            groups: 8,
            prefix_tokens: 2000,
            users_per_group: 16,
            group_skew: 0.0,
            suffix_tokens: Length::Uniform { min: 20, max: 200 },
            output_tokens: Length::Uniform { min: 50, max: 300 },
        }
    }
}

/// Many users sharing a few long prefixes: each request is `prefix(group) + own question`,
/// its group drawn with the spec's skew and its user uniformly.
pub fn shared_prefix(spec: &SharedPrefixSpec, seed: u64) -> Workload {
    let rng = Rng::new(seed);
    let groups = u64::from(spec.groups.max(1));
    let users = u64::from(spec.users_per_group.max(1));
    let skew = if spec.group_skew.is_finite() {
        spec.group_skew.max(0.0)
    } else {
        0.0
    };
    let cumulative: Vec<f64> = (0..groups)
        .scan(0.0, |acc, g| {
            *acc += 1.0 / ((g + 1) as f64).powf(skew);
            Some(*acc)
        })
        .collect();
    let total = cumulative.last().copied().unwrap_or(1.0);
    let mut t = 0.0;
    let requests = (0..spec.requests)
        .map(|_| {
            t += rng.exp(1.0 / spec.rate);
            let u01 = rng.unit() * total;
            let g = cumulative
                .partition_point(|&c| c < u01)
                .min(cumulative.len() - 1) as u64;
            let u = rng.0.below(users);
            let prefix = Segment {
                seed: mix64(seed ^ mix64(0x5052_4546 + g)),
                tokens: spec.prefix_tokens,
            };
            let suffix = Segment {
                seed: rng.u64(),
                tokens: rng.length(spec.suffix_tokens).max(1),
            };
            WorkloadRequest {
                arrival: t,
                session: Some(mix64(seed ^ mix64(g * users + u))),
                prompt: Prompt::Segments(vec![prefix, suffix]),
                max_output_tokens: rng.length(spec.output_tokens).max(1),
                output_seed: rng.u64(),
            }
        })
        .collect();
    Workload::new(requests)
}

/// Parameters of [`multi_turn`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MultiTurnSpec {
    /// Chat sessions to generate.
    pub sessions: usize,
    /// Mean session starts per second.
    pub session_rate: f64,
    /// Turns per session, drawn uniformly in this range.
    pub turns: (u32, u32),
    /// A system prompt every session starts with (0 for none).
    pub system_tokens: u32,
    /// Each user message.
    pub user_tokens: Length,
    /// Each answer.
    pub output_tokens: Length,
    /// Mean time between a turn and the next (exponential), seconds. The workload is open
    /// loop: the next turn is sent at its time even if the answer is late.
    pub think_time_s: f64,
    /// A session ends before a turn would make prompt plus answer longer than this.
    pub max_context_tokens: u32,
}

impl Default for MultiTurnSpec {
    fn default() -> Self {
        Self {
            sessions: 200,
            session_rate: 2.0,
            turns: (2, 8),
            system_tokens: 300,
            user_tokens: Length::LogNormal {
                median: 60.0,
                sigma: 0.8,
                min: 4,
                max: 1000,
            },
            output_tokens: Length::LogNormal {
                median: 150.0,
                sigma: 0.7,
                min: 8,
                max: 1000,
            },
            think_time_s: 10.0,
            max_context_tokens: 8000,
        }
    }
}

/// Chat sessions: turn `k` sends the system prompt, every earlier question and answer, and a
/// new question.
pub fn multi_turn(spec: &MultiTurnSpec, seed: u64) -> Workload {
    let rng = Rng::new(seed);
    let system = Segment {
        seed: mix64(seed ^ 0x5359_5354_454d),
        tokens: spec.system_tokens,
    };
    let (lo, hi) = (spec.turns.0.max(1), spec.turns.1.max(spec.turns.0.max(1)));
    let mut requests = Vec::new();
    let mut start = 0.0;
    for _ in 0..spec.sessions {
        start += rng.exp(1.0 / spec.session_rate);
        let session = rng.u64();
        let turns = rng.length(Length::Uniform { min: lo, max: hi });
        let mut history: Vec<Segment> = Vec::new();
        if system.tokens > 0 {
            history.push(system);
        }
        let mut context: u32 = system.tokens;
        let mut t = start;
        for _ in 0..turns {
            let question = Segment {
                seed: rng.u64(),
                tokens: rng.length(spec.user_tokens).max(1),
            };
            let output = rng.length(spec.output_tokens).max(1);
            let output_seed = rng.u64();
            if context + question.tokens + output > spec.max_context_tokens {
                break;
            }
            context += push_turn(
                &mut requests,
                &mut history,
                session,
                t,
                question,
                output,
                output_seed,
            );
            t += rng.exp(spec.think_time_s);
        }
    }
    Workload::new(requests)
}

/// Parameters of [`sharegpt_like`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ShareGptSpec {
    /// Requests to generate.
    pub requests: usize,
    /// Mean arrivals per second.
    pub rate: f64,
    /// Prompt length.
    pub prompt_tokens: Length,
    /// Answer length.
    pub output_tokens: Length,
}

impl Default for ShareGptSpec {
    /// Lengths shaped like vLLM's ShareGPT benchmark set (means of about 250 prompt and 200
    /// answer tokens, long tails); approximate, not fitted.
    fn default() -> Self {
        Self {
            requests: 1000,
            rate: 10.0,
            prompt_tokens: Length::LogNormal {
                median: 150.0,
                sigma: 1.0,
                min: 4,
                max: 4000,
            },
            output_tokens: Length::LogNormal {
                median: 130.0,
                sigma: 0.9,
                min: 4,
                max: 2000,
            },
        }
    }
}

/// Independent single-turn requests with heavy-tailed lengths and no sessions.
pub fn sharegpt_like(spec: &ShareGptSpec, seed: u64) -> Workload {
    let rng = Rng::new(seed);
    let mut t = 0.0;
    let requests = (0..spec.requests)
        .map(|_| {
            t += rng.exp(1.0 / spec.rate);
            WorkloadRequest {
                arrival: t,
                session: None,
                prompt: Prompt::Segments(vec![Segment {
                    seed: rng.u64(),
                    tokens: rng.length(spec.prompt_tokens).max(1),
                }]),
                max_output_tokens: rng.length(spec.output_tokens).max(1),
                output_seed: rng.u64(),
            }
        })
        .collect();
    Workload::new(requests)
}

/// One turn of a session that resends its history: `added` joins the history, a request with
/// the whole history is sent at `t`, and its answer (`output` tokens drawn from `output_seed`)
/// joins the history for the next turn. Returns the tokens the turn added to the context.
pub(crate) fn push_turn(
    requests: &mut Vec<WorkloadRequest>,
    history: &mut Vec<Segment>,
    session: u64,
    t: f64,
    added: Segment,
    output: u32,
    output_seed: u64,
) -> u32 {
    history.push(added);
    requests.push(WorkloadRequest {
        arrival: t,
        session: Some(session),
        prompt: Prompt::Segments(history.clone()),
        max_output_tokens: output,
        output_seed,
    });
    history.push(Segment {
        seed: output_seed,
        tokens: output,
    });
    added.tokens + output
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generators_are_deterministic_and_sorted() {
        let a = sharegpt_like(&ShareGptSpec::default(), 1);
        assert_eq!(a, sharegpt_like(&ShareGptSpec::default(), 1));
        assert_ne!(a, sharegpt_like(&ShareGptSpec::default(), 2));
        let m = Workload::merge([
            a,
            shared_prefix(&SharedPrefixSpec::default(), 1),
            multi_turn(&MultiTurnSpec::default(), 1),
        ]);
        assert!(m.requests.windows(2).all(|w| w[0].arrival <= w[1].arrival));
    }

    #[test]
    fn poisson_rate_and_heavy_tail() {
        let w = sharegpt_like(
            &ShareGptSpec {
                requests: 5000,
                rate: 20.0,
                ..ShareGptSpec::default()
            },
            3,
        );
        let span = w.requests.last().unwrap().arrival;
        assert!((225.0..275.0).contains(&span), "{span}");
        let mut lens: Vec<u32> = w.requests.iter().map(|r| r.prompt.tokens()).collect();
        lens.sort_unstable();
        let median = lens[lens.len() / 2];
        let mean = lens.iter().map(|&l| f64::from(l)).sum::<f64>() / lens.len() as f64;
        assert!((130..170).contains(&median), "{median}");
        assert!(mean > 1.4 * f64::from(median), "{mean} vs {median}");
    }

    #[test]
    fn shared_prefix_groups_share_their_first_segment() {
        let w = shared_prefix(&SharedPrefixSpec::default(), 9);
        let mut firsts: Vec<u64> = w
            .requests
            .iter()
            .map(|r| match &r.prompt {
                Prompt::Segments(s) => s[0].seed,
                Prompt::Text(_) => unreachable!(),
            })
            .collect();
        firsts.sort_unstable();
        firsts.dedup();
        assert_eq!(firsts.len(), 8);
    }

    #[test]
    fn multi_turn_history_grows_and_includes_answers() {
        let w = multi_turn(&MultiTurnSpec::default(), 5);
        let first = w.requests[0].session;
        let turns: Vec<&WorkloadRequest> =
            w.requests.iter().filter(|r| r.session == first).collect();
        assert!(turns.len() >= 2);
        let segs = |r: &WorkloadRequest| match &r.prompt {
            Prompt::Segments(s) => s.clone(),
            Prompt::Text(_) => unreachable!(),
        };
        let (t0, t1) = (segs(turns[0]), segs(turns[1]));
        assert_eq!(t1[..t0.len()], t0[..]);
        assert_eq!(
            t1[t0.len()],
            Segment {
                seed: turns[0].output_seed,
                tokens: turns[0].max_output_tokens
            }
        );
        let mut text = String::new();
        turns[1].prompt.render(&mut text);
        assert_eq!(text.len(), 4 * turns[1].prompt.tokens() as usize);
        let (mut again, mut tokens) = (String::new(), Vec::new());
        turns[1].prompt.render_tokens(&mut again, &mut tokens);
        assert_eq!(again, text);
        assert_eq!(tokens, crate::tokenizer::tokenize(&text));
        assert!(w
            .requests
            .iter()
            .all(|r| r.prompt.tokens() + r.max_output_tokens <= 8000));
    }
}
