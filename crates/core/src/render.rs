//! A plan as an administrator reads it: the text `writeback plan` prints, and the planner's
//! snapshot tests compare. Cloud text (names, and messages and DNs that quote them) goes
//! through [`printable`], so a display name cannot rewrite the terminal.

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::ids::CloudId;
use crate::naming::printable;
use crate::plan::{GroupTarget, Operation, Plan, Summary};

/// The counts of a plan or a run, in one line.
pub fn counts(s: &Summary) -> String {
    format!(
        "{} added, {} updated, {} renamed, {} moved, {} deleted; {} members added, {} removed, {} skipped; {} errors",
        s.adds, s.updates, s.renames, s.moves, s.deletes, s.member_adds, s.member_removes, s.skipped_members, s.errors
    )
}

fn target(g: &GroupTarget) -> std::borrow::Cow<'_, str> {
    printable(g.dn())
}

/// Every operation, notice and error of the plan, a line each (a member a line), then its
/// counts and, when a sync would stop, why.
pub fn plan(p: &Plan) -> String {
    let t = printable;
    // Groups by display name beside their DN: at 10,000 groups a DN of a GUID says little.
    let names: HashMap<&CloudId, &str> = p.groups.iter().map(|g| (&g.cloud_id, g.display_name.as_str())).collect();
    let name = |id: &CloudId| names.get(id).map(|n| format!("{}  ", t(n))).unwrap_or_default();
    let mut out = String::new();
    // Writing to a String cannot fail.
    let mut line = |s: std::fmt::Arguments| {
        let _ = out.write_fmt(s);
        out.push('\n');
    };
    for op in &p.operations {
        let n = name(op.cloud_id());
        match op {
            Operation::Add { dn, members, attrs, .. } => {
                line(format_args!("+ add      {n}{} ({} members)", t(dn), members.len()));
                // What only `[[mappings]]` write (a sAMAccountName not made from the cn, info,
                // extensionAttributeN): shown, so a mapping is seen before it is applied.
                let cn = attrs.iter().find(|(a, _)| a == "cn").and_then(|(_, v)| v.first());
                for (attr, values) in attrs {
                    let mapped = match attr.as_str() {
                        "sAMAccountName" => {
                            cn.is_some_and(|cn| values.first() != Some(&crate::naming::sam_account_name(cn)))
                        }
                        a => a == "info" || a.starts_with("extensionAttribute"),
                    };
                    if mapped {
                        line(format_args!("           {attr} = {:?}", values.iter().map(|v| t(v)).collect::<Vec<_>>()));
                    }
                }
            }
            Operation::Update { dn, changes, .. } => {
                for c in changes {
                    line(format_args!("~ update   {n}{}: {} {:?} -> {:?}", t(dn), c.attr, c.old, c.values));
                }
            }
            Operation::Rename { dn, new_dn, .. } => line(format_args!("> rename   {n}{} -> {}", t(dn), t(new_dn))),
            Operation::AddMembers { group, members, .. } => {
                line(format_args!("+ members  {n}{}: +{}", target(group), members.len()));
                for m in members {
                    line(format_args!("             + {}", target(m)));
                }
            }
            Operation::RemoveMembers { group, members, .. } => {
                line(format_args!("- members  {n}{}: -{}", target(group), members.len()));
                for m in members {
                    line(format_args!("             - {}", target(m)));
                }
            }
            Operation::Delete { dn, reason, .. } => line(format_args!("- delete   {n}{} ({})", t(dn), t(reason))),
            Operation::Adopt { dn, sid, .. } => {
                line(format_args!("= adopt (converted) {n}{} (SID {}): taken over in place", t(dn), t(sid)))
            }
            Operation::Release { dn, reason, .. } => {
                line(format_args!("< release  {n}{}: marker removed, group kept ({})", t(dn), t(reason)))
            }
        }
    }
    for n in &p.notices {
        line(format_args!("* notice   {}", t(n)));
    }
    for e in &p.errors {
        let member = e.member_id.as_deref().map(|m| format!(" member {}", t(m))).unwrap_or_default();
        line(format_args!("! error    {}{member}: {}", t(&e.cloud_id), t(&e.message)));
    }
    line(format_args!("plan: {}", counts(&p.summary)));
    if let Some(b) = &p.blocked {
        line(format_args!("a sync would stop: {}", t(b)));
    }
    out
}
