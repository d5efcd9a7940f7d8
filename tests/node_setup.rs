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

/// Waits until a node's API says it is alive.
fn wait_healthy(api: &Api, what: &str) {
    let deadline = std::time::Instant::now() + NODE_START_TIMEOUT;
    while api.try_get("/healthz").map(|o| o.status) != Ok(200) {
        assert!(std::time::Instant::now() < deadline, "{what} did not start");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// The devnet's admin grants a role to the key of `seed`, through `api`, and the node
/// commits it.
fn commit_a_grant(net: &Devnet, api: &Api, seed: u64) {
    let admin = net.keypair("admin");
    let e = sign(
        &admin,
        CHAIN_ID,
        api.next_sequence(&admin.public()),
        tally_types::Payload::GrantRole {
            key: tally_types::Keypair::from_seed_for_tests(seed).public(),
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
    let api = net.api();
    commit_a_grant(&net, &api, 5_150);
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

/// A child process killed and reaped when the test ends, however it ends.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = wait_bounded(&mut self.0, std::time::Duration::from_secs(10));
    }
}

#[test]
fn node_init_writes_a_node_that_starts_and_refuses_to_overwrite_or_to_misname_its_agency() {
    let net = Devnet::create();
    let dir = net.dir.path().join("init");
    let port = free_port();
    let init = |extra: &[&str]| {
        let mut args = vec![
            "node".to_string(),
            "init".into(),
            "--dir".into(),
            dir.display().to_string(),
            "--genesis".into(),
            net.genesis.display().to_string(),
            "--key".into(),
            net.key("validator").display().to_string(),
            "--api-listen".into(),
            format!("127.0.0.1:{port}"),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        run_tally(&args)
    };
    // The genesis names the key as agency wfp's validator: another agency is refused, and
    // nothing is written.
    let wrong = init(&["--agency", "unhcr"]);
    assert_ne!(wrong.code, 0, "{wrong}");
    assert!(wrong.stderr.contains("it is agency wfp's"), "{wrong}");
    assert!(!dir.join("node.toml").exists());

    let out = init(&["--agency", "wfp"]);
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("validator"), "{out}");
    for file in ["node.toml", "node.key", "genesis.toml"] {
        assert!(dir.join(file).exists(), "{file} not written");
    }
    // Run again: refused, naming what is there.
    let again = init(&["--agency", "wfp"]);
    assert_ne!(again.code, 0, "{again}");
    assert!(again.stderr.contains("node.toml exists"), "{again}");

    // The node it wrote starts and commits.
    let config = dir.join("node.toml");
    let child = tally_command()
        .args(["node", "run", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("tally node run");
    let _running = Running(child);
    let api = Api::new(&format!("http://127.0.0.1:{port}"));
    wait_healthy(&api, "the node written by init");
    commit_a_grant(&net, &api, 5_151);
}

#[test]
fn errors_name_the_missing_path_once_and_do_not_call_it_corrupt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nope = dir.path().join("nope");
    let nope = nope.display().to_string();
    let genesis = dir.path().join("genesis.toml").display().to_string();

    let out = run_tally(&[
        "audit",
        "verify",
        "--data-dir",
        &nope,
        "--genesis",
        &genesis,
    ]);
    assert_ne!(out.code, 0, "{out}");
    assert!(
        out.stderr.contains(&format!("{nope} does not exist")),
        "{out}"
    );
    assert!(!out.stderr.contains("corrupt"), "{out}");

    let config = format!("{nope}.toml");
    let out = run_tally(&["node", "run", "--config", &config]);
    assert_ne!(out.code, 0, "{out}");
    assert!(out.stderr.contains(&config), "{out}");
    assert_eq!(
        out.stderr.matches("No such file or directory").count(),
        1,
        "the cause is said once: {out}"
    );
}

/// Runs `openssl` with `args`; its stdout, or a panic with what it said.
fn openssl(args: &[&str]) -> Vec<u8> {
    let out = std::process::Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl runs (Debian's openssl package; `cargo xtask test` installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn an_encrypted_key_reads_in_openssl_and_runs_a_node_and_openssl_keys_read_in_tally() {
    const PASS: &str = "a passphrase of some length";
    let net = Devnet::create();
    let dir = net.dir.path();
    let pass_file = dir.join("passphrase");
    std::fs::write(&pass_file, format!("{PASS}\n")).expect("write");
    let pass_path = pass_file.clone();
    let pass_file = pass_file.display().to_string();
    let validator = net.pk("validator").to_string();
    let encrypted = dir.join("validator.pem").display().to_string();
    let encrypt = || {
        tally_command()
            .args(["keys", "encrypt", "--key"])
            .arg(net.key("validator"))
            .args(["--out", &encrypted])
            .env("TALLY_KEY_PASSPHRASE_FILE", &pass_file)
            .output()
            .expect("tally runs")
    };

    // A passphrase file others can read is refused, as such a key file would be.
    let out = encrypt();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && said.contains("chmod 600"),
        "{said}"
    );
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&pass_path, std::fs::Permissions::from_mode(0o600))
            .expect("chmod");
    }

    // tally encrypts the validator's key; OpenSSL reads it and finds the same public key.
    let out = encrypt();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let der = openssl(&[
        "pkey",
        "-in",
        &encrypted,
        "-passin",
        &format!("pass:{PASS}"),
        "-pubout",
        "-outform",
        "DER",
    ]);
    assert_eq!(hex::encode(&der[der.len() - 32..]), validator);

    // The node starts with it, the passphrase read from a file.
    let port = free_port();
    let child = tally_command()
        .args(["node", "run", "--config"])
        .arg(&net.config)
        .env("TALLY_NODE_NODE_KEY", &encrypted)
        .env("TALLY_API_LISTEN", format!("127.0.0.1:{port}"))
        .env("TALLY_KEY_PASSPHRASE_FILE", &pass_file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("tally node run");
    let mut running = Running(child);
    let api = Api::new(&format!("http://127.0.0.1:{port}"));
    wait_healthy(&api, "the node with an encrypted key");
    assert_eq!(api.status()["node_key"], validator);
    let _ = running.0.kill();

    // A wrong passphrase is refused, saying so.
    let out = tally_command()
        .args(["node", "check-config", "--config"])
        .arg(&net.config)
        .env("TALLY_NODE_NODE_KEY", &encrypted)
        .env("TALLY_KEY_PASSPHRASE", "not the passphrase at all")
        .output()
        .expect("tally runs");
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("the passphrase is wrong"), "{said}");

    // Keys OpenSSL made, plain and encrypted, are read by tally.
    let plain = dir.join("openssl.pem").display().to_string();
    openssl(&["genpkey", "-algorithm", "ed25519", "-out", &plain]);
    let sealed = dir.join("openssl-encrypted.pem").display().to_string();
    openssl(&[
        "pkcs8",
        "-topk8",
        "-in",
        &plain,
        "-v2",
        "aes-256-cbc",
        "-scrypt",
        "-passout",
        &format!("pass:{PASS}"),
        "-out",
        &sealed,
    ]);
    let der = openssl(&["pkey", "-in", &plain, "-pubout", "-outform", "DER"]);
    let public = hex::encode(&der[der.len() - 32..]);
    for file in [&plain, &sealed] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let out = tally_command()
            .args(["keys", "show", file])
            .env("TALLY_KEY_PASSPHRASE", PASS)
            .output()
            .expect("tally runs");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            public,
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
