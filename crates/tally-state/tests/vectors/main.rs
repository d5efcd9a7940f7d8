//! The published test vectors (`docs/vectors/*.json`), checked against the implementation.
//!
//! Every vector is recomputed from fixed inputs ([`fixtures`]) and compared with the committed
//! file by JSON value ([`json::publish_or_check`]); a test fails at the first field that
//! differs. [`formats`] computes the files of the binary formats (every file but
//! `state.json`), [`state`] the file of the state commitment (`state.json`). After a
//! deliberate format change, update `docs/specification.md` and regenerate:
//!
//! ```text
//! TALLY_WRITE_VECTORS=1 cargo test --workspace --test vectors
//! ```

mod fixtures;
mod formats;
mod json;
mod state;
