//! Whole node engines driven in virtual time over memory disks and an in-process network:
//! no sockets, threads, clocks or RocksDB. Every run is deterministic from its seed, so a
//! failure replays exactly.
//!
//! The seeded runs put n = 4 and n = 7 validators through a network that drops, duplicates,
//! delays (and so reorders) and partitions messages, and through crashes (between steps, or
//! in the middle of carrying out an engine's actions), each followed by a restart from what
//! the crashed engine had on its disk; an observer follows the chain beside them. Clients keep
//! submitting entries to live nodes and, as a field device's outbox does, submit again those
//! not committed yet. After every step the run checks: every two nodes hold the same block at
//! a height, with the same state root, and every certificate is valid; no honest validator
//! signs two different messages for one slot; no entry is committed twice. Once the network
//! heals and every node is back, every acknowledged entry must be committed on every honest
//! node.
//!
//! `TALLY_ENGINE_SIM_SEEDS` sets how many seeds each scenario runs (CI: the defaults below),
//! from seed `TALLY_ENGINE_SIM_FROM` (0 unless set);
//! `TALLY_ENGINE_SIM_N` and `TALLY_ENGINE_SIM_SEED` replay one run; the runs of a scenario
//! are shared among `TALLY_ENGINE_SIM_THREADS` threads (one per core). A long background run:
//! `TALLY_ENGINE_SIM_SEEDS=100000 cargo test --workspace --release --test engine seeded -- --nocapture`.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::rc::Rc;
use tally_consensus::{Message, Proposal, SafetyRecord, Timeouts, Vote, VoteKind};
use tally_network::{CertifiedBlock, ProposedBlock, ProposedEntry, Request};
use tally_node::engine::{Action, Disk, Engine, EngineConfig, Event, Now};
use tally_node::ledger::{Ledger, LedgerLimits};
use tally_node::memdisk::MemDisk;
use tally_types::{
    AgencyGenesis, Block, CommitCertificate, CommitSignature, EntryBody, EntryId, Genesis, Hash,
    IdentifiedEntry, Keypair, Name, Payload, PublicKey, Role, SignedEntry, TimestampMs,
    ValidatorGenesis,
};

/// Wall-clock milliseconds at virtual time zero.
const WALL_AT_ZERO: u64 = 1_800_000_000_000;
/// The agency admins who author every entry, one per client.
const CLIENTS: u64 = 3;
/// Block-sync answers, at most.
const SYNC_BYTES_MAX: usize = 1 << 20;
/// How far behind the others a validator may be when it starts voting: the engine's
/// "caught up" allows a sync answer of up to 8 blocks, and blocks decided meanwhile.
const CAUGHT_UP_HEIGHTS: u64 = 10;
/// How long after healing every acknowledged entry must be committed everywhere.
const SETTLE_MS: u64 = 60_000;

fn name(s: &str) -> Name {
    Name::new(s).expect("a valid name")
}

thread_local! {
    /// Keys and entries are pure functions of their seeds, and deriving one costs a base-point
    /// multiplication: made afresh for every message, they took four fifths of a Byzantine
    /// run's time (a tampering validator re-signs every entry of every proposal it forwards).
    static KEYS: RefCell<HashMap<u64, Rc<Keypair>>> = RefCell::new(HashMap::new());
    static ENTRIES: RefCell<HashMap<(u64, u64), SignedEntry>> = RefCell::new(HashMap::new());
}

/// The test key of `seed`, made once per thread.
fn test_key(seed: u64) -> Rc<Keypair> {
    KEYS.with(|keys| {
        keys.borrow_mut()
            .entry(seed)
            .or_insert_with(|| Rc::new(Keypair::from_seed_for_tests(seed)))
            .clone()
    })
}

/// Validator `i`'s key is the test key of this plus `i`.
const VALIDATOR_SEED: u64 = 100;

fn validator_key(i: usize) -> Rc<Keypair> {
    test_key(VALIDATOR_SEED + i as u64)
}

fn client_key(c: u64) -> Rc<Keypair> {
    test_key(1 + c)
}

fn genesis(n: usize) -> Genesis {
    Genesis {
        chain_id: name("engine-test"),
        genesis_time: TimestampMs(WALL_AT_ZERO - 1_000),
        agencies: vec![AgencyGenesis {
            id: name("wfp"),
            admins: (0..CLIENTS).map(|c| client_key(c).public()).collect(),
        }],
        validators: (0..n)
            .map(|i| ValidatorGenesis {
                agency: name("wfp"),
                key: validator_key(i).public(),
            })
            .collect(),
    }
}

/// Client `c`'s `sequence`-th entry: a role granted to a fresh key.
fn entry(c: u64, sequence: u64) -> SignedEntry {
    if let Some(made) = ENTRIES.with(|made| made.borrow().get(&(c, sequence)).cloned()) {
        return made;
    }
    let admin = client_key(c);
    let signed = EntryBody {
        chain_id: name("engine-test"),
        author: admin.public(),
        sequence,
        payload: Payload::GrantRole {
            key: Keypair::from_seed_for_tests(10_000 + c * 1_000_000 + sequence).public(),
            role: Role::Redeemer,
        },
    }
    .sign(&admin);
    ENTRIES.with(|made| made.borrow_mut().insert((c, sequence), signed.clone()));
    signed
}

/// A small deterministic generator (xorshift).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }

    fn per_mille(&mut self, p: u64) -> bool {
        self.below(1000) < p
    }
}

/// How a Byzantine validator bends what its (honest) engine sends. Its engine, disk and
/// signing key are real; the shell around it lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    Honest,
    /// Sends nothing at all, and answers no block-sync request.
    Silent,
    /// Proposes two different valid blocks, each to about half of the validators.
    EquivocatingProposer,
    /// Sends each vote to some validators and a conflicting vote to the others.
    DoubleVoter,
    /// Proposes blocks that do not execute (a wrong state root).
    InvalidBlocks,
    /// Sends old messages it has heard, its own and others', at random.
    Replayer,
    /// Sends messages under other validators' names, validly signed messages for absurd
    /// heights and rounds or another chain, and pushes blocks with forged certificates.
    Forger,
    /// Proposes blocks that name, by id, an entry nobody holds, and answers no request for
    /// entries: nobody can rebuild its blocks.
    UnknownIds,
    /// Forwards the last proposal it heard from another validator, with that proposer's
    /// valid signature and header, but other (validly signed) entries in its block.
    Tamperer,
    /// Sends its proposals to the next validator with other (validly signed) entries under
    /// the true header, and to the rest as they are; never precommits, pushes blocks or
    /// answers block sync. A validator that judged the block on the entries it was sent
    /// would refuse for the whole height a block the others lock on.
    Splitter,
}

const BYZANTINE: [Behaviour; 9] = [
    Behaviour::Silent,
    Behaviour::EquivocatingProposer,
    Behaviour::DoubleVoter,
    Behaviour::InvalidBlocks,
    Behaviour::Replayer,
    Behaviour::Forger,
    Behaviour::UnknownIds,
    Behaviour::Tamperer,
    Behaviour::Splitter,
];

/// What a run puts the validators through.
#[derive(Debug, Clone, Copy)]
struct Plan {
    n: usize,
    /// Per-mille chance a message is lost while the network is bad.
    loss: u64,
    /// Per-mille chance a message is delivered twice.
    duplicate: u64,
    /// Largest delay of a message while the network is bad (delays are uniform, so messages
    /// overtake each other); 20 ms once it heals.
    max_delay: u64,
    partitions: bool,
    crashes: bool,
    /// How long the network is bad.
    chaos_ms: u64,
    /// A bug planted in the shell: safety records are not written, votes are sent anyway.
    skip_persist: bool,
    /// f validators are Byzantine, each in a way drawn per seed, at random positions.
    byzantine: bool,
    /// One observer follows the chain too (pushed blocks and its own polls), and clients
    /// submit to it as to any node.
    observer: bool,
    /// Bytes of blocks in one block-sync answer, at most.
    sync_bytes_max: usize,
}

impl Plan {
    fn calm(n: usize) -> Self {
        Plan {
            n,
            loss: 0,
            duplicate: 0,
            max_delay: 20,
            partitions: false,
            crashes: false,
            chaos_ms: 10_000,
            skip_persist: false,
            byzantine: false,
            observer: false,
            sync_bytes_max: SYNC_BYTES_MAX,
        }
    }

    fn stormy(n: usize) -> Self {
        Plan {
            loss: 100,
            duplicate: 50,
            max_delay: 400,
            partitions: true,
            crashes: true,
            chaos_ms: 20_000,
            observer: true,
            ..Plan::calm(n)
        }
    }

    fn byzantine(n: usize) -> Self {
        Plan {
            byzantine: true,
            ..Plan::stormy(n)
        }
    }
}

/// What travels between engines.
#[derive(Debug, Clone)]
enum Delivery {
    Request(Request),
    Ask {
        from_height: u64,
    },
    Answer(Vec<CertifiedBlock>),
    /// A block-sync request or its answer was lost: the network says so after its timeout.
    Failed,
}

/// The network's request timeout, after which a lost block-sync request is reported failed.
const REQUEST_TIMEOUT_MS: u64 = 10_000;

struct Node {
    key: PublicKey,
    disk: MemDisk,
    engine: Option<Engine>,
    /// Heights of its disk already checked against the decided chain.
    checked: u64,
    down_until: Option<u64>,
    behaviour: Behaviour,
    /// Consensus messages it has received (a replayer's stock), the last 256.
    heard: Vec<Message>,
    /// The last proposal it received from another validator, with its block (a tamperer's).
    heard_proposal: Option<(Message, ProposedBlock)>,
}

/// A client: its next sequence number and the entries acknowledged but not committed yet.
struct Client {
    next: u64,
    waiting: BTreeMap<u64, SignedEntry>,
}

struct Sim {
    plan: Plan,
    genesis: Genesis,
    validators: Vec<PublicKey>,
    now_ms: u64,
    nodes: Vec<Node>,
    /// (deliver at, sequence) -> (from, to, what).
    queue: BTreeMap<(u64, u64), (usize, usize, Delivery)>,
    seq: u64,
    rng: Rng,
    /// A partition: each node's side, until when.
    cut: Option<(Vec<bool>, u64)>,
    /// The first block seen committed at each height, with its state root.
    decided: Vec<(Hash, Hash)>,
    committed: HashSet<EntryId>,
    /// What each validator signed for each slot: (signer, height, round, kind) -> value.
    signed: HashMap<Slot, Signed>,
    double_signed: Option<String>,
    clients: Vec<Client>,
    acknowledged: u64,
    /// Entries honest proposals named by id, and entries they carried in full.
    proposed_by_id: u64,
    proposed_in_full: u64,
    /// Requests for every entry of a proposed block, by honest validators.
    whole_fetches: u64,
    /// A node every relay of entries to is lost.
    relays_lost_to: Option<usize>,
}

fn now(ms: u64) -> Now {
    Now {
        mono_ms: ms,
        wall: TimestampMs(WALL_AT_ZERO + ms),
    }
}

type Checked<T> = Result<T, String>;

/// A message a validator signs once: (signer, height, round, 0 proposal / 1 prevote / 2
/// precommit).
type Slot = (PublicKey, u64, u32, u8);

/// What was signed in a slot: the block (or nil) and, for a proposal, its proof-of-lock round.
type Signed = (Option<Hash>, Option<u32>);

impl Sim {
    fn new(plan: Plan, seed: u64) -> Self {
        let genesis = genesis(plan.n);
        let mut sim = Sim {
            plan,
            validators: (0..plan.n).map(|i| validator_key(i).public()).collect(),
            now_ms: 0,
            nodes: Vec::new(),
            queue: BTreeMap::new(),
            seq: 0,
            rng: Rng::new(seed),
            cut: None,
            decided: Vec::new(),
            committed: HashSet::new(),
            signed: HashMap::new(),
            double_signed: None,
            clients: (0..CLIENTS)
                .map(|_| Client {
                    next: 0,
                    waiting: BTreeMap::new(),
                })
                .collect(),
            acknowledged: 0,
            proposed_by_id: 0,
            proposed_in_full: 0,
            whole_fetches: 0,
            relays_lost_to: None,
            genesis,
        };
        for i in 0..plan.n + usize::from(plan.observer) {
            let disk = MemDisk::new(sim.genesis.clone());
            sim.nodes.push(Node {
                key: validator_key(i).public(),
                disk,
                engine: None,
                checked: 0,
                down_until: None,
                behaviour: Behaviour::Honest,
                heard: Vec::new(),
                heard_proposal: None,
            });
        }
        if plan.byzantine {
            let f = (plan.n - 1) / 3;
            while sim
                .nodes
                .iter()
                .filter(|x| x.behaviour != Behaviour::Honest)
                .count()
                < f
            {
                let i = sim.rng.below(plan.n as u64) as usize;
                let b = BYZANTINE[sim.rng.below(BYZANTINE.len() as u64) as usize];
                sim.nodes[i].behaviour = b;
            }
        }
        for i in 0..sim.nodes.len() {
            sim.start(i);
        }
        sim
    }

    fn bad(&self) -> bool {
        self.now_ms < self.plan.chaos_ms
    }

    /// Builds node `i`'s engine from what its disk holds, as a restart does.
    fn start(&mut self, i: usize) {
        let disk = self.nodes[i].disk.clone();
        let state = disk.state().expect("the memory disk's state replays");
        let ledger = Ledger::new(
            LedgerLimits::default(),
            self.genesis.clone(),
            Box::new(disk.clone()),
            state,
            disk.head(),
        );
        let record = disk
            .safety_record()
            .map(|b| SafetyRecord::decode(&b).expect("the record decodes"));
        let engine = Engine::new(
            EngineConfig {
                key: Keypair::from_seed_for_tests(VALIDATOR_SEED + i as u64),
                timeouts: Timeouts::default(),
                observers: match self.plan.observer {
                    true => vec![validator_key(self.plan.n).public()],
                    false => Vec::new(),
                },
                networked: self.nodes.len() > 1,
                tick_ms: 250,
                interval_ms: 100,
                sync_bytes_max: self.plan.sync_bytes_max,
                evidence_held: disk.evidence() as u64,
            },
            ledger,
            record,
            now(self.now_ms),
        )
        .expect("the engine starts");
        self.nodes[i].engine = Some(engine);
        self.nodes[i].down_until = None;
        // Its peers see it connect, and it sees them.
        for j in 0..self.nodes.len() {
            if j != i && self.nodes[j].engine.is_some() {
                let (a, b) = (self.nodes[i].key, self.nodes[j].key);
                self.handle(i, Event::Connected(b));
                self.handle(j, Event::Connected(a));
            }
        }
    }

    fn crash(&mut self, i: usize, until: u64) {
        self.nodes[i].engine = None;
        self.nodes[i].down_until = Some(until);
    }

    fn handle(&mut self, i: usize, event: Event) {
        let t = now(self.now_ms);
        if let Some(engine) = self.nodes[i].engine.as_mut() {
            engine
                .handle(t, event)
                .expect("the engine handles the event");
        }
        self.drain(i);
    }

    fn index_of(&self, key: &PublicKey) -> usize {
        self.nodes
            .iter()
            .position(|n| n.key == *key)
            .expect("a known node")
    }

    fn post(&mut self, from: usize, to: usize, what: Delivery) {
        let bad = self.bad();
        let cut = self
            .cut
            .as_ref()
            .is_some_and(|(sides, until)| *until > self.now_ms && sides[from] != sides[to]);
        if cut || (bad && self.rng.per_mille(self.plan.loss)) {
            self.lost(from, to, what);
            return;
        }
        let copies = if bad && self.rng.per_mille(self.plan.duplicate) {
            2
        } else {
            1
        };
        let max_delay = if bad { self.plan.max_delay } else { 20 };
        for _ in 0..copies {
            let at = self.now_ms + 1 + self.rng.below(max_delay);
            self.seq += 1;
            self.queue.insert((at, self.seq), (from, to, what.clone()));
        }
    }

    /// A lost block-sync request or answer is reported to the asker after the timeout.
    fn lost(&mut self, from: usize, to: usize, what: Delivery) {
        let asker = match what {
            Delivery::Ask { .. } => from,
            Delivery::Answer(_) => to,
            _ => return,
        };
        self.seq += 1;
        self.queue.insert(
            (self.now_ms + REQUEST_TIMEOUT_MS, self.seq),
            (asker, asker, Delivery::Failed),
        );
    }

    /// Takes node `i`'s actions and carries them out: its disk's writes, then the network.
    fn drain(&mut self, i: usize) {
        let Some(engine) = self.nodes[i].engine.as_mut() else {
            return;
        };
        let actions = engine.ready();
        for action in actions {
            if self.crash_mid_batch(i) {
                // The rest of the batch is lost with the process: writes not made, messages
                // not sent.
                return;
            }
            match action {
                Action::Persist { record, keep, .. } => {
                    if !self.plan.skip_persist {
                        self.nodes[i].disk.put_safety_record(&record, &keep);
                    }
                }
                Action::ForgetKept(hashes) => self.nodes[i].disk.forget_kept(hashes.as_deref()),
                Action::Send { to, request, .. } => {
                    if let Request::FetchEntries { ids, .. } = &request {
                        if ids.is_empty() && self.nodes[i].behaviour == Behaviour::Honest {
                            self.whole_fetches += 1;
                        }
                    }
                    if let Request::Consensus { message, block } = &request {
                        self.note_signed(i, message);
                        if let Some(block) = block.as_deref() {
                            for e in &block.entries {
                                match e {
                                    ProposedEntry::Held(_) => self.proposed_by_id += 1,
                                    ProposedEntry::Full(_) => self.proposed_in_full += 1,
                                }
                            }
                        }
                    }
                    for to in to {
                        let j = self.index_of(&to);
                        for bent in self.bend(i, j, request.clone()) {
                            self.post(i, j, Delivery::Request(bent));
                        }
                    }
                }
                Action::AskBlocks { peer, from_height } => {
                    let j = self.index_of(&peer);
                    self.post(i, j, Delivery::Ask { from_height });
                }
            }
        }
    }

    /// What a validator's shell actually sends for one request its engine asked to send to
    /// peer `to`: the request itself, or what its behaviour makes of it.
    fn bend(&mut self, i: usize, to: usize, request: Request) -> Vec<Request> {
        let behaviour = self.nodes[i].behaviour;
        let Request::Consensus { message, block } = &request else {
            return match (behaviour, &request) {
                (Behaviour::Silent, _) => vec![],
                (Behaviour::UnknownIds, Request::Fetched { .. }) => vec![],
                (Behaviour::Splitter, Request::Push(_) | Request::Fetched { .. }) => vec![],
                _ => vec![request],
            };
        };
        let key = validator_key(i);
        let chain = self.genesis.chain_id.clone();
        let consensus = |m: Message, b: Option<ProposedBlock>| Request::Consensus {
            message: Box::new(m),
            block: b.map(Box::new),
        };
        match (behaviour, message.as_ref()) {
            (Behaviour::Honest, _) => vec![request],
            (Behaviour::Silent, _) => vec![],
            (Behaviour::EquivocatingProposer, Message::Proposal(p)) if self.rng.below(2) == 0 => {
                match self.other_block(i) {
                    Some(other) => {
                        let alt = Proposal::sign(
                            &key,
                            &chain,
                            p.height,
                            p.round,
                            other.hash(),
                            p.pol_round,
                        );
                        vec![consensus(
                            Message::Proposal(alt),
                            Some(ProposedBlock::full(other)),
                        )]
                    }
                    None => vec![request],
                }
            }
            (Behaviour::DoubleVoter, Message::Vote(v)) if self.rng.below(2) == 0 => {
                let other = match self.rng.below(3) {
                    0 => None,
                    1 => Some(Hash([0xAB; 32])),
                    _ => self.other_block(i).map(|b| b.hash()),
                };
                let alt = Vote::sign(&key, &chain, v.kind, v.height, v.round, other);
                vec![consensus(Message::Vote(alt), None)]
            }
            (Behaviour::InvalidBlocks, Message::Proposal(p)) => {
                let Some(mut bad) = block.as_deref().cloned() else {
                    return vec![request];
                };
                bad.header.state_root = Hash([0x66; 32]);
                let alt = Proposal::sign(&key, &chain, p.height, p.round, bad.hash(), p.pol_round);
                let vote = Vote::sign(
                    &key,
                    &chain,
                    VoteKind::Prevote,
                    p.height,
                    p.round,
                    Some(bad.hash()),
                );
                vec![
                    consensus(Message::Proposal(alt), Some(bad)),
                    consensus(Message::Vote(vote), None),
                ]
            }
            (Behaviour::Replayer, _) => {
                let mut out = vec![request.clone()];
                for _ in 0..3 {
                    let heard = &self.nodes[i].heard;
                    if heard.is_empty() {
                        break;
                    }
                    let k = self.rng.below(heard.len() as u64) as usize;
                    out.push(consensus(heard[k].clone(), None));
                }
                out
            }
            (Behaviour::UnknownIds, Message::Proposal(p)) => {
                let Some(mut bad) = block.as_deref().cloned() else {
                    return vec![request];
                };
                // As many entries as a block may hold, every one unknown.
                let seed = self.rng.below(u64::MAX);
                let most = LedgerLimits::default().block_entries_max;
                bad.entries = (0..most as u64)
                    .map(|k| {
                        let mut unknown = [0u8; 32];
                        unknown[..8].copy_from_slice(&seed.to_le_bytes());
                        unknown[8..16].copy_from_slice(&k.to_le_bytes());
                        ProposedEntry::Held(Hash(unknown))
                    })
                    .collect();
                bad.header.entry_count = most as u32;
                let alt = Proposal::sign(&key, &chain, p.height, p.round, bad.hash(), p.pol_round);
                vec![consensus(Message::Proposal(alt), Some(bad))]
            }
            (Behaviour::Splitter, Message::Proposal(_)) if to == (i + 1) % self.plan.n => {
                let Some(mut split) = block.as_deref().cloned() else {
                    return vec![request];
                };
                for (k, e) in split.entries.iter_mut().enumerate() {
                    *e = ProposedEntry::Full(Box::new(entry(0, 1_000_000 + k as u64)));
                }
                vec![consensus(message.as_ref().clone(), Some(split))]
            }
            (Behaviour::Splitter, Message::Vote(v)) if v.kind == VoteKind::Precommit => vec![],
            (Behaviour::Tamperer, _) => {
                let mut out = vec![request.clone()];
                if let Some((heard, mut tampered)) = self.nodes[i].heard_proposal.clone() {
                    for (k, e) in tampered.entries.iter_mut().enumerate() {
                        *e = ProposedEntry::Full(Box::new(entry(0, 1_000_000 + k as u64)));
                    }
                    out.push(consensus(heard, Some(tampered)));
                }
                out
            }
            (Behaviour::Forger, m) => {
                let victim = self.validators[(i + 1) % self.validators.len()];
                let mut forged = m.clone();
                match &mut forged {
                    Message::Vote(v) => {
                        v.validator = victim;
                        v.block = Some(Hash([0xCD; 32]));
                    }
                    Message::Proposal(p) => p.proposer = victim,
                }
                let absurd_height = Vote::sign(
                    &key,
                    &chain,
                    VoteKind::Precommit,
                    m.height() + 1_000_000 + self.rng.below(1_000),
                    self.rng.below(10) as u32,
                    Some(Hash([0xEF; 32])),
                );
                let absurd_round = Vote::sign(
                    &key,
                    &chain,
                    VoteKind::Prevote,
                    m.height(),
                    u32::MAX - self.rng.below(1_000) as u32,
                    None,
                );
                let wrong_chain = Vote::sign(
                    &key,
                    &name("other-chain"),
                    VoteKind::Prevote,
                    m.height(),
                    m.round(),
                    None,
                );
                let mut out = vec![
                    request.clone(),
                    consensus(forged, block.as_deref().cloned()),
                    consensus(Message::Vote(absurd_height), None),
                    consensus(Message::Vote(absurd_round), None),
                    consensus(Message::Vote(wrong_chain), None),
                ];
                if let Some(push) = self.forged_push(i) {
                    out.push(push);
                }
                out
            }
            _ => vec![request],
        }
    }

    /// Another valid block for the height node `i` is at: empty, a moment later.
    fn other_block(&mut self, i: usize) -> Option<Block> {
        let engine = self.nodes[i].engine.as_ref()?;
        let ledger = engine.ledger();
        let built = tally_state::build_block(
            ledger.state(),
            ledger.tip(),
            TimestampMs(WALL_AT_ZERO + self.now_ms + 1 + self.rng.below(1_000)),
            self.nodes[i].key,
            Vec::new(),
        )
        .ok()?;
        Some(built.block)
    }

    /// A push of an empty next block whose certificate is forged: node `i`'s precommit,
    /// repeated and put under another validator's name.
    fn forged_push(&mut self, i: usize) -> Option<Request> {
        let block = self.other_block(i)?;
        let key = validator_key(i);
        let height = block.header.height;
        let sig =
            CommitCertificate::sign_vote(&key, &self.genesis.chain_id, height, 0, &block.hash());
        let victim = self.validators[(i + 1) % self.validators.len()];
        let certificate = CommitCertificate {
            height,
            round: 0,
            block_hash: block.hash(),
            signatures: vec![
                sig.clone(),
                CommitSignature {
                    validator: victim,
                    signature: sig.signature,
                },
                sig,
            ],
        };
        Some(Request::Push(vec![CertifiedBlock { block, certificate }]))
    }

    /// Records what node `i` signed; a second, different message for one slot is a double
    /// sign, which the run reports.
    fn note_signed(&mut self, i: usize, message: &Message) {
        if self.nodes[i].behaviour != Behaviour::Honest {
            return;
        }
        let me = self.nodes[i].key;
        let (key, value) = match message {
            Message::Proposal(p) if p.proposer == me => (
                (me, p.height, p.round, 0),
                (Some(p.block_hash), p.pol_round),
            ),
            Message::Vote(v) if v.validator == me => {
                let kind = match v.kind {
                    VoteKind::Prevote => 1,
                    VoteKind::Precommit => 2,
                };
                ((me, v.height, v.round, kind), (v.block, None))
            }
            _ => return,
        };
        match self.signed.get(&key) {
            Some(before) if *before != value => {
                self.double_signed.get_or_insert(format!(
                    "DOUBLE SIGN: validator {i} signed {before:?} and then {value:?} for height {} round {} kind {}",
                    key.1, key.2, key.3
                ));
            }
            Some(_) => {}
            None => {
                self.signed.insert(key, value);
            }
        }
    }

    /// Client `c` submits `entries` to node `i`; what is admitted is acknowledged.
    fn submit(&mut self, i: usize, entries: Vec<SignedEntry>) -> Vec<EntryId> {
        let t = now(self.now_ms);
        let Some(engine) = self.nodes[i].engine.as_mut() else {
            return Vec::new();
        };
        let checked =
            tally_state::verify_entries(entries.into_iter().map(IdentifiedEntry::new).collect());
        let submitted = engine.submit(t, checked).expect("the node answers");
        let ids = submitted
            .answers
            .into_iter()
            .filter_map(Result::ok)
            .collect();
        if submitted.wake {
            self.handle(i, Event::Work);
        }
        ids
    }

    /// Each client signs two new entries and sends them, with those still waiting, to a
    /// live validator, as an outbox does.
    fn clients_submit(&mut self) {
        for c in 0..CLIENTS as usize {
            let live: Vec<usize> = (0..self.nodes.len())
                .filter(|&i| self.nodes[i].engine.is_some())
                .collect();
            if live.is_empty() {
                return;
            }
            let i = live[self.rng.below(live.len() as u64) as usize];
            let client = &mut self.clients[c];
            client
                .waiting
                .retain(|_, e| !self.committed.contains(&e.id()));
            let mut fresh = Vec::new();
            if self.now_ms < self.plan.chaos_ms {
                for _ in 0..2 {
                    fresh.push(entry(c as u64, client.next));
                    client.next += 1;
                }
            }
            let again: Vec<SignedEntry> = client.waiting.values().take(64).cloned().collect();
            let fresh_ids: Vec<EntryId> = fresh.iter().map(SignedEntry::id).collect();
            let mut batch = again;
            batch.extend(fresh.iter().cloned());
            let admitted = self.submit(i, batch);
            // A new entry not admitted is not acknowledged: the client signs it again later
            // under the same sequence number, which the outbox keeps.
            for e in fresh {
                let id = e.id();
                if admitted.contains(&id) {
                    self.acknowledged += 1;
                }
                self.clients[c].waiting.insert(e.body.sequence, e);
                debug_assert!(fresh_ids.contains(&id));
            }
        }
    }

    fn deliver(&mut self, from: usize, to: usize, what: Delivery) {
        let relay_lost = self.relays_lost_to == Some(to)
            && matches!(what, Delivery::Request(Request::Entries(_)));
        if self.nodes[to].engine.is_none() || relay_lost {
            self.lost(from, to, what);
            return;
        }
        let from_key = self.nodes[from].key;
        if let Delivery::Request(Request::Consensus { message, block }) = &what {
            let heard = &mut self.nodes[to].heard;
            if heard.len() == 256 {
                heard.remove(0);
            }
            heard.push(message.as_ref().clone());
            if let (Message::Proposal(p), Some(block)) = (message.as_ref(), block) {
                if p.proposer == from_key {
                    self.nodes[to].heard_proposal = Some((*message.clone(), *block.clone()));
                }
            }
        }
        match what {
            Delivery::Request(Request::Consensus { message, block }) => self.handle(
                to,
                Event::Message {
                    from: from_key,
                    message,
                    block,
                },
            ),
            Delivery::Request(Request::Entries(entries)) => {
                let engine = self.nodes[to].engine.as_ref().expect("running");
                let fresh = engine.relayed_to_check(entries).expect("lookups");
                let checked = tally_state::verify_entries(fresh);
                self.handle(to, Event::Entries(checked));
            }
            Delivery::Request(Request::Push(blocks)) => self.handle(
                to,
                Event::Push {
                    from: from_key,
                    blocks,
                },
            ),
            Delivery::Request(Request::FetchEntries { block, ids }) => self.handle(
                to,
                Event::Fetch {
                    from: from_key,
                    block,
                    ids,
                },
            ),
            Delivery::Request(Request::Fetched { block, entries }) => self.handle(
                to,
                Event::Fetched {
                    from: from_key,
                    block,
                    entries,
                },
            ),
            Delivery::Request(Request::Blocks { .. }) => {}
            Delivery::Ask { .. }
                if matches!(
                    self.nodes[to].behaviour,
                    Behaviour::Silent | Behaviour::Splitter
                ) =>
            {
                self.lost(from, to, what);
            }
            Delivery::Ask { from_height } => {
                let blocks = self.nodes[to]
                    .disk
                    .blocks_from(from_height, self.plan.sync_bytes_max);
                self.post(to, from, Delivery::Answer(blocks));
            }
            Delivery::Answer(blocks) => self.handle(
                to,
                Event::Blocks {
                    from: from_key,
                    blocks,
                },
            ),
            Delivery::Failed => self.handle(to, Event::BlocksFailed),
        }
    }

    /// Checks what each disk committed since the last check: the same block and state root
    /// as every other at that height, a valid certificate, no entry twice.
    fn check(&mut self) -> Checked<()> {
        if let Some(why) = self.double_signed.take() {
            return Err(why);
        }
        for i in 0..self.nodes.len() {
            let new = self.nodes[i]
                .disk
                .blocks_from(self.nodes[i].checked + 1, usize::MAX);
            for CertifiedBlock { block, certificate } in new {
                let h = block.header.height;
                let hash = block.hash();
                match self.decided.get(h as usize - 1) {
                    Some((decided, root)) => {
                        if *decided != hash || *root != block.header.state_root {
                            return Err(format!(
                                "AGREEMENT: node {i} committed {} at height {h}, another {}",
                                hash.short(),
                                decided.short()
                            ));
                        }
                    }
                    None => {
                        certificate
                            .verify(&block.header, &self.validators)
                            .map_err(|e| format!("CERTIFICATE at height {h}: {e}"))?;
                        for e in &block.entries {
                            if !self.committed.insert(e.id()) {
                                return Err(format!(
                                    "TWICE: entry {} committed again at height {h}",
                                    e.id().short()
                                ));
                            }
                        }
                        self.decided.push((hash, block.header.state_root));
                    }
                }
                self.nodes[i].checked = h;
            }
        }
        Ok(())
    }

    /// Whether node `i` crashes now, in the middle of carrying out its engine's actions
    /// (rarely, while the weather is bad, and never past f validators down).
    fn crash_mid_batch(&mut self, i: usize) -> bool {
        if !self.plan.crashes || !self.bad() || !self.rng.per_mille(2) {
            return false;
        }
        if !self.may_crash(i) {
            return false;
        }
        self.crash_for_a_while(i);
        true
    }

    /// Whether node `i` may crash now: an observer always, a validator while fewer than f
    /// (at least one) are down.
    fn may_crash(&self, i: usize) -> bool {
        let validators = self.plan.n;
        let f = (validators - 1) / 3;
        let down = self.nodes[..validators]
            .iter()
            .filter(|x| x.engine.is_none())
            .count();
        i >= validators || down < f.max(1)
    }

    /// Crashes node `i` until a random moment 0.3 to 4.3 s from now.
    fn crash_for_a_while(&mut self, i: usize) {
        let until = self.now_ms + 300 + self.rng.below(4_000);
        self.crash(i, until);
    }

    /// Ends a partition: the connections across it come back, and each side sees the other
    /// connect.
    fn heal_cut(&mut self) {
        let Some((sides, _)) = self.cut.take() else {
            return;
        };
        for i in 0..self.nodes.len() {
            for j in 0..self.nodes.len() {
                let up = self.nodes[i].engine.is_some() && self.nodes[j].engine.is_some();
                if sides[i] != sides[j] && up {
                    let key = self.nodes[j].key;
                    self.handle(i, Event::Connected(key));
                }
            }
        }
    }

    /// While the network is bad: now and then a partition, now and then a crash (at most f
    /// validators down at once), each crashed validator back after a while.
    fn weather(&mut self) {
        let n = self.nodes.len();
        for i in 0..n {
            if self.nodes[i].down_until.is_some_and(|t| t <= self.now_ms) {
                self.start(i);
            }
        }
        if !self.bad() {
            return;
        }
        if self.plan.partitions && self.cut.is_none() && self.rng.per_mille(30) {
            let sides = (0..n).map(|_| self.rng.below(2) == 0).collect();
            let until = self.now_ms + 500 + self.rng.below(4_000);
            self.cut = Some((sides, until));
        }
        if self.cut.as_ref().is_some_and(|(_, t)| *t <= self.now_ms) {
            self.heal_cut();
        }
        if self.plan.crashes && self.rng.per_mille(30) {
            let i = self.rng.below(n as u64) as usize;
            if self.may_crash(i) && self.nodes[i].engine.is_some() {
                self.crash_for_a_while(i);
            }
        }
    }

    /// Runs until virtual time `until_ms`, checking after every step.
    fn run_until(&mut self, until_ms: u64) -> Checked<()> {
        let mut next_weather = self.now_ms;
        let mut next_clients = self.now_ms;
        loop {
            let next_message = self.queue.first_key_value().map(|(&(at, _), _)| at);
            let next_wake = self
                .nodes
                .iter()
                .filter_map(|n| n.engine.as_ref().map(Engine::wake_at))
                .min();
            let next = [
                next_message,
                next_wake,
                Some(next_weather),
                Some(next_clients),
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(until_ms)
            .max(self.now_ms);
            if next > until_ms {
                self.now_ms = until_ms;
                return Ok(());
            }
            self.now_ms = next;
            if next_weather <= self.now_ms {
                next_weather = self.now_ms + 100;
                self.weather();
            }
            if next_clients <= self.now_ms {
                next_clients = self.now_ms + 500;
                self.clients_submit();
            }
            while let Some(entry) = self.queue.first_entry() {
                if entry.key().0 > self.now_ms {
                    break;
                }
                let (from, to, what) = entry.remove();
                self.deliver(from, to, what);
            }
            for i in 0..self.nodes.len() {
                let t = now(self.now_ms);
                let due = self.nodes[i]
                    .engine
                    .as_ref()
                    .is_some_and(|e| e.wake_at() <= self.now_ms);
                if due {
                    if let Some(engine) = self.nodes[i].engine.as_mut() {
                        engine.poll(t).expect("the engine polls");
                    }
                    self.drain(i);
                }
            }
            self.check()?;
        }
    }

    /// Whether every client's acknowledged entries are committed and every validator is up
    /// and at the same height.
    fn settled(&self) -> bool {
        let top = self.decided.len() as u64;
        self.clients
            .iter()
            .all(|c| c.waiting.values().all(|e| self.committed.contains(&e.id())))
            && self
                .nodes
                .iter()
                .all(|n| n.engine.is_some() && n.disk.head().height == top)
    }

    fn height(&self, i: usize) -> u64 {
        self.nodes[i].disk.head().height
    }
}

/// One seeded run: the bad weather, then healing; every acknowledged entry must be committed
/// everywhere within [`SETTLE_MS`] after it.
fn run(plan: Plan, seed: u64) -> Checked<Sim> {
    let mut sim = Sim::new(plan, seed);
    sim.run_until(plan.chaos_ms)?;
    sim.heal_cut();
    let deadline = plan.chaos_ms + SETTLE_MS;
    while !sim.settled() {
        if sim.now_ms >= deadline {
            let heights: Vec<u64> = (0..sim.nodes.len()).map(|i| sim.height(i)).collect();
            let waiting: usize = sim.clients.iter().map(|c| c.waiting.len()).sum();
            return Err(format!(
                "LIVENESS: {SETTLE_MS} ms after healing, heights {heights:?}, {waiting} entries not committed"
            ));
        }
        let step = sim.now_ms + 500;
        sim.run_until(step)?;
    }
    Ok(sim)
}

/// Runs a scenario over many seeds; reports every failure with the command that replays it.
fn seeds(name: &str, plan: impl Fn(usize) -> Plan + Sync, sizes: &[usize], default_seeds: u64) {
    let one: Option<u64> = std::env::var("TALLY_ENGINE_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok());
    let only_n: Option<usize> = std::env::var("TALLY_ENGINE_SIM_N")
        .ok()
        .and_then(|s| s.parse().ok());
    let count: u64 = std::env::var("TALLY_ENGINE_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default_seeds);
    // A long run can be made in pieces: seeds FROM..FROM+SEEDS.
    let from: u64 = std::env::var("TALLY_ENGINE_SIM_FROM")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut work: Vec<(usize, u64)> = Vec::new();
    for &n in sizes {
        if only_n.is_some_and(|m| m != n) {
            continue;
        }
        match one {
            Some(seed) => work.push((n, seed)),
            None => work.extend((from..from.saturating_add(count)).map(|seed| (n, seed))),
        }
    }
    // Runs are independent and each is deterministic from its seed, so they are shared out
    // among threads (one per core unless TALLY_ENGINE_SIM_THREADS says otherwise).
    let threads = std::env::var("TALLY_ENGINE_SIM_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, work.len().max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failed = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let at = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(&(n, seed)) = work.get(at) else {
                    return;
                };
                let planned = plan(n);
                let outcome = std::panic::catch_unwind(|| run(planned, seed));
                let why = match outcome {
                    Ok(Ok(_)) => continue,
                    Ok(Err(e)) => e,
                    Err(p) => p
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "panic".into()),
                };
                if let Ok(mut failed) = failed.lock() {
                    failed.push((n, seed, why));
                }
            });
        }
    });
    let mut failed = failed.into_inner().unwrap_or_else(|p| p.into_inner());
    failed.sort_by_key(|(n, seed, _)| (*n, *seed));
    let failures: Vec<String> = failed
        .into_iter()
        .map(|(n, seed, why)| format!(
            "{why}\n  replay: TALLY_ENGINE_SIM_N={n} TALLY_ENGINE_SIM_SEED={seed} cargo test --workspace --test engine {name} -- --nocapture"
        ))
        .collect();
    eprintln!("{name}: {} runs, {} failed", work.len(), failures.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_lone_validator_commits_what_it_admits() {
    let mut sim = Sim::new(Plan::calm(1), 1);
    let ids = sim.submit(0, (0..5).map(|s| entry(0, s)).collect());
    assert_eq!(ids.len(), 5);
    sim.run_until(2_000).expect("the checks hold");
    for id in &ids {
        assert!(
            sim.committed.contains(id),
            "entry {} not committed",
            id.short()
        );
    }
    // Nothing to send without a network.
    assert!(sim.queue.is_empty());
    sim.run_until(Plan::calm(1).chaos_ms + 2_000)
        .expect("the checks hold");
    assert!(sim.settled(), "an acknowledged entry is not committed");
    assert!(sim.acknowledged > 0);
}

#[test]
fn four_validators_agree_and_a_crashed_one_restarts_from_its_disk_and_catches_up() {
    let mut sim = Sim::new(Plan::calm(4), 7);
    sim.run_until(2_000).expect("the checks hold");
    let before = sim.height(0);
    sim.crash(3, u64::MAX);
    sim.run_until(6_000).expect("the checks hold");
    let missed = sim.height(0) - before;
    assert!(missed > 0, "no block was committed while node 3 was down");
    sim.start(3);
    sim.run_until(20_000).expect("the checks hold");
    assert!(
        sim.settled(),
        "not every acknowledged entry is committed everywhere"
    );
    assert!(sim.acknowledged > 0);
    // It fetched what it missed by block sync.
    let engine = sim.nodes[3].engine.as_ref().expect("running");
    assert!(engine.status().synced_blocks >= missed);
}

#[test]
fn a_validator_reset_mid_height_signs_nothing_until_sync_reaches_its_safety_record() {
    // Its chain is forgotten and its safety record kept, as `tally node reset` and the repair
    // of a damaged directory leave it, then it restarts at once. Another validator is down,
    // so the remaining two cannot decide without it: the height it was signing at is still
    // being decided when it comes back, and it must take its record up there. The run's
    // double-sign check watches every message it signs.
    let mut sim = Sim::new(Plan::calm(4), 11);
    sim.run_until(4_000).expect("the checks hold");
    sim.crash(2, u64::MAX);
    let record = |sim: &Sim| {
        let record = sim.nodes[3]
            .disk
            .safety_record()
            .expect("node 3 has signed");
        SafetyRecord::decode(&record).expect("decodes")
    };
    // The three go on until node 3 has signed at a height not decided yet; then it goes, and
    // the two left cannot decide that height without it.
    let mut t = 4_000;
    while record(&sim).height <= sim.height(0) || record(&sim).signed.is_empty() {
        t += 5;
        assert!(t < 9_000, "node 3 signed nothing at an undecided height");
        sim.run_until(t).expect("the checks hold");
    }
    let stuck_at = sim.height(0);
    let record = record(&sim);
    sim.crash(3, u64::MAX);
    sim.nodes[3].disk.reset_chain();
    assert_eq!(sim.nodes[3].disk.head().height, 0);
    sim.run_until(t + 1_000).expect("the checks hold");
    assert_eq!(sim.height(0), stuck_at, "two of four decided a height");
    sim.start(3);
    let engine = sim.nodes[3].engine.as_ref().expect("running");
    assert_eq!(engine.status().record_ahead, Some(record.height));
    sim.run_until(25_000).expect("the checks hold");
    let engine = sim.nodes[3].engine.as_ref().expect("running");
    assert_eq!(engine.status().record_ahead, None);
    assert!(engine.status().voting, "it never started voting again");
    assert!(
        sim.height(0) > stuck_at + 5,
        "the three did not go on: {} after {stuck_at}",
        sim.height(0)
    );
    assert_eq!(sim.height(3), sim.height(0));
    sim.start(2);
    sim.run_until(45_000).expect("the checks hold");
    assert!(
        sim.settled(),
        "not every acknowledged entry is committed everywhere"
    );
}

#[test]
fn a_validator_far_behind_votes_only_once_caught_up_and_signs_nothing_at_decided_heights() {
    // Small sync answers: catching up takes many round trips, longer than the wait before
    // a restarted validator starts voting on its own.
    let plan = Plan {
        sync_bytes_max: 2_000,
        max_delay: 300,
        chaos_ms: 80_000,
        ..Plan::calm(4)
    };
    let mut sim = Sim::new(plan, 5);
    sim.run_until(2_000).expect("the checks hold");
    let crashed_at = sim.height(3);
    sim.crash(3, u64::MAX);
    sim.run_until(50_000).expect("the checks hold");
    let decided = sim.height(0);
    assert!(decided > crashed_at + 40, "only {decided} heights");
    sim.start(3);
    // It counts as voting only once within a few heights of the others.
    let mut t = 50_000;
    while t < 120_000 {
        t += 100;
        sim.run_until(t).expect("the checks hold");
        let engine = sim.nodes[3].engine.as_ref().expect("running");
        let (mine, theirs) = (sim.height(3), sim.height(0));
        assert!(
            !engine.status().voting || mine + CAUGHT_UP_HEIGHTS >= theirs,
            "voting at height {mine} while the others are at {theirs}"
        );
    }
    assert_eq!(sim.height(3), sim.height(0));
    let engine = sim.nodes[3].engine.as_ref().expect("running");
    assert!(engine.status().voting, "it never started voting again");
    assert!(engine.status().synced_blocks >= decided - crashed_at);
    // At the height it was deciding when it crashed it may have signed; above it, up to
    // what the others had decided when it came back, it was away or catching up.
    let me = sim.nodes[3].key;
    let stale: Vec<_> = sim
        .signed
        .keys()
        .filter(|(who, h, _, _)| *who == me && *h > crashed_at + 1 && *h <= decided)
        .collect();
    assert!(stale.is_empty(), "it signed at decided heights: {stale:?}");
}

#[test]
fn a_calm_height_costs_each_validator_three_synced_writes() {
    // The proposer's records for its proposal and its prevote come out of one input and are
    // written once; then the precommit's record and the commit. The others: the prevote's
    // record, the precommit's, the commit.
    let mut sim = Sim::new(Plan::calm(4), 3);
    sim.run_until(8_000).expect("the checks hold");
    let height = sim.height(0);
    assert!(height >= 10, "only {height} heights");
    for i in 0..4 {
        assert_eq!(sim.height(i), height);
        let writes = sim.nodes[i].disk.synced_writes();
        assert!(
            writes <= 3 * height,
            "node {i}: {writes} synced writes for {height} heights"
        );
    }
}

#[test]
fn proposals_name_relayed_entries_by_id_and_a_validator_that_missed_the_relays_fetches_them() {
    // Entries admitted less than a relay's wait before a proposal are not relayed yet, and
    // go in full; the clients here submit in bursts, so more do than under steady load.
    let mut sim = Sim::new(Plan::calm(4), 5);
    sim.run_until(6_000).expect("the checks hold");
    let (by_id, in_full) = (sim.proposed_by_id, sim.proposed_in_full);
    eprintln!("proposals named {by_id} entries by id and carried {in_full} in full");
    assert!(
        by_id >= 3 * in_full && by_id > 50,
        "proposals named {by_id} entries by id and carried {in_full} in full"
    );
    // Every relay to node 3 is lost from now on: it builds the others' blocks from what it
    // fetches, and keeps voting for them.
    sim.relays_lost_to = Some(3);
    let fetched_before = status(&sim, 3).entries_fetched;
    let height = sim.height(3);
    sim.run_until(Plan::calm(4).chaos_ms + 5_000)
        .expect("the checks hold");
    assert!(
        sim.settled(),
        "not every acknowledged entry is committed everywhere"
    );
    let fetched = status(&sim, 3).entries_fetched - fetched_before;
    assert!(fetched >= 20, "node 3 fetched only {fetched} entries");
    assert!(
        sim.height(3) > height + 5,
        "node 3 went from height {height} to {}",
        sim.height(3)
    );
    // It prevoted for the blocks it rebuilt, not nil.
    let me = sim.nodes[3].key;
    let prevotes: Vec<&Signed> = sim
        .signed
        .iter()
        .filter(|((who, h, _, kind), _)| *who == me && *h > height && *kind == 1)
        .map(|(_, signed)| signed)
        .collect();
    let for_blocks = prevotes.iter().filter(|(block, _)| block.is_some()).count();
    assert!(
        for_blocks * 10 >= prevotes.len() * 9,
        "node 3 prevoted for {for_blocks} blocks of {}",
        prevotes.len()
    );
}

#[test]
fn a_proposal_forwarded_with_other_entries_is_judged_on_entries_that_hash_to_its_root() {
    // Node 2 forwards each proposal it hears with the entries swapped for others; where the
    // forgery arrives first, a validator that judged the block on it would prevote nil on
    // an honest proposal.
    let mut sim = Sim::new(Plan::calm(4), 13);
    sim.nodes[2].behaviour = Behaviour::Tamperer;
    sim.run_until(Plan::calm(4).chaos_ms + 5_000)
        .expect("the checks hold");
    assert!(
        sim.settled(),
        "not every acknowledged entry is committed everywhere"
    );
    for i in [0, 1, 3] {
        let me = sim.nodes[i].key;
        let nil = sim
            .signed
            .iter()
            .filter(|((who, _, _, kind), (block, _))| *who == me && *kind == 1 && block.is_none())
            .count();
        assert_eq!(nil, 0, "node {i} prevoted nil {nil} times");
    }
    assert!(
        sim.whole_fetches > 0,
        "no forgery arrived before the proposal it copied"
    );
}

#[test]
fn a_proposer_that_sends_one_validator_other_entries_cannot_stall_a_height() {
    // Node 0 sends node 1 its blocks' headers with other entries, the rest the true blocks,
    // and then withholds its precommits, pushes and sync answers. Had node 1 judged a block
    // on what it was sent, it would prevote nil on it for the whole height while nodes 2 and
    // 3 locked on it, and nothing would ever be decided again.
    let mut sim = Sim::new(Plan::calm(4), 5);
    sim.nodes[0].behaviour = Behaviour::Splitter;
    sim.run_until(Plan::calm(4).chaos_ms + 10_000)
        .expect("the checks hold");
    assert!(
        sim.settled(),
        "not every acknowledged entry is committed everywhere; heights {:?}",
        (0..4).map(|i| sim.height(i)).collect::<Vec<_>>()
    );
    assert!(sim.height(1) >= 10, "only {} heights", sim.height(1));
    assert!(sim.whole_fetches > 0, "node 1 never had to ask for a block");
}

#[test]
fn a_proposer_naming_entries_nobody_holds_stalls_no_height_past_its_timeout() {
    // Its rounds end at the propose timeout, as a silent proposer's do: the chain grows as
    // fast as with one.
    let run = |behaviour| {
        let mut sim = Sim::new(Plan::calm(4), 11);
        sim.nodes[0].behaviour = behaviour;
        sim.run_until(Plan::calm(4).chaos_ms + 5_000)
            .expect("the checks hold");
        assert!(
            sim.settled(),
            "{behaviour:?}: not every acknowledged entry is committed everywhere"
        );
        sim
    };
    let silent = run(Behaviour::Silent);
    let sim = run(Behaviour::UnknownIds);
    assert!(sim.height(1) >= 10, "only {} heights", sim.height(1));
    assert!(
        sim.height(1) + 1 >= silent.height(1),
        "{} heights, against {} with a silent proposer",
        sim.height(1),
        silent.height(1)
    );
    let proposers: HashSet<PublicKey> = sim.nodes[1]
        .disk
        .blocks()
        .iter()
        .map(|b| b.block.header.proposer)
        .collect();
    assert!(!proposers.contains(&sim.nodes[0].key));
    assert!(status(&sim, 1).entries_fetched > 0);
}

fn status(sim: &Sim, i: usize) -> tally_node::engine::ConsensusStatus {
    sim.nodes[i]
        .engine
        .as_ref()
        .expect("running")
        .status()
        .clone()
}

#[test]
fn seeded_calm_network_n4_n7() {
    seeds("seeded_calm", Plan::calm, &[4, 7], 10);
}

#[test]
fn seeded_lossy_partitioned_network_with_crashes_n4_n7() {
    seeds("seeded_lossy", Plan::stormy, &[4, 7], 40);
}

#[test]
fn seeded_byzantine_validators_on_a_lossy_network_n4_n7() {
    seeds("seeded_byzantine", Plan::byzantine, &[4, 7], 30);
}

#[test]
fn a_safety_record_skipped_before_a_vote_is_caught() {
    // The shell "forgets" to write the safety record but sends the votes anyway: after a
    // crash a validator signs again, differently, for a slot it had signed. Some seed within
    // the first few dozen must show it.
    let plan = |n| Plan {
        skip_persist: true,
        ..Plan::stormy(n)
    };
    let caught = (0..60u64).find_map(|seed| run(plan(4), seed).err().map(|why| (seed, why)));
    let Some((seed, why)) = caught else {
        panic!("no seed caught the skipped safety record");
    };
    eprintln!("seed {seed}: {why}");
    assert!(
        why.starts_with("DOUBLE SIGN"),
        "seed {seed} failed otherwise: {why}"
    );
}
