//! The canonical binary encoding: bincode 2 with a fixed configuration (little-endian,
//! fixed-width integers, a size limit). Decoding refuses trailing bytes and any input that does
//! not re-encode to the same bytes, so every value has exactly one encoding and every hash of an
//! encoding is a hash of the value.

use serde::{de::DeserializeOwned, Serialize};

/// The largest value the codec will decode, in bytes. Larger inputs are refused before
/// allocation. Blocks are the largest values; their own limit is enforced by the node config.
pub const DECODE_BYTES_MAX: usize = 64 * 1024 * 1024;

fn config() -> impl bincode::config::Config {
    bincode::config::standard()
        .with_little_endian()
        .with_fixed_int_encoding()
        .with_limit::<DECODE_BYTES_MAX>()
}

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// Bytes that do not form a value of the expected type.
    #[error("malformed encoding: {0}")]
    Malformed(String),
    /// Extra bytes after a complete value.
    #[error("{0} trailing bytes after the value")]
    TrailingBytes(usize),
    /// Bytes that decode but are not the canonical encoding of what they decode to.
    #[error("non-canonical encoding")]
    NonCanonical,
    /// A value that cannot be encoded (should never happen for tally's own types).
    #[error("cannot encode: {0}")]
    Encode(String),
}

/// Encodes a value canonically.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // tally's types contain no maps with non-string keys or other shapes bincode refuses, so a
    // failure here is a programming error, caught by every round-trip test.
    match bincode::serde::encode_to_vec(value, config()) {
        Ok(bytes) => bytes,
        Err(e) => panic!("canonical encoding failed for a tally type: {e}"),
    }
}

/// The length of a value's canonical encoding, without making it: a sender that batches
/// values up to a byte limit measures each before the batch is encoded once.
pub fn encoded_len<T: Serialize>(value: &T) -> usize {
    let mut size = bincode::enc::write::SizeWriter::default();
    match bincode::serde::encode_into_writer(value, &mut size, config()) {
        Ok(()) => size.bytes_written,
        Err(e) => panic!("canonical encoding failed for a tally type: {e}"),
    }
}

/// Decodes a value, refusing trailing or non-canonical bytes.
pub fn decode<T: DeserializeOwned + Serialize>(bytes: &[u8]) -> Result<T, CodecError> {
    let value = decode_own(bytes)?;
    if encode(&value) != bytes {
        return Err(CodecError::NonCanonical);
    }
    Ok(value)
}

/// Decodes bytes this ledger encoded itself, such as its own state records, refusing trailing
/// bytes but not re-encoding to check canonicity: they were written by [`encode`], and their
/// hashes were taken over exactly those bytes. Executing an entry reads several records.
/// Never for bytes from the network, a file or a person: those get [`decode`].
pub fn decode_own<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, read): (T, usize) = bincode::serde::decode_from_slice(bytes, config())
        .map_err(|e| CodecError::Malformed(e.to_string()))?;
    if read != bytes.len() {
        return Err(CodecError::TrailingBytes(bytes.len() - read));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_measured_length_is_the_encoding_length() {
        let value = (7u64, vec![1u8, 2, 3], String::from("tally"), Some(true));
        assert_eq!(encoded_len(&value), encode(&value).len());
    }

    #[test]
    fn rejects_trailing_and_truncated() {
        let bytes = encode(&(7u64, true));
        assert_eq!(decode::<(u64, bool)>(&bytes), Ok((7, true)));
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(
            decode::<(u64, bool)>(&longer),
            Err(CodecError::TrailingBytes(1))
        );
        assert!(matches!(
            decode::<(u64, bool)>(&bytes[..5]),
            Err(CodecError::Malformed(_))
        ));
    }

    #[test]
    fn rejects_non_canonical_bool() {
        let mut bytes = encode(&(7u64, true));
        bytes[8] = 2;
        assert!(decode::<(u64, bool)>(&bytes).is_err());
    }

    #[test]
    fn huge_length_prefix_is_refused_without_allocating() {
        let mut bytes = vec![0xff; 8];
        bytes.extend_from_slice(&[1, 2, 3]);
        assert!(decode::<Vec<u8>>(&bytes).is_err());
    }
}
