//! Entries admitted but not yet in a block, per author in sequence order.
//!
//! Every entry is checked once, here: chain id, strict signature, a registered and active
//! author, and a sequence number that is neither used nor too far ahead. Roles are not checked
//! here: a role can change between a field device signing offline and the entry arriving, so a
//! missing role is judged in the block, where the entry is kept as evidence and consumes its
//! sequence number, and the device's later entries are not stranded. Blocks are then built from each author's run of consecutive sequence numbers, so an
//! offline device's backlog (5, 6, 7 arriving in any order) goes through in order.

use crate::config::MempoolSection;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tally_state::{
    admit, refusal_of_unverified, AdmitError, KnownEntries, Rejection, State, StateError, StateRead,
};
use tally_types::{
    EntryId, IdentifiedEntry, Name, PublicKey, RejectCode, SignedEntry, Unverified, VerifiedEntry,
};

/// The pool.
#[derive(Debug)]
pub struct Mempool {
    limits: MempoolSection,
    by_author: BTreeMap<PublicKey, BTreeMap<u64, VerifiedEntry>>,
    /// Where each pending entry is held: its author and sequence number.
    ids: HashMap<EntryId, (PublicKey, u64)>,
    held: Occupancy,
}

/// How full a mempool is, readable without the ledger lock, so the API can refuse what a full
/// mempool cannot take before it spends a signature check on it.
#[derive(Debug, Clone)]
pub struct Occupancy {
    held: Arc<AtomicUsize>,
    /// Room claimed by submissions whose signatures are being checked.
    claimed: Arc<AtomicUsize>,
    max: usize,
}

/// Room in the mempool held for entries while their signatures are checked; given back when
/// dropped, by which time they are admitted or refused.
#[derive(Debug)]
pub struct Claim {
    claimed: Arc<AtomicUsize>,
    entries: usize,
}

impl Claim {
    /// How many entries the claim holds room for.
    pub fn entries(&self) -> usize {
        self.entries
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.claimed.fetch_sub(self.entries, Ordering::Relaxed);
    }
}

impl Occupancy {
    /// The most entries the mempool holds (`mempool.entries_max`).
    pub fn max(&self) -> usize {
        self.max
    }

    /// How many more entries the mempool can hold, as of its last change, less the room
    /// claimed by entries being checked.
    pub fn room(&self) -> usize {
        self.max
            .saturating_sub(self.held.load(Ordering::Relaxed))
            .saturating_sub(self.claimed.load(Ordering::Relaxed))
    }

    /// Claims room for up to `wanted` entries before their signatures are checked. Without it,
    /// submissions checked at the same time all count the same room, and under load most of
    /// what they check is then refused `mempool_full` and sent and checked again.
    pub fn claim(&self, wanted: usize) -> Claim {
        let mut entries = 0;
        let _ = self
            .claimed
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |claimed| {
                let room = self
                    .max
                    .saturating_sub(self.held.load(Ordering::Relaxed))
                    .saturating_sub(claimed);
                entries = wanted.min(room);
                Some(claimed + entries)
            });
        Claim {
            claimed: self.claimed.clone(),
            entries,
        }
    }

    /// The refusal of an entry for want of room.
    pub fn full(&self) -> Rejection {
        Rejection::new(
            RejectCode::MempoolFull,
            format!(
                "the node holds {} pending entries, its limit; retry later",
                self.max
            ),
        )
    }
}

/// Why an entry was not admitted.
#[derive(Debug, thiserror::Error)]
pub enum InsertError {
    /// Refused, with a reason for the submitter.
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// The node's state is unreadable.
    #[error(transparent)]
    State(#[from] StateError),
}

impl From<AdmitError> for InsertError {
    fn from(e: AdmitError) -> Self {
        match e {
            AdmitError::Rejected(r) => InsertError::Rejected(r),
            AdmitError::State(s) => InsertError::State(s),
        }
    }
}

impl Mempool {
    /// An empty pool with the configured limits.
    pub fn new(limits: MempoolSection) -> Self {
        Self {
            by_author: BTreeMap::new(),
            ids: HashMap::new(),
            held: Occupancy {
                held: Arc::default(),
                claimed: Arc::default(),
                max: limits.entries_max,
            },
            limits,
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether no entries are held.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// A handle on how full it is, for readers that do not hold the ledger lock.
    pub fn occupancy(&self) -> Occupancy {
        self.held.clone()
    }

    /// Keeps [`Occupancy`] in step after a change of the entries held.
    fn changed(&self) {
        self.held.held.store(self.ids.len(), Ordering::Relaxed);
    }

    /// Whether an entry is pending.
    pub fn contains(&self, id: &EntryId) -> bool {
        self.ids.contains_key(id)
    }

    /// A pending entry by its id: a proposal names the entries its receivers hold by id.
    pub fn get(&self, id: &EntryId) -> Option<&VerifiedEntry> {
        let (author, sequence) = self.ids.get(id)?;
        self.by_author
            .get(author)?
            .get(sequence)
            .filter(|held| held.id() == *id)
    }

    /// The next sequence number an author should sign: one past its last pending consecutive
    /// entry, or its committed next sequence.
    pub fn next_sequence(&self, author: &PublicKey, committed_next: u64) -> u64 {
        let mut next = committed_next;
        if let Some(pending) = self.by_author.get(author) {
            while pending.contains_key(&next) {
                next += 1;
            }
        }
        next
    }

    /// The id of this exact entry, signature included, when it is pending: its signature was
    /// checked and its id hashed when it was admitted, so a proposed block that carries it
    /// needs neither again.
    pub fn verified_id(&self, entry: &SignedEntry) -> Option<EntryId> {
        self.by_author
            .get(&entry.body.author)
            .and_then(|p| p.get(&entry.body.sequence))
            .filter(|held| held.entry() == entry)
            .map(VerifiedEntry::id)
    }

    /// Admits an entry after every check that can be made before ordering, given what the
    /// check of its signature found (made outside the ledger lock, so that submissions are
    /// verified in parallel). An entry whose signature failed is refused for the first
    /// admission check it fails, in the order every node makes them.
    pub fn insert(
        &mut self,
        state: &State,
        chain_id: &Name,
        checked: Result<VerifiedEntry, Unverified>,
    ) -> Result<EntryId, InsertError> {
        let entry = match checked {
            Ok(entry) => entry,
            Err(bad) => {
                if self.ids.contains_key(&bad.id) {
                    return Err(already_pending(&bad.id).into());
                }
                return Err(refusal_of_unverified(state, chain_id, &bad)?.into());
            }
        };
        let id = entry.id();
        if self.ids.contains_key(&id) {
            return Err(already_pending(&id).into());
        }
        let author = admit(state, chain_id, &entry)?;
        if let Some(refused) = self.sequence_refusal(&entry, author.next_sequence) {
            return Err(refused.into());
        }
        if self.ids.len() >= self.limits.entries_max {
            return Err(self.held.full().into());
        }
        let slot = (entry.body.author, entry.body.sequence);
        self.by_author
            .entry(slot.0)
            .or_default()
            .insert(slot.1, entry);
        self.ids.insert(id, slot);
        self.changed();
        Ok(id)
    }

    /// The refusal [`Mempool::insert`] would give an entry whatever its signature, found
    /// without checking it: the entry is pending already, or its well-formed body for this
    /// chain, by a known and active author, has a sequence number that is used, pending as
    /// another entry, or too far ahead. `None` says only that the full check must decide.
    /// Relays that race their entries' blocks and submitters that run ahead of their
    /// author's commits cost a lookup then, not a signature check each time they come back.
    pub fn refusal_unchecked(
        &self,
        state: &State,
        chain_id: &Name,
        entry: &IdentifiedEntry,
    ) -> Result<Option<Rejection>, StateError> {
        if self.ids.contains_key(&entry.id()) {
            return Ok(Some(already_pending(&entry.id())));
        }
        let body = &entry.body;
        if &body.chain_id != chain_id || body.payload.check_well_formed().is_err() {
            return Ok(None);
        }
        Ok(match state.key_record(&body.author)? {
            Some(author) if author.retired_for.is_none() => {
                self.sequence_refusal(entry, author.next_sequence)
            }
            _ => None,
        })
    }

    /// Why an entry's sequence number cannot be admitted, given its author's next one.
    fn sequence_refusal(&self, entry: &SignedEntry, next_sequence: u64) -> Option<Rejection> {
        let seq = entry.body.sequence;
        if seq < next_sequence {
            return Some(Rejection::new(
                RejectCode::StaleSequence,
                format!("sequence {seq} is already used; the author's next is {next_sequence}"),
            ));
        }
        let ahead_max = self.limits.per_author_max as u64;
        if seq - next_sequence >= ahead_max {
            return Some(Rejection::new(
                RejectCode::FutureSequence,
                format!(
                    "sequence {seq} is more than {ahead_max} ahead of the author's next ({next_sequence})"
                ),
            ));
        }
        let pending = self.by_author.get(&entry.body.author);
        pending.and_then(|p| p.get(&seq)).map(|other| {
            Rejection::new(
                RejectCode::StaleSequence,
                format!(
                    "sequence {seq} is already pending as entry {}",
                    other.id().short()
                ),
            )
        })
    }

    /// Up to `max` entries that can be ordered now: each author's consecutive run from its next
    /// sequence number, taken round-robin so one busy author cannot starve the others. Runs are
    /// walked lazily, so the cost is that of the entries taken plus one look per author, not
    /// of the whole pool: the driver asks for one candidate after every admitted entry.
    pub fn candidates(&self, state: &State, max: usize) -> Result<Vec<VerifiedEntry>, StateError> {
        let mut runs = Vec::new();
        for (author, pending) in &self.by_author {
            // The first round takes one entry from each run in order, so runs past the first
            // `max` could give nothing: the driver's question "is there any?" looks at one.
            if runs.len() == max {
                break;
            }
            let Some(rec) = state.key_record(author)? else {
                continue;
            };
            if pending.contains_key(&rec.next_sequence) {
                runs.push((pending, rec.next_sequence));
            }
        }
        let mut out = Vec::new();
        while out.len() < max && !runs.is_empty() {
            runs.retain_mut(|(pending, next)| {
                if out.len() == max {
                    return true;
                }
                match pending.get(next) {
                    Some(e) => {
                        out.push(e.clone());
                        *next += 1;
                        true
                    }
                    None => false,
                }
            });
        }
        Ok(out)
    }

    /// Forgets what is held at `entry`'s author and sequence number, which a block used or
    /// which can no longer be ordered (`id` is `entry.id()`). When another entry claimed that
    /// sequence number here (its author signed two; a peer's block ordered the other), that
    /// one is forgotten too, and returned so its submitter can be told why.
    pub fn remove(&mut self, entry: &SignedEntry, id: &EntryId) -> Option<VerifiedEntry> {
        let author = &entry.body.author;
        let pending = self.by_author.get_mut(author)?;
        let held = pending.remove(&entry.body.sequence);
        if pending.is_empty() {
            self.by_author.remove(author);
        }
        let displaced = match held {
            // The same body is the same entry (its id), whatever signature it carries.
            Some(held) if held.body == entry.body => {
                self.ids.remove(id);
                None
            }
            Some(other) => {
                self.ids.remove(&other.id());
                Some(other)
            }
            None => None,
        };
        self.changed();
        displaced
    }

    /// After a commit: drops every pending entry of these authors whose sequence number is now
    /// used (the committed ones, and anything left behind at a used number, or every entry of an
    /// author that was rotated away). Returns what was dropped, with whether its author retired.
    pub fn prune(
        &mut self,
        state: &State,
        authors: impl IntoIterator<Item = PublicKey>,
    ) -> Result<Vec<(VerifiedEntry, bool)>, StateError> {
        let mut dropped = Vec::new();
        for author in authors {
            let (next, retired) = match state.key_record(&author)? {
                Some(r) if r.retired_for.is_some() => (u64::MAX, true),
                Some(r) => (r.next_sequence, false),
                None => (0, false),
            };
            let Some(pending) = self.by_author.get_mut(&author) else {
                continue;
            };
            let keep = pending.split_off(&next);
            for e in std::mem::take(pending).into_values() {
                self.ids.remove(&e.id());
                dropped.push((e, retired));
            }
            if keep.is_empty() {
                self.by_author.remove(&author);
            } else {
                self.by_author.insert(author, keep);
            }
        }
        self.changed();
        Ok(dropped)
    }
}

impl KnownEntries for Mempool {
    fn verified_id(&self, entry: &SignedEntry) -> Option<EntryId> {
        Mempool::verified_id(self, entry)
    }
}

fn already_pending(id: &EntryId) -> Rejection {
    Rejection::new(
        RejectCode::DuplicateEntry,
        format!("entry {} is already pending", id.short()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_types::{
        AgencyGenesis, EntryBody, Genesis, Hash, Keypair, Payload, TimestampMs, ValidatorGenesis,
    };

    fn name(s: &str) -> Name {
        Name::new(s).expect("valid name")
    }

    fn setup() -> (State, Keypair, Keypair) {
        let (a, b) = (
            Keypair::from_seed_for_tests(1),
            Keypair::from_seed_for_tests(2),
        );
        let g = Genesis {
            chain_id: name("pool"),
            genesis_time: TimestampMs(0),
            agencies: vec![AgencyGenesis {
                id: name("wfp"),
                admins: vec![a.public(), b.public()],
            }],
            validators: vec![ValidatorGenesis {
                agency: name("wfp"),
                key: Keypair::from_seed_for_tests(9).public(),
            }],
        };
        (State::genesis(&g), a, b)
    }

    fn entry(k: &Keypair, seq: u64) -> SignedEntry {
        let payload = Payload::ExpireVoucher {
            voucher: Hash::ZERO,
        };
        EntryBody {
            chain_id: name("pool"),
            author: k.public(),
            sequence: seq,
            payload,
        }
        .sign(k)
    }

    /// What checking an entry's signature gives the pool.
    fn checked(e: SignedEntry) -> Result<VerifiedEntry, Unverified> {
        VerifiedEntry::verify(e)
    }

    fn mempool(entries_max: usize, per_author_max: usize) -> Mempool {
        Mempool::new(MempoolSection {
            entries_max,
            per_author_max,
        })
    }

    fn code(r: Result<EntryId, InsertError>) -> Option<RejectCode> {
        match r {
            Err(InsertError::Rejected(r)) => Some(r.code),
            _ => None,
        }
    }

    #[test]
    fn out_of_order_backlog_is_offered_in_sequence_and_round_robin() {
        let (state, a, b) = setup();
        let mut pool = mempool(100, 8);
        for seq in [2, 0, 1] {
            pool.insert(&state, &name("pool"), checked(entry(&a, seq)))
                .expect("admitted");
        }
        pool.insert(&state, &name("pool"), checked(entry(&b, 0)))
            .expect("admitted");
        pool.insert(&state, &name("pool"), checked(entry(&b, 5)))
            .expect("held behind a gap");
        assert_eq!(pool.next_sequence(&a.public(), 0), 3);
        let c = pool.candidates(&state, 10).expect("state reads");
        let order: Vec<(PublicKey, u64)> =
            c.iter().map(|e| (e.body.author, e.body.sequence)).collect();
        let (first, second) = if a.public() < b.public() {
            (a.public(), b.public())
        } else {
            (b.public(), a.public())
        };
        assert_eq!(order.len(), 4, "b's entry 5 waits for 1..4: {order:?}");
        assert_eq!(
            (order[0].0, order[1].0),
            (first, second),
            "one per author per pass"
        );
        let a_seqs: Vec<u64> = order
            .iter()
            .filter(|(k, _)| *k == a.public())
            .map(|(_, s)| *s)
            .collect();
        assert_eq!(a_seqs, vec![0, 1, 2]);
        assert_eq!(
            pool.candidates(&state, 2).expect("state reads").len(),
            2,
            "the block limit holds"
        );
    }

    #[test]
    fn an_entry_displaced_by_another_at_its_sequence_is_forgotten_and_returned() {
        let (state, a, _) = setup();
        let mut pool = mempool(100, 8);
        let held = entry(&a, 0);
        pool.insert(&state, &name("pool"), checked(held.clone()))
            .expect("admitted");
        // A block orders another entry its author signed at the same sequence number.
        let mut other = held.body.clone();
        other.payload = Payload::ExpireVoucher {
            voucher: Hash([7; 32]),
        };
        let used = other.sign(&a);
        assert_eq!(
            pool.remove(&used, &used.id())
                .map(VerifiedEntry::into_entry),
            Some(held.clone())
        );
        assert!(
            pool.is_empty(),
            "the displaced entry's id is not left behind"
        );
        assert!(!pool.contains(&held.id()));
        // The entry itself, removed once it is used, returns nothing.
        pool.insert(&state, &name("pool"), checked(held.clone()))
            .expect("admitted again");
        assert_eq!(pool.remove(&held, &held.id()), None);
        assert!(pool.is_empty());
        assert_eq!(pool.remove(&held, &held.id()), None, "nothing held");
    }

    #[test]
    fn every_limit_and_replay_has_its_code() {
        let (state, a, b) = setup();
        let mut pool = mempool(3, 2);
        pool.insert(&state, &name("pool"), checked(entry(&a, 0)))
            .expect("admitted");
        assert_eq!(
            code(pool.insert(&state, &name("pool"), checked(entry(&a, 0)))),
            Some(RejectCode::DuplicateEntry)
        );
        let mut other = entry(&a, 1);
        other.body.payload = Payload::ExpireVoucher {
            voucher: Hash([1; 32]),
        };
        let other = other.body.sign(&a);
        pool.insert(&state, &name("pool"), checked(other))
            .expect("admitted");
        assert_eq!(
            code(pool.insert(&state, &name("pool"), checked(entry(&a, 1)))),
            Some(RejectCode::StaleSequence)
        );
        assert_eq!(
            code(pool.insert(&state, &name("pool"), checked(entry(&a, 2)))),
            Some(RejectCode::FutureSequence)
        );
        pool.insert(&state, &name("pool"), checked(entry(&b, 0)))
            .expect("admitted");
        assert_eq!(
            code(pool.insert(&state, &name("pool"), checked(entry(&b, 1)))),
            Some(RejectCode::MempoolFull)
        );
        let stranger = Keypair::from_seed_for_tests(77);
        assert_eq!(
            code(pool.insert(&state, &name("pool"), checked(entry(&stranger, 0)))),
            Some(RejectCode::UnknownAuthor)
        );
        let mut forged = entry(&a, 3);
        forged.signature.0[0] ^= 1;
        assert_eq!(
            code(pool.insert(&state, &name("pool"), checked(forged))),
            Some(RejectCode::BadSignature)
        );
        assert_eq!(
            code(pool.insert(&state, &name("other"), checked(entry(&a, 1)))),
            Some(RejectCode::WrongChain)
        );
        let mut forged_elsewhere = entry(&a, 3);
        forged_elsewhere.signature.0[0] ^= 1;
        assert_eq!(
            code(pool.insert(&state, &name("other"), checked(forged_elsewhere))),
            Some(RejectCode::WrongChain),
            "a bad signature is refused for the first check it fails, in the order of every node"
        );
        assert_eq!(pool.len(), 3, "nothing refused was kept");
    }

    #[test]
    fn submissions_checked_together_share_the_room_and_give_back_what_they_did_not_use() {
        let (state, a, _) = setup();
        let mut pool = mempool(5, 8);
        let occupancy = pool.occupancy();
        let first = occupancy.claim(3);
        let second = occupancy.claim(3);
        assert_eq!((first.entries(), second.entries()), (3, 2));
        assert_eq!(occupancy.claim(1).entries(), 0, "all room is claimed");
        pool.insert(&state, &name("pool"), checked(entry(&a, 0)))
            .expect("a claimant's entry is admitted");
        drop(first);
        assert_eq!(occupancy.room(), 2, "one held, two claimed");
        drop(second);
        assert_eq!(occupancy.room(), 4);
        assert_eq!(occupancy.claim(9).entries(), 4);
    }

    #[test]
    fn what_is_refused_whatever_its_signature_is_found_without_checking_it() {
        let (state, a, _) = setup();
        let chain = name("pool");
        let mut pool = mempool(10, 2);
        let unchecked = |pool: &Mempool, e: &SignedEntry| {
            pool.refusal_unchecked(&state, &chain, &e.clone().into())
                .expect("state readable")
                .map(|r| r.code)
        };
        let first = entry(&a, 0);
        assert_eq!(
            unchecked(&pool, &first),
            None,
            "admissible: left to the full check"
        );
        pool.insert(&state, &chain, checked(first.clone()))
            .expect("admitted");
        assert_eq!(unchecked(&pool, &first), Some(RejectCode::DuplicateEntry));
        let mut rival = entry(&a, 0);
        rival.body.payload = Payload::ExpireVoucher {
            voucher: Hash([2; 32]),
        };
        let rival = rival.body.sign(&a);
        assert_eq!(unchecked(&pool, &rival), Some(RejectCode::StaleSequence));
        let mut far = entry(&a, 2);
        far.signature.0[0] ^= 1;
        assert_eq!(
            unchecked(&pool, &far),
            Some(RejectCode::FutureSequence),
            "refused for its sequence before its signature is looked at"
        );
        let mut forged = entry(&a, 1);
        forged.signature.0[0] ^= 1;
        assert_eq!(
            unchecked(&pool, &forged),
            None,
            "only the check finds a bad signature"
        );
        let stranger = Keypair::from_seed_for_tests(77);
        assert_eq!(unchecked(&pool, &entry(&stranger, 5)), None);
        let other_chain = pool.refusal_unchecked(&state, &name("other"), &entry(&a, 0).into());
        assert!(
            matches!(other_chain, Ok(Some(_))),
            "pending under that id whatever the chain"
        );
        assert_eq!(
            pool.refusal_unchecked(&state, &name("other"), &entry(&a, 5).into())
                .expect("state readable"),
            None,
            "an entry for another chain is left to the full check, which names the chain"
        );
        assert_eq!(pool.len(), 1, "asking admits nothing");
    }
}
