//! `writeback adopt --group ID --dn DN [--yes]`: an administrator takes over one AD group for a
//! cloud group by hand — a group converted from AD for which Graph gives no SID, say. The same
//! checks as a takeover by SID ([`convert::may_take_over`]): inside `converted_ous`, universal,
//! unprotected, no other marker or adminDescription; and when the cloud group does carry a SID,
//! the AD group must have it. Without `--yes` it shows what would happen; with it, the marker is
//! stamped (AD asked again right before) and the next cycle writes members and attributes, as
//! the plan shown says. Nothing else is written by this command.

use serde_json::json;
use writeback_core::convert::{self, Conversion};
use writeback_core::plan::{Operation, Plan};
use writeback_core::scope::decide_with;
use writeback_core::{naming, render, Allow, CloudId, CloudSnapshot, Original};
use writeback_store::Store;

use crate::audit;
use crate::config::Config;
use crate::engine::{self, Snapshot};
use crate::error::CycleError;
use crate::exit;

pub async fn adopt(cfg: &Config, group: &str, dn: &str, yes: bool, as_json: bool) -> Result<u8, CycleError> {
    let id = CloudId::new(group.trim().to_ascii_lowercase());
    if !naming::is_guid(&id) {
        return Err(CycleError::Config(format!("--group {group:?} is not a cloud group's object id")));
    }
    // Taking over writes to AD: never while a daemon or a sync writes too.
    let lead = match yes {
        true => Some(
            crate::lead::for_command(
                cfg,
                "Stop the daemon (systemctl stop writeback) for the takeover, then start it again; without \
                 --yes, adopt only shows what it would do",
            )
            .await?,
        ),
        false => None,
    };
    let state = engine::state_read_only(cfg).await?;
    let (graph, mut ad) = engine::connect(cfg).await?;
    if let Some(l) = &lead {
        ad.set_gate(l.gate());
    }
    let (found, _, failed) = graph.groups_by_id(std::slice::from_ref(&id)).await;
    if let Some((_, why)) = failed.first() {
        return Err(CycleError::Other(format!("reading group {id}: {why}")));
    }
    let Some(g) = found.into_iter().next() else { return refused(as_json, &format!("no cloud group has the id {id}")) };
    let decision = decide_with(&g, &cfg.rules);
    if !decision.in_scope {
        return refused(as_json, &format!("{} is not written back: {}", g.name(), decision.reason));
    }
    let ous = cfg.managed_ous(&state);
    if let Some(owned) = ad.read_owned_groups_by_ids(&ous, std::slice::from_ref(&id)).await?.first() {
        return refused(as_json, &format!("{} is already managed: {}", g.name(), owned.dn));
    }
    let original = ad.original_at(dn, &id).await?;
    let group = match &original {
        Original::Found { group, .. } => group.clone(),
        Original::NotFound | Original::OtherDomain => return refused(as_json, &format!("no object at {dn}")),
        Original::NotAGroup(class) => return refused(as_json, &format!("{dn} is {class}, not a group")),
    };
    let Some(sid) = group.sid.clone() else { return refused(as_json, &format!("{dn} has no objectSid")) };
    // The cloud's word on which AD group it is, when it has one, must agree with the DN given.
    let cloud = CloudSnapshot { groups: vec![g.clone()], ..Default::default() };
    if let Conversion::Converted(named) | Conversion::GivenBack(named) | Conversion::Unknown(named) =
        convert::conversion(&g, &cloud)
    {
        if !named.eq_ignore_ascii_case(&sid) {
            let why = format!("{} names the AD group with SID {named}, and {dn} has {sid}: not taken over", g.name());
            return refused(as_json, &why);
        }
    }
    let planner = cfg.planner(Allow::default());
    if let Err(why) = convert::may_take_over(&id, &sid, Some(&original), &planner) {
        return refused(as_json, &why);
    }

    // What follows: the plan of this group once it carries the marker.
    let mut as_owned = group.clone();
    as_owned.attrs.insert("admindescription".into(), vec![naming::marker(&id)]);
    let mut cloud = cloud;
    cloud.members = graph.members_of(std::slice::from_ref(&id)).await;
    if cfg.writeback.write_owners {
        cloud.owners = graph.owners_of(std::slice::from_ref(&id)).await;
    }
    let devices = cfg.writeback.write_devices;
    let ad_snap = engine::resolve(&mut ad, &cloud, vec![as_owned], devices, Default::default()).await?;
    let snap = Snapshot { cloud, ad: ad_snap };
    let marker = convert::marker_values(&id, &ad.schema);
    let take =
        Operation::Adopt { cloud_id: id.clone(), guid: group.guid.clone(), dn: group.dn.to_string(), sid, marker };
    let mut then = writeback_core::plan(&snap.cloud, &snap.ad, &state, &planner);
    then.operations.insert(0, take.clone());
    if !yes {
        ad.close().await;
        show(&then, as_json, false);
        if !as_json {
            println!("Nothing was changed: add --yes to take {dn} over.");
        }
        return Ok(exit::OK);
    }

    let only = Plan { operations: vec![take], ..Default::default() };
    let report = ad.apply(&only, &ous, &mut |_, _| {}).await;
    ad.close().await;
    let applied = report.paired(&only.operations).map_err(CycleError::Invariant)?;
    if let Some(why) = applied.first().and_then(|(_, out)| out.error.clone()) {
        return refused(as_json, &why);
    }
    let mut store = Store::open(&cfg.state()?).await?;
    if let Some(l) = &lead {
        store.fenced(l.fence(), &crate::lead::host());
    }
    store.record_audit(&audit::entries(0, &then, &applied, None, &[])).await?;
    // Its removals wait for an approval, as a takeover by SID's do.
    let mut holds = store.state().await?.takeover_holds;
    holds.insert(id.clone());
    store.save_takeover_holds(&holds).await?;
    show(&then, as_json, true);
    if !as_json {
        println!("Taken over: {dn} carries the marker of {id}; the next cycle writes the rest shown above.");
    }
    Ok(exit::OK)
}

fn show(plan: &Plan, as_json: bool, applied: bool) {
    if as_json {
        println!("{}", json!({"applied": applied, "operations": plan.operations, "errors": plan.errors}));
    } else {
        print!("{}", render::plan(plan));
    }
}

/// A takeover that may not happen: said, nothing written (exit 1, as a per-object error).
fn refused(as_json: bool, why: &str) -> Result<u8, CycleError> {
    if as_json {
        println!("{}", json!({"applied": false, "refused": why}));
    } else {
        println!("not taken over: {why}");
    }
    Ok(exit::OBJECT_ERRORS)
}
