//! Newtypes that validate on parse, so the inside of the program never sees
//! a raw, unchecked string.

use serde::Serialize;

/// Why an input was refused: a stable code and a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ValidationError {
    pub code: &'static str,
    pub message: String,
}

impl ValidationError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

/// Trimmed text of 1..=max characters without control characters.
fn bounded_text(value: &str, max: usize, code: &'static str, what: &str) -> Result<String, ValidationError> {
    let value = value.trim();
    let len = value.chars().count();
    if len == 0 || len > max {
        return Err(ValidationError::new(code, format!("{what} must be 1 to {max} characters")));
    }
    if value.chars().any(char::is_control) {
        return Err(ValidationError::new(code, format!("{what} must not contain control characters")));
    }
    Ok(value.to_owned())
}

macro_rules! text_newtype {
    ($(#[$doc:meta])* $name:ident, max = $max:expr, code = $code:literal, what = $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub const MAX_CHARS: usize = $max;

            pub fn parse(value: &str) -> Result<Self, ValidationError> {
                bounded_text(value, $max, $code, $what).map(Self)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_inner(self) -> String {
                self.0
            }
        }
    };
}

text_newtype!(
    /// A project's name: 1 to 200 characters.
    ProjectName, max = 200, code = "invalid_name", what = "name"
);
text_newtype!(
    /// A user's display name: 1 to 100 characters.
    DisplayName, max = 100, code = "invalid_display_name", what = "display_name"
);
text_newtype!(
    /// A device's name: 1 to 100 characters.
    DeviceName, max = 100, code = "invalid_device_name", what = "device name"
);
text_newtype!(
    /// A device's platform ("linux", "macos 15", ...): 1 to 50 characters.
    Platform, max = 50, code = "invalid_platform", what = "platform"
);

/// An e-mail address, trimmed; compared case-insensitively by the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Email(String);

impl Email {
    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        let value = value.trim();
        let bad = || ValidationError::new("invalid_email", "email must look like name@example.org");
        if value.len() > 254 || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad());
        }
        let (local, domain) = value.rsplit_once('@').ok_or_else(bad)?;
        if local.is_empty() || domain.is_empty() || domain.starts_with('.') || domain.ends_with('.') {
            return Err(bad());
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part before the `@`, a default display name.
    pub fn local_part(&self) -> &str {
        self.0.rsplit_once('@').map_or(&self.0, |(local, _)| local)
    }
}

/// A password as typed: 8 to 1024 characters. Never printed.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    pub const MIN_CHARS: usize = 8;
    pub const MAX_CHARS: usize = 1024;

    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        let len = value.chars().count();
        if len < Self::MIN_CHARS {
            return Err(ValidationError::new(
                "weak_password",
                format!("password must be at least {} characters", Self::MIN_CHARS),
            ));
        }
        if len > Self::MAX_CHARS {
            return Err(ValidationError::new(
                "invalid_password",
                format!("password must be at most {} characters", Self::MAX_CHARS),
            ));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn project_names_are_trimmed_and_bounded() {
        assert_eq!(ProjectName::parse("  Photos ").unwrap().as_str(), "Photos");
        assert!(ProjectName::parse("   ").is_err());
        assert!(ProjectName::parse(&"x".repeat(200)).is_ok());
        assert!(ProjectName::parse(&"x".repeat(201)).is_err());
        assert!(ProjectName::parse(&"é".repeat(200)).is_ok(), "characters, not bytes");
        assert!(ProjectName::parse("a\u{0}b").is_err());
    }

    #[test]
    fn emails_need_a_local_part_and_a_domain() {
        assert!(Email::parse("ana@example.org").is_ok());
        for bad in ["", "ana", "@example.org", "ana@", "a na@example.org", "ana@.org"] {
            assert!(Email::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(Email::parse("ana@example.org").unwrap().local_part(), "ana");
    }

    #[test]
    fn passwords_shorter_than_eight_are_weak_and_never_printed() {
        assert_eq!(Password::parse("1234567").unwrap_err().code, "weak_password");
        let p = Password::parse("correct horse").unwrap();
        assert!(!format!("{p:?}").contains("horse"));
    }

    proptest! {
        #[test]
        fn parsed_names_are_never_blank_or_too_long(s in "\\PC{0,300}") {
            if let Ok(name) = ProjectName::parse(&s) {
                prop_assert!(!name.as_str().is_empty());
                prop_assert!(name.as_str().chars().count() <= 200);
                prop_assert_eq!(name.as_str(), name.as_str().trim());
            }
        }
    }
}
