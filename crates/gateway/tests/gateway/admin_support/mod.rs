//! Test support for the admin API and reload tests: a gateway started from a config *file*
//! (so it can reload), with its admin listener when the config has one, and small admin calls.
#![allow(dead_code)]

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::support::{send, Answer, Client};

/// A config file in the temp dir, removed on drop.
pub struct TempConfig {
    pub path: PathBuf,
}

impl TempConfig {
    pub fn new(text: &str) -> TempConfig {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "switchyard-admin-test-{}-{}.yaml",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, text).unwrap();
        TempConfig { path }
    }

    /// Replaces the file's text (what an operator does before a reload).
    pub fn write(&self, text: &str) {
        std::fs::write(&self.path, text).unwrap();
    }

    pub fn file_name(&self) -> String {
        self.path.display().to_string()
    }
}

impl Drop for TempConfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A gateway started from a file on 127.0.0.1:0, with its admin listener (also on port 0)
/// when the config asks for one.
pub struct FileGw {
    pub addr: SocketAddr,
    pub admin_addr: Option<SocketAddr>,
    pub gw: std::sync::Arc<switchyard_gateway::Gateway>,
    /// Stops the gateway when dropped.
    _running: switchyard_gateway::Running,
}

impl FileGw {
    pub async fn start(file: &TempConfig) -> FileGw {
        FileGw::start_with(file, |s| s).await
    }

    /// Starts with what `more` adds to the server (e.g. reloading on SIGHUP).
    pub async fn start_with(
        file: &TempConfig,
        more: impl FnOnce(switchyard_gateway::Server) -> switchyard_gateway::Server,
    ) -> FileGw {
        let server = switchyard_gateway::Server::from_file(&file.path).expect("valid test config");
        let running = more(server.listen(crate::support::LOOPBACK))
            .start()
            .await
            .expect("the gateway starts");
        FileGw {
            addr: running.addr(),
            admin_addr: running.admin_addr(),
            gw: running.gateway().clone(),
            _running: running,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Where the admin API is: its own listener if any, else the main one.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin_addr.unwrap_or(self.addr), path)
    }
}

/// The admin token the tests use.
pub const TOKEN: &str = "test-admin-token";

/// An admin call with the test token.
pub async fn admin(c: &Client, method: &str, url: &str, body: &str) -> Answer {
    let req = Request::builder()
        .method(method)
        .uri(url)
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    send(c, req).await
}

/// `model`'s backend `name` in a `GET /admin/backends` answer.
pub fn backend_in(list: &serde_json::Value, model: &str, name: &str) -> serde_json::Value {
    list["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["model"] == model)
        .and_then(|m| {
            m["backends"]
                .as_array()
                .unwrap()
                .iter()
                .find(|b| b["name"] == name)
                .cloned()
        })
        .unwrap_or(serde_json::Value::Null)
}

/// A config with the admin API on the main listener behind [`TOKEN`], and one model `m` over
/// `urls` named `b0`, `b1`, ... in order.
/// `urls` as model `m`'s backends `b0`, `b1`, ..., with the admin API on the main listener
/// behind [`TOKEN`].
pub fn admin_conf(urls: &[String]) -> crate::support::conf::Conf {
    crate::support::conf::Conf::over(urls).set("admin", serde_json::json!({"token": TOKEN}))
}

pub fn admin_config(urls: &[String], pool_extra: &str) -> String {
    crate::support::config(urls, pool_extra, &format!("admin: {{token: {TOKEN}}}"))
}
