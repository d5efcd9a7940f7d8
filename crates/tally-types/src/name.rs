//! Short identifiers chosen by people (chain ids, agency ids, programme ids, units, references).
//! The alphabet is deliberately too narrow to hold a person's name with spaces or a phone number
//! with a plus sign, and the length too short for free text: DOMAIN.md forbids free-text fields.

use serde::{Deserialize, Serialize};

/// Longest identifier, in bytes.
pub const NAME_BYTES_MAX: usize = 40;

/// A validated identifier: 1 to 40 characters from `a-z A-Z 0-9 . _ -`, starting with a letter or
/// digit.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct Name(String);

/// Written as the string it holds, without the copy `#[serde(into = "String")]` would make:
/// names are in nearly every entry and record, and are encoded every time one is hashed.
impl Serialize for Name {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Empty, or longer than the limit.
    #[error("identifier must be 1 to {NAME_BYTES_MAX} characters, got {0}")]
    Length(usize),
    /// A character outside the allowed alphabet.
    #[error("identifier may only use letters, digits, '.', '_' and '-' and must start with a letter or digit: {0:?}")]
    Alphabet(String),
}

impl Name {
    /// Validates and wraps an identifier.
    pub fn new(s: impl Into<String>) -> Result<Self, NameError> {
        let s = s.into();
        if s.is_empty() || s.len() > NAME_BYTES_MAX {
            return Err(NameError::Length(s.len()));
        }
        let first_ok = s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
        let rest_ok = s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !first_ok || !rest_ok {
            return Err(NameError::Alphabet(s));
        }
        Ok(Name(s))
    }

    /// The identifier.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Name {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Name::new(s)
    }
}

impl From<Name> for String {
    fn from(n: Name) -> String {
        n.0
    }
}

impl std::str::FromStr for Name {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Name::new(s)
    }
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Debug for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_codes_and_refuses_free_text() {
        assert!(Name::new("food-2026-11").is_ok());
        assert!(Name::new("USD").is_ok());
        assert!(Name::new("Amina Yusuf").is_err());
        assert!(Name::new("+254700000000").is_err());
        assert!(Name::new("").is_err());
        assert!(Name::new("x".repeat(41)).is_err());
        assert!(Name::new("-lead").is_err());
    }

    #[test]
    fn encodes_as_its_string_and_refuses_an_invalid_one_on_decoding() {
        let name = Name::new("wfp.food-2026").expect("valid");
        let string = name.as_str().to_string();
        let bytes = crate::codec::encode(&name);
        assert_eq!(bytes, crate::codec::encode(&string));
        assert_eq!(crate::codec::decode::<Name>(&bytes), Ok(name.clone()));
        assert_eq!(
            serde_json::to_string(&name).expect("encodes"),
            serde_json::to_string(&string).expect("encodes")
        );
        let free_text = crate::codec::encode(&"Amina Yusuf".to_string());
        assert!(crate::codec::decode::<Name>(&free_text).is_err());
    }
}
