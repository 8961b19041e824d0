//! writeback-graph-sim: serves a Microsoft Graph tenant from a JSON file, with Graph's JSON
//! shapes, paging, throttling and errors, plus a control API (`/_control/...`) for tests.
//!
//! It listens on loopback over plain HTTP: it is a test fixture, never a production service.

mod api;
mod assertion;
mod delta;
mod generate;
mod schema;
mod tenant;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use clap::Parser;
use serde_json::{json, Value};

use api::{Fault, Reply, Sim};
use tenant::Tenant;

// The simulator shares the machine with writeback and the DC in benchmarks: with glibc's
// allocator, a third of its CPU time serving member pages went to malloc and free.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    version,
    about = "Microsoft Graph simulator for writeback's tests and demo",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// The tenant file (JSON: apps, users, groups, devices, contacts, servicePrincipals, deletedGroups).
    #[arg(long, required = true)]
    tenant: Option<PathBuf>,
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// Largest page the server returns, whatever `$top` asks.
    #[arg(long, default_value_t = 999)]
    page_size: usize,
    /// Write the base URL here once listening (for scripts).
    #[arg(long)]
    url_file: Option<PathBuf>,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Writes a synthetic tenant (and the LDIF of its users) for benchmarks.
    Generate(generate::GenerateArgs),
}

type Shared = Arc<Mutex<Sim>>;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let cli = Cli::parse();
    if let Some(Command::Generate(args)) = cli.command {
        return generate::run(args);
    }
    let path = cli.tenant.context("--tenant is required")?;
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading the tenant file {}", path.display()))?;
    let tenant: Tenant =
        serde_json::from_str(&text).with_context(|| format!("parsing the tenant file {}", path.display()))?;
    let listener =
        tokio::net::TcpListener::bind(&cli.listen).await.with_context(|| format!("listening on {}", cli.listen))?;
    let addr = listener.local_addr()?;
    if !addr.ip().is_loopback() {
        anyhow::bail!("the simulator serves plain HTTP and listens on loopback only; {addr} is not a loopback address");
    }
    let url = format!("http://{addr}");
    if let Some(f) = &cli.url_file {
        std::fs::write(f, &url).with_context(|| format!("writing {}", f.display()))?;
    }
    println!("listening on {url}");
    let shared: Shared = Arc::new(Mutex::new(Sim::new(tenant, cli.page_size)));
    // Benchmarks replace tenants of tens of megabytes through the control API.
    let app = Router::new().fallback(handle).with_state(shared).layer(axum::extract::DefaultBodyLimit::disable());
    axum::serve(listener, app).await?;
    Ok(())
}

async fn handle(
    axum::extract::State(sim): axum::extract::State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let base = headers.get("host").and_then(|h| h.to_str().ok()).map(|h| format!("http://{h}")).unwrap_or_default();
    let path = uri.path().to_string();
    let query = uri.query().unwrap_or("").to_string();
    let mut sim = match sim.lock() {
        Ok(s) => s,
        Err(poisoned) => poisoned.into_inner(),
    };
    let reply = if let Some(ctl) = path.strip_prefix("/_control/") {
        control(&mut sim, &method, ctl, &body)
    } else if path.ends_with("/oauth2/v2.0/token") && method == Method::POST {
        let form: HashMap<String, String> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
        // The token endpoint throttles and fails transiently too (a fault of scope "token").
        let reply = match sim.take_fault(api::Scope::Token, &path) {
            Some(f) => sim.fault_reply(&f),
            None => sim.token(&form, &format!("{base}{path}")),
        };
        sim.log.push(api::LogEntry { method: "POST".into(), url: path.clone(), status: reply.status, batch: false });
        reply
    } else {
        let (beta, rest) = match (path.strip_prefix("/beta"), path.strip_prefix("/v1.0")) {
            (Some(r), _) => (true, r),
            (_, Some(r)) => (false, r),
            _ => return (StatusCode::NOT_FOUND, "not a Graph path").into_response(),
        };
        if !sim.authorized(headers.get("authorization").and_then(|h| h.to_str().ok())) {
            sim.log.push(api::LogEntry { method: method.to_string(), url: path.clone(), status: 401, batch: false });
            Reply {
                status: 401,
                headers: vec![],
                body: Some(json!({
                    "error": {
                        "code": "InvalidAuthenticationToken",
                        "message": "Access token has expired or is not yet valid.",
                        "innerError": {}
                    }
                })),
            }
        } else {
            let json_body: Option<Value> = if body.is_empty() { None } else { serde_json::from_slice(&body).ok() };
            if rest == "/$batch" && method == Method::POST {
                // A throttled batch can fail as a whole (a fault of scope "batch"), besides its
                // requests one by one.
                let reply = match sim.take_fault(api::Scope::Batch, &path) {
                    Some(f) => sim.fault_reply(&f),
                    None => sim.batch(beta, json_body.unwrap_or_default(), &base),
                };
                sim.log.push(api::LogEntry {
                    method: "POST".into(),
                    url: path.clone(),
                    status: reply.status,
                    batch: false,
                });
                reply
            } else {
                sim.graph(api::Request {
                    method: method.as_str(),
                    beta,
                    path: rest,
                    query: &query,
                    body: json_body,
                    base: &base,
                    batch: false,
                })
            }
        }
    };
    respond(reply)
}

fn respond(r: Reply) -> Response {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = match r.body {
        Some(b) => (status, axum::Json(b)).into_response(),
        None => status.into_response(),
    };
    for (k, v) in r.headers {
        if let (Ok(name), Ok(val)) = (axum::http::HeaderName::try_from(k), HeaderValue::try_from(v)) {
            resp.headers_mut().insert(name, val);
        }
    }
    resp
}

/// The control API: `tenant` (GET/PUT), `settings` (POST), `faults` (POST/DELETE),
/// `requests` (GET/DELETE), `expire-tokens` (POST).
fn control(sim: &mut Sim, method: &Method, what: &str, body: &[u8]) -> Reply {
    let ok = |v: Value| Reply { status: 200, headers: vec![], body: Some(v) };
    let bad = |m: String| Reply { status: 400, headers: vec![], body: Some(json!({"error": m})) };
    match (method.as_str(), what) {
        ("GET", "tenant") => ok(serde_json::to_value(&sim.tenant).unwrap_or_default()),
        ("PUT", "tenant") => match serde_json::from_slice::<Tenant>(body) {
            Ok(t) => {
                sim.replace_tenant(t);
                ok(json!({"ok": true, "version": sim.journal.version}))
            }
            Err(e) => bad(format!("not a tenant: {e}")),
        },
        ("POST", "settings") => match serde_json::from_slice::<Value>(body) {
            Ok(v) => {
                if let Some(n) = v["page_size"].as_u64() {
                    sim.page_size = (n as usize).max(1);
                }
                if let Some(n) = v["token_lifetime"].as_u64() {
                    sim.token_lifetime = n;
                }
                if let Some(n) = v["delta_member_chunk"].as_u64() {
                    sim.journal.member_chunk = (n as usize).max(1);
                }
                if let Some(e) = v.get("delta_expiry") {
                    match serde_json::from_value::<api::Expiry>(e.clone()) {
                        Ok(e) => sim.expiry = e,
                        Err(e) => return bad(format!("delta_expiry: {e}")),
                    }
                }
                if let Some(b) = v["delta_shuffle"].as_bool() {
                    sim.journal.shuffle = b;
                }
                if let Some(b) = v["delta_removed_without_reason"].as_bool() {
                    sim.journal.no_reason = b;
                }
                if let Some(on) = v["lag"].as_bool() {
                    sim.set_lag(on);
                }
                if let Some(kinds) = v["limited_info"].as_array() {
                    sim.limited_info = kinds.iter().filter_map(|k| k.as_str().map(String::from)).collect();
                }
                match &v["link_base"] {
                    Value::String(b) => sim.link_base = Some(b.trim_end_matches('/').to_string()),
                    Value::Null if v.get("link_base").is_some() => sim.link_base = None,
                    _ => {}
                }
                ok(json!({"page_size": sim.page_size, "token_lifetime": sim.token_lifetime}))
            }
            Err(e) => bad(format!("not JSON: {e}")),
        },
        ("POST", "faults") => match serde_json::from_slice::<Fault>(body) {
            Ok(f) => {
                sim.faults.push(f);
                ok(json!({"faults": sim.faults.len()}))
            }
            Err(e) => bad(format!("not a fault: {e}")),
        },
        ("DELETE", "faults") => {
            sim.faults.clear();
            ok(json!({"faults": 0}))
        }
        ("GET", "requests") => ok(serde_json::to_value(&sim.log).unwrap_or_default()),
        ("DELETE", "requests") => {
            sim.log.clear();
            ok(json!({"requests": 0}))
        }
        ("POST", "expire-delta-tokens") => {
            sim.journal.expire_all();
            ok(json!({"expired_below": sim.journal.version}))
        }
        ("POST", "expire-tokens") => {
            sim.tokens.clear();
            ok(json!({"tokens": 0}))
        }
        _ => bad(format!("unknown control endpoint {method} /_control/{what}")),
    }
}
