#!/usr/bin/env python3
"""An independent checker of tally's test vectors, written from docs/specification.md alone.

No Rust code of tally was read to write it: the canonical encoding, the domain-tagged hashes,
ed25519 with tally's key and signature rules, the Merkle trees, blocks, votes and certificates,
the genesis, tokens and commitments, inclusion proofs, receipts, the state tree and what each
entry writes to the state follow the specification. Blocks of the state are replayed from their
entries and outcomes (the outcomes are read, not derived from the rules of docs/entries.md).
For every file of the vectors directory it recomputes each value from the file's inputs and
compares, checks that tampered variants are refused where the specification defines a check,
and that the variants it allows (signatures in any order, white space after a receipt's lines)
are accepted. Every leaf of every file but its `about` text must be read by some check, so no
value goes unchecked.

Usage: python3 docs/vectors/check.py [VECTORS_DIR]   (default: the script's own directory)
Prints one line per file with the number of values checked, then a total, and each failure with
its file, JSON path, expected and computed value. Exit status 1 on any mismatch or any value it
could not compute, else 0. Python 3.10 or later, standard library only.
"""

import hashlib
import hmac
import json
import re
import sys
from functools import lru_cache
from pathlib import Path


def hx(text):
    return bytes.fromhex(text)


def sha512_int(data):
    return int.from_bytes(hashlib.sha512(data).digest(), "little")


# ---------------------------------------------------------------------- ed25519 (section 5) -----

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
D = -121665 * pow(121666, P - 2, P) % P
IDENTITY = (0, 1, 1, 0)  # extended coordinates (X, Y, Z, T), x = X/Z, y = Y/Z, xy = T/Z


def point_add(p, q):
    a, b = (p[1] - p[0]) * (q[1] - q[0]) % P, (p[1] + p[0]) * (q[1] + q[0]) % P
    c, d = 2 * p[3] * q[3] * D % P, 2 * p[2] * q[2] % P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def point_mul(scalar, p):
    result = IDENTITY
    while scalar:
        if scalar & 1:
            result = point_add(result, p)
        p, scalar = point_add(p, p), scalar >> 1
    return result


def is_identity(p):
    return p[0] % P == 0 and (p[1] - p[2]) % P == 0


def is_small_order(p):
    return is_identity(point_mul(8, p))


def point_decode(data):
    """The point 32 bytes encode canonically (RFC 8032 5.1.3, y below p), or None."""
    y = int.from_bytes(data, "little")
    sign, y = y >> 255, y & ((1 << 255) - 1)
    if len(data) != 32 or y >= P:
        return None
    x2 = (y * y - 1) * pow(D * y * y + 1, P - 2, P) % P
    x = pow(x2, (P + 3) // 8, P)
    if (x * x - x2) % P:
        x = x * pow(2, (P - 1) // 4, P) % P
    if (x * x - x2) % P or (x == 0 and sign):
        return None
    x = P - x if x & 1 != sign else x
    return (x, y, 1, x * y % P)


def point_encode(p):
    z_inv = pow(p[2], P - 2, P)
    x, y = p[0] * z_inv % P, p[1] * z_inv % P
    return (y | (x & 1) << 255).to_bytes(32, "little")


BASE = point_decode((4 * pow(5, P - 2, P) % P).to_bytes(32, "little"))


def secret_expand(secret):
    digest = hashlib.sha512(secret).digest()
    return int.from_bytes(digest[:32], "little") & ((1 << 254) - 8) | (1 << 254), digest[32:]


def public_key(secret):
    return point_encode(point_mul(secret_expand(secret)[0], BASE))


def sign(secret, message, key=None, r_offset=IDENTITY):
    """RFC 8032 signing. `key` and `r_offset` build the odd signatures of the rule's tests."""
    scalar, prefix = secret_expand(secret)
    key = key or public_key(secret)
    r = sha512_int(prefix + message) % L
    big_r = point_encode(point_add(point_mul(r, BASE), r_offset))
    k = sha512_int(big_r + key + message) % L
    return big_r + ((r + k * scalar) % L).to_bytes(32, "little")


@lru_cache(maxsize=None)
def verify(key, message, signature):
    """The signature rule: canonical A and R, neither of small order, S < L, cofactored check."""
    a, r = point_decode(key), point_decode(signature[:32])
    if a is None or r is None or is_small_order(a) or is_small_order(r):
        return False
    s = int.from_bytes(signature[32:], "little")
    if len(signature) != 64 or s >= L:
        return False
    k = sha512_int(signature[:32] + key + message) % L
    minus_ka_r = point_add(point_mul(k, a), r)
    minus_ka_r = (-minus_ka_r[0] % P, minus_ka_r[1], minus_ka_r[2], -minus_ka_r[3] % P)
    return is_small_order(point_add(point_mul(s, BASE), minus_ka_r))


@lru_cache(maxsize=None)
def key_rule(key):
    """A key may enter the state: the canonical encoding of a point of the prime-order subgroup."""
    a = point_decode(key)
    return a is not None and not is_identity(a) and is_identity(point_mul(L, a))


def torsion_points():
    """The points of small order: of order 8, 4, 2 and 1."""
    for y in range(2, 100):
        q = point_decode(y.to_bytes(32, "little"))
        t = q and point_mul(L, q)
        if t and not is_identity(point_mul(4, t)):
            return [point_mul(i, t) for i in (1, 2, 4, 0)]
    raise ValueError("no point of order 8")


# ------------------------------------------------------- the canonical encoding (section 2) -----

class DecodeError(Exception):
    pass


NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,39}")
TYPES = {"u8": ("int", 1), "u16": ("int", 2), "u32": ("int", 4), "u64": ("int", 8),
         "TimestampMs": ("int", 8), "bool": ("bool",), "Name": ("name",),
         "CivilDate": ("date",), "Signature": ("bytes", 64)}
TYPES.update((alias, ("bytes", 32)) for alias in
             "Hash EntryId SubjectToken DedupToken Commitment PublicKey".split())
T = TYPES


def split_top(text):
    """Split on the commas that are not inside <...> or (...)."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text + ","):
        depth += (ch in "<(") - (ch in ">)")
        if ch == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    return [p for p in parts if p]


def parse_type(text):
    """A type as the specification writes it: Vec<T>, Option<T>, (A, B), set of T, or a name."""
    for prefix, kind in (("Vec<", "vec"), ("Option<", "option"), ("set of ", "set")):
        if text.startswith(prefix):
            return (kind, parse_type(text[len(prefix):].removesuffix(">")))
    if text.startswith("("):
        return ("tuple", [parse_type(t) for t in split_top(text[1:-1])])
    return TYPES[text]


def define(name, fields):
    """A structure, from the specification's `field: Type, ...` notation."""
    TYPES[name] = ("struct", [(f.split(":")[0], parse_type(f.split(":", 1)[1].strip()))
                              for f in split_top(fields)])
    return TYPES[name]


def define_enum(name, variants):
    """An enumeration from [(variant, None | a type | "field: Type, ...")], in index order."""
    TYPES[name] = ("enum", [(v, f if f is None else define(f"{name}.{v}", f) if ":" in f
                             else parse_type(f)) for v, f in variants])
    return TYPES[name]


def define_units(name, names):
    return define_enum(name, [(n, None) for n in names.split()])


def enum_value(value):
    """(variant, fields) of an enumeration value in its JSON form."""
    return (value, None) if isinstance(value, str) else next(iter(value.items()))


def enc(t, v):
    """enc(v) for a value in its JSON form (hex strings for bytes, names for variants)."""
    kind = t[0]
    if kind == "int":
        return v.to_bytes(t[1], "little")
    if kind == "bool":
        return bytes([v])
    if kind == "bytes":
        assert len(hx(v)) == t[1], "wrong length"
        return hx(v)
    if kind == "name":
        return enc(T["u64"], len(v.encode())) + v.encode()
    if kind == "date":
        y, m, d = map(int, v.split("-"))
        return enc(T["u32"], y * 10000 + m * 100 + d)
    if kind == "vec":
        return enc(T["u64"], len(v)) + b"".join(enc(t[1], x) for x in v)
    if kind == "set":
        return enc(("vec", t[1]), sorted(v, key=[n for n, _ in t[1][1]].index))
    if kind == "option":
        return b"\0" if v is None else b"\1" + enc(t[1], v)
    if kind == "tuple":
        return b"".join(enc(s, x) for s, x in zip(t[1], v, strict=True))
    if kind == "struct":
        return b"".join(enc(s, v[n]) for n, s in t[1])
    name, inner = enum_value(v)
    index = [n for n, _ in t[1]].index(name)
    return enc(T["u32"], index) + (b"" if t[1][index][1] is None else enc(t[1][index][1], inner))


def civil_date(n):
    """The YYYY-MM-DD of a CivilDate's u32, or None if it is no date of 1800..2999."""
    y, m, d = n // 10000, n // 100 % 100, n % 100
    feb = 29 if y % 4 == 0 and (y % 100 or y % 400 == 0) else 28
    days = [31, feb, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
    ok = 1800 <= y <= 2999 and 1 <= m <= 12 and 1 <= d <= days[m - 1]
    return f"{y:04d}-{m:02d}-{d:02d}" if ok else None


class Reader:
    def __init__(self, data):
        self.data, self.pos = data, 0

    def take(self, n):
        if self.pos + n > len(self.data):
            raise DecodeError("truncated")
        self.pos += n
        return self.data[self.pos - n:self.pos]

    def read(self, t):
        kind = t[0]
        if kind == "int":
            return int.from_bytes(self.take(t[1]), "little")
        if kind in ("bool", "option"):
            tag = self.take(1)[0]
            if tag > 1:
                raise DecodeError(f"invalid {kind} tag")
            return bool(tag) if kind == "bool" else self.read(t[1]) if tag else None
        if kind == "bytes":
            return self.take(t[1]).hex()
        if kind == "name":
            text = self.take(self.read(T["u64"])).decode("utf-8", "replace")
            return self.check(text, NAME_RE.fullmatch(text), "Name")
        if kind == "date":
            date = civil_date(self.read(T["u32"]))
            return self.check(date, date, "CivilDate")
        if kind in ("vec", "set"):
            items = [self.read(t[1]) for _ in range(self.read(T["u64"]))]
            indices = [[n for n, _ in t[1][1]].index(x) for x in items] if kind == "set" else []
            return self.check(items, indices == sorted(set(indices)), "set order")
        if kind == "tuple":
            return [self.read(s) for s in t[1]]
        if kind == "struct":
            return {n: self.read(s) for n, s in t[1]}
        index = self.read(T["u32"])
        name, sub = t[1][self.check(index, index < len(t[1]), "variant index")]
        return name if sub is None else {name: self.read(sub)}

    @staticmethod
    def check(value, ok, what):
        if not ok:
            raise DecodeError(f"invalid {what}")
        return value


def decode(t, data):
    """Decode canonically: no trailing bytes, and the value must encode back to the same bytes."""
    reader = Reader(data)
    value = reader.read(t)
    if reader.pos != len(data) or enc(t, value) != data:
        raise DecodeError("trailing or non-canonical bytes")
    return value


def refuses(t, data):
    try:
        decode(t, data)
    except DecodeError:
        return True
    return False


# ------------------------------------------------------------- the types (sections 4 to 13) -----

ROLES = "admin issuer redeemer vendor registrar attester"
REASON_CODES = ("clerical_error fraud duplicate subject_request relocated court_order "
                "document_replaced deceased under_review policy_change")
REJECT_CODES = (
    "malformed wrong_chain bad_signature unknown_author retired_key missing_role stale_sequence "
    "future_sequence mempool_full duplicate_entry foreign_key key_in_use last_admin "
    "programme_exists unknown_programme foreign_agency outside_window over_budget bad_expiry "
    "duplicate_assistance unknown_voucher over_balance expired revoked not_expired "
    "duplicate_reference not_vendor over_settlement unknown_attestation wrong_status "
    "unknown_record already_recorded subject_dead already_married not_married title_exists "
    "unknown_title not_holder future_date")
REGISTRY_KINDS = "birth death marriage divorce title_registration title_transfer amendment"
define_units("Role", ROLES)
define_units("ReasonCode", REASON_CODES)
define_units("RejectCode", REJECT_CODES)
define_units("RegistryKind", REGISTRY_KINDS)
define("RegistryEvent", "record: Commitment, date: CivilDate, jurisdiction: Name")
define_enum("Payload", [
    ("grant_role", "key: PublicKey, role: Role"),
    ("revoke_role", "key: PublicKey, role: Role"),
    ("rotate_key", "new_key: PublicKey, new_key_proof: Signature"),
    ("create_programme", "programme: Name, unit: Name, budget: u64, valid_from: TimestampMs, "
                         "valid_until: TimestampMs, assistance: Name, period: Name"),
    ("issue_voucher", "programme: Name, subject: SubjectToken, amount: u64, "
                      "expires_at: TimestampMs, dedup: Option<DedupToken>"),
    ("redeem_voucher", "voucher: EntryId, amount: u64, vendor: PublicKey, reference: Name"),
    ("revoke_voucher", "voucher: EntryId, reason: ReasonCode"),
    ("expire_voucher", "voucher: EntryId"),
    ("settle_vendor", "programme: Name, vendor: PublicKey, amount: u64, reference: Name"),
    ("attest", "subject: SubjectToken, claim: Name, evidence: Commitment, "
               "expires_at: TimestampMs"),
    ("revoke_attestation", "attestation: EntryId, reason: ReasonCode"),
    ("suspend_attestation", "attestation: EntryId, reason: ReasonCode"),
    ("reinstate_attestation", "attestation: EntryId"),
    ("register_birth", "subject: SubjectToken, event: RegistryEvent"),
    ("register_death", "subject: SubjectToken, event: RegistryEvent"),
    ("register_marriage", "spouse_a: SubjectToken, spouse_b: SubjectToken, event: RegistryEvent"),
    ("register_divorce", "marriage: EntryId, event: RegistryEvent"),
    ("register_title", "parcel: Name, holder: SubjectToken, event: RegistryEvent"),
    ("transfer_title", "parcel: Name, from: SubjectToken, to: SubjectToken, event: RegistryEvent"),
    ("amend_record", "original: EntryId, reason: ReasonCode, event: RegistryEvent")])
PAYLOAD_KINDS = [name for name, _ in T["Payload"][1]]
define("EntryBody", "chain_id: Name, author: PublicKey, sequence: u64, payload: Payload")
define("SignedEntry", "body: EntryBody, signature: Signature")
define_enum("EntryOutcome", [("accepted", None), ("rejected", "RejectCode")])
define("BlockHeader", "chain_id: Name, height: u64, parent: Hash, timestamp: TimestampMs, "
                      "proposer: PublicKey, entry_count: u32, entries_root: Hash, "
                      "outcomes_root: Hash, state_root: Hash, validators_hash: Hash")
define("Block", "header: BlockHeader, entries: Vec<SignedEntry>")
define("CommitSignature", "validator: PublicKey, signature: Signature")
define("CommitCertificate", "height: u64, round: u32, block_hash: Hash, "
                            "signatures: Vec<CommitSignature>")
define_units("VoteKind", "prevote precommit")
define("AgencyGenesis", "id: Name, admins: Vec<PublicKey>")
define("ValidatorGenesis", "agency: Name, key: PublicKey")
define("Genesis", "chain_id: Name, genesis_time: TimestampMs, agencies: Vec<AgencyGenesis>, "
                  "validators: Vec<ValidatorGenesis>")
define("InclusionProof", "version: u8, entry: SignedEntry, index: u32, entry_path: Vec<Hash>, "
                         "outcome: EntryOutcome, outcome_path: Vec<Hash>, header: BlockHeader, "
                         "certificate: CommitCertificate")
define("Withheld", "subject: bool, dedup: bool")
define("Receipt", "version: u8, withheld: Withheld, proof: InclusionProof")
define("KeyRecord", "agency: Name, roles: set of Role, next_sequence: u64, "
                    "retired_for: Option<PublicKey>")
define("AgencyRecord", "admins: u32")
define("Programme", "agency: Name, unit: Name, budget: u64, valid_from: TimestampMs, "
                    "valid_until: TimestampMs, assistance: Name, period: Name, issued: u64, "
                    "redeemed: u64, revoked: u64, expired: u64, settled: u64")
define_units("VoucherStatus", "active revoked expired")
define("Voucher", "programme: Name, subject: SubjectToken, dedup: Option<DedupToken>, "
                  "amount: u64, redeemed: u64, expires_at: TimestampMs, status: VoucherStatus, "
                  "issued_height: u64")
define("VendorAccount", "redeemed: u64, settled: u64")
define_enum("AttestationStatus", [("active", None), ("suspended", "ReasonCode"),
                                  ("revoked", "ReasonCode")])
define("Attestation", "agency: Name, attester: PublicKey, subject: SubjectToken, claim: Name, "
                      "evidence: Commitment, expires_at: TimestampMs, status: AttestationStatus")
define("RegistryRecord", "kind: RegistryKind, subjects: Vec<SubjectToken>, "
                         "parcel: Option<Name>, event: RegistryEvent, agency: Name, height: u64, "
                         "amends: Option<(EntryId, ReasonCode)>, "
                         "latest_amendment: Option<EntryId>, amendment_count: u32, "
                         "dissolved_by: Option<EntryId>")
define("SubjectRecord", "birth: Option<EntryId>, death: Option<EntryId>, "
                        "marriage: Option<EntryId>")
define("Title", "holder: SubjectToken, registered_by: EntryId, latest: EntryId, transfers: u32")

# ------------------------------------------------------------------ domain tags (section 3) -----

DOMAINS = {name: f"tally/v1/{slug}\0".encode() for name, slug in [
    ("EntryId", "entry-id"), ("EntrySignature", "entry-signature"),
    ("BlockHeader", "block-header"), ("CommitVote", "commit-vote"),
    ("MerkleLeaf", "merkle-leaf"), ("MerkleNode", "merkle-node"), ("StateLeaf", "state-leaf"),
    ("StateKey", "state-key"), ("StateValue", "state-value"), ("StateNode", "state-node"),
    ("EntryOutcome", "entry-outcome"), ("Genesis", "genesis"),
    ("RecordCommitment", "record-commitment"), ("KeyRotation", "key-rotation"),
    ("ConsensusVote", "consensus-vote"), ("Proposal", "proposal"), ("Evidence", "evidence"),
    ("TestKey", "test-key")]}


# section 3: the public key `tally devnet --deterministic-keys` gives node-1/node.key
DEVNET_NODE_1 = "25e8061c6cd06476fa5077c31fcf2ac65a593eb9dde8ea7df273459ca999cbf8"


def H(domain, *parts):
    return hashlib.sha256(DOMAINS[domain] + b"".join(parts)).digest()


def tagged(domain, types, values):
    """A signed message: the domain's tag, then enc of the tuple of values."""
    return DOMAINS[domain] + enc(("tuple", [parse_type(t) for t in types.split()]), values)


# ---------------------------------------------------------------------- entries (section 4) -----

def entry_id(body):
    return H("EntryId", enc(T["EntryBody"], body))


def entry_message(body):
    return DOMAINS["EntrySignature"] + entry_id(body)


def rotation_message(chain_id, old_key):
    return tagged("KeyRotation", "Name PublicKey", [chain_id, old_key])


def entry_signature_valid(entry):
    body = entry["body"]
    return verify(hx(body["author"]), entry_message(body), hx(entry["signature"]))


# ----------------------------------------------------------------- Merkle trees (section 6) -----

def split_point(n):
    """The largest power of two strictly below n (n >= 2)."""
    return 1 << (n - 1).bit_length() - 1


def merkle_root(leaves):
    if len(leaves) <= 1:
        return leaves[0] if leaves else H("MerkleLeaf")
    k = split_point(len(leaves))
    return H("MerkleNode", merkle_root(leaves[:k]), merkle_root(leaves[k:]))


def audit_path(leaves, index):
    """RFC 9162 2.1.3.1: the sibling roots from the leaf up."""
    if len(leaves) <= 1:
        return []
    k = split_point(len(leaves))
    if index < k:
        return audit_path(leaves[:k], index) + [merkle_root(leaves[k:])]
    return audit_path(leaves[k:], index - k) + [merkle_root(leaves[:k])]


def path_root(leaf, index, size, path):
    """RFC 9162 2.1.3.2: the root an audit path leads to, or None if it is malformed."""
    if index >= size:
        return None
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            r = H("MerkleNode", p, r)
            while not fn & 1 and fn:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = H("MerkleNode", r, p)
        fn, sn = fn >> 1, sn >> 1
    return r if sn == 0 else None


def entry_leaf(entry):
    return H("MerkleLeaf", enc(T["SignedEntry"], entry))


def outcome_leaf(eid, outcome):
    return H("EntryOutcome", eid + enc(T["EntryOutcome"], outcome))


# ----------------------------------------- blocks, votes, certificates and genesis (7 to 9) -----

def block_hash(header):
    return H("BlockHeader", enc(T["BlockHeader"], header))


def commit_vote(chain_id, height, round_, block):
    return tagged("CommitVote", "Name u64 u32 Hash", [chain_id, height, round_, block])


def consensus_vote(chain_id, kind, height, round_, block):
    return tagged("ConsensusVote", "Name VoteKind u64 u32 Option<Hash>",
                  [chain_id, kind, height, round_, block])


def quorum(n):
    return n - (n - 1) // 3


def certificate_error(cert, header, validators):
    """Why the certificate does not prove the header (section 8), or None."""
    signers = [s["validator"] for s in cert["signatures"]]
    message = commit_vote(header["chain_id"], cert["height"], cert["round"], cert["block_hash"])
    for error, failed in [
            ("not for this block", lambda: (cert["height"], cert["block_hash"]) !=
             (header["height"], block_hash(header).hex())),
            ("a signer outside the validator set", lambda: not set(signers) <= set(validators)),
            ("a signer twice", lambda: len(set(signers)) != len(signers)),
            ("fewer than a quorum", lambda: len(signers) < quorum(len(validators))),
            ("a signature does not verify", lambda: not all(
                verify(hx(s["validator"]), message, hx(s["signature"]))
                for s in cert["signatures"]))]:
        if failed():
            return error
    return None


def genesis_hash(genesis):
    return H("Genesis", enc(T["Genesis"], genesis))


def validator_keys(genesis):
    return [v["key"] for v in genesis["validators"]]


def validators_hash(genesis):
    keys = sorted(validator_keys(genesis), key=hx)
    return H("Genesis", b"validators", enc(parse_type("Vec<PublicKey>"), keys))


def genesis_error(genesis):
    """Why the genesis is not valid (section 9), or None."""
    agencies = [a["id"] for a in genesis["agencies"]]
    keys = [k for a in genesis["agencies"] for k in a["admins"]] + validator_keys(genesis)
    for error, failed in [
            ("agencies", not 1 <= len(agencies) <= 64 or len(set(agencies)) != len(agencies)),
            ("admins", any(not 1 <= len(a["admins"]) <= 16 for a in genesis["agencies"])),
            ("validators", not 1 <= len(genesis["validators"]) <= 64),
            ("a validator of no agency", any(v["agency"] not in agencies
                                             for v in genesis["validators"])),
            ("a key twice", len(set(keys)) != len(keys)),
            ("a key not of prime order", not all(key_rule(hx(k)) for k in keys))]:
        if failed:
            return error
    return None


# ------------------------------------------------------ tokens and commitments (section 10) -----

def subject_token(agency_secret, reference):
    return hmac.new(agency_secret, b"tally/v1/subject-token\0" + reference, "sha256").digest()


def dedup_token(consortium_secret, reference):
    return hmac.new(consortium_secret, b"tally/v1/dedup-token\0" + reference, "sha256").digest()


def record_commitment(salt, record):
    return H("RecordCommitment", enc(T["u64"], len(salt)), salt, record)


# ------------------------------------------------------------ inclusion proofs (section 11) -----

PROOF_BYTES_MAX = 64 * 1024


def check_proof(data, genesis):
    """The name of the first check a proof's bytes fail, or None if the proof is valid."""
    try:
        if len(data) > PROOF_BYTES_MAX:
            raise DecodeError("too long")
        proof = decode(T["InclusionProof"], data)
    except DecodeError:
        return "format"
    return check_proof_value(proof, genesis)


def check_proof_value(proof, genesis):
    entry, header, index = proof["entry"], proof["header"], proof["index"]
    size = header["entry_count"]
    checks = [
        ("version", lambda: proof["version"] == 1),
        ("chain", lambda: header["chain_id"] == entry["body"]["chain_id"] == genesis["chain_id"]),
        ("validator_set", lambda: header["validators_hash"] == validators_hash(genesis).hex()),
        ("index", lambda: index < size),
        ("entry_path", lambda: path_root(entry_leaf(entry), index, size, list(
            map(hx, proof["entry_path"]))) == hx(header["entries_root"])),
        ("outcome_path", lambda: path_root(
            outcome_leaf(entry_id(entry["body"]), proof["outcome"]), index, size,
            list(map(hx, proof["outcome_path"]))) == hx(header["outcomes_root"])),
        ("certificate", lambda: not certificate_error(proof["certificate"], header,
                                                      validator_keys(genesis))),
        ("entry_signature", lambda: entry_signature_valid(entry))]
    return next((name for name, passes in checks if not passes()), None)


# -------------------------------------------------------------------- receipts (section 12) -----

BASE45 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"
ZERO_TOKEN = "00" * 32


def base45_encode(data):
    """RFC 9285: each two bytes as three digits, a last single byte as two; least first."""
    out = ""
    for i in range(0, len(data), 2):
        n = int.from_bytes(data[i:i + 2], "big")
        out += "".join(BASE45[n // 45**j % 45] for j in range(3 if i + 1 < len(data) else 2))
    return out


def base45_decode(text):
    chunks = [text[i:i + 3] for i in range(0, len(text), 3)]
    if any(c not in BASE45 for c in text) or (chunks and len(chunks[-1]) == 1):
        raise DecodeError("base45")
    out = b""
    for chunk in chunks:
        n = sum(BASE45.index(c) * 45**j for j, c in enumerate(chunk))
        if n >= 256 ** (len(chunk) - 1):
            raise DecodeError("base45")
        out += n.to_bytes(len(chunk) - 1, "big")
    return out


def receipt_time(ms):
    """T(t): the UTC minute as YYYY-MM-DD HH:MM UTC, the year held within 1800..2999."""
    days, seconds = divmod(ms // 1000, 86400)
    era, doe = divmod(days + 719468, 146097)  # civil from days (proleptic Gregorian)
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    month = mp + 3 if mp < 10 else mp - 9
    year = min(max(yoe + era * 400 + (month <= 2), 1800), 2999)
    day = doy - (153 * mp + 2) // 5 + 1
    return f"{year:04d}-{month:02d}-{day:02d} {seconds // 3600:02d}:{seconds // 60 % 60:02d} UTC"


def summary_lines(proof):
    header, body, outcome = proof["header"], proof["entry"]["body"], proof["outcome"]
    kind, f = enum_value(body["payload"])
    result = "ACCEPTED" if outcome == "accepted" else "REJECTED: " + outcome["rejected"]
    first = (f"tally receipt: chain {header['chain_id']}, block {header['height']}, "
             f"{receipt_time(header['timestamp'])}")
    if kind == "issue_voucher":
        middle = [f"voucher issued, {result}",
                  f"amount {f['amount']} (minor units) in programme {f['programme']}",
                  f"expires {receipt_time(f['expires_at'])}",
                  "beneficiary: withheld; bring your token to check"]
    else:
        middle = [f"voucher redeemed, {result}",
                  f"amount {f['amount']} (minor units), reference {f['reference']}",
                  f"voucher {f['voucher']}", f"vendor {f['vendor']}"]
    return [first] + middle + [f"signed by {body['author']} (sequence {body['sequence']})"]


def withhold(entry):
    """The entry with its person tokens zeroed, and the Withheld flags."""
    entry = json.loads(json.dumps(entry))
    kind, fields = enum_value(entry["body"]["payload"])
    withheld = {"subject": kind == "issue_voucher",
                "dedup": kind == "issue_voucher" and fields["dedup"] is not None}
    fields.update((t, ZERO_TOKEN) for t in withheld if withheld[t])
    return entry, withheld


def receipt_text(receipt_bytes, proof):
    lines = summary_lines(proof) + ["TALLY1:" + base45_encode(receipt_bytes)]
    return "".join(line + "\n" for line in lines)


# Unicode's White_Space, removed from the end of each line of a receipt's text
WHITE_SPACE = ("\t\n\v\f\r \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200b))) +
               "\u2028\u2029\u202f\u205f\u3000")


def check_receipt(data, genesis, tokens):
    """The name of the first check a receipt's text (bytes) fails, or None if it is valid."""
    try:
        lines = [line.rstrip(WHITE_SPACE) for line in data.decode("utf-8").split("\n")]
        at = next((i for i, line in enumerate(lines) if line.startswith("TALLY1:")), None)
        if at is None or any(lines[at + 1:]):
            raise DecodeError("no payload line, or more after it")
        receipt = decode(T["Receipt"], base45_decode(lines[at][len("TALLY1:"):]))
    except (UnicodeDecodeError, DecodeError):
        return "format"
    printed = [line for line in lines[:at] if line]
    proof = receipt["proof"]
    kind, fields = enum_value(proof["entry"]["body"]["payload"])
    withheld = [t for t in ("subject", "dedup") if receipt["withheld"][t]]
    if receipt["version"] != 1:
        return "version"
    if kind not in ("issue_voucher", "redeem_voucher"):
        return "kind"
    if receipt["withheld"] != withhold(proof["entry"])[1] or any(
            fields[t] != ZERO_TOKEN for t in withheld):
        return "withheld"
    if any(t not in tokens for t in withheld):
        return "token_needed"
    fields.update((t, tokens[t]) for t in withheld)
    failed = check_proof_value(proof, genesis)
    if not failed and printed and printed != summary_lines(proof):
        return "summary"
    return failed


# ------------------------------------------------------ the state and its root (section 13) -----

# table byte: (the table's name in state.json, the key's parts after the table byte, value type)
TABLES = {
    0x01: ("key", "key", T["KeyRecord"]), 0x02: ("agency", "name", T["AgencyRecord"]),
    0x03: ("programme", "name", T["Programme"]), 0x04: ("voucher", "key", T["Voucher"]),
    0x05: ("redemption_ref", "key name", T["EntryId"]),
    0x06: ("dedup", "name name key", T["EntryId"]),
    0x07: ("vendor_account", "name key", T["VendorAccount"]),
    0x08: ("settlement_ref", "name key name", T["EntryId"]),
    0x09: ("attestation", "key", T["Attestation"]),
    0x0a: ("registry_record", "key", T["RegistryRecord"]),
    0x0b: ("subject", "key", T["SubjectRecord"]), 0x0c: ("title", "name", T["Title"]),
    0x0d: ("validators", "", parse_type("Vec<PublicKey>"))}


def state_key(table, *parts):
    """The table byte, then each part: 32 raw bytes, or a Name's ASCII bytes and one 00."""
    return bytes([table]) + b"".join(p if isinstance(p, bytes) else p.encode() + b"\0"
                                     for p in parts)


def key_layout_ok(key):
    """Whether a key's parts are those its table byte names."""
    rest = key[1:]
    for part in TABLES[key[0]][1].split():
        if part == "key":
            ok, rest = len(rest) >= 32, rest[32:]
        else:
            name, sep, rest = rest.partition(b"\0")
            ok = sep and NAME_RE.fullmatch(name.decode("latin-1"))
        if not ok:
            return False
    return not rest


def state_path(key):
    return H("StateKey", key)


def state_leaf(key, value):
    return H("StateLeaf", state_path(key), H("StateValue", value))


def bit(path, d):
    return (path[d // 8] >> (7 - d % 8)) & 1


def subtree(items, depth, branches):
    """(hash, shape) of the records [(path, leaf, index)] whose paths share `depth` bits."""
    if len(items) <= 1:
        return (items[0][1], f"leaf{items[0][2]}") if items else (bytes(32), "empty")
    left = subtree([i for i in items if not bit(i[0], depth)], depth + 1, branches)
    right = subtree([i for i in items if bit(i[0], depth)], depth + 1, branches)
    node = H("StateNode", left[0], right[0])
    branches.append({"depth": depth, "left": left[0].hex(), "right": right[0].hex(),
                     "hash": node.hex()})
    return node, f"branch({left[1]}, {right[1]})"


def state_root(records, branches=None):
    """(root, shape) of {key: value}; the branches are appended children first."""
    items = [(state_path(k), state_leaf(k, v), i) for i, (k, v) in enumerate(records.items())]
    return subtree(items, 0, [] if branches is None else branches)


def genesis_state(genesis):
    records = {state_key(0x0d): enc(TABLES[0x0d][2], validator_keys(genesis))}
    for agency in genesis["agencies"]:
        records[state_key(0x02, agency["id"])] = enc(T["AgencyRecord"],
                                                     {"admins": len(agency["admins"])})
        for admin in agency["admins"]:
            records[state_key(0x01, hx(admin))] = enc(T["KeyRecord"],
                                                      new_key(agency["id"], ["admin"]))
    return dict(sorted(records.items()))


class StateWriter:
    """The state while a block executes: decoded reads, encoded writes, the keys written."""

    def __init__(self, records):
        self.records, self.touched = dict(records), set()

    def get(self, key, default=None):
        value = self.records.get(key)
        return default if value is None else decode(TABLES[key[0]][2], value)

    def put(self, key, value):
        """Write a record, or delete it if the value is None."""
        self.records[key] = None if value is None else enc(TABLES[key[0]][2], value)
        self.touched.add(key)

    def update(self, key, default=None, **fields):
        """The record (or the default if there is none) with the fields set."""
        self.put(key, {**self.get(key, default), **fields})

    def add(self, key, default=None, **amounts):
        """The record (or the default if there is none) with the amounts added to its fields."""
        record = self.get(key, default)
        self.put(key, {**record, **{f: record[f] + n for f, n in amounts.items()}})


# What each entry writes (section 13): effect_<kind>(state, payload fields, context), where the
# context holds the author `A`, its agency `ag`, the entry's `id` (hex) and the block's height `h`.

def new_key(agency, roles):
    """The KeyRecord of a key when it is registered."""
    return {"agency": agency, "roles": roles, "next_sequence": 0, "retired_for": None}


def effect_grant_role(st, f, ctx):
    key = state_key(0x01, hx(f["key"]))
    record = st.get(key, new_key(ctx["ag"], []))
    held = f["role"] in record["roles"]
    st.put(key, {**record, "roles": record["roles"] + ([] if held else [f["role"]])})
    if f["role"] == "admin" and not held:
        st.add(state_key(0x02, ctx["ag"]), admins=1)


def effect_revoke_role(st, f, ctx):
    key = state_key(0x01, hx(f["key"]))
    st.update(key, roles=[r for r in st.get(key)["roles"] if r != f["role"]])
    if f["role"] == "admin":
        st.add(state_key(0x02, ctx["ag"]), admins=-1)


def effect_rotate_key(st, f, ctx):
    author = state_key(0x01, hx(ctx["A"]))
    st.put(state_key(0x01, hx(f["new_key"])), new_key(ctx["ag"], st.get(author)["roles"]))
    st.update(author, retired_for=f["new_key"])


def effect_create_programme(st, f, ctx):
    totals = dict.fromkeys(["issued", "redeemed", "revoked", "expired", "settled"], 0)
    st.put(state_key(0x03, f["programme"]), {"agency": ctx["ag"], **f, **totals})


def effect_issue_voucher(st, f, ctx):
    p = st.get(state_key(0x03, f["programme"]))
    st.put(state_key(0x04, hx(ctx["id"])), {**f, "redeemed": 0, "status": "active",
                                            "issued_height": ctx["h"]})
    st.add(state_key(0x03, f["programme"]), issued=f["amount"])
    if f["dedup"] is not None:
        st.put(state_key(0x06, p["assistance"], p["period"], hx(f["dedup"])), ctx["id"])


def effect_redeem_voucher(st, f, ctx):
    q = st.get(state_key(0x04, hx(f["voucher"])))["programme"]
    st.add(state_key(0x04, hx(f["voucher"])), redeemed=f["amount"])
    st.add(state_key(0x03, q), redeemed=f["amount"])
    st.add(state_key(0x07, q, hx(f["vendor"])), {"redeemed": 0, "settled": 0},
           redeemed=f["amount"])
    st.put(state_key(0x05, hx(f["voucher"]), f["reference"]), ctx["id"])


def close_voucher(st, f, status):
    """Revoke or expire a voucher: its status, its remaining value r added to the programme's
    total of that name. The voucher as it was."""
    key = state_key(0x04, hx(f["voucher"]))
    v = st.get(key)
    st.update(key, status=status)
    st.add(state_key(0x03, v["programme"]), **{status: v["amount"] - v["redeemed"]})
    return v


def effect_revoke_voucher(st, f, ctx):
    v = close_voucher(st, f, "revoked")
    p = st.get(state_key(0x03, v["programme"]))
    if f["reason"] == "clerical_error" and v["redeemed"] == 0 and v["dedup"] is not None:
        st.put(state_key(0x06, p["assistance"], p["period"], hx(v["dedup"])), None)


def effect_expire_voucher(st, f, ctx):
    close_voucher(st, f, "expired")


def effect_settle_vendor(st, f, ctx):
    st.add(state_key(0x07, f["programme"], hx(f["vendor"])), settled=f["amount"])
    st.add(state_key(0x03, f["programme"]), settled=f["amount"])
    st.put(state_key(0x08, f["programme"], hx(f["vendor"]), f["reference"]), ctx["id"])


def effect_attest(st, f, ctx):
    st.put(state_key(0x09, hx(ctx["id"])), {"agency": ctx["ag"], "attester": ctx["A"], **f,
                                            "status": "active"})


def effect_suspend_attestation(st, f, ctx):
    st.update(state_key(0x09, hx(f["attestation"])), status={"suspended": f["reason"]})


def effect_reinstate_attestation(st, f, ctx):
    st.update(state_key(0x09, hx(f["attestation"])), status="active")


def effect_revoke_attestation(st, f, ctx):
    st.update(state_key(0x09, hx(f["attestation"])), status={"revoked": f["reason"]})


NO_EVENTS = {"birth": None, "death": None, "marriage": None}


def S(st, x):
    """The civil status of subject token x, none recorded if it has no record."""
    return st.get(state_key(0x0b, hx(x)), NO_EVENTS)


def set_S(st, x, **fields):
    st.update(state_key(0x0b, hx(x)), NO_EVENTS, **fields)


def put_R(st, f, ctx, kind, subjects, parcel=None, amends=None):
    """Write the registry record of the entry: R(kind, subjects, parcel, amends)."""
    st.put(state_key(0x0a, hx(ctx["id"])), {
        "kind": kind, "subjects": subjects, "parcel": parcel, "event": f["event"],
        "agency": ctx["ag"], "height": ctx["h"], "amends": amends, "latest_amendment": None,
        "amendment_count": 0, "dissolved_by": None})


def effect_register_birth(st, f, ctx):
    set_S(st, f["subject"], birth=ctx["id"])
    put_R(st, f, ctx, "birth", [f["subject"]])


def effect_register_death(st, f, ctx):
    m = S(st, f["subject"])["marriage"]
    if m is not None:
        for x in st.get(state_key(0x0a, hx(m)))["subjects"]:
            if x != f["subject"]:
                set_S(st, x, marriage=None)
        st.update(state_key(0x0a, hx(m)), dissolved_by=ctx["id"])
    set_S(st, f["subject"], death=ctx["id"], marriage=None)
    put_R(st, f, ctx, "death", [f["subject"]])


def effect_register_marriage(st, f, ctx):
    for x in (f["spouse_a"], f["spouse_b"]):
        set_S(st, x, marriage=ctx["id"])
    put_R(st, f, ctx, "marriage", [f["spouse_a"], f["spouse_b"]])


def effect_register_divorce(st, f, ctx):
    m = st.get(state_key(0x0a, hx(f["marriage"])))
    for x in m["subjects"]:
        set_S(st, x, marriage=None)
    st.update(state_key(0x0a, hx(f["marriage"])), dissolved_by=ctx["id"])
    put_R(st, f, ctx, "divorce", m["subjects"])


def effect_register_title(st, f, ctx):
    st.put(state_key(0x0c, f["parcel"]), {"holder": f["holder"], "registered_by": ctx["id"],
                                          "latest": ctx["id"], "transfers": 0})
    put_R(st, f, ctx, "title_registration", [f["holder"]], f["parcel"])


def effect_transfer_title(st, f, ctx):
    st.add(state_key(0x0c, f["parcel"]), transfers=1)
    st.update(state_key(0x0c, f["parcel"]), holder=f["to"], latest=ctx["id"])
    put_R(st, f, ctx, "title_transfer", [f["from"], f["to"]], f["parcel"])


def effect_amend_record(st, f, ctx):
    o = st.get(state_key(0x0a, hx(f["original"])))
    st.add(state_key(0x0a, hx(f["original"])), amendment_count=1)
    st.update(state_key(0x0a, hx(f["original"])), latest_amendment=ctx["id"])
    put_R(st, f, ctx, "amendment", o["subjects"], o["parcel"], [f["original"], f["reason"]])


EFFECTS = {name.removeprefix("effect_"): fn for name, fn in globals().items()
           if name.startswith("effect_")}


def execute_block(records, entries, outcomes, height):
    """The block's change: {key: value last written, or None if deleted}, in key order."""
    st = StateWriter(records)
    for entry, outcome in zip(entries, outcomes):
        body = entry["body"]
        author = state_key(0x01, hx(body["author"]))
        kind, fields = enum_value(body["payload"])
        if outcome == "accepted":  # step 1: the writes of its kind
            EFFECTS[kind](st, json.loads(json.dumps(fields)), {
                "A": body["author"], "ag": st.get(author)["agency"], "h": height,
                "id": entry_id(body).hex()})
        st.update(author, next_sequence=body["sequence"] + 1)  # step 2, accepted or rejected
    return {k: st.records[k] for k in sorted(st.touched)}


# ----------------------------------------------------------------------- checking the files -----

def test_secret(seed):
    """A test key's secret (keys.json): the seed as 8 bytes LE, "tallytst", 16 zero bytes."""
    return seed.to_bytes(8, "little") + b"tallytst" + bytes(16)


def test_key(seed):
    return public_key(test_secret(seed)).hex()


def flip(data, index, mask=0x01):
    return data[:index] + bytes([data[index] ^ mask]) + data[index + 1:]


def leaf_paths(value, path):
    if isinstance(value, dict):
        items = value.items()
    else:
        items = enumerate(value) if isinstance(value, list) else ()
    paths = [p for k, v in items for p in leaf_paths(v, child_path(path, k))]
    return paths or [path]


def child_path(path, key):
    return f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}"


class Doc:
    """A JSON value that remembers which of its leaves were read."""

    def __init__(self, value, path, seen):
        self.value, self.path, self.seen = value, path, seen

    def __getitem__(self, key):
        value, path = self.value[key], child_path(self.path, key)
        if isinstance(value, (dict, list)) and value:
            return Doc(value, path, self.seen)
        self.seen.add(path)
        return value

    def __iter__(self):
        return (self[i] for i in range(len(self.value)))

    def __len__(self):
        return len(self.value)

    def plain(self):
        """The value itself, all of it counted as read."""
        self.seen.update(leaf_paths(self.value, self.path))
        return self.value


def plain(value):
    return value.plain() if isinstance(value, Doc) else value


class Checker:
    """Counts the values checked in one file and collects its failures."""

    def __init__(self, file):
        self.file, self.count, self.failures = file, 0, []

    def eq(self, node, key, computed):
        """Compare node[key] with the computed value (bytes as hex)."""
        expected = plain(node[key])
        computed = computed.hex() if isinstance(computed, bytes) else computed
        self.count += 1
        if expected != computed:
            self.fail(child_path(node.path, key), f"expected {expected!r}, computed {computed!r}")

    def ok(self, where, what, holds):
        self.count += 1
        if not holds:
            self.fail(where, f"does not hold: {what}")

    def all_ok(self, where, checks):
        for what, holds in checks:
            self.ok(where, what, holds)

    def fail(self, where, message):
        self.failures.append(f"{self.file}: {where}: {message}")


def check_keys(c, doc, ctx):
    for k in doc["keys"]:
        k["role"]  # a description: read, not computed
        c.eq(k, "secret_key", test_secret(k["seed"]))
        c.eq(k, "public_key", public_key(hx(k["secret_key"])))
        c.ok(k.path, "the key rule accepts the key", key_rule(hx(k["public_key"])))
    c.all_ok("$.keys[0] (rules of section 5)", rule_tests(test_secret(doc["keys"][0]["seed"])))


def rule_tests(secret):
    """(what, whether it holds) for the key rule and the signature rule."""
    key, m, (scalar, _) = public_key(secret), b"tally/check.py", secret_expand(secret)
    good, torsion, identity = sign(secret, m), torsion_points(), point_encode(IDENTITY)
    mixed = point_encode(point_add(point_decode(key), torsion[0]))
    s, k = int.from_bytes(good[32:], "little"), sha512_int(identity + key + m) % L
    return [(f"the key rule refuses a point of order {order}", not key_rule(point_encode(t)))
            for order, t in zip((8, 4, 2, 1), torsion)] + [
        ("the key rule refuses y >= p", not key_rule((P + 1).to_bytes(32, "little"))),
        ("the key rule refuses x = 0 with the sign bit", not key_rule((1 | 1 << 255).to_bytes(
            32, "little"))),
        ("the key rule refuses a small-order component", not key_rule(mixed)),
        ("a signature verifies", verify(key, m, good)),
        ("another message is refused", not verify(key, m + b".", good)),
        ("a flipped bit of R is refused", not verify(key, m, flip(good, 3))),
        ("a flipped bit of S is refused", not verify(key, m, flip(good, 40))),
        ("S + L is refused", not verify(key, m, good[:32] + (s + L).to_bytes(32, "little"))),
        ("a key with a small-order component signs validly",
         verify(mixed, m, sign(secret, m, key=mixed))),
        ("an R with a small-order component is valid",
         verify(key, m, sign(secret, m, r_offset=torsion[0]))),
        ("a small-order R is refused though the equation holds",
         not verify(key, m, identity + (k * scalar % L).to_bytes(32, "little"))),
        ("a small-order key is refused though the equation holds",
         not verify(identity, m, point_encode(BASE) + (1).to_bytes(32, "little")))]


DECODER_REFUSES = [("bool", "02"), ("Option<DedupToken>", "02" + "00" * 32), ("u32", "0403020100"),
                   ("Name", "0000000000000000"), ("Name", "01000000000000002d"),
                   ("CivilDate", "3ee13401"), ("Role", "06000000"),
                   ("Vec<PublicKey>", "0100000000000000")]


def check_primitives(c, doc, ctx):
    for v in doc["values"]:
        t, value = parse_type(v["type"]), plain(v["value"])
        c.eq(v, "bytes", enc(t, value))
        c.ok(v.path, "the bytes decode to the value", decode(t, hx(v["bytes"])) == value)
    for name, data in DECODER_REFUSES:
        c.ok("$.values", f"the decoder refuses {name} {data}", refuses(parse_type(name), hx(data)))


def check_domains(c, doc, ctx):
    c.ok("$.domains", "the domains of section 3, in order", [d["name"] for d in doc["domains"]]
         == list(DOMAINS))
    for d in doc["domains"]:
        tag = DOMAINS.get(d["name"], b"?")
        c.eq(d, "tag", tag.decode())
        c.eq(d, "tag_hex", tag)
        c.eq(d, "tag_length", len(tag))
        c.eq(d, "hash_of_empty", hashlib.sha256(tag).digest())
        c.eq(d, "hash_of_abc", hashlib.sha256(tag + b"abc").digest())
    tags = DOMAINS.values()
    c.ok("$.domains", "no tag is a prefix of another",
         not any(a != b and b.startswith(a) for a in tags for b in tags))
    c.ok("$.domains", "TestKey derives the first devnet validator's key as section 3 says",
         public_key(H("TestKey", b"devnet/node-1/node.key")).hex() == DEVNET_NODE_1)


REQUIRED_ROLES = {"admin": "grant_role revoke_role create_programme settle_vendor",
                  "issuer": "issue_voucher revoke_voucher expire_voucher",
                  "redeemer": "redeem_voucher", "none": "rotate_key",
                  "attester": "attest revoke_attestation suspend_attestation "
                              "reinstate_attestation"}


def check_enums(c, doc, ctx):
    for i, p in enumerate(doc["payload_kinds"]):
        c.eq(p, "index", i)
        c.eq(p, "kind", PAYLOAD_KINDS[i])
        c.eq(p, "required_role", next((role for role, kinds in REQUIRED_ROLES.items()
                                       if PAYLOAD_KINDS[i] in kinds.split()), "registrar"))
    for field, names in [("payload_kinds", " ".join(PAYLOAD_KINDS)), ("roles", ROLES),
                         ("reason_codes", REASON_CODES), ("registry_kinds", REGISTRY_KINDS),
                         ("entry_outcomes", "accepted rejected")]:
        c.ok(f"$.{field}", "every variant", len(doc[field]) == len(names.split()))
        for i, item in enumerate(doc[field] if field != "payload_kinds" else []):
            c.eq(item, "index", i)
            c.eq(item, "name", names.split()[i])
    for item, fields in zip(doc["entry_outcomes"], ["none", "RejectCode"]):
        c.eq(item, "fields", fields)


def check_reject_codes(c, doc, ctx):
    c.eq(doc, "accepted_bytes", enc(T["EntryOutcome"], "accepted"))
    c.ok("$.codes", "every code", len(doc["codes"]) == len(REJECT_CODES.split()))
    for i, code in enumerate(doc["codes"]):
        c.eq(code, "index", i)
        c.eq(code, "name", REJECT_CODES.split()[i])
        c.eq(code, "outcome_bytes", enc(T["EntryOutcome"], {"rejected": code["name"]}))


def check_tokens(c, doc, ctx):
    for field in ("agency_secret", "consortium_secret", "salt"):
        c.eq(doc, field + "_hex", doc[field].encode())
        c.ok(f"$.{field}", "at least 16 bytes", len(doc[field]) >= 16)
    agency, consortium, salt = (doc.value[f].encode() for f in
                                ("agency_secret", "consortium_secret", "salt"))
    for t in doc["subject_tokens"]:
        c.eq(t, "token", subject_token(agency, t["reference"].encode()))
    for t in doc["dedup_tokens"]:
        c.eq(t, "token", dedup_token(consortium, t["reference"].encode()))
    for t in doc["commitments"]:
        c.eq(t, "commitment", record_commitment(salt, t["record"].encode()))


def check_entries(c, doc, ctx):
    secret = test_secret(doc["author_seed"])
    c.eq(doc, "author", public_key(secret))
    for i, e in enumerate(doc["entries"]):
        body = e["body"].plain()
        c.ok(f"{e.path}.body", "chain, author and sequence as the file says",
             (body["chain_id"], body["author"], body["sequence"]) == (doc["chain_id"],
                                                                      doc["author"], i))
        check_entry(c, e, body, secret)
    framed = b"".join(len(hx(e)).to_bytes(4, "little") + hx(e) for e in
                      (doc.value["entries"][i]["signed_entry_bytes"]
                       for i in doc["batch"]["entries"].plain()))
    c.eq(doc["batch"], "bytes", framed)


def check_entry(c, e, body, secret):
    kind, fields = enum_value(body["payload"])
    message, entry = entry_message(body), {"body": body, "signature": e["signature"]}
    c.eq(e, "kind", kind)
    c.eq(e, "variant_index", PAYLOAD_KINDS.index(kind))
    c.eq(e, "payload_bytes", enc(T["Payload"], body["payload"]))
    c.eq(e, "body_bytes", enc(T["EntryBody"], body))
    c.eq(e, "entry_id", entry_id(body))
    c.eq(e, "signed_message", message)
    c.eq(e, "signature", sign(secret, message))
    c.eq(e, "signed_entry_bytes", enc(T["SignedEntry"], entry))
    c.eq(e, "entries_root_leaf", entry_leaf(entry))
    c.all_ok(e.path, [
        ("the body bytes decode to the body", decode(T["EntryBody"], hx(e["body_bytes"])) == body),
        ("the signed entry decodes, within 2048 bytes (ENTRY_BYTES_MAX)",
         decode(T["SignedEntry"], hx(e["signed_entry_bytes"])) == entry
         and len(hx(e["signed_entry_bytes"])) <= 2048),
        ("the signature verifies", entry_signature_valid(entry)),
        ("a flipped bit of the signature is refused",
         not verify(hx(body["author"]), message, flip(hx(entry["signature"]), 50)))] + [
        (f"{f} passes the key rule", key_rule(hx(fields[f]))) for f in ("key", "new_key")
        if f in fields])
    if kind == "rotate_key":
        kr, old = e["key_rotation"], body["author"]
        new_secret = test_secret(kr["new_key_seed"])
        message = rotation_message(body["chain_id"], old)
        c.eq(kr, "message", enc(parse_type("(Name, PublicKey)"), [body["chain_id"], old]))
        c.eq(kr, "signed_message", message)
        proof = hx(fields["new_key_proof"])
        c.all_ok(kr.path, [
            ("new_key is the key of new_key_seed",
             fields["new_key"] == test_key(kr["new_key_seed"])),
            ("new_key_proof is the new key's signature", proof == sign(new_secret, message)),
            ("new_key_proof verifies", verify(hx(fields["new_key"]), message, proof)),
            ("it is refused as the old key's", not verify(hx(old), message, proof))])


def check_genesis(c, doc, ctx):
    genesis = doc["genesis"].plain()
    keys = sorted(validator_keys(genesis), key=hx)
    c.eq(doc, "genesis_bytes", enc(T["Genesis"], genesis))
    c.eq(doc, "genesis_hash", genesis_hash(genesis))
    c.eq(doc, "validator_keys_sorted", keys)
    c.eq(doc, "sorted_validators_bytes", enc(parse_type("Vec<PublicKey>"), keys))
    c.eq(doc, "validators_hash", validators_hash(genesis))
    c.eq(doc, "quorum", quorum(len(keys)))
    c.all_ok("$.genesis", [
        ("the bytes decode to the genesis",
         decode(T["Genesis"], hx(doc["genesis_bytes"])) == genesis),
        ("the genesis is valid", genesis_error(genesis) is None)] + [
        (f"the quorum of {n} is {q} (section 8)", quorum(n) == q)
        for n, q in {1: 1, 2: 2, 3: 3, 4: 3, 5: 4, 6: 5, 7: 5, 10: 7}.items()] + [
        (f"refused: {what}", genesis_error(bad) is not None)
        for what, bad in genesis_tampers(genesis)])


def genesis_tampers(genesis):
    def variant(change):
        g = json.loads(json.dumps(genesis))
        change(g)
        return g
    admin = genesis["agencies"][0]["admins"][0]
    small = point_encode(torsion_points()[0]).hex()
    mixed = point_encode(point_add(point_decode(hx(admin)), torsion_points()[0])).hex()
    return [
        ("a validator key that is an admin key", variant(lambda g: g["validators"][0].update(
            key=admin))),
        ("an agency twice", variant(lambda g: g["agencies"].append(g["agencies"][0]))),
        ("a validator of no agency", variant(lambda g: g["validators"][0].update(agency="x"))),
        ("no validator", variant(lambda g: g["validators"].clear())),
        ("an agency with no admin", variant(lambda g: g["agencies"][0]["admins"].clear())),
        ("a small-order admin key", variant(lambda g: g["agencies"][0].update(admins=[small]))),
        ("an admin key with a small-order component",
         variant(lambda g: g["agencies"][0].update(admins=[mixed])))]


def sample_block(ctx):
    """Block 1 of blocks.json: its signed entries, outcomes, header and certificate."""
    blocks, entries = ctx["blocks.json"], ctx["entries.json"]["entries"]
    signed = [{"body": entries[b["entries_json_index"]]["body"],
               "signature": entries[b["entries_json_index"]]["signature"]}
              for b in blocks["entries"]]
    cert = blocks["certificate"]
    certificate = {**{f: cert[f] for f in ("height", "round", "block_hash")}, "signatures": [
        {"validator": s["validator"], "signature": s["signature"]} for s in cert["signatures"]]}
    return signed, [o["outcome"] for o in blocks["outcomes"]], blocks["header"], certificate


def check_blocks(c, doc, ctx):
    genesis, entries = ctx["genesis.json"]["genesis"], ctx["entries.json"]["entries"]
    signed, leaves, outcome_leaves = [], [], []
    for b in doc["entries"]:
        source = entries[b["entries_json_index"]]
        signed.append({"body": source["body"], "signature": source["signature"]})
        leaves.append(entry_leaf(signed[-1]))
        c.eq(b, "entry_id", entry_id(source["body"]))
        c.eq(b, "entries_root_leaf", leaves[-1])
    for e, o in zip(signed, doc["outcomes"]):
        outcome_leaves.append(outcome_leaf(entry_id(e["body"]), plain(o["outcome"])))
        c.eq(o, "entry_id", entry_id(e["body"]))
        c.eq(o, "outcome_bytes", enc(T["EntryOutcome"], plain(o["outcome"])))
        c.eq(o, "outcomes_root_leaf", outcome_leaves[-1])
    c.eq(doc, "entries_root", merkle_root(leaves))
    c.eq(doc, "empty_entries_root", merkle_root([]))
    c.eq(doc, "outcomes_root", merkle_root(outcome_leaves))
    for field, value in [("chain_id", genesis["chain_id"]), ("height", 1),
                         ("parent", genesis_hash(genesis)), ("entry_count", len(signed)),
                         ("entries_root", merkle_root(leaves)),
                         ("outcomes_root", merkle_root(outcome_leaves)),
                         ("validators_hash", validators_hash(genesis))]:
        c.eq(doc["header"], field, value)
    header = doc["header"].plain()
    c.all_ok("$.header", [
        ("the proposer is a validator", header["proposer"] in validator_keys(genesis)),
        ("the timestamp is not before the genesis",
         header["timestamp"] >= genesis["genesis_time"]),
        ("the chain is the file's", doc["chain_id"] == header["chain_id"])])
    c.eq(doc, "header_bytes", enc(T["BlockHeader"], header))
    c.eq(doc, "block_hash", block_hash(header))
    c.eq(doc, "block_bytes", enc(T["Block"], {"header": header, "entries": signed}))
    check_certificate(c, doc["certificate"], header, genesis)


def check_certificate(c, cd, header, genesis):
    bh = block_hash(header).hex()
    message = commit_vote(header["chain_id"], header["height"], cd["round"], bh)
    c.eq(cd, "height", header["height"])
    c.eq(cd, "block_hash", bh)
    c.eq(cd, "vote_message", message[len(DOMAINS["CommitVote"]):])
    c.eq(cd, "vote_signed_message", message)
    signatures = []
    for s in cd["signatures"]:
        signatures.append({"validator": s["validator"], "signature": s["signature"]})
        c.eq(s, "validator", test_key(s["validator_seed"]))
        c.eq(s, "signature", sign(test_secret(s["validator_seed"]), message))
        c.eq(s, "commit_signature_bytes", enc(T["CommitSignature"], signatures[-1]))
    cert = {"height": cd["height"], "round": cd["round"], "block_hash": cd["block_hash"],
            "signatures": signatures}
    c.eq(cd, "certificate_bytes", enc(T["CommitCertificate"], cert))
    seeds = [s["validator_seed"] for s in cd["signatures"]]
    keys = [hx(s["validator"]) for s in signatures]
    c.ok(cd.path, "the signatures are by seed, not by key bytes (section 8)",
         seeds == sorted(seeds) and keys != sorted(keys))
    validators = validator_keys(genesis)
    c.all_ok(cd.path, [
        (f"it proves the header with the signatures {what}",
         certificate_error({**cert, "signatures": sigs}, header, validators) is None)
        for what, sigs in certificate_orders(cert["signatures"], message)] + [
        (f"refused: {what}", certificate_error({**cert, **change}, header, validators))
        for what, change in certificate_tampers(cert, header, message)])


def other_signature(sigs, message):
    """The commit signature of a validator (test-key seeds 11 to 14) that is not among sigs."""
    seed = next(s for s in range(11, 15) if test_key(s) not in [x["validator"] for x in sigs])
    return {"validator": test_key(seed), "signature": sign(test_secret(seed), message).hex()}


def certificate_orders(sigs, message):
    """Signature lists that prove the block as well (section 8): in any order, beyond a quorum."""
    every = sigs + [other_signature(sigs, message)]
    return [("as listed", sigs), ("reversed", sigs[::-1]),
            ("in ascending order of key bytes", sorted(sigs, key=lambda s: hx(s["validator"]))),
            ("of every validator, as a node assembles them",
             sorted(every, key=lambda s: hx(s["validator"])))]


def certificate_tampers(cert, header, message):
    sigs = cert["signatures"]
    outsider = {"validator": test_key(1), "signature": sign(test_secret(1), message).hex()}
    flipped = {**sigs[0], "signature": flip(hx(sigs[0]["signature"]), 33).hex()}
    other = other_signature(sigs, message)
    bad_other = {**other, "signature": flip(hx(other["signature"]), 33).hex()}
    precommit = consensus_vote(header["chain_id"], "precommit", cert["height"], cert["round"],
                               cert["block_hash"])
    as_vote = {**sigs[0], "signature": sign(test_secret(11), precommit).hex()}
    return [("fewer than a quorum", {"signatures": sigs[:-1]}),
            ("a signer twice", {"signatures": sigs[:-1] + sigs[:1]}),
            ("a signer outside the validator set", {"signatures": sigs[:-1] + [outsider]}),
            ("an outsider beside a quorum", {"signatures": sigs + [outsider]}),
            ("a flipped signature bit", {"signatures": [flipped] + sigs[1:]}),
            ("a bad signature beside a quorum of good ones", {"signatures": sigs + [bad_other]}),
            ("a signer twice beside a quorum", {"signatures": sigs + sigs[:1]}),
            ("a nil-or-block precommit in place of a commit vote",
             {"signatures": [as_vote] + sigs[1:]}),
            ("another round", {"round": cert["round"] + 1}),
            ("another height", {"height": cert["height"] + 1})]


def make_proof(signed, outcomes, header, certificate, index, entry=None):
    leaves = [entry_leaf(e) for e in signed]
    outcome_leaves = [outcome_leaf(entry_id(e["body"]), o) for e, o in zip(signed, outcomes)]
    return {"version": 1, "entry": entry or signed[index], "index": index,
            "entry_path": [h.hex() for h in audit_path(leaves, index)],
            "outcome": outcomes[index],
            "outcome_path": [h.hex() for h in audit_path(outcome_leaves, index)],
            "header": header, "certificate": certificate}


def check_proofs(c, doc, ctx):
    genesis, block = ctx["genesis.json"]["genesis"], sample_block(ctx)
    c.ok("$.paths", "one per entry of the block", len(doc["paths"]) == len(block[0]))
    for p in doc["paths"]:
        proof = make_proof(*block, p["index"])
        c.eq(p, "entry_path", proof["entry_path"])
        c.eq(p, "outcome_path", proof["outcome_path"])
        c.ok(p.path, "the paths lead to the header's roots", not check_proof_value(proof, genesis))
    c.eq(doc, "proof_version", 1)
    data = enc(T["InclusionProof"], make_proof(*block, doc["proof_index"]))
    c.eq(doc, "proof_bytes", data)
    c.all_ok("$.proof_bytes", [
        ("the proof checks", check_proof(data, genesis) is None),
        ("every flipped low or high bit is refused", all(check_proof(flip(data, i, m), genesis)
                                                         for i in range(len(data))
                                                         for m in (1, 128)))] + [
        (f"a tampered proof fails [{name}]", check_proof(bad, g) == name)
        for name, bad, g in proof_tampers(decode(T["InclusionProof"], data), block, genesis)])
    tokens = {t: next(x["token"] for x in ctx["tokens.json"][t + "_tokens"]
                      if x["reference"] == "case-001") for t in ("subject", "dedup")}
    for r in doc["receipts"]:
        check_receipt_vector(c, r, block, genesis, tokens)


def proof_tampers(proof, block, genesis):
    """(the check that must fail, proof bytes, genesis) for tampered proofs or genesis files."""
    def variant(**change):
        return enc(T["InclusionProof"], {**proof, **change})
    signed, outcomes, header, certificate = block
    good, size = enc(T["InclusionProof"], proof), header["entry_count"]
    rejected = next(i for i, o in enumerate(outcomes) if o != "accepted")
    return [
        ("format", good + b"\0", genesis), ("format", good[:-1], genesis),
        ("format", good + bytes(PROOF_BYTES_MAX), genesis),
        ("version", variant(version=2), genesis),
        ("chain", good, {**genesis, "chain_id": "another-chain"}),
        ("validator_set", good, {**genesis, "validators": genesis["validators"][:3]}),
        ("index", variant(index=size), genesis),
        ("entry_path", variant(index=(proof["index"] + 1) % size), genesis),
        ("outcome_path", enc(T["InclusionProof"], {
            **make_proof(*block, rejected), "outcome": "accepted"}), genesis),
        ("certificate", variant(certificate={
            **certificate, "signatures": certificate["signatures"][:2]}), genesis),
        ("entry_signature", badly_signed_proof(header, genesis), genesis)]


def badly_signed_proof(header, genesis):
    """A proof, certified by three validators, of an entry whose signature does not verify."""
    body = {"chain_id": genesis["chain_id"], "author": test_key(1), "sequence": 0,
            "payload": {"expire_voucher": {"voucher": "11" * 32}}}
    entry = {"body": body, "signature": flip(sign(test_secret(1), entry_message(body)), 40).hex()}
    outcome = {"rejected": "unknown_voucher"}
    block = {**header, "height": 2, "parent": block_hash(header).hex(), "entry_count": 1,
             "entries_root": entry_leaf(entry).hex(),
             "outcomes_root": outcome_leaf(entry_id(body), outcome).hex()}
    message = commit_vote(block["chain_id"], 2, 0, block_hash(block).hex())
    certificate = {"height": 2, "round": 0, "block_hash": block_hash(block).hex(), "signatures": [
        {"validator": test_key(s), "signature": sign(test_secret(s), message).hex()}
        for s in (11, 12, 13)]}
    return enc(T["InclusionProof"], make_proof([entry], [outcome], block, certificate, 0))


def check_receipt_vector(c, r, block, genesis, tokens):
    index = r["block_index"]
    entry, withheld = withhold(block[0][index])
    proof = make_proof(*block, index, entry)
    data = enc(T["Receipt"], {"version": 1, "withheld": withheld, "proof": proof})
    c.eq(r, "kind", enum_value(entry["body"]["payload"])[0])
    c.eq(r, "withheld", withheld)
    c.eq(r, "receipt_bytes", data)
    c.eq(r, "payload_line", "TALLY1:" + base45_encode(data))
    c.eq(r, "text", receipt_text(data, proof))
    text, payload = r["text"], r["payload_line"]
    needed = {t: tokens[t] for t in withheld if withheld[t]}
    lines = text.split("\n")
    lines[1] = lines[1].replace("ACCEPTED", "REJECTED: expired")
    changed = "\n".join(lines)
    other_kind = enc(T["Receipt"], {"version": 1, "withheld": {"subject": False, "dedup": False},
                                    "proof": make_proof(*block, 0)})
    variants = [
        (None, "as printed", text), (None, "a bare payload line", payload),
        (None, "with trailing spaces and blank lines", text.replace("\n", "  \n\n", 2)),
        (None, "with CR LF line ends and other trailing white space",
         text.replace("\n", "\u3000\xa0\t\r\n")),
        ("summary", "with another outcome", changed),
        ("summary", "with a line indented", " " + text),
        ("summary", "with U+001F (not white space) ending a line", text.replace("\n", "\x1f\n", 1)),
        ("format", "with a line after the payload line", text + "more\n"),
        ("format", "with U+001C after the payload line", text + "\x1c\n"),
        ("format", "with a character outside base45", text.replace("TALLY1:", "TALLY1:!")),
        ("kind", "of another kind of entry", "TALLY1:" + base45_encode(other_kind))]
    c.all_ok(r.path, [
        ("the payload decodes back", base45_decode(payload[7:]) == data),
        ("every flipped low or high bit is refused", all(
            check_receipt(b"TALLY1:" + base45_encode(flip(data, i, m)).encode(), genesis, needed)
            for i in range(len(data)) for m in (1, 128))),
        ("text that is not UTF-8 gives [format]",
         check_receipt(b"\xff" + text.encode(), genesis, needed) == "format")] + [
        (f"the text {what} gives [{name or 'ok'}]",
         check_receipt(bad.encode(), genesis, needed) == name) for name, what, bad in variants] + [
        (f"without the right tokens it gives [{name}]",
         check_receipt(text.encode(), genesis, bad) == name)
        for name, bad in ([("token_needed", {}), ("entry_path", {**needed, "subject": "ab" * 32})]
                          if needed else [])])


def check_state(c, doc, ctx):
    genesis = ctx["genesis.json"]["genesis"]
    c.eq(doc, "chain_id", genesis["chain_id"])
    c.eq(doc, "genesis_hash", genesis_hash(genesis))
    c.eq(doc, "empty_state_root", state_root({})[0])
    records = genesis_state(genesis)
    check_records(c, doc["genesis"]["records"], records)
    c.eq(doc["genesis"], "state_root", state_root(records)[0])
    parent = genesis_hash(genesis)
    for b in doc["blocks"]:
        records, parent = check_state_block(c, b, records, parent, genesis)
    c.ok("$.blocks", "every payload kind is accepted at least once", set(PAYLOAD_KINDS) == {
        e["kind"] for b in doc.value["blocks"] for e in b["entries"] if e["outcome"] == "accepted"})
    for ex in doc["tree_examples"]:
        records = {hx(r["key"]): hx(r["value"]) for r in ex.value["records"]}
        check_records(c, ex["records"], records, tables=False)
        branches = []
        root, shape = state_root(records, branches)
        c.eq(ex, "shape", shape)
        c.eq(ex, "branches", branches)
        c.eq(ex, "root", root)
        c.ok(ex.path, "the root does not depend on the records' order",
             state_root(dict(reversed(records.items())))[0] == root)


def check_state_block(c, b, records, parent, genesis):
    """Replay a block of state.json: (the state after it, its block hash)."""
    signed, outcomes = [], []
    for e in b["entries"]:
        entry = decode(T["SignedEntry"], hx(e["signed_entry_bytes"]))
        body, secret = entry["body"], test_secret(e["author_seed"])
        c.eq(e, "kind", enum_value(body["payload"])[0])
        c.eq(e, "entry_id", entry_id(body))
        c.ok(e.path, "author, chain, sequence and signature", (
            body["author"], body["chain_id"], body["sequence"], entry["signature"]) == (
            public_key(secret).hex(), genesis["chain_id"], e["sequence"],
            sign(secret, entry_message(body)).hex()) and entry_signature_valid(entry))
        signed.append(entry)
        outcomes.append("accepted" if e["outcome"] == "accepted"
                        else {"rejected": e["outcome"].removeprefix("rejected: ")})
    written = execute_block(records, signed, outcomes, b["height"])
    check_records(c, b["changes"], written)
    records = {k: v for k, v in {**records, **written}.items() if v is not None}
    root = state_root(records)[0]
    c.eq(b, "state_root", root)
    header = {"chain_id": genesis["chain_id"], "height": b["height"], "parent": parent.hex(),
              "timestamp": b["timestamp"], "proposer": test_key(b["proposer_seed"]),
              "entry_count": len(signed),
              "entries_root": merkle_root([entry_leaf(e) for e in signed]).hex(),
              "outcomes_root": merkle_root([outcome_leaf(entry_id(e["body"]), o)
                                            for e, o in zip(signed, outcomes)]).hex(),
              "state_root": root.hex(), "validators_hash": validators_hash(genesis).hex()}
    c.eq(b, "block_hash", block_hash(header))
    return records, block_hash(header)


def check_records(c, docs, records, tables=True):
    """Compare records of state.json with {key: value, or None for a deletion}, in key order."""
    c.ok(docs.path, "the records, in key order", [r["key"] for r in docs.value] ==
         [k.hex() for k in records])
    for r, (key, value) in zip(docs, records.items()):
        c.eq(r, "key", key)
        c.eq(r, "value", value)
        c.eq(r, "path", state_path(key))
        if "path_first_bits" in r.value:
            c.eq(r, "path_first_bits", "".join(str(bit(state_path(key), d)) for d in range(8)))
        if tables:
            c.eq(r, "table", TABLES[key[0]][0])
            c.ok(r.path, "the key has its table's layout", key_layout_ok(key))
        hashes = {"value_hash", "leaf"} & set(r.value)
        c.ok(r.path, "a deletion lists no value_hash or leaf, any other record both",
             len(hashes) == (0 if value is None else 2))
        if value is not None and hashes:
            c.eq(r, "value_hash", H("StateValue", value))
            c.eq(r, "leaf", state_leaf(key, value))
            c.ok(r.path, "the value decodes canonically as its table's record",
                 not tables or not refuses(TABLES[key[0]][2], value))


CHECKS = {"keys.json": check_keys, "primitives.json": check_primitives,
          "domains.json": check_domains, "enums.json": check_enums,
          "reject_codes.json": check_reject_codes, "tokens.json": check_tokens,
          "entries.json": check_entries, "genesis.json": check_genesis,
          "blocks.json": check_blocks, "proofs.json": check_proofs, "state.json": check_state}


def check_file(name, data, ctx):
    c, seen = Checker(name), set()
    try:
        CHECKS[name](c, Doc(data, "$", seen), ctx)
    except Exception as error:  # a value the checker could not compute is a failure
        c.fail("$", f"could not compute: {type(error).__name__}: {error}")
    c.failures += [f"{name}: {p}: not checked" for p in leaf_paths(data, "$")
                   if p not in seen and not p.endswith(".about")]
    return c


def main(argv):
    directory = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent
    ctx = {p.name: json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))}
    total, failures = 0, []
    for name in sorted(set(ctx) | set(CHECKS)):
        if name not in ctx or name not in CHECKS:
            failures.append(f"{name}: {'missing' if name not in ctx else 'no check for it'}")
            print(failures[-1])
            continue
        c = check_file(name, ctx[name], ctx)
        total, failures = total + c.count, failures + c.failures
        print(f"{name}: {c.count} values checked" +
              "".join(f"\n  {failure}" for failure in c.failures))
    print(f"total: {total} values checked in {len(ctx)} files, {len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
