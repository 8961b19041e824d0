//! Which AD object a cloud member stands for. Cloud data is untrusted: a User Administrator
//! (or an app with User.ReadWrite.All) can set `onPremisesImmutableId` on any cloud-only user
//! (Graph "Update user": the property is updatable), so an anchor is followed only where the
//! sync from AD wrote it, and the object found must be the kind of object the member is.
//!
//! The rule, in one place ([`anchor`], [`ad_object`]), used for members, owners and the
//! members already known from AD:
//! - only objects synced from AD (`onPremisesSyncEnabled == true`) are looked up at all;
//! - by `onPremisesSecurityIdentifier` (only the sync writes it), and by the objectGUID in
//!   `onPremisesImmutableId` only when no SID is given;
//! - a user may only be a user account (not a computer, a service account, a foreign
//!   security principal or a group), a synced group only a group;
//! - when both a SID and an immutable id (a GUID) are given, the object found by the SID must
//!   carry that GUID as its objectGUID or its `mS-DS-ConsistencyGuid`.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use crate::model::{AdClass, AdGroup, AdObject, AdRef, Anchor, CloudObject, CloudSnapshot, MemberRead, ObjectKind};
use crate::naming;

/// What a cloud user or synced group resolves to in AD.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolved<'a> {
    Found(&'a AdObject),
    /// Not synced from AD: nothing to look up.
    CloudOnly,
    /// Synced, but no AD object has its anchor (or it has none AD can use).
    NotFound,
    /// Its anchor names an object that is not what it claims to be; the sentence says why.
    Mismatch(String),
}

/// The one anchor a member is looked up by, `Ok(None)` when it has none to look up by, or why
/// its anchors cannot be trusted.
pub fn anchor(m: &CloudObject) -> Result<Option<Anchor>, String> {
    if wanted_class(m).is_none() || !m.is_synced() {
        return Ok(None);
    }
    match m.on_premises_security_identifier.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        Some(sid) if naming::is_sid(sid) => Ok(Some(Anchor::Sid(sid.to_string()))),
        Some(sid) => {
            Err(format!("its onPremisesSecurityIdentifier {:?} is not a SID", sid.chars().take(80).collect::<String>()))
        }
        None => Ok(immutable_guid(m).map(Anchor::Guid)),
    }
}

/// A synced member whose SID belongs to none of the forest's domains (`forest`, when known): a
/// member from another forest, which a universal group cannot hold (only a domain-local group
/// can, as a foreign security principal).
pub fn other_forest(m: &CloudObject, forest: &[String]) -> bool {
    let sid = m.on_premises_security_identifier.as_deref().map(str::trim).filter(|s| naming::is_sid(s));
    let domain = sid.and_then(|s| s.rsplit_once('-')).map(|(d, _)| d);
    !forest.is_empty() && m.is_synced() && domain.is_some_and(|d| !forest.iter().any(|f| f.eq_ignore_ascii_case(d)))
}

/// The objectGUID an `onPremisesImmutableId` names, when it is the base64 of 16 bytes. Tenants
/// that chose another source anchor (an employee id…) have other values: those name nothing.
fn immutable_guid(m: &CloudObject) -> Option<String> {
    m.on_premises_immutable_id.as_deref().and_then(naming::guid_from_immutable_id)
}

/// The class of AD object a member may resolve to: users to user accounts, groups to groups,
/// devices to computer accounts.
fn wanted_class(m: &CloudObject) -> Option<AdClass> {
    match m.kind() {
        ObjectKind::User => Some(AdClass::User),
        ObjectKind::Group => Some(AdClass::Group),
        ObjectKind::Device => Some(AdClass::Computer),
        _ => None,
    }
}

/// The AD object a cloud user or synced cloud group stands for, from the objects looked up
/// (`directory`, keyed by what they were found by).
pub fn ad_object<'a>(m: &CloudObject, directory: &'a HashMap<Anchor, AdObject>) -> Resolved<'a> {
    if !m.is_synced() {
        return Resolved::CloudOnly;
    }
    let Some(want) = wanted_class(m) else { return Resolved::NotFound };
    let key = match anchor(m) {
        Ok(Some(a)) => a,
        Ok(None) => return Resolved::NotFound,
        Err(why) => return Resolved::Mismatch(why),
    };
    let Some(obj) = directory.get(&key) else { return Resolved::NotFound };
    if obj.class != want {
        let by = if matches!(key, Anchor::Sid(_)) { "onPremisesSecurityIdentifier" } else { "onPremisesImmutableId" };
        return Resolved::Mismatch(format!(
            "its {by} names {}, {}, not {}",
            obj.dn,
            obj.class.describe(),
            want.describe()
        ));
    }
    if let (Anchor::Sid(_), Some(guid)) = (&key, immutable_guid(m)) {
        if !same_object(obj, &guid) {
            return Resolved::Mismatch(format!(
                "its onPremisesSecurityIdentifier names {}, but its \
                    onPremisesImmutableId names another object (objectGUID {guid})",
                obj.dn
            ));
        }
    }
    Resolved::Found(obj)
}

/// True when `guid` is the object's objectGUID or its `mS-DS-ConsistencyGuid`.
fn same_object(obj: &AdObject, guid: &str) -> bool {
    obj.guid.eq_ignore_ascii_case(guid) || obj.source_anchor.as_deref().is_some_and(|s| s.eq_ignore_ascii_case(guid))
}

/// The member values of the owned groups, by objectSid: a user already in an owned group
/// needs no lookup (a delta cycle that changes one member of a 20,000-member group looks up
/// one user, not 20,000).
pub struct OwnedMembers<'a> {
    by_sid: HashMap<&'a str, &'a AdRef>,
    /// Device members are looked up (`write_devices`); else they cost no lookup.
    devices: bool,
}

impl<'a> OwnedMembers<'a> {
    pub fn new(owned: &'a [AdGroup]) -> Self {
        let by_sid = owned
            .iter()
            .filter_map(|g| g.members.as_ref())
            .flatten()
            .filter_map(|r| r.sid.as_deref().map(|s| (s, r)))
            .collect();
        OwnedMembers { by_sid, devices: false }
    }

    /// With device members looked up too.
    pub fn with_devices(self, devices: bool) -> Self {
        OwnedMembers { devices, ..self }
    }

    /// The member value a cloud user already is in an owned group, under the rule of
    /// [`ad_object`]: a synced user whose SID is a member value there, and whose immutable id
    /// (if it names a GUID) is that value's objectGUID (another one may be its consistency
    /// GUID: that user is looked up, and checked there). Groups are always looked up: their
    /// groupType matters.
    fn known(&self, m: &CloudObject) -> Option<(&'a str, &'a AdRef)> {
        if m.kind() != ObjectKind::User {
            return None;
        }
        let sid = m.on_premises_security_identifier.as_deref().map(str::trim)?;
        let (&sid, &r) = self.by_sid.get_key_value(sid)?;
        if !m.is_synced() || immutable_guid(m).is_some_and(|g| !r.guid.eq_ignore_ascii_case(&g)) {
            return None;
        }
        // A foreign security principal stands for a user of another forest: never a user here
        // (and Windows keeps them out of universal groups anyway).
        let in_fsp_container =
            naming::parse_dn(&r.dn).is_some_and(|rdns| rdns.get(1).is_some_and(|p| is_fsp_container(p)));
        if in_fsp_container {
            return None;
        }
        Some((sid, r))
    }
}

/// The well-known container of foreign security principals, as a parsed RDN.
fn is_fsp_container(rdn: &[(String, Vec<u8>)]) -> bool {
    matches!(rdn, [(t, v)] if t == "cn" && v.as_slice() == b"foreignsecurityprincipals")
}

/// The AD object of a member value found by [`OwnedMembers::known`]. Its class is not read
/// back (that would cost the lookup the shortcut saves): it is the object with the SID the
/// sync wrote for a user, and SIDs are unique in a forest, so it is that user's account unless
/// the sync itself wrote another object's SID (a compromised sync is a compromised Tier 0).
/// Lookups made in the same cycle win over it (see the engine), and any member looked up is
/// class-checked.
fn known_object(sid: &str, r: &AdRef) -> AdObject {
    AdObject {
        guid: r.guid.as_str().into(),
        sid: Some(sid.to_string()),
        dn: r.dn.as_str().into(),
        group_type: None,
        class: AdClass::User,
        source_anchor: None,
    }
}

/// Every member object of the complete member reads, once (members are shared between groups:
/// a million memberships are a few hundred thousand objects).
fn distinct_members(cloud: &CloudSnapshot) -> impl Iterator<Item = &CloudObject> {
    let mut seen: HashSet<*const CloudObject, foldhash::fast::RandomState> = HashSet::default();
    cloud
        .members
        .values()
        .filter_map(|m| match m {
            MemberRead::Complete(members) => Some(members),
            MemberRead::Incomplete(_) => None,
        })
        .flatten()
        .filter(move |m| seen.insert(Arc::as_ptr(m)))
        .map(|m| &**m)
}

/// Cloud users already members of an owned group (see [`OwnedMembers`]), by their anchor.
pub fn members_known(cloud: &CloudSnapshot, owned: &OwnedMembers) -> HashMap<Anchor, AdObject> {
    let mut out = HashMap::new();
    for m in distinct_members(cloud) {
        if let Some((sid, r)) = owned.known(m) {
            out.entry(Anchor::Sid(sid.to_string())).or_insert_with(|| known_object(sid, r));
        }
    }
    out
}

/// What the planner will look up in `AdSnapshot::directory`: the anchor of every member of
/// every group in scope (and of every owner) but those `owned` answers for. The caller
/// resolves them in AD, adds [`members_known`], then calls `plan`.
pub fn member_anchors(cloud: &CloudSnapshot, owned: &OwnedMembers) -> BTreeSet<Anchor> {
    let mut anchors: BTreeSet<Anchor> = members_to_look_up(distinct_members(cloud), owned).collect();
    for owners in cloud.owners.values() {
        if let MemberRead::Complete(owners) = owners {
            let users = owners.iter().filter(|o| o.kind() == ObjectKind::User);
            anchors.extend(users.filter_map(|o| anchor(o).ok().flatten()));
        }
    }
    anchors
}

/// Of `members`, the anchors of the synced users and groups that `owned` does not answer for.
pub fn members_to_look_up<'a, 'b: 'a>(
    members: impl IntoIterator<Item = &'a CloudObject> + 'a,
    owned: &'a OwnedMembers<'b>,
) -> impl Iterator<Item = Anchor> + 'a {
    members
        .into_iter()
        .filter(|m| owned.devices || m.kind() != ObjectKind::Device)
        .filter(|m| owned.known(m).is_none())
        .filter_map(|m| anchor(m).ok().flatten())
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    const SID: &str = "S-1-5-21-1-2-3-1001";
    const GUID: &str = "aaaaaaaa-0000-4000-8000-000000000001";
    const OTHER: &str = "cccccccc-0000-4000-8000-000000000009";

    fn immutable(guid: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(naming::guid_to_bytes(guid).expect("guid"))
    }

    fn user(synced: bool, sid: Option<&str>, guid: Option<&str>) -> CloudObject {
        CloudObject {
            odata_type: Some("#microsoft.graph.user".into()),
            id: "00000000-0000-4000-8000-000000000001".into(),
            display_name: Some("Forged".into()),
            on_premises_sync_enabled: synced.then_some(true),
            on_premises_security_identifier: sid.map(String::from),
            on_premises_immutable_id: guid.map(immutable),
            ..Default::default()
        }
    }

    fn object(guid: &str, class: AdClass) -> AdObject {
        AdObject {
            guid: guid.into(),
            sid: Some(SID.into()),
            dn: format!("CN={guid},DC=corp").into(),
            group_type: None,
            class,
            source_anchor: None,
        }
    }

    /// A directory as the lookup leaves it: each object under its SID and its objectGUID.
    fn directory(objs: &[AdObject]) -> HashMap<Anchor, AdObject> {
        let mut d = HashMap::new();
        for o in objs {
            d.insert(Anchor::Guid(o.guid.to_string()), o.clone());
            if let Some(s) = &o.sid {
                d.insert(Anchor::Sid(s.clone()), o.clone());
            }
        }
        d
    }

    #[test]
    fn a_cloud_only_user_is_never_looked_up_whatever_its_immutable_id_names() {
        for class in [AdClass::User, AdClass::Computer, AdClass::Group] {
            let dir = directory(&[object(GUID, class)]);
            let forged = user(false, None, Some(GUID));
            assert_eq!(anchor(&forged), Ok(None));
            assert_eq!(ad_object(&forged, &dir), Resolved::CloudOnly);
            // `onPremisesSyncEnabled = false` (once synced, no longer) is not synced either.
            let mut was = user(true, Some(SID), Some(GUID));
            was.on_premises_sync_enabled = Some(false);
            assert_eq!(ad_object(&was, &dir), Resolved::CloudOnly);
        }
    }

    #[test]
    fn a_user_resolves_only_to_a_user_account() {
        for class in
            [AdClass::Computer, AdClass::ServiceAccount, AdClass::ForeignPrincipal, AdClass::Group, AdClass::Other]
        {
            let dir = directory(&[object(GUID, class)]);
            let Resolved::Mismatch(why) = ad_object(&user(true, Some(SID), None), &dir) else {
                panic!("{class:?} must not stand for a user")
            };
            assert!(why.contains(class.describe()), "{why}");
            assert!(matches!(ad_object(&user(true, None, Some(GUID)), &dir), Resolved::Mismatch(_)));
        }
        let dir = directory(&[object(GUID, AdClass::User)]);
        assert!(matches!(ad_object(&user(true, Some(SID), Some(GUID)), &dir), Resolved::Found(o) if &*o.guid == GUID));
    }

    #[test]
    fn the_sid_comes_first_and_both_anchors_must_name_the_same_object() {
        let dir = directory(&[object(GUID, AdClass::User), AdObject { sid: None, ..object(OTHER, AdClass::User) }]);
        // The immutable id names another user: not written.
        let Resolved::Mismatch(why) = ad_object(&user(true, Some(SID), Some(OTHER)), &dir) else { panic!() };
        assert!(why.contains(OTHER), "{why}");
        // Entra Connect's consistency GUID counts as the object's own.
        let mut moved = object(GUID, AdClass::User);
        moved.source_anchor = Some(OTHER.into());
        assert!(matches!(ad_object(&user(true, Some(SID), Some(OTHER)), &directory(&[moved])), Resolved::Found(_)));
        // A SID AD does not know is not found: the immutable id is not tried instead.
        let lost = user(true, Some("S-1-5-21-9-9-9-9"), Some(OTHER));
        assert_eq!(anchor(&lost), Ok(Some(Anchor::Sid("S-1-5-21-9-9-9-9".into()))));
        assert_eq!(ad_object(&lost, &dir), Resolved::NotFound);
        // No SID: the immutable id is the anchor.
        assert_eq!(anchor(&user(true, None, Some(OTHER))), Ok(Some(Anchor::Guid(OTHER.into()))));
        assert!(matches!(ad_object(&user(true, None, Some(OTHER)), &dir), Resolved::Found(o) if &*o.guid == OTHER));
        // A SID that is not one is not trusted; an immutable id that is not a GUID names nothing.
        assert!(matches!(ad_object(&user(true, Some("S-1-5-x"), Some(GUID)), &dir), Resolved::Mismatch(_)));
        let mut custom = user(true, None, None);
        custom.on_premises_immutable_id = Some("employee-4711".into());
        assert_eq!((anchor(&custom), ad_object(&custom, &dir)), (Ok(None), Resolved::NotFound));
    }

    #[test]
    fn a_synced_group_resolves_only_to_a_group() {
        let mut g = user(true, Some(SID), None);
        g.odata_type = Some("#microsoft.graph.group".into());
        assert!(matches!(ad_object(&g, &directory(&[object(GUID, AdClass::User)])), Resolved::Mismatch(_)));
        assert!(matches!(ad_object(&g, &directory(&[object(GUID, AdClass::Group)])), Resolved::Found(_)));
        // A device resolves only to a computer account, and is looked up only with write_devices.
        let mut device = g.clone();
        device.odata_type = Some("#microsoft.graph.device".into());
        assert!(matches!(ad_object(&device, &directory(&[object(GUID, AdClass::User)])), Resolved::Mismatch(_)));
        assert!(matches!(ad_object(&device, &directory(&[object(GUID, AdClass::Computer)])), Resolved::Found(_)));
        let found =
            |devices: bool| members_to_look_up([&device], &OwnedMembers::new(&[]).with_devices(devices)).count();
        assert_eq!((found(false), found(true)), (0, 1));
    }

    #[test]
    fn owned_members_answer_only_for_synced_users_whose_anchors_agree() {
        let owned = vec![AdGroup {
            members: Some(vec![AdRef { guid: GUID.to_uppercase().into(), dn: "CN=u".into(), sid: Some(SID.into()) }]),
            ..Default::default()
        }];
        let known = OwnedMembers::new(&owned);
        let member = |u: CloudObject| {
            let mut cloud = CloudSnapshot::default();
            cloud.members.insert("g".into(), MemberRead::complete(vec![u]));
            (members_known(&cloud, &known), member_anchors(&cloud, &known))
        };
        let (k, look) = member(user(true, Some(SID), Some(GUID)));
        assert_eq!(k.get(&Anchor::Sid(SID.into())).map(|o| (&*o.guid, o.class)), Some((GUID, AdClass::User)));
        assert!(look.is_empty(), "known: no lookup");
        // Not synced: neither known nor looked up.
        assert_eq!(member(user(false, Some(SID), Some(GUID))), (HashMap::new(), BTreeSet::new()));
        // The immutable id names another object: looked up (and checked there), not known.
        let (k, look) = member(user(true, Some(SID), Some(OTHER)));
        assert!(k.is_empty());
        assert_eq!(look, BTreeSet::from([Anchor::Sid(SID.into())]));
        // A foreign security principal with the SID: looked up, where its class shows.
        let fsp = vec![AdGroup {
            members: Some(vec![AdRef {
                guid: GUID.into(),
                dn: format!("CN={SID},CN=ForeignSecurityPrincipals,DC=corp"),
                sid: Some(SID.into()),
            }]),
            ..Default::default()
        }];
        let known = OwnedMembers::new(&fsp);
        let mut cloud = CloudSnapshot::default();
        cloud.members.insert("g".into(), MemberRead::complete(vec![user(true, Some(SID), Some(GUID))]));
        assert!(members_known(&cloud, &known).is_empty());
        assert_eq!(member_anchors(&cloud, &known), BTreeSet::from([Anchor::Sid(SID.into())]));
    }
}
