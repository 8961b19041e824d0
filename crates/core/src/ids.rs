//! Identifiers with the case rules of their directories built in, instead of strings
//! lower-cased here and there (lldap's case-insensitive names are the model).
//!
//! - [`CloudId`]: a Graph object id. Graph's ids are GUIDs that compare without regard to
//!   case; Graph writes them in lower case, people (the configuration, the CLI) may not.
//! - [`ObjectGuid`]: AD's objectGUID in its string form, for the same reason.
//!
//! Both keep their text in lower case, so equality, order and hashing are those of the text
//! and a map keyed by them can be asked with a `&str` that is in lower case already (what
//! Graph and AD send). A DN compares by its parsed RDNs: see [`crate::naming::normalize_dn`]
//! and [`crate::naming::dn_is_within`].

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;

use serde::{Deserialize, Deserializer, Serialize};

macro_rules! lower_case_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// `id` in lower case: two spellings of one id are one value.
            pub fn new(id: impl Into<String>) -> $name {
                let mut s = id.into();
                s.make_ascii_lowercase();
                $name(s)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<$name, D::Error> {
                String::deserialize(d).map($name::new)
            }
        }

        impl Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> $name {
                $name::new(s)
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> $name {
                $name::new(s)
            }
        }

        impl From<&String> for $name {
            fn from(s: &String) -> $name {
                $name::new(s.as_str())
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        /// Compared as the same id: without regard to case.
        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0.eq_ignore_ascii_case(other)
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0.eq_ignore_ascii_case(other)
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                self.0.eq_ignore_ascii_case(other)
            }
        }

        impl PartialEq<$name> for str {
            fn eq(&self, other: &$name) -> bool {
                other.0.eq_ignore_ascii_case(self)
            }
        }

        impl PartialEq<$name> for &str {
            fn eq(&self, other: &$name) -> bool {
                other.0.eq_ignore_ascii_case(self)
            }
        }

        impl PartialEq<$name> for String {
            fn eq(&self, other: &$name) -> bool {
                other.0.eq_ignore_ascii_case(self)
            }
        }
    };
}

lower_case_id!(
    /// A Microsoft Graph object id (a group, user, device… of the tenant).
    CloudId
);

lower_case_id!(
    /// An AD objectGUID in its string form (`3a5c3221-c465-48c0-95b8-e9305786a271`).
    ObjectGuid
);

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn one_id_whatever_its_case() {
        let a = CloudId::new("3A5C3221-C465-48C0-95B8-E9305786A271");
        let b: CloudId = serde_json::from_str("\"3a5c3221-c465-48c0-95b8-e9305786a271\"").expect("json");
        assert_eq!(a, b);
        assert_eq!(a.as_str(), "3a5c3221-c465-48c0-95b8-e9305786a271");
        assert!(a == "3a5c3221-C465-48c0-95b8-e9305786a271", "a string is compared without regard to case");
        let map: HashMap<CloudId, u8> = [(a.clone(), 1)].into();
        assert_eq!(map.get("3a5c3221-c465-48c0-95b8-e9305786a271"), Some(&1));
        assert_eq!(serde_json::to_string(&a).expect("json"), "\"3a5c3221-c465-48c0-95b8-e9305786a271\"");
        assert_eq!(format!("{a}"), "3a5c3221-c465-48c0-95b8-e9305786a271");
        assert_eq!(ObjectGuid::from("ABC"), ObjectGuid::new("abc"));
    }
}
