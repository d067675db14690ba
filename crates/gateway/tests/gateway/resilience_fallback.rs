//! Fallback models: when every backend of a model fails before the first byte, the request
//! moves to the pool's configured `fallbacks`, with the body's `model` rewritten to the name
//! the fallback serves, and the attempts header counting every try.

use crate::support::conf::{Conf, Pool};
use crate::support::sim::*;
use crate::support::*;
use serde_json::json;

#[tokio::test(start_paused = true)]
async fn a_dead_model_falls_back_to_the_configured_one() {
    // The replica serves only "m" and answers 404 to any other model name, so a success
    // proves the body was rewritten for it.
    let r = replica(200.0, 71).await;
    let conf = Conf::new()
        .model(
            "gpt",
            Pool::default()
                .set("fallbacks", json!(["m"]))
                .backend(json!({"url": closed_port(), "name": "dead"})),
        )
        .model(
            "m",
            Pool::default().backend(json!({"url": r.url(), "name": "sim"})),
        );
    let gw = Gw::with(conf).await;
    let body = r#"{"model":"gpt","max_tokens":3,"messages":[{"role":"user","content":"hi"}]}"#;
    let a = post(&client(), &gw.url("/v1/chat/completions"), body, &[]).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!((a.backend().as_str(), attempts(&a)), ("sim", 2));
    assert_eq!(a.json()["model"], "m");
}

/// YAML itself is the subject here: the error's line and column.
#[test]
fn a_fallback_to_an_unknown_model_is_a_located_config_error() {
    let yaml = "models:\n  gpt:\n    fallbacks: [lama]\n    backends:\n      - url: http://a:1\n  llama:\n    backends:\n      - url: http://b:1\n";
    let e = switchyard_gateway::config::parse(yaml, "c.yaml").unwrap_err();
    assert_eq!((e.line, e.column), (Some(3), Some(17)));
    assert!(
        e.message
            .contains("models.gpt.fallbacks: unknown model 'lama'; did you mean 'llama'?"),
        "{e}"
    );
    let yaml = "models:\n  gpt:\n    fallbacks: [gpt]\n    backends:\n      - url: http://a:1\n";
    let e = switchyard_gateway::config::parse(yaml, "c.yaml").unwrap_err();
    assert!(e.message.contains("cannot fall back to itself"), "{e}");
}
