//! What a reload or an admin change must leave alone, over real sockets: a kept backend's run
//! of health checks (a SIGHUP that changes nothing changes no check), and the scraper's
//! memory of backends that are gone.

use crate::admin_support::*;
use crate::support::sim::sample;
use crate::support::*;
use http::StatusCode;

async fn healthy(c: &Client, gw: &FileGw, backend: &str) -> f64 {
    let m = get(c, &gw.url("/metrics")).await.body;
    sample(
        &String::from_utf8_lossy(&m),
        &format!(r#"switchyard_backend_healthy{{backend="{backend}",model="m"}}"#),
    )
}

fn backend_line(name: &str, url: &str) -> String {
    format!("      - {{url: \"{url}\", name: {name}}}\n")
}

/// Before the fix, every reload and admin change restarted every check loop with fresh
/// counts (and an immediate check): a backend failing its checks was never marked down while
/// changes came faster than `unhealthy_threshold` checks.
#[tokio::test(start_paused = true)]
async fn a_kept_backends_run_of_failed_checks_survives_reloads_and_admin_changes() {
    let sick = Mock::start(Reply::Json(StatusCode::INTERNAL_SERVER_ERROR, "{}")).await;
    let well = Mock::start(Reply::Json(StatusCode::OK, OK_BODY)).await;
    let extra = Mock::start(Reply::Json(StatusCode::OK, OK_BODY)).await;
    let text = format!(
        "admin: {{token: {TOKEN}}}\nscrape: {{enabled: false}}\nmodels:\n  m:\n    health_check: {{interval: 1s, timeout: 1s, unhealthy_threshold: 3, healthy_threshold: 1}}\n    breaker: {{enabled: false}}\n    backends:\n{}{}",
        backend_line("sick", &sick.url()),
        backend_line("well", &well.url())
    );
    let file = TempConfig::new(&text);
    let gw = FileGw::start(&file).await;
    let c = client();
    let add = format!(r#"{{"url": "{}", "name": "extra"}}"#, extra.url());
    // After each check of `sick`, one change: a reload of the same file, adding a backend,
    // removing it. Three failed checks in a row mark it down, changes or not.
    let mut checks_until_down = None;
    for round in 0..6 {
        let checks = sick.count();
        eventually(|| sick.count() > checks).await;
        let a = match round % 3 {
            0 => admin(&c, "POST", &gw.admin_url("/admin/reload"), "").await,
            1 => admin(&c, "POST", &gw.admin_url("/admin/backends?model=m"), &add).await,
            _ => admin(&c, "DELETE", &gw.admin_url("/admin/backends/extra"), "").await,
        };
        assert!(a.status.is_success(), "{:?}", a.body);
        // Well within the 1 s to the next check.
        for _ in 0..12 {
            if healthy(&c, &gw, "sick").await == 0.0 {
                checks_until_down = Some(sick.count());
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        if checks_until_down.is_some() {
            break;
        }
    }
    assert_eq!(
        checks_until_down,
        Some(3),
        "failed checks before the backend was marked down"
    );
    assert_eq!(healthy(&c, &gw, "well").await, 1.0);
    // The down mark is the checks' alone: the next reload keeps it.
    let a = admin(&c, "POST", &gw.admin_url("/admin/reload"), "").await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(healthy(&c, &gw, "sick").await, 0.0);
}

/// Before the fix, a reload that changed nothing still restarted every check loop, so each
/// SIGHUP sent every checked backend an extra check at once and reset its counts.
///
/// Real clock: the SIGHUP comes from another process and reaches the runtime whenever the
/// kernel delivers it; a paused clock would race through the polls' time while it is on its
/// way. (Nothing here waits on a timer: the next check is an hour away.)
#[tokio::test]
async fn a_sighup_that_changes_nothing_changes_no_health_check() {
    let steady = Mock::start(Reply::Json(StatusCode::OK, OK_BODY)).await;
    let marker = Mock::start(Reply::Json(StatusCode::OK, OK_BODY)).await;
    let text = format!(
        "admin: {{token: {TOKEN}}}\nscrape: {{enabled: false}}\nmodels:\n  m:\n    health_check: {{interval: 1h}}\n    backends:\n{}",
        backend_line("steady", &steady.url())
    );
    let file = TempConfig::new(&text);
    let gw = FileGw::start_with(&file, |s| s.reload_on_sighup()).await;
    let c = client();
    // The first check runs at once; the next would be in an hour.
    eventually(|| steady.count() == 1).await;
    // The first two SIGHUPs find the file as it was read at start and install nothing; the
    // third finds a comment added, installs the same config again (generation 2), and the
    // kept backend's checks go on as they were.
    let reloads = |result: &str| gw.gw.metrics.reloads.with_label_values(&[result]).get();
    for n in 1..=3 {
        if n == 3 {
            file.write(&format!("# touched\n{text}"));
        }
        let hup = std::process::Command::new("kill")
            .args(["-HUP", &std::process::id().to_string()])
            .status()
            .unwrap();
        assert!(hup.success());
        eventually(|| reloads("applied") + reloads("unchanged") == n).await;
    }
    assert_eq!((reloads("applied"), reloads("unchanged")), (1, 2));
    assert_eq!(gw.gw.snapshot().generation, 2);
    // A backend added after the SIGHUPs is checked only once the checks have followed every
    // change before it.
    let add = format!(r#"{{"url": "{}", "name": "marker"}}"#, marker.url());
    let a = admin(&c, "POST", &gw.admin_url("/admin/backends?model=m"), &add).await;
    assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.body);
    eventually(|| marker.count() == 1).await;
    assert_eq!(steady.count(), 1, "checks of a backend nothing changed");
}

/// Before the fix, the scraper's backoff was kept per URL for ever: a removed backend's
/// entry stayed (a map that grows with every backend that ever came and went), and a backend
/// added at that URL again waited out the old one's backoff before its first scrape.
#[tokio::test]
async fn a_backend_removed_and_added_again_is_scraped_afresh() {
    let keep = Mock::start(Reply::Json(StatusCode::OK, OK_BODY)).await;
    // Its /metrics answers 404: every scrape fails and backs off, doubling from 10ms.
    let flaky = Mock::start(Reply::Json(StatusCode::OK, OK_BODY)).await;
    let fresh = Mock::start(Reply::Json(StatusCode::OK, OK_BODY)).await;
    let text = format!(
        "admin: {{token: {TOKEN}}}\nscrape: {{interval: 10ms}}\nmodels:\n  m:\n    backends:\n      - {{url: \"{}\", name: keep, metrics_url: none}}\n{}",
        keep.url(),
        backend_line("flaky", &flaky.url())
    );
    let file = TempConfig::new(&text);
    let gw = FileGw::start(&file).await;
    let c = client();
    // Five failures: the next scrape of this URL is 320 ms away, then 640 ms.
    eventually(|| flaky.scrapes() >= 5).await;
    let a = admin(&c, "DELETE", &gw.admin_url("/admin/backends/flaky"), "").await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    let before = flaky.scrapes();
    for (name, url) in [("flaky", flaky.url()), ("fresh", fresh.url())] {
        let add = format!(r#"{{"url": "{url}", "name": "{name}"}}"#);
        let a = admin(&c, "POST", &gw.admin_url("/admin/backends?model=m"), &add).await;
        assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.body);
    }
    // `fresh`'s second scrape comes a round after its first, and every round that scrapes
    // `fresh` also has the new `flaky`, so by then the new `flaky` was scraped.
    eventually(|| fresh.scrapes() >= 2).await;
    assert!(
        flaky.scrapes() > before,
        "the backend added again was not scraped in the rounds since"
    );
}
