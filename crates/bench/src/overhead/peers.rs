//! The proxies an overhead run puts between the load generator and the mock: Switchyard and
//! the peers users would pick instead, each configured as a plain reverse proxy to one
//! upstream with kept-alive upstream connections, started on a loopback port with its files
//! under the run's temp dir.
//!
//! - nginx: `proxy_pass` to an `upstream` block with `keepalive`, `proxy_buffering off` (so a
//!   stream passes through as it comes), one worker per core.
//! - HAProxy: `mode http`, `http-reuse always`, one thread per core.
//! - Switchyard with auth (`switchyard-auth`): the same, with `auth:` on, one key with rpm,
//!   tpm and max_concurrent limits far above the run's rate (so every request pays the key
//!   lookup, the limits and the admission gate, and none is refused) and `admission:` on.
//! - LiteLLM proxy (`litellm[proxy]==1.106.2` from a venv in the cache dir): one model routed
//!   to the mock as an OpenAI-compatible backend; it needs a master key (`sk-` and 48 hex
//!   digits, sent by the load generator as a bearer token) and
//!   `LITELLM_LOCAL_MODEL_COST_MAP=True` (no cost-map download).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A path through which requests reach the mock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// Switchyard, the binary under test.
    Switchyard,
    /// Switchyard with auth, limits and admission on.
    SwitchyardAuth,
    /// Switchyard in front of the mock as an `anthropic` backend: every chat completion is
    /// translated to a Messages request and its answer back.
    SwitchyardAnthropic,
    /// Switchyard writing every request's decision record to a file.
    SwitchyardDeclog,
    /// nginx.
    Nginx,
    /// HAProxy.
    Haproxy,
    /// LiteLLM proxy.
    Litellm,
}

/// The pinned LiteLLM version.
pub const LITELLM_VERSION: &str = "1.106.2";

impl Peer {
    /// Its name in flags and reports.
    pub fn name(self) -> &'static str {
        match self {
            Peer::Switchyard => "switchyard",
            Peer::SwitchyardAuth => "switchyard-auth",
            Peer::SwitchyardAnthropic => "switchyard-anthropic",
            Peer::SwitchyardDeclog => "switchyard-declog",
            Peer::Nginx => "nginx",
            Peer::Haproxy => "haproxy",
            Peer::Litellm => "litellm",
        }
    }

    /// A peer named in `--peers`.
    pub fn parse(name: &str) -> Option<Peer> {
        match name.trim() {
            "nginx" => Some(Peer::Nginx),
            "haproxy" => Some(Peer::Haproxy),
            "litellm" => Some(Peer::Litellm),
            "switchyard-auth" => Some(Peer::SwitchyardAuth),
            "switchyard-anthropic" => Some(Peer::SwitchyardAnthropic),
            "switchyard-declog" => Some(Peer::SwitchyardDeclog),
            _ => None,
        }
    }

    /// How long it may take to answer its first request after start.
    pub fn startup_budget_s(self) -> u64 {
        match self {
            Peer::Litellm => 120,
            _ => 15,
        }
    }
}

/// Where the LiteLLM venv lives: `$SWITCHYARD_BENCH_CACHE`, else
/// `$XDG_CACHE_HOME/switchyard-bench`, else `~/.cache/switchyard-bench`.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("SWITCHYARD_BENCH_CACHE") {
        return PathBuf::from(d);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("switchyard-bench")
}

/// The LiteLLM executable in the cache's venv.
pub fn litellm_bin() -> PathBuf {
    cache_dir()
        .join(format!("litellm-{LITELLM_VERSION}"))
        .join("bin/litellm")
}

/// Whether `prog` is on the PATH.
pub fn on_path(prog: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(prog).is_file()))
}

/// Whether the peer's program is installed.
pub fn installed(peer: Peer) -> bool {
    match peer {
        Peer::Switchyard
        | Peer::SwitchyardAuth
        | Peer::SwitchyardAnthropic
        | Peer::SwitchyardDeclog => true,
        Peer::Nginx => on_path("nginx"),
        Peer::Haproxy => on_path("haproxy"),
        Peer::Litellm => litellm_bin().is_file(),
    }
}

/// A fresh LiteLLM master key: `sk-` and 48 hex digits from the OS's random source.
pub fn master_key() -> String {
    use std::io::Read;
    let mut b = [0u8; 24];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b));
    if read.is_err() {
        // No /dev/urandom: time and pid are unpredictable enough for a loopback bench.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()) as u64;
        for (i, x) in b.iter_mut().enumerate() {
            *x = ((t ^ u64::from(std::process::id())) >> ((i % 8) * 8)) as u8 ^ i as u8;
        }
    }
    let hex: String = b.iter().map(|b| format!("{b:02x}")).collect();
    format!("sk-{hex}")
}

/// The command that runs `peer` on `port` in front of `upstream`, writing its config files
/// into `dir`. `switchyard` is the binary under test.
pub fn command(
    peer: Peer,
    dir: &Path,
    port: u16,
    upstream: SocketAddr,
    switchyard: &Path,
    key: &str,
) -> std::io::Result<Command> {
    let listen = format!("127.0.0.1:{port}");
    match peer {
        Peer::Switchyard
        | Peer::SwitchyardAuth
        | Peer::SwitchyardAnthropic
        | Peer::SwitchyardDeclog => {
            let cfg = dir.join(format!("{}.yaml", peer.name()));
            let auth = if peer == Peer::SwitchyardAuth {
                format!(
                    "auth:\n  tenants:\n    bench: {{rpm: 100000000, tpm: 100000000000}}\n  keys:\n    - {{key: {key}, tenant: bench, rpm: 100000000, tpm: 100000000000, max_concurrent: 100000}}\nadmission: {{}}\n"
                )
            } else {
                String::new()
            };
            let log = if peer == Peer::SwitchyardDeclog {
                // Large enough not to rotate past `keep` in a run: every line is checked.
                format!(
                    "decision_log: {{sample: 1.0, path: {}, max_bytes: 4GB}}\n",
                    dir.join(super::declog::FILE).display()
                )
            } else {
                String::new()
            };
            let provider = if peer == Peer::SwitchyardAnthropic {
                "\n        provider: anthropic"
            } else {
                ""
            };
            std::fs::write(
                &cfg,
                format!("listen: {listen}\n{auth}{log}models:\n  m:\n    backends:\n      - url: http://{upstream}{provider}\n"),
            )?;
            let mut c = Command::new(switchyard);
            c.arg("serve")
                .arg("--config")
                .arg(cfg)
                .env("SWITCHYARD_LOG", "warn");
            Ok(c)
        }
        Peer::Nginx => {
            let d = dir.join("nginx");
            std::fs::create_dir_all(d.join("logs"))?;
            let p = d.display();
            let conf = format!(
                "worker_processes auto;\npid {p}/nginx.pid;\nerror_log {p}/logs/error.log warn;\n\
                 events {{ worker_connections 8192; }}\n\
                 http {{\n  access_log off;\n  client_body_buffer_size 1m;\n  client_body_temp_path {p}/body;\n  proxy_temp_path {p}/proxy;\n\
                 fastcgi_temp_path {p}/fcgi;\n  uwsgi_temp_path {p}/uwsgi;\n  scgi_temp_path {p}/scgi;\n\
                 keepalive_requests 1000000;\n\
                 upstream mock {{ server {upstream}; keepalive 128; keepalive_requests 1000000; }}\n\
                 server {{\n    listen {listen};\n    location / {{\n      proxy_pass http://mock;\n\
                 proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n      proxy_buffering off;\n    }}\n  }}\n}}\n"
            );
            let cfg = d.join("nginx.conf");
            std::fs::write(&cfg, conf)?;
            let mut c = Command::new("nginx");
            c.arg("-p")
                .arg(&d)
                .arg("-c")
                .arg(cfg)
                .args(["-g", "daemon off;"]);
            Ok(c)
        }
        Peer::Haproxy => {
            // maxconn: HAProxy reserves two descriptors per connection and refuses to start
            // above the process's limit (20,000 here); 8,000 connections fit.
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            let conf = format!(
                "global\n  nbthread {cores}\n  maxconn 8000\n\ndefaults\n  mode http\n  timeout connect 5s\n\
                 timeout client 120s\n  timeout server 120s\n  option http-keep-alive\n  http-reuse always\n\n\
                 frontend f\n  bind {listen}\n  default_backend b\n\nbackend b\n  server mock {upstream}\n"
            );
            let cfg = dir.join("haproxy.cfg");
            std::fs::write(&cfg, conf)?;
            let mut c = Command::new("haproxy");
            c.arg("-f").arg(cfg).arg("-db");
            Ok(c)
        }
        Peer::Litellm => {
            let conf = format!(
                "model_list:\n  - model_name: m\n    litellm_params:\n      model: openai/m\n      api_base: http://{upstream}/v1\n      api_key: sk-mock-upstream\n\
                 general_settings:\n  master_key: os.environ/LITELLM_MASTER_KEY\n"
            );
            let cfg = dir.join("litellm.yaml");
            std::fs::write(&cfg, conf)?;
            let mut c = Command::new(litellm_bin());
            c.arg("--config")
                .arg(cfg)
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .env("LITELLM_MASTER_KEY", key)
                .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
                .env("LITELLM_LOG", "ERROR")
                .env("LITELLM_TELEMETRY", "False")
                .env("NO_PROXY", "127.0.0.1,localhost");
            Ok(c)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn master_keys_are_sk_and_48_hex_digits_and_differ() {
        let (a, b) = (master_key(), master_key());
        assert!(a.starts_with("sk-") && a.len() == 51, "{a}");
        assert!(a[3..].chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn peer_names_parse_and_configs_name_the_upstream() {
        assert_eq!(Peer::parse(" nginx"), Some(Peer::Nginx));
        assert_eq!(Peer::parse("envoy"), None);
        let dir = std::env::temp_dir().join(format!("sy-peers-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let up: SocketAddr = "127.0.0.1:9".parse().unwrap();
        for p in [
            Peer::Switchyard,
            Peer::SwitchyardAuth,
            Peer::Nginx,
            Peer::Haproxy,
            Peer::Litellm,
        ] {
            command(p, &dir, 1234, up, Path::new("/bin/true"), "sk-x").unwrap();
        }
        let nginx = std::fs::read_to_string(dir.join("nginx/nginx.conf")).unwrap();
        assert!(nginx.contains("server 127.0.0.1:9; keepalive 128"));
        assert!(nginx.contains("proxy_buffering off"));
        let lite = std::fs::read_to_string(dir.join("litellm.yaml")).unwrap();
        assert!(lite.contains("api_base: http://127.0.0.1:9/v1"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
