//! `switchyard serve` reloads its config file on SIGHUP: a valid change takes effect, a broken
//! file is logged with its line and column and the old config keeps serving, and SIGTERM
//! still ends the process cleanly.
#![cfg(unix)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Polls `cond` every 20 ms until it holds; fails after 10 s.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn get(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} failed");
}

const ONE: &str =
    "listen: 127.0.0.1:0\nmodels:\n  alpha:\n    backends:\n      - url: http://127.0.0.1:9\n";

#[test]
fn sighup_reloads_the_file_and_a_broken_one_keeps_the_old_config() {
    let path = std::env::temp_dir().join(format!("switchyard-sighup-{}.yaml", std::process::id()));
    std::fs::write(&path, ONE).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["serve", "--config"])
        .arg(&path)
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let reader = {
        let log = log.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                log.lock().unwrap().push(line);
            }
        })
    };
    let logged = |needle: &str| log.lock().unwrap().iter().any(|l| l.contains(needle));
    eventually("the listening line", || logged("switchyard listening"));
    let addr = {
        let lines = log.lock().unwrap();
        let line = lines
            .iter()
            .find(|l| l.contains("switchyard listening"))
            .unwrap();
        let at = line.find("http://").unwrap() + 7;
        line[at..].split('/').next().unwrap().to_owned()
    };
    assert!(get(&addr, "/v1/models").contains("\"alpha\""));

    // A valid change: a second model.
    std::fs::write(
        &path,
        format!("{ONE}  beta:\n    backends:\n      - url: http://127.0.0.1:9\n"),
    )
    .unwrap();
    signal(&child, "-HUP");
    eventually("beta after SIGHUP", || {
        get(&addr, "/v1/models").contains("\"beta\"")
    });

    // A broken file: logged with its place, the old config keeps serving.
    std::fs::write(
        &path,
        "models:\n  alpha:\n    backends:\n      - url: http://127.0.0.1:9\n        wieght: 2\n",
    )
    .unwrap();
    signal(&child, "-HUP");
    let place = format!("{}:5:9:", path.display());
    eventually("the rejection in the log", || logged(&place));
    assert!(logged("unknown field `wieght`"));
    let models = get(&addr, "/v1/models");
    assert!(
        models.contains("\"alpha\"") && models.contains("\"beta\""),
        "{models}"
    );

    signal(&child, "-TERM");
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    reader.join().unwrap();
    let _ = std::fs::remove_file(&path);
}
