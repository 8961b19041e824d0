//! `writeback cloud …`: the bulk changes the blog's PowerShell loops made, through Graph.
//! Without `--yes`, `set-writeback` only shows what it would change.

use serde_json::json;
use writeback_core::naming::printable;
use writeback_core::scope::{group_kind, GroupKind};
use writeback_core::settings::{setting_changes, Setting, GROUP_TYPES};
use writeback_core::CloudId;
use writeback_graph::{DefaultChange, GraphClient};

use crate::config::Config;
use crate::error::CycleError;
use crate::{exit, progress};

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum KindArg {
    Microsoft365,
    Security,
}

pub struct SetWriteback {
    pub groups: Vec<String>,
    pub kind: Option<KindArg>,
    pub enable: bool,
    pub ty: Option<String>,
    pub yes: bool,
}

pub async fn set_writeback(cfg: &Config, args: SetWriteback, as_json: bool) -> Result<u8, CycleError> {
    if let Some(t) = &args.ty {
        if !GROUP_TYPES.contains(&t.as_str()) {
            eprintln!("error: --type {t} is not one of {}", GROUP_TYPES.join(", "));
            return Ok(exit::CONFIG);
        }
        if matches!(args.kind, Some(KindArg::Security)) && t != "universalSecurityGroup" {
            eprintln!("error: security groups can only be written back as universalSecurityGroup");
            return Ok(exit::CONFIG);
        }
    }
    let graph = GraphClient::new(cfg.graph()?)?;
    progress::phase("reading the groups");
    let (all, _) = graph.list_groups().await?;
    progress::done();
    let wanted: Vec<CloudId> = args.groups.iter().map(CloudId::new).collect();
    let selected: Vec<_> = all
        .into_iter()
        .filter(|g| match args.kind {
            Some(KindArg::Microsoft365) => group_kind(g) == GroupKind::Microsoft365 && !g.is_synced(),
            Some(KindArg::Security) => group_kind(g) == GroupKind::Security && !g.is_synced(),
            None => wanted.contains(&g.id),
        })
        .collect();
    let unknown: Vec<&CloudId> = wanted.iter().filter(|w| !selected.iter().any(|g| &&g.id == w)).collect();
    if !unknown.is_empty() {
        eprintln!("error: no such group: {}", unknown.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "));
        return Ok(exit::CONFIG);
    }
    let setting = if args.enable { Setting::Enable(args.ty.clone()) } else { Setting::Disable };
    let results = setting_changes(&selected, &setting);
    let mut errors: Vec<(String, String)> = results.iter().filter_map(|r| r.as_ref().err().cloned()).collect();
    let changes: Vec<_> = results.into_iter().filter_map(Result::ok).collect();
    let to_patch: Vec<(String, serde_json::Value)> =
        changes.iter().filter_map(|c| c.patch.clone().map(|p| (c.id.to_string(), p))).collect();
    let unchanged = changes.len() - to_patch.len();

    let mut changed = 0;
    if args.yes && !to_patch.is_empty() {
        let mut done = 0;
        let mut count = progress::counter("updating groups");
        for chunk in to_patch.chunks(200) {
            for (id, r) in graph.patch_groups(chunk).await {
                match r {
                    Ok(()) => changed += 1,
                    Err(e) => errors.push((id, e)),
                }
            }
            done += chunk.len();
            count(done, to_patch.len());
        }
        progress::done();
    }
    if as_json {
        let list: Vec<_> = changes
            .iter()
            .filter(|c| c.patch.is_some())
            .map(|c| json!({"id": c.id, "display_name": c.display_name, "change": c.note}))
            .collect();
        let errs: Vec<_> = errors.iter().map(|(id, e)| json!({"id": id, "error": e})).collect();
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"applied": args.yes, "selected": selected.len(), "to_change": to_patch.len(),
                "changed": changed, "unchanged": unchanged, "failed": errors.len(), "changes": list, "errors": errs})
            )
            .unwrap_or_default()
        );
    } else {
        // With --yes, every group changed (a failed one is listed with its error below).
        let failed: std::collections::HashSet<&str> = errors.iter().map(|(id, _)| id.as_str()).collect();
        let shown =
            changes.iter().filter(|c| c.patch.is_some()).filter(|c| !args.yes || !failed.contains(c.id.as_str()));
        for c in shown.take(if args.yes { usize::MAX } else { 50 }) {
            let done = if args.yes { "changed" } else { "would change" };
            println!("~ {} ({}): {done}: {}", printable(&c.display_name), c.id, printable(&c.note));
        }
        if !args.yes && to_patch.len() > 50 {
            println!("  … and {} more", to_patch.len() - 50);
        }
        for (id, e) in &errors {
            println!("! {id}: {}", printable(e));
        }
        if args.yes {
            println!(
                "{} groups selected: {changed} changed, {unchanged} already so, {} failed",
                selected.len(),
                errors.len()
            );
        } else {
            println!(
                "{} groups selected: {} would change, {unchanged} already so. Nothing was changed: add --yes to apply.",
                selected.len(),
                to_patch.len()
            );
        }
    }
    Ok(if errors.is_empty() { exit::OK } else { exit::OBJECT_ERRORS })
}

pub async fn new_group_default(cfg: &Config, set: Option<bool>, yes: bool, as_json: bool) -> Result<u8, CycleError> {
    let graph = GraphClient::new(cfg.graph()?)?;
    if let (Some(want), false) = (set, yes) {
        // Tenant-wide: shown first, applied with --yes, as set-writeback.
        let now = graph.new_group_default().await?;
        let would = if now.enabled == want { "is already so" } else { "would change" };
        if as_json {
            println!(
                "{}",
                json!({"applied": false, "new_unified_group_writeback_default": now.enabled, "wanted": want})
            );
        } else {
            println!(
                "NewUnifiedGroupWritebackDefault = {} {would} to {want} (every new Microsoft 365 group of the \
                 tenant). Nothing was changed: add --yes to apply.",
                now.enabled
            );
        }
        return Ok(exit::OK);
    }
    let change = match set {
        Some(v) => Some(graph.set_new_group_default(v).await?),
        None => None,
    };
    let now = graph.new_group_default().await?;
    let said = change.as_ref().map(describe);
    if as_json {
        println!(
            "{}",
            json!({
                "new_unified_group_writeback_default": now.enabled,
                "setting_id": now.setting_id,
                "action": said,
                "other_values_kept": match &change {
                    Some(DefaultChange::Updated { kept, .. }) => Some(*kept),
                    _ => None
                }
            })
        );
    } else {
        if let Some(s) = said {
            println!("{s}");
        }
        let source = if now.setting_id.is_some() {
            "Group.Unified setting"
        } else {
            "template default: the tenant has no Group.Unified setting"
        };
        println!("NewUnifiedGroupWritebackDefault = {} ({source})", now.enabled);
    }
    Ok(exit::OK)
}

fn describe(c: &DefaultChange) -> String {
    match c {
        DefaultChange::Unchanged { .. } => "already so: nothing was changed".into(),
        DefaultChange::Created { values, .. } => {
            format!(
                "created the tenant's Group.Unified setting from its template ({values} \
                values, the others at their defaults)"
            )
        }
        DefaultChange::Updated { from, kept, .. } => format!(
            "updated the tenant's Group.Unified setting (was {}); read back: the other {kept} values are unchanged",
            from.as_deref().unwrap_or("not set")
        ),
    }
}
