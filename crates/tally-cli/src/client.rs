//! A small blocking client for a node's HTTP API.

use anyhow::{anyhow, Context};
use serde_json::Value;
use std::io::Read;
use std::time::{Duration, Instant};
use tally_types::{EntryId, InclusionProof, Name, PublicKey, SignedEntry};

/// The largest answer read from a node: a raw block of 100,000 entries (the most
/// `block.entries_max` allows) of up to 2 KiB each, hex-encoded, fits.
pub const RESPONSE_BYTES_MAX: u64 = 512 * 1024 * 1024;

/// A node's API.
pub struct NodeClient {
    base: String,
    agent: ureq::Agent,
}

/// What a node said about a submitted entry.
pub enum Submitted {
    /// In the mempool.
    Pending(EntryId),
    /// Refused at the door with a code and a reason.
    Refused { code: String, detail: String },
}

/// The final word on an entry.
pub enum Settled {
    /// In a block, accepted.
    Committed(Value),
    /// Rejected (in a block as evidence, or before ordering).
    Rejected(Value),
    /// Still pending when the wait ended.
    StillPending,
}

impl NodeClient {
    /// A client for the node at `base` (e.g. `http://127.0.0.1:7100`).
    pub fn new(base: &str) -> Self {
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(15))
            .build();
        Self {
            base: base.trim_end_matches('/').to_string(),
            agent,
        }
    }

    /// GETs a path; `Ok(None)` for 404. An answer over [`RESPONSE_BYTES_MAX`] is refused, so a
    /// node the user does not trust cannot exhaust the machine's memory.
    pub fn get(&self, path: &str) -> anyhow::Result<Option<Value>> {
        let url = format!("{}{path}", self.base);
        match self.agent.get(&url).call() {
            Ok(r) => {
                let mut body = Vec::new();
                r.into_reader()
                    .take(RESPONSE_BYTES_MAX + 1)
                    .read_to_end(&mut body)
                    .with_context(|| format!("reading {url}"))?;
                if body.len() as u64 > RESPONSE_BYTES_MAX {
                    return Err(anyhow!(
                        "{url}: the answer is larger than {RESPONSE_BYTES_MAX} bytes"
                    ));
                }
                Ok(Some(
                    serde_json::from_slice(&body).with_context(|| format!("reading {url}"))?,
                ))
            }
            Err(ureq::Error::Status(404, _)) => Ok(None),
            Err(ureq::Error::Status(code, r)) => {
                Err(anyhow!("{url}: HTTP {code}: {}", error_text(r)))
            }
            Err(e) => Err(anyhow!("cannot reach node at {}: {e}", self.base)),
        }
    }

    /// Asks the node to write a backup of its data directory (`POST /v1/admin/backup`); the
    /// answer names where it went. A backup of a whole chain takes a while: no timeout.
    pub fn backup(&self) -> anyhow::Result<Value> {
        let url = format!("{}/v1/admin/backup", self.base);
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(15))
            .build();
        match agent.post(&url).call() {
            Ok(r) => Ok(r.into_json().with_context(|| format!("reading {url}"))?),
            Err(ureq::Error::Status(code, r)) => {
                Err(anyhow!("{url}: HTTP {code}: {}", error_text(r)))
            }
            Err(e) => Err(anyhow!("cannot reach node at {}: {e}", self.base)),
        }
    }

    /// The node's chain id and the most entries it takes in one `POST /v1/entries/batch`,
    /// from one `GET /v1/status`: what an outbox sync needs before it sends.
    pub fn chain_and_batch_max(&self) -> anyhow::Result<(Name, usize)> {
        let s = self
            .get("/v1/status")?
            .ok_or_else(|| anyhow!("node has no /v1/status"))?;
        let id = s["chain_id"]
            .as_str()
            .ok_or_else(|| anyhow!("status without chain_id"))?;
        let max = s["limits"]["batch_entries_max"]
            .as_u64()
            .ok_or_else(|| anyhow!("status without limits.batch_entries_max"))?;
        Ok((Name::new(id)?, usize::try_from(max).unwrap_or(usize::MAX)))
    }

    /// What signing as `key` needs, in one round trip: the chain id, and the key's next free
    /// sequence number (counting its pending entries), `None` when the key is not registered.
    pub fn signing_context(&self, key: &PublicKey) -> anyhow::Result<(Name, Option<u64>)> {
        let path = format!("/v1/keys/{key}/signing");
        let v = self
            .get(&path)?
            .ok_or_else(|| anyhow!("node has no {path} (is it older than this CLI?)"))?;
        let id = v["chain_id"]
            .as_str()
            .ok_or_else(|| anyhow!("{path}: answer without chain_id"))?;
        let next = match &v["next_free_sequence"] {
            Value::Null => None,
            n => Some(
                n.as_u64()
                    .ok_or_else(|| anyhow!("{path}: next_free_sequence is not a number"))?,
            ),
        };
        Ok((Name::new(id)?, next))
    }

    /// Submits a signed entry (canonical bytes).
    pub fn submit(&self, entry: &SignedEntry) -> anyhow::Result<Submitted> {
        self.submit_encoded(entry.id(), &entry.to_bytes())
    }

    /// Submits an entry already encoded (a load generator encodes ahead of time).
    pub fn submit_encoded(&self, id: EntryId, bytes: &[u8]) -> anyhow::Result<Submitted> {
        let (url, res) = self.post_canonical("/v1/entries", bytes);
        match res {
            Ok(_) => Ok(Submitted::Pending(id)),
            Err(ureq::Error::Status(code, r)) if code != 500 => {
                let v: Value = r.into_json().unwrap_or(Value::Null);
                Ok(refused(&v["error"]))
            }
            Err(ureq::Error::Status(code, r)) => {
                Err(anyhow!("{url}: HTTP {code}: {}", error_text(r)))
            }
            Err(e) => Err(anyhow!("cannot reach node at {}: {e}", self.base)),
        }
    }

    /// POSTs canonical bytes (one entry, or framed entries) to `path`; returns the URL too,
    /// for messages.
    fn post_canonical(
        &self,
        path: &str,
        body: &[u8],
    ) -> (String, Result<ureq::Response, ureq::Error>) {
        let url = format!("{}{path}", self.base);
        let res = self
            .agent
            .post(&url)
            .set("content-type", "application/octet-stream")
            .send_bytes(body);
        (url, res)
    }

    /// Submits entries in one request (`POST /v1/entries/batch`, framed as
    /// [`tally_types::encode_entries`] writes them): what the node said of each, in order. A
    /// refusal of the whole request (a body too large, one that does not decode) is an error.
    pub fn submit_batch(&self, entries: &[SignedEntry]) -> anyhow::Result<Vec<Submitted>> {
        self.submit_batch_encoded(&tally_types::encode_entries(entries), entries.len())
    }

    /// [`NodeClient::submit_batch`] of `count` entries framed ahead of time.
    pub fn submit_batch_encoded(
        &self,
        body: &[u8],
        count: usize,
    ) -> anyhow::Result<Vec<Submitted>> {
        let (url, res) = self.post_canonical("/v1/entries/batch", body);
        let answer: Value = match res {
            Ok(r) => r
                .into_json()
                .with_context(|| format!("reading the answer of {url}"))?,
            Err(ureq::Error::Status(code, r)) => {
                return Err(anyhow!("{url}: HTTP {code}: {}", error_text(r)))
            }
            Err(e) => return Err(anyhow!("cannot reach node at {}: {e}", self.base)),
        };
        let results = answer["results"]
            .as_array()
            .filter(|r| r.len() == count)
            .ok_or_else(|| anyhow!("{url}: not one result per entry: {answer}"))?;
        results
            .iter()
            .map(|r| {
                let id: EntryId = r["id"]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| anyhow!("{url}: a result without an entry id: {r}"))?;
                Ok(match r["status"].as_str() {
                    Some("pending") => Submitted::Pending(id),
                    _ => refused(&r["error"]),
                })
            })
            .collect()
    }

    /// The inclusion proof of an entry in a committed block; `None` when the node has none
    /// (pending, refused or unknown). The proof is not checked here, only that it decodes and
    /// is the proof of `id`.
    pub fn proof(&self, id: &EntryId) -> anyhow::Result<Option<InclusionProof>> {
        let Some(v) = self.get(&format!("/v1/entries/{id}/proof"))? else {
            return Ok(None);
        };
        let bytes = v["proof"]
            .as_str()
            .and_then(|h| hex::decode(h).ok())
            .ok_or_else(|| anyhow!("node {} answered without a hex proof", self.base))?;
        let proof = InclusionProof::from_bytes(&bytes)
            .map_err(|e| anyhow!("node {} answered with an unreadable proof: {e}", self.base))?;
        if proof.entry.id() != *id {
            return Err(anyhow!(
                "node {} answered with the proof of another entry ({})",
                self.base,
                proof.entry.id()
            ));
        }
        Ok(Some(proof))
    }

    /// Polls an entry until it is committed or rejected, or `timeout` passes.
    pub fn wait(&self, id: &EntryId, timeout: Duration) -> anyhow::Result<Settled> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = self.get(&format!("/v1/entries/{id}"))? {
                match v["status"].as_str() {
                    Some("committed") => return Ok(Settled::Committed(v)),
                    Some("rejected") => return Ok(Settled::Rejected(v)),
                    _ => {}
                }
            }
            if Instant::now() >= deadline {
                return Ok(Settled::StillPending);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A refused entry, from the `error` object (`code`, `detail`) the node answered with.
fn refused(error: &Value) -> Submitted {
    Submitted::Refused {
        code: error["code"].as_str().unwrap_or("unknown").to_string(),
        detail: error["detail"].as_str().unwrap_or_default().to_string(),
    }
}

fn error_text(r: ureq::Response) -> String {
    r.into_string().unwrap_or_default()
}
