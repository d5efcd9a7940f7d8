//! Setting a node up on a host: `tally node check-config` on a real config, before and while
//! the node runs, with `TALLY_` overrides, and with the mistakes it must catch before a start
//! does (a missing key, another chain's genesis beside an existing data directory).

mod common;

use common::*;
use std::process::Stdio;

/// `tally node check-config --json` with extra environment variables: exit code, JSON, stderr.
fn check_config(net: &Devnet, env: &[(&str, &str)]) -> (i32, serde_json::Value, String) {
    let mut cmd = tally_command();
    cmd.args(["node", "check-config", "--json", "--config"])
        .arg(&net.config)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = cmd.output().expect("tally runs");
    (
        out.status.code().unwrap_or(-1),
        serde_json::from_slice(&out.stdout).unwrap_or_default(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_reports_a_good_config_and_refuses_a_missing_key_or_another_chain() {
    let mut net = Devnet::create();
    let (code, v, said) = check_config(&net, &[]);
    assert_eq!(code, 0, "{said}");
    assert_eq!(v["role"], "validator", "{v}");
    assert_eq!(v["chain_id"], CHAIN_ID, "{v}");
    assert_eq!(v["data_dir"], "new", "{v}");
    assert_eq!(v["warnings"], serde_json::json!([]), "{v}");

    // Any key can come from the environment; a public API address earns a warning.
    let (code, v, said) = check_config(&net, &[("TALLY_API_LISTEN", "0.0.0.0:7999")]);
    assert_eq!(code, 0, "{said}");
    assert_eq!(v["api_listen"], "0.0.0.0:7999", "{v}");
    assert!(
        v["warnings"].to_string().contains("not a loopback address"),
        "{v}"
    );
    let (code, _, said) = check_config(&net, &[("TALLY_MEMPOOL_ENTRIES_MAXX", "5")]);
    assert_eq!(code, 1);
    assert!(said.contains("TALLY_MEMPOOL_ENTRIES_MAXX"), "{said}");

    // While the node runs, its chain is read without stopping it.
    net.start_node();
    let admin = net.keypair("admin");
    let api = net.api();
    let e = sign(
        &admin,
        CHAIN_ID,
        api.next_sequence(&admin.public()),
        tally_types::Payload::GrantRole {
            key: tally_types::Keypair::from_seed_for_tests(5_150).public(),
            role: tally_types::Role::Redeemer,
        },
    );
    let id = api.submit_bytes(&e).json["id"]
        .as_str()
        .expect("an id")
        .to_string();
    assert_eq!(
        api.wait_entry(&id, std::time::Duration::from_secs(20))["status"],
        "committed"
    );
    let (code, v, said) = check_config(&net, &[]);
    assert_eq!(code, 0, "{said}");
    let height = v["data_dir"].as_str().expect("data_dir").to_string();
    assert!(height.starts_with("height ") && height != "height 0", "{v}");

    // A genesis of another chain beside this data directory: refused, naming both.
    let other = net.dir.path().join("other-genesis.toml");
    let text = std::fs::read_to_string(&net.genesis).expect("genesis");
    let renamed = text.replacen(
        &format!("chain_id = \"{CHAIN_ID}\""),
        "chain_id = \"another-chain\"",
        1,
    );
    assert_ne!(renamed, text, "the genesis names its chain");
    std::fs::write(&other, renamed).expect("write");
    let other = other.display().to_string();
    let (code, _, said) = check_config(&net, &[("TALLY_NODE_GENESIS", &other)]);
    assert_eq!(code, 1, "{said}");
    assert!(
        said.contains("holds chain test-chain") && said.contains("another-chain"),
        "{said}"
    );

    // A key file that is not there: refused, naming it.
    let missing = net.dir.path().join("no-such.key").display().to_string();
    let (code, _, said) = check_config(&net, &[("TALLY_NODE_NODE_KEY", &missing)]);
    assert_eq!(code, 1, "{said}");
    assert!(said.contains("no-such.key"), "{said}");
    assert_eq!(net.stop_node(), 0);
}
