//! The live backend table that `switchyard demo` and `switchyard top` draw once a second:
//! redrawn in place on a terminal, one plain line per second otherwise.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::time::{Duration, Instant};

/// Draws a frame per tick on stdout: the table redrawn in place on a terminal, else a line.
pub struct Live {
    /// Stdout is a terminal.
    tty: bool,
    /// For the plain line's `t=`.
    started: Instant,
    /// Lines the last table took, to move back over.
    drawn: usize,
}

impl Live {
    /// Starts counting time now.
    pub fn new() -> Self {
        Self {
            tty: std::io::stdout().is_terminal(),
            started: Instant::now(),
            drawn: 0,
        }
    }

    /// Draws `rows`.
    pub fn draw(&mut self, rows: &[Row]) {
        let mut out = std::io::stdout().lock();
        if self.tty {
            let _ = out.write_all(table(rows, self.drawn).as_bytes());
            self.drawn = rows.len() + 1;
        } else {
            let _ = writeln!(out, "{}", line(self.started.elapsed(), rows));
        }
        let _ = out.flush();
    }
}

/// One backend's numbers for the table.
pub struct Row {
    /// Backend name.
    pub name: String,
    /// Requests it received (demo: the replica's count; top: finished through the gateway).
    pub requests: u64,
    /// Requests the gateway has in flight there.
    pub in_flight: u32,
    /// The engine's running queue.
    pub running: u32,
    /// The engine's waiting queue.
    pub waiting: u32,
    /// Mean time to first token, in milliseconds.
    pub ttft_ms: Option<f64>,
    /// Prefix-cache hit rate (0..1), when the engine reports it.
    pub hit_rate: Option<f64>,
    /// KV-cache use (0..1).
    pub kv: f64,
    /// GPU utilisation, percent.
    pub gpu_util: f64,
}

fn ttft(r: &Row) -> String {
    r.ttft_ms.map_or("-".into(), |t| format!("{t:.0}ms"))
}

fn hit(r: &Row) -> String {
    r.hit_rate
        .map_or("-".into(), |h| format!("{:.0}%", h * 100.0))
}

/// The table, redrawn in place over the `drawn` lines printed last time.
pub fn table(rows: &[Row], drawn: usize) -> String {
    let mut s = String::new();
    if drawn > 0 {
        let _ = write!(s, "\x1b[{drawn}A");
    }
    let _ = writeln!(
        s,
        "\x1b[2K\x1b[1m{:<8} {:>8} {:>9} {:>8} {:>8} {:>9} {:>10} {:>6} {:>6}\x1b[0m",
        "backend",
        "requests",
        "in-flight",
        "running",
        "waiting",
        "TTFT avg",
        "prefix hit",
        "KV",
        "GPU"
    );
    for r in rows {
        let _ = writeln!(
            s,
            "\x1b[2K{:<8} {:>8} {:>9} {:>8} {:>8} {:>9} {:>10} {:>5.1}% {:>5.0}%",
            r.name,
            r.requests,
            r.in_flight,
            r.running,
            r.waiting,
            ttft(r),
            hit(r),
            r.kv * 100.0,
            r.gpu_util
        );
    }
    s
}

/// One plain line per second, when stdout is not a terminal.
pub fn line(elapsed: Duration, rows: &[Row]) -> String {
    let mut s = format!("t={}s", elapsed.as_secs());
    for r in rows {
        let _ = write!(
            s,
            " | {} req={} inflight={} ttft={} hit={} kv={:.1}%",
            r.name,
            r.requests,
            r.in_flight,
            ttft(r),
            hit(r),
            r.kv * 100.0
        );
    }
    s
}
