//! Child processes of an overhead run (the mock, Switchyard, peer proxies) and what `/proc`
//! says about them. Each child gets its own process group, so a proxy's worker processes are
//! measured with it and stopped with it: [`Proc`] sends SIGTERM to the group when dropped
//! (also on errors and when the run is cancelled by Ctrl-C), waits a bounded time, then
//! SIGKILL. Processes are only ever signalled by their own group id.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A started child process group, stopped when dropped.
#[derive(Debug)]
pub struct Proc {
    /// Name for messages.
    pub name: String,
    child: Child,
}

impl Proc {
    /// Starts `cmd` in a new process group with stdout and stderr going to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> std::io::Result<Proc> {
        use std::os::unix::process::CommandExt;
        let out = std::fs::File::create(log)?;
        let err = out.try_clone()?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .process_group(0);
        let child = cmd.spawn()?;
        Ok(Proc {
            name: name.to_owned(),
            child,
        })
    }

    /// The leader's pid (also the group id).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Some(status)` if the leader has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Live processes of its group.
    pub fn group(&self) -> Vec<u32> {
        group_members(self.pid())
    }

    /// Resident memory now, summed over the group, KiB.
    pub fn rss_kib(&self) -> u64 {
        self.group().iter().map(|&p| status_kib(p, "VmRSS:")).sum()
    }

    /// Peak resident memory, summed over the group's live processes, KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        self.group().iter().map(|&p| status_kib(p, "VmHWM:")).sum()
    }

    /// CPU clock ticks (user + system) used so far by the group's live processes.
    pub fn cpu_ticks(&self) -> u64 {
        self.group().iter().map(|&p| stat_ticks(p)).sum()
    }

    fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([sig, "--", &format!("-{}", self.pid())])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.exited().is_some() && self.group().is_empty() {
            return;
        }
        self.signal("-TERM");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.exited().is_some() && self.group().is_empty() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.signal("-KILL");
        let _ = self.child.wait();
    }
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux unless told otherwise).
pub fn ticks_per_second() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// Fields of `/proc/PID/stat` after the command name (which may contain spaces).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// utime + stime of one process, ticks.
fn stat_ticks(pid: u32) -> u64 {
    // After the name: state(0) ppid(1) pgrp(2) ... utime(11) stime(12).
    stat_fields(pid).map_or(0, |f| {
        let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        n(11) + n(12)
    })
}

/// A `kB` line of `/proc/PID/status`, KiB (0 if absent).
fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Live (not zombie) processes whose process group is `pgid`.
fn group_members(pgid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            stat_fields(pid).is_some_and(|f| {
                f.first().is_some_and(|s| s != "Z") && f.get(2) == Some(&pgid.to_string())
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_group_is_measured_and_stopped_when_dropped() {
        let dir = std::env::temp_dir();
        let log = dir.join(format!("switchyard-bench-proc-{}.log", std::process::id()));
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "sleep 30 & sleep 30"]);
        let p = Proc::spawn("sleeper", cmd, &log).unwrap();
        let pid = p.pid();
        let deadline = Instant::now() + Duration::from_secs(5);
        while p.group().len() < 3 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(p.group().len(), 3, "sh and its two sleeps");
        assert!(p.rss_kib() > 0 && p.peak_rss_kib() >= p.rss_kib() / 2);
        drop(p);
        assert!(group_members(pid).is_empty(), "the whole group is gone");
        let _ = std::fs::remove_file(log);
        assert!(ticks_per_second() > 0);
    }
}
