//! A typed test config: tests build it with methods and `serde_json::json!` values instead of
//! indentation-sensitive YAML strings. It renders as JSON (which is YAML) and goes through
//! the same parser and validation as a config file, so what a test runs is what a file would.

use serde_json::{json, Map, Value};

/// A whole config: top-level settings and model pools.
#[derive(Debug, Clone, Default)]
pub struct Conf {
    top: Map<String, Value>,
    models: Map<String, Value>,
}

/// One model's pool: its settings and its backends.
#[derive(Debug, Clone, Default)]
pub struct Pool {
    settings: Map<String, Value>,
    backends: Vec<Value>,
}

impl Conf {
    /// A config with no models yet.
    pub fn new() -> Conf {
        Conf::default()
    }

    /// One model `m` over `urls`, named `b0`, `b1`, ... in order.
    pub fn over(urls: &[String]) -> Conf {
        Conf::new().model("m", Pool::over(urls))
    }

    /// One model `m` with one backend: its fields as the file would have them.
    pub fn one(fields: Value) -> Conf {
        Conf::new().model("m", Pool::default().backend(fields))
    }

    /// Sets a top-level key (`retry`, `scrape`, `admin`, `drain_delay`, ...).
    pub fn set(mut self, key: &str, value: impl Into<Value>) -> Conf {
        self.top.insert(key.to_owned(), value.into());
        self
    }

    /// Turns engine scraping (and detection) off.
    pub fn no_scrape(self) -> Conf {
        self.set("scrape", json!({"enabled": false}))
    }

    /// Adds (or replaces) a model's pool.
    pub fn model(mut self, name: &str, pool: Pool) -> Conf {
        self.models.insert(name.to_owned(), pool.value());
        self
    }

    /// Sets a key of model `m`'s pool (`policy`, `breaker`, `timeouts`, ...).
    pub fn pool(mut self, key: &str, value: impl Into<Value>) -> Conf {
        let m = self
            .models
            .get_mut("m")
            .and_then(Value::as_object_mut)
            .expect("a model `m`");
        m.insert(key.to_owned(), value.into());
        self
    }

    /// The config as text a file could hold.
    pub fn text(&self) -> String {
        let mut all = self.top.clone();
        all.insert("models".into(), Value::Object(self.models.clone()));
        serde_json::to_string_pretty(&Value::Object(all)).unwrap()
    }

    /// The validated config.
    pub fn build(&self) -> switchyard_gateway::Config {
        switchyard_gateway::config::parse(&self.text(), "test config")
            .unwrap_or_else(|e| panic!("invalid test config: {e}\n{}", self.text()))
    }
}

impl Pool {
    /// A pool over `urls`, named `b0`, `b1`, ... in order.
    pub fn over(urls: &[String]) -> Pool {
        let mut p = Pool::default();
        for (i, u) in urls.iter().enumerate() {
            p = p.backend(json!({"url": u, "name": format!("b{i}")}));
        }
        p
    }

    /// Adds a backend: its fields as the file would have them.
    pub fn backend(mut self, fields: Value) -> Pool {
        self.backends.push(fields);
        self
    }

    /// Sets a pool key (`policy`, `breaker`, `timeouts`, ...).
    pub fn set(mut self, key: &str, value: impl Into<Value>) -> Pool {
        self.settings.insert(key.to_owned(), value.into());
        self
    }

    fn value(self) -> Value {
        let mut v = self.settings;
        v.insert("backends".into(), Value::Array(self.backends));
        Value::Object(v)
    }
}
