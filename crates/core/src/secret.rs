//! A secret (client secret, bind password) that never prints.

/// Holds a secret; `Debug` shows `Secret(***)`, and there is no `Display`.
#[derive(Clone, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn never_prints() {
        assert_eq!(format!("{:?}", super::Secret::new("hunter2")), "Secret(***)");
    }
}
