//! Real libp2p on 127.0.0.1: allowed peers talk, others are refused, wrong-chain or oversized
//! requests are counted and dropped, and messages keep their order on a peer's stream.

use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tally_consensus::{Message, Vote, VoteKind};
use tally_network::{
    BlockSource, CertifiedBlock, Inbound, Limits, Network, NetworkConfig, PeerAddress, Request,
};
use tally_types::{Hash, Keypair, Name, PublicKey};

struct NoBlocks;
impl BlockSource for NoBlocks {
    fn blocks_from(&self, _: u64, _: usize) -> Vec<CertifiedBlock> {
        Vec::new()
    }
}

const LIMITS: Limits = Limits {
    request_bytes_max: 4096,
    response_bytes_max: 4096,
    inbound_queue_max: 64,
    outbound_queue_max: 64,
    connections_per_peer_max: 2,
    gate: tally_network::gate::GateLimits {
        handshake_timeout: Duration::from_secs(3),
        unproven_max: 128,
        unproven_per_address_max: 16,
    },
};

fn chain(name: &str) -> Name {
    Name::new(name).unwrap_or_else(|e| panic!("{e}"))
}

async fn node(
    key: &Keypair,
    chain_id: &str,
    allowed: Vec<PublicKey>,
    dial: Vec<PeerAddress>,
    limits: Limits,
) -> (Network, Receiver<Inbound>) {
    let any_port = "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}"));
    node_at(key, chain_id, allowed, dial, limits, any_port).await
}

async fn node_at(
    key: &Keypair,
    chain_id: &str,
    allowed: Vec<PublicKey>,
    dial: Vec<PeerAddress>,
    limits: Limits,
    listen: std::net::SocketAddr,
) -> (Network, Receiver<Inbound>) {
    let (tx, rx) = sync_channel(limits.inbound_queue_max);
    let net = tally_network::start(
        NetworkConfig {
            chain_id: chain(chain_id),
            listen,
            dial,
            allowed,
            limits,
        },
        key,
        Arc::new(NoBlocks),
        tx,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    (net, rx)
}

/// A listening on any port, and B allowed to A and dialling it, both for chain `net-test`.
async fn pair(
    a: &Keypair,
    b: &Keypair,
    limits: Limits,
) -> (
    (Network, Receiver<Inbound>),
    PeerAddress,
    (Network, Receiver<Inbound>),
) {
    let (na, rx_a) = node(a, "net-test", vec![b.public()], vec![], limits).await;
    let a_addr = PeerAddress {
        key: a.public(),
        addr: na.listen_addr,
    };
    let nb = node(
        b,
        "net-test",
        vec![a.public()],
        vec![a_addr.clone()],
        limits,
    )
    .await;
    ((na, rx_a), a_addr, nb)
}

/// Waits (bounded) for an inbound item matching `want`.
async fn expect(
    rx: &Receiver<Inbound>,
    within: Duration,
    want: impl Fn(&Inbound) -> bool,
) -> Option<Inbound> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        while let Ok(item) = rx.try_recv() {
            if want(&item) {
                return Some(item);
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

fn vote(key: &Keypair) -> Request {
    vote_in_round(key, 0)
}

fn vote_in_round(key: &Keypair, round: u32) -> Request {
    Request::Consensus {
        message: Box::new(Message::Vote(Vote::sign(
            key,
            &chain("net-test"),
            VoteKind::Prevote,
            1,
            round,
            Some(Hash([1; 32])),
        ))),
        block: None,
    }
}

/// The round of a consensus message that arrived from `from`.
fn round_from(item: &Inbound, from: &PublicKey) -> Option<u32> {
    match item {
        Inbound::Request {
            from: sender,
            request: Request::Consensus { message, .. },
        } if sender == from => Some(message.round()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_peers_exchange_messages_and_strangers_are_refused() {
    let (a, b, stranger) = (
        Keypair::from_seed_for_tests(1),
        Keypair::from_seed_for_tests(2),
        Keypair::from_seed_for_tests(3),
    );
    let ((na, rx_a), a_addr, (nb, _rx_b)) = pair(&a, &b, LIMITS).await;

    // B dials A and sends a vote; A receives it attributed to B's key.
    nb.handle.send(a.public(), vote(&b));
    let got = expect(&rx_a, Duration::from_secs(10), |i| {
        matches!(i, Inbound::Request { .. })
    })
    .await;
    match got {
        Some(Inbound::Request { from, request }) => {
            assert_eq!(from, b.public());
            assert_eq!(request, vote(&b));
        }
        other => panic!("A received {other:?}"),
    }
    assert!(na.handle.connected().contains(&b.public()));

    // A stranger (key not allowed) dials A: refused, and nothing it sends arrives.
    let (ns, _rx_s) = node(
        &stranger,
        "net-test",
        vec![a.public()],
        vec![a_addr],
        LIMITS,
    )
    .await;
    ns.handle.send(a.public(), vote(&stranger));
    let deadline = Instant::now() + Duration::from_secs(10);
    while na.handle.counters().refused_connections == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(na.handle.counters().refused_connections > 0);
    assert!(!na.handle.connected().contains(&stranger.public()));
    let leak = expect(
        &rx_a,
        Duration::from_secs(2),
        |i| matches!(i, Inbound::Request { from, .. } if *from == stranger.public()),
    )
    .await;
    assert_eq!(leak, None, "a refused peer's message reached the node");

    for n in [na, nb, ns] {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_chain_and_oversized_requests_are_dropped_and_counted() {
    let (a, b) = (
        Keypair::from_seed_for_tests(11),
        Keypair::from_seed_for_tests(12),
    );
    let (na, rx_a) = node(&a, "net-test", vec![b.public()], vec![], LIMITS).await;
    let a_addr = PeerAddress {
        key: a.public(),
        addr: na.listen_addr,
    };
    // B speaks for another chain, and allows itself frames far larger than A accepts.
    let big = Limits {
        request_bytes_max: 1 << 20,
        ..LIMITS
    };
    let (nb, _rx_b) = node(&b, "other-chain", vec![a.public()], vec![a_addr], big).await;
    nb.handle.send(a.public(), vote(&b));
    let entry = tally_types::SignedEntry {
        body: tally_types::EntryBody {
            chain_id: chain("net-test"),
            author: b.public(),
            sequence: 0,
            payload: tally_types::Payload::RevokeRole {
                key: b.public(),
                role: tally_types::Role::Admin,
            },
        },
        signature: tally_types::Signature([0; 64]),
    };
    let block = tally_types::Block {
        header: tally_types::BlockHeader {
            chain_id: chain("net-test"),
            height: 1,
            parent: Hash::ZERO,
            timestamp: tally_types::TimestampMs(0),
            proposer: b.public(),
            entry_count: 100,
            entries_root: Hash::ZERO,
            outcomes_root: Hash::ZERO,
            state_root: Hash::ZERO,
            validators_hash: Hash::ZERO,
        },
        entries: vec![entry; 100],
    };
    let oversized = Request::Consensus {
        message: Box::new(Message::Vote(Vote::sign(
            &b,
            &chain("net-test"),
            VoteKind::Prevote,
            1,
            0,
            None,
        ))),
        block: Some(Box::new(tally_network::ProposedBlock::full(block))),
    };
    nb.handle.send(a.public(), oversized);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let c = na.handle.counters();
        if c.wrong_chain >= 1 && c.malformed_or_oversized >= 1 {
            break;
        }
        assert!(Instant::now() < deadline, "counters never moved: {c:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        rx_a.try_iter()
            .filter(|i| matches!(i, Inbound::Request { .. }))
            .count(),
        0
    );
    for n in [na, nb] {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_in_use_is_refused_with_its_cause() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let listen = taken.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let (tx, _rx) = sync_channel::<Inbound>(LIMITS.inbound_queue_max);
    let started = tokio::time::timeout(
        Duration::from_secs(10),
        tally_network::start(
            NetworkConfig {
                chain_id: chain("net-test"),
                listen,
                dial: Vec::new(),
                allowed: Vec::new(),
                limits: LIMITS,
            },
            &Keypair::from_seed_for_tests(7),
            Arc::new(NoBlocks),
            tx,
        ),
    )
    .await
    .expect("start answers within 10 s");
    let Err(error) = started else {
        panic!("a second listener on {listen} started");
    };
    let text = error.to_string();
    assert!(
        text.to_lowercase().contains("in use"),
        "the operator sees why: {text:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_keep_their_order_and_reach_a_peer_that_restarted() {
    let (a, b) = (
        Keypair::from_seed_for_tests(21),
        Keypair::from_seed_for_tests(22),
    );
    // A peer's queue holds twice the largest frame in bytes: room for the 500 votes.
    let roomy = Limits {
        request_bytes_max: 1 << 20,
        inbound_queue_max: 1024,
        outbound_queue_max: 1024,
        ..LIMITS
    };
    let ((na, rx_a), a_addr, (nb, _rx_b)) = pair(&a, &b, roomy).await;

    // Sent at once, before the connection is up: they wait for it, share writes, and arrive
    // whole and in the order sent.
    const SENT: u32 = 500;
    for round in 0..SENT {
        nb.handle.send(a.public(), vote_in_round(&b, round));
    }
    let mut rounds = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while rounds.len() < SENT as usize && Instant::now() < deadline {
        rounds.extend(rx_a.try_iter().filter_map(|i| round_from(&i, &b.public())));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(rounds, (0..SENT).collect::<Vec<_>>());
    let counters = nb.handle.counters();
    assert_eq!(
        (counters.send_failures, counters.outbound_queue_full),
        (0, 0)
    );

    // A stops and starts again on the same address: B's stream to it is gone, and B's later
    // messages reach the new A on a new one.
    na.shutdown().await;
    let (na, rx_a) = node_at(&a, "net-test", vec![b.public()], vec![], roomy, a_addr.addr).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut arrived = None;
    while arrived.is_none() && Instant::now() < deadline {
        nb.handle.send(a.public(), vote_in_round(&b, SENT));
        arrived = expect(&rx_a, Duration::from_millis(200), |i| {
            round_from(i, &b.public()) == Some(SENT)
        })
        .await;
    }
    assert!(arrived.is_some(), "no message reached the restarted peer");
    for n in [na, nb] {
        n.shutdown().await;
    }
}

/// Holds `count` idle TCP connections from `from` to `to` (nothing is ever sent on them),
/// opening a new one as one closes, at most `per_second` a second, until `stop` is set. Returns
/// how many it opened in all.
async fn hold_idle_connections(
    from: std::net::IpAddr,
    to: std::net::SocketAddr,
    count: usize,
    per_second: u32,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> u64 {
    use std::sync::atomic::Ordering;
    let mut held: Vec<tokio::net::TcpStream> = Vec::new();
    let mut opened = 0u64;
    let mut pace = tokio::time::interval(Duration::from_secs(1) / per_second);
    while !stop.load(Ordering::Relaxed) {
        pace.tick().await;
        // A connection the node closed reads end-of-file (or an error).
        held.retain(|s| {
            let mut byte = [0u8; 1];
            match s.try_read(&mut byte) {
                Ok(n) => n > 0,
                Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
            }
        });
        if held.len() < count {
            let Ok(socket) = tokio::net::TcpSocket::new_v4() else {
                continue;
            };
            if socket.bind(std::net::SocketAddr::new(from, 0)).is_err() {
                continue;
            }
            if let Ok(Ok(s)) =
                tokio::time::timeout(Duration::from_millis(200), socket.connect(to)).await
            {
                held.push(s);
                opened += 1;
            }
        }
    }
    opened
}

/// Strangers holding idle connections on a node's peer port (more than any limit, reopened as
/// they close: one from another address at up to 1,000 a second, one from the honest peer's
/// own address at up to 100) must not keep an allowed peer out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_from_strangers_do_not_keep_an_allowed_peer_out() {
    let (a, b) = (
        Keypair::from_seed_for_tests(41),
        Keypair::from_seed_for_tests(42),
    );
    let (na, rx_a) = node(&a, "net-test", vec![b.public()], vec![], LIMITS).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let floods = [
        tokio::spawn(hold_idle_connections(
            [127, 0, 0, 2].into(),
            na.listen_addr,
            300,
            1000,
            stop.clone(),
        )),
        tokio::spawn(hold_idle_connections(
            [127, 0, 0, 1].into(),
            na.listen_addr,
            300,
            100,
            stop.clone(),
        )),
    ];
    tokio::time::sleep(Duration::from_secs(2)).await;

    let (nb, _rx_b) = node(
        &b,
        "net-test",
        vec![a.public()],
        vec![PeerAddress {
            key: a.public(),
            addr: na.listen_addr,
        }],
        LIMITS,
    )
    .await;
    let joined = expect(
        &rx_a,
        Duration::from_secs(5),
        |i| matches!(i, Inbound::Connected(k) if *k == b.public()),
    )
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut opened = 0;
    for f in floods {
        opened += f.await.unwrap_or_else(|e| panic!("{e}"));
    }
    assert!(
        joined.is_some(),
        "the allowed peer did not get in within 5 s while strangers held idle connections ({opened} opened)"
    );
    let counters = na.handle.counters();
    assert!(
        counters.handshakes_evicted > 0,
        "idle connections were not made room for: {counters:?}"
    );
    for n in [na, nb] {
        n.shutdown().await;
    }
}
