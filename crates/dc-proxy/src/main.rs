//! For tests only: a TLS proxy in front of the test Samba DC that answers as a Windows DC with
//! its default LDAP policies does (docs/testing.md, "Windows' limits"). Samba never caps an
//! unpaged search, never ranges `member` unasked and accepts a domain-local group in a
//! universal one; Windows does all three, and writeback must work against both.
//!
//! Why not OpenLDAP's slapd with back-ldap and `limits` (the first candidate): slapd has no
//! ranged retrieval (MaxValRange cannot be emulated at all), and it does not know AD's controls
//! (extended DN, show deleted, SD flags), which it would refuse when critical or drop.
//! This proxy passes requests it does not change byte for byte (binds included, SASL GSSAPI too:
//! TLS ends here, the SASL exchange is the client's and the DC's); search entries are
//! re-encoded, unchanged unless a rule applies.
//!
//! Prints `listening on ADDR` once it accepts; each rule it applies is a line on stderr.

mod msg;
mod policy;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use clap::Parser;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use msg::{op, Message};
use policy::{Note, Policy, Search};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// The DC's LDAPS address.
    #[arg(long, default_value = "127.0.0.1:636")]
    upstream: String,
    /// The CA of the DC's certificate.
    #[arg(long)]
    ca: PathBuf,
    /// This proxy's certificate and key (the DC's own serve here: the client's ca_file holds).
    #[arg(long)]
    cert: PathBuf,
    #[arg(long)]
    key: PathBuf,
    #[arg(long, default_value_t = 1000)]
    max_page_size: usize,
    #[arg(long, default_value_t = 1500)]
    max_val_range: usize,
    #[arg(long, default_value = "120s")]
    max_query_duration: humantime::Duration,
    /// A slow DC for tests: an unpaged search runs out of time after this many entries.
    #[arg(long)]
    slow_after_entries: Option<usize>,
    /// An attribute the emulated schema lacks (a 2012 R2 schema: msDS-ExternalDirectoryObjectId).
    #[arg(long = "hide-attribute")]
    hidden: Vec<String>,
    /// An attribute a write is refused for as unknown to the schema while reads still show it:
    /// a DC that a schema extension made on another DC has not reached yet.
    #[arg(long = "refuse-attribute")]
    refused: Vec<String>,
    /// An attribute's rangeUpper, in characters, instead of Windows' (`description=20`).
    #[arg(long = "range-upper", value_parser = parse_range_upper)]
    range_upper: Vec<(String, usize)>,
    /// An account to read groupType with, for the refusal of a domain-local group in a
    /// universal one (without it, that refusal is off).
    #[arg(long, requires = "bind_password_file")]
    bind_dn: Option<String>,
    #[arg(long)]
    bind_password_file: Option<PathBuf>,
}

struct Proxy {
    policy: Policy,
    upstream: String,
    client_tls: Arc<rustls::ClientConfig>,
    /// The account to look groupTypes up with, and its connection (made again when it failed:
    /// an idle one is dropped by the DC after MaxConnIdleTime).
    lookups: Option<(String, PathBuf)>,
    lookup_conn: tokio::sync::Mutex<Option<ldap3::Ldap>>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&args.ca).context("ca")? {
        roots.add(cert.context("ca")?)?;
    }
    let client_tls = Arc::new(rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth());
    let certs = CertificateDer::pem_file_iter(&args.cert).context("cert")?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(&args.key).context("key")?;
    let server_tls = rustls::ServerConfig::builder().with_no_client_auth().with_single_cert(certs, key)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_tls));
    let lookups = match (&args.bind_dn, &args.bind_password_file) {
        (Some(dn), Some(pw)) => {
            // Checked at start: a wrong account is said now, not as refusals that never come.
            lookup_connection(&args.upstream, client_tls.clone(), dn, pw).await?.unbind().await?;
            Some((dn.clone(), pw.clone()))
        }
        _ => None,
    };
    let proxy = Arc::new(Proxy {
        policy: Policy {
            max_page_size: args.max_page_size,
            max_val_range: args.max_val_range,
            max_query: *args.max_query_duration,
            slow_after: args.slow_after_entries,
            hidden: args.hidden.iter().map(|h| h.to_ascii_lowercase()).collect(),
            refused: args.refused.iter().map(|h| h.to_ascii_lowercase()).collect(),
            range_upper: {
                let mut limits = policy::default_range_upper();
                limits.retain(|(a, _)| !args.range_upper.iter().any(|(b, _)| a == b));
                limits.extend(args.range_upper.iter().cloned());
                limits
            },
        },
        upstream: args.upstream.clone(),
        client_tls,
        lookups,
        lookup_conn: tokio::sync::Mutex::new(None),
    });
    let listener = TcpListener::bind(&args.listen).await?;
    println!("listening on {}", listener.local_addr()?);
    loop {
        let (tcp, _) = listener.accept().await?;
        let (acceptor, proxy) = (acceptor.clone(), proxy.clone());
        tokio::spawn(async move {
            if let Err(e) = serve(acceptor, tcp, proxy).await {
                eprintln!("connection ended: {e:#}");
            }
        });
    }
}

async fn lookup_connection(
    upstream: &str,
    tls: Arc<rustls::ClientConfig>,
    dn: &str,
    pw: &std::path::Path,
) -> anyhow::Result<ldap3::Ldap> {
    let password = std::fs::read_to_string(pw).context("bind password")?;
    let settings = ldap3::LdapConnSettings::new().set_config(tls);
    let (conn, mut ldap) = ldap3::LdapConnAsync::with_settings(settings, &format!("ldaps://{upstream}")).await?;
    ldap3::drive!(conn);
    ldap.simple_bind(dn, password.trim_end()).await?.success()?;
    Ok(ldap)
}

async fn serve(acceptor: tokio_rustls::TlsAcceptor, tcp: TcpStream, proxy: Arc<Proxy>) -> anyhow::Result<()> {
    let client = acceptor.accept(tcp).await.context("TLS with the client")?;
    let host = proxy.upstream.split(':').next().unwrap_or("127.0.0.1").to_string();
    let name = ServerName::try_from(host).context("the DC's name")?;
    let up = TcpStream::connect(&proxy.upstream).await.context("the DC")?;
    let dc = tokio_rustls::TlsConnector::from(proxy.client_tls.clone())
        .connect(name, up)
        .await
        .context("TLS with the DC")?;
    let (client_rd, client_wr) = tokio::io::split(client);
    let (dc_rd, dc_wr) = tokio::io::split(dc);
    let client_wr = Arc::new(tokio::sync::Mutex::new(client_wr));
    let searches: Arc<Mutex<HashMap<i64, Search>>> = Arc::default();
    let up = to_dc(client_rd, dc_wr, client_wr.clone(), searches.clone(), proxy.clone());
    let down = to_client(dc_rd, client_wr, searches, proxy);
    tokio::select! {
        r = up => r,
        r = down => r,
    }
}

fn log(notes: Vec<Note>) {
    for n in notes {
        eprintln!("windows-limits: {n:?}");
    }
}

fn parse_range_upper(s: &str) -> Result<(String, usize), String> {
    let (attr, n) = s.split_once('=').ok_or("expected ATTRIBUTE=CHARACTERS")?;
    Ok((attr.to_ascii_lowercase(), n.parse().map_err(|e| format!("{n}: {e}"))?))
}

/// Reads one BER frame; `None` at the end of the stream.
async fn frame(rd: &mut (impl AsyncRead + Unpin), buf: &mut Vec<u8>) -> anyhow::Result<Option<Vec<u8>>> {
    loop {
        if let Some(len) = msg::frame_len(buf) {
            let len = len.map_err(anyhow::Error::msg)?;
            if buf.len() >= len {
                return Ok(Some(buf.drain(..len).collect()));
            }
        }
        let mut chunk = [0u8; 16 * 1024];
        let n = rd.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn to_dc(
    mut client: impl AsyncRead + Unpin,
    mut dc: impl AsyncWrite + Unpin,
    client_wr: Arc<tokio::sync::Mutex<impl AsyncWrite + Unpin>>,
    searches: Arc<Mutex<HashMap<i64, Search>>>,
    proxy: Arc<Proxy>,
) -> anyhow::Result<()> {
    let mut buf = Vec::new();
    while let Some(bytes) = frame(&mut client, &mut buf).await? {
        let Ok(mut m) = Message::parse(&bytes) else {
            dc.write_all(&bytes).await?;
            continue;
        };
        let mut notes = Vec::new();
        let verdict = match proxy.policy.request(&mut m, &mut notes) {
            Ok(search) => refusal(&proxy, &m, &mut notes).await.map_or(Ok(search), |(c, t)| Err((c, t.to_string()))),
            Err(refused) => Err(refused),
        };
        let changed = notes.iter().any(|n| matches!(n, Note::PageCut { .. } | Note::Hidden(_)));
        // AbandonRequest ([APPLICATION 16], the id of the operation): that search ends here.
        if let (Some(op::ABANDON_REQUEST), lber::structure::PL::P(id)) = (m.kind(), &m.op.payload) {
            searches.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.remove(&msg::int(id));
        }
        log(notes);
        match verdict {
            Ok(search) => {
                if let Some(s) = search {
                    searches.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.insert(m.id, s);
                }
                let out = if changed { m.encode() } else { bytes };
                dc.write_all(&out).await?;
            }
            Err((code, text)) => {
                let kind = if m.kind() == Some(op::ADD_REQUEST) { op::ADD_RESPONSE } else { op::MODIFY_RESPONSE };
                let answer = Message { id: m.id, op: msg::result(kind, code, &text), controls: None };
                client_wr.lock().await.write_all(&answer.encode()).await?;
            }
        }
    }
    Ok(())
}

async fn to_client(
    mut dc: impl AsyncRead + Unpin,
    client_wr: Arc<tokio::sync::Mutex<impl AsyncWrite + Unpin>>,
    searches: Arc<Mutex<HashMap<i64, Search>>>,
    proxy: Arc<Proxy>,
) -> anyhow::Result<()> {
    let mut buf = Vec::new();
    while let Some(bytes) = frame(&mut dc, &mut buf).await? {
        let Ok(m) = Message::parse(&bytes) else {
            client_wr.lock().await.write_all(&bytes).await?;
            continue;
        };
        let mut notes = Vec::new();
        let out = {
            let mut all = searches.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
            match (m.kind(), all.get_mut(&m.id)) {
                (Some(op::SEARCH_ENTRY), Some(s)) => proxy.policy.entry(m, s, &mut notes).map(Message::encode),
                (Some(op::SEARCH_DONE), Some(_)) => {
                    let s = all.remove(&m.id);
                    s.map(|mut s| proxy.policy.done(m, &mut s, &mut notes).encode())
                }
                (Some(op::ADD_RESPONSE | op::MODIFY_RESPONSE | op::MODDN_RESPONSE), _) => {
                    Some(proxy.policy.write_result(m, &mut notes).encode())
                }
                _ => Some(bytes),
            }
        };
        log(notes);
        if let Some(out) = out {
            client_wr.lock().await.write_all(&out).await?;
        }
    }
    Ok(())
}

/// Windows refuses a domain-local group as a member of a universal group (ERROR 8518); Samba
/// does not. Looked up on the DC: the group's groupType, and the domain-local groups (one
/// search, however many members are added), each by DN, `<GUID=…>` and `<SID=…>`.
async fn refusal(proxy: &Proxy, m: &Message, notes: &mut Vec<Note>) -> Option<(i64, &'static str)> {
    let (dn, pw) = proxy.lookups.as_ref()?;
    let (target, target_type, members) = member_additions(m)?;
    let mut conn = proxy.lookup_conn.lock().await;
    let mut locals = None;
    for _attempt in 0..2 {
        if conn.is_none() {
            match lookup_connection(&proxy.upstream, proxy.client_tls.clone(), dn, pw).await {
                Ok(l) => *conn = Some(l),
                Err(e) => {
                    notes.push(Note::LookupFailed(format!("{e:#}")));
                    return None;
                }
            }
        }
        let ldap = conn.as_mut()?;
        let target_type = match target_type {
            Some(t) => t,
            None => group_type(ldap, &target).await?,
        };
        if target_type & 8 == 0 {
            return None;
        }
        locals = domain_local_groups(ldap).await;
        if locals.is_some() {
            break;
        }
        // The connection failed (or went idle): once more on a new one.
        *conn = None;
    }
    let Some(locals) = locals else {
        notes.push(Note::LookupFailed("the domain-local groups could not be read".into()));
        return None;
    };
    let member = members.iter().find(|v| locals.contains(&v.to_ascii_lowercase()))?;
    notes.push(Note::Refused(format!("{member}: a domain-local group in a universal group")));
    Some(policy::windows::UNIVERSAL_LOCAL)
}

async fn group_type(ldap: &mut ldap3::Ldap, dn: &str) -> Option<i64> {
    let (entries, _) =
        ldap.search(dn, ldap3::Scope::Base, "(objectClass=group)", vec!["groupType"]).await.ok()?.success().ok()?;
    let e = ldap3::SearchEntry::construct(entries.into_iter().next()?);
    e.attrs.get("groupType")?.first()?.parse().ok()
}

/// Every domain-local group of the directory, as the forms a member value can take (lower case).
async fn domain_local_groups(ldap: &mut ldap3::Ldap) -> Option<std::collections::HashSet<String>> {
    // The extended DN control, string form: each DN comes as `<GUID=…>;<SID=…>;DN`.
    let extended = ldap3::controls::RawControl {
        ctype: "1.2.840.113556.1.4.529".into(),
        crit: false,
        val: Some(vec![0x30, 0x03, 0x02, 0x01, 0x01]),
    };
    let (root, _) = ldap
        .search("", ldap3::Scope::Base, "(objectClass=*)", vec!["defaultNamingContext"])
        .await
        .ok()?
        .success()
        .ok()?;
    let root = ldap3::SearchEntry::construct(root.into_iter().next()?);
    let base = root.attrs.get("defaultNamingContext")?.first()?.clone();
    // objectCategory is indexed (objectClass scans): a seventh of the time on the test DC.
    let filter = "(&(objectCategory=group)(groupType:1.2.840.113556.1.4.803:=4))";
    let (entries, _) = ldap
        .with_controls(vec![extended])
        .search(&base, ldap3::Scope::Subtree, filter, vec!["1.1"])
        .await
        .ok()?
        .success()
        .ok()?;
    let mut out = std::collections::HashSet::new();
    for e in entries.into_iter().map(ldap3::SearchEntry::construct) {
        for part in e.dn.splitn(3, ';') {
            out.insert(part.to_ascii_lowercase());
        }
    }
    Some(out)
}

/// The group a request adds members to, its groupType when the request sets it (an add), and
/// the member values added.
fn member_additions(m: &Message) -> Option<(String, Option<i64>, Vec<String>)> {
    use lber::structure::PL;
    let parts = m.parts();
    let target = msg::text(parts.first()?)?;
    let PL::C(items) = &parts.get(1)?.payload else { return None };
    let values = |attr: &lber::structure::StructureTag| -> Option<(String, Vec<String>)> {
        let PL::C(p) = &attr.payload else { return None };
        let name = msg::text(p.first()?)?;
        let PL::C(vals) = &p.get(1)?.payload else { return None };
        Some((name, vals.iter().filter_map(msg::text).collect()))
    };
    let mut members = Vec::new();
    let mut group_type = None;
    for item in items {
        match m.kind()? {
            op::ADD_REQUEST => {
                let (name, vals) = values(item)?;
                if name.eq_ignore_ascii_case("member") {
                    members.extend(vals);
                } else if name.eq_ignore_ascii_case("groupType") {
                    group_type = vals.first().and_then(|v| v.parse().ok());
                }
            }
            op::MODIFY_REQUEST => {
                let PL::C(change) = &item.payload else { continue };
                let is_add = matches!(&change.first()?.payload, PL::P(b) if msg::int(b) != 1);
                let (name, vals) = values(change.get(1)?)?;
                if is_add && name.eq_ignore_ascii_case("member") {
                    members.extend(vals);
                }
            }
            _ => return None,
        }
    }
    if members.is_empty() || (m.kind() == Some(op::ADD_REQUEST) && group_type.is_none()) {
        return None;
    }
    Some((target, group_type, members))
}
