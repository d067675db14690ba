//! Hot reload: under load against simulated vLLM replicas a changed pool takes effect with no
//! failed request; a broken file is rejected with the same message as `switchyard check` and
//! the old config keeps serving; backends that survive keep their live state.

use crate::admin_support::*;
use crate::support::*;
use http::StatusCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use switchyard_sim::http::{Replica, ReplicaConfig};
use tokio::sync::Notify;

async fn replica(seed: u64) -> Replica {
    let mut cfg = ReplicaConfig::from_profile(&switchyard_sim::profile::h100_llama3_8b());
    cfg.model = "m".into();
    cfg.time_scale = 20.0;
    cfg.seed = seed;
    Replica::start(cfg, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// A config with the admin API on the main listener, one model `m` over `(name, url)`.
fn named(policy: &str, backends: &[(&str, String)]) -> String {
    let mut s =
        format!("admin: {{token: {TOKEN}}}\nmodels:\n  m:\n    policy: {policy}\n    backends:\n");
    for (name, url) in backends {
        s.push_str(&format!("      - {{url: \"{url}\", name: {name}}}\n"));
    }
    s
}

/// One request of the load: the reload phase when it started, and how it ended.
#[derive(Debug)]
struct Outcome {
    phase: u64,
    status: StatusCode,
    backend: String,
    complete: bool,
}

/// Clients sending a mix of streaming and whole requests until told to stop.
struct Load {
    stop: Arc<AtomicBool>,
    phase: Arc<AtomicU64>,
    done: Arc<Mutex<Vec<Outcome>>>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(url: String, workers: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let phase = Arc::new(AtomicU64::new(0));
        let done = Arc::new(Mutex::new(Vec::new()));
        let workers = (0..workers)
            .map(|w| {
                let (url, stop, phase, done) =
                    (url.clone(), stop.clone(), phase.clone(), done.clone());
                tokio::spawn(async move {
                    let c = client();
                    let mut i = w;
                    while !stop.load(Ordering::SeqCst) {
                        let stream = i % 2 == 0;
                        i += 1;
                        let body = format!(
                            r#"{{"model":"m","messages":[{{"role":"user","content":"reload {i}"}}],"max_tokens":8,"stream":{stream}}}"#
                        );
                        let started_in = phase.load(Ordering::SeqCst);
                        let a = post(&c, &url, &body, &[]).await;
                        let text = String::from_utf8_lossy(&a.body);
                        let complete = if stream {
                            text.ends_with("data: [DONE]\n\n") && !text.contains("\"error\"")
                        } else {
                            a.json()["choices"][0]["message"]["content"]
                                .as_str()
                                .is_some_and(|t| t.len() == 32)
                        };
                        done.lock().unwrap().push(Outcome {
                            phase: started_in,
                            status: a.status,
                            backend: a
                                .headers
                                .get("x-switchyard-backend")
                                .map(|v| v.to_str().unwrap().to_owned())
                                .unwrap_or_default(),
                            complete,
                        });
                    }
                })
            })
            .collect();
        Load {
            stop,
            phase,
            done,
            workers,
        }
    }

    async fn wait_for_phase(&self, phase: u64, n: usize) {
        eventually(|| {
            self.done
                .lock()
                .unwrap()
                .iter()
                .filter(|o| o.phase == phase)
                .count()
                >= n
        })
        .await;
    }

    async fn finish(self) -> Vec<Outcome> {
        self.stop.store(true, Ordering::SeqCst);
        for w in self.workers {
            w.await.unwrap();
        }
        std::mem::take(&mut *self.done.lock().unwrap())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_with_a_changed_pool_fails_no_request() {
    let (r0, r1, r2) = (replica(1).await, replica(2).await, replica(3).await);
    let file = TempConfig::new(&named("round_robin", &[("r0", r0.url()), ("r1", r1.url())]));
    let gw = FileGw::start(&file).await;
    let c = client();
    let load = Load::start(gw.url("/v1/chat/completions"), 6);
    load.wait_for_phase(0, 30).await;

    // r0 leaves, r2 joins, and the policy changes.
    file.write(&named(
        "least_connections",
        &[("r1", r1.url()), ("r2", r2.url())],
    ));
    let a = admin(&c, "POST", &gw.admin_url("/admin/reload"), "").await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    let o = a.json();
    assert_eq!(o["added"], serde_json::json!(["m/r2"]));
    assert_eq!(o["removed"], serde_json::json!(["m/r0"]));
    assert_eq!(
        (o["kept"].clone(), o["generation"].clone()),
        (1.into(), 2.into())
    );
    load.phase.store(1, Ordering::SeqCst);
    load.wait_for_phase(1, 30).await;

    // r0 comes back. Requests that start while this reload runs may see either config.
    load.phase.store(9, Ordering::SeqCst);
    file.write(&named(
        "round_robin",
        &[("r0", r0.url()), ("r1", r1.url()), ("r2", r2.url())],
    ));
    let a = admin(&c, "POST", &gw.admin_url("/admin/reload"), "").await;
    assert_eq!(a.json()["added"], serde_json::json!(["m/r0"]));
    load.phase.store(2, Ordering::SeqCst);
    load.wait_for_phase(2, 30).await;

    let outcomes = load.finish().await;
    let failed: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.status != StatusCode::OK || !o.complete)
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} failed: {failed:?}",
        failed.len(),
        outcomes.len()
    );
    let used = |phase: u64, name: &str| {
        outcomes
            .iter()
            .any(|o| o.phase == phase && o.backend == name)
    };
    assert!(
        !used(1, "r0"),
        "a request started after r0 was removed went to r0"
    );
    assert!(used(0, "r0") && used(1, "r2") && used(2, "r0"));
}

#[tokio::test]
async fn reload_with_a_broken_file_is_rejected_with_its_line_and_the_old_config_serves() {
    let up = Mock::start(Reply::Json(StatusCode::OK, OK_BODY)).await;
    let file = TempConfig::new(&admin_config(&[up.url()], ""));
    let gw = FileGw::start(&file).await;
    let c = client();
    let broken = format!(
        "admin: {{token: {TOKEN}}}\nmodels:\n  m:\n    backends:\n      - url: {}\n        wieght: 2\n",
        up.url()
    );
    file.write(&broken);
    let check = switchyard_gateway::config::load(&file.path)
        .unwrap_err()
        .to_string();
    assert!(
        check.starts_with(&format!("{}:6:9: ", file.file_name())),
        "{check}"
    );
    let a = admin(&c, "POST", &gw.admin_url("/admin/reload"), "").await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.error_code(), "invalid_config");
    let msg = a.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(msg.ends_with(&check), "{msg}");
    assert!(msg.contains("running config is unchanged"), "{msg}");

    // A missing file is refused too.
    std::fs::remove_file(&file.path).unwrap();
    let a = admin(&c, "POST", &gw.admin_url("/admin/reload"), "").await;
    assert_eq!(a.error_code(), "invalid_config");
    assert!(a.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("cannot read the config file"));

    // The old config still serves.
    let r = post(&c, &gw.url("/v1/chat/completions"), CHAT, &[]).await;
    assert_eq!((r.status, r.backend()), (StatusCode::OK, "b0".to_owned()));
    let list = admin(&c, "GET", &gw.admin_url("/admin/backends"), "")
        .await
        .json();
    assert_eq!(list["generation"], 1);
    assert_eq!(backend_in(&list, "m", "b0")["url"], up.url());
}

#[tokio::test]
async fn backends_that_survive_a_reload_keep_their_live_state() {
    let release = Arc::new(Notify::new());
    let held = Mock::start(Reply::HoldUntil(release.clone())).await;
    let (b1, b2) = (
        Mock::start(Reply::Json(StatusCode::OK, OK_BODY)).await,
        Mock::start(Reply::Json(StatusCode::OK, OK_BODY)).await,
    );
    let file = TempConfig::new(&named(
        "round_robin",
        &[("held", held.url()), ("b1", b1.url())],
    ));
    let gw = Arc::new(FileGw::start(&file).await);
    let c = client();
    let mut running = Vec::new();
    for _ in 0..2 {
        let gw = gw.clone();
        running.push(tokio::spawn(async move {
            post(&client(), &gw.url("/v1/chat/completions"), CHAT, &[]).await
        }));
    }
    eventually(|| held.count() == 1 && b1.count() == 1).await;
    let a = admin(&c, "POST", &gw.admin_url("/admin/backends/b1/drain"), "").await;
    assert_eq!(a.json()["state"], "drained");

    // `held` changes weight, b1 stays as it is, b2 joins.
    file.write(&format!(
        "admin: {{token: {TOKEN}}}\nmodels:\n  m:\n    backends:\n      - {{url: \"{}\", name: held, weight: 3}}\n      - {{url: \"{}\", name: b1}}\n      - {{url: \"{}\", name: b2}}\n",
        held.url(),
        b1.url(),
        b2.url()
    ));
    let a = admin(&c, "POST", &gw.admin_url("/admin/reload"), "").await;
    assert_eq!(
        (a.json()["kept"].clone(), a.json()["added"].clone()),
        (2.into(), serde_json::json!(["m/b2"]))
    );
    let list = admin(&c, "GET", &gw.admin_url("/admin/backends"), "")
        .await
        .json();
    let h = backend_in(&list, "m", "held");
    assert_eq!(
        (h["in_flight"].clone(), h["weight"].clone()),
        (1.into(), 3.into())
    );
    assert_eq!(backend_in(&list, "m", "b1")["state"], "drained");
    assert_eq!(backend_in(&list, "m", "b2")["state"], "up");

    // The request that started before the reload finishes, and the new snapshot sees its
    // slot released: the same counter.
    release.notify_waiters();
    for r in running {
        assert_eq!(r.await.unwrap().status, StatusCode::OK);
    }
    let list = admin(&c, "GET", &gw.admin_url("/admin/backends"), "")
        .await
        .json();
    assert_eq!(backend_in(&list, "m", "held")["in_flight"], 0);
}

#[tokio::test]
async fn a_reload_keeps_warm_upstream_connections() {
    let up = Mock::start(Reply::Json(StatusCode::OK, OK_BODY)).await;
    // Engine scrapes would share the connection pool; this test counts the requests' own.
    let no_scrape = |pool: &str| admin_config(&[up.url()], pool) + "scrape: {enabled: false}\n";
    let file = TempConfig::new(&no_scrape(""));
    let gw = FileGw::start(&file).await;
    let c = client();
    for _ in 0..3 {
        post(&c, &gw.url("/v1/chat/completions"), CHAT, &[]).await;
    }
    // A change that keeps the connect timeout: the pooled connection stays in use.
    file.write(&no_scrape("policy: least_connections"));
    let a = admin(&c, "POST", &gw.admin_url("/admin/reload"), "").await;
    assert_eq!(a.status, StatusCode::OK);
    for _ in 0..3 {
        let r = post(&c, &gw.url("/v1/chat/completions"), CHAT, &[]).await;
        assert_eq!(r.status, StatusCode::OK);
    }
    let conns = up.connections.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(conns, 1, "the reload dropped the upstream connection pool");
}

/// `switchyard_backend_healthy{model="m",backend=NAME}` from `/metrics`, if exported.
async fn healthy_gauge(c: &Client, gw: &FileGw, name: &str) -> Option<String> {
    backend_gauge(c, gw, "healthy", name).await
}

/// `switchyard_backend_WHAT{model="m",backend=NAME}` from `/metrics`, if exported.
async fn backend_gauge(c: &Client, gw: &FileGw, what: &str, name: &str) -> Option<String> {
    let page = get(c, &gw.url("/metrics")).await;
    let text = String::from_utf8_lossy(&page.body).into_owned();
    let needle = format!("switchyard_backend_{what}{{backend=\"{name}\",model=\"m\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&needle).map(str::to_owned))
}

#[tokio::test]
async fn health_checks_follow_a_reload_to_the_backends_it_adds() {
    let good = Mock::start(Reply::Json(StatusCode::OK, OK_BODY)).await;
    let sick = Mock::start(Reply::Json(StatusCode::SERVICE_UNAVAILABLE, "{}")).await;
    let check = "health_check: {interval: 20ms, unhealthy_threshold: 1}";
    let file = TempConfig::new(&admin_config(&[good.url()], check));
    let gw = FileGw::start(&file).await;
    let c = client();
    // The reload adds a backend whose health path answers 503: only a checker that follows
    // the new snapshot marks it down.
    file.write(&admin_config(&[good.url(), sick.url()], check));
    let a = admin(&c, "POST", &gw.admin_url("/admin/reload"), "").await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    for _ in 0..500 {
        if healthy_gauge(&c, &gw, "b1").await.as_deref() == Some("0") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(healthy_gauge(&c, &gw, "b1").await.as_deref(), Some("0"));
    assert_eq!(healthy_gauge(&c, &gw, "b0").await.as_deref(), Some("1"));
    for _ in 0..6 {
        let r = post(&c, &gw.url("/v1/chat/completions"), CHAT, &[]).await;
        assert_eq!(r.backend(), "b0", "the backend marked down gets no traffic");
    }
}

/// A backend a reload keeps is judged by the new pool's outlier detector: ejection after 50
/// failures in a row before the reload, after 2 once it is done, and the failing backend is
/// ejected after the reload (it stayed with the old detector, and in, before the fix).
#[tokio::test]
async fn a_kept_backend_follows_the_reloaded_pools_outlier_detection() {
    let bad = Mock::start(Reply::Json(StatusCode::INTERNAL_SERVER_ERROR, "{}")).await;
    let good = Mock::start(Reply::Json(StatusCode::OK, OK_BODY)).await;
    let urls = [bad.url(), good.url()];
    let pool = |n: u32| {
        format!(
            "policy: round_robin\n    breaker: {{enabled: false}}\n    outlier_detection: {{consecutive_failures: {n}}}"
        )
    };
    let file = TempConfig::new(&admin_config(&urls, &pool(50)));
    let gw = FileGw::start(&file).await;
    let c = client();
    let url = gw.url("/v1/chat/completions");
    let send = || post(&c, &url, CHAT, &[]);
    for _ in 0..4 {
        assert_eq!(send().await.status, StatusCode::OK);
    }
    assert!(bad.count() >= 2);
    assert_eq!(
        backend_gauge(&c, &gw, "ejected", "b0").await.as_deref(),
        Some("0")
    );

    file.write(&admin_config(&urls, &pool(2)));
    let a = admin(&c, "POST", &gw.admin_url("/admin/reload"), "").await;
    assert_eq!(a.json()["kept"], 2);
    let before = bad.count();
    for _ in 0..8 {
        assert_eq!(send().await.status, StatusCode::OK);
    }
    // Its failure run carries over (at least 2 before the reload), so the first failure
    // under the new threshold ejects it.
    assert!(bad.count() > before, "b0 was tried after the reload");
    assert_eq!(
        backend_gauge(&c, &gw, "ejected", "b0").await.as_deref(),
        Some("1")
    );
}

/// A reload that turns a kept backend's breaker on, or changes it, applies to that backend:
/// with the breaker off a failing backend stays closed; after the reload turns it on
/// (3 failures), it opens.
#[tokio::test]
async fn a_kept_backend_follows_the_reloaded_pools_breaker_settings() {
    let bad = Mock::start(Reply::Json(StatusCode::INTERNAL_SERVER_ERROR, "{}")).await;
    let good = Mock::start(Reply::Json(StatusCode::OK, OK_BODY)).await;
    let urls = [bad.url(), good.url()];
    let no_outlier = "outlier_detection: {enabled: false}";
    let file = TempConfig::new(&admin_config(
        &urls,
        &format!("policy: round_robin\n    breaker: {{enabled: false}}\n    {no_outlier}"),
    ));
    let gw = FileGw::start(&file).await;
    let c = client();
    let url = gw.url("/v1/chat/completions");
    let send = || post(&c, &url, CHAT, &[]);
    for _ in 0..8 {
        assert_eq!(send().await.status, StatusCode::OK);
    }
    assert!(bad.count() >= 4);
    assert_eq!(
        backend_gauge(&c, &gw, "breaker_state", "b0")
            .await
            .as_deref(),
        Some("0")
    );

    file.write(&admin_config(
        &urls,
        &format!(
            "policy: round_robin\n    breaker: {{failures: 3, window: 60s, open_for: 60s}}\n    {no_outlier}"
        ),
    ));
    let a = admin(&c, "POST", &gw.admin_url("/admin/reload"), "").await;
    assert_eq!(a.json()["kept"], 2);
    for _ in 0..8 {
        assert_eq!(send().await.status, StatusCode::OK);
    }
    assert_eq!(
        backend_gauge(&c, &gw, "breaker_state", "b0")
            .await
            .as_deref(),
        Some("1"),
        "open"
    );
}

#[tokio::test]
async fn reloading_an_unchanged_file_installs_nothing_unless_the_api_changed_the_config() {
    let up = Mock::start(Reply::Json(StatusCode::OK, OK_BODY)).await;
    let file = TempConfig::new(&named("round_robin", &[("b0", up.url())]));
    let gw = FileGw::start(&file).await;
    let c = client();
    let url = gw.admin_url("/admin/reload");
    let reload = || admin(&c, "POST", &url, "");
    let generation = |a: Answer| a.json()["generation"].as_u64().unwrap();

    // The file as it was read at start: nothing to install.
    let first = reload().await.json();
    assert_eq!(first["generation"], 1, "{first}");
    assert_eq!(first["unchanged"], true);
    let again = reload().await.json();
    assert_eq!(
        again["generation"], 1,
        "the same text again: nothing installed"
    );
    assert_eq!(again["kept"], 1);
    assert_eq!(again["unchanged"], true);
    assert_eq!(again["added"], serde_json::json!([]));

    // A change through the API moves the generation: the same text is installed again, so
    // the file is what runs.
    let added = admin(
        &c,
        "POST",
        &gw.admin_url("/admin/backends?model=m"),
        &format!(r#"{{"url":"{}","name":"b9"}}"#, up.url()),
    )
    .await;
    assert_eq!(added.status, StatusCode::CREATED, "{:?}", added.body);
    let back = reload().await.json();
    assert_eq!(back["generation"], 3, "{back}");
    assert_eq!(back["removed"], serde_json::json!(["m/b9"]));

    file.write(&named("least_connections", &[("b0", up.url())]));
    assert_eq!(generation(reload().await), 4, "a changed file is installed");
}
