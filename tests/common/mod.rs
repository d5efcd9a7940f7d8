//! Harness for the end-to-end tests: a one-validator devnet in a temporary directory, driven
//! through the real `tally` binary (CLI and `tally node run`) and the node's HTTP API on
//! loopback. Every wait is bounded and every child process is killed and reaped on drop, so a
//! failing test leaks neither processes nor directories.

#![allow(dead_code)]

use serde_json::Value;
use std::cell::Cell;
use std::collections::BTreeMap;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tally_types::{EntryBody, Keypair, Name, Payload, SignedEntry};

/// The chain id every devnet uses.
pub const CHAIN_ID: &str = "test-chain";
/// The agency of every key the devnet creates.
pub const AGENCY: &str = "wfp";
/// Staff keys created for every devnet (besides `validator` and `admin`).
pub const STAFF: [&str; 5] = ["issuer", "redeemer", "vendor", "registrar", "attester"];

/// How long a CLI command may run before it is killed and the test fails.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a node may take to answer `GET /v1/status` after it was started.
pub const NODE_START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long an HTTP request to the node may take.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// The `tally` binary built by `cargo build -p tally-cli`, next to this test executable; or
/// the one `TALLY_TEST_BIN` names, to show that a test fails on an older build.
pub fn tally_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("TALLY_TEST_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("current_exe");
    // target/debug/deps/<test> -> target/debug/tally
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps");
    let bin = dir.join(format!("tally{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "the tally binary is missing at {}: run `cargo build -p tally-cli` first",
        bin.display()
    );
    bin
}

/// A `Command` for the tally binary with the environment it reads cleared, so a developer's
/// TALLY_KEY or TALLY_NODE never leaks into a test.
pub fn tally_command() -> Command {
    tally_command_in(Command::new(tally_bin()))
}

/// [`tally_command`] with an open-file limit (soft and hard), set by the shell before it runs
/// the binary, as a service manager's `LimitNOFILE` would.
pub fn tally_command_with_open_files_max(open_files_max: u32) -> Command {
    let mut sh = Command::new("sh");
    sh.args([
        "-c",
        &format!("ulimit -n {open_files_max} && exec \"$0\" \"$@\""),
    ])
    .arg(tally_bin());
    tally_command_in(sh)
}

fn tally_command_in(mut c: Command) -> Command {
    for var in [
        "TALLY_KEY",
        "TALLY_NODE",
        "TALLY_LOG",
        "TALLY_LOG_FORMAT",
        "TALLY_OUTBOX",
    ] {
        c.env_remove(var);
    }
    c.stdin(Stdio::null());
    c
}

/// What a finished CLI command left behind.
#[derive(Debug, Clone)]
pub struct CmdOut {
    /// What was run (for messages).
    pub cmd: String,
    /// The exit code.
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// Standard output parsed as JSON, or `Value::Null` when it is not JSON.
    pub json: Value,
}

impl CmdOut {
    /// Asserts exit code 0 and returns the JSON.
    pub fn ok(&self) -> &Value {
        assert_eq!(self.code, 0, "expected success: {self}");
        &self.json
    }
}

impl std::fmt::Display for CmdOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` exited {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.cmd, self.code, self.stdout, self.stderr
        )
    }
}

fn exit_code(status: ExitStatus) -> i32 {
    status.code().unwrap_or(-1)
}

/// Waits for a child up to `timeout`; kills and reaps it when the time is up.
pub fn wait_bounded(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => {}
            Err(e) => panic!("waiting for child {}: {e}", child.id()),
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs the tally binary with `args`, bounded by [`CLI_TIMEOUT`].
pub fn run_tally<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> CmdOut {
    let shown: Vec<String> = args
        .iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect();
    let cmd = format!("tally {}", shown.join(" "));
    let mut child = tally_command()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {cmd}: {e}"));
    // Drain both pipes on threads so a chatty command can never block on a full pipe.
    let mut out_pipe = child.stdout.take().expect("stdout piped");
    let mut err_pipe = child.stderr.take().expect("stderr piped");
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out_pipe.read_to_string(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err_pipe.read_to_string(&mut s);
        s
    });
    let status = wait_bounded(&mut child, CLI_TIMEOUT);
    let stdout = out_t.join().unwrap_or_default();
    let stderr = err_t.join().unwrap_or_default();
    let Some(status) = status else {
        panic!("`{cmd}` did not finish within {CLI_TIMEOUT:?}; killed\nstdout: {stdout}\nstderr: {stderr}");
    };
    let json = serde_json::from_str(stdout.trim()).unwrap_or(Value::Null);
    CmdOut {
        cmd,
        code: exit_code(status),
        stdout,
        stderr,
        json,
    }
}

/// Runs `tally audit verify --json` on a data directory.
pub fn audit_verify(data_dir: &Path, genesis: &Path) -> CmdOut {
    run_tally(&[
        "audit",
        "verify",
        "--json",
        "--data-dir",
        data_dir.to_str().expect("utf8"),
        "--genesis",
        genesis.to_str().expect("utf8"),
    ])
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

/// An HTTP agent with bounded timeouts.
pub fn agent() -> ureq::Agent {
    // No pooled connections: a server that answers 413 before reading an oversized body
    // closes the connection, and a request sent on it afterwards fails with an unexpected EOF.
    ureq::AgentBuilder::new()
        .timeout(HTTP_TIMEOUT)
        .timeout_connect(Duration::from_secs(2))
        .max_idle_connections(0)
        .build()
}

/// An HTTP answer: status and body (JSON when it parses).
#[derive(Debug, Clone)]
pub struct HttpOut {
    /// HTTP status.
    pub status: u16,
    /// The body as JSON, or `Value::Null`.
    pub json: Value,
}

impl HttpOut {
    /// The `error.code` of an error body.
    pub fn error_code(&self) -> &str {
        self.json["error"]["code"].as_str().unwrap_or("")
    }
}

fn http_result(r: Result<ureq::Response, ureq::Error>) -> Result<HttpOut, String> {
    match r {
        Ok(resp) => {
            let status = resp.status();
            let text = resp.into_string().map_err(|e| e.to_string())?;
            Ok(HttpOut {
                status,
                json: serde_json::from_str(&text).unwrap_or(Value::Null),
            })
        }
        Err(ureq::Error::Status(status, resp)) => {
            let text = resp.into_string().unwrap_or_default();
            Ok(HttpOut {
                status,
                json: serde_json::from_str(&text).unwrap_or(Value::Null),
            })
        }
        Err(e) => Err(e.to_string()),
    }
}

/// A node's API at `base` (e.g. `http://127.0.0.1:7100`).
#[derive(Clone)]
pub struct Api {
    /// Base URL.
    pub base: String,
    agent: ureq::Agent,
}

impl Api {
    /// A client for `base`.
    pub fn new(base: &str) -> Self {
        Self {
            base: base.to_string(),
            agent: agent(),
        }
    }

    /// GET; `Err` only for transport failures.
    pub fn try_get(&self, path: &str) -> Result<HttpOut, String> {
        http_result(self.agent.get(&format!("{}{path}", self.base)).call())
    }

    /// GET with an `Accept` header, the body as text: status and body.
    pub fn get_text(&self, path: &str, accept: &str) -> (u16, String) {
        let url = format!("{}{path}", self.base);
        match self.agent.get(&url).set("Accept", accept).call() {
            Ok(r) => (r.status(), r.into_string().expect("a text body")),
            Err(ureq::Error::Status(s, r)) => (s, r.into_string().unwrap_or_default()),
            Err(e) => panic!("GET {path}: {e}"),
        }
    }

    /// GET that must reach the node; `None` for 404, panics on other errors.
    pub fn get(&self, path: &str) -> Option<Value> {
        let out = self
            .try_get(path)
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        match out.status {
            200 => Some(out.json),
            404 => None,
            s => panic!("GET {path}: HTTP {s}: {}", out.json),
        }
    }

    /// GET /v1/status.
    pub fn status(&self) -> Value {
        self.get("/v1/status").expect("status")
    }

    /// The committed height.
    pub fn height(&self) -> u64 {
        self.status()["height"].as_u64().expect("height")
    }

    /// POSTs raw bytes with a content type to `/v1/entries`.
    pub fn try_post(&self, content_type: &str, body: &[u8]) -> Result<HttpOut, String> {
        self.try_post_to("/v1/entries", content_type, body)
    }

    /// POSTs raw bytes with a content type to a path.
    pub fn try_post_to(
        &self,
        path: &str,
        content_type: &str,
        body: &[u8],
    ) -> Result<HttpOut, String> {
        http_result(
            self.agent
                .post(&format!("{}{path}", self.base))
                .set("content-type", content_type)
                .send_bytes(body),
        )
    }

    /// POSTs raw bytes; panics on transport failure.
    pub fn post(&self, content_type: &str, body: &[u8]) -> HttpOut {
        self.try_post(content_type, body)
            .unwrap_or_else(|e| panic!("POST /v1/entries: {e}"))
    }

    /// Submits an entry in its canonical binary encoding.
    pub fn submit_bytes(&self, e: &SignedEntry) -> HttpOut {
        self.post("application/octet-stream", &e.to_bytes())
    }

    /// Submits an entry as JSON.
    pub fn submit_json(&self, e: &SignedEntry) -> HttpOut {
        let body = serde_json::to_vec(e).expect("entry to JSON");
        self.post("application/json", &body)
    }

    /// The next free sequence number of a registered key.
    pub fn next_sequence(&self, key: &tally_types::PublicKey) -> u64 {
        self.get(&format!("/v1/keys/{key}"))
            .expect("key registered")["next_free_sequence"]
            .as_u64()
            .expect("next_free_sequence")
    }

    /// Polls an entry until it is ordered (committed or rejected) or `timeout` passes.
    pub fn wait_entry(&self, id: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = self.get(&format!("/v1/entries/{id}")) {
                if v["status"] == "committed" || v["status"] == "rejected" {
                    return v;
                }
            }
            assert!(
                Instant::now() < deadline,
                "entry {id} not ordered within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Signs a payload as `key` for `chain_id` with `sequence`.
pub fn sign(key: &Keypair, chain_id: &str, sequence: u64, payload: Payload) -> SignedEntry {
    EntryBody {
        chain_id: Name::new(chain_id).expect("chain id"),
        author: key.public(),
        sequence,
        payload,
    }
    .sign(key)
}

/// A one-validator chain in a temporary directory, with its node running as a child process.
pub struct Devnet {
    /// Holds every file; removed on drop (after the node is stopped).
    pub dir: tempfile::TempDir,
    /// Key files by name: validator, admin, and every [`STAFF`] name.
    pub keys: BTreeMap<String, PathBuf>,
    /// Public keys (hex) by the same names.
    pub pubkeys: BTreeMap<String, String>,
    /// The node's config file.
    pub config: PathBuf,
    /// The genesis file.
    pub genesis: PathBuf,
    /// The node's data directory.
    pub data_dir: PathBuf,
    /// The node's API base URL.
    pub base: String,
    port: u16,
    child: Option<Child>,
    starts: u32,
    /// Entries ordered into blocks by [`Devnet::committed`] / [`Devnet::rejected`] checks.
    pub ordered: Cell<u64>,
    /// Of those, the ones rejected by a rule.
    pub rule_rejected: Cell<u64>,
    /// Lines added to the config's `[api]` section.
    api_extra: String,
    /// The node's open-file limit, when a test sets one.
    pub open_files_max: Option<u32>,
}

impl Devnet {
    /// Creates keys, genesis and config, and starts the node.
    pub fn start() -> Self {
        let mut net = Self::create();
        net.start_node();
        net
    }

    /// Creates keys, genesis and config without starting the node.
    pub fn create() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("tally-e2e-")
            .tempdir()
            .expect("tempdir");
        let mut keys = BTreeMap::new();
        let mut pubkeys = BTreeMap::new();
        for name in ["validator", "admin"].into_iter().chain(STAFF) {
            let path = dir.path().join(format!("{name}.key"));
            let out = run_tally(&[
                "keys",
                "new",
                "--json",
                "--out",
                path.to_str().expect("utf8"),
            ]);
            let pk = out.ok()["public_key"]
                .as_str()
                .unwrap_or_else(|| panic!("no public key: {out}"))
                .to_string();
            let shown = run_tally(&["keys", "show", path.to_str().expect("utf8")]);
            assert_eq!(shown.code, 0, "{shown}");
            assert_eq!(shown.stdout.trim(), pk, "keys show agrees with keys new");
            keys.insert(name.to_string(), path);
            pubkeys.insert(name.to_string(), pk);
        }
        let genesis = dir.path().join("genesis.toml");
        let admin = format!("{AGENCY}={}", keys["admin"].display());
        let validator = format!("{AGENCY}={}", keys["validator"].display());
        run_tally(&[
            "genesis",
            "init",
            "--json",
            "--chain-id",
            CHAIN_ID,
            "--admin",
            &admin,
            "--validator",
            &validator,
            "--out",
            genesis.to_str().expect("utf8"),
        ])
        .ok();
        let config = dir.path().join("node.toml");
        let data_dir = dir.path().join("data");
        let mut net = Self {
            dir,
            keys,
            pubkeys,
            config,
            genesis,
            data_dir,
            base: String::new(),
            port: 0,
            child: None,
            starts: 0,
            ordered: Cell::new(0),
            rule_rejected: Cell::new(0),
            api_extra: String::new(),
            open_files_max: None,
        };
        net.write_config(free_port());
        net
    }

    /// Adds `lines` to the config's `[api]` section (before the node starts).
    pub fn configure_api(&mut self, lines: &str) {
        self.api_extra = lines.to_string();
        self.write_config(self.port);
    }

    fn write_config(&mut self, port: u16) {
        let extra = &self.api_extra;
        let text = format!(
            "[node]\ndata_dir = \"data\"\ngenesis = \"genesis.toml\"\nvalidator_key = \"validator.key\"\n\n[api]\nlisten = \"127.0.0.1:{port}\"\n{extra}\n[block]\ninterval_ms = 50\n"
        );
        std::fs::write(&self.config, text).expect("write node.toml");
        self.port = port;
        self.base = format!("http://127.0.0.1:{port}");
    }

    /// The API client.
    pub fn api(&self) -> Api {
        Api::new(&self.base)
    }

    /// Path of the node's log for the current (or last) run.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join(format!("node-{}.log", self.starts))
    }

    /// The node's log of the current (or last) run.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Starts `tally node run` and waits (bounded) until its API answers. Retries on a fresh
    /// port if the chosen one was taken in the meantime.
    pub fn start_node(&mut self) {
        assert!(self.child.is_none(), "node already running");
        for attempt in 0..3 {
            self.starts += 1;
            let log = std::fs::File::create(self.log_path()).expect("create node log");
            let mut command = match self.open_files_max {
                Some(n) => tally_command_with_open_files_max(n),
                None => tally_command(),
            };
            let mut child = command
                .args(["node", "run", "--config"])
                .arg(&self.config)
                .stdout(Stdio::null())
                .stderr(Stdio::from(log))
                .spawn()
                .expect("spawn tally node run");
            let api = self.api();
            let deadline = Instant::now() + NODE_START_TIMEOUT;
            let mut exited = None;
            loop {
                if let Ok(out) = api.try_get("/v1/status") {
                    if out.status == 200 {
                        break;
                    }
                }
                if let Ok(Some(status)) = child.try_wait() {
                    exited = Some(status);
                    break;
                }
                if Instant::now() >= deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "node did not answer /v1/status within {NODE_START_TIMEOUT:?}\n{}",
                        self.log()
                    );
                }
                std::thread::sleep(Duration::from_millis(25));
            }
            match exited {
                None => {
                    // The API answers once it is bound, a moment before the node's
                    // announcement of it reaches the log.
                    let announced = "node API listening on http://127.0.0.1:";
                    let deadline = Instant::now() + Duration::from_secs(5);
                    while !self.log().contains(announced) && Instant::now() < deadline {
                        std::thread::sleep(Duration::from_millis(25));
                    }
                    if !self.log().contains(announced) {
                        let _ = child.kill();
                        let _ = child.wait();
                        panic!("node announces its API address on stderr\n{}", self.log());
                    }
                    self.child = Some(child);
                    return;
                }
                Some(status) => {
                    let log = self.log();
                    if log.contains("in use") && attempt < 2 {
                        self.write_config(free_port());
                        continue;
                    }
                    panic!("node exited with {status} before serving\n{log}");
                }
            }
        }
    }

    /// The node's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("node running").id()
    }

    /// Whether the node process is still running.
    pub fn node_alive(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGKILLs the node (a crash) and reaps it.
    pub fn kill_node(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the node with SIGTERM (a clean shutdown), waiting up to 15 s; SIGKILLs it after
    /// that and fails the test, since a node must stop cleanly when asked. Returns the exit code.
    pub fn stop_node(&mut self) -> i32 {
        let Some(mut c) = self.child.take() else {
            return 0;
        };
        // The `kill` utility rather than a libc binding: one more dev-dependency would change
        // feature unification and rebuild RocksDB's C++.
        let sent = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(sent, "kill -TERM failed");
        match wait_bounded(&mut c, Duration::from_secs(15)) {
            Some(status) => exit_code(status),
            None => panic!(
                "node did not stop within 15 s of SIGTERM; killed\n{}",
                self.log()
            ),
        }
    }

    /// Key file path by name.
    pub fn key(&self, name: &str) -> &Path {
        self.keys
            .get(name)
            .unwrap_or_else(|| panic!("no key {name}"))
    }

    /// Public key hex by name.
    pub fn pk(&self, name: &str) -> &str {
        self.pubkeys
            .get(name)
            .unwrap_or_else(|| panic!("no key {name}"))
    }

    /// The secret key of a key file, as a signer.
    pub fn keypair(&self, name: &str) -> Keypair {
        tally_node::keyfile::read_key_file(self.key(name)).expect("read key file")
    }

    /// Runs a read-only or local CLI command (no node URL added).
    pub fn cli<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> CmdOut {
        run_tally(args)
    }

    /// Runs a query command against the node: appends `--node URL --json`.
    pub fn query(&self, args: &[&str]) -> CmdOut {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--node", &self.base, "--json"]);
        run_tally(&all)
    }

    /// Runs a signing command as key `signer`: appends `--key FILE --node URL --json`.
    pub fn signed(&self, signer: &str, args: &[&str]) -> CmdOut {
        let key = self.key(signer).to_str().expect("utf8").to_string();
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--key", &key, "--node", &self.base, "--json"]);
        run_tally(&all)
    }

    /// Asserts a signing command committed (exit 0) and returns its entry id.
    pub fn committed(&self, out: &CmdOut) -> String {
        assert_eq!(out.code, 0, "expected a committed entry: {out}");
        assert_eq!(out.json["status"], "committed", "{out}");
        assert!(out.json["height"].as_u64().is_some(), "{out}");
        self.ordered.set(self.ordered.get() + 1);
        out.json["id"].as_str().expect("id").to_string()
    }

    /// Asserts a signing command was rejected by rule `code` in a block (exit 1) and returns its
    /// entry id.
    pub fn rejected(&self, out: &CmdOut, code: &str) -> String {
        assert_eq!(out.code, 1, "expected a rejection with {code}: {out}");
        assert_eq!(out.json["status"], "rejected", "{out}");
        assert_eq!(out.json["reason"]["code"], code, "{out}");
        assert!(
            out.json["height"].as_u64().is_some(),
            "a rule rejection is recorded in a block: {out}"
        );
        self.ordered.set(self.ordered.get() + 1);
        self.rule_rejected.set(self.rule_rejected.get() + 1);
        out.json["id"].as_str().expect("id").to_string()
    }

    /// Asserts a signing command failed for `missing_role`. Accepts both places the check can
    /// happen: refused at the door (never ordered, no height), or ordered into a block and
    /// rejected there as evidence (then counted like any rule rejection). Returns whether it
    /// was ordered.
    pub fn missing_role(&self, out: &CmdOut) -> bool {
        assert_eq!(out.code, 1, "expected a missing_role refusal: {out}");
        assert_eq!(out.json["status"], "rejected", "{out}");
        assert_eq!(out.json["reason"]["code"], "missing_role", "{out}");
        if out.json["height"].is_u64() {
            self.ordered.set(self.ordered.get() + 1);
            self.rule_rejected.set(self.rule_rejected.get() + 1);
            true
        } else {
            false
        }
    }

    /// The admin grants `role` to the staff key `who`.
    pub fn grant(&self, who: &str, role: &str) -> String {
        let pk = self.pk(who).to_string();
        let out = self.signed("admin", &["role", "grant", "--to", &pk, "--role", role]);
        self.committed(&out)
    }

    /// The admin opens a USD food programme, open for 30 days; returns its entry id.
    pub fn create_programme(&self, id: &str, budget: u64) -> String {
        let out = self.try_create_programme(id, budget);
        self.committed(&out)
    }

    /// The admin asks to open a USD food programme, open for 30 days, whatever the outcome.
    pub fn try_create_programme(&self, id: &str, budget: u64) -> CmdOut {
        let budget = budget.to_string();
        self.signed(
            "admin",
            &[
                "programme",
                "create",
                "--id",
                id,
                "--unit",
                "USD",
                "--budget",
                &budget,
                "--until",
                "+30d",
                "--assistance",
                "food-basket",
                "--period",
                "2026-11",
            ],
        )
    }

    /// A devnet ready for the aid workflow: the token secrets written, `issuer`, `redeemer` and
    /// `vendor` granted their roles, plus `extra` grants as (key, role), and programme
    /// `food-2026` opened with `budget`.
    pub fn start_aid(extra: &[(&str, &str)], budget: u64) -> Self {
        let net = Self::start();
        net.write_file("agency.secret", b"agency-secret-for-tests-0123456789\n");
        net.write_file("consortium.secret", b"consortium-dedup-secret-abcdefghij\n");
        let staff = [
            ("issuer", "issuer"),
            ("redeemer", "redeemer"),
            ("vendor", "vendor"),
        ];
        for (who, role) in staff.iter().chain(extra) {
            net.grant(who, role);
        }
        net.create_programme("food-2026", budget);
        net
    }

    /// Derives a person's subject and dedup tokens with `tally subject derive`, from the secrets
    /// in `agency.secret` and `consortium.secret` of the devnet's directory.
    pub fn derive_tokens(&self, reference: &str) -> (String, String) {
        let secret = self.dir.path().join("agency.secret");
        let dedup = self.dir.path().join("consortium.secret");
        let out = self.cli(&[
            "subject",
            "derive",
            "--json",
            "--secret-file",
            secret.to_str().expect("utf8"),
            "--dedup-secret-file",
            dedup.to_str().expect("utf8"),
            "--reference",
            reference,
        ]);
        let v = out.ok();
        let subject = v["subject"].as_str().expect("subject").to_string();
        let dedup = v["dedup"].as_str().expect("dedup").to_string();
        assert_eq!(subject.len(), 64, "{out}");
        assert_eq!(dedup.len(), 64, "{out}");
        assert_ne!(subject, dedup, "subject and dedup tokens differ");
        (subject, dedup)
    }

    /// Issues a voucher of programme `food-2026` as `issuer`.
    pub fn issue_voucher(
        &self,
        subject: &str,
        amount: u64,
        expires: &str,
        dedup: Option<&str>,
    ) -> CmdOut {
        let amount = amount.to_string();
        let mut args = vec![
            "voucher",
            "issue",
            "--programme",
            "food-2026",
            "--subject",
            subject,
            "--amount",
            &amount,
            "--expires",
            expires,
        ];
        if let Some(d) = dedup {
            args.extend(["--dedup", d]);
        }
        self.signed("issuer", &args)
    }

    /// Redeems as `redeemer` for `vendor`.
    pub fn redeem_voucher(&self, voucher: &str, amount: u64, reference: &str) -> CmdOut {
        self.redeem_as("redeemer", voucher, amount, reference, &[])
    }

    /// Redeems as `signer` for `vendor`, with `extra` flags (say `--offline`).
    pub fn redeem_as(
        &self,
        signer: &str,
        voucher: &str,
        amount: u64,
        reference: &str,
        extra: &[&str],
    ) -> CmdOut {
        let amount = amount.to_string();
        let vendor = self.pk("vendor").to_string();
        let mut args = vec![
            "voucher",
            "redeem",
            "--voucher",
            voucher,
            "--amount",
            &amount,
            "--vendor",
            &vendor,
            "--reference",
            reference,
        ];
        args.extend_from_slice(extra);
        self.signed(signer, &args)
    }

    /// Writes a file in the devnet's directory and returns its path.
    pub fn write_file(&self, name: &str, contents: &[u8]) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, contents).expect("write file");
        p
    }

    /// A genesis for another chain, with this devnet's admin and validator keys, written to
    /// `<chain_id>-genesis.toml`: what a proof or chain checked against the wrong genesis meets.
    pub fn other_genesis(&self, chain_id: &str) -> PathBuf {
        let other = self.dir.path().join(format!("{chain_id}-genesis.toml"));
        let admin = format!("{AGENCY}={}", self.key("admin").display());
        let validator = format!("{AGENCY}={}", self.key("validator").display());
        self.cli(&[
            "genesis",
            "init",
            "--chain-id",
            chain_id,
            "--admin",
            &admin,
            "--validator",
            &validator,
            "--out",
            other.to_str().expect("utf8"),
        ])
        .ok();
        other
    }

    /// `tally audit verify --data-dir --genesis --json`.
    pub fn audit(&self) -> CmdOut {
        audit_verify(&self.data_dir, &self.genesis)
    }

    /// Stops the node cleanly (exit 0), audits its data offline, and checks the audit agrees
    /// with what the node last reported and with every entry this harness saw ordered.
    /// Returns (status before stopping, audit).
    pub fn stop_and_audit(&mut self) -> (Value, Value) {
        let status = self.query(&["status"]).ok().clone();
        let height = status["height"].as_u64().expect("height");
        let code = self.stop_node();
        assert_eq!(code, 0, "clean shutdown exits 0\n{}", self.log());
        let audit = self.audit_ok();
        assert_eq!(audit["blocks"], height, "{audit}");
        assert_eq!(audit["entries"], self.ordered.get(), "{audit}");
        assert_eq!(
            audit["rejected_entries"],
            self.rule_rejected.get(),
            "{audit}"
        );
        assert_eq!(audit["state_root"], status["state_root"], "{audit}");
        (status, audit)
    }

    /// Runs `audit verify` and asserts it passes; returns its JSON.
    pub fn audit_ok(&self) -> Value {
        let out = self.audit();
        assert_eq!(out.code, 0, "audit verify must pass: {out}");
        assert_eq!(out.json["ok"], true, "{out}");
        assert_eq!(out.json["chain_id"], CHAIN_ID, "{out}");
        out.json
    }
}

impl Drop for Devnet {
    fn drop(&mut self) {
        self.kill_node();
    }
}

/// A node's API behind a proxy on loopback that records each request's method and path, and
/// may rewrite the JSON of GET answers (a node that lies). One request per connection. Serves
/// until dropped.
pub struct Proxy {
    /// The proxy's base URL.
    pub base: String,
    requests: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Proxy {
    /// Forwards to `upstream`; `rewrite(path, answer)` may change a GET's JSON answer.
    pub fn start(upstream: &str, rewrite: fn(&str, &mut Value)) -> Self {
        use std::io::{BufRead, BufReader, Write};
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        listener.set_nonblocking(true).expect("nonblocking");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (upstream, flag, seen) = (upstream.to_string(), stop.clone(), requests.clone());
        std::thread::spawn(move || {
            let agent = agent();
            while !flag.load(Ordering::Relaxed) {
                let Ok((mut conn, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let _ = conn.set_nonblocking(false);
                let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                let mut reader = BufReader::new(conn.try_clone().expect("clone stream"));
                let mut request = String::new();
                if reader.read_line(&mut request).is_err() {
                    continue;
                }
                let (mut length, mut content_type) = (0usize, String::from("application/json"));
                loop {
                    let mut header = String::new();
                    match reader.read_line(&mut header) {
                        Ok(n) if n > 2 => {
                            let (name, value) = header.split_once(':').unwrap_or(("", ""));
                            match name.trim().to_ascii_lowercase().as_str() {
                                "content-length" => length = value.trim().parse().unwrap_or(0),
                                "content-type" => content_type = value.trim().to_string(),
                                _ => {}
                            }
                        }
                        _ => break,
                    }
                }
                let mut body = vec![0u8; length];
                if reader.read_exact(&mut body).is_err() {
                    continue;
                }
                let mut parts = request.split_whitespace();
                let method = parts.next().unwrap_or("GET").to_string();
                let path = parts.next().unwrap_or("/").to_string();
                seen.lock()
                    .expect("requests")
                    .push(format!("{method} {path}"));
                let url = format!("{upstream}{path}");
                let answer = if method == "POST" {
                    agent
                        .post(&url)
                        .set("Content-Type", &content_type)
                        .send_bytes(&body)
                } else {
                    agent.get(&url).call()
                };
                let (status, mut text) = match answer {
                    Ok(r) => (200, r.into_string().unwrap_or_default()),
                    Err(ureq::Error::Status(s, r)) => (s, r.into_string().unwrap_or_default()),
                    Err(_) => (502, String::new()),
                };
                if method == "GET" {
                    if let Ok(mut v) = serde_json::from_str::<Value>(&text) {
                        rewrite(&path, &mut v);
                        text = v.to_string();
                    }
                }
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                    text.len()
                );
            }
        });
        Self {
            base,
            requests,
            stop,
        }
    }

    /// The requests forwarded so far, as `METHOD PATH`, and forgets them.
    pub fn take_requests(&self) -> Vec<String> {
        std::mem::take(&mut *self.requests.lock().expect("requests"))
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Holds up to `count` connections to `to` until `stop` is set, as an attacker would: each is
/// opened with `first` written on it, then `drip` written every 500 ms when given. One that the
/// node closes or answers is opened again, at most `per_second` new connections a second.
/// Returns how many it opened in all.
pub fn hold_connections(
    to: std::net::SocketAddr,
    count: usize,
    per_second: u32,
    first: &[u8],
    drip: Option<&[u8]>,
    stop: &std::sync::atomic::AtomicBool,
) -> u64 {
    use std::io::Write;
    use std::sync::atomic::Ordering;
    // 50 turns a second.
    let turn = Duration::from_millis(20);
    let opens_per_turn = (per_second / 50).max(1);
    let mut held: Vec<std::net::TcpStream> = Vec::new();
    let mut opened = 0;
    let mut last_drip = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let dripping = drip.filter(|_| last_drip.elapsed() >= Duration::from_millis(500));
        if dripping.is_some() {
            last_drip = Instant::now();
        }
        held.retain_mut(|s| {
            let mut byte = [0u8; 512];
            // End of file, an error, or an answer (a 503, a 408) ends the connection.
            let open =
                matches!(s.read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
            open && dripping.is_none_or(|d| s.write_all(d).is_ok())
        });
        for _ in 0..opens_per_turn {
            if held.len() >= count || stop.load(Ordering::Relaxed) {
                break;
            }
            let Ok(mut s) = std::net::TcpStream::connect_timeout(&to, Duration::from_millis(500))
            else {
                break;
            };
            opened += 1;
            if s.write_all(first).is_ok() && s.set_nonblocking(true).is_ok() {
                held.push(s);
            }
        }
        std::thread::sleep(turn);
    }
    opened
}
