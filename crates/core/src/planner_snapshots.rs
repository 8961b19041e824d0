//! Planner scenarios read as data: a world in, the plan out as `writeback plan` prints it
//! (`render::plan`), compared with the expected text. A new case is a few lines: build the
//! world, then `check(&w, expect![[""]])` and run `UPDATE_EXPECT=1 cargo test -p
//! writeback-core` to fill the text in; read it before committing it.

use expect_test::{expect, Expect};

use crate::test_world::*;
use crate::*;

fn check(w: &World, expected: Expect) {
    expected.assert_eq(&render::plan(&w.plan()));
}

#[test]
fn first_sync_of_the_sample_rollout() {
    check(
        &sample_rollout(),
        expect![[r#"
            + add      SG-Finance  CN=Group_00000000-0000-0000-0000-000000000001,OU=Groups,DC=corp,DC=test (3 members)
            + add      SG-Dynamic-Sales  CN=Group_00000000-0000-0000-0000-000000000002,OU=Groups,DC=corp,DC=test (4 members)
            + add      Team-Default  CN=Group_00000000-0000-0000-0000-000000000004,OU=Groups,DC=corp,DC=test (2 members)
            + add      Team-MailSec  CN=Group_00000000-0000-0000-0000-000000000005,OU=Groups,DC=corp,DC=test (1 members)
            plan: 4 added, 0 updated, 0 renamed, 0 moved, 0 deleted; 10 members added, 0 removed, 2 skipped; 0 errors
        "#]],
    );
}

#[test]
fn drift_is_put_back() {
    let w = drifted_rollout();
    check(
        &w,
        expect![[r#"
            ~ update   SG-Finance  CN=Group_00000000-0000-0000-0000-000000000001,OU=Groups,DC=corp,DC=test: groupType ["-2147483646"] -> ["-2147483640"]
            ~ update   SG-Finance  CN=Group_00000000-0000-0000-0000-000000000001,OU=Groups,DC=corp,DC=test: description ["edited by hand"] -> []
            - members  SG-Finance  CN=Group_00000000-0000-0000-0000-000000000001,OU=Groups,DC=corp,DC=test: -1
                         - CN=intruder,DC=corp,DC=test
            plan: 0 added, 1 updated, 0 renamed, 0 moved, 0 deleted; 0 members added, 1 removed, 2 skipped; 0 errors
        "#]],
    );
}

#[test]
fn a_renamed_group_is_renamed_and_its_members_follow_the_cloud() {
    let mut w = sample_rollout();
    w.converge();
    let g = w.cloud.groups.iter_mut().find(|g| g.id == id(1)).expect("group");
    g.display_name = Some("SG-Finance-EMEA".into());
    w.cloud.members.insert(id(1), MemberRead::complete(vec![synced_user(0), synced_user(9)]));
    check(
        &w,
        expect![[r#"
            ~ update   SG-Finance-EMEA  CN=Group_00000000-0000-0000-0000-000000000001,OU=Groups,DC=corp,DC=test: displayName ["SG-Finance"] -> ["SG-Finance-EMEA"]
            + members  SG-Finance-EMEA  CN=Group_00000000-0000-0000-0000-000000000001,OU=Groups,DC=corp,DC=test: +1
                         + CN=user9,CN=Users,DC=corp,DC=test
            - members  SG-Finance-EMEA  CN=Group_00000000-0000-0000-0000-000000000001,OU=Groups,DC=corp,DC=test: -2
                         - CN=user1,CN=Users,DC=corp,DC=test
                         - CN=user2,CN=Users,DC=corp,DC=test
            plan: 0 added, 1 updated, 0 renamed, 0 moved, 0 deleted; 1 members added, 2 removed, 2 skipped; 0 errors
        "#]],
    );
}

#[test]
fn members_writeback_cannot_write_are_counted_as_skipped_not_written() {
    let mut w = World::new();
    let device = CloudObject { odata_type: Some("#microsoft.graph.device".into()), id: id(3000), ..Default::default() };
    let mut lost = synced_user(99);
    lost.on_premises_security_identifier = Some("S-1-5-21-9-9-9-9".into());
    w.group(security(1, "SG", Some(true)), vec![device, lost, cloud_user(1)]);
    check(
        &w,
        expect![[r#"
            + add      SG  CN=Group_00000000-0000-0000-0000-000000000001,OU=Groups,DC=corp,DC=test (0 members)
            plan: 1 added, 0 updated, 0 renamed, 0 moved, 0 deleted; 0 members added, 0 removed, 3 skipped; 0 errors
        "#]],
    );
}

#[test]
fn deletes_past_the_threshold_stop_the_sync() {
    let mut w = sample_rollout();
    w.group(m365(7, "Team-SoftDeleted", None, None), vec![]);
    w.group(m365(8, "Team-Gone", None, None), vec![]);
    w.converge();
    w.cloud.groups.retain(|g| g.id != id(7) && g.id != id(8));
    w.cloud.soft_deleted.insert(id(7));
    w.cfg.on_soft_delete = OnRemoval::Delete;
    w.cfg.delete_threshold = 1;
    check(
        &w,
        expect![[r#"
            - delete   Team-SoftDeleted  CN=Group_00000000-0000-0000-0000-000000000007,OU=Groups,DC=corp,DC=test (soft-deleted in the cloud (in the recycle bin))
            - delete   Team-Gone  CN=Group_00000000-0000-0000-0000-000000000008,OU=Groups,DC=corp,DC=test (permanently deleted in the cloud)
            plan: 0 added, 0 updated, 0 renamed, 0 moved, 2 deleted; 0 members added, 0 removed, 2 skipped; 0 errors
            a sync would stop: this run would delete 2 AD groups, more than [writeback] delete_threshold = 1; nothing was changed. Check the plan (writeback plan), then approve it: `writeback approve --deletes 2` lets the next cycle (the daemon's too) go ahead; or, where no daemon runs, `writeback sync --allow-deletes`
        "#]],
    );
}

#[test]
fn a_hostile_display_name_cannot_rewrite_the_terminal() {
    let mut w = World::new();
    w.cfg.cn_format = CnFormat::DisplayName;
    w.group(security(1, "Fin\u{1b}[2Jance\u{202e}lmth.exe,OU=Evil", Some(true)), vec![synced_user(0)]);
    check(
        &w,
        expect![[r#"
            + add      Fin�[2Jance�lmth.exe,OU=Evil  CN=Fin_[2Jance�lmth.exe\,OU\=Evil_000000000001,OU=Groups,DC=corp,DC=test (1 members)
            plan: 1 added, 0 updated, 0 renamed, 0 moved, 0 deleted; 1 members added, 0 removed, 0 skipped; 0 errors
        "#]],
    );
}
