//! What travels between nodes, and the length-prefixed codec that frames it.
//!
//! Every request carries the chain id, so a node of another chain that somehow holds an allowed
//! key is told apart from a corrupt message. Frames are a 4-byte little-endian length and the
//! canonical bincode bytes; a length above the configured maximum is refused before any byte of
//! the body is read, so a peer cannot make a node buffer more than that.

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use serde::{Deserialize, Serialize};
use std::io;
use tally_types::{codec, Block, BlockHeader, CommitCertificate, EntryId, Hash, Name, SignedEntry};

/// Most bytes reserved for a frame before its bytes arrive.
const FRAME_PREALLOCATION_MAX: usize = 64 * 1024;

/// The libp2p protocol name of the request-response protocol: block sync.
pub const PROTOCOL: &str = "/tally/1";

/// The libp2p protocol name of the long-lived stream each node keeps to each peer for one-way
/// messages (consensus, relayed entries, pushed blocks): a sequence of frames, no answers.
pub const MESSAGE_PROTOCOL: &str = "/tally/messages/2";

/// A committed block with the certificate that proves it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertifiedBlock {
    /// The block.
    pub block: Block,
    /// 2f+1 precommits for it.
    pub certificate: CommitCertificate,
}

/// A proposed block as a proposal carries it: the header, and each entry either by its id,
/// when the sender knows the validators were sent it by relay, or in full. On a healthy
/// network every validator already holds almost every entry of a block, so a proposal is a
/// header and 32 bytes per entry rather than the block again; the receiver rebuilds the block
/// from its mempool and asks for what it lacks ([`Request::FetchEntries`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProposedBlock {
    /// The header: its hash is the block's, whatever form the entries travel in.
    pub header: BlockHeader,
    /// The entries, in block order.
    pub entries: Vec<ProposedEntry>,
}

/// One entry of a [`ProposedBlock`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProposedEntry {
    /// An entry the receiver should hold: named by its id.
    Held(EntryId),
    /// An entry sent whole (boxed: most entries of a proposal are ids, and an unboxed entry
    /// would make each of them as large as an entry in memory; the encoding is the same).
    Full(Box<SignedEntry>),
}

impl ProposedBlock {
    /// A block with every entry in full: what a node sends when it cannot tell what the
    /// receiver holds.
    pub fn full(block: Block) -> Self {
        ProposedBlock {
            header: block.header,
            entries: block
                .entries
                .into_iter()
                .map(|e| ProposedEntry::Full(Box::new(e)))
                .collect(),
        }
    }

    /// The block's hash (its header's).
    pub fn hash(&self) -> Hash {
        self.header.hash()
    }
}

/// What one node asks of, or tells, another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// A consensus message; a proposal carries its block.
    Consensus {
        /// The signed proposal or vote.
        message: Box<tally_consensus::Message>,
        /// The proposed block, with a proposal only.
        block: Option<Box<ProposedBlock>>,
    },
    /// Entries admitted at the sender, relayed so every validator's mempool holds them: in
    /// batches, because a request per entry costs a substream per entry per peer.
    Entries(Vec<SignedEntry>),
    /// Block sync: the committed blocks from `from_height` on.
    Blocks {
        /// First height wanted.
        from_height: u64,
    },
    /// Committed blocks pushed to a node that is behind, or to observers after each commit.
    Push(Vec<CertifiedBlock>),
    /// The entries of a proposed block that a validator lacks, asked of a validator that
    /// holds the block; answered with [`Request::Fetched`].
    FetchEntries {
        /// The proposed block.
        block: Hash,
        /// The entries wanted; empty: every entry, in block order.
        ids: Vec<EntryId>,
    },
    /// The answer to [`Request::FetchEntries`]: the entries asked for that the sender holds.
    Fetched {
        /// The proposed block.
        block: Hash,
        /// The entries (every entry, in block order, when all were asked for).
        entries: Vec<SignedEntry>,
    },
}

impl Request {
    /// A short name for logs and counters.
    pub fn kind(&self) -> &'static str {
        match self {
            Request::Consensus { .. } => "consensus",
            Request::Entries(_) => "entries",
            Request::Blocks { .. } => "blocks",
            Request::Push(_) => "push",
            Request::FetchEntries { .. } => "fetch_entries",
            Request::Fetched { .. } => "fetched",
        }
    }
}

/// A request as framed on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The sender's chain.
    pub chain_id: Name,
    /// The request.
    pub request: Request,
}

/// An [`Envelope`] to encode without owning its request: the same bytes on the wire.
#[derive(Serialize)]
pub(crate) struct EnvelopeRef<'a> {
    pub(crate) chain_id: &'a Name,
    pub(crate) request: &'a Request,
}

/// The answer to a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Received (not necessarily accepted: consensus and entries are judged later).
    Ack,
    /// Committed blocks, oldest first, as many as fit the response limit.
    Blocks(Vec<CertifiedBlock>),
    /// Refused: wrong chain, or the node is not accepting this kind of request.
    Refused,
}

/// Frames requests and responses with explicit maximum sizes.
#[derive(Debug, Clone, Default)]
pub struct Codec {
    /// Largest request frame accepted (a proposal with a full block must fit).
    pub request_bytes_max: usize,
    /// Largest response frame accepted (a batch of synced blocks).
    pub response_bytes_max: usize,
    /// Where refused frames are counted (libp2p reports a request that fails to decode to
    /// nobody, so the codec counts it itself).
    pub counters: std::sync::Arc<crate::Counters>,
}

impl Codec {
    fn count<T>(&self, r: io::Result<T>) -> io::Result<T> {
        if let Err(e) = &r {
            if e.kind() == io::ErrorKind::InvalidData {
                crate::Counters::bump(&self.counters.malformed_or_oversized);
            }
        }
        r
    }
}

pub(crate) async fn read_frame<T: AsyncRead + Unpin + Send>(
    io: &mut T,
    max: usize,
) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_le_bytes(len) as usize;
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds the limit of {max}"),
        ));
    }
    // Grow the buffer as bytes arrive rather than trusting the declared length: a peer that
    // announces a large frame and trickles it holds only what it has sent.
    let mut buf = Vec::with_capacity(len.min(FRAME_PREALLOCATION_MAX));
    io.take(len as u64).read_to_end(&mut buf).await?;
    if buf.len() != len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("frame ended after {} of {len} bytes", buf.len()),
        ));
    }
    Ok(buf)
}

async fn write_frame<T: AsyncWrite + Unpin + Send>(
    io: &mut T,
    bytes: &[u8],
    max: usize,
) -> io::Result<()> {
    io.write_all(&framed(bytes, max)?).await?;
    io.close().await
}

/// `bytes` framed as [`read_frame`] reads them: length first.
pub(crate) fn framed(bytes: &[u8], max: usize) -> io::Result<Vec<u8>> {
    let len = u32::try_from(bytes.len())
        .ok()
        .filter(|_| bytes.len() <= max)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("frame of {} bytes exceeds the limit of {max}", bytes.len()),
            )
        })?;
    let mut frame = Vec::with_capacity(4 + bytes.len());
    frame.extend_from_slice(&len.to_le_bytes());
    frame.extend_from_slice(bytes);
    Ok(frame)
}

pub(crate) fn decode<T: serde::de::DeserializeOwned + Serialize>(bytes: &[u8]) -> io::Result<T> {
    codec::decode(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
}

impl libp2p::request_response::Codec for Codec {
    type Protocol = libp2p::StreamProtocol;
    type Request = Envelope;
    type Response = Response;

    async fn read_request<T>(&mut self, _: &Self::Protocol, io: &mut T) -> io::Result<Envelope>
    where
        T: AsyncRead + Unpin + Send,
    {
        let r = match read_frame(io, self.request_bytes_max).await {
            Ok(bytes) => decode(&bytes),
            Err(e) => Err(e),
        };
        self.count(r)
    }

    async fn read_response<T>(&mut self, _: &Self::Protocol, io: &mut T) -> io::Result<Response>
    where
        T: AsyncRead + Unpin + Send,
    {
        let r = match read_frame(io, self.response_bytes_max).await {
            Ok(bytes) => decode(&bytes),
            Err(e) => Err(e),
        };
        self.count(r)
    }

    async fn write_request<T>(
        &mut self,
        _: &Self::Protocol,
        io: &mut T,
        req: Envelope,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &codec::encode(&req), self.request_bytes_max).await
    }

    async fn write_response<T>(
        &mut self,
        _: &Self::Protocol,
        io: &mut T,
        res: Response,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &codec::encode(&res), self.response_bytes_max).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;
    use libp2p::request_response::Codec as _;

    fn codec() -> Codec {
        Codec {
            request_bytes_max: 64,
            response_bytes_max: 64,
            ..Codec::default()
        }
    }

    fn protocol() -> libp2p::StreamProtocol {
        libp2p::StreamProtocol::new(PROTOCOL)
    }

    #[test]
    fn a_frame_over_the_limit_is_refused_before_its_body_is_read() {
        let mut bytes = 1_000_000u32.to_le_bytes().to_vec();
        bytes.extend([0u8; 16]);
        let mut io = futures::io::Cursor::new(bytes);
        let mut c = codec();
        let err = block_on(c.read_request(&protocol(), &mut io));
        assert_eq!(
            err.map(|_| ()).map_err(|e| e.kind()),
            Err(io::ErrorKind::InvalidData)
        );
        assert_eq!(io.position(), 4, "only the length was read");
        assert_eq!(c.counters.snapshot().malformed_or_oversized, 1);
    }

    #[test]
    fn garbage_and_truncated_frames_are_errors_not_panics() {
        for bytes in [
            vec![3, 0, 0, 0, 0xff, 0xff, 0xff],
            vec![10, 0, 0, 0, 1, 2],
            vec![1, 0],
        ] {
            let mut io = futures::io::Cursor::new(bytes);
            assert!(block_on(codec().read_request(&protocol(), &mut io)).is_err());
        }
    }

    #[test]
    fn a_response_round_trips() {
        let mut c = codec();
        let mut io = futures::io::Cursor::new(Vec::new());
        block_on(c.write_response(&protocol(), &mut io, Response::Refused))
            .unwrap_or_else(|e| panic!("{e}"));
        io.set_position(0);
        let back =
            block_on(c.read_response(&protocol(), &mut io)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, Response::Refused);
    }
}
