//! The HTTP API under a slow-client attack, against a real node process with a low open-file
//! limit: connections that trickle their headers are cut, connections beyond the cap are told
//! 503 `too_many_connections`, oversized headers get 431, a body that never arrives gets 408,
//! the validator keeps ordering entries throughout, and SIGTERM stops it within its grace
//! however many clients hang on.

mod common;

use common::{hold_connections, sign, Devnet, CHAIN_ID};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tally_types::{Keypair, Payload, Role};

const CONNECTIONS_MAX: usize = 100;

/// Sends raw bytes on a fresh connection and returns the status line of the answer.
fn raw_status_line(to: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(2)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let _ = s.write_all(request);
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !answer.windows(2).any(|w| w == b"\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

#[test]
fn slow_clients_cannot_take_the_api_or_the_validator_down_or_hold_its_shutdown() {
    let mut net = Devnet::create();
    net.configure_api(&format!(
        "connections_max = {CONNECTIONS_MAX}\nheader_timeout_ms = 2000\nbody_timeout_ms = 2000\nheader_bytes_max = 8192\nshutdown_grace_ms = 2000\n"
    ));
    // Below what the caps and RocksDB can use together: the node says so, and the caps keep it
    // running anyway.
    net.open_files_max = Some(400);
    net.start_node();
    let api = net.api();
    let addr: SocketAddr = net
        .base
        .trim_start_matches("http://")
        .parse()
        .expect("addr");
    assert!(
        net.log().contains("the open-file limit is below what"),
        "the node warns that its open-file limit is low:\n{}",
        net.log()
    );

    // Headers larger than the limit: 431.
    let mut big = b"GET /v1/status HTTP/1.1\r\nhost: node\r\nx-big: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 20_000));
    big.extend_from_slice(b"\r\n\r\n");
    let line = raw_status_line(addr, &big);
    assert!(line.contains(" 431 "), "oversized headers: {line}");

    // A body that never comes: 408 body_timeout once its time is up.
    let started = Instant::now();
    let line = raw_status_line(
        addr,
        b"POST /v1/entries HTTP/1.1\r\nhost: node\r\ncontent-type: application/octet-stream\r\ncontent-length: 500\r\n\r\nabc",
    );
    assert!(line.contains(" 408 "), "a body that never arrives: {line}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );

    let admin = net.keypair("admin");
    let mut sequence = api.next_sequence(&admin.public());

    // 500 slow clients, more than the open-file limit allows, reopened as they are cut.
    let stop = Arc::new(AtomicBool::new(false));
    let attack_started = Instant::now();
    // 500 connections that send a request's first line and then a header line every 500 ms,
    // never finishing, reopened at up to 200 a second.
    let attack = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            hold_connections(
                addr,
                500,
                200,
                b"GET /v1/status HTTP/1.1\r\nhost: node\r\n",
                Some(b"x-slow: 1\r\n"),
                &stop,
            )
        })
    };
    std::thread::sleep(Duration::from_secs(3));

    // Under the attack, every answer to an honest client is either served or a clear 503, and
    // the validator keeps ordering what is submitted.
    let (mut submitted, mut refused) = (Vec::new(), 0);
    let deadline = Instant::now() + Duration::from_secs(60);
    while submitted.len() < 3 {
        assert!(
            Instant::now() < deadline,
            "3 entries not admitted within 60 s under attack ({refused} refused)"
        );
        let entry = sign(
            &admin,
            CHAIN_ID,
            sequence,
            Payload::GrantRole {
                key: Keypair::from_seed_for_tests(9_000 + sequence).public(),
                role: Role::Issuer,
            },
        );
        match api.try_post("application/octet-stream", &entry.to_bytes()) {
            Ok(out) if out.status == 202 => {
                submitted.push(out.json["id"].as_str().expect("id").to_string());
                sequence += 1;
            }
            Ok(out) => {
                assert_eq!(out.status, 503, "{}", out.json);
                assert_eq!(out.error_code(), "too_many_connections", "{}", out.json);
                refused += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!(
                "an honest request got neither an answer nor a 503 under attack: {e}\n{}",
                net.log()
            ),
        }
    }
    // Time for the blocks that order them, under attack (a block every 50 ms).
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        net.node_alive(),
        "the validator stopped under attack\n{}",
        net.log()
    );

    // The counters saw it all: clients cut for their slow headers, newcomers refused.
    let status = loop {
        if let Ok(o) = api.try_get("/v1/status") {
            if o.status == 200 {
                break o.json;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no status within 60 s under attack"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let counters = &status["api"];
    assert!(counters["header_timeouts"].as_u64() > Some(0), "{counters}");
    assert!(
        counters["refused_over_limit"].as_u64() > Some(0),
        "{counters}"
    );
    assert!(counters["body_timeouts"].as_u64() > Some(0), "{counters}");
    assert!(
        counters["open"].as_u64() <= Some(CONNECTIONS_MAX as u64),
        "{counters}"
    );

    // SIGTERM with every connection slot held: the node is gone within its grace and a margin.
    let stopping = Instant::now();
    let attack_ended_by = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    let code = net.stop_node();
    let took = stopping.elapsed();
    stop.store(true, Ordering::Relaxed);
    let attack_lasted = attack_started.elapsed();
    let opened = attack.join().expect("attack thread");
    assert_eq!(code, 0, "{}", net.log());
    assert!(
        took < Duration::from_secs(8),
        "shutdown took {took:?} with slow clients connected\n{}",
        net.log()
    );
    assert!(opened > 500, "the attack reopened cut connections");
    let log = net.log();
    // At most one line per kind (over the limit, a failed accept) in each 10 s interval.
    let refusal_lines = log.matches("API connection refused").count() as u64;
    let intervals = attack_lasted.as_secs() / 10 + 1;
    assert!(
        refusal_lines <= 2 * intervals,
        "refusals are summarised, not logged one by one: {refusal_lines} lines in {attack_lasted:?}"
    );

    // The validator kept ordering under attack: each entry admitted then is in a block made
    // before the attack ended.
    net.start_node();
    for id in &submitted {
        let ordered = api.wait_entry(id, Duration::from_secs(20));
        let height = ordered["height"].as_u64().expect("height");
        let block = api.get(&format!("/v1/blocks/{height}")).expect("block");
        let made = block["header"]["timestamp"].as_u64().expect("timestamp");
        assert!(
            made <= attack_ended_by,
            "entry {id} ordered at {made}, after the attack"
        );
    }
    net.stop_node();
}
