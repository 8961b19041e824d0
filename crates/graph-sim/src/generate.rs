//! `writeback-graph-sim generate`: a synthetic tenant for benchmarks — N security groups
//! enabled for writeback, M synced users, a membership distribution with many small groups and
//! a few large ones, optionally one very large group, all reproducible from a seed. It also
//! writes the LDIF that creates the matching users in AD, and reads their objectSids back from
//! an `ldapsearch` LDIF, because a synced user's anchor is assigned by the DC, not by us.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{bail, Context};
use base64::Engine as _;
use serde_json::{json, Value};

#[derive(clap::Args, Debug)]
pub struct GenerateArgs {
    /// Security groups enabled for writeback.
    #[arg(long, default_value_t = 10_000)]
    groups: usize,
    /// Synced users (members come from them).
    #[arg(long, default_value_t = 50_000)]
    users: usize,
    /// Memberships over all groups: 1% of the groups hold a quarter of them, the rest are small.
    #[arg(long, default_value_t = 500_000)]
    memberships: usize,
    /// One more group with this many members (the first users), for the largest-group case.
    #[arg(long)]
    big_group: Option<usize>,
    /// Seed of every random choice: the same seed gives the same tenant.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Prefix of the users' sAMAccountNames and the groups' display names.
    #[arg(long, default_value = "bench")]
    prefix: String,
    /// Write the LDIF that creates the users under `--users-ou`.
    #[arg(long, requires = "users_ou")]
    users_ldif: Option<PathBuf>,
    #[arg(long)]
    users_ou: Option<String>,
    /// Leave the first N users out of the LDIF (made by an earlier, interrupted run).
    #[arg(long, default_value_t = 0)]
    users_ldif_skip: usize,
    /// An `ldapsearch` LDIF with sAMAccountName and objectSid of the users: gives the tenant's
    /// users their onPremisesSecurityIdentifier.
    #[arg(long)]
    sids: Option<PathBuf>,
    /// Write the tenant JSON here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// The app registration allowed to get tokens.
    #[arg(long, default_value = "11111111-2222-3333-4444-555555555555")]
    client_id: String,
    #[arg(long, default_value = "bench-client-secret")]
    client_secret: String,
}

/// splitmix64: small, fast, and the same everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn uuid(&mut self) -> String {
        let (a, b) = (self.next(), self.next());
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            0x8000 | (b >> 48) & 0x3fff,
            b & 0xffff_ffff_ffff
        )
    }
}

pub fn user_sam(prefix: &str, i: usize) -> String {
    format!("{prefix}u{i:06}")
}

/// Group sizes adding up to about `total`: a quarter in the largest 1%, the rest spread
/// uniformly around the mean of the small groups.
fn sizes(rng: &mut Rng, groups: usize, users: usize, total: usize) -> Vec<usize> {
    if groups == 0 {
        return Vec::new();
    }
    let large = (groups / 100).max(1).min(groups);
    let small = groups - large;
    let large_size = if small == 0 { total / large } else { total / 4 / large };
    let small_mean = (total - large_size * large).checked_div(small).unwrap_or(0);
    (0..groups)
        .map(|i| {
            let s = if i < large { large_size } else { 1 + rng.below(2 * small_mean.max(1) - 1) };
            s.min(users)
        })
        .collect()
}

/// `count` distinct user positions out of `users`.
fn pick(rng: &mut Rng, users: usize, count: usize) -> Vec<usize> {
    if count * 2 > users {
        let start = rng.below(users);
        return (0..count).map(|i| (start + i) % users).collect();
    }
    let mut seen = HashSet::with_capacity(count);
    while seen.len() < count {
        seen.insert(rng.below(users));
    }
    let mut v: Vec<usize> = seen.into_iter().collect();
    v.sort_unstable();
    v
}

/// "S-1-5-21-…" from the binary form AD stores.
fn sid_string(b: &[u8]) -> Option<String> {
    let (&rev, &count) = (b.first()?, b.get(1)?);
    let auth = b.get(2..8)?.iter().fold(0u64, |a, x| (a << 8) | u64::from(*x));
    let mut s = format!("S-{rev}-{auth}");
    for i in 0..usize::from(count) {
        let p = b.get(8 + 4 * i..12 + 4 * i)?;
        write!(s, "-{}", u32::from_le_bytes([p[0], p[1], p[2], p[3]])).ok()?;
    }
    Some(s)
}

/// sAMAccountName → SID from `ldapsearch -LLL … sAMAccountName objectSid` output.
fn read_sids(text: &str) -> anyhow::Result<HashMap<String, String>> {
    let mut out = HashMap::new();
    for entry in text.split("\n\n") {
        let (mut sam, mut sid) = (None, None);
        for line in entry.lines() {
            if let Some(v) = line.strip_prefix("sAMAccountName: ") {
                sam = Some(v.trim().to_ascii_lowercase());
            } else if let Some(v) = line.strip_prefix("objectSid:: ") {
                let bytes =
                    base64::engine::general_purpose::STANDARD.decode(v.trim()).context("objectSid is not base64")?;
                sid = sid_string(&bytes);
            }
        }
        if let (Some(a), Some(s)) = (sam, sid) {
            out.insert(a, s);
        }
    }
    Ok(out)
}

pub fn run(a: GenerateArgs) -> anyhow::Result<()> {
    if a.users == 0 || a.big_group.is_some_and(|b| b > a.users) {
        bail!("--users must be at least 1 and at least --big-group");
    }
    let mut rng = Rng(a.seed);
    let user_ids: Vec<String> = (0..a.users).map(|_| rng.uuid()).collect();
    if let (Some(path), Some(ou)) = (&a.users_ldif, &a.users_ou) {
        let mut ldif = String::with_capacity(a.users * 160);
        for i in a.users_ldif_skip..a.users {
            let sam = user_sam(&a.prefix, i);
            let _ = write!(
                ldif,
                "dn: CN={sam},{ou}\nobjectClass: user\nsAMAccountName: \
                    {sam}\nuserPrincipalName: {sam}@bench.invalid\n\n"
            );
        }
        std::fs::write(path, ldif).with_context(|| format!("writing {}", path.display()))?;
    }
    let Some(out) = &a.out else { return Ok(()) };
    let sids = match &a.sids {
        Some(p) => read_sids(&std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?)?,
        None => HashMap::new(),
    };
    let users: Vec<Value> = user_ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let sam = user_sam(&a.prefix, i);
            json!({"id": id, "displayName": sam, "userPrincipalName": format!("{sam}@bench.invalid"),
                   "onPremisesSyncEnabled": true, "onPremisesSecurityIdentifier": sids.get(&sam)})
        })
        .collect();
    let group = |rng: &mut Rng, name: String, members: Vec<&String>| {
        json!({"id": rng.uuid(), "displayName": name, "description": null, "groupTypes": [], "securityEnabled": true,
               "mailEnabled": false, "mail": null, "mailNickname": name, "proxyAddresses": [],
               "onPremisesSyncEnabled": null,
               "writebackConfiguration": {"isEnabled": true, "onPremisesGroupType": "universalSecurityGroup"},
               "members": members})
    };
    let mut groups = Vec::with_capacity(a.groups + 1);
    let mut total = 0;
    for (i, size) in sizes(&mut rng, a.groups, a.users, a.memberships).into_iter().enumerate() {
        let members: Vec<&String> = pick(&mut rng, a.users, size).into_iter().map(|u| &user_ids[u]).collect();
        total += members.len();
        groups.push(group(&mut rng, format!("{}-g{i:05}", a.prefix), members));
    }
    if let Some(b) = a.big_group {
        total += b;
        groups.push(group(&mut rng, format!("{}-big", a.prefix), user_ids[..b].iter().collect()));
    }
    let tenant = json!({
        "apps": [{"client_id": a.client_id, "client_secret": a.client_secret}],
        "users": users,
        "groups": groups
    });
    std::fs::write(out, serde_json::to_vec(&tenant)?).with_context(|| format!("writing {}", out.display()))?;
    eprintln!(
        "generated {} groups, {} users ({} with a SID), {total} memberships (seed {})",
        groups.len(),
        a.users,
        sids.len().min(a.users),
        a.seed
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_add_up_and_members_are_distinct() {
        let mut rng = Rng(7);
        let s = sizes(&mut rng, 1000, 5000, 50_000);
        let total: usize = s.iter().sum();
        assert!((45_000..=55_000).contains(&total), "{total}");
        assert_eq!(s[0], 50_000 / 4 / 10, "the largest 1% hold a quarter");
        for n in [1, 10, 2600, 5000] {
            let p = pick(&mut rng, 5000, n);
            assert_eq!(p.iter().collect::<HashSet<_>>().len(), n);
        }
        assert_eq!(Rng(3).uuid(), Rng(3).uuid(), "the same seed, the same ids");
    }

    #[test]
    fn sids_decode_like_ad_prints_them() {
        // S-1-5-21-1-2-3-1104
        let mut b = vec![1u8, 5, 0, 0, 0, 0, 0, 5];
        for x in [21u32, 1, 2, 3, 1104] {
            b.extend(x.to_le_bytes());
        }
        assert_eq!(sid_string(&b).as_deref(), Some("S-1-5-21-1-2-3-1104"));
        let ldif = format!(
            "dn: CN=a,DC=x\nsAMAccountName: benchu000001\nobjectSid:: {}\n\n",
            base64::engine::general_purpose::STANDARD.encode(&b)
        );
        assert_eq!(read_sids(&ldif).expect("parse")["benchu000001"], "S-1-5-21-1-2-3-1104");
    }
}
