//! Identifiers with the case rules of their directories built in, instead of strings
//! lower-cased here and there (lldap's case-insensitive names are the model).
//!
//! - [`CloudId`]: a Graph object id. Graph's ids are GUIDs that compare without regard to
//!   case; Graph writes them in lower case, people (the configuration, the CLI) may not.
//! - [`ObjectGuid`]: AD's objectGUID in its string form, for the same reason.
//!
//! Both keep their text in lower case, so equality, order and hashing are those of the text
//! and a map keyed by them can be asked with a `&str` that is in lower case already (what
//! Graph and AD send).
//! - [`Dn`]: a distinguished name as AD wrote it (kept to write and to show), equal to another
//!   when both name the same object: RDNs parsed, compared without regard to case, escapes
//!   decoded ([`crate::naming::normalize_dn`]).

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

/// A distinguished name as AD wrote it, compared as AD compares DNs (see the module's notes).
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Dn(String);

impl Dn {
    pub fn new(dn: impl Into<String>) -> Dn {
        Dn(dn.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// This DN is `ou` or an object below it, by parsed RDNs (an escaped comma is part of a
    /// value, not a separator).
    pub fn is_within(&self, ou: &str) -> bool {
        crate::naming::dn_is_within(&self.0, ou)
    }

    /// The DN of the container it is in.
    pub fn parent(&self) -> &str {
        crate::naming::split_dn(&self.0).1
    }

    fn key(&self) -> String {
        crate::naming::normalize_dn(&self.0)
    }
}

impl PartialEq for Dn {
    fn eq(&self, other: &Dn) -> bool {
        *self == *other.0
    }
}

impl Eq for Dn {}

impl std::hash::Hash for Dn {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key().hash(state)
    }
}

/// Compared as AD compares DNs.
impl PartialEq<str> for Dn {
    fn eq(&self, other: &str) -> bool {
        // Equal but for ASCII case is the common case, and needs no parsing.
        self.0.eq_ignore_ascii_case(other) || self.key() == crate::naming::normalize_dn(other)
    }
}

impl PartialEq<&str> for Dn {
    fn eq(&self, other: &&str) -> bool {
        *self == **other
    }
}

impl Deref for Dn {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Dn {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Dn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

impl fmt::Debug for Dn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl From<&str> for Dn {
    fn from(s: &str) -> Dn {
        Dn(s.to_string())
    }
}

impl From<String> for Dn {
    fn from(s: String) -> Dn {
        Dn(s)
    }
}

impl From<Dn> for String {
    fn from(dn: Dn) -> String {
        dn.0
    }
}

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

    #[test]
    fn dns_compare_as_ad_compares_them() {
        let a = Dn::new("CN=A\\2Cb , OU=Groups,DC=corp,DC=test");
        let b = Dn::new("cn=a\\,B,ou=groups,dc=corp,dc=test");
        assert_eq!(a, b);
        assert_eq!(a.as_str(), "CN=A\\2Cb , OU=Groups,DC=corp,DC=test", "the text AD wrote is kept");
        let set: std::collections::HashSet<Dn> = [a.clone()].into();
        assert!(set.contains(&b), "hashing follows equality");
        assert_ne!(Dn::new("CN=evil\\,OU=Groups,DC=corp,DC=test"), Dn::new("CN=evil,OU=Groups,DC=corp,DC=test"));
        assert!(a.is_within("ou=GROUPS,dc=corp,dc=test"));
        assert!(!Dn::new("CN=evil\\,OU=Groups,DC=corp,DC=test").is_within("OU=Groups,DC=corp,DC=test"));
        assert_eq!(Dn::new("CN=g,OU=Groups,DC=t").parent(), "OU=Groups,DC=t");
        assert!(a == "CN=a\\,b,OU=Groups,DC=corp,DC=test");
    }
}
