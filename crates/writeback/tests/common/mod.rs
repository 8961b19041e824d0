//! The end-to-end harness: a real Samba AD DC over LDAPS (started by `scripts/samba-dc`), the
//! Graph simulator over HTTP, and the real `writeback` binary. Each fixture works in its own
//! OU and with its own ids, so tests run side by side on one DC.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub mod chaos;
pub mod pg;
pub mod windows;

use ldap3::controls::RawControl;
use ldap3::{LdapConn, LdapConnSettings, Mod, Scope, SearchEntry};
use serde_json::{json, Value};

pub const SECRET: &str = "sim-client-secret-9f8e7d";
pub const CLIENT_ID: &str = "11111111-2222-3333-4444-555555555555";
pub const UNIVERSAL_SECURITY: i32 = -2147483640;
pub const UNIVERSAL_DISTRIBUTION: i32 = 8;

/// The DC, from the environment `scripts/samba-dc` writes.
#[derive(Clone)]
pub struct Dc {
    /// What writeback is given as `[ad] url`: the DC, or a layer in front of it.
    pub url: String,
    /// The DC itself (the layer's upstream).
    pub upstream: String,
    pub ca: PathBuf,
    pub bind_dn: String,
    pub password: String,
    pub base_dn: String,
    /// Where tests make their OUs: the delegated account's rights apply there.
    pub tests_ou: String,
    /// The least-privilege account of docs/permissions.md (UPN, password).
    pub delegated: (String, String),
}

/// What every test of this file needs, and how to get it: said once, plainly, instead of a
/// failure deep inside a test.
const NEEDS_DC: &str = "this is an end-to-end test (crates/writeback/tests/e2e_*.rs): it runs the real binary \
    against the test Samba AD DC. Start the DC and load its settings with\n    \
    scripts/samba-dc start && source /var/tmp/writeback-dc/env\nthen run cargo test again, or run \
    everything with scripts/test (it installs Samba and starts the DC). The tests that need no DC: \
    cargo test --workspace --lib --bins";

pub fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("${name} is not set: {NEEDS_DC}"))
}

/// The DC answers on its LDAPS port (checked once per test binary).
fn dc_answers(url: &str) {
    static CHECKED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let result = CHECKED.get_or_init(|| {
        let authority = url.split("://").nth(1).unwrap_or(url).trim_end_matches('/');
        let default_port = if url.starts_with("ldaps://") { 636 } else { 389 };
        let addr = if authority.contains(':') { authority.to_string() } else { format!("{authority}:{default_port}") };
        let addrs = std::net::ToSocketAddrs::to_socket_addrs(&addr).map_err(|e| format!("{addr}: {e}"))?;
        addrs
            .into_iter()
            .find_map(|a| TcpStream::connect_timeout(&a, Duration::from_secs(3)).ok())
            .map(drop)
            .ok_or_else(|| format!("nothing answers at {addr}"))
    });
    if let Err(e) = result {
        panic!("the test DC ($WRITEBACK_TEST_LDAP_URL = {url}) does not answer ({e}): {NEEDS_DC}");
    }
}

impl Dc {
    pub fn from_env() -> Dc {
        dc_answers(&env("WRITEBACK_TEST_LDAP_URL"));
        let pw_file = env("WRITEBACK_TEST_BIND_PASSWORD_FILE");
        let password =
            std::fs::read_to_string(&pw_file).unwrap_or_else(|e| panic!("reading {pw_file}: {e}")).trim().to_string();
        let delegated_file = env("WRITEBACK_TEST_DELEGATED_PASSWORD_FILE");
        let delegated_password = std::fs::read_to_string(&delegated_file)
            .unwrap_or_else(|e| panic!("reading {delegated_file}: {e}"))
            .trim()
            .to_string();
        Dc {
            url: env("WRITEBACK_TEST_LDAP_URL"),
            upstream: env("WRITEBACK_TEST_LDAP_URL"),
            ca: env("WRITEBACK_TEST_CA").into(),
            bind_dn: env("WRITEBACK_TEST_BIND_DN"),
            password,
            base_dn: env("WRITEBACK_TEST_BASE_DN"),
            tests_ou: env("WRITEBACK_TEST_TESTS_OU"),
            delegated: (env("WRITEBACK_TEST_DELEGATED_DN"), delegated_password),
        }
    }

    /// The harness's own connection: to the DC itself, never through a layer.
    pub fn connect(&self) -> LdapConn {
        self.connect_to(&self.upstream)
    }

    pub fn connect_to(&self, url: &str) -> LdapConn {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut roots = rustls::RootCertStore::empty();
        let pem = std::fs::read(&self.ca).expect("CA file");
        for cert in rustls_pemfile_certs(&pem) {
            roots.add(cert).expect("CA cert");
        }
        let tls = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
        let settings = LdapConnSettings::new().set_config(Arc::new(tls));
        let mut ldap = LdapConn::with_settings(settings, url).expect("connect to the test DC");
        ldap.simple_bind(&self.bind_dn, &self.password).expect("bind").success().expect("bind ok");
        ldap
    }
}

fn rustls_pemfile_certs(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem).map(|c| c.expect("PEM")).collect()
}

fn extended_dn() -> RawControl {
    RawControl { ctype: "1.2.840.113556.1.4.529".into(), crit: false, val: Some(vec![0x30, 0x03, 0x02, 0x01, 0x01]) }
}

/// (guid, sid, dn) from `<GUID=…>;<SID=…>;dn`.
pub fn split_extended(v: &str) -> (String, Option<String>, String) {
    let mut rest = v;
    let (mut guid, mut sid) = (String::new(), None);
    while let Some(s) = rest.strip_prefix('<') {
        let end = s.find('>').expect("extended dn");
        let part = &s[..end];
        if let Some(g) = part.strip_prefix("GUID=") {
            guid = g.to_ascii_lowercase();
        } else if let Some(x) = part.strip_prefix("SID=") {
            sid = Some(x.to_string());
        }
        rest = s[end + 1..].trim_start_matches(';');
    }
    (guid, sid, rest.to_string())
}

/// An AD object the fixture made.
#[derive(Clone, Debug)]
pub struct AdObj {
    pub dn: String,
    pub guid: String,
    pub sid: String,
}

impl AdObj {
    /// Graph's `onPremisesImmutableId`: base64 of the objectGUID bytes.
    pub fn immutable_id(&self) -> String {
        use base64::Engine;
        let h: Vec<u8> = self
            .guid
            .replace('-', "")
            .as_bytes()
            .chunks(2)
            .map(|c| u8::from_str_radix(std::str::from_utf8(c).expect("hex"), 16).expect("hex"))
            .collect();
        let b = [h[3], h[2], h[1], h[0], h[5], h[4], h[7], h[6], h[8], h[9], h[10], h[11], h[12], h[13], h[14], h[15]];
        base64::engine::general_purpose::STANDARD.encode(b)
    }
}

/// A group as read back from AD by the harness (independently of writeback's reader).
#[derive(Clone, Debug)]
pub struct AdGroupView {
    pub dn: String,
    pub guid: String,
    pub sid: String,
    pub attrs: BTreeMap<String, Vec<String>>,
    /// Member GUIDs.
    pub members: Vec<String>,
}

impl AdGroupView {
    pub fn one(&self, attr: &str) -> Option<&str> {
        self.attrs.get(&attr.to_ascii_lowercase()).and_then(|v| v.first()).map(String::as_str)
    }
    pub fn group_type(&self) -> i32 {
        self.one("groupType").and_then(|s| s.parse().ok()).expect("groupType")
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub struct Fixture {
    pub dc: Dc,
    pub ldap: LdapConn,
    /// Unique per fixture: used in ids, names and the OU.
    pub token: String,
    pub ou: String,
    pub groups_ou: String,
    pub users_ou: String,
    pub dir: PathBuf,
    sim: Option<(Child, String)>,
    n: u32,
    /// Run writeback as Administrator instead of the delegated account.
    pub as_administrator: bool,
    /// Leave the OU, the files and the simulator in place (the demo).
    keep: bool,
    /// The Windows-limits layer writeback talks to, in the suite's second pass (see `create`).
    layer: Option<windows::WindowsDc>,
}

impl Fixture {
    pub fn new(name: &str) -> Fixture {
        Fixture::create(name, None)
    }

    /// A fixture that outlives the process: a fixed OU (recreated), files in `dir`, and the
    /// simulator left running. For the demo.
    pub fn persistent(ou_name: &str, dir: &Path) -> Fixture {
        Fixture::create(ou_name, Some(dir))
    }

    fn create(name: &str, keep_in: Option<&Path>) -> Fixture {
        let dc = Dc::from_env();
        let mut ldap = dc.connect();
        let seq = COUNTER.fetch_add(1, Ordering::SeqCst);
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let token = format!("{:08x}", (std::process::id().wrapping_mul(2654435761) ^ nanos ^ (seq << 24)));
        let ou = match keep_in {
            Some(_) => format!("OU={name},{}", dc.tests_ou),
            None => format!("OU=wb-{name}-{token},{}", dc.tests_ou),
        };
        if keep_in.is_some() {
            let tree = RawControl { ctype: "1.2.840.113556.1.4.805".into(), crit: true, val: None };
            let _ = ldap.with_controls(vec![tree]).delete(&ou);
        }
        let groups_ou = format!("OU=Groups,{ou}");
        let users_ou = format!("OU=Users,{ou}");
        for dn in [&ou, &groups_ou, &users_ou] {
            ldap.add(dn, vec![("objectClass", HashSet::from(["organizationalUnit"]))])
                .expect("add OU")
                .success()
                .expect("OU added");
        }
        let dir = keep_in
            .map(Path::to_path_buf)
            .unwrap_or_else(|| std::env::temp_dir().join(format!("writeback-e2e-{name}-{token}")));
        // A fresh start: no state or config from an earlier run.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("work dir");
        let dir = dir.canonicalize().expect("work dir path");
        let mut fx = Fixture {
            dc,
            ldap,
            token,
            ou,
            groups_ou,
            users_ou,
            dir,
            sim: None,
            n: 0,
            as_administrator: false,
            keep: keep_in.is_some(),
            layer: None,
        };
        // The suite's second pass (scripts/test): writeback talks to the DC through the
        // Windows-limits layer, as a Windows Server 2012 R2 DC without Exchange's schema
        // (`windows-2012r2`: no msDS-ExternalDirectoryObjectId, mailNickname, extensionAttributeN
        // or msExch*) or a 2016 one with it (`windows`). The fixture's own reads and writes stay
        // direct.
        let extra: Option<&[&str]> = match std::env::var("WRITEBACK_TEST_LAYER").as_deref() {
            Ok("windows") => Some(&[]),
            Ok("windows-2012r2") => Some(WITHOUT_2016_OR_EXCHANGE),
            Ok("") | Err(_) => None,
            Ok(other) => panic!("WRITEBACK_TEST_LAYER={other}: give windows or windows-2012r2"),
        };
        if let Some(extra) = extra {
            let layer = windows::WindowsDc::start(&fx, extra);
            fx.dc.url = layer.url.clone();
            fx.layer = Some(layer);
        }
        fx
    }

    /// A cloud object id unique to this fixture.
    pub fn id(&self, n: u32) -> String {
        format!("{}-0000-4000-8000-{n:012}", self.token)
    }

    pub fn create_user(&mut self, name: &str) -> AdObj {
        self.n += 1;
        let sam = format!("u{}{}", &self.token[..6], self.n);
        let dn = format!("CN={name},{}", self.users_ou);
        self.ldap
            .add(&dn, vec![("objectClass", HashSet::from(["user"])), ("sAMAccountName", HashSet::from([sam.as_str()]))])
            .expect("add user")
            .success()
            .expect("user added");
        self.read_obj(&dn)
    }

    /// A computer account (a domain-joined machine), in the fixture's users OU.
    pub fn create_computer(&mut self, name: &str) -> AdObj {
        self.n += 1;
        let sam = format!("c{}{}$", &self.token[..6], self.n);
        let dn = format!("CN={name},{}", self.users_ou);
        self.ldap
            .add(
                &dn,
                vec![
                    ("objectClass", HashSet::from(["computer"])),
                    ("sAMAccountName", HashSet::from([sam.as_str()])),
                    ("userAccountControl", HashSet::from(["4096"])),
                ],
            )
            .expect("add computer")
            .success()
            .expect("computer added");
        self.read_obj(&dn)
    }

    /// Many users over one connection (for large groups).
    pub fn create_users(&mut self, prefix: &str, count: usize) -> Vec<AdObj> {
        (0..count).map(|i| self.create_user(&format!("{prefix}{i}"))).collect()
    }

    /// `count` AD users and their synced cloud twins (cloud ids `id(10_000 + i)`):
    /// (AD objects, cloud ids, cloud users for the tenant).
    pub fn synced_users(&mut self, count: usize) -> (Vec<AdObj>, Vec<String>, Vec<Value>) {
        let users = self.create_users("user", count);
        let uids: Vec<String> = (0..count).map(|i| self.id(10_000 + i as u32)).collect();
        let cloud = users.iter().zip(&uids).map(|(u, id)| synced_user(id, u)).collect();
        (users, uids, cloud)
    }

    /// A group writeback does not own (or a group "synced from AD").
    pub fn create_group(&mut self, cn: &str, group_type: i32, parent: Option<&str>) -> AdObj {
        self.n += 1;
        let sam = format!("g{}{}", &self.token[..6], self.n);
        let parent = parent.map(str::to_string).unwrap_or_else(|| self.users_ou.clone());
        let dn = format!("CN={cn},{parent}");
        let gt = group_type.to_string();
        self.ldap
            .add(
                &dn,
                vec![
                    ("objectClass", HashSet::from(["group"])),
                    ("sAMAccountName", HashSet::from([sam.as_str()])),
                    ("groupType", HashSet::from([gt.as_str()])),
                ],
            )
            .expect("add group")
            .success()
            .expect("group added");
        self.read_obj(&dn)
    }

    /// An organizational unit, as Administrator.
    pub fn add_ou(&mut self, dn: &str) {
        self.ldap
            .add(dn, vec![("objectClass", HashSet::from(["organizationalUnit"]))])
            .expect("add OU")
            .success()
            .expect("OU added");
    }

    /// Rewrites the config file written by `write_config`.
    pub fn edit_config(&self, f: impl FnOnce(String) -> String) {
        let path = self.dir.join("writeback.toml");
        let text = std::fs::read_to_string(&path).expect("config");
        std::fs::write(&path, f(text)).expect("write config");
    }

    /// `writeback sync` started in the background (for failure tests).
    pub fn spawn_sync(&self) -> Child {
        let bin =
            option_env!("CARGO_BIN_EXE_writeback").map(PathBuf::from).unwrap_or_else(|| sibling_binary("writeback"));
        Command::new(bin)
            .arg("-c")
            .arg(self.dir.join("writeback.toml"))
            .arg("sync")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start writeback")
    }

    pub fn read_obj(&mut self, dn: &str) -> AdObj {
        let (entries, _) = self
            .ldap
            .with_controls(vec![extended_dn()])
            .search(dn, Scope::Base, "(objectClass=*)", vec!["1.1"])
            .expect("search")
            .success()
            .expect("found");
        let e = SearchEntry::construct(entries.into_iter().next().expect("one entry"));
        let (guid, sid, dn) = split_extended(&e.dn);
        AdObj { dn, guid, sid: sid.unwrap_or_default() }
    }

    pub fn modify(&mut self, dn: &str, mods: Vec<Mod<&str>>) {
        self.ldap.modify(dn, mods).expect("modify").success().expect("modify ok");
    }

    /// Every group under `base`, read back with complete (ranged) member lists.
    pub fn groups(&mut self, base: &str) -> Vec<AdGroupView> {
        let attrs = vec![
            "cn",
            "sAMAccountName",
            "displayName",
            "description",
            "groupType",
            "adminDescription",
            "msDS-ExternalDirectoryObjectId",
            "mail",
            "proxyAddresses",
            "mailNickname",
            "info",
            "extensionAttribute1",
            "extensionAttribute2",
            "whenChanged",
            "uSNChanged",
        ];
        let (entries, _) = self
            .ldap
            .with_controls(vec![extended_dn()])
            .search(base, Scope::Subtree, "(objectClass=group)", attrs)
            .expect("search")
            .success()
            .expect("ok");
        let mut out = Vec::new();
        for e in entries {
            let e = SearchEntry::construct(e);
            let (guid, sid, dn) = split_extended(&e.dn);
            let attrs = e.attrs.into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect();
            // A group deleted (by a running daemon) between the list and its members is gone.
            let Some(members) = self.members_if_there(&dn) else { continue };
            out.push(AdGroupView { dn, guid, sid: sid.unwrap_or_default(), attrs, members });
        }
        out.sort_by(|a, b| a.dn.cmp(&b.dn));
        out
    }

    /// Member GUIDs with explicit ranged retrieval, 1,000 at a time.
    pub fn members(&mut self, dn: &str) -> Vec<String> {
        self.members_if_there(dn).unwrap_or_else(|| panic!("{dn} is gone"))
    }

    /// `None` when the object is gone (Samba: noSuchObject, 32).
    fn members_if_there(&mut self, dn: &str) -> Option<Vec<String>> {
        let mut out = Vec::new();
        let mut lo = 0;
        loop {
            let attr = format!("member;range={lo}-{}", lo + 999);
            let res = self
                .ldap
                .with_controls(vec![extended_dn()])
                .search(dn, Scope::Base, "(objectClass=*)", vec![attr.as_str()])
                .expect("search");
            if res.1.rc == 32 {
                return None;
            }
            let (entries, _) = res.success().expect("ok");
            let e = SearchEntry::construct(entries.into_iter().next().expect("entry"));
            let Some((key, vals)) = e.attrs.into_iter().find(|(k, _)| k.starts_with("member;range=")) else {
                return Some(out);
            };
            out.extend(vals.iter().map(|v| split_extended(v).0));
            if key.ends_with("-*") {
                return Some(out);
            }
            lo += 1000;
        }
    }

    /// One group by DN, whoever owns it.
    pub fn read_view(&mut self, dn: &str) -> AdGroupView {
        self.groups(dn).into_iter().find(|g| g.dn.eq_ignore_ascii_case(dn)).unwrap_or_else(|| panic!("{dn} is gone"))
    }

    pub fn group(&mut self, cloud_id: &str) -> Option<AdGroupView> {
        let marker = format!("Group_{cloud_id}");
        let ou = self.ou.clone();
        self.groups(&ou).into_iter().find(|g| g.one("adminDescription") == Some(marker.as_str()))
    }

    // ---- the simulator ----

    pub fn start_sim(&mut self, tenant: &Value) {
        let bin = sibling_binary("writeback-graph-sim");
        let file = self.dir.join("tenant.json");
        std::fs::write(&file, serde_json::to_vec_pretty(tenant).expect("json")).expect("write tenant");
        let mut child = Command::new(bin)
            .arg("--tenant")
            .arg(&file)
            .stdout(Stdio::piped())
            .stderr(if self.keep {
                Stdio::from(std::fs::File::create(self.dir.join("simulator.log")).expect("log file"))
            } else {
                Stdio::inherit()
            })
            .spawn()
            .expect("start the simulator");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("simulator banner");
        let url = line.trim().strip_prefix("listening on ").expect("banner").to_string();
        self.sim = Some((child, url));
    }

    /// Stops the simulator (a persistent fixture otherwise leaves it running, for the demo).
    pub fn stop_sim(&mut self) {
        if let Some((mut child, _)) = self.sim.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn sim_pid(&self) -> Option<u32> {
        self.sim.as_ref().map(|(c, _)| c.id())
    }

    pub fn sim_url(&self) -> &str {
        &self.sim.as_ref().expect("simulator started").1
    }

    pub fn sim_call(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        http(self.sim_url(), method, path, body)
    }

    /// A Graph call as another app of the tenant (an administrator's tool, say): its own
    /// token, then the request. (status, body).
    pub fn graph_as(&self, client_id: &str, secret: &str, method: &str, path: &str, body: &Value) -> (u16, Value) {
        let form = format!(
            "grant_type=client_credentials&client_id={client_id}&client_secret={secret}&\
             scope=https%3A%2F%2Fgraph.microsoft.com%2F.default"
        );
        let host = self.sim_url().trim_start_matches("http://").to_string();
        let form_headers = [("Host", host.as_str()), ("Content-Type", "application/x-www-form-urlencoded")];
        let (_, token) = http_with(
            self.sim_url(),
            "POST",
            "/contoso.onmicrosoft.com/oauth2/v2.0/token",
            &form_headers,
            form.as_bytes(),
        )
        .expect("token endpoint");
        let token: Value = serde_json::from_str(&token).expect("token JSON");
        let bearer = format!("Bearer {}", token["access_token"].as_str().expect("a token"));
        let headers =
            [("Host", host.as_str()), ("Content-Type", "application/json"), ("Authorization", bearer.as_str())];
        let payload = serde_json::to_vec(body).expect("json");
        let (status, text) = http_with(self.sim_url(), method, path, &headers, &payload).expect("Graph answers");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub fn set_tenant(&self, tenant: &Value) {
        self.sim_call("PUT", "/_control/tenant", Some(tenant));
    }

    // ---- writeback ----

    /// The account writeback binds as: the delegated one unless `as_administrator`.
    pub fn bind_upn(&self) -> &str {
        if self.as_administrator {
            &self.dc.bind_dn
        } else {
            &self.dc.delegated.0
        }
    }

    pub fn bind_password(&self) -> &str {
        if self.as_administrator {
            &self.dc.password
        } else {
            &self.dc.delegated.1
        }
    }

    pub fn write_config(&self, extra: &str) -> PathBuf {
        let pw = self.dir.join("bind-password");
        std::fs::write(&pw, self.bind_password()).expect("write password");
        let secret = self.dir.join("client-secret");
        std::fs::write(&secret, SECRET).expect("write secret");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for f in [&pw, &secret] {
                std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o600)).expect("chmod");
            }
        }
        let (writeback_extra, rest) = split_sections(extra);
        let cfg = format!(
            r#"[cloud]
tenant_id = "contoso.onmicrosoft.com"
client_id = "{CLIENT_ID}"
client_secret_file = "client-secret"
graph_url = "{sim}"
login_url = "{sim}"

[ad]
url = "{url}"
bind_dn = "{bind}"
bind_password_file = "bind-password"
ca_file = "{ca}"
target_ou = "{ou}"

[writeback]
{writeback_extra}

[state]
path = "state.db"
{rest}
"#,
            sim = self.sim_url(),
            url = self.dc.url,
            bind = self.bind_upn(),
            ca = self.dc.ca.display(),
            ou = self.groups_ou,
        );
        let path = self.dir.join("writeback.toml");
        std::fs::write(&path, cfg).expect("write config");
        path
    }

    /// The real binary against this fixture's config.
    fn writeback_command(&self, args: &[&str]) -> Command {
        let bin =
            option_env!("CARGO_BIN_EXE_writeback").map(PathBuf::from).unwrap_or_else(|| sibling_binary("writeback"));
        let mut c = Command::new(bin);
        c.arg("-c")
            .arg(self.dir.join("writeback.toml"))
            .args(args)
            .env_remove("WRITEBACK_CLIENT_SECRET")
            .env_remove("WRITEBACK_BIND_PASSWORD");
        c
    }

    /// Runs the real binary against this fixture's config.
    pub fn writeback(&self, args: &[&str]) -> Run {
        Run::from(self.writeback_command(args).output().expect("run writeback"))
    }

    /// Starts the binary and returns at once (for changes made while a cycle runs).
    pub fn spawn_writeback(&self, args: &[&str]) -> Child {
        self.writeback_command(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start writeback")
    }

    pub fn sync_json(&self, extra_args: &[&str]) -> (i32, Value) {
        let mut args = vec!["--json", "sync"];
        args.extend_from_slice(extra_args);
        let r = self.writeback(&args);
        (r.code, r.json())
    }

    /// The error `writeback errors` records for one cloud group, or "" when it has none.
    pub fn error_message(&self, cloud_id: &str) -> String {
        let errors = self.writeback(&["--json", "errors"]).json();
        let all = errors["errors"].as_array().cloned().unwrap_or_default();
        all.iter().find(|e| e["cloud_id"] == cloud_id).and_then(|e| e["message"].as_str()).unwrap_or("").to_string()
    }
}

/// What the layer hides for a Windows Server 2012 R2 DC whose forest never had Exchange.
const WITHOUT_2016_OR_EXCHANGE: &[&str] = &[
    "--hide-attribute",
    "msDS-ExternalDirectoryObjectId",
    "--hide-attribute",
    "mailNickname",
    "--hide-attribute",
    "msExchRecipientTypeDetails",
    "--hide-attribute",
    "extensionAttribute1",
    "--hide-attribute",
    "extensionAttribute2",
    "--hide-attribute",
    "extensionAttribute3",
    "--hide-attribute",
    "extensionAttribute4",
    "--hide-attribute",
    "extensionAttribute5",
    "--hide-attribute",
    "extensionAttribute6",
    "--hide-attribute",
    "extensionAttribute7",
    "--hide-attribute",
    "extensionAttribute8",
    "--hide-attribute",
    "extensionAttribute9",
    "--hide-attribute",
    "extensionAttribute10",
    "--hide-attribute",
    "extensionAttribute11",
    "--hide-attribute",
    "extensionAttribute12",
    "--hide-attribute",
    "extensionAttribute13",
    "--hide-attribute",
    "extensionAttribute14",
    "--hide-attribute",
    "extensionAttribute15",
];

/// `[writeback]` keys and other sections from a test's extra config.
fn split_sections(extra: &str) -> (String, String) {
    match extra.find("\n[") {
        Some(i) if !extra.trim_start().starts_with('[') => (extra[..i].to_string(), extra[i..].to_string()),
        _ if extra.trim_start().starts_with('[') => (String::new(), extra.to_string()),
        _ => (extra.to_string(), String::new()),
    }
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into(),
            stderr: String::from_utf8_lossy(&o.stderr).into(),
        }
    }
}

impl Run {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}):\nstdout: {}\nstderr: {}", self.stdout, self.stderr))
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        self.stop_sim();
        // Tree delete (1.2.840.113556.1.4.805) removes the test OU and all below it.
        let tree = RawControl { ctype: "1.2.840.113556.1.4.805".into(), crit: true, val: None };
        let _ = self.ldap.with_controls(vec![tree]).delete(&self.ou);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A binary of this workspace in the target directory (tests live in `deps/`, examples in `examples/`).
/// Runs one SQL statement on a SQLite state file with the `sqlite3` shell (how an administrator
/// or an attacker with the file would change it); returns what it printed.
pub fn sqlite(db: &Path, statement: &str) -> String {
    let out = Command::new("sqlite3").arg(db).arg(statement).output().expect("sqlite3 (scripts/test installs it)");
    assert!(out.status.success(), "sqlite3: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim_end().to_string()
}

pub fn sibling_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join(name);
    assert!(bin.exists(), "{} is missing: build it first (cargo build --workspace --bins)", bin.display());
    bin
}

/// A minimal HTTP/1.1 client: (status, body text). `None` when nothing listens.
pub fn http_raw(base: &str, method: &str, path: &str, body: Option<&Value>) -> Option<(u16, String)> {
    let host = base.trim_start_matches("http://");
    let payload = body.map(|b| serde_json::to_vec(b).expect("json")).unwrap_or_default();
    let headers = [("Host", host), ("Content-Type", "application/json")];
    http_with(base, method, path, &headers, &payload)
}

/// One HTTP/1.1 request with exactly these headers (a browser's, a forged Host…).
pub fn http_with(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    payload: &[u8],
) -> Option<(u16, String)> {
    http_exchange(base, method, path, headers, payload).map(|(status, _, body)| (status, body))
}

/// `http_with`, with the response head too: (status, head, body).
pub fn http_exchange(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    payload: &[u8],
) -> Option<(u16, String, String)> {
    let host = base.trim_start_matches("http://");
    let mut s = TcpStream::connect(host).ok()?;
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\nConnection: close\r\n\r\n", payload.len()));
    s.write_all(head.as_bytes()).ok()?;
    s.write_all(payload).ok()?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).ok()?;
    let text = String::from_utf8_lossy(&resp).to_string();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    // Chunked bodies (axum streams some responses): join the chunks.
    let body =
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(body) } else { body.to_string() };
    Some((status, head.to_string(), body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// A minimal HTTP/1.1 client for the simulator's control API.
pub fn http(base: &str, method: &str, path: &str, body: Option<&Value>) -> Value {
    let host = base.trim_start_matches("http://");
    let mut s = TcpStream::connect(host).expect("connect to the simulator");
    let payload = body.map(|b| serde_json::to_vec(b).expect("json")).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: \
        application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        payload.len()
    )
    .expect("write");
    s.write_all(&payload).expect("write body");
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).expect("read");
    let text = String::from_utf8_lossy(&resp);
    let (head, body) = text.split_once("\r\n\r\n").expect("http response");
    assert!(head.starts_with("HTTP/1.1 2"), "{method} {path}: {head}\n{body}");
    serde_json::from_str(body).unwrap_or(Value::Null)
}

// ---- building tenants ----

pub fn app() -> Value {
    json!([{"client_id": CLIENT_ID, "client_secret": SECRET}])
}

pub fn synced_user(id: &str, obj: &AdObj) -> Value {
    let cn = obj.dn.split(',').next().unwrap_or("").trim_start_matches("CN=").to_string();
    json!({"id": id, "displayName": cn, "userPrincipalName": format!("{id}@corp.example.test"),
           "onPremisesSyncEnabled": true, "onPremisesSecurityIdentifier": obj.sid,
           "onPremisesImmutableId": obj.immutable_id()})
}

pub fn cloud_user(id: &str) -> Value {
    json!({"id": id, "displayName": format!("Guest {}", &id[id.len() - 4..]),
           "userPrincipalName": format!("{id}@contoso.onmicrosoft.com"), "onPremisesSyncEnabled": null,
           "onPremisesSecurityIdentifier": null, "onPremisesImmutableId": null})
}

pub fn security_group(id: &str, name: &str, enabled: Option<bool>, members: &[&str]) -> Value {
    json!({"id": id, "displayName": name, "description": null, "groupTypes": [], "securityEnabled": true,
           "mailEnabled": false, "mail": null, "mailNickname": name.to_lowercase().replace(' ', "-"),
           "proxyAddresses": [], "onPremisesSyncEnabled": null,
           "writebackConfiguration": {"isEnabled": enabled, "onPremisesGroupType": null}, "members": members})
}

pub fn m365_group(id: &str, name: &str, enabled: Option<bool>, ty: Option<&str>, members: &[&str]) -> Value {
    // Graph's mailNickname holds at most 64 characters.
    let nick: String = name.to_lowercase().replace(' ', "-").chars().take(64).collect();
    json!({"id": id, "displayName": name, "description": format!("{name} team"), "groupTypes": ["Unified"],
           "securityEnabled": false, "mailEnabled": true, "mail": format!("{nick}@contoso.com"), "mailNickname": nick,
           "proxyAddresses": [format!("SMTP:{nick}@contoso.com"), format!("smtp:{nick}@contoso.onmicrosoft.com")],
           "onPremisesSyncEnabled": null, "writebackConfiguration": {"isEnabled": enabled, "onPremisesGroupType": ty},
           "members": members})
}

pub fn tenant(users: Vec<Value>, groups: Vec<Value>) -> Value {
    json!({"apps": app(), "users": users, "groups": groups})
}

// ---- the daemon ----

/// A running `writeback run`, stopped (SIGTERM, then kill) when dropped.
pub struct Daemon {
    child: Option<Child>,
    pub url: String,
    /// Its stderr (the log), quoted when a wait times out.
    pub log: PathBuf,
}

impl Daemon {
    pub fn start(fx: &Fixture) -> Daemon {
        Daemon::start_on(fx, "127.0.0.1")
    }

    /// A daemon listening on `ip` (a free port), probed through 127.0.0.1. A port taken between
    /// `free_port` and the daemon's bind (an outgoing connection's ephemeral port) is replaced.
    pub fn start_on(fx: &Fixture, ip: &str) -> Daemon {
        for _ in 0..5 {
            let port = free_port();
            let bin = option_env!("CARGO_BIN_EXE_writeback")
                .map(PathBuf::from)
                .unwrap_or_else(|| sibling_binary("writeback"));
            let log_path = fx.dir.join(format!("daemon-{port}.log"));
            let log = std::fs::File::create(&log_path).expect("log");
            let child = Command::new(bin)
                .arg("-c")
                .arg(fx.dir.join("writeback.toml"))
                .args(["run", "--listen", &format!("{ip}:{port}")])
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start the daemon");
            let mut d = Daemon { child: Some(child), url: format!("http://127.0.0.1:{port}"), log: log_path };
            let until = Instant::now() + Duration::from_secs(20);
            let mut answered = false;
            loop {
                if let Some(Ok(Some(_))) = d.child.as_mut().map(Child::try_wait) {
                    // It left: someone else has the port (whatever answers there is not ours).
                    let log = std::fs::read_to_string(&d.log).unwrap_or_default();
                    assert!(log.contains("Address already in use"), "the daemon exited: {log}");
                    d.child = None;
                    break;
                }
                if answered {
                    return d;
                }
                // Something answers: ours if it is still running a moment later (a daemon that
                // could not bind has left by then).
                if d.health().is_some() {
                    answered = true;
                    std::thread::sleep(Duration::from_millis(300));
                    continue;
                }
                assert!(Instant::now() < until, "timed out waiting for the daemon at {} to listen", d.url);
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        panic!("no free port for the daemon after 5 tries")
    }

    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        http_raw(&self.url, "GET", path, None)
    }

    /// Sends the daemon a signal (`HUP`, `USR1`, …) as an administrator on the host does.
    pub fn signal(&self, name: &str) {
        let pid = self.child.as_ref().map(Child::id).expect("a running daemon").to_string();
        let ok = Command::new("kill").args([&format!("-{name}"), &pid]).status().is_ok_and(|s| s.success());
        assert!(ok, "kill -{name} {pid}");
    }

    pub fn health(&self) -> Option<(u16, Value)> {
        self.get("/healthz").map(|(s, b)| (s, serde_json::from_str(&b).unwrap_or(Value::Null)))
    }

    /// Polls `/healthz` until `pred` holds (20 s at most).
    pub fn wait_for(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some((_, h)) = self.health() {
                if pred(&h) {
                    return h;
                }
            }
            if Instant::now() >= until {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                panic!("timed out waiting for the daemon at {}: {what}; its log ends:\n{}", self.url, tail.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn metric(&self, line_start: &str) -> Option<f64> {
        let (_, text) = self.get("/metrics")?;
        text.lines().find(|l| l.starts_with(line_start)).and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok())
    }

    /// The exit status once the daemon ends on its own (20 s at most).
    pub fn wait_exit(&mut self) -> Option<i32> {
        let child = self.child.as_mut()?;
        let until = Instant::now() + Duration::from_secs(20);
        while Instant::now() < until {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    /// kill -9: the process dies at once, as when its host does.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn stop(&mut self) -> i32 {
        let Some(mut child) = self.child.take() else { return -1 };
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code().unwrap_or(-1);
            }
            if Instant::now() > until {
                let _ = child.kill();
                return -1;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < until, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
