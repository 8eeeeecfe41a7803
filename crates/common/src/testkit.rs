//! Test support: a fresh database per test, on SQLite and on PostgreSQL.
//!
//! SQLite tests always run. PostgreSQL tests run when `TEST_DATABASE_URL` points at a server
//! (`postgres://postgres@127.0.0.1:5432/postgres`): each test creates its own database there
//! and drops it afterwards. Tests that need PostgreSQL, NATS or Redis are compiled as ignored
//! when their variable is unset (the packages' build script, `build/test_servers.rs`, sets
//! the `test_postgres`, `test_nats` and `test_redis` cfgs): they show as ignored, never as
//! passed. Run anyway (`--include-ignored`) or set but unreachable, they fail. CI sets all
//! three, with `TEST_SERVERS_REQUIRED=1`, which makes an unset one a build error.

use std::str::FromStr;
use std::sync::Arc;

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};

use crate::db::DatabaseUrl;

/// The variable naming the PostgreSQL server the tests may use.
pub const TEST_DATABASE_URL: &str = "TEST_DATABASE_URL";

/// A database that exists for one test and is removed after it.
pub struct TestDatabase {
    /// The URL to hand to the service.
    pub url: DatabaseUrl,
    /// Set for PostgreSQL: the server URL and the database to drop.
    postgres: Option<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDatabase {
    /// A new SQLite file in a temporary directory.
    pub async fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("cannot make a temp dir: {e}"));
        Self {
            url: DatabaseUrl::Sqlite(dir.path().join("test.db")),
            postgres: None,
            _dir: Some(dir),
        }
    }

    /// A new PostgreSQL database on `TEST_DATABASE_URL`. Panics when the variable is unset
    /// (the test should have been ignored) or the server cannot be reached: a test that needs
    /// it fails rather than passes without it.
    pub async fn postgres() -> Self {
        let server = required_url(
            "PostgreSQL",
            TEST_DATABASE_URL,
            "postgres://postgres@127.0.0.1:5432/postgres",
        );
        let name = format!("test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = connect_admin(&server).await;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
        let _ = admin.close().await;
        let mut url = url::Url::parse(&server)
            .unwrap_or_else(|e| panic!("{TEST_DATABASE_URL} is not a URL: {e}"));
        url.set_path(&name);
        Self {
            url: DatabaseUrl::Postgres(url.to_string()),
            postgres: Some((server, name)),
            _dir: None,
        }
    }

    /// The URL as a string, for environment variables.
    pub fn url_string(&self) -> String {
        match &self.url {
            DatabaseUrl::Sqlite(path) => format!("sqlite://{}", path.display()),
            DatabaseUrl::Postgres(url) => url.clone(),
        }
    }

    /// For PostgreSQL: refuse (or allow again) new connections to this database and end the
    /// open ones, which is what a database outage looks like to the service.
    pub async fn set_reachable(&self, reachable: bool) {
        let Some((server, name)) = &self.postgres else {
            panic!("only a PostgreSQL test database can be made unreachable");
        };
        let mut admin = connect_admin(server).await;
        let allow = if reachable { "true" } else { "false" };
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS {allow}"
        )))
        .execute(&mut admin)
        .await
        .unwrap_or_else(|e| panic!("cannot alter {name}: {e}"));
        if !reachable {
            sqlx::query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
            )
            .bind(name)
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("cannot end connections to {name}: {e}"));
        }
        let _ = admin.close().await;
    }

    /// For PostgreSQL: make every new transaction of this database read-only (or writable
    /// again) and end the open connections, which is what a failover to a standby looks like
    /// to the service: reads work, every write fails.
    pub async fn set_read_only(&self, read_only: bool) {
        let Some((server, name)) = &self.postgres else {
            panic!("only a PostgreSQL test database can be made read-only");
        };
        let mut admin = connect_admin(server).await;
        let value = if read_only { "on" } else { "off" };
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "ALTER DATABASE \"{name}\" SET default_transaction_read_only = {value}"
        )))
        .execute(&mut admin)
        .await
        .unwrap_or_else(|e| panic!("cannot alter {name}: {e}"));
        sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
            .bind(name)
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("cannot end connections to {name}: {e}"));
        let _ = admin.close().await;
    }

    /// For SQLite: the database, migrated, then reopened by a pool that cannot write as it
    /// would: what a full disk (`PRAGMA max_page_count`: "database or disk is full") or a
    /// read-only file (`PRAGMA query_only`: "attempt to write a readonly database") looks
    /// like to SQLite, without filling a disk or needing a user that file modes apply to.
    pub async fn sqlite_constrained(
        &self,
        migrations: &crate::db::Migrations,
        constraint: SqliteConstraint,
    ) -> sqlx::SqlitePool {
        let DatabaseUrl::Sqlite(path) = &self.url else {
            panic!("only a SQLite test database can be constrained");
        };
        let migrated = crate::db::open(&self.url, 1, migrations)
            .await
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
        migrated.close().await;
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(path)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal);
        sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .after_connect(move |connection, _| {
                Box::pin(async move {
                    let pragma = match constraint {
                        SqliteConstraint::NearlyFull { spare_pages } => {
                            let (pages,): (i64,) = sqlx::query_as("PRAGMA page_count")
                                .fetch_one(&mut *connection)
                                .await?;
                            format!("PRAGMA max_page_count = {}", pages + i64::from(spare_pages))
                        }
                        SqliteConstraint::ReadOnly => "PRAGMA query_only = ON".to_owned(),
                    };
                    sqlx::query(sqlx::AssertSqlSafe(pragma))
                        .execute(&mut *connection)
                        .await?;
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .unwrap_or_else(|e| panic!("cannot reopen {}: {e}", path.display()))
    }

    /// Whether this is the PostgreSQL variant.
    pub fn is_postgres(&self) -> bool {
        self.postgres.is_some()
    }
}

async fn connect_admin(server: &str) -> PgConnection {
    let options = PgConnectOptions::from_str(server)
        .unwrap_or_else(|e| panic!("{TEST_DATABASE_URL} is not a PostgreSQL URL: {e}"));
    PgConnection::connect_with(&options).await.unwrap_or_else(|e| {
        panic!("{TEST_DATABASE_URL} is set but PostgreSQL does not answer ({e}); start it or unset the variable")
    })
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some((server, name)) = self.postgres.take() else {
            return;
        };
        // Drop runs outside async; use a short-lived runtime on its own thread.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async move {
                let mut admin = connect_admin(&server).await;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                )))
                .execute(&mut admin)
                .await
                .ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(_))) {
            eprintln!("warning: a test database could not be dropped");
        }
    }
}

/// How [`TestDatabase::sqlite_constrained`] keeps a SQLite pool from writing.
#[derive(Debug, Clone, Copy)]
pub enum SqliteConstraint {
    /// The file may grow by this many pages more, then every growing write fails as on a
    /// full disk.
    NearlyFull {
        /// Pages left.
        spare_pages: u32,
    },
    /// Every write fails as on a read-only file.
    ReadOnly,
}

/// Runs each named `async fn(TestDatabase)` twice, as `<name>::sqlite` and `<name>::postgres`.
/// The PostgreSQL variant is ignored (reported so, with what to set) unless `TEST_DATABASE_URL`
/// is set. `needs(test_nats, test_redis): ...` first marks tests that also need those servers,
/// ignored on both databases unless `TEST_NATS_URL` / `TEST_REDIS_URL` are set.
#[macro_export]
macro_rules! both_databases {
    (needs $servers:tt : $($name:ident),+ $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[cfg_attr(
                not(all $servers),
                ignore = "needs a test server: set TEST_NATS_URL / TEST_REDIS_URL (see the README)"
            )]
            async fn sqlite() {
                super::$name($crate::testkit::TestDatabase::sqlite().await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[cfg_attr(
                not(all(test_postgres, all $servers)),
                ignore = "needs test servers: set TEST_DATABASE_URL and TEST_NATS_URL / TEST_REDIS_URL (see the README)"
            )]
            async fn postgres() {
                super::$name($crate::testkit::TestDatabase::postgres().await).await;
            }
        }
    )+};
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::testkit::TestDatabase::sqlite().await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[cfg_attr(
                not(test_postgres),
                ignore = "needs PostgreSQL: set TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres"
            )]
            async fn postgres() {
                super::$name($crate::testkit::TestDatabase::postgres().await).await;
            }
        }
    )+};
}

/// A service running in the background of a test, stopped when dropped.
pub struct Running {
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    shutdown: tokio_util::sync::CancellationToken,
    handle: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Running {
    /// Starts `run(shutdown)` on a task; `addr` is where the service already listens.
    pub fn spawn<F>(
        addr: std::net::SocketAddr,
        run: impl FnOnce(tokio_util::sync::CancellationToken) -> F,
    ) -> Self
    where
        F: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let shutdown = tokio_util::sync::CancellationToken::new();
        let handle = tokio::spawn(run(shutdown.clone()));
        Self {
            addr,
            shutdown,
            handle: Some(handle),
        }
    }

    /// `http://addr{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Asks for a graceful shutdown without waiting for it.
    pub fn begin_shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Shuts down gracefully and returns how the service ended.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        match self.handle.take() {
            Some(handle) => handle.await?,
            None => Ok(()),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl TestDatabase {
    /// Takes the database away from a running service: a real outage on PostgreSQL; on SQLite,
    /// which has no server to lose, the service's pool is closed. Returns whether
    /// [`TestDatabase::restore`] can bring it back.
    pub async fn take_down(&self, pool: &crate::db::Pool) -> bool {
        if self.is_postgres() {
            self.set_reachable(false).await;
            true
        } else {
            pool.close().await;
            false
        }
    }

    /// Ends an outage begun by [`TestDatabase::take_down`].
    pub async fn restore(&self) {
        self.set_reachable(true).await;
    }
}

/// Polls `GET {base}/readyz` until it answers `status` (readiness is evaluated at most once a
/// second), for at most 10 seconds; returns the body.
pub async fn wait_for_readiness(base: &str, status: u16) -> serde_json::Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (now, body) = readiness(base).await;
        if now == status {
            return body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{base}/readyz stayed {now} (waited for {status}): {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Polls `GET {base}/metrics` until `http_server_active_requests` is at least `count` (the
/// scrape itself counts as one), for at most 10 seconds: requests sent on other connections
/// have reached the service.
pub async fn wait_for_active_requests(base: &str, count: i64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let text = reqwest_text(&format!("{base}/metrics")).await;
        let active: i64 = text
            .lines()
            .find_map(|line| line.strip_prefix("http_server_active_requests "))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(0);
        if active >= count {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{base}: {active} requests in flight, waited for {count}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

async fn reqwest_text(url: &str) -> String {
    reqwest::get(url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .text()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// `GET {base}/healthz` must be 200 `{"status":"pass"}` in `application/health+json`.
pub async fn assert_live(base: &str) {
    let response = reqwest_get(&format!("{base}/healthz")).await;
    assert_eq!(response.0, 200, "healthz");
    assert_eq!(response.1, "application/health+json");
    assert_eq!(response.2, serde_json::json!({"status": "pass"}));
}

/// `GET {base}/readyz`: the status and the body, after checking the media type.
pub async fn readiness(base: &str) -> (u16, serde_json::Value) {
    let (status, content_type, body) = reqwest_get(&format!("{base}/readyz")).await;
    assert_eq!(content_type, "application/health+json", "readyz media type");
    (status, body)
}

async fn reqwest_get(url: &str) -> (u16, String, serde_json::Value) {
    let response = reqwest::get(url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = response.json().await.unwrap_or(serde_json::Value::Null);
    (status, content_type, body)
}

/// Signs `email` up with `password` at the accounts service whose base URL is `accounts` (the
/// service itself, or `.../accounts` through the gateway); the sign-up must succeed (201).
pub async fn sign_up(client: &reqwest::Client, accounts: &str, email: &str, password: &str) {
    let response = client
        .post(format!("{accounts}/v1/users"))
        .json(&serde_json::json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap_or_else(|e| panic!("sign up {email}: {e}"));
    assert_eq!(response.status(), 201, "sign up {email} at {accounts}");
}

/// The access token of a password login at the accounts service whose base URL is `accounts`;
/// the login must succeed (200).
pub async fn password_token(
    client: &reqwest::Client,
    accounts: &str,
    email: &str,
    password: &str,
) -> String {
    let response = client
        .post(format!("{accounts}/v1/token"))
        .form(&[
            ("grant_type", "password"),
            ("username", email),
            ("password", password),
        ])
        .send()
        .await
        .unwrap_or_else(|e| panic!("log in {email}: {e}"));
    assert_eq!(response.status(), 200, "log in {email} at {accounts}");
    let tokens: serde_json::Value = response
        .json()
        .await
        .unwrap_or_else(|e| panic!("log in {email}: the answer is not JSON: {e}"));
    tokens["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no access token in {tokens}"))
        .to_owned()
}

/// Records a migration that no release of this code has, as a newer release leaves behind, so
/// a test can check that the store still opens (rolling updates, rollbacks).
pub async fn record_newer_migration(pool: &crate::db::Pool) {
    const NEWER: &str = "INSERT INTO _sqlx_migrations \
        (version, description, success, checksum, execution_time) \
        VALUES (99991231000000, 'from a newer release', true, CHECKSUM, 0)";
    let result = match pool {
        crate::db::Pool::Sqlite(pool) => {
            sqlx::query(sqlx::AssertSqlSafe(NEWER.replace("CHECKSUM", "X'00'")))
                .execute(pool)
                .await
                .map(drop)
        }
        crate::db::Pool::Postgres(pool) => sqlx::query(sqlx::AssertSqlSafe(
            NEWER.replace("CHECKSUM", "'\\x00'::bytea"),
        ))
        .execute(pool)
        .await
        .map(drop),
    };
    result.unwrap_or_else(|e| panic!("cannot record a newer migration: {e}"));
}

/// The variable naming the NATS server the tests may use.
pub const TEST_NATS_URL: &str = "TEST_NATS_URL";

/// `TEST_NATS_URL`. Panics when unset or empty: a test that needs NATS is ignored unless it
/// is set, so one that runs without it must fail, not pass.
pub fn nats_url() -> String {
    required_url("NATS", TEST_NATS_URL, "nats://127.0.0.1:4222")
}

/// The value of `variable`. Panics when it is unset or empty: a test that needs the `server`
/// is ignored unless it is set, so one that runs without it must fail, not pass.
fn required_url(server: &str, variable: &str, example: &str) -> String {
    match std::env::var(variable) {
        Ok(url) if !url.trim().is_empty() => url,
        _ => panic!("this test needs {server}: set {variable}={example}"),
    }
}

/// The variable naming the Redis server for tests.
pub const TEST_REDIS_URL: &str = "TEST_REDIS_URL";

/// `TEST_REDIS_URL` (panics when unset: see [`nats_url`]).
pub fn redis_url() -> String {
    required_url("Redis", TEST_REDIS_URL, "redis://127.0.0.1:6379")
}

/// Log lines captured in the production JSON format, for tests that read what a request logs.
#[derive(Clone, Default)]
pub struct CapturedLog(Arc<std::sync::Mutex<Vec<u8>>>);

impl CapturedLog {
    /// Captures everything logged on this thread (at every level) until the guard is dropped:
    /// use it in a current-thread test, where the server under test runs on the same thread.
    pub fn install() -> (Self, tracing::subscriber::DefaultGuard) {
        use tracing_subscriber::layer::SubscriberExt;
        let log = Self::default();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_subscriber::EnvFilter::new("trace"))
            .with(crate::telemetry::json_layer(log.clone()));
        let guard = tracing::subscriber::set_default(subscriber);
        (log, guard)
    }

    /// Everything captured so far.
    pub fn text(&self) -> String {
        let bytes = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The captured lines, parsed.
    pub fn lines(&self) -> Vec<serde_json::Value> {
        self.text()
            .lines()
            .map(|line| {
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
            })
            .collect()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for CapturedLog {
    type Writer = tracing_subscriber::fmt::writer::MutexGuardWriter<'a, Vec<u8>>;

    fn make_writer(&'a self) -> Self::Writer {
        self.0.make_writer()
    }
}

/// A TCP proxy to a server that a test can cut and restore, to take a dependency (NATS, Redis)
/// away from the service under test without stopping the server other tests use.
pub struct Cuttable {
    /// Where the proxy listens: give the service this address instead of the server's.
    pub addr: std::net::SocketAddr,
    up: Arc<std::sync::atomic::AtomicBool>,
    links: Arc<tokio::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Cuttable {
    /// A proxy to `target` (`host:port`, or a URL such as `nats://host:port`).
    pub async fn to(target: &str) -> std::io::Result<Self> {
        let target = target
            .split_once("://")
            .map_or(target, |(_, rest)| rest)
            .trim_end_matches('/')
            .to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let up = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let links = Arc::new(tokio::sync::Mutex::new(Vec::new()));
        let (accept_up, accept_links) = (up.clone(), links.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !accept_up.load(std::sync::atomic::Ordering::SeqCst) {
                    continue; // dropped: refused
                }
                let target = target.clone();
                accept_links.lock().await.push(tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                }));
            }
        });
        Ok(Self { addr, up, links })
    }

    /// Cuts (`false`: open connections are dropped, new ones refused) or restores the link.
    pub async fn set_up(&self, up: bool) {
        self.up.store(up, std::sync::atomic::Ordering::SeqCst);
        if !up {
            for link in self.links.lock().await.drain(..) {
                link.abort();
            }
        }
    }
}

/// What a binary run by [`run_command`] did.
#[derive(Debug)]
pub struct Ran {
    /// Its exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    /// What it printed to standard output.
    pub stdout: String,
    /// What it printed to standard error.
    pub stderr: String,
}

/// Runs `program` with `args` and only the environment `env` (plus `PATH`) to its end, for
/// at most 60 seconds (then it is killed and the test fails: a command that should exit
/// kept running, serving).
pub async fn run_command(program: &str, args: &[&str], env: &[(&str, &str)]) -> Ran {
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .kill_on_drop(true);
    let output = tokio::time::timeout(std::time::Duration::from_secs(60), command.output())
        .await
        .unwrap_or_else(|_| panic!("{program} {args:?} did not exit within 60 s"))
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    Ran {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Deletes a JetStream stream when dropped, so a test that fails (or passes) leaves none
/// behind on the shared NATS server.
pub struct StreamCleanup {
    nats: String,
    stream: String,
}

impl StreamCleanup {
    /// Deletes `stream` on the NATS server at `nats` at drop.
    pub fn new(nats: &str, stream: &str) -> Self {
        Self {
            nats: nats.to_owned(),
            stream: stream.to_owned(),
        }
    }
}

impl Drop for StreamCleanup {
    fn drop(&mut self) {
        let (nats, stream) = (self.nats.clone(), self.stream.clone());
        off_runtime(async move {
            let client = async_nats::connect(&nats).await.ok()?;
            let _ = async_nats::jetstream::new(client)
                .delete_stream(&stream)
                .await;
            Some(())
        });
    }
}

/// Deletes the Redis keys under a prefix when dropped, so a test leaves none behind on the
/// shared Redis server.
pub struct RedisCleanup {
    redis: String,
    prefix: String,
}

impl RedisCleanup {
    /// Deletes every key of `redis` starting with `prefix` at drop.
    pub fn new(redis: &str, prefix: &str) -> Self {
        Self {
            redis: redis.to_owned(),
            prefix: prefix.to_owned(),
        }
    }
}

impl Drop for RedisCleanup {
    fn drop(&mut self) {
        let (redis, prefix) = (self.redis.clone(), self.prefix.clone());
        off_runtime(async move {
            let client = redis::Client::open(redis.as_str()).ok()?;
            let mut connection = client.get_multiplexed_async_connection().await.ok()?;
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{prefix}*"))
                .query_async(&mut connection)
                .await
                .ok()?;
            if !keys.is_empty() {
                let _: redis::RedisResult<()> = redis::cmd("DEL")
                    .arg(keys)
                    .query_async(&mut connection)
                    .await;
            }
            Some(())
        });
    }
}

/// Runs `cleanup` to its end on a runtime of its own (drops run outside async, or inside a
/// runtime that may be shutting down).
fn off_runtime(cleanup: impl std::future::Future<Output = Option<()>> + Send + 'static) {
    let _ = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        runtime.block_on(cleanup)
    })
    .join();
}

/// A request body that the test sends piece by piece: `send` a chunk, `finish` to end it.
pub struct SlowBody {
    sender: tokio::sync::mpsc::Sender<Result<Vec<u8>, std::io::Error>>,
}

impl SlowBody {
    /// The writer, and the body to give the request.
    pub fn new() -> (Self, reqwest::Body) {
        let (sender, mut receiver) = tokio::sync::mpsc::channel(1);
        let stream = futures_util::stream::poll_fn(move |cx| receiver.poll_recv(cx));
        (Self { sender }, reqwest::Body::wrap_stream(stream))
    }

    /// Sends the next piece.
    pub async fn send(&self, chunk: &[u8]) {
        self.sender
            .send(Ok(chunk.to_vec()))
            .await
            .unwrap_or_else(|_| panic!("the request no longer reads its body"));
    }

    /// Sends the last piece and ends the body.
    pub async fn finish(self, chunk: &[u8]) {
        self.send(chunk).await;
    }
}
