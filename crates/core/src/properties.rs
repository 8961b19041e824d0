//! The group properties rules and mappings may read: what Graph's group resource returns from a
//! group listing (api-reference/v1.0 and beta resources/group.md: properties "returned by
//! default" or on `$select` in a list; not those "supported only on the Get group API"),
//! directory extensions (`extension_<appId without dashes>_<name>`,
//! extensibility-overview.md), and `membership` (dynamic or assigned, from groupTypes).

/// The properties every read of a group selects already (`GROUP_SELECT` in the Graph client).
pub const BASE: &[&str] = &[
    "id",
    "displayName",
    "description",
    "groupTypes",
    "securityEnabled",
    "mailEnabled",
    "mail",
    "mailNickname",
    "proxyAddresses",
    "onPremisesSyncEnabled",
    "onPremisesSecurityIdentifier",
];

/// More properties of a group in a listing, selected only when a rule or mapping needs them.
const MORE: &[&str] = &[
    "classification",
    "createdDateTime",
    "expirationDateTime",
    "isAssignableToRole",
    "membershipRule",
    "membershipRuleProcessingState",
    "onPremisesDomainName",
    "onPremisesNetBiosName",
    "onPremisesSamAccountName",
    "preferredDataLocation",
    "preferredLanguage",
    "renewedDateTime",
    "securityIdentifier",
    "theme",
    "visibility",
];

/// What a rule or a mapping may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Property {
    /// Read with every group.
    Base,
    /// `membership`: computed from groupTypes.
    Membership,
    /// A property of the group resource, `$select`ed when needed.
    Selected,
    /// A directory extension: `$select`ed on reads of groups (not on their delta query, which
    /// is not documented to track them: the daily full cycle and `sync --group` see a change).
    Extension,
}

/// What `name` is, or what is wrong with it (in words for the configuration's error).
pub fn classify(name: &str) -> Result<Property, String> {
    if BASE.contains(&name) {
        return Ok(Property::Base);
    }
    if name == "membership" {
        return Ok(Property::Membership);
    }
    if MORE.contains(&name) {
        return Ok(Property::Selected);
    }
    if let Some(rest) = name.strip_prefix("extension_") {
        let ok = rest.split_once('_').is_some_and(|(app, prop)| {
            app.len() == 32
                && app.chars().all(|c| c.is_ascii_hexdigit())
                && !prop.is_empty()
                && prop.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        });
        return if ok {
            Ok(Property::Extension)
        } else {
            Err(format!(
                "'{name}' is not a directory extension name: extension_<the app's client id without dashes, \
                 32 hex digits>_<name>"
            ))
        };
    }
    if name.starts_with("onPremisesExtensionAttributes") || name.starts_with("extensionAttribute") {
        return Err(format!(
            "'{name}': Graph's groups have no onPremisesExtensionAttributes (only users and devices do, \
             onpremisesextensionattributes.md); tag groups with a directory extension \
             (extension_<appId>_<name>) instead"
        ));
    }
    let mut known: Vec<&str> = BASE.iter().chain(MORE).copied().collect();
    known.push("membership");
    known.sort_unstable();
    Err(format!(
        "'{name}' is not a group property writeback can read; use one of {} or a directory extension \
         extension_<appId>_<name>",
        known.join(", ")
    ))
}

/// The properties of `names` that reads of groups must `$select` beyond [`BASE`] (each once);
/// with `for_delta`, without directory extensions.
pub fn to_select<'a>(names: impl IntoIterator<Item = &'a str>, for_delta: bool) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for n in names {
        let wanted = match classify(n) {
            Ok(Property::Selected) => true,
            Ok(Property::Extension) => !for_delta,
            _ => false,
        };
        if wanted && !out.iter().any(|o| o == n) {
            out.push(n.to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_classified_and_wrong_ones_explained() {
        assert_eq!(classify("description"), Ok(Property::Base));
        assert_eq!(classify("classification"), Ok(Property::Selected));
        assert_eq!(classify("membership"), Ok(Property::Membership));
        let ext = "extension_0123456789abcdef0123456789abcdef_costCenter";
        assert_eq!(classify(ext), Ok(Property::Extension));
        assert!(classify("extension_0123_costCenter").expect_err("refused").contains("32 hex"));
        assert!(classify("onPremisesExtensionAttributes.extensionAttribute1").expect_err("refused").contains("users"));
        assert!(classify("clasification").expect_err("refused").contains("classification"));
        assert!(classify("hideFromAddressLists").is_err(), "only on GET /groups/{{id}}: not in a listing");
        let s = to_select(["classification", "description", ext, "classification"], false);
        assert_eq!(s, vec!["classification".to_string(), ext.to_string()]);
        assert_eq!(to_select(["classification", ext], true), vec!["classification".to_string()]);
    }
}
