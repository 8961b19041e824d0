//! Planner tests: plain data in (the world of `test_world`), plan out, checked property by
//! property. Scenarios whose whole plan matters are in `planner_snapshots`.

use std::collections::BTreeMap;

use crate::model::{group_type as gt, AdClass, AdObject, AdRef, Link, Original};
use crate::plan::SkipReason;
use crate::planner::UNIVERSAL_CANT_HAVE_LOCAL;
use crate::test_world::*;
use crate::*;

#[test]
fn sample_rollout_adds_exactly_the_groups_in_scope() {
    let mut w = sample_rollout();
    let p = w.converge();
    let adds = ops(&p, "add");
    let added: BTreeMap<CloudId, i32> = adds
        .iter()
        .map(|o| match o {
            Operation::Add { cloud_id, attrs, .. } => {
                let gt = attrs.iter().find(|(k, _)| k == "groupType").expect("groupType").1[0].parse().expect("num");
                (cloud_id.clone(), gt)
            }
            _ => unreachable!(),
        })
        .collect();
    let want: BTreeMap<CloudId, i32> = [
        (id(1), gt::UNIVERSAL_SECURITY),
        (id(2), gt::UNIVERSAL_SECURITY),
        (id(4), gt::UNIVERSAL_DISTRIBUTION),
        (id(5), gt::UNIVERSAL_SECURITY),
    ]
    .into();
    assert_eq!(added, want);
    assert_eq!(p.summary.adds, 4);
    assert_eq!(p.summary.member_adds, 3 + 4 + 2 + 1);
    assert_eq!(p.summary.skipped_members, 2);
    let dynamic = p.report(&id(2))[0];
    let skipped: Vec<_> =
        dynamic.members.iter().filter(|m| m.status == MemberStatus::Skipped).map(|m| m.reason).collect();
    assert_eq!(skipped, vec![Some(SkipReason::CloudOnly); 2]);
    assert!(!p.report("Team-Off")[0].in_scope);
    assert!(p.report("SG-NoWriteback")[0].reason.contains("isEnabled = null"));
    // The mail-enabled types carry mail; the security group does not.
    let mail_of = |n| match adds.iter().find(|o| *o.cloud_id() == id(n)) {
        Some(Operation::Add { attrs, .. }) => attrs.iter().any(|(k, _)| k == "mail"),
        _ => false,
    };
    assert!(mail_of(4) && mail_of(5) && !mail_of(1));
}

#[test]
fn drift_is_put_back() {
    let mut w = drifted_rollout();
    let p = w.converge();
    let Operation::Update { changes, .. } = ops(&p, "update")[0] else { unreachable!() };
    let attrs: Vec<&str> = changes.iter().map(|c| c.attr.as_str()).collect();
    assert_eq!(attrs, vec!["groupType", "description"]);
    assert_eq!(changes[0].values, vec![gt::UNIVERSAL_SECURITY.to_string()]);
    assert!(changes[1].values.is_empty(), "cloud has no description: the attribute is deleted");
    assert_eq!(p.summary.member_removes, 1);
}

#[test]
fn domain_local_member_is_skipped_with_the_windows_error() {
    let mut w = World::new();
    let sid = "S-1-5-21-1-2-3-5000".to_string();
    w.ad.directory.insert(
        Anchor::Sid(sid.clone()),
        AdObject {
            guid: "dddddddd-0000-0000-0000-000000000001".into(),
            sid: Some(sid.clone()),
            dn: "CN=DL,DC=corp,DC=test".into(),
            group_type: Some(-2147483644),
            class: AdClass::Group,
            source_anchor: None,
        },
    );
    let dl = CloudObject {
        odata_type: Some("#microsoft.graph.group".into()),
        id: id(900),
        on_premises_sync_enabled: Some(true),
        on_premises_security_identifier: Some(sid),
        ..Default::default()
    };
    w.group(security(1, "SG", Some(true)), vec![dl, synced_user(1)]);
    let p = w.converge();
    assert_eq!(p.summary.member_adds, 1);
    assert_eq!(p.errors.len(), 1);
    assert!(p.errors[0].message.starts_with(UNIVERSAL_CANT_HAVE_LOCAL));
    assert_eq!(p.errors[0].member_id.as_deref(), Some(id(900).as_str()));
    let r = &p.report(&id(1))[0].members;
    assert!(r.iter().any(|m| m.reason == Some(SkipReason::DomainLocalGroup)));
}

#[test]
fn members_whose_anchors_name_the_wrong_object_are_skipped_and_reported() {
    let mut w = World::new();
    // A computer account, found by the SID a synced user claims.
    let sid = "S-1-5-21-1-2-3-7000".to_string();
    w.ad.directory.insert(
        Anchor::Sid(sid.clone()),
        AdObject {
            guid: "eeeeeeee-0000-0000-0000-000000000001".into(),
            sid: Some(sid.clone()),
            dn: "CN=PC01,CN=Computers,DC=corp,DC=test".into(),
            group_type: None,
            class: AdClass::Computer,
            source_anchor: None,
        },
    );
    let mut claims_pc = synced_user(50);
    claims_pc.on_premises_security_identifier = Some(sid);
    claims_pc.display_name = Some("Eve\u{1b}[2J".into());
    // A cloud-only user whose immutable id names a user AD knows: not looked up at all.
    let mut forged = cloud_user(1);
    forged.on_premises_immutable_id = Some("4XGK8eR2sE6CsNjEUCz/Qg==".into());
    let named = naming::guid_from_immutable_id("4XGK8eR2sE6CsNjEUCz/Qg==").expect("a GUID");
    w.ad.directory.insert(
        Anchor::Guid(named.clone()),
        AdObject {
            guid: named.as_str().into(),
            sid: None,
            dn: "CN=unsynced,CN=Users,DC=corp,DC=test".into(),
            group_type: None,
            class: AdClass::User,
            source_anchor: None,
        },
    );
    w.group(security(1, "SG", Some(true)), vec![claims_pc, forged, synced_user(1)]);
    let p = w.converge();
    assert_eq!(p.summary.member_adds, 1, "only the real user is written");
    assert_eq!(p.summary.skipped_members, 2);
    let reasons: Vec<Option<SkipReason>> = p.report(&id(1))[0].members_by_id().iter().map(|m| m.reason).collect();
    assert_eq!(reasons, vec![None, Some(SkipReason::AnchorMismatch), Some(SkipReason::CloudOnly)]);
    assert_eq!(p.errors.len(), 1, "{:?}", p.errors);
    let msg = &p.errors[0].message;
    assert!(msg.contains("CN=PC01") && msg.contains("a computer account") && msg.contains("anchor-mismatch"), "{msg}");
    assert!(!msg.contains('\u{1b}'), "no control characters from the cloud in the message: {msg}");
}

#[test]
fn the_tier0_guard_holds_back_additions_but_lets_removals_through() {
    let mut w = World::new();
    w.group(security(1, "SG-Helpdesk", Some(true)), vec![synced_user(1)]);
    w.converge();
    // Nested into a protected group by someone in AD; the cloud swaps the member.
    w.ad.protected.insert(id(1), "nested into the protected group CN=Domain Admins".into());
    w.cloud.members.insert(id(1), MemberRead::complete(vec![synced_user(2)]));
    let p = w.plan();
    assert_eq!((p.summary.member_adds, p.summary.member_removes), (0, 1), "{:#?}", p.operations);
    assert_eq!(p.errors.len(), 1);
    assert!(p.errors[0].message.contains("1 held back; removals still apply"), "{}", p.errors[0].message);
    assert!(p.report(&id(1))[0].action.contains("held back"));
    let g = p.guarded.first().expect("the guard's hold is listed for the daemon's WARN and status");
    assert_eq!((g.held, g.display_name.as_str()), (1, "SG-Helpdesk"));
    assert!(g.resolution().contains(&format!("add \"{}\" to [writeback] allow_protected_nesting", id(1))));
    // Listed in allow_protected_nesting: both go through.
    w.cfg.allow_protected_nesting = vec![id(1).to_uppercase().into()];
    let p = w.plan();
    assert_eq!((p.summary.member_adds, p.summary.member_removes, p.errors.len()), (1, 1, 0));
}

#[test]
fn the_create_threshold_stops_a_run_before_anything_is_written() {
    let mut w = World::new();
    for n in 1..=3 {
        w.group(security(n, &format!("SG-{n}"), Some(true)), vec![]);
    }
    w.cfg.create_threshold = 2;
    let p = w.plan();
    let why = p.blocked.as_deref().unwrap_or("");
    assert!(why.contains("create 3 AD groups") && why.contains("--allow-creates"), "{why}");
    w.cfg.allow.creates = true;
    assert!(w.converge().blocked.is_none());
}

#[test]
fn an_approval_lets_a_run_go_exactly_as_far_as_approved() {
    let mut w = World::new();
    for n in 1..=3 {
        w.group(security(n, &format!("SG-{n}"), Some(true)), vec![]);
    }
    w.cfg.create_threshold = 2;
    let blocked = w.plan().blocked.expect("over the threshold");
    assert_eq!((blocked.threshold, blocked.count), (Threshold::Creates, 3));
    assert_eq!(blocked.approve_command(), "writeback approve --creates 3");
    // Approved for fewer than the run would do: still stopped, and said so.
    w.cfg.allow.approved.creates = Some(2);
    let why = w.plan().blocked.expect("past the approval too");
    assert!(why.contains("and the 2 approved"), "{}", why.message);
    w.cfg.allow.approved.creates = Some(3);
    assert!(w.converge().blocked.is_none(), "approved for as many as it does");
    // A group's held removals: approved for that group, as many as were held.
    w.users(20..170);
    w.group(security(9, "SG-Big", Some(true)), (0..150).map(synced_user).collect());
    w.converge();
    w.cloud.members.insert(id(9), MemberRead::complete((140..170).map(synced_user).collect()));
    let p = w.plan();
    let held = p.held.first().expect("140 of 150 removed: held");
    assert_eq!((held.removals, held.display_name.as_str()), (140, "SG-Big"));
    assert!(held.message.contains(&format!("writeback approve --removals {}", id(9))), "{}", held.message);
    assert_eq!(p.summary.member_removes, 0);
    w.cfg.allow.approved.removals.insert(id(9), 139);
    assert_eq!(w.plan().held.len(), 1, "approved for fewer: still held");
    w.cfg.allow.approved.removals.insert(id(9), 140);
    let p = w.converge();
    assert_eq!((p.held.len(), p.summary.member_removes), (0, 140));
}

#[test]
fn a_groups_removals_are_held_past_the_percentage_and_the_minimum() {
    use crate::planner::removals_held;
    let cfg = PlannerConfig::with_target_ou(OU);
    assert!(removals_held("g", 101, 150, &cfg), "over 100 and over half");
    assert!(!removals_held("g", 100, 150, &cfg), "not over 100");
    assert!(!removals_held("g", 101, 300, &cfg), "not over half");
    assert!(removals_held("g", 5000, 5000, &cfg), "emptied");
    let allowed = PlannerConfig { allow: Allow { deletes: true, ..Allow::default() }, ..cfg.clone() };
    assert!(!removals_held("g", 5000, 5000, &allowed));
    let strict = PlannerConfig { member_removal_percent: 0, ..cfg };
    assert!(removals_held("g", 101, 1_000_000, &strict));
}

#[test]
fn members_graph_would_not_show_hold_the_groups_removals() {
    let mut w = World::new();
    w.group(security(1, "SG", Some(true)), vec![synced_user(1), synced_user(2)]);
    w.converge();
    // The app lost User.Read.All: users come back with type and id only. One member really left.
    let limited = |n: u32| CloudObject {
        odata_type: Some("#microsoft.graph.user".into()),
        id: id(1000 + n),
        ..Default::default()
    };
    w.cloud.members.insert(id(1), MemberRead::complete(vec![limited(1), synced_user(3)]));
    let p = w.plan();
    assert_eq!((p.summary.member_adds, p.summary.member_removes), (1, 0), "{:#?}", p.operations);
    assert!(p
        .errors
        .iter()
        .any(|e| e.message.contains("only their type and id") && e.message.contains("User.Read.All")));
    let reasons: Vec<Option<SkipReason>> = p.report(&id(1))[0].members_by_id().iter().map(|m| m.reason).collect();
    assert_eq!(reasons, vec![Some(SkipReason::Unreadable), None]);
}

#[test]
fn nested_cloud_groups_follow_scope() {
    let mut w = World::new();
    let inner = security(2, "Inner", Some(true));
    let outside = security(3, "Outside", None);
    w.group(security(1, "Outer", Some(true)), vec![as_member(&inner), as_member(&outside)]);
    w.group(inner, vec![synced_user(1)]);
    w.group(outside, vec![]);
    let p = w.converge();
    // Inner is created in this run: the nesting waits for it (a member add after the adds).
    let later = ops(&p, "add-members");
    assert_eq!(later.len(), 1);
    let r = &p.report(&id(1))[0].members;
    assert_eq!(r.iter().filter(|m| m.status == MemberStatus::Written).count(), 1);
    assert!(r.iter().any(|m| m.reason == Some(SkipReason::NestedGroupNotWrittenBack)));
}

#[test]
fn unsupported_and_unresolved_members_have_reasons() {
    let mut w = World::new();
    let device = CloudObject { odata_type: Some("#microsoft.graph.device".into()), id: id(3000), ..Default::default() };
    let mut lost = synced_user(99);
    lost.on_premises_security_identifier = Some("S-1-5-21-9-9-9-9".into());
    w.group(security(1, "SG", Some(true)), vec![device, lost]);
    let p = w.converge();
    let reasons: Vec<_> = p.report(&id(1))[0].members_by_id().iter().map(|m| m.reason).collect();
    assert_eq!(reasons, vec![Some(SkipReason::NotFoundInAd), Some(SkipReason::UnsupportedMemberType)]);
}

#[test]
fn lifecycle_defaults_and_delete_threshold() {
    let mut w = sample_rollout();
    w.group(m365(7, "Team-SoftDeleted", None, None), vec![]);
    w.group(m365(8, "Team-Gone", None, None), vec![]);
    w.converge();
    // Writeback disabled on group 1; group 7 soft-deleted; group 8 permanently deleted.
    w.cloud.groups.iter_mut().find(|g| g.id == id(1)).expect("g1").writeback_configuration = wb(Some(false), None);
    w.cloud.groups.retain(|g| g.id != id(7) && g.id != id(8));
    w.cloud.soft_deleted.insert(id(7));
    let p = w.plan();
    let deletes: Vec<&CloudId> = ops(&p, "delete").iter().map(|o| o.cloud_id()).collect();
    assert_eq!(deletes, vec![id(8).as_str()]);
    assert!(p.report(&id(1))[0].action.starts_with("kept"));
    assert!(p.report(&id(7))[0].action.starts_with("kept"));

    w.cfg.on_out_of_scope = OnRemoval::Delete;
    w.cfg.on_soft_delete = OnRemoval::Delete;
    w.cfg.delete_threshold = 2;
    let p = w.plan();
    assert_eq!(p.summary.deletes, 3);
    assert!(p.blocked.as_deref().is_some_and(|b| b.contains("--allow-deletes")));
    w.cfg.allow.deletes = true;
    assert!(w.plan().blocked.is_none());
}

#[test]
fn member_removal_threshold_blocks() {
    let mut w = World::new();
    w.group(security(1, "SG", Some(true)), (0..10).map(synced_user).collect());
    w.converge();
    w.cloud.members.insert(id(1), MemberRead::complete(vec![]));
    w.cfg.member_removal_threshold = 5;
    let p = w.plan();
    assert_eq!(p.summary.member_removes, 10);
    assert!(p.blocked.is_some());
}

#[test]
fn incomplete_reads_are_never_the_truth() {
    let mut w = World::new();
    w.group(security(1, "SG", Some(true)), (0..5).map(synced_user).collect());
    w.converge();
    w.cloud.members.insert(id(1), MemberRead::Incomplete("page 2 failed".into()));
    let p = w.plan();
    assert!(p.operations.is_empty());
    assert_eq!(p.errors.len(), 1);
    w.cloud.members.insert(id(1), MemberRead::complete(vec![]));
    w.ad.groups[0].members = None;
    let p = w.plan();
    assert!(p.operations.is_empty(), "an incomplete AD read must not produce removals");
}

#[test]
fn adoption_duplicates_and_recreation() {
    let mut w = World::new();
    w.group(security(1, "SG", Some(true)), vec![synced_user(1)]);
    // Written earlier by Azure AD Connect: same marker, other attributes.
    w.ad.groups.push(AdGroup {
        guid: "eeeeeeee-0000-0000-0000-000000000001".into(),
        dn: format!("CN=Group_{},{OU}", id(1)).into(),
        cloud_id: id(1),
        cn: format!("Group_{}", id(1)),
        group_type: gt::UNIVERSAL_SECURITY,
        members: Some(vec![]),
        ..Default::default()
    });
    let mut twin = w.ad.groups[0].clone();
    twin.guid = "eeeeeeee-0000-0000-0000-000000000002".into();
    twin.dn = format!("CN=copy,{OU}").into();
    w.ad.groups.push(twin);
    w.state.links.insert(id(1), Link { guid: "eeeeeeee-0000-0000-0000-000000000001".into(), dn: Dn::default() });
    let p = w.plan();
    assert_eq!(p.summary.adds, 0, "adopted, not duplicated");
    assert_eq!(p.errors.len(), 1, "the twin is reported");
    assert!(p
        .operations
        .iter()
        .all(|o| !serde_json::to_string(o).expect("json").contains("eeeeeeee-0000-0000-0000-000000000002")));
    // Deleted by hand while in scope: created again, and said so.
    w.ad.groups.clear();
    let p = w.plan();
    assert_eq!(p.summary.adds, 1);
    assert!(p.report(&id(1))[0].action.contains("created again"));
    assert_eq!(p.notices.len(), 1);
}

#[test]
fn display_name_format_and_hostile_names() {
    let mut w = World::new();
    w.cfg.cn_format = CnFormat::DisplayName;
    let names = [",+\"\\<>;=#", "  padded  ", "#hash", "Équipe ☃ 日本", "tab\tnew\nline", &"L".repeat(200)];
    for (i, name) in names.iter().enumerate() {
        w.group(security(i as u32 + 1, name, Some(true)), vec![]);
    }
    w.group(security(50, &"x".repeat(300), Some(true)), vec![]);
    let p = w.converge();
    assert_eq!(p.summary.adds, names.len());
    assert_eq!(p.errors.len(), 1, "a 300-character displayName is an error for that group only");
    for op in ops(&p, "add") {
        let Operation::Add { dn, attrs, .. } = op else { unreachable!() };
        let cn = &attrs.iter().find(|(k, _)| k == "cn").expect("cn").1[0];
        assert!(cn.encode_utf16().count() <= 64, "{cn}");
        assert!(!cn.chars().any(char::is_control));
        assert_eq!(dn, &naming::group_dn(cn, OU));
        assert_eq!(naming::unescape_rdn_value(&naming::split_dn(dn).0[3..]), *cn);
    }
    // A display name change renames the object; objectGUID is kept.
    w.cloud.groups.iter_mut().find(|g| g.id == id(3)).expect("g").display_name = Some("renamed".into());
    let p = w.converge();
    let Operation::Rename { new_rdn, .. } = ops(&p, "rename")[0] else { unreachable!() };
    assert_eq!(new_rdn, "CN=renamed_000000000003");
    assert_eq!((p.summary.renames, p.summary.adds, p.summary.deletes), (1, 0, 0));
}

#[test]
fn member_anchors_cover_users_and_synced_groups_only() {
    let mut w = sample_rollout();
    w.group(security(9, "X", Some(true)), vec![as_member(&security(10, "Y", Some(true)))]);
    let anchors = member_anchors(&w.cloud, &OwnedMembers::new(&[]));
    assert_eq!(anchors.len(), 9, "users 0..=8 once each; cloud users and cloud groups need no lookup");
}

#[test]
fn members_already_in_an_owned_group_need_no_lookup() {
    let mut w = World::new();
    let (u1, u2) = (synced_user(1), synced_user(2));
    let sid1 = u1.on_premises_security_identifier.clone().expect("sid");
    let inner = security(5, "Inner", Some(true));
    w.group(security(1, "G", Some(true)), vec![u1, u2, as_member(&inner)]);
    w.ad.groups.push(AdGroup {
        guid: "bbbbbbbb-0000-0000-0000-000000000001".into(),
        dn: format!("CN=G,{OU}").into(),
        cloud_id: id(1),
        // AD names its members by GUID, SID and DN; one of them is not a user of the cloud's.
        members: Some(vec![
            AdRef { guid: "AAAAAAAA-0000-0000-0000-000000000001".into(), dn: "CN=u1".into(), sid: Some(sid1.clone()) },
            AdRef {
                guid: "cccccccc-0000-0000-0000-000000000009".into(),
                dn: "CN=x".into(),
                sid: Some("S-1-5-21-9".into()),
            },
        ]),
        ..Default::default()
    });
    let owned = OwnedMembers::new(&w.ad.groups);
    let known = members_known(&w.cloud, &owned);
    assert_eq!(
        known.keys().collect::<Vec<_>>(),
        vec![&Anchor::Sid(sid1.clone())],
        "only the cloud's users, only those in AD"
    );
    let found = &known[&Anchor::Sid(sid1.clone())];
    assert_eq!((&*found.guid, &*found.dn, found.group_type), ("aaaaaaaa-0000-0000-0000-000000000001", "CN=u1", None));
    let anchors = member_anchors(&w.cloud, &owned);
    assert!(!anchors.contains(&Anchor::Sid(sid1)), "a known member is not looked up again");
    assert!(anchors.contains(&Anchor::Sid("S-1-5-21-1-2-3-1002".into())), "the new member is");
}

#[test]
fn a_partial_snapshot_nests_groups_it_does_not_replan_through_their_links() {
    let mut w = World::new();
    let inner = security(2, "Inner", Some(true));
    w.group(security(1, "Outer", Some(true)), vec![as_member(&inner), synced_user(1)]);
    // A delta cycle: only Outer is dirty; Inner exists in AD and is known by its link.
    w.state.links.insert(
        id(2),
        Link { guid: "ffffffff-0000-0000-0000-000000000002".into(), dn: format!("CN=Group_{},{OU}", id(2)).into() },
    );
    let p = w.plan();
    let Operation::Add { members, .. } = ops(&p, "add")[0] else { unreachable!() };
    assert!(members
        .iter()
        .any(|m| matches!(m, GroupTarget::Existing { guid, .. } if &**guid == "ffffffff-0000-0000-0000-000000000002")));
    assert_eq!(p.summary.deletes, 0, "groups outside the snapshot are never orphans");
}

#[test]
fn schema_features_add_the_cloud_sync_anchor_and_exchange_attributes() {
    let mut w = World::new();
    w.ad.schema = SchemaFeatures { external_directory_object_id: true, exchange: true, extension_attributes: true };
    w.group(m365(1, "Team", None, None), vec![]);
    w.group(security(2, "SG", Some(true)), vec![]);
    let p = w.converge();
    let attrs = |n: u32| match ops(&p, "add").into_iter().find(|o| *o.cloud_id() == id(n)) {
        Some(Operation::Add { attrs, .. }) => {
            attrs.iter().map(|(k, v)| (k.clone(), v.clone())).collect::<BTreeMap<_, _>>()
        }
        _ => BTreeMap::new(),
    };
    let team = attrs(1);
    assert_eq!(team["msDS-ExternalDirectoryObjectId"], vec![format!("Group_{}", id(1))]);
    assert_eq!(team["mailNickname"], vec!["team".to_string()]);
    let sg = attrs(2);
    assert_eq!(sg["msDS-ExternalDirectoryObjectId"], vec![format!("Group_{}", id(2))]);
    assert!(
        !sg.contains_key("mailNickname") && !sg.contains_key("mail"),
        "no mail attributes on a plain security group"
    );
}

#[test]
fn a_new_target_ou_moves_groups_and_adopted_ones_can_stay() {
    const CONNECT: &str = "OU=AADConnect,DC=corp,DC=test";
    let mut w = World::new();
    w.group(security(1, "Moves", Some(true)), vec![synced_user(1)]);
    w.group(security(2, "Adopted", Some(true)), vec![synced_user(2)]);
    w.converge();
    // Group 2 was written by Azure AD Connect into its own OU.
    let g2 = w.ad.groups.iter_mut().find(|g| g.cloud_id == id(2)).expect("g2");
    g2.dn = format!("CN=Group_{},{CONNECT}", id(2)).into();
    w.cfg.stay_in = vec![CONNECT.to_string()];
    w.cfg.target_ou = "OU=New,DC=corp,DC=test".into();
    let p = w.converge();
    let renames = ops(&p, "rename");
    assert_eq!(renames.len(), 1, "only the group in the old target OU moves");
    let Operation::Rename { cloud_id, new_parent, new_rdn, .. } = renames[0] else { unreachable!() };
    assert_eq!(
        (cloud_id.as_str(), new_parent.as_deref(), new_rdn.as_str()),
        (id(1).as_str(), Some("OU=New,DC=corp,DC=test"), format!("CN=Group_{}", id(1)).as_str())
    );
    assert_eq!(
        (p.summary.moves, p.summary.renames, p.summary.adds, p.summary.deletes),
        (1, 0, 0, 0),
        "a move, never delete + add"
    );
    assert_eq!(p.report(&id(2))[0].dn.as_deref(), Some(format!("CN=Group_{},{CONNECT}", id(2)).as_str()));
    // Configured to move adopted groups: it moves too, same objectGUID.
    w.cfg.stay_in.clear();
    let guid = w.ad.groups.iter().find(|g| g.cloud_id == id(2)).expect("g2").guid.clone();
    let p = w.converge();
    assert_eq!(p.summary.moves, 1);
    assert_eq!(w.ad.groups.iter().find(|g| g.cloud_id == id(2)).expect("g2").guid, guid);
}

#[test]
fn scoping_rules_include_at_scale_exclude_first_and_place_in_ous() {
    use crate::rules::{Rule, RuleAction, RuleKind};
    let rule = |kind, name: &str, action, ou: Option<&str>| Rule {
        kind,
        name: Some(name.to_string()),
        ids: vec![],
        action,
        group_type: None,
        target_ou: ou.map(String::from),
        all: vec![],
        any: vec![],
    };
    let mut w = World::new();
    w.cfg.rules = vec![
        rule(Some(RuleKind::Security), "SG-Test-*", RuleAction::Exclude, None),
        rule(Some(RuleKind::Security), "SG-Tier0-*", RuleAction::Include, Some("OU=Tier0,DC=corp,DC=test")),
        rule(Some(RuleKind::Security), "SG-*", RuleAction::Include, None),
    ];
    w.group(security(1, "SG-Finance", None), vec![synced_user(1)]);
    w.group(security(2, "SG-HR", None), vec![]);
    w.group(security(3, "SG-Test-Lab", Some(true)), vec![]);
    w.group(security(4, "SG-Tier0-Admins", None), vec![]);
    w.group(security(5, "Other", None), vec![]);
    w.group(security(6, "SG-OptedOut", Some(false)), vec![]);
    let p = w.converge();
    let added: BTreeMap<CloudId, String> = ops(&p, "add")
        .into_iter()
        .map(|o| match o {
            Operation::Add { cloud_id, dn, .. } => (cloud_id.clone(), naming::split_dn(dn).1.to_string()),
            _ => unreachable!(),
        })
        .collect();
    let want: BTreeMap<CloudId, String> =
        [(id(1), OU.to_string()), (id(2), OU.to_string()), (id(4), "OU=Tier0,DC=corp,DC=test".to_string())].into();
    assert_eq!(
        added, want,
        "SG-* with isEnabled unset are written; the earlier exclude wins even over isEnabled = true"
    );
    assert!(p.report(&id(3))[0].reason.starts_with("excluded by rule 1"), "{}", p.report(&id(3))[0].reason);
    assert!(
        p.report(&id(1))[0].reason.starts_with("included by rule 3 (kind = security, name = \"SG-*\")"),
        "{}",
        p.report(&id(1))[0].reason
    );
    assert!(p.report(&id(6))[0].reason.contains("turned off on the group itself"));
    assert!(!p.report(&id(5))[0].in_scope);
}

#[test]
fn owners_become_managed_by_and_follow_changes() {
    let mut w = World::new();
    w.cfg.write_owners = true;
    w.group(security(1, "SG", Some(true)), vec![]);
    let guid = |n: u32| format!("<GUID=aaaaaaaa-0000-0000-0000-{n:012}>");
    // A cloud-only owner first: the first owner that resolves to an AD user is used.
    w.cloud.owners.insert(id(1), MemberRead::complete(vec![cloud_user(1), synced_user(3), synced_user(4)]));
    let p = w.converge();
    let Operation::Add { attrs, .. } = ops(&p, "add")[0] else { unreachable!() };
    assert_eq!(attrs.iter().find(|(k, _)| k == "managedBy").map(|(_, v)| v.clone()), Some(vec![guid(3)]));
    // Owner 3 leaves: the first remaining owner takes over. Owners reordered: no change.
    w.cloud.owners.insert(id(1), MemberRead::complete(vec![synced_user(5), synced_user(4)]));
    w.converge();
    w.cloud.owners.insert(id(1), MemberRead::complete(vec![synced_user(4), synced_user(5)]));
    let p = w.converge();
    assert!(p.operations.is_empty(), "a reordering never flaps managedBy");
    // Owners read incompletely: left alone. No owner in AD: cleared.
    w.cloud.owners.insert(id(1), MemberRead::Incomplete("throttled".into()));
    assert!(w.plan().operations.is_empty());
    w.cloud.owners.insert(id(1), MemberRead::complete(vec![cloud_user(2)]));
    let p = w.converge();
    let Operation::Update { changes, .. } = ops(&p, "update")[0] else { unreachable!() };
    assert_eq!((changes[0].attr.as_str(), changes[0].values.len()), ("managedBy", 0));
}

/// A converted group (SOA) in the world: its original AD group `CN=Finance` in `OU=Legacy`, with
/// one member of its own, AD's sAMAccountName and a universal scope.
fn converted_world() -> (World, AdGroup) {
    let mut w = World::new();
    let sid = "S-1-5-21-1-2-3-5001";
    let mut g = security(7, "SG-Finance (cloud)", Some(true));
    g.on_premises_security_identifier = Some(sid.into());
    w.group(g, vec![synced_user(1), synced_user(2)]);
    w.cloud.cloud_managed.insert(id(7), Some(true));
    let mut attrs = BTreeMap::new();
    attrs.insert("samaccountname".to_string(), vec!["Finance".to_string()]);
    attrs.insert("displayname".to_string(), vec!["Finance".to_string()]);
    let original = AdGroup {
        guid: ObjectGuid::new("cccccccc-0000-0000-0000-000000000007"),
        sid: Some(sid.into()),
        dn: Dn::new("CN=Finance,OU=Legacy,DC=corp,DC=test"),
        cloud_id: id(7),
        cn: "Finance".into(),
        attrs,
        group_type: gt::UNIVERSAL_SECURITY,
        members: Some(vec![AdRef {
            guid: ObjectGuid::new("aaaaaaaa-0000-0000-0000-000000000001"),
            dn: "CN=user1,CN=Users,DC=corp,DC=test".into(),
            sid: None,
        }]),
        ..Default::default()
    };
    w.cfg.converted_ous = vec!["OU=Legacy,DC=corp,DC=test".into()];
    (w, original)
}

#[test]
fn a_converted_group_takes_over_its_original_in_place_and_is_released_when_given_back() {
    let (mut w, original) = converted_world();
    w.ad.originals.insert(id(7), Original::Found { group: original.clone(), critical: false });
    let p = w.plan();
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    assert!(ops(&p, "add").is_empty(), "no second group beside the original");
    let [Operation::Adopt { dn, sid, marker, .. }] = ops(&p, "adopt")[..] else { panic!("one adopt: {p:?}") };
    assert_eq!((dn.as_str(), sid.as_str()), ("CN=Finance,OU=Legacy,DC=corp,DC=test", "S-1-5-21-1-2-3-5001"));
    assert_eq!(marker[0], ("adminDescription".to_string(), vec![format!("Group_{}", id(7))]));
    assert!(ops(&p, "rename").is_empty(), "its DN and cn are kept");
    let [Operation::Update { changes, .. }] = ops(&p, "update")[..] else { panic!("one update: {p:?}") };
    assert!(!changes.iter().any(|c| c.attr == "sAMAccountName"), "its sAMAccountName is kept: {changes:?}");
    assert_eq!(p.summary.member_adds, 1, "its members follow the cloud");
    assert!(p.report(&id(7))[0].action.starts_with("adopt (converted from AD, SID S-1-5-21-1-2-3-5001)"));
    assert!(render::plan(&p).contains("= adopt (converted)"));
    w.apply(&p);
    assert!(w.plan().operations.is_empty(), "taken over once: {:?}", w.plan().operations);

    // Rolled back: isCloudManaged false. Released: marker off, group and members kept.
    w.cloud.cloud_managed.insert(id(7), Some(false));
    let p = w.plan();
    let [Operation::Release { dn, marker, .. }] = ops(&p, "release")[..] else { panic!("one release: {p:?}") };
    assert_eq!(
        (dn.as_str(), marker.as_slice()),
        ("CN=Finance,OU=Legacy,DC=corp,DC=test", &["adminDescription".into()][..])
    );
    assert_eq!(p.operations.len(), 1, "nothing else: {:?}", p.operations);
    // Synced from AD again (Connect took it back): the same.
    w.cloud.groups[0].on_premises_sync_enabled = Some(true);
    let p = w.plan();
    assert_eq!(ops(&p, "release").len(), 1, "{p:?}");
    assert!(ops(&p, "delete").is_empty());
}

#[test]
fn a_converted_group_outside_converted_ous_or_not_looked_up_writes_nothing() {
    let (mut w, original) = converted_world();
    let p = w.plan();
    assert!(p.operations.is_empty() && p.errors[0].message.contains("not looked up"), "{p:?}");
    w.cfg.converted_ous = vec!["OU=Elsewhere,DC=corp,DC=test".into()];
    w.ad.originals.insert(id(7), Original::Found { group: original, critical: false });
    let p = w.plan();
    assert!(p.operations.is_empty(), "{:?}", p.operations);
    assert!(p.errors[0].message.starts_with("converted-outside-managed-ous"), "{:?}", p.errors);
    // Gone from AD: written as a new group, as Cloud Sync does.
    w.ad.originals.insert(id(7), Original::NotFound);
    assert_eq!(ops(&w.plan(), "add").len(), 1);
}

#[test]
fn an_orphan_in_converted_ous_is_given_back_never_deleted() {
    let (mut w, original) = converted_world();
    w.cfg.on_out_of_scope = OnRemoval::Delete;
    w.ad.originals.insert(id(7), Original::Found { group: original, critical: false });
    let p = w.plan();
    w.apply(&p);
    w.cloud.groups[0].writeback_configuration = wb(Some(false), None);
    let p = w.plan();
    assert!(ops(&p, "delete").is_empty(), "{p:?}");
    assert_eq!(ops(&p, "release").len(), 1, "{p:?}");
}

#[test]
fn devices_synced_from_ad_are_written_as_their_computer_accounts_with_write_devices() {
    let mut w = World::new();
    let computer = AdObject {
        guid: "dddddddd-0000-0000-0000-000000000001".into(),
        sid: Some("S-1-5-21-1-2-3-7001".into()),
        dn: "CN=PC1,CN=Computers,DC=corp,DC=test".into(),
        group_type: None,
        class: AdClass::Computer,
        source_anchor: None,
    };
    w.ad.directory.insert(Anchor::Sid("S-1-5-21-1-2-3-7001".into()), computer);
    let device = |n: u32, sid: Option<&str>, device_id: &str| CloudObject {
        odata_type: Some("#microsoft.graph.device".into()),
        id: id(3000 + n),
        display_name: Some(format!("PC{n}")),
        on_premises_sync_enabled: sid.map(|_| true),
        on_premises_security_identifier: sid.map(str::to_string),
        device_id: Some(device_id.into()),
        ..Default::default()
    };
    let hybrid = device(1, Some("S-1-5-21-1-2-3-7001"), "DDDDDDDD-0000-0000-0000-000000000001");
    let cloud_only = device(2, None, "eeeeeeee-0000-0000-0000-000000000002");
    let lying = device(3, Some("S-1-5-21-1-2-3-7001"), "ffffffff-0000-0000-0000-000000000003");
    let user_sid = device(4, Some("S-1-5-21-1-2-3-1001"), "aaaaaaaa-0000-0000-0000-000000000001");
    w.group(security(1, "SG-Devices", Some(true)), vec![hybrid, cloud_only, lying, user_sid]);
    let reasons = |w: &World| -> Vec<Option<SkipReason>> {
        w.plan().report(&id(1))[0].members.iter().map(|m| m.reason).collect()
    };
    assert_eq!(reasons(&w), vec![Some(SkipReason::UnsupportedMemberType); 4], "off by default");
    w.cfg.write_devices = true;
    let p = w.plan();
    let [Operation::Add { members, .. }] = ops(&p, "add")[..] else { panic!("{p:?}") };
    assert_eq!(members.len(), 1, "only the hybrid-joined device: {members:?}");
    assert_eq!(
        reasons(&w),
        vec![
            None,
            Some(SkipReason::CloudOnlyDevice),
            Some(SkipReason::AnchorMismatch),
            Some(SkipReason::AnchorMismatch)
        ]
    );
    let errors: Vec<&str> = p.errors.iter().map(|e| e.message.as_str()).collect();
    assert!(errors.iter().any(|e| e.contains("its deviceId names another object")), "{errors:?}");
    assert!(errors.iter().any(|e| e.contains("a user account, not a computer account")), "{errors:?}");
    // Looked up only when they are written.
    let looked_up = |devices: bool| member_anchors(&w.cloud, &OwnedMembers::new(&[]).with_devices(devices)).len();
    assert_eq!((looked_up(false), looked_up(true)), (0, 2));
}

#[test]
fn a_member_from_another_forest_is_skipped_as_other_forest() {
    let mut w = World::new();
    let mut foreign = synced_user(90);
    foreign.on_premises_security_identifier = Some("S-1-5-21-9-9-9-1090".into());
    let missing = synced_user(91); // of this forest, but not in AD
    w.group(security(1, "SG-Forest", Some(true)), vec![synced_user(1), foreign, missing]);
    let reasons = |w: &World| -> Vec<Option<SkipReason>> {
        w.plan().report(&id(1))[0].members.iter().map(|m| m.reason).collect()
    };
    // The forest's domains unknown: not found, as before.
    assert_eq!(reasons(&w), vec![None, Some(SkipReason::NotFoundInAd), Some(SkipReason::NotFoundInAd)]);
    w.ad.forest_domains = vec!["S-1-5-21-1-2-3".into()];
    assert_eq!(reasons(&w), vec![None, Some(SkipReason::OtherForest), Some(SkipReason::NotFoundInAd)]);
}

#[test]
fn a_takeover_holds_removals_until_approved_and_names_nothing_before_it_is_ours() {
    let (mut w, mut original) = converted_world();
    // The original holds a computer the cloud group cannot express (no write_devices).
    original.members.get_or_insert_with(Vec::new).push(AdRef {
        guid: ObjectGuid::new("dddddddd-0000-0000-0000-000000000009"),
        dn: "CN=PC9,CN=Computers,DC=corp,DC=test".into(),
        sid: None,
    });
    w.ad.originals.insert(id(7), Original::Found { group: original, critical: false });
    w.cfg.rename_converted = true;
    let p = w.plan();
    assert!(matches!(p.operations[0], Operation::Adopt { .. }), "before the rename: {:?}", p.operations);
    assert!(matches!(p.operations[1], Operation::Rename { .. }), "{:?}", p.operations);
    assert!(ops(&p, "remove-members").is_empty(), "{:?}", p.operations);
    assert!(p.held[0].taken_over && p.held[0].removals == 1, "{:?}", p.held);
    let none = std::collections::BTreeSet::new();
    w.state.takeover_holds = p.takeover_holds(&none, &none);
    assert!(w.state.takeover_holds.contains(&id(7)), "remembered on its own");
    w.apply(&p);
    // Held again by the next cycles, until approved — `--allow-deletes` is not an approval.
    assert!(ops(&w.plan(), "remove-members").is_empty());
    w.cfg.allow.deletes = true;
    assert!(ops(&w.plan(), "remove-members").is_empty());
    w.cfg.allow.approved.removals.insert(id(7), 1);
    let p = w.plan();
    assert_eq!(ops(&p, "remove-members").len(), 1);
    // Forgotten once applied; kept when the removal failed.
    assert!(p.takeover_holds(&w.state.takeover_holds, &none).is_empty());
    let failed = std::collections::BTreeSet::from([id(7)]);
    assert!(p.takeover_holds(&w.state.takeover_holds, &failed).contains(&id(7)));
}

#[test]
fn a_conversion_graph_could_not_say_changes_nothing_hands() {
    let (mut w, original) = converted_world();
    w.ad.originals.insert(id(7), Original::Found { group: original, critical: false });
    w.cloud.cloud_managed.insert(id(7), None);
    let p = w.plan();
    assert!(p.operations.is_empty(), "{:?}", p.operations);
    assert!(p.errors[0].message.contains("could not be read from Graph"), "{:?}", p.errors);
}

#[test]
fn mappings_write_their_attributes_converge_and_never_take_a_name_another_object_holds() {
    let mut w = World::new();
    w.cfg.mappings = vec![
        mapping("sAMAccountName", "grp-{ToLower(Left(displayName, 5))}"),
        mapping("info", "from the cloud: {Default(description, \"-\")}"),
        mapping("extensionAttribute3", "{displayName}"),
    ];
    w.group(security(1, "Sales Team", Some(true)), vec![]);
    w.group(security(2, "SALES people", Some(true)), vec![]);
    w.group(security(3, "Ops", Some(true)), vec![]);
    // Another AD object (a user) already holds grp-ops.
    w.ad.sam_owners.insert("grp-ops".into(), ObjectGuid::new("cccccccc-0000-0000-0000-000000000001"));
    let p = w.converge();
    let attrs = |n: u32| match ops(&p, "add").into_iter().find(|o| *o.cloud_id() == id(n)) {
        Some(Operation::Add { attrs, .. }) => attrs.iter().cloned().collect::<BTreeMap<_, _>>(),
        _ => BTreeMap::new(),
    };
    let one = attrs(1);
    assert_eq!(one["sAMAccountName"], vec!["grp-sales".to_string()]);
    assert_eq!(one["info"], vec!["from the cloud: -".to_string()]);
    assert_eq!(one["extensionAttribute3"], vec!["Sales Team".to_string()]);
    // Group 2 maps to the same name as group 1 (earlier in id order): it gets the default.
    assert_eq!(attrs(2)["sAMAccountName"], vec![format!("Group_{}", id(2))]);
    assert_eq!(attrs(3)["sAMAccountName"], vec![format!("Group_{}", id(3))]);
    let errors: Vec<&str> = p.errors.iter().map(|e| e.message.as_str()).collect();
    assert!(errors.iter().any(|e| e.contains("\"grp-sales\"") && e.contains("mapped to it too")), "{errors:?}");
    assert!(errors.iter().any(|e| e.contains("\"grp-ops\"") && e.contains("another AD object")), "{errors:?}");
    assert!(crate::render::plan(&p).contains("sAMAccountName = [\"grp-sales\"]"), "plan shows what a mapping writes");

    // A changed value is an update; an empty one clears the attribute.
    w.cfg.mappings[2] = mapping("extensionAttribute3", "{theme}");
    let p = w.plan();
    let changes: Vec<String> = p
        .operations
        .iter()
        .filter_map(|o| match o {
            Operation::Update { changes, .. } => Some(changes.iter().map(|c| format!("{}={:?}", c.attr, c.values))),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(changes.iter().filter(|c| *c == "extensionAttribute3=[]").count(), 3, "{changes:?}");
}

#[test]
fn flatten_writes_the_transitive_members_of_nested_groups_not_written_back() {
    let mut w = World::new();
    w.cfg.nested = crate::Nested::Flatten;
    let top = security(1, "Top", Some(true));
    let n = security(2, "Nested", None); // not written back
    let m = security(3, "Deeper", None); // not written back, and nests Top and Nested again
    let written = security(4, "Written", Some(true));
    w.group(top.clone(), vec![synced_user(1), as_member(&n)]);
    w.group(n.clone(), vec![synced_user(2), as_member(&m), as_member(&written)]);
    w.group(m.clone(), vec![synced_user(3), synced_user(1), as_member(&top), as_member(&n)]);
    w.group(written.clone(), vec![synced_user(5)]);
    let p = w.converge();
    let report = p.groups.iter().find(|g| g.cloud_id == id(1)).expect("Top planned");
    let by_id: BTreeMap<&str, &crate::plan::MemberReport> =
        report.members.iter().map(|m| (&*m.cloud_id, &**m)).collect();
    assert_eq!(by_id[id(1001).as_str()].via, None, "direct");
    assert_eq!(by_id[id(1002).as_str()].via.as_deref(), Some("Nested"));
    assert_eq!(by_id[id(1003).as_str()].via.as_deref(), Some("Deeper"));
    assert_eq!(by_id[id(4).as_str()].status, MemberStatus::Written, "a written-back group stays a nested group");
    assert_eq!(by_id[id(2).as_str()].reason, Some(SkipReason::NestedGroupNotWrittenBack));
    assert_eq!(report.members.iter().filter(|m| &*m.cloud_id == id(1001).as_str()).count(), 1, "explained once");
    let top_ad = w.ad.groups.iter().find(|g| g.cloud_id == id(1)).expect("Top in AD");
    assert_eq!(top_ad.members.as_ref().map(Vec::len), Some(4), "users 1, 2, 3 and the Written group");

    // A nested group's read incomplete: Top is left as it is (no removals from a partial list).
    w.cloud.members.insert(id(3), MemberRead::Incomplete("throttled".into()));
    let p = w.plan();
    assert!(p.operations.iter().all(|o| *o.cloud_id() != id(1)), "{:?}", p.operations);
    assert!(p.errors.iter().any(|e| e.cloud_id == id(1).as_str() && e.message.contains("nested group Deeper")));
}

#[test]
fn a_mapped_cn_taken_by_an_earlier_group_falls_back_to_the_default_with_its_sam() {
    let mut w = World::new();
    w.cfg.mappings = vec![mapping("cn", "{Trim(displayName)}")];
    w.group(security(1, "Finance", Some(true)), vec![]);
    w.group(security(2, " Finance ", Some(true)), vec![]);
    let p = w.converge();
    let added = dns_and_sams(&p);
    assert_eq!(added[&id(1)], (format!("CN=Finance,{OU}"), "Finance".to_string()));
    assert_eq!(added[&id(2)], (format!("CN=Group_{},{OU}", id(2)), format!("Group_{}", id(2))));
    assert!(p.errors.iter().any(|e| e.cloud_id == id(2).as_str() && e.message.contains("also the mapped cn")));
}

#[test]
fn a_mapped_cn_never_takes_a_name_held_in_ad() {
    let mut w = World::new();
    w.cfg.mappings = vec![mapping("cn", "{Trim(displayName)}")];
    // Group 5 holds CN=Finance (written by an earlier cycle); group 1, new and first in id
    // order, is mapped to the same cn; an AD user holds the sAMAccountName "Sales".
    w.group(security(5, "Finance", Some(true)), vec![]);
    w.converge();
    w.group(security(1, "Finance", Some(true)), vec![]);
    w.group(security(2, "Sales", Some(true)), vec![]);
    w.ad.sam_owners.insert("sales".into(), ObjectGuid::new("cccccccc-0000-0000-0000-000000000002"));
    let p = w.converge();
    let added = dns_and_sams(&p);
    assert!(ops(&p, "rename").is_empty(), "the holder keeps its name: {:?}", p.operations);
    assert_eq!(added[&id(1)].0, format!("CN=Group_{},{OU}", id(1)), "the newcomer gets the default cn");
    // The cn is mapped, but its sAMAccountName is held: the default one, not the cn's.
    assert_eq!(added[&id(2)], (format!("CN=Sales,{OU}"), format!("Group_{}", id(2))));
}

/// The DN and sAMAccountName of each group a plan adds.
fn dns_and_sams(p: &Plan) -> BTreeMap<CloudId, (String, String)> {
    ops(p, "add")
        .into_iter()
        .filter_map(|o| match o {
            Operation::Add { cloud_id, dn, attrs, .. } => {
                let sam = attrs.iter().find(|(a, _)| a == "sAMAccountName").map(|(_, v)| v[0].clone());
                Some((cloud_id.clone(), (dn.clone(), sam.unwrap_or_default())))
            }
            _ => None,
        })
        .collect()
}

/// A `[[mappings]]` entry, as the configuration would give it.
fn mapping(attr: &str, value: &str) -> crate::Mapping {
    crate::Mapping {
        attribute: crate::MappedAttribute::parse(attr).expect("attribute"),
        value: crate::mapping::Template::parse(value).expect("template"),
    }
}
