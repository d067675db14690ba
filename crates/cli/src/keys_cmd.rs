//! `switchyard keys`: API keys of a running gateway, through its admin API (`/admin/keys`).
//! Create prints the key once; the gateway keeps only its hash.

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::{Args, Subcommand};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// `switchyard keys ...`
#[derive(Debug, Args)]
pub struct KeysArgs {
    /// The gateway's admin API base url (its `admin.listen`, or the main listener).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    admin: String,
    /// The admin token (`admin.token`).
    #[arg(long, env = "SWITCHYARD_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Every run-time key (never the keys themselves).
    List,
    /// A new key; printed once.
    Create {
        /// Its tenant (must be configured under auth.tenants or named by a config key).
        #[arg(long)]
        tenant: String,
        /// A label.
        #[arg(long)]
        name: Option<String>,
        /// Models it may use (repeat); all when absent.
        #[arg(long = "model")]
        models: Vec<String>,
        /// critical, high, normal, low or batch.
        #[arg(long)]
        priority: Option<String>,
        /// Requests per minute.
        #[arg(long)]
        rpm: Option<u64>,
        /// Tokens per minute.
        #[arg(long)]
        tpm: Option<u64>,
        /// Requests in flight.
        #[arg(long)]
        max_concurrent: Option<u32>,
        /// Expiry: a date (2027-01-31) or unix seconds.
        #[arg(long)]
        expires: Option<String>,
        /// Most it may spend per period, by the backends' `price:`.
        #[arg(long)]
        budget: Option<f64>,
        /// The budget's period: `day` or `month` (default).
        #[arg(long)]
        budget_period: Option<String>,
    },
    /// Revokes key `id` at once.
    Revoke {
        /// Its id (from `list`).
        id: i64,
    },
    /// Replaces key `id` with a new key of the same settings; prints the new key once.
    Rotate {
        /// Its id (from `list`).
        id: i64,
    },
}

/// Runs the subcommand.
pub fn run(args: KeysArgs) -> anyhow::Result<()> {
    let (method, path, body) = match &args.command {
        KeysCommand::List => ("GET", "/admin/keys".to_owned(), String::new()),
        KeysCommand::Create {
            tenant,
            name,
            models,
            priority,
            rpm,
            tpm,
            max_concurrent,
            expires,
            budget,
            budget_period,
        } => {
            let mut v = serde_json::json!({ "tenant": tenant });
            let o = v.as_object_mut().context("object")?;
            if let Some(n) = name {
                o.insert("name".into(), n.clone().into());
            }
            if !models.is_empty() {
                o.insert("models".into(), models.clone().into());
            }
            if let Some(p) = priority {
                o.insert("priority".into(), p.clone().into());
            }
            for (k, x) in [("rpm", rpm), ("tpm", tpm)] {
                if let Some(x) = x {
                    o.insert(k.into(), (*x).into());
                }
            }
            if let Some(m) = max_concurrent {
                o.insert("max_concurrent".into(), (*m).into());
            }
            if let Some(e) = expires {
                let value = e
                    .parse::<u64>()
                    .map_or_else(|_| e.clone().into(), Into::into);
                o.insert("expires".into(), value);
            }
            if let Some(b) = budget {
                o.insert("budget".into(), (*b).into());
            }
            if let Some(p) = budget_period {
                o.insert("budget_period".into(), p.clone().into());
            }
            ("POST", "/admin/keys".to_owned(), v.to_string())
        }
        KeysCommand::Revoke { id } => ("DELETE", format!("/admin/keys/{id}"), String::new()),
        KeysCommand::Rotate { id } => ("POST", format!("/admin/keys/{id}/rotate"), String::new()),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (status, text) = rt.block_on(call(&args, method, &path, body))?;
    if !status.is_success() {
        bail!("{method} {path}: {status}: {text}");
    }
    let v: serde_json::Value =
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    println!("{}", serde_json::to_string_pretty(&v)?);
    if v.get("key").is_some() {
        eprintln!("The key is shown only this once; store it now.");
    }
    Ok(())
}

async fn call(
    args: &KeysArgs,
    method: &str,
    path: &str,
    body: String,
) -> anyhow::Result<(http::StatusCode, String)> {
    let url = format!("{}{path}", args.admin.trim_end_matches('/'));
    let mut req = http::Request::builder()
        .method(method)
        .uri(&url)
        .header("content-type", "application/json");
    if let Some(t) = &args.token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let req = req.body(Full::new(Bytes::from(body)))?;
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let resp = client
        .request(req)
        .await
        .with_context(|| format!("cannot reach the admin API at {url}"))?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}
