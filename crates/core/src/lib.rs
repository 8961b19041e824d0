//! writeback-core: the domain model and the planner of writeback.
//!
//! Architecture invariant: this crate does no I/O. It knows nothing of tokio, LDAP, HTTP or
//! SQL; CI checks that with `cargo tree`. Everything here is a pure function of its inputs,
//! so it is tested with plain data.

pub mod anchor;
pub mod config;
pub mod convert;
pub mod ids;
pub mod keytab;
pub mod mapping;
pub mod model;
pub mod naming;
pub mod plan;
pub mod planner;
pub mod properties;
pub mod render;
pub mod rules;
pub mod run;
pub mod scope;
pub mod secret;
pub mod settings;

pub use anchor::{member_anchors, members_known, members_to_look_up, OwnedMembers};
pub use config::{Allow, Approved, CnFormat, Nested, OnRemoval, PlannerConfig};
pub use ids::{CloudId, Dn, ObjectGuid};
pub use mapping::{Mapping, Target as MappedAttribute};
pub use model::{
    AdClass, AdGroup, AdObject, AdRef, AdSnapshot, Anchor, CloudObject, CloudSnapshot, Link, MemberRead, Original,
    SchemaFeatures, State,
};
pub use plan::{
    Blocked, GroupReport, GroupTarget, Guarded, Held, MemberStatus, ObjectError, Operation, Plan, SkipReason, Stopped,
    Summary, Threshold,
};
pub use planner::plan;
pub use rules::{Rule, RuleAction, RuleKind};
pub use run::{expiry_check, Check, RunKind, RunStatus, EXPIRY_WARNING_DAYS};
pub use secret::Secret;

#[cfg(test)]
mod hostile_tests;
#[cfg(test)]
mod planner_snapshots;
#[cfg(test)]
mod planner_tests;
#[cfg(test)]
mod test_world;
