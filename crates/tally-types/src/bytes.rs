//! Fixed-size byte strings that serialize as hex for people (JSON, TOML) and as raw bytes in the
//! canonical binary encoding.

/// Declares a `Copy` newtype over `[u8; N]` with hex `Display`/`FromStr` and dual serde forms.
#[macro_export]
macro_rules! fixed_bytes {
    ($(#[$meta:meta])* $name:ident, $len:expr) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub [u8; $len]);

        impl $name {
            /// Length in bytes.
            pub const LEN: usize = $len;

            /// The raw bytes.
            pub fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }

            /// Lower-case hex, the form used in JSON, TOML, URLs and messages.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }

            /// A short prefix for log lines and error messages; never used as an identifier.
            pub fn short(&self) -> String {
                hex::encode(&self.0[..4])
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::bytes::HexError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let mut out = [0u8; $len];
                hex::decode_to_slice(s.trim(), &mut out).map_err(|_| $crate::bytes::HexError {
                    expected_bytes: $len,
                    got_chars: s.trim().len(),
                })?;
                Ok(Self(out))
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                if s.is_human_readable() {
                    s.serialize_str(&self.to_hex())
                } else {
                    use serde::ser::SerializeTuple;
                    let mut t = s.serialize_tuple($len)?;
                    for b in &self.0 {
                        t.serialize_element(b)?;
                    }
                    t.end()
                }
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                if d.is_human_readable() {
                    let s = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
                    s.parse().map_err(serde::de::Error::custom)
                } else {
                    struct V;
                    impl<'de> serde::de::Visitor<'de> for V {
                        type Value = [u8; $len];
                        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                            write!(f, "{} bytes", $len)
                        }
                        fn visit_seq<A: serde::de::SeqAccess<'de>>(
                            self,
                            mut seq: A,
                        ) -> Result<Self::Value, A::Error> {
                            let mut out = [0u8; $len];
                            for (i, slot) in out.iter_mut().enumerate() {
                                *slot = seq
                                    .next_element()?
                                    .ok_or_else(|| serde::de::Error::invalid_length(i, &self))?;
                            }
                            Ok(out)
                        }
                    }
                    d.deserialize_tuple($len, V).map($name)
                }
            }
        }
    };
}

/// A hex string that does not decode to the expected number of bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected {expected_bytes} bytes as {} hex characters, got {got_chars} characters (or non-hex)", expected_bytes * 2)]
pub struct HexError {
    /// How many bytes the value must have.
    pub expected_bytes: usize,
    /// How many characters were given.
    pub got_chars: usize,
}
