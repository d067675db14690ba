//! Test support for the admin API and reload tests: a gateway started from a config *file*
//! (so it can reload), with its admin listener when the config has one, and small admin calls.
#![allow(dead_code)]

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

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
    stop: Vec<oneshot::Sender<()>>,
}

impl FileGw {
    pub async fn start(file: &TempConfig) -> FileGw {
        let cfg = switchyard_gateway::config::load(&file.path).expect("valid test config");
        let admin_listen = cfg.admin.as_ref().and_then(|a| a.listen);
        let gw = switchyard_gateway::Gateway::with_source(cfg, &file.path);
        let mut stop = Vec::new();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        stop.push(tx);
        tokio::spawn(switchyard_gateway::serve(
            gw.clone(),
            listener,
            async move {
                let _ = rx.await;
            },
        ));
        let admin_addr = match admin_listen {
            Some(a) => {
                let l = TcpListener::bind(a).await.unwrap();
                let admin_addr = l.local_addr().unwrap();
                let (tx, rx) = oneshot::channel::<()>();
                stop.push(tx);
                tokio::spawn(switchyard_gateway::serve_admin(gw.clone(), l, async move {
                    let _ = rx.await;
                }));
                Some(admin_addr)
            }
            None => None,
        };
        FileGw {
            addr,
            admin_addr,
            gw,
            stop,
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

impl Drop for FileGw {
    fn drop(&mut self) {
        for s in self.stop.drain(..) {
            let _ = s.send(());
        }
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
pub fn admin_config(urls: &[String], pool_extra: &str) -> String {
    crate::support::config(urls, pool_extra, &format!("admin: {{token: {TOKEN}}}"))
}
