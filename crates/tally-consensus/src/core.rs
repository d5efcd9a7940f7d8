//! Algorithm 1 of "The latest gossip on BFT consensus" (Buchman, Kwon, Milosevic, 2018) as a
//! state machine. Comments of the form `L22` name the paper's line; docs/consensus.md lays the
//! paper beside this file line by line.
//!
//! The host feeds [`Input`]s and carries out the returned [`Effect`]s *in order*. Order matters
//! in one place: a [`Effect::Persist`] always comes before the [`Effect::Broadcast`] of the
//! message it records, and the host must make the record durable before sending anything.

use crate::log::{HeightLog, Insert};
use crate::message::{Message, Proposal, Step, Vote, VoteKind};
use crate::validators::ValidatorSet;
use crate::{ConsensusError, Timeouts};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use tally_types::{CommitCertificate, Hash, Keypair, Name, PublicKey};

/// How many rounds beyond the current one are kept in the log. Messages for later rounds are
/// dropped (they still count towards the round skip of L55), so a Byzantine validator cannot
/// grow a node's memory by signing votes for absurd rounds.
pub const FUTURE_ROUNDS_MAX: u32 = 64;

/// How many rounds before the current one a validator's own messages are kept in its safety
/// record. Validators still in a round it left may wait for its votes there, lost on the way;
/// after a crash it can send them again only if it kept them (with f validators silent, every
/// honest vote is needed). The rounds it left most recently are the ones others lag in, and
/// the bound keeps the record small.
pub const LEFT_ROUNDS_KEPT: u32 = 4;

/// A timeout the host must deliver back as [`Input::Timeout`] after the given delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Timeout {
    /// The height it was scheduled at.
    pub height: u64,
    /// The round it was scheduled in.
    pub round: u32,
    /// The step it ends.
    pub step: Step,
}

/// What this validator has locked and signed at its current height: everything it needs after
/// a crash to never sign a message that conflicts with one it already sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SafetyRecord {
    /// The height being decided.
    pub height: u64,
    /// The round reached.
    pub round: u32,
    /// The step reached in that round.
    pub step: Step,
    /// `(lockedRound, lockedValue)`.
    pub locked: Option<(u32, Hash)>,
    /// `(validRound, validValue)`.
    pub valid: Option<(u32, Hash)>,
    /// Every message this validator signed at `(height, round)`.
    pub signed: Vec<Message>,
    /// The 2f+1 prevotes behind `valid`, so that after a restart this validator can still
    /// show the proof of lock its re-proposal relies on (liveness, not safety).
    pub proof_of_lock: Vec<Vote>,
    /// Every message this validator signed at `height` in the [`LEFT_ROUNDS_KEPT`] rounds
    /// before `round`, so that after a restart it can still send them to validators that lag
    /// in those rounds.
    pub left: Vec<Message>,
}

/// [`SafetyRecord`] as the release before `left` wrote it: a record on disk from that release
/// is read as one that kept no earlier rounds.
#[derive(Serialize, Deserialize)]
struct SafetyRecordWithoutLeft {
    height: u64,
    round: u32,
    step: Step,
    locked: Option<(u32, Hash)>,
    valid: Option<(u32, Hash)>,
    signed: Vec<Message>,
    proof_of_lock: Vec<Vote>,
}

impl SafetyRecord {
    /// Reads a record's canonical bytes, as this release writes them or as the release before
    /// did (without `left`), so a data directory survives the upgrade.
    pub fn decode(bytes: &[u8]) -> Result<Self, tally_types::CodecError> {
        match tally_types::codec::decode::<SafetyRecord>(bytes) {
            Ok(r) => Ok(r),
            Err(e) => match tally_types::codec::decode::<SafetyRecordWithoutLeft>(bytes) {
                Ok(r) => Ok(SafetyRecord {
                    height: r.height,
                    round: r.round,
                    step: r.step,
                    locked: r.locked,
                    valid: r.valid,
                    signed: r.signed,
                    proof_of_lock: r.proof_of_lock,
                    left: Vec::new(),
                }),
                Err(_) => Err(e),
            },
        }
    }
}

/// Proof that a validator signed two different messages where it may sign one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Evidence {
    /// Two proposals for one height and round.
    DoubleProposal(Proposal, Proposal),
    /// Two votes of one kind for one height and round.
    DoubleVote(Vote, Vote),
}

impl Evidence {
    /// The validator the evidence is against.
    pub fn offender(&self) -> PublicKey {
        match self {
            Evidence::DoubleProposal(a, _) => a.proposer,
            Evidence::DoubleVote(a, _) => a.validator,
        }
    }

    /// The height of the offence.
    pub fn height(&self) -> u64 {
        match self {
            Evidence::DoubleProposal(a, _) => a.height,
            Evidence::DoubleVote(a, _) => a.height,
        }
    }
}

/// What the host tells the core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Begin (L10), or resume from the safety record after a restart.
    Start,
    /// The host has entries waiting. Until then, or until another validator sends a message
    /// for this height, round 0 waits for a proposal without a timeout, so an idle network
    /// does not churn through empty rounds.
    Work,
    /// A message from the network (the core checks the signature).
    Message(Message),
    /// A timeout scheduled by [`Effect::Schedule`] has expired.
    Timeout(Timeout),
    /// Answer to [`Effect::RequestProposal`]: the block the host built (`getValue()`).
    ProposalValue {
        /// Height asked for.
        height: u64,
        /// Round asked for.
        round: u32,
        /// The block built.
        block_hash: Hash,
    },
    /// Answer to [`Effect::VerifyBlock`]: the paper's `valid(v)`.
    BlockVerified {
        /// Height of the block.
        height: u64,
        /// The block.
        block_hash: Hash,
        /// Whether it executes correctly on the committed state.
        valid: bool,
    },
    /// The host committed every block up to `height` by block sync (each with a verified
    /// certificate): the core moves on to `height + 1`.
    Synced {
        /// The new committed head height.
        height: u64,
    },
    /// A periodic nudge from the host (every few hundred milliseconds). The paper assumes
    /// gossip eventually delivers every message sent before the network became timely; direct
    /// sends to a peer that was down or cut off only arrive if sent again. On a tick the core
    /// re-sends its own messages of the current round (and the proof of lock for its valid
    /// value), and asks again for block sync while f+1 validators are ahead of it.
    Tick,
}

/// What the core asks the host to do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Make this record durable (fsync) before carrying out any later effect.
    Persist(SafetyRecord),
    /// Send to every other validator.
    Broadcast(Message),
    /// Send to one validator.
    Send {
        /// The recipient.
        to: PublicKey,
        /// The message.
        message: Message,
    },
    /// Deliver [`Input::Timeout`] after `after_ms`.
    Schedule {
        /// The timeout.
        timeout: Timeout,
        /// Delay in milliseconds.
        after_ms: u64,
    },
    /// Build a block for this height and round and answer with [`Input::ProposalValue`].
    RequestProposal {
        /// Height.
        height: u64,
        /// Round.
        round: u32,
    },
    /// Execute this proposed block and answer with [`Input::BlockVerified`].
    VerifyBlock {
        /// Height.
        height: u64,
        /// The block.
        block_hash: Hash,
    },
    /// The block is decided: commit it with this certificate.
    Commit {
        /// The certificate (2f+1 precommits for the block).
        certificate: CommitCertificate,
    },
    /// A validator equivocated; keep the evidence.
    Evidence(Evidence),
    /// f+1 validators are at `height` or later: fetch the missing blocks by sync.
    Behind {
        /// A height some honest validator has reached.
        height: u64,
    },
    /// A validator is still voting at `height`, already decided here: send it the committed
    /// blocks from `height` on. Without this, honest validators that missed a decision could
    /// wait forever for the few that made it (too few for the f+1 of [`Effect::Behind`]).
    PeerBehind {
        /// The validator behind.
        validator: PublicKey,
        /// The height it is voting at.
        height: u64,
    },
}

/// Messages dropped, by reason, and other events worth a metric.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Messages accepted into the log.
    pub accepted: u64,
    /// Already held.
    pub duplicate: u64,
    /// Signed by a key outside the validator set.
    pub not_a_validator: u64,
    /// Signature does not verify (includes messages for another chain).
    pub bad_signature: u64,
    /// A proposal not from the round's proposer, or with a proof-of-lock round not below its own.
    pub invalid_proposal: u64,
    /// For a height already decided.
    pub stale_height: u64,
    /// For a height beyond the next one.
    pub future_height: u64,
    /// For a round beyond [`FUTURE_ROUNDS_MAX`] of the current one.
    pub future_round: u64,
    /// Conflicting messages from one signer (evidence emitted).
    pub equivocation: u64,
}

/// One validator's Tendermint state machine.
pub struct Core {
    chain_id: Name,
    key: Keypair,
    me: PublicKey,
    validators: ValidatorSet,
    timeouts: Timeouts,
    started: bool,
    resumed: bool,
    /// A safety record for a height above the chain this node holds (its blocks were moved
    /// aside for repair or reset, the record kept): nothing is signed until sync brings the
    /// chain to that height, where the core resumes from it.
    ahead: Option<SafetyRecord>,
    /// `Input::Start` came while a record was ahead: start once it is reached.
    start_wanted: bool,

    height: u64,
    round: u32,
    step: Step,
    locked: Option<(u32, Hash)>,
    valid: Option<(u32, Hash)>,
    has_work: bool,

    log: HeightLog,
    next_log: HeightLog,
    verdicts: BTreeMap<Hash, bool>,
    verify_requested: BTreeSet<Hash>,
    highest_round: BTreeMap<PublicKey, u32>,
    signed: Vec<Message>,

    // "for the first time" guards of the current round.
    prevote_timeout_armed: bool,
    precommit_timeout_armed: bool,
    lock_rule_fired: bool,
    propose_timeout_armed: bool,

    /// The highest height each validator has signed a message for, where above ours.
    claimed_height: BTreeMap<PublicKey, u64>,
    /// Validators seen voting at decided heights since the last tick, with the lowest height.
    peers_behind: BTreeMap<PublicKey, u64>,
    /// Validators seen at this height in rounds below ours since the last tick, lowest round.
    peers_lagging: BTreeMap<PublicKey, u32>,
    behind_reported: u64,
    evidence_seen: BTreeSet<(PublicKey, u64, u32, u8)>,
    counters: Counters,
    effects: Vec<Effect>,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Core({} h{} r{} {:?})",
            self.me.short(),
            self.height,
            self.round,
            self.step
        )
    }
}

impl Core {
    /// A validator whose chain is committed up to `committed_height`. `record` is the last
    /// persisted [`SafetyRecord`], if any; one for the next height is resumed from.
    pub fn new(
        chain_id: Name,
        key: Keypair,
        validators: ValidatorSet,
        timeouts: Timeouts,
        committed_height: u64,
        record: Option<SafetyRecord>,
    ) -> Result<Self, ConsensusError> {
        let me = key.public();
        if !validators.contains(&me) {
            return Err(ConsensusError::NotAValidator(me.short()));
        }
        let height = committed_height + 1;
        let mut core = Core {
            chain_id,
            key,
            me,
            validators,
            timeouts,
            started: false,
            resumed: false,
            ahead: None,
            start_wanted: false,
            height,
            round: 0,
            step: Step::Propose,
            locked: None,
            valid: None,
            has_work: false,
            log: HeightLog::default(),
            next_log: HeightLog::default(),
            verdicts: BTreeMap::new(),
            verify_requested: BTreeSet::new(),
            highest_round: BTreeMap::new(),
            signed: Vec::new(),
            prevote_timeout_armed: false,
            precommit_timeout_armed: false,
            lock_rule_fired: false,
            propose_timeout_armed: false,
            claimed_height: BTreeMap::new(),
            peers_behind: BTreeMap::new(),
            peers_lagging: BTreeMap::new(),
            behind_reported: height,
            evidence_seen: BTreeSet::new(),
            counters: Counters::default(),
            effects: Vec::new(),
        };
        if let Some(r) = record {
            for m in &r.signed {
                if m.signer() != me || m.height() != r.height || m.round() != r.round {
                    return Err(ConsensusError::ForeignRecord);
                }
            }
            for m in &r.left {
                if m.signer() != me || m.height() != r.height || m.round() >= r.round {
                    return Err(ConsensusError::ForeignRecord);
                }
            }
            match r.height.cmp(&height) {
                std::cmp::Ordering::Greater => core.ahead = Some(r),
                std::cmp::Ordering::Equal => core.restore(r),
                // For a height already committed: nothing in it can matter any more.
                std::cmp::Ordering::Less => {}
            }
        }
        Ok(core)
    }

    /// Takes up a checked safety record of the current height: the round, step, lock and
    /// valid value reached, and every message signed there, which the log holds again so
    /// that nothing conflicting is signed.
    fn restore(&mut self, r: SafetyRecord) {
        let height = self.height;
        for m in r.left {
            self.log.insert(m);
        }
        self.round = r.round;
        self.step = r.step;
        self.locked = r.locked;
        // validRound >= lockedRound always holds; a record that breaks it is repaired
        // towards the lock, which only restricts what this validator will propose.
        self.valid = match (r.valid, r.locked) {
            (Some(v), Some(l)) if v.0 >= l.0 => Some(v),
            (_, Some(l)) => Some(l),
            (v, None) => v,
        };
        self.signed = r.signed;
        self.resumed = true;
        let (chain_id, valid) = (&self.chain_id, self.valid);
        let proof: Vec<Vote> = r
            .proof_of_lock
            .into_iter()
            .filter(|v| {
                valid.is_some_and(|(vr, vv)| {
                    v.kind == VoteKind::Prevote
                        && (v.height, v.round, v.block) == (height, vr, Some(vv))
                }) && self.validators.contains(&v.validator)
                    && v.verify(chain_id).is_ok()
            })
            .collect();
        for v in proof {
            self.log.insert(Message::Vote(v));
        }
        // A value this node locked on or proposed was verified before the crash.
        for (_, v) in self.locked.iter().chain(self.valid.iter()) {
            self.verdicts.insert(*v, true);
        }
        for m in &self.signed {
            if let Message::Proposal(p) = m {
                self.verdicts.insert(p.block_hash, true);
            }
        }
        for m in self.signed.clone() {
            self.log.insert(m);
        }
    }

    /// The height of a safety record this node must reach by sync before it signs anything.
    pub fn record_ahead(&self) -> Option<u64> {
        self.ahead.as_ref().map(|r| r.height)
    }

    /// Whether the core has started (it signs and times out only then).
    pub fn started(&self) -> bool {
        self.started
    }

    /// The height being decided.
    pub fn height(&self) -> u64 {
        self.height
    }

    /// The current round.
    pub fn round(&self) -> u32 {
        self.round
    }

    /// The current step.
    pub fn step(&self) -> Step {
        self.step
    }

    /// `(lockedRound, lockedValue)`.
    pub fn locked(&self) -> Option<(u32, Hash)> {
        self.locked
    }

    /// `(validRound, validValue)`.
    pub fn valid(&self) -> Option<(u32, Hash)> {
        self.valid
    }

    /// The block this validator proposed in its current round, if any.
    pub fn own_proposal(&self) -> Option<(u32, Hash)> {
        self.signed.iter().find_map(|m| match m {
            Message::Proposal(p) => Some((p.round, p.block_hash)),
            Message::Vote(_) => None,
        })
    }

    /// Whether the core knows this height has work (the host's entries or others' messages):
    /// until then round 0 waits without a timeout, and after it the host need not say again.
    pub fn has_work(&self) -> bool {
        self.has_work
    }

    /// Dropped-message and evidence counts.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The validator set.
    pub fn validators(&self) -> &ValidatorSet {
        &self.validators
    }

    /// How many messages are held for this height and the next (bounded; see
    /// [`FUTURE_ROUNDS_MAX`]).
    pub fn held_messages(&self) -> usize {
        self.log.len() + self.next_log.len()
    }

    /// What a tick sends again: this validator's own messages of the round and, when it holds
    /// a valid value, the 2f+1 prevotes that justify re-proposing it.
    fn retransmit(&self) -> Vec<Message> {
        let mut out = self.signed.clone();
        if let Some((vr, v)) = self.valid {
            out.extend(
                self.log
                    .prevotes_for(vr, &v)
                    .into_iter()
                    .map(|p| Message::Vote(p.clone())),
            );
        }
        out
    }

    /// Feeds one input; returns the effects to carry out, in order.
    pub fn handle(&mut self, input: Input) -> Vec<Effect> {
        match input {
            Input::Start => {
                if self.ahead.is_some() {
                    self.start_wanted = true;
                } else {
                    self.handle_start();
                }
            }
            Input::Work => {
                self.has_work = true;
                if self.started && self.round == 0 && self.step == Step::Propose {
                    self.arm_propose_timeout();
                }
            }
            Input::Message(m) => self.receive(m),
            Input::Timeout(t) => self.on_timeout(t),
            Input::ProposalValue {
                height,
                round,
                block_hash,
            } => {
                // L18: getValue() answered; L19: broadcast the proposal.
                if self.started
                    && height == self.height
                    && round == self.round
                    && self.step == Step::Propose
                    && self.validators.proposer(height, round) == &self.me
                    && self.log.proposal(round).is_none()
                {
                    self.verdicts.insert(block_hash, true);
                    self.sign_proposal(block_hash, None);
                }
            }
            Input::BlockVerified {
                height,
                block_hash,
                valid,
            } => {
                if height == self.height && self.verify_requested.contains(&block_hash) {
                    self.verdicts.insert(block_hash, valid);
                }
            }
            Input::Synced { height } => {
                if height >= self.height {
                    let carry = height == self.height;
                    self.enter_height(height + 1, carry);
                }
            }
            Input::Tick => {
                if self.started {
                    for m in self.retransmit() {
                        self.effects.push(Effect::Broadcast(m));
                    }
                    let ahead = self.ahead_height();
                    if ahead > self.height {
                        self.effects.push(Effect::Behind { height: ahead });
                    }
                    for (validator, height) in std::mem::take(&mut self.peers_behind) {
                        self.effects.push(Effect::PeerBehind { validator, height });
                    }
                    // A validator stuck in an earlier round may be waiting for votes we sent
                    // there and it lost; it cannot skip ahead on fewer than f+1 of us.
                    for (to, from_round) in std::mem::take(&mut self.peers_lagging) {
                        for message in self.log.own(&self.me, from_round..self.round) {
                            self.effects.push(Effect::Send { to, message });
                        }
                    }
                }
            }
        }
        if self.started {
            self.run_rules();
        }
        std::mem::take(&mut self.effects)
    }

    // ----- the paper's functions --------------------------------------------------------------

    /// L11–L21.
    fn start_round(&mut self, round: u32) {
        self.round = round; // L12
        self.step = Step::Propose; // L13
        self.signed.clear();
        self.prevote_timeout_armed = false;
        self.precommit_timeout_armed = false;
        self.lock_rule_fired = false;
        self.propose_timeout_armed = false;
        if self.validators.proposer(self.height, round) == &self.me {
            // L14
            match self.valid {
                Some((vr, v)) => self.sign_proposal(v, Some(vr)), // L15–L16, L19
                None => self.effects.push(Effect::RequestProposal {
                    height: self.height,
                    round,
                }), // L18: the host answers with Input::ProposalValue
            }
        }
        self.arm_propose_timeout(); // L21
    }

    /// L21. Round 0 of a height waits for work before it may time out (see [`Input::Work`]).
    /// The proposer arms it too, unlike the paper: its own re-proposal may not pass its own L28
    /// (after a restart it may lack the proof of lock) and it must not wait in propose forever.
    fn arm_propose_timeout(&mut self) {
        if self.propose_timeout_armed || (self.round == 0 && !self.has_work) {
            return;
        }
        self.propose_timeout_armed = true;
        self.schedule(Step::Propose);
    }

    /// L57–L67.
    fn on_timeout(&mut self, t: Timeout) {
        if !self.started || t.height != self.height || t.round != self.round {
            return;
        }
        match t.step {
            Step::Propose if self.step == Step::Propose => {
                // L58–L60
                self.sign_vote(VoteKind::Prevote, None);
                self.step = Step::Prevote;
            }
            Step::Prevote if self.step == Step::Prevote => {
                // L62–L64
                self.sign_vote(VoteKind::Precommit, None);
                self.step = Step::Precommit;
            }
            Step::Precommit => self.start_round(self.round + 1), // L66–L67
            _ => {}
        }
    }

    fn handle_start(&mut self) {
        if !self.started {
            self.started = true;
            if self.resumed {
                self.resume();
            } else {
                self.start_round(0); // L10
            }
        }
    }

    /// After a restart from the safety record: re-send what was signed in this round (peers may
    /// never have received it) and arm the timeout of the current step, since the messages that
    /// would have armed it may have been lost with the crash. Timeouts only move a validator
    /// towards nil votes and later rounds, so arming one early cannot break safety.
    fn resume(&mut self) {
        for m in self.signed.clone() {
            self.effects.push(Effect::Broadcast(m));
        }
        match self.step {
            Step::Propose => {
                let proposed = self.log.proposal(self.round).is_some();
                if self.validators.proposer(self.height, self.round) == &self.me && !proposed {
                    match self.valid {
                        Some((vr, v)) => self.sign_proposal(v, Some(vr)),
                        None => self.effects.push(Effect::RequestProposal {
                            height: self.height,
                            round: self.round,
                        }),
                    }
                }
                self.arm_propose_timeout();
            }
            Step::Prevote => {
                self.prevote_timeout_armed = true;
                self.schedule(Step::Prevote);
            }
            Step::Precommit => {
                self.precommit_timeout_armed = true;
                self.schedule(Step::Precommit);
            }
        }
    }

    /// Evaluates the `upon` rules until none fires.
    fn run_rules(&mut self) {
        loop {
            let fired = self.rule_decide()
                || self.rule_skip_round()
                || self.rule_prevote_fresh()
                || self.rule_prevote_with_pol()
                || self.rule_arm_prevote_timeout()
                || self.rule_lock()
                || self.rule_precommit_nil()
                || self.rule_arm_precommit_timeout();
            if !fired {
                break;
            }
        }
    }

    /// L22–L27: a proposal without proof of lock.
    fn rule_prevote_fresh(&mut self) -> bool {
        if self.step != Step::Propose {
            return false;
        }
        let Some(p) = self.log.proposal(self.round) else {
            return false;
        };
        if p.pol_round.is_some() {
            return false;
        }
        let v = p.block_hash;
        let Some(&valid) = self.verdicts.get(&v) else {
            return false; // valid(v) not known yet: VerifyBlock is pending
        };
        let vote = if valid && self.locked.is_none_or(|(_, lv)| lv == v) {
            Some(v) // L23–L24
        } else {
            None // L26
        };
        self.sign_vote(VoteKind::Prevote, vote);
        self.step = Step::Prevote; // L27
        true
    }

    /// L28–L33: a re-proposal carrying a proof-of-lock round `vr`.
    fn rule_prevote_with_pol(&mut self) -> bool {
        if self.step != Step::Propose {
            return false;
        }
        let Some(p) = self.log.proposal(self.round) else {
            return false;
        };
        let (Some(vr), v) = (p.pol_round, p.block_hash) else {
            return false;
        };
        if vr >= self.round
            || self.log.count_for(VoteKind::Prevote, vr, Some(&v)) < self.validators.quorum()
        {
            return false;
        }
        let Some(&valid) = self.verdicts.get(&v) else {
            return false;
        };
        let vote = if valid && self.locked.is_none_or(|(lr, lv)| lr <= vr || lv == v) {
            Some(v) // L29–L30
        } else {
            None // L32
        };
        self.sign_vote(VoteKind::Prevote, vote);
        self.step = Step::Prevote; // L33
        true
    }

    /// L34–L35.
    fn rule_arm_prevote_timeout(&mut self) -> bool {
        if self.step != Step::Prevote
            || self.prevote_timeout_armed
            || self.log.count_any(VoteKind::Prevote, self.round) < self.validators.quorum()
        {
            return false;
        }
        self.prevote_timeout_armed = true;
        self.schedule(Step::Prevote);
        true
    }

    /// L36–L43: 2f+1 prevotes for the round's valid proposal.
    fn rule_lock(&mut self) -> bool {
        if self.step < Step::Prevote || self.lock_rule_fired {
            return false;
        }
        let Some(p) = self.log.proposal(self.round) else {
            return false;
        };
        let v = p.block_hash;
        if self.verdicts.get(&v) != Some(&true)
            || self.log.count_for(VoteKind::Prevote, self.round, Some(&v))
                < self.validators.quorum()
        {
            return false;
        }
        self.lock_rule_fired = true;
        // L42–L43 take effect together with L38–L39: both are set before signing so that the
        // persisted record carries them (a lock without its valid value would, after a
        // restart, leave this validator prevoting nil for every proposal but its own).
        self.valid = Some((self.round, v));
        if self.step == Step::Prevote {
            // L37–L41
            self.locked = Some((self.round, v));
            self.sign_vote(VoteKind::Precommit, Some(v));
            self.step = Step::Precommit;
        }
        true
    }

    /// L44–L46.
    fn rule_precommit_nil(&mut self) -> bool {
        if self.step != Step::Prevote
            || self.log.count_for(VoteKind::Prevote, self.round, None) < self.validators.quorum()
        {
            return false;
        }
        self.sign_vote(VoteKind::Precommit, None);
        self.step = Step::Precommit;
        true
    }

    /// L47–L48.
    fn rule_arm_precommit_timeout(&mut self) -> bool {
        if self.precommit_timeout_armed
            || self.log.count_any(VoteKind::Precommit, self.round) < self.validators.quorum()
        {
            return false;
        }
        self.precommit_timeout_armed = true;
        self.schedule(Step::Precommit);
        true
    }

    /// L49–L54: a proposal of any round with 2f+1 precommits for it decides the height.
    fn rule_decide(&mut self) -> bool {
        let quorum = self.validators.quorum();
        let decided = self.log.proposals().find_map(|p| {
            let v = p.block_hash;
            let votes = self.log.precommits_for(p.round, &v);
            (votes.len() >= quorum && self.verdicts.get(&v) == Some(&true)).then(|| {
                CommitCertificate {
                    height: self.height,
                    round: p.round,
                    block_hash: v,
                    signatures: votes.iter().filter_map(|v| v.commit_signature()).collect(),
                }
            })
        });
        let Some(certificate) = decided else {
            return false;
        };
        self.effects.push(Effect::Commit { certificate }); // L51
        self.enter_height(self.height + 1, true); // L52–L54
        true
    }

    /// L55–L56, generalised: once f+1 validators have signed messages for rounds above ours,
    /// at least one honest validator is at or beyond the (f+1)-th highest of those rounds, so
    /// we start that round. Skipping rounds never affects safety, only how fast we catch up.
    fn rule_skip_round(&mut self) -> bool {
        let mut ahead: Vec<u32> = self
            .highest_round
            .values()
            .copied()
            .filter(|&r| r > self.round)
            .collect();
        let needed = self.validators.one_honest();
        if ahead.len() < needed {
            return false;
        }
        ahead.sort_unstable_by(|a, b| b.cmp(a));
        self.start_round(ahead[needed - 1]);
        true
    }

    // ----- helpers ----------------------------------------------------------------------------

    /// L52–L54 (or a sync): reset the height's state and, once voting, start round 0 and
    /// replay what was buffered for the new height.
    fn enter_height(&mut self, height: u64, carry_next: bool) {
        self.height = height;
        self.locked = None;
        self.valid = None;
        self.has_work = false;
        self.verdicts.clear();
        self.verify_requested.clear();
        self.highest_round.clear();
        self.evidence_seen.clear();
        self.signed.clear();
        self.claimed_height.retain(|_, h| *h > height);
        self.peers_lagging.clear();
        let buffered = std::mem::take(&mut self.next_log);
        self.log = HeightLog::default();
        if self.behind_reported < height {
            self.behind_reported = height;
        }
        if let Some(r) = self.ahead.take_if(|r| r.height <= height) {
            self.round = 0;
            self.step = Step::Propose;
            self.resumed = false;
            if r.height == height {
                self.restore(r);
            }
            if std::mem::take(&mut self.start_wanted) {
                self.handle_start();
            }
            return;
        }
        if !self.started {
            // Caught up by sync before voting: nothing of the old height matters any more,
            // including a safety record for it. `Input::Start` begins round 0.
            self.round = 0;
            self.step = Step::Propose;
            self.resumed = false;
            return;
        }
        // Timeouts of the previous height are ignored: they carry its height.
        self.start_round(0);
        if carry_next {
            for m in buffered.into_messages() {
                self.accept(m);
            }
        }
    }

    fn schedule(&mut self, step: Step) {
        self.effects.push(Effect::Schedule {
            timeout: Timeout {
                height: self.height,
                round: self.round,
                step,
            },
            after_ms: self.timeouts.after_ms(step, self.round),
        });
    }

    fn record(&self) -> SafetyRecord {
        SafetyRecord {
            height: self.height,
            round: self.round,
            step: self.step,
            locked: self.locked,
            valid: self.valid,
            signed: self.signed.clone(),
            proof_of_lock: self.valid.map_or_else(Vec::new, |(vr, v)| {
                self.log.prevotes_for(vr, &v).into_iter().cloned().collect()
            }),
            left: self.log.own(
                &self.me,
                self.round.saturating_sub(LEFT_ROUNDS_KEPT)..self.round,
            ),
        }
    }

    /// Signs (or, after a restart, re-sends what was already signed), persists, broadcasts and
    /// counts our own message. The one place a signature is made, so the one place the
    /// never-sign-twice rule has to hold.
    fn sign_and_send(&mut self, m: Message) {
        let same_slot = |a: &Message, b: &Message| match (a, b) {
            (Message::Proposal(_), Message::Proposal(_)) => true,
            (Message::Vote(x), Message::Vote(y)) => x.kind == y.kind,
            _ => false,
        };
        if let Some(prev) = self.signed.iter().find(|s| same_slot(s, &m)) {
            // Already signed this slot (before a crash): re-send that, never a second one.
            let prev = prev.clone();
            self.effects.push(Effect::Broadcast(prev));
            return;
        }
        self.signed.push(m.clone());
        self.effects.push(Effect::Persist(self.record()));
        self.effects.push(Effect::Broadcast(m.clone()));
        self.log.insert(m);
    }

    fn sign_proposal(&mut self, block_hash: Hash, pol_round: Option<u32>) {
        if let Some(vr) = pol_round {
            // The proof of lock travels ahead of the proposal that relies on it (L28 needs it).
            let pol: Vec<Message> = self
                .log
                .prevotes_for(vr, &block_hash)
                .into_iter()
                .map(|p| Message::Vote(p.clone()))
                .collect();
            self.effects.extend(pol.into_iter().map(Effect::Broadcast));
        }
        let p = Proposal::sign(
            &self.key,
            &self.chain_id,
            self.height,
            self.round,
            block_hash,
            pol_round,
        );
        self.sign_and_send(Message::Proposal(p));
    }

    fn sign_vote(&mut self, kind: VoteKind, block: Option<Hash>) {
        // The step is part of the record: set it to where this vote takes us before persisting.
        self.step = match kind {
            VoteKind::Prevote => Step::Prevote,
            VoteKind::Precommit => Step::Precommit,
        };
        let v = Vote::sign(
            &self.key,
            &self.chain_id,
            kind,
            self.height,
            self.round,
            block,
        );
        self.sign_and_send(Message::Vote(v));
    }

    /// The highest height that f+1 validators (so at least one honest) have signed for.
    fn ahead_height(&self) -> u64 {
        let mut heights: Vec<u64> = self.claimed_height.values().copied().collect();
        let needed = self.validators.one_honest();
        if heights.len() < needed {
            return self.height;
        }
        heights.sort_unstable_by(|a, b| b.cmp(a));
        heights[needed - 1]
    }

    /// Notes a validly signed message for a later height; once f+1 validators are ahead, this
    /// node missed decisions (or is about to make them late) and asks for block sync. One
    /// Byzantine validator signing absurd heights cannot trigger it.
    fn note_height(&mut self, signer: PublicKey, height: u64) {
        let h = self.claimed_height.entry(signer).or_insert(height);
        *h = (*h).max(height);
        let ahead = self.ahead_height();
        if ahead > self.behind_reported {
            self.behind_reported = ahead;
            self.effects.push(Effect::Behind { height: ahead });
        }
    }

    /// Filters a message from the network; what survives goes into the log.
    fn receive(&mut self, m: Message) {
        let signer = m.signer();
        if !self.validators.contains(&signer) {
            self.counters.not_a_validator += 1;
            return;
        }
        let (height, round) = (m.height(), m.round());
        if height < self.height {
            self.counters.stale_height += 1;
            // Checked at most once per validator per tick, so replayed old messages cost little.
            if self.peers_behind.get(&signer).is_none_or(|&h| h > height)
                && m.verify(&self.chain_id).is_ok()
            {
                self.peers_behind.insert(signer, height);
            }
            return;
        }
        if let Message::Proposal(p) = &m {
            let pol_ok = p.pol_round.is_none_or(|vr| vr < p.round);
            if self.validators.proposer(height, round) != &signer || !pol_ok {
                self.counters.invalid_proposal += 1;
                return;
            }
        }
        let log = if height == self.height {
            &self.log
        } else {
            &self.next_log
        };
        if height <= self.height + 1 && log.holds(&m) {
            self.counters.duplicate += 1;
            // A copy of a held message is as authentic as the one held. Its sender re-sends
            // it because it is still in that round: it may be waiting for our votes there,
            // which it lost, while every message of the round already reached us once.
            if height == self.height {
                self.note_lagging(signer, round);
            }
            return;
        }
        if m.verify(&self.chain_id).is_err() {
            self.counters.bad_signature += 1;
            return;
        }
        if height > self.height {
            self.note_height(signer, height);
        }
        if height > self.height + 1 {
            self.counters.future_height += 1;
            return;
        }
        let round_limit = if height == self.height {
            self.round.saturating_add(FUTURE_ROUNDS_MAX)
        } else {
            FUTURE_ROUNDS_MAX
        };
        if round > round_limit {
            if height == self.height {
                self.note_round(signer, round);
            }
            self.counters.future_round += 1;
            return;
        }
        if height == self.height {
            self.accept(m);
        } else {
            match self.next_log.insert(m.clone()) {
                Insert::New => self.counters.accepted += 1,
                Insert::Duplicate => self.counters.duplicate += 1,
                Insert::Conflict(first) => self.equivocation(first, m),
            }
        }
    }

    /// Puts a verified message of the current height into the log.
    fn accept(&mut self, m: Message) {
        self.note_round(m.signer(), m.round());
        // Others are working on this height, so there is work even if this node's host has no
        // entries (they may not have reached it): round 0 may now time out. It takes a
        // proposal from the round's proposer or messages from f+1 validators (one honest), so
        // a lone Byzantine validator cannot make an idle network churn out empty blocks.
        if !self.has_work {
            let proposed = matches!(&m, Message::Proposal(p) if p.round == self.round);
            let mut signers: BTreeSet<PublicKey> = self.highest_round.keys().copied().collect();
            signers.insert(m.signer());
            if proposed || signers.len() >= self.validators.one_honest() {
                self.has_work = true;
                if self.started && self.round == 0 && self.step == Step::Propose {
                    self.arm_propose_timeout();
                }
            }
        }
        self.note_lagging(m.signer(), m.round());
        if let Message::Proposal(p) = &m {
            let v = p.block_hash;
            if !self.verdicts.contains_key(&v) && self.verify_requested.insert(v) {
                self.effects.push(Effect::VerifyBlock {
                    height: self.height,
                    block_hash: v,
                });
            }
        }
        match self.log.insert(m.clone()) {
            Insert::New => self.counters.accepted += 1,
            Insert::Duplicate => self.counters.duplicate += 1,
            Insert::Conflict(first) => self.equivocation(first, m),
        }
    }

    /// Remembers a validator seen at this height in a round below ours, so that the next tick
    /// sends it our messages of the rounds since: the paper's gossip delivers to a validator
    /// every message that moved the others on, and a lost precommit is otherwise never sent
    /// again once its signer left the round (f+1 of us may never be ahead to let it skip).
    fn note_lagging(&mut self, signer: PublicKey, round: u32) {
        if round < self.round && signer != self.me {
            let lag = self.peers_lagging.entry(signer).or_insert(round);
            *lag = (*lag).min(round);
        }
    }

    /// Remembers the highest round each validator has signed for at this height (for L55).
    fn note_round(&mut self, signer: PublicKey, round: u32) {
        let r = self.highest_round.entry(signer).or_insert(round);
        *r = (*r).max(round);
    }

    fn equivocation(&mut self, first: Message, second: Message) {
        self.counters.equivocation += 1;
        let slot = match &second {
            Message::Proposal(_) => 0,
            Message::Vote(v) if v.kind == VoteKind::Prevote => 1,
            Message::Vote(_) => 2,
        };
        if !self
            .evidence_seen
            .insert((second.signer(), second.height(), second.round(), slot))
        {
            return;
        }
        let evidence = match (first, second) {
            (Message::Proposal(a), Message::Proposal(b)) => Evidence::DoubleProposal(a, b),
            (Message::Vote(a), Message::Vote(b)) => Evidence::DoubleVote(a, b),
            _ => return,
        };
        self.effects.push(Effect::Evidence(evidence));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vote(key: &Keypair, kind: VoteKind, round: u32) -> Message {
        let chain = Name::new("record-chain").unwrap_or_else(|e| panic!("{e}"));
        Message::Vote(Vote::sign(key, &chain, kind, 7, round, None))
    }

    #[test]
    fn a_record_of_the_release_before_left_reads_as_one_that_kept_no_earlier_rounds() {
        let key = Keypair::from_seed_for_tests(3);
        let old = SafetyRecordWithoutLeft {
            height: 7,
            round: 2,
            step: Step::Prevote,
            locked: None,
            valid: None,
            signed: vec![vote(&key, VoteKind::Prevote, 2)],
            proof_of_lock: Vec::new(),
        };
        let read = SafetyRecord::decode(&tally_types::codec::encode(&old))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((read.height, read.round, read.step), (7, 2, Step::Prevote));
        assert_eq!(read.signed, old.signed);
        assert!(read.left.is_empty());

        let new = SafetyRecord {
            left: vec![
                vote(&key, VoteKind::Prevote, 1),
                vote(&key, VoteKind::Precommit, 1),
            ],
            ..read
        };
        let bytes = tally_types::codec::encode(&new);
        assert_eq!(SafetyRecord::decode(&bytes), Ok(new));
        assert!(SafetyRecord::decode(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn a_restarted_validator_holds_its_messages_of_the_rounds_it_left_and_refuses_others() {
        let key = Keypair::from_seed_for_tests(3);
        let other = Keypair::from_seed_for_tests(4);
        let set =
            ValidatorSet::new(&[key.public(), other.public()]).unwrap_or_else(|e| panic!("{e}"));
        let chain = Name::new("record-chain").unwrap_or_else(|e| panic!("{e}"));
        let record = |left: Vec<Message>| SafetyRecord {
            height: 7,
            round: 2,
            step: Step::Propose,
            locked: None,
            valid: None,
            signed: Vec::new(),
            proof_of_lock: Vec::new(),
            left,
        };
        let core = |r: SafetyRecord| {
            Core::new(
                chain.clone(),
                Keypair::from_seed_for_tests(3),
                set.clone(),
                Timeouts::default(),
                6,
                Some(r),
            )
        };
        let left = vec![vote(&key, VoteKind::Precommit, 1)];
        let c = core(record(left.clone())).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.log.own(&key.public(), 0..2), left);
        assert_eq!(c.record().left, left, "kept through the next persist");
        for foreign in [
            vote(&other, VoteKind::Precommit, 1),
            vote(&key, VoteKind::Precommit, 2),
        ] {
            assert_eq!(
                core(record(vec![foreign])).err(),
                Some(ConsensusError::ForeignRecord)
            );
        }
    }

    #[test]
    fn a_record_above_the_chain_holds_the_core_back_until_sync_reaches_it_then_binds_it() {
        let key = Keypair::from_seed_for_tests(3);
        let others: Vec<Keypair> = (4..7).map(Keypair::from_seed_for_tests).collect();
        let mut keys: Vec<PublicKey> = others.iter().map(Keypair::public).collect();
        keys.push(key.public());
        let set = ValidatorSet::new(&keys).unwrap_or_else(|e| panic!("{e}"));
        let chain = Name::new("record-chain").unwrap_or_else(|e| panic!("{e}"));
        // Before its chain was set aside, it prevoted for A at height 7, round 0.
        let a = Hash([0xa; 32]);
        let prevote_a = Message::Vote(Vote::sign(&key, &chain, VoteKind::Prevote, 7, 0, Some(a)));
        let record = SafetyRecord {
            height: 7,
            round: 0,
            step: Step::Prevote,
            locked: None,
            valid: None,
            signed: vec![prevote_a.clone()],
            proof_of_lock: Vec::new(),
            left: Vec::new(),
        };
        let mut core = Core::new(
            chain.clone(),
            Keypair::from_seed_for_tests(3),
            set.clone(),
            Timeouts::default(),
            0,
            Some(record),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(core.record_ahead(), Some(7));
        let signs = |effects: &[Effect]| {
            effects
                .iter()
                .any(|e| matches!(e, Effect::Persist(_) | Effect::Broadcast(_)))
        };
        assert!(
            !signs(&core.handle(Input::Start)),
            "started below its record"
        );
        assert!(!core.started());
        // Sync brings it to height 5 committed: still below the record.
        assert!(!signs(&core.handle(Input::Synced { height: 5 })));
        assert!(!signs(&core.handle(Input::Work)));
        assert_eq!(core.record_ahead(), Some(7));
        // Height 6 committed: it is at 7, takes up the record, starts, and sends its prevote
        // for A again, never one for another value.
        let effects = core.handle(Input::Synced { height: 6 });
        assert!(core.started());
        assert_eq!(core.record_ahead(), None);
        assert_eq!(
            (core.height(), core.round(), core.step()),
            (7, 0, Step::Prevote)
        );
        assert!(effects
            .iter()
            .any(|e| matches!(e, Effect::Broadcast(m) if *m == prevote_a)));
        let b = Hash([0xb; 32]);
        let proposer = set.proposer(7, 0);
        let proposer_key = others
            .iter()
            .find(|k| k.public() == *proposer)
            .unwrap_or_else(|| panic!("this validator is not the proposer of 7/0 in this set"));
        let proposal = Message::Proposal(Proposal::sign(proposer_key, &chain, 7, 0, b, None));
        let effects = core.handle(Input::Message(proposal));
        for e in &effects {
            if let Effect::Broadcast(Message::Vote(v)) = e {
                assert!(
                    !(v.kind == VoteKind::Prevote && v.round == 0 && v.block != Some(a)),
                    "a second prevote at 7/0: {v:?}"
                );
            }
        }
    }

    #[test]
    fn a_record_that_sync_passes_no_longer_matters() {
        let key = Keypair::from_seed_for_tests(3);
        let other = Keypair::from_seed_for_tests(4);
        let set =
            ValidatorSet::new(&[key.public(), other.public()]).unwrap_or_else(|e| panic!("{e}"));
        let chain = Name::new("record-chain").unwrap_or_else(|e| panic!("{e}"));
        let record = SafetyRecord {
            height: 7,
            round: 3,
            step: Step::Precommit,
            locked: None,
            valid: None,
            signed: Vec::new(),
            proof_of_lock: Vec::new(),
            left: Vec::new(),
        };
        let mut core = Core::new(chain, key, set, Timeouts::default(), 2, Some(record))
            .unwrap_or_else(|e| panic!("{e}"));
        core.handle(Input::Start);
        assert!(!core.started());
        core.handle(Input::Synced { height: 9 });
        assert!(core.started());
        assert_eq!(
            (core.height(), core.round(), core.step()),
            (10, 0, Step::Propose)
        );
        assert_eq!(core.record_ahead(), None);
    }
}
