//! What every result file carries and where it goes: the date, a machine line (cores, memory,
//! kernel, CPU model), the command that produced it and its seeds, written as Markdown and JSON
//! side by side under `bench/results/`, plus a progress line on stderr while a run goes.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// The header of every result file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunMeta {
    /// UTC date of the run, `YYYY-MM-DD`.
    pub date: String,
    /// UTC time the run started, `HH:MM`, so two runs of a day can be told apart.
    pub time_utc: String,
    /// Cores, memory, kernel and CPU model of the machine that ran it.
    pub machine: String,
    /// The command line that reproduces the run.
    pub command: String,
    /// Seeds used (empty for runs without randomness).
    pub seeds: Vec<u64>,
    /// Anything a reader must know to weigh the numbers (e.g. a busy machine).
    pub note: Option<String>,
}

impl RunMeta {
    /// Meta for a run starting now on this machine.
    pub fn now(command: String, seeds: Vec<u64>, note: Option<String>) -> Self {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let (date, time_utc) = utc_date_time(secs);
        Self {
            date,
            time_utc,
            machine: machine_line(),
            command,
            seeds,
            note,
        }
    }

    /// The Markdown lines that open a result file.
    pub fn markdown(&self) -> String {
        let mut s = format!(
            "- date: {} {} UTC\n- machine: {}\n- command: `{}`\n",
            self.date, self.time_utc, self.machine, self.command
        );
        if !self.seeds.is_empty() {
            let seeds: Vec<String> = self.seeds.iter().map(u64::to_string).collect();
            s.push_str(&format!("- seeds: {}\n", seeds.join(", ")));
        }
        if let Some(n) = &self.note {
            s.push_str(&format!("- note: {n}\n"));
        }
        s
    }
}

/// `(YYYY-MM-DD, HH:MM)` in UTC for seconds since the Unix epoch (civil-from-days, proleptic
/// Gregorian calendar).
pub fn utc_date_time(secs: u64) -> (String, String) {
    let rem = secs % 86_400;
    (
        switchyard_core::calendar::date_of(secs),
        format!("{:02}:{:02}", rem / 3600, rem % 3600 / 60),
    )
}

/// "Linux 6.1.0 x86_64, 2 cores (Intel Xeon ...), 24 GiB": what a reader needs to weigh
/// absolute numbers. Best effort: parts that cannot be read are left out.
pub fn machine_line() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0.0, |kb| kb as f64 / 1024.0 / 1024.0);
    format!(
        "{} {kernel} {}, {cores} cores ({cpu}), {mem_gib:.0} GiB memory",
        std::env::consts::OS,
        std::env::consts::ARCH
    )
}

/// Writes `<dir>/<stem>.md` and `<dir>/<stem>.json`, creating `dir`; returns both paths.
pub fn write_results(
    dir: &Path,
    stem: &str,
    markdown: &str,
    json: &impl Serialize,
) -> std::io::Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir)?;
    let md = dir.join(format!("{stem}.md"));
    let js = dir.join(format!("{stem}.json"));
    std::fs::write(&md, markdown)?;
    let text = serde_json::to_string_pretty(json).map_err(std::io::Error::other)?;
    std::fs::write(&js, text + "\n")?;
    Ok((md, js))
}

/// A one-line progress display on stderr: `[done/total] label (elapsed)`, redrawn in place.
/// Silent when `quiet` (tests).
#[derive(Debug)]
pub struct Progress {
    total: usize,
    done: usize,
    started: Instant,
    quiet: bool,
}

impl Progress {
    /// A progress line over `total` steps.
    pub fn new(total: usize, quiet: bool) -> Self {
        Self {
            total,
            done: 0,
            started: Instant::now(),
            quiet,
        }
    }

    /// Shows that `label` is running now.
    pub fn show(&self, label: &str) {
        if self.quiet {
            return;
        }
        let width = 24;
        let filled = (self.done * width).checked_div(self.total).unwrap_or(0);
        let bar: String = "#".repeat(filled) + &"-".repeat(width - filled.min(width));
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r\x1b[2K[{bar}] {}/{} {:>5.0}s  {label}",
            self.done,
            self.total,
            self.started.elapsed().as_secs_f64()
        );
        let _ = err.flush();
    }

    /// Marks one step done.
    pub fn step(&mut self) {
        self.done = (self.done + 1).min(self.total);
    }

    /// Ends the line.
    pub fn finish(&self) {
        if !self.quiet {
            eprintln!(
                "\r\x1b[2Kdone: {} steps in {:.1}s",
                self.done,
                self.started.elapsed().as_secs_f64()
            );
        }
    }

    /// Prints a message on its own line (above the progress line).
    pub fn note(&self, msg: &str) {
        if !self.quiet {
            eprintln!("\r\x1b[2K{msg}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates_across_leap_years_and_month_ends() {
        assert_eq!(utc_date_time(0), ("1970-01-01".into(), "00:00".into()));
        assert_eq!(utc_date_time(951_782_400).0, "2000-02-29");
        assert_eq!(
            utc_date_time(1_795_305_600 + 3_600 * 5 + 60 * 7),
            ("2026-11-22".into(), "05:07".into())
        );
    }

    #[test]
    fn meta_markdown_names_command_seeds_and_note() {
        let m = RunMeta {
            date: "2026-11-23".into(),
            time_utc: "18:00".into(),
            machine: "m".into(),
            command: "switchyard bench decisions".into(),
            seeds: vec![1, 2],
            note: Some("busy".into()),
        };
        let s = m.markdown();
        assert!(s.contains("`switchyard bench decisions`"));
        assert!(s.contains("seeds: 1, 2"));
        assert!(s.contains("note: busy"));
        assert!(machine_line().contains("cores"));
    }
}
