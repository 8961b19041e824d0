//! The properties Graph knows on each type, so that `$select` of a property that does not exist
//! fails as it does on Graph ("Could not find a property named … on type …", 400) instead of
//! answering null: a typo in writeback's select lists must fail the tests. From the resource
//! pages of the Graph reference (api-reference/v1.0/resources/group.md, user.md, device.md,
//! orgcontact.md, serviceprincipal.md; beta adds writebackConfiguration and a few more).

use crate::tenant::ODataError;

const GROUP: &[&str] = &[
    "id",
    "deletedDateTime",
    "allowExternalSenders",
    "assignedLabels",
    "assignedLicenses",
    "autoSubscribeNewMembers",
    "classification",
    "createdDateTime",
    "description",
    "displayName",
    "expirationDateTime",
    "groupTypes",
    "hasMembersWithLicenseErrors",
    "hideFromAddressLists",
    "hideFromOutlookClients",
    "isArchived",
    "isAssignableToRole",
    "isManagementRestricted",
    "isSubscribedByMail",
    "licenseProcessingState",
    "mail",
    "mailEnabled",
    "mailNickname",
    "membershipRule",
    "membershipRuleProcessingState",
    "onPremisesDomainName",
    "onPremisesLastSyncDateTime",
    "onPremisesNetBiosName",
    "onPremisesProvisioningErrors",
    "onPremisesSamAccountName",
    "onPremisesSecurityIdentifier",
    "onPremisesSyncEnabled",
    "preferredDataLocation",
    "preferredLanguage",
    "proxyAddresses",
    "renewedDateTime",
    "securityEnabled",
    "securityIdentifier",
    "serviceProvisioningErrors",
    "theme",
    "uniqueName",
    "unseenCount",
    "visibility",
];
/// Beta only.
const GROUP_BETA: &[&str] = &[
    "writebackConfiguration",
    "onPremisesSyncBehavior",
    "organizationId",
    "resourceBehaviorOptions",
    "resourceProvisioningOptions",
];
const USER: &[&str] = &[
    "id",
    "deletedDateTime",
    "accountEnabled",
    "businessPhones",
    "city",
    "companyName",
    "country",
    "createdDateTime",
    "department",
    "displayName",
    "employeeId",
    "employeeType",
    "givenName",
    "jobTitle",
    "mail",
    "mailNickname",
    "mobilePhone",
    "officeLocation",
    "onPremisesDistinguishedName",
    "onPremisesDomainName",
    "onPremisesExtensionAttributes",
    "onPremisesImmutableId",
    "onPremisesLastSyncDateTime",
    "onPremisesProvisioningErrors",
    "onPremisesSamAccountName",
    "onPremisesSecurityIdentifier",
    "onPremisesSyncEnabled",
    "onPremisesUserPrincipalName",
    "otherMails",
    "proxyAddresses",
    "securityIdentifier",
    "surname",
    "userPrincipalName",
    "userType",
];
const DEVICE: &[&str] = &[
    "id",
    "accountEnabled",
    "deviceId",
    "displayName",
    "onPremisesSecurityIdentifier",
    "onPremisesSyncEnabled",
    "operatingSystem",
    "trustType",
];
const CONTACT: &[&str] = &["id", "displayName", "mail", "mailNickname", "onPremisesSyncEnabled", "proxyAddresses"];
const SERVICE_PRINCIPAL: &[&str] = &["id", "appId", "displayName", "servicePrincipalType"];
/// Navigation properties a delta query may select (delta-query-overview.md: members for groups,
/// manager for users; group-delta.md: any directoryObject collection, such as owners).
const GROUP_DELTA_NAV: &[&str] = &["members", "owners"];
const USER_DELTA_NAV: &[&str] = &["manager"];

/// What a request's `$select` is checked against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum On {
    Groups,
    Users,
    GroupsDelta,
    UsersDelta,
    /// A collection of directory objects (members, owners, memberOf, getByIds, deletedItems):
    /// a property of any of the types it can hold.
    DirectoryObjects,
    /// A group's onPremisesSyncBehavior (beta; resources/onpremisessyncbehavior.md).
    SyncBehavior,
}

/// A directory extension's name: `extension_<appId without dashes>_<name>`
/// (extensibility-overview.md). Graph knows one only once an app registers it for groups; the
/// simulator takes any well-formed name. Not on delta queries: their page does not document
/// tracking extensions, so the strictest reading refuses them there.
fn extension(p: &str) -> bool {
    p.strip_prefix("extension_")
        .and_then(|r| r.split_once('_'))
        .is_some_and(|(app, name)| app.len() == 32 && app.chars().all(|c| c.is_ascii_hexdigit()) && !name.is_empty())
}

fn known(on: On, beta: bool, p: &str) -> bool {
    let group = GROUP.contains(&p) || (beta && GROUP_BETA.contains(&p));
    match on {
        On::Groups => group || extension(p),
        On::GroupsDelta => group || GROUP_DELTA_NAV.contains(&p),
        On::Users => USER.contains(&p),
        On::UsersDelta => USER.contains(&p) || USER_DELTA_NAV.contains(&p),
        On::DirectoryObjects => {
            group || [USER, DEVICE, CONTACT, SERVICE_PRINCIPAL].iter().any(|props| props.contains(&p))
        }
        On::SyncBehavior => beta && ["id", "isCloudManaged"].contains(&p),
    }
}

/// `Ok` when every selected property exists on the type; Graph's 400 otherwise.
pub fn check(on: On, beta: bool, select: &str) -> Result<(), ODataError> {
    for p in select.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if !known(on, beta, p) {
            let ty = match on {
                On::Groups | On::GroupsDelta => "group",
                On::Users | On::UsersDelta => "user",
                On::DirectoryObjects => "directoryObject",
                On::SyncBehavior => "onPremisesSyncBehavior",
            };
            return Err(ODataError(
                400,
                "BadRequest",
                format!("Could not find a property named '{p}' on type 'microsoft.graph.{ty}'."),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typo_in_a_select_list_fails() {
        assert!(check(On::Groups, true, "id,displayName,writebackConfiguration").is_ok());
        assert!(check(On::Groups, false, "writebackConfiguration").is_err(), "beta only");
        let e = check(On::Groups, true, "id,displayNme").expect_err("typo");
        assert_eq!(
            (e.0, e.2.as_str()),
            (400, "Could not find a property named 'displayNme' on type 'microsoft.graph.group'.")
        );
        assert!(check(On::GroupsDelta, true, "id,members,owners").is_ok());
        assert!(check(On::Groups, true, "members").is_err(), "a navigation property is not a property");
        assert!(check(On::DirectoryObjects, true, "id,onPremisesImmutableId,groupTypes").is_ok());
        assert!(check(On::Users, false, "onPremisesImmutableId,groupTypes").is_err());
    }
}
