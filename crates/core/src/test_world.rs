//! The planner tests' world: plain data in (cloud groups, AD objects, state, settings), and
//! `apply`, which plays a plan onto the AD snapshot in memory as a DC would, so idempotence
//! (plan → apply → plan is empty) can be checked on every scenario.

use std::collections::BTreeMap;

use crate::model::{AdClass, AdObject, AdRef, WritebackConfiguration};
use crate::*;
use crate::{CloudId, ObjectGuid};

pub(crate) const OU: &str = "OU=Groups,DC=corp,DC=test";

pub(crate) fn id(n: u32) -> CloudId {
    CloudId::new(format!("00000000-0000-0000-0000-{n:012}"))
}

pub(crate) fn wb(enabled: Option<bool>, ty: Option<&str>) -> Option<WritebackConfiguration> {
    Some(WritebackConfiguration { is_enabled: enabled, on_premises_group_type: ty.map(String::from) })
}

pub(crate) fn m365(n: u32, name: &str, enabled: Option<bool>, ty: Option<&str>) -> CloudObject {
    CloudObject {
        id: id(n),
        display_name: Some(name.into()),
        group_types: vec!["Unified".into()],
        mail_enabled: Some(true),
        security_enabled: Some(false),
        mail: Some(format!("{}@corp.test", name.to_lowercase())),
        mail_nickname: Some(name.to_lowercase()),
        proxy_addresses: vec![format!("SMTP:{}@corp.test", name.to_lowercase())],
        writeback_configuration: wb(enabled, ty),
        ..Default::default()
    }
}

pub(crate) fn security(n: u32, name: &str, enabled: Option<bool>) -> CloudObject {
    CloudObject {
        id: id(n),
        display_name: Some(name.into()),
        security_enabled: Some(true),
        mail_enabled: Some(false),
        writeback_configuration: wb(enabled, None),
        ..Default::default()
    }
}

pub(crate) fn synced_user(n: u32) -> CloudObject {
    CloudObject {
        odata_type: Some("#microsoft.graph.user".into()),
        id: id(1000 + n),
        on_premises_sync_enabled: Some(true),
        on_premises_security_identifier: Some(format!("S-1-5-21-1-2-3-{}", 1000 + n)),
        ..Default::default()
    }
}

pub(crate) fn cloud_user(n: u32) -> CloudObject {
    CloudObject {
        odata_type: Some("#microsoft.graph.user".into()),
        id: id(2000 + n),
        display_name: Some(format!("Guest {n}")),
        ..Default::default()
    }
}

pub(crate) fn as_member(g: &CloudObject) -> CloudObject {
    CloudObject { odata_type: Some("#microsoft.graph.group".into()), ..g.clone() }
}

pub(crate) struct World {
    pub(crate) cloud: CloudSnapshot,
    pub(crate) ad: AdSnapshot,
    pub(crate) state: State,
    pub(crate) cfg: PlannerConfig,
}

impl World {
    pub(crate) fn new() -> Self {
        let mut w = World {
            cloud: CloudSnapshot::default(),
            ad: AdSnapshot::default(),
            state: State::default(),
            cfg: PlannerConfig::with_target_ou(OU),
        };
        w.users(0..20);
        w
    }

    /// Synced users `n` (see [`synced_user`]) in AD's directory.
    pub(crate) fn users(&mut self, ns: std::ops::Range<u32>) {
        let ad = &mut self.ad;
        for n in ns {
            let u = synced_user(n);
            let sid = u.on_premises_security_identifier.clone().unwrap_or_default();
            ad.directory.insert(
                Anchor::Sid(sid.clone()),
                AdObject {
                    guid: format!("aaaaaaaa-0000-0000-0000-{:012}", n).into(),
                    sid: Some(sid),
                    dn: format!("CN=user{n},CN=Users,DC=corp,DC=test").into(),
                    group_type: None,
                    class: AdClass::User,
                    source_anchor: None,
                },
            );
        }
    }

    pub(crate) fn group(&mut self, g: CloudObject, members: Vec<CloudObject>) {
        self.cloud.members.insert(g.id.clone(), MemberRead::complete(members));
        self.cloud.groups.push(g);
    }

    pub(crate) fn plan(&self) -> Plan {
        plan(&self.cloud, &self.ad, &self.state, &self.cfg)
    }

    /// Plays the plan onto the AD snapshot, as a DC would.
    pub(crate) fn apply(&mut self, p: &Plan) {
        let mut new_guids = BTreeMap::new();
        let resolve = |t: &GroupTarget, new_guids: &BTreeMap<CloudId, ObjectGuid>| match t {
            GroupTarget::Existing { guid, dn } => AdRef { guid: (&**guid).into(), dn: dn.to_string(), sid: None },
            GroupTarget::New { cloud_id, dn } => AdRef { guid: new_guids[cloud_id].clone(), dn: dn.clone(), sid: None },
        };
        for op in &p.operations {
            match op {
                Operation::Add { cloud_id, dn, attrs, members } => {
                    let guid = ObjectGuid::new(format!("bbbbbbbb-{}", &cloud_id[9..]));
                    new_guids.insert(cloud_id.clone(), guid.clone());
                    let attrs: BTreeMap<String, Vec<String>> =
                        attrs.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.clone())).collect();
                    self.ad.groups.push(AdGroup {
                        guid,
                        sid: None,
                        dn: dn.as_str().into(),
                        cloud_id: cloud_id.clone(),
                        cn: attrs["cn"][0].clone(),
                        group_type: attrs["grouptype"][0].parse().expect("number"),
                        attrs,
                        members: Some(members.iter().map(|m| resolve(m, &new_guids)).collect()),
                        ..Default::default()
                    });
                }
                Operation::Update { guid, changes, .. } => {
                    let g = self.ad.groups.iter_mut().find(|g| &g.guid == guid).expect("group");
                    for c in changes {
                        if c.attr == "groupType" {
                            g.group_type = c.values[0].parse().expect("number");
                        } else {
                            g.attrs.insert(c.attr.to_ascii_lowercase(), c.values.clone());
                        }
                    }
                }
                Operation::Rename { guid, new_dn, .. } => {
                    let g = self.ad.groups.iter_mut().find(|g| &g.guid == guid).expect("group");
                    g.dn = new_dn.as_str().into();
                    g.cn = naming::unescape_rdn_value(&naming::split_dn(new_dn).0[3..]);
                }
                Operation::AddMembers { group, members, .. } | Operation::RemoveMembers { group, members, .. } => {
                    let add = matches!(op, Operation::AddMembers { .. });
                    let gguid = resolve(group, &new_guids).guid;
                    let refs: Vec<AdRef> = members.iter().map(|m| resolve(m, &new_guids)).collect();
                    let g = self.ad.groups.iter_mut().find(|g| g.guid == gguid).expect("group");
                    let list = g.members.get_or_insert_with(Vec::new);
                    if add {
                        list.extend(refs);
                    } else {
                        list.retain(|r| !refs.iter().any(|x| x.guid == r.guid));
                    }
                }
                Operation::Delete { guid, .. } => self.ad.groups.retain(|g| &g.guid != guid),
                // The original becomes an owned group; it is read as one from now on.
                Operation::Adopt { cloud_id, marker, .. } => {
                    let Some(crate::model::Original::Found { mut group, .. }) = self.ad.originals.remove(cloud_id)
                    else {
                        panic!("adopting what was not found")
                    };
                    for (attr, values) in marker {
                        group.attrs.insert(attr.to_ascii_lowercase(), values.clone());
                    }
                    group.cloud_id = cloud_id.clone();
                    self.ad.groups.push(group);
                }
                Operation::Release { guid, .. } => self.ad.groups.retain(|g| &g.guid != guid),
            }
        }
    }

    /// Plan, apply, and check that a second plan has nothing left to do.
    pub(crate) fn converge(&mut self) -> Plan {
        let p = self.plan();
        assert!(p.blocked.is_none(), "{:?}", p.blocked);
        self.apply(&p);
        let again = self.plan();
        assert!(again.operations.is_empty(), "second plan not empty: {:#?}", again.operations);
        p
    }
}

pub(crate) fn ops<'a>(p: &'a Plan, kind: &str) -> Vec<&'a Operation> {
    p.operations.iter().filter(|o| serde_json::to_value(o).expect("json")["op"] == kind).collect()
}

pub(crate) fn sample_rollout() -> World {
    let mut w = World::new();
    w.group(security(1, "SG-Finance", Some(true)), (0..3).map(synced_user).collect());
    let mut dynamic = security(2, "SG-Dynamic-Sales", Some(true));
    dynamic.group_types = vec!["DynamicMembership".into()];
    w.group(
        dynamic,
        vec![synced_user(3), synced_user(4), synced_user(5), synced_user(6), cloud_user(1), cloud_user(2)],
    );
    w.group(m365(3, "Team-Off", Some(false), None), vec![synced_user(1)]);
    w.group(m365(4, "Team-Default", None, None), vec![synced_user(1), synced_user(2)]);
    w.group(m365(5, "Team-MailSec", Some(true), Some("universalMailEnabledSecurityGroup")), vec![synced_user(7)]);
    w.group(security(6, "SG-NoWriteback", None), vec![synced_user(8)]);
    w
}

/// The sample rollout written to AD, then changed there by hand: group 1's groupType and
/// description edited and a member added that the cloud does not have.
pub(crate) fn drifted_rollout() -> World {
    let mut w = sample_rollout();
    w.converge();
    let g = w.ad.groups.iter_mut().find(|g| g.cloud_id == id(1)).expect("group");
    g.group_type = -2147483646; // global security, by hand
    g.members.get_or_insert_with(Vec::new).push(AdRef {
        guid: "cccccccc-0000-0000-0000-000000000001".into(),
        dn: "CN=intruder,DC=corp,DC=test".into(),
        sid: None,
    });
    g.attrs.insert("description".into(), vec!["edited by hand".into()]);
    w
}
