//! Routes over real sockets: aliases rename, rules send by header, content and prompt size,
//! splits keep each user on one arm, mirrors copy to a shadow pool without touching the
//! client's answer, `x-switchyard-route` says what matched, and a reload changes the routes.

use crate::admin_support::*;
use crate::support::conf::{Conf, Pool};
use crate::support::*;
use http::StatusCode;
use serde_json::json;
use std::collections::HashMap;

/// One pool per name, each over its own mock named like the pool.
async fn pools(names: &[&str], reply: Reply) -> (Conf, HashMap<String, Mock>) {
    let mut conf = Conf::new().no_scrape();
    let mut mocks = HashMap::new();
    for name in names {
        let m = Mock::start(reply.clone()).await;
        conf = conf.model(
            name,
            Pool::default().backend(json!({"url": m.url(), "name": name})),
        );
        mocks.insert((*name).to_owned(), m);
    }
    (conf, mocks)
}

fn chat(model: &str, text: &str, user: Option<&str>) -> String {
    json!({"model": model, "user": user, "messages": [{"role": "user", "content": text}]})
        .to_string()
}

fn route_header(a: &Answer) -> String {
    a.headers
        .get("x-switchyard-route")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn an_alias_serves_from_its_pool_with_the_pools_model_name_and_is_listed() {
    let (conf, mocks) = pools(&["llama-70b"], Reply::Json(StatusCode::OK, OK_BODY)).await;
    let gw = Gw::with(conf.set("routes", json!({"aliases": {"gpt-4o": "llama-70b"}}))).await;
    let c = client();
    let a = post(
        &c,
        &gw.url("/v1/chat/completions"),
        &chat("gpt-4o", "hi", None),
        &[],
    )
    .await;
    assert_eq!(
        (a.status, a.backend()),
        (StatusCode::OK, "llama-70b".to_owned())
    );
    assert_eq!(route_header(&a), "route: alias pool=llama-70b");
    let sent: serde_json::Value = serde_json::from_slice(&mocks["llama-70b"].last().body).unwrap();
    assert_eq!(sent["model"], "llama-70b");
    let listed = get(&c, &gw.url("/v1/models")).await.json();
    let ids: Vec<&str> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["gpt-4o", "llama-70b"]);
    // A name that is neither a model nor an alias is still a 404 naming both.
    let a = post(
        &c,
        &gw.url("/v1/chat/completions"),
        &chat("gpt-5", "hi", None),
        &[],
    )
    .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert!(a.body_text().contains("gpt-4o"), "{}", a.body_text());
}

#[tokio::test]
async fn rules_match_in_order_by_header_content_and_prompt_size() {
    let (conf, _mocks) = pools(
        &["m", "long", "research", "code"],
        Reply::Json(StatusCode::OK, OK_BODY),
    )
    .await;
    let routes = json!({"rules": [
        {"name": "long-prompts", "when": {"prompt_tokens": {"above": 500}}, "to": "long"},
        {"name": "team", "when": {"header": {"x-team": "research*"}}, "to": "research"},
        {"name": "coding", "when": {"content": {"keywords": ["rust", "python"]}}, "to": "code"},
    ]});
    let gw = Gw::with(conf.set("routes", routes)).await;
    let c = client();
    let url = gw.url("/v1/chat/completions");
    let long = "word ".repeat(600);
    for (text, headers, pool, rule) in [
        ("hello", vec![], "m", ""),
        (
            "hello",
            vec![("x-team", "research-nlp")],
            "research",
            "route: rule=team pool=research",
        ),
        (
            "fix my Rust borrow error",
            vec![],
            "code",
            "route: rule=coding pool=code",
        ),
        // The earlier rule wins when two match.
        (
            "fix my rust code",
            vec![("x-team", "research")],
            "research",
            "route: rule=team pool=research",
        ),
        (
            long.as_str(),
            vec![("x-team", "research")],
            "long",
            "route: rule=long-prompts pool=long",
        ),
    ] {
        let a = post(&c, &url, &chat("m", text, None), &headers).await;
        assert_eq!(
            (a.status, a.backend()),
            (StatusCode::OK, pool.to_owned()),
            "{text:.20} {headers:?}"
        );
        assert_eq!(route_header(&a), rule);
    }
    let m = crate::support::sim::metrics(&gw).await;
    assert!(
        m.contains(r#"switchyard_routed_total{model="code",rule="coding"} 1"#),
        "{m}"
    );
}

#[tokio::test]
async fn a_split_keeps_every_user_on_one_arm_and_uses_both() {
    let (conf, _mocks) = pools(
        &["m", "blue", "green"],
        Reply::Json(StatusCode::OK, OK_BODY),
    )
    .await;
    let routes = json!({"rules": [{"name": "canary", "when": {"model": "m"},
        "split": [{"to": "blue", "weight": 50}, {"to": "green", "weight": 50}]}]});
    let gw = Gw::with(conf.set("routes", routes)).await;
    let c = client();
    let url = gw.url("/v1/chat/completions");
    let mut arms: HashMap<String, usize> = HashMap::new();
    for u in 0..40 {
        let user = format!("user-{u}");
        let first = post(&c, &url, &chat("m", "one", Some(&user)), &[])
            .await
            .backend();
        let again = post(&c, &url, &chat("m", "two", Some(&user)), &[]).await;
        assert_eq!(again.backend(), first, "{user} moved arms");
        assert!(
            route_header(&again).starts_with("route: rule=canary arm="),
            "{}",
            route_header(&again)
        );
        *arms.entry(first).or_default() += 1;
    }
    assert_eq!(arms.len(), 2, "40 users all on one arm: {arms:?}");
}

/// Model `m` over `main` and model `shadow` over `shadow`, each one backend named so.
fn main_and_shadow(main: &Mock, shadow: &Mock) -> Conf {
    Conf::new()
        .no_scrape()
        .model(
            "m",
            Pool::default().backend(json!({"url": main.url(), "name": "main"})),
        )
        .model(
            "shadow",
            Pool::default().backend(json!({"url": shadow.url(), "name": "shadow"})),
        )
}

#[tokio::test]
async fn a_mirror_never_delays_or_alters_the_clients_answer() {
    // The shadow never answers: a client waiting on it would hang.
    let main = Mock::start(Reply::Json(StatusCode::OK, OK_BODY)).await;
    let shadow = Mock::start(Reply::Hang).await;
    let conf = main_and_shadow(&main, &shadow);
    let plain = Gw::with(conf.clone()).await;
    let mirrored = Gw::with(conf.set(
        "routes",
        json!({"rules": [{"name": "copy", "mirror": {"to": "shadow", "sample": 1.0}}]}),
    ))
    .await;
    let c = client();
    let body = chat("m", "hello", None);
    let want = post(&c, &plain.url("/v1/chat/completions"), &body, &[]).await;
    for _ in 0..3 {
        let got = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            post(&c, &mirrored.url("/v1/chat/completions"), &body, &[]),
        )
        .await
        .expect("the client's answer waited for the shadow");
        assert_eq!((got.status, &got.body), (want.status, &want.body));
        assert_eq!(got.backend(), "main");
        assert_eq!(route_header(&got), "route: pool=m mirror=shadow");
    }
    // The copies did reach the shadow, with the shadow's model name.
    eventually(|| shadow.count() == 3).await;
    let sent: serde_json::Value = serde_json::from_slice(&shadow.last().body).unwrap();
    assert_eq!(sent["model"], "shadow");
    assert!(shadow.last().headers["x-request-id"]
        .to_str()
        .unwrap()
        .ends_with("-mirror"));
}

#[tokio::test]
async fn a_failing_shadow_is_counted_and_the_client_still_gets_its_answer() {
    let main = Mock::start(Reply::Json(StatusCode::OK, OK_BODY)).await;
    let shadow = Mock::start(Reply::Json(
        StatusCode::BAD_REQUEST,
        r#"{"error":{"message":"no"}}"#,
    ))
    .await;
    let conf = main_and_shadow(&main, &shadow).set(
        "routes",
        json!({"rules": [{"name": "copy", "mirror": {"to": "shadow"}}]}),
    );
    let gw = Gw::with(conf).await;
    let a = post(
        &client(),
        &gw.url("/v1/chat/completions"),
        &chat("m", "hi", None),
        &[],
    )
    .await;
    assert_eq!((a.status, a.backend()), (StatusCode::OK, "main".to_owned()));
    let m = crate::support::sim::until_metrics(&gw, "mirror counted", |m| {
        m.contains("switchyard_mirrored_total")
    })
    .await;
    assert!(
        m.contains(r#"switchyard_mirrored_total{model="shadow",outcome="error"} 1"#),
        "{m}"
    );
}

#[tokio::test]
async fn a_reload_changes_the_routes() {
    let a_up = Mock::start(Reply::Json(StatusCode::OK, OK_BODY)).await;
    let b_up = Mock::start(Reply::Json(StatusCode::OK, OK_BODY)).await;
    let text = |target: &str| {
        format!(
            "admin: {{token: {TOKEN}}}\nscrape: {{enabled: false}}\nroutes:\n  aliases: {{gpt: {target}}}\nmodels:\n  a:\n    backends: [{{url: \"{}\", name: a}}]\n  b:\n    backends: [{{url: \"{}\", name: b}}]\n",
            a_up.url(),
            b_up.url()
        )
    };
    let file = TempConfig::new(&text("a"));
    let gw = FileGw::start(&file).await;
    let c = client();
    let url = gw.url("/v1/chat/completions");
    assert_eq!(
        post(&c, &url, &chat("gpt", "hi", None), &[])
            .await
            .backend(),
        "a"
    );
    file.write(&text("b"));
    let r = admin(&c, "POST", &gw.admin_url("/admin/reload"), "").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body_text());
    assert_eq!(
        post(&c, &url, &chat("gpt", "hi", None), &[])
            .await
            .backend(),
        "b"
    );
    // A route to a model that does not exist is refused at reload, located in the file.
    file.write(&text("c"));
    let r = admin(&c, "POST", &gw.admin_url("/admin/reload"), "").await;
    assert_eq!(r.error_code(), "invalid_config");
    assert!(
        r.body_text()
            .contains("routes.aliases.gpt: unknown model 'c'"),
        "{}",
        r.body_text()
    );
}

#[test]
fn routes_to_unknown_models_and_aliases_hiding_models_are_located_config_errors() {
    let base = "models:\n  llama:\n    backends:\n      - url: http://a:1\n";
    let e = switchyard_gateway::config::parse(
        &format!("routes:\n  rules:\n    - name: r\n      to: lama\n{base}"),
        "c.yaml",
    )
    .unwrap_err();
    assert_eq!(e.line, Some(4), "{e}");
    assert!(
        e.message
            .contains("routes rule 'r' to: unknown model 'lama'; did you mean 'llama'?"),
        "{e}"
    );
    let e = switchyard_gateway::config::parse(
        &format!("routes:\n  aliases: {{llama: llama}}\n{base}"),
        "c.yaml",
    )
    .unwrap_err();
    assert!(e.message.contains("an alias cannot hide it"), "{e}");
    let e = switchyard_gateway::config::parse(
        &format!("routes:\n  rules:\n    - name: r\n      to: llama\n      when: {{hedaer: {{}}}}\n{base}"),
        "c.yaml",
    )
    .unwrap_err();
    assert_eq!(e.line, Some(5), "{e}");
}

/// Pools `m` (default), `code` and `math` over mocks, `e` over a simulated replica (its
/// embeddings reflect word overlap), and rules on two intent classes.
async fn semantic_gateway(embed_url: &str, timeout: &str) -> (Gw, HashMap<String, Mock>) {
    let (conf, mocks) = pools(&["m", "code", "math"], Reply::Json(StatusCode::OK, OK_BODY)).await;
    let conf = conf
        .model("e", Pool::default().backend(json!({"url": embed_url, "name": "e", "model": "m"})))
        .set(
            "routes",
            json!({
                "intents": {
                    "embeddings": {"model": "e", "timeout": timeout, "threshold": 0.3},
                    "classes": {
                        "coding": ["fix this rust compile error", "write a python function to sort a list", "why does my code panic"],
                        "math": ["solve the integral of x squared", "what is the derivative of sin x", "prove the triangle inequality"],
                    },
                },
                "rules": [
                    {"name": "to-code", "when": {"intent": "coding"}, "to": "code"},
                    {"name": "to-math", "when": {"intent": "math"}, "to": "math"},
                ],
            }),
        );
    (Gw::with(conf).await, mocks)
}

#[tokio::test]
async fn intent_rules_route_by_the_nearest_class_and_fall_back_below_the_threshold() {
    let sim = crate::support::sim::replica(50.0, 7).await;
    let (gw, _mocks) = semantic_gateway(&sim.url(), "2s").await;
    let c = client();
    let url = gw.url("/v1/chat/completions");
    // The examples are embedded in the background once the gateway starts.
    let mut ready = false;
    for _ in 0..200 {
        let a = post(
            &c,
            &url,
            &chat("m", "my rust code does not compile", None),
            &[],
        )
        .await;
        if a.backend() == "code" {
            ready = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(ready, "intent classes never became ready");
    for (text, pool, header) in [
        (
            "please fix the compile error in my rust code",
            "code",
            "route: rule=to-code intent=coding pool=code",
        ),
        (
            "what is the integral of sin x",
            "math",
            "route: rule=to-math intent=math pool=math",
        ),
        ("tell me about the weather in paris today", "m", ""),
    ] {
        let a = post(&c, &url, &chat("m", text, None), &[]).await;
        assert_eq!(
            (a.status, a.backend()),
            (StatusCode::OK, pool.to_owned()),
            "{text}"
        );
        assert_eq!(route_header(&a), header, "{text}");
    }
}

#[tokio::test]
async fn an_embeddings_pool_that_never_answers_leaves_requests_on_the_default_unwaited() {
    // The embeddings backend never answers: no class is ever learned, intent rules match
    // nothing, and requests do not wait on it.
    let hang = Mock::start(Reply::Hang).await;
    let (gw, _mocks) = semantic_gateway(&hang.url(), "100ms").await;
    let a = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        post(
            &client(),
            &gw.url("/v1/chat/completions"),
            &chat("m", "fix my rust code", None),
            &[],
        ),
    )
    .await
    .expect("the request waited on the embeddings pool");
    assert_eq!((a.status, a.backend()), (StatusCode::OK, "m".to_owned()));
    assert_eq!(route_header(&a), "");
}
