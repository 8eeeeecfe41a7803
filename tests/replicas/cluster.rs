//! The replicas: processes of the accounts, payments and gateway services (the `stack` binary,
//! built by cargo for this test, running one service each: `stack service accounts`), each on
//! a port it picked itself and wrote to its `--addr-file`, and clients that fail over between
//! gateways.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use common::testkit::{self, TestDatabase};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

/// Processor workers per payments replica: the most payments one replica can hold when killed.
pub const PAYMENTS_WORKERS: usize = 2;
const ADMIN_EMAIL: &str = "root@example.com";
const ADMIN_PASSWORD: &str = "admin-password-1";
const ISSUER: &str = "http://replicas.test/accounts";

/// Which of the two gateways (and the accounts and payments replicas behind it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gateway {
    A,
    B,
}

/// Two of each service on one PostgreSQL (a database per service), one NATS and one Redis.
pub struct Cluster {
    pub client: reqwest::Client,
    accounts: [Replica; 2],
    payments: [Replica; 2],
    gateways: [Replica; 2],
    /// Payments stored when the B replicas were killed.
    killed_at: AtomicI64,
    /// The payments being processed at that moment.
    held_at_kill: Mutex<BTreeSet<String>>,
    /// Events claimed by a relay and not yet marked sent right after payments B died: the
    /// ones B may have published without marking, which A publishes again.
    claimed_at_kill: AtomicI64,
    /// Tries that failed because a replica was gone (refused, reset, 502/503), then retried.
    failovers: AtomicUsize,
    payments_db: sqlx::PgPool,
    accounts_db: sqlx::PgPool,
    nats: String,
    stream: String,
    _data: tempfile::TempDir,
    /// Whatever happens to the test, its stream and Redis keys do not outlive it.
    _cleanup: (testkit::StreamCleanup, testkit::RedisCleanup),
}

impl Cluster {
    /// Starts both replicas of each service at the same moment (so their migrations race),
    /// accounts first, then payments, then the gateways, and waits until all are ready.
    pub async fn start(
        accounts_db: &TestDatabase,
        payments_db: &TestDatabase,
        nats: &str,
        redis: &str,
        rate_rps: u32,
        rate_burst: u32,
    ) -> Self {
        let data = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
        let id = uuid::Uuid::new_v4().simple().to_string();
        let key_encryption_key = base64::engine::general_purpose::STANDARD.encode(
            [
                uuid::Uuid::new_v4().into_bytes(),
                uuid::Uuid::new_v4().into_bytes(),
            ]
            .concat(),
        );
        let stream = format!("R{id}");

        let accounts = |name: &'static str| {
            let data_dir = data.path().join(name);
            let env = vec![
                ("ACCOUNTS_ADDR", "127.0.0.1:0".to_owned()),
                ("ACCOUNTS_DATABASE_URL", accounts_db.url_string()),
                ("ACCOUNTS_ISSUER", ISSUER.to_owned()),
                // Every replica must seal and open signing keys with the same key.
                ("ACCOUNTS_KEY_ENCRYPTION_KEY", key_encryption_key.clone()),
                ("ACCOUNTS_SIGNING_ALG", "EdDSA".to_owned()),
                ("ACCOUNTS_BOOTSTRAP_ADMIN_EMAIL", ADMIN_EMAIL.to_owned()),
                (
                    "ACCOUNTS_BOOTSTRAP_ADMIN_PASSWORD",
                    ADMIN_PASSWORD.to_owned(),
                ),
                ("DATA_DIR", data_dir.display().to_string()),
            ];
            Replica::start("accounts", name, env)
        };
        let (accounts_a, accounts_b) = tokio::join!(accounts("accounts-a"), accounts("accounts-b"));

        let payments = |name: &'static str, accounts: &Replica| {
            let env = vec![
                ("PAYMENTS_ADDR", "127.0.0.1:0".to_owned()),
                ("PAYMENTS_DATABASE_URL", payments_db.url_string()),
                ("PAYMENTS_JWKS_URL", accounts.url("/.well-known/jwks.json")),
                ("ACCOUNTS_ISSUER", ISSUER.to_owned()),
                ("NATS_URL", nats.to_owned()),
                ("PAYMENTS_STREAM", stream.clone()),
                ("PAYMENTS_SUBJECT_PREFIX", format!("r{id}.payments.payment")),
                ("PAYMENTS_WORKERS", PAYMENTS_WORKERS.to_string()),
                // A provider call takes a while, so a killed replica dies holding payments;
                // its leases run out soon after, and a request it held unlocks soon too.
                ("PAYMENTS_SANDBOX_LATENCY_MS", "150".to_owned()),
                ("PAYMENTS_LEASE_SECONDS", "5".to_owned()),
                ("PAYMENTS_IDEMPOTENCY_LOCK_TIMEOUT_SECONDS", "2".to_owned()),
                ("PAYMENTS_POLL_INTERVAL_MS", "100".to_owned()),
                ("PAYMENTS_RETRY_BASE_MS", "50".to_owned()),
                ("DATA_DIR", data.path().join(name).display().to_string()),
            ];
            Replica::start("payments", name, env)
        };
        let (payments_a, payments_b) = tokio::join!(
            payments("payments-a", &accounts_a),
            payments("payments-b", &accounts_b)
        );

        let gateway = |name: &'static str, accounts: &Replica, payments: &Replica| {
            let env = vec![
                ("GATEWAY_ADDR", "127.0.0.1:0".to_owned()),
                ("GATEWAY_ACCOUNTS_URL", accounts.url("")),
                ("GATEWAY_PAYMENTS_URL", payments.url("")),
                ("GATEWAY_JWKS_URL", accounts.url("/.well-known/jwks.json")),
                ("ACCOUNTS_ISSUER", ISSUER.to_owned()),
                ("GATEWAY_REDIS_URL", redis.to_owned()),
                ("GATEWAY_REDIS_PREFIX", format!("test:{id}:")),
                ("GATEWAY_RATE_LIMIT_RPS", rate_rps.to_string()),
                ("GATEWAY_RATE_LIMIT_BURST", rate_burst.to_string()),
                ("GATEWAY_WORKERS", "1".to_owned()),
                ("DATA_DIR", data.path().join(name).display().to_string()),
            ];
            Replica::start("gateway", name, env)
        };
        let (gateway_a, gateway_b) = tokio::join!(
            gateway("gateway-a", &accounts_a, &payments_a),
            gateway("gateway-b", &accounts_b, &payments_b)
        );

        let payments_db = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect_lazy(&payments_db.url_string())
            .unwrap_or_else(|e| panic!("payments database URL: {e}"));
        let accounts_db = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect_lazy(&accounts_db.url_string())
            .unwrap_or_else(|e| panic!("accounts database URL: {e}"));
        let cluster = Self {
            client: reqwest::Client::new(),
            accounts: [accounts_a, accounts_b],
            payments: [payments_a, payments_b],
            gateways: [gateway_a, gateway_b],
            killed_at: AtomicI64::new(0),
            held_at_kill: Mutex::new(BTreeSet::new()),
            claimed_at_kill: AtomicI64::new(0),
            failovers: AtomicUsize::new(0),
            payments_db,
            accounts_db,
            nats: nats.to_owned(),
            _cleanup: (
                testkit::StreamCleanup::new(nats, &stream),
                testkit::RedisCleanup::new(redis, &format!("test:{id}:")),
            ),
            stream,
            _data: data,
        };
        for replica in cluster.replicas() {
            cluster.wait_ready(replica).await;
        }
        cluster
    }

    fn replicas(&self) -> impl Iterator<Item = &Replica> {
        self.accounts
            .iter()
            .chain(&self.payments)
            .chain(&self.gateways)
    }

    async fn wait_ready(&self, replica: &Replica) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let response = self.client.get(replica.url("/readyz")).send().await;
            if response.is_ok_and(|r| r.status() == 200) {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "{} is not ready after 60 s:\n{}",
                    replica.name,
                    replica.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn gateway_url(&self, gateway: Gateway, path: &str) -> String {
        self.gateways[gateway as usize].url(path)
    }

    /// Signs a user up at one accounts replica and logs in at the other.
    pub async fn user_token(&self, email: &str, n: usize) -> String {
        let (signed_up_at, logged_in_at) = (&self.accounts[n % 2], &self.accounts[(n + 1) % 2]);
        testkit::sign_up(&self.client, &signed_up_at.url(""), email, "password-123").await;
        testkit::password_token(&self.client, &logged_in_at.url(""), email, "password-123").await
    }

    /// The bootstrap admin's token, logged in through `gateway`.
    pub async fn admin_token(&self, gateway: Gateway) -> String {
        let accounts = self.gateway_url(gateway, "/accounts");
        testkit::password_token(&self.client, &accounts, ADMIN_EMAIL, ADMIN_PASSWORD).await
    }

    /// The gateway for the `attempt`-th try: alternating, as a client with two endpoints does
    /// (it learns that one is gone by trying it).
    fn pick(&self, attempt: usize) -> Gateway {
        if attempt.is_multiple_of(2) {
            Gateway::A
        } else {
            Gateway::B
        }
    }

    /// Creates a payment the way a careful client does: the same key on every try, through the
    /// other gateway when one fails, after `Retry-After` when told to wait. Returns the payment.
    pub async fn create_payment(
        &self,
        token: &str,
        key: &str,
        body: &Value,
        first: usize,
    ) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut attempt = first;
        loop {
            let gateway = self.pick(attempt);
            let sent = self
                .client
                .post(self.gateway_url(gateway, "/payments/v1/payments"))
                .bearer_auth(token)
                .header("idempotency-key", key)
                .json(body)
                .timeout(Duration::from_secs(30))
                .send()
                .await;
            let wait = match sent {
                Ok(response) => match response.status().as_u16() {
                    200..=202 => {
                        return response
                            .json()
                            .await
                            .unwrap_or_else(|e| panic!("{key}: the payment is not JSON: {e}"));
                    }
                    // In flight elsewhere, or limited: try again when told.
                    409 | 429 => retry_after(&response),
                    // An upstream that just died: try again.
                    502..=504 => {
                        self.failovers.fetch_add(1, Ordering::Relaxed);
                        retry_after(&response)
                    }
                    status => panic!(
                        "{key}: {status} through gateway {gateway:?}: {}",
                        response.text().await.unwrap_or_default()
                    ),
                },
                // A killed gateway: refused or reset.
                Err(_) => {
                    self.failovers.fetch_add(1, Ordering::Relaxed);
                    Duration::from_millis(50)
                }
            };
            assert!(
                Instant::now() < deadline,
                "{key} was not accepted within 60 s"
            );
            attempt += 1;
            tokio::time::sleep(wait.min(Duration::from_secs(2))).await;
        }
    }

    /// Makes the published next signing keys look published two hours ago, so that a
    /// rotation activates one at once.
    pub async fn backdate_next_keys(&self) {
        sqlx::query(
            "UPDATE signing_keys SET created_at = now() - interval '2 hours' WHERE activates_at IS NULL",
        )
        .execute(&self.accounts_db)
        .await
        .unwrap_or_else(|e| panic!("backdate the next keys: {e}"));
    }

    /// The payments database, read directly.
    pub fn payments_database(&self) -> &sqlx::PgPool {
        &self.payments_db
    }

    /// Waits until at least `count` payments exist.
    pub async fn wait_for_payments(&self, count: i64) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.count("SELECT count(*) FROM payments").await < count {
            assert!(
                Instant::now() < deadline,
                "{count} payments were never created"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `count` payments exist, all final (and every refund), with every event
    /// published.
    pub async fn wait_until_settled_and_published(&self, count: i64) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let payments = self.count("SELECT count(*) FROM payments").await;
            let open = self
                .count("SELECT count(*) FROM payments WHERE status IN ('pending', 'processing')")
                .await;
            let open = open
                + self
                    .count("SELECT count(*) FROM refunds WHERE status = 'pending'")
                    .await;
            let unpublished = self
                .count("SELECT count(*) FROM payment_events WHERE published_at IS NULL")
                .await;
            if payments == count && open == 0 && unpublished == 0 {
                return;
            }
            if Instant::now() > deadline {
                let logs: Vec<String> = self.payments.iter().map(Replica::log).collect();
                panic!(
                    "after 90 s: {payments} of {count} payments, {open} payments or refunds not final, {unpublished} events unpublished\n{}",
                    logs.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn count(&self, sql: &'static str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(&self.payments_db)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// `payments_processed_total`, all outcomes, of the payments replica behind `gateway`.
    pub async fn payments_processed(&self, gateway: Gateway) -> f64 {
        let text = self
            .client
            .get(self.payments[gateway as usize].url("/metrics"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("metrics: {e}"))
            .text()
            .await
            .unwrap_or_else(|e| panic!("metrics body: {e}"));
        text.lines()
            .filter(|line| line.starts_with("payments_processed_total{"))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// SIGKILL to payments B and accounts B (gateway B now meets dead upstreams), then to
    /// gateway B: no drain, no goodbye.
    pub async fn kill_replicas_b(&self) {
        let held: Vec<String> =
            sqlx::query_scalar("SELECT id FROM payments WHERE status = 'processing'")
                .fetch_all(&self.payments_db)
                .await
                .unwrap_or_else(|e| panic!("payments in flight: {e}"));
        let stored = self.count("SELECT count(*) FROM payments").await;
        self.killed_at.store(stored, Ordering::SeqCst);
        eprintln!(
            "killing the B replicas at {stored} payments; {} are being processed",
            held.len()
        );
        if let Ok(mut set) = self.held_at_kill.lock() {
            set.extend(held);
        }
        tokio::join!(self.payments[1].kill(), self.accounts[1].kill());
        let claimed = self
            .count(
                "SELECT count(*) FROM payment_events \
                 WHERE published_at IS NULL AND relay_lease_until IS NOT NULL",
            )
            .await;
        self.claimed_at_kill.store(claimed, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.gateways[1].kill().await;
    }

    /// Events payments A's relay sent again that JetStream already held (its
    /// `payments_outbox_duplicates_total`), and how many payments B might have left so:
    /// claimed, and not marked sent, when it died.
    pub async fn relay_repeats(&self) -> (i64, i64) {
        let text = self
            .client
            .get(self.payments[0].url("/metrics"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("metrics: {e}"))
            .text()
            .await
            .unwrap_or_else(|e| panic!("metrics body: {e}"));
        let repeats = text
            .lines()
            .find_map(|line| line.strip_prefix("payments_outbox_duplicates_total "))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or_else(|| panic!("no payments_outbox_duplicates_total in {text}"));
        (repeats, self.claimed_at_kill.load(Ordering::SeqCst))
    }

    /// The payments that were being processed when the B replicas were killed (a SIGKILL can
    /// come between a provider call and its record, so these may be charged again).
    pub fn held_at_kill(&self) -> BTreeSet<String> {
        self.held_at_kill
            .lock()
            .map(|set| set.clone())
            .unwrap_or_default()
    }

    /// Provider calls per payment, from the sandbox provider's own ledger (`sandbox_calls`,
    /// written as each call arrives: a replica killed mid-call cannot lose it, as it could
    /// the last lines of its log).
    pub async fn provider_calls(&self) -> BTreeMap<String, usize> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT payment_id, COUNT(*) FROM sandbox_calls WHERE operation = 'charge' GROUP BY payment_id")
                .fetch_all(&self.payments_db)
                .await
                .unwrap_or_else(|e| panic!("the sandbox's ledger: {e}"));
        rows.into_iter()
            .map(|(payment, calls)| (payment, usize::try_from(calls).unwrap_or(usize::MAX)))
            .collect()
    }

    /// How many payments were stored when the B replicas were killed, and how many tries
    /// failed over to the surviving gateway.
    pub fn kill_report(&self) -> (i64, usize) {
        (
            self.killed_at.load(Ordering::SeqCst),
            self.failovers.load(Ordering::Relaxed),
        )
    }

    /// The ids (`Nats-Msg-Id`) of every message in this test's stream, which is then deleted.
    pub async fn read_stream(&self) -> Vec<String> {
        let client = async_nats::connect(&self.nats)
            .await
            .unwrap_or_else(|e| panic!("NATS: {e}"));
        let context = async_nats::jetstream::new(client);
        let mut stream = context
            .get_stream(&self.stream)
            .await
            .unwrap_or_else(|e| panic!("stream {}: {e}", self.stream));
        let state = stream
            .info()
            .await
            .unwrap_or_else(|e| panic!("stream info: {e}"))
            .state
            .clone();
        let mut ids = Vec::new();
        if state.messages > 0 {
            for sequence in state.first_sequence..=state.last_sequence {
                let message = stream
                    .get_raw_message(sequence)
                    .await
                    .unwrap_or_else(|e| panic!("message {sequence}: {e}"));
                let id = message.headers.get("Nats-Msg-Id").map(ToString::to_string);
                ids.push(id.unwrap_or_else(|| panic!("message {sequence} has no Nats-Msg-Id")));
            }
        }
        let _ = context.delete_stream(&self.stream).await;
        ids
    }

    /// SIGTERM to the replicas still running: each finishes what it has and exits 0.
    pub async fn stop_survivors(&self) {
        for replica in [&self.gateways[0], &self.payments[0], &self.accounts[0]] {
            let status = replica.terminate().await;
            assert!(
                status.success(),
                "{} exited with {status}:\n{}",
                replica.name,
                replica.log()
            );
        }
    }
}

/// The `Retry-After` of a response, or a short pause.
fn retry_after(response: &reqwest::Response) -> Duration {
    response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .map_or(Duration::from_millis(200), Duration::from_secs)
}

/// The `kid` in a token's header.
pub fn kid_of(token: &str) -> String {
    let header = token.split('.').next().unwrap_or_default();
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .unwrap_or_else(|e| panic!("token header: {e}"));
    let header: Value = serde_json::from_slice(&header).unwrap_or_default();
    header["kid"].as_str().unwrap_or_default().to_owned()
}

/// One process of a service binary, its log kept for failure messages.
pub struct Replica {
    name: &'static str,
    addr: SocketAddr,
    child: tokio::sync::Mutex<Child>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Replica {
    /// Starts the service `service` with only `env` (plus JSON logs) and waits until it has
    /// written the address it listens on.
    async fn start(service: &str, name: &'static str, env: Vec<(&str, String)>) -> Self {
        let addr_file = std::env::temp_dir().join(format!(
            "replica-{name}-{}.addr",
            uuid::Uuid::new_v4().simple()
        ));
        let mut child = Command::new(env!("CARGO_BIN_EXE_stack"))
            .args(["service", service, "--addr-file"])
            .arg(&addr_file)
            .env_clear()
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {service}: {e}"));
        let log = Arc::new(Mutex::new(Vec::new()));
        if let Some(stdout) = child.stdout.take() {
            tokio::spawn(collect(stdout, log.clone()));
        }
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(collect(stderr, log.clone()));
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        let addr = loop {
            if let Some(addr) = std::fs::read_to_string(&addr_file)
                .ok()
                .and_then(|text| text.trim().parse::<SocketAddr>().ok())
            {
                let _ = std::fs::remove_file(&addr_file);
                break addr;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("{name} exited with {status}:\n{}", lines(&log));
            }
            assert!(
                Instant::now() < deadline,
                "{name} did not start listening:\n{}",
                lines(&log)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        Self {
            name,
            addr,
            child: tokio::sync::Mutex::new(child),
            log,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn log(&self) -> String {
        format!("--- {} ---\n{}", self.name, lines(&self.log))
    }

    async fn kill(&self) {
        let mut child = self.child.lock().await;
        child
            .kill()
            .await
            .unwrap_or_else(|e| panic!("cannot kill {}: {e}", self.name));
    }

    async fn terminate(&self) -> ExitStatus {
        let mut child = self.child.lock().await;
        let pid = child
            .id()
            .unwrap_or_else(|| panic!("{} is not running", self.name));
        let sent = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await
            .unwrap_or_else(|e| panic!("kill -TERM {pid}: {e}"));
        assert!(sent.success(), "kill -TERM {pid}");
        tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await
            .unwrap_or_else(|_| panic!("{} did not stop within 30 s of SIGTERM", self.name))
            .unwrap_or_else(|e| panic!("{}: {e}", self.name))
    }
}

fn lines(log: &Mutex<Vec<String>>) -> String {
    log.lock().map(|lines| lines.join("\n")).unwrap_or_default()
}

/// Keeps every line of `output`.
async fn collect(output: impl AsyncRead + Unpin, log: Arc<Mutex<Vec<String>>>) {
    let mut reader = BufReader::new(output).lines();
    while let Ok(Some(line)) = reader.next_line().await {
        if let Ok(mut log) = log.lock() {
            log.push(line);
        }
    }
}
