//! The field device's outbox: entries signed with no connection, kept in a file until they can
//! be sent, and the key's sequence numbers, so online and offline use of one key never hand out
//! the same number twice.
//!
//! One file per key, `<public key>.outbox`, in the outbox directory. It is an append-only log:
//! each record is written with one `write` and made durable with `fsync` before the command
//! reports success, so a power cut loses at most the record being written. A record is framed
//! as
//!
//! ```text
//! "TOBX" | length (u32 LE) | first 8 bytes of SHA-256(body) | body (canonical encoding)
//! ```
//!
//! Reading stops at nothing: a record whose frame or checksum is wrong is reported with its
//! offset, and reading resumes at the next intact frame, so one torn or damaged record never
//! costs the entries around it.

use anyhow::{anyhow, bail, Context};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use tally_types::{EntryId, Name, PublicKey, SignedEntry};

const MAGIC: &[u8; 4] = b"TOBX";
const HEADER_BYTES: usize = 4 + 4 + 8;
/// The largest record body: one signed entry with room for its framing.
const RECORD_BYTES_MAX: usize = tally_types::ENTRY_BYTES_MAX + 512;
/// The most entries one outbox holds unsent. Each is a day's work many times over; beyond it,
/// the device must sync before signing more.
pub const QUEUED_MAX: usize = 10_000;
/// The largest outbox file read: every queued entry and its settlement, with room to spare.
const FILE_BYTES_MAX: u64 = (QUEUED_MAX as u64) * 2 * (RECORD_BYTES_MAX + HEADER_BYTES) as u64;

/// One line of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    /// The chain the key signs for, and the next sequence number no entry of this device has
    /// used, as last learned online.
    Sequence {
        /// The chain id.
        chain_id: Name,
        /// The next free sequence number.
        next: u64,
    },
    /// An entry signed offline, to be sent.
    Queued(SignedEntry),
    /// What became of a queued entry once sent.
    Settled {
        /// The entry.
        id: EntryId,
        /// Its fate.
        outcome: Settlement,
    },
}

/// The final word on a sent entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Settlement {
    /// In a block, accepted.
    Committed {
        /// The block.
        height: u64,
    },
    /// Refused by a rule, in a block (with its height) or before ordering (without).
    Rejected {
        /// The stable reason code.
        code: String,
        /// The node's explanation.
        detail: String,
        /// The block, when it was ordered as evidence.
        height: Option<u64>,
    },
}

/// A damaged stretch of the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Damage {
    /// Where it starts.
    pub offset: u64,
    /// How many bytes were skipped to the next intact record (or the end).
    pub skipped: u64,
    /// What was wrong.
    pub reason: String,
}

/// What an outbox file holds.
#[derive(Debug, Default)]
pub struct Contents {
    /// The chain, once learned.
    pub chain_id: Option<Name>,
    /// The next free sequence number last learned online.
    pub next_online: Option<u64>,
    /// Every queued entry, in the order signed.
    pub queued: Vec<SignedEntry>,
    /// Settlements by entry.
    pub settled: BTreeMap<EntryId, Settlement>,
    /// Damaged stretches, in file order.
    pub damage: Vec<Damage>,
}

impl Contents {
    /// Queued entries not yet settled, by sequence number.
    pub fn pending(&self) -> Vec<SignedEntry> {
        let mut p: Vec<SignedEntry> = self
            .queued
            .iter()
            .filter(|e| !self.settled.contains_key(&e.id()))
            .cloned()
            .collect();
        p.sort_by_key(|e| e.body.sequence);
        p
    }

    /// Sequence numbers missing between what the device last learned online and its last
    /// waiting entry (a record lost to damage, an entry refused at the node's door): the node
    /// holds the entries after a gap until it is filled. At most `limit` are listed.
    pub fn missing(&self, limit: usize) -> Vec<u64> {
        let pending = self.pending();
        let (Some(start), Some(last)) = (self.next_online, pending.last()) else {
            return Vec::new();
        };
        let have: std::collections::BTreeSet<u64> =
            pending.iter().map(|e| e.body.sequence).collect();
        (start..last.body.sequence)
            .filter(|s| !have.contains(s))
            .take(limit)
            .collect()
    }

    /// The next sequence number this device may use: past both what it last learned online
    /// and every entry still waiting to be sent. (A sent entry is counted in what the node
    /// said after it, which `sync` records; one refused before ordering left its number free.)
    pub fn next_sequence(&self) -> Option<u64> {
        let queued = self
            .pending()
            .iter()
            .map(|e| e.body.sequence.saturating_add(1))
            .max();
        match (self.next_online, queued) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }
}

/// An open outbox file.
pub struct Outbox {
    path: PathBuf,
}

impl Outbox {
    /// The directory given, or `$HOME/.tally/outbox`.
    pub fn default_dir() -> PathBuf {
        std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."))
            .join(".tally")
            .join("outbox")
    }

    fn file_for(dir: &Path, key: &PublicKey) -> PathBuf {
        dir.join(format!("{key}.outbox"))
    }

    /// The key's outbox, if this device has one.
    pub fn existing(dir: &Path, key: &PublicKey) -> Option<Self> {
        let path = Self::file_for(dir, key);
        path.is_file().then_some(Self { path })
    }

    /// The key's outbox, created (with its directory, owner-only) when missing.
    pub fn create(dir: &Path, key: &PublicKey) -> anyhow::Result<Self> {
        if let Some(o) = Self::existing(dir, key) {
            return Ok(o);
        }
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .with_context(|| format!("restricting {}", dir.display()))?;
        }
        let path = Self::file_for(dir, key);
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|f| f.sync_all())
            .with_context(|| format!("creating {}", path.display()))?;
        sync_dir(dir)?;
        Ok(Self { path })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends a record and makes it durable before returning.
    pub fn append(&self, record: &Record) -> anyhow::Result<()> {
        let body = tally_types::encode(record);
        if body.len() > RECORD_BYTES_MAX {
            bail!("an outbox record of {} bytes is over the limit", body.len());
        }
        let mut file = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .with_context(|| format!("opening {}", self.path.display()))?;
        file.write_all(&frame(&body))
            .and_then(|_| file.sync_data())
            .with_context(|| format!("writing {}", self.path.display()))
    }

    /// Reads every intact record; damaged stretches are reported in `damage`, never dropped
    /// silently.
    pub fn read(&self) -> anyhow::Result<Contents> {
        let len = std::fs::metadata(&self.path)
            .with_context(|| format!("reading {}", self.path.display()))?
            .len();
        if len > FILE_BYTES_MAX {
            bail!(
                "{} is {len} bytes, more than an outbox of {QUEUED_MAX} entries can be",
                self.path.display()
            );
        }
        let bytes = std::fs::read(&self.path)
            .with_context(|| format!("reading {}", self.path.display()))?;
        let mut c = Contents::default();
        for item in parse(&bytes) {
            match item {
                Ok(Record::Sequence { chain_id, next }) => {
                    c.chain_id = Some(chain_id);
                    c.next_online = Some(next);
                }
                Ok(Record::Queued(e)) => c.queued.push(e),
                Ok(Record::Settled { id, outcome }) => {
                    c.settled.insert(id, outcome);
                }
                Err(d) => c.damage.push(d),
            }
        }
        Ok(c)
    }

    /// Rewrites the file as one sequence record once nothing is left to send, so the log does
    /// not grow without bound. Written beside the file, synced, then renamed over it.
    pub fn compact(&self, chain_id: &Name, next: u64) -> anyhow::Result<()> {
        let tmp = self.path.with_extension("outbox.tmp");
        let body = tally_types::encode(&Record::Sequence {
            chain_id: chain_id.clone(),
            next,
        });
        let mut f = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(&frame(&body))
            .and_then(|_| f.sync_all())
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &self.path)
            .with_context(|| format!("replacing {}", self.path.display()))?;
        match self.path.parent() {
            Some(dir) => sync_dir(dir),
            None => Ok(()),
        }
    }
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_BYTES + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&Sha256::digest(body)[..8]);
    out.extend_from_slice(body);
    out
}

/// The record framed at `at`, or why there is none.
fn record_at(bytes: &[u8], at: usize) -> Result<(Record, usize), String> {
    let header = bytes
        .get(at..at + HEADER_BYTES)
        .ok_or_else(|| "a record cut short (a write interrupted by a power cut?)".to_string())?;
    if &header[..4] != MAGIC {
        return Err("not the start of a record".into());
    }
    let len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
    if len > RECORD_BYTES_MAX {
        return Err(format!("a record length of {len} bytes, over the limit"));
    }
    let body = bytes
        .get(at + HEADER_BYTES..at + HEADER_BYTES + len)
        .ok_or_else(|| "a record cut short (a write interrupted by a power cut?)".to_string())?;
    if Sha256::digest(body)[..8] != header[8..16] {
        return Err("a record whose checksum does not match".into());
    }
    let record =
        tally_types::decode(body).map_err(|e| format!("a record that does not decode: {e}"))?;
    Ok((record, HEADER_BYTES + len))
}

/// Every record in order, with damaged stretches in place.
fn parse(bytes: &[u8]) -> Vec<Result<Record, Damage>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        match record_at(bytes, at) {
            Ok((r, used)) => {
                out.push(Ok(r));
                at += used;
            }
            Err(reason) => {
                let next = (at + 1..bytes.len())
                    .find(|&i| bytes[i..].starts_with(MAGIC) && record_at(bytes, i).is_ok())
                    .unwrap_or(bytes.len());
                out.push(Err(Damage {
                    offset: at as u64,
                    skipped: (next - at) as u64,
                    reason,
                }));
                at = next;
            }
        }
    }
    out
}

fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| anyhow!("syncing {}: {e}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_types::{EntryBody, Keypair, Payload};

    fn entry(key: &Keypair, sequence: u64) -> SignedEntry {
        EntryBody {
            chain_id: Name::new("c").unwrap_or_else(|e| panic!("{e}")),
            author: key.public(),
            sequence,
            payload: Payload::RedeemVoucher {
                voucher: tally_types::Hash([1; 32]),
                amount: 10,
                vendor: Keypair::from_seed_for_tests(9).public(),
                reference: Name::new(format!("r{sequence}")).unwrap_or_else(|e| panic!("{e}")),
            },
        }
        .sign(key)
    }

    fn outbox_with(n: u64) -> (tempfile::TempDir, Outbox, Vec<SignedEntry>) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let key = Keypair::from_seed_for_tests(1);
        let o = Outbox::create(dir.path(), &key.public()).unwrap_or_else(|e| panic!("{e}"));
        let chain_id = Name::new("c").unwrap_or_else(|e| panic!("{e}"));
        o.append(&Record::Sequence { chain_id, next: 5 })
            .unwrap_or_else(|e| panic!("{e}"));
        let entries: Vec<SignedEntry> = (5..5 + n).map(|s| entry(&key, s)).collect();
        for e in &entries {
            o.append(&Record::Queued(e.clone()))
                .unwrap_or_else(|e| panic!("{e}"));
        }
        (dir, o, entries)
    }

    #[test]
    fn records_read_back_and_sequences_continue_past_the_queue() {
        let (_dir, o, entries) = outbox_with(3);
        o.append(&Record::Settled {
            id: entries[0].id(),
            outcome: Settlement::Committed { height: 4 },
        })
        .unwrap_or_else(|e| panic!("{e}"));
        let c = o.read().unwrap_or_else(|e| panic!("{e}"));
        assert!(c.damage.is_empty());
        assert_eq!(c.queued, entries);
        assert_eq!(c.pending(), entries[1..].to_vec());
        assert_eq!(c.next_sequence(), Some(8));
    }

    #[test]
    fn a_damaged_record_is_reported_and_the_ones_after_it_are_kept() {
        let (_dir, o, entries) = outbox_with(3);
        let mut bytes = std::fs::read(o.path()).unwrap_or_else(|e| panic!("{e}"));
        let second = tally_types::encode(&Record::Queued(entries[1].clone()));
        let at = bytes
            .windows(second.len())
            .position(|w| w == second.as_slice())
            .unwrap_or_else(|| panic!("second entry in file"));
        bytes[at + 20] ^= 0xff;
        std::fs::write(o.path(), &bytes).unwrap_or_else(|e| panic!("{e}"));
        let c = o.read().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.queued, vec![entries[0].clone(), entries[2].clone()]);
        assert_eq!(c.damage.len(), 1);
        assert_eq!(c.damage[0].offset as usize, at - HEADER_BYTES);
        assert!(c.damage[0].reason.contains("checksum"), "{:?}", c.damage);
        assert_eq!(c.missing(10), vec![6], "the lost entry's number is a gap");
        assert_eq!(c.next_sequence(), Some(8));
    }

    #[test]
    fn a_torn_last_write_is_reported_and_the_rest_kept() {
        let (_dir, o, entries) = outbox_with(2);
        let bytes = std::fs::read(o.path()).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(o.path(), &bytes[..bytes.len() - 7]).unwrap_or_else(|e| panic!("{e}"));
        let c = o.read().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.queued, vec![entries[0].clone()]);
        assert_eq!(c.damage.len(), 1);
        assert!(c.damage[0].reason.contains("cut short"), "{:?}", c.damage);
        // New records after the tear read back too.
        o.append(&Record::Queued(entries[1].clone()))
            .unwrap_or_else(|e| panic!("{e}"));
        let c = o.read().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.queued, entries);
        assert_eq!(c.damage.len(), 1);
    }

    #[test]
    fn compaction_keeps_the_sequence() {
        let (_dir, o, _) = outbox_with(2);
        let chain_id = Name::new("c").unwrap_or_else(|e| panic!("{e}"));
        o.compact(&chain_id, 7).unwrap_or_else(|e| panic!("{e}"));
        let c = o.read().unwrap_or_else(|e| panic!("{e}"));
        assert!(c.queued.is_empty() && c.damage.is_empty());
        assert_eq!(c.next_sequence(), Some(7));
    }
}
