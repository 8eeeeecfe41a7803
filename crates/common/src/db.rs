//! Database selection by URL scheme (SQLite or PostgreSQL), connection set-up, and the storage
//! error every store returns.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sqlx::migrate::Migrator;
use sqlx::pool::PoolConnectionMetadata;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::config::ConfigError;
use crate::health::HealthCheck;

/// Where a service keeps its data, chosen by the scheme of its `*_DATABASE_URL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// An embedded SQLite file (`sqlite://path/to/file.db` or `sqlite:path`).
    Sqlite(PathBuf),
    /// A PostgreSQL server (`postgres://` or `postgresql://`).
    Postgres(String),
}

impl DatabaseUrl {
    /// Reads `variable` from the environment, defaulting to `DATA_DIR/<default_file>`.
    pub fn from_env(
        env: &crate::config::Env,
        variable: &str,
        default_file: &str,
    ) -> Result<Self, ConfigError> {
        match env.get(variable) {
            Some(raw) => Self::parse(raw).map_err(|message| ConfigError::new(variable, message)),
            None => Ok(Self::Sqlite(env.data_dir().join(default_file))),
        }
    }

    /// Parses a URL; the scheme picks the backend.
    pub fn parse(raw: &str) -> Result<Self, String> {
        if let Some(rest) = raw
            .strip_prefix("sqlite://")
            .or_else(|| raw.strip_prefix("sqlite:"))
        {
            let path = rest.split('?').next().unwrap_or_default();
            if path.is_empty() || path == ":memory:" {
                return Err("a SQLite URL needs a file path (sqlite://path/to/file.db)".into());
            }
            return Ok(Self::Sqlite(PathBuf::from(path)));
        }
        if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
            PgConnectOptions::from_str(raw).map_err(|e| format!("not a PostgreSQL URL: {e}"))?;
            return Ok(Self::Postgres(raw.to_owned()));
        }
        Err("expected a sqlite:// or postgres:// URL".into())
    }

    /// The URL with any password hidden, for logs.
    pub fn redacted(&self) -> String {
        match self {
            Self::Sqlite(path) => format!("sqlite://{}", path.display()),
            Self::Postgres(raw) => match url::Url::parse(raw) {
                Ok(mut url) => {
                    if url.password().is_some() {
                        let _ = url.set_password(Some("****"));
                    }
                    url.to_string()
                }
                Err(_) => "postgres://(unparseable)".into(),
            },
        }
    }
}

/// Opens (creating if missing) a SQLite file in WAL mode with foreign keys on.
pub async fn connect_sqlite(path: &Path) -> Result<SqlitePool, StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Unavailable(e.to_string()))?;
    }
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(5));
    SqlitePoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(3))
        .test_before_acquire(false)
        .before_acquire(|conn, meta| Box::pin(check_if_suspect::<sqlx::Sqlite>(conn, meta)))
        .connect_with(options)
        .await
        .map_err(StoreError::from)
}

/// Opens a SQLite file and applies the service's migrations.
pub async fn open_sqlite(path: &Path, migrator: &Migrator) -> Result<SqlitePool, StoreError> {
    let pool = connect_sqlite(path).await?;
    migrator.run(&pool).await.map_err(sqlx::Error::from)?;
    tracing::info!(database = %path.display(), "SQLite database ready");
    Ok(pool)
}

/// Connections a service keeps to PostgreSQL at most, unless configured
/// (`ACCOUNTS_DATABASE_MAX_CONNECTIONS`, `PAYMENTS_DATABASE_MAX_CONNECTIONS`).
pub const DEFAULT_MAX_CONNECTIONS: u32 = 16;

/// Reads a pool size from `variable` (default [`DEFAULT_MAX_CONNECTIONS`]; 1 to 1000).
pub fn max_connections(env: &crate::config::Env, variable: &str) -> Result<u32, ConfigError> {
    let value: u32 = env.parse_or(variable, DEFAULT_MAX_CONNECTIONS)?;
    if !(1..=1000).contains(&value) {
        return Err(ConfigError::new(variable, "must be between 1 and 1000"));
    }
    Ok(value)
}

/// Connects to PostgreSQL with a pool of up to `max_connections` and applies the service's
/// migrations (under sqlx's advisory lock, so replicas starting together do not race).
pub async fn open_postgres(
    url: &str,
    max_connections: u32,
    migrator: &Migrator,
) -> Result<PgPool, StoreError> {
    let pool = connect_postgres(url, max_connections).await?;
    migrator.run(&pool).await.map_err(sqlx::Error::from)?;
    let shown = DatabaseUrl::Postgres(url.to_owned()).redacted();
    tracing::info!(database = %shown, "PostgreSQL database ready");
    Ok(pool)
}

/// Connects to PostgreSQL with bounded waits, so an outage answers 503 quickly.
pub async fn connect_postgres(url: &str, max_connections: u32) -> Result<PgPool, StoreError> {
    let options = PgConnectOptions::from_str(url).map_err(StoreError::from)?;
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(3))
        .test_before_acquire(false)
        .before_acquire(|conn, meta| Box::pin(check_if_suspect::<sqlx::Postgres>(conn, meta)))
        .connect_with(options)
        .await
        .map_err(StoreError::from)
}

/// A pooled connection used this recently is handed out without a check (see
/// [`check_if_suspect`]): HikariCP's `aliveBypassWindowMs`.
const RECENTLY_USED: Duration = Duration::from_millis(500);

/// The instant [`LAST_UNAVAILABLE`] counts from.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// When a store last found a database unavailable, in microseconds since [`EPOCH`] plus one
/// (0: never). Process-wide rather than per pool, since a [`StoreError`] does not know its
/// pool: one database's outage only makes the other pools check their idle connections once.
static LAST_UNAVAILABLE: AtomicU64 = AtomicU64::new(0);

fn micros_since_epoch(at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(*EPOCH).as_micros()).unwrap_or(u64::MAX)
}

/// Records that a database did not answer (a connection ended, refused, timed out): the
/// connections idle since are checked before their next use.
fn mark_unavailable() {
    LAST_UNAVAILABLE.store(micros_since_epoch(Instant::now()) + 1, Ordering::Relaxed);
}

/// Whether a pooled connection idle for `idle_for` is checked before use, `now` and
/// `last_unavailable` as in [`LAST_UNAVAILABLE`]: if it has been idle a while, or a database
/// looked unavailable since it was last used.
fn needs_check(idle_for: Duration, now: u64, last_unavailable: u64) -> bool {
    if idle_for >= RECENTLY_USED {
        return true;
    }
    let idle_since = now.saturating_sub(u64::try_from(idle_for.as_micros()).unwrap_or(u64::MAX));
    last_unavailable != 0 && idle_since <= last_unavailable
}

/// sqlx's pool by default pings every connection it hands out, and again every one handed
/// back: under load, as many round trips to PostgreSQL (or hops to SQLite's worker thread) as
/// the queries themselves. The ping on hand-back stays (sqlx has no setting for it; it also
/// sends a dropped transaction's `ROLLBACK`). The ping on hand-out is replaced by this check,
/// which pings only a connection idle for [`RECENTLY_USED`] or more, as HikariCP and
/// PgBouncer (`server_check_delay`) do, or one idle since a store last found the database
/// unavailable: after an outage or a failover that ended every connection, the first request
/// fails on a dead connection (503) and the ones after it get checked connections.
async fn check_if_suspect<DB: sqlx::Database>(
    conn: &mut DB::Connection,
    meta: PoolConnectionMetadata,
) -> Result<bool, sqlx::Error> {
    let now = micros_since_epoch(Instant::now()) + 1;
    if needs_check(meta.idle_for, now, LAST_UNAVAILABLE.load(Ordering::Relaxed)) {
        sqlx::Connection::ping(conn).await?;
    }
    Ok(true)
}

/// What a store needs to know of the sqlx database it runs on, beyond `sqlx::Database`: its
/// name in spans, how its pool is handed out, and the SQL where the two backends differ. Each
/// service's store is one implementation generic over `DB: Backend` (the SQL is otherwise
/// portable: both accept `$n` placeholders, `ON CONFLICT` and `RETURNING`).
pub trait Backend: sqlx::Database<Arguments: sqlx::IntoArguments<Self>> {
    /// `db.system.name` of the spans (OpenTelemetry's name for the database system).
    const SYSTEM: &'static str;
    /// What a `SELECT` that claims rows for work appends, so that concurrent claimers skip the
    /// rows another has locked: `FOR UPDATE SKIP LOCKED` on PostgreSQL; nothing on SQLite,
    /// where a write transaction already excludes every other writer.
    const SKIP_LOCKED: &'static str;
    /// Whether row locks taken by [`Self::SKIP_LOCKED`] exist at all (PostgreSQL), so that
    /// holding a transaction open keeps other claimers off the rows. On SQLite an open write
    /// transaction would stop every writer of the database instead.
    const ROW_LOCKS: bool;
    /// Whether a `WITH` clause may hold `INSERT`/`UPDATE`/`DELETE ... RETURNING` whose rows
    /// the statement's other parts use (PostgreSQL's data-modifying CTEs): several dependent
    /// writes in one statement, so one round trip and no `BEGIN`/`COMMIT`. SQLite has none
    /// (nor needs them: its transactions are calls into the same process).
    const WRITING_CTES: bool;

    /// The pool as the backend-agnostic [`Pool`] (readiness checks, shutdown).
    fn into_pool(pool: sqlx::Pool<Self>) -> Pool;

    /// Rows an `INSERT`, `UPDATE` or `DELETE` changed (sqlx has no trait for it).
    fn rows_affected(result: &Self::QueryResult) -> u64;
}

impl Backend for sqlx::Sqlite {
    const SYSTEM: &'static str = "sqlite";
    const SKIP_LOCKED: &'static str = "";
    const ROW_LOCKS: bool = false;
    const WRITING_CTES: bool = false;

    fn into_pool(pool: sqlx::Pool<Self>) -> Pool {
        Pool::Sqlite(pool)
    }

    fn rows_affected(result: &Self::QueryResult) -> u64 {
        result.rows_affected()
    }
}

impl Backend for sqlx::Postgres {
    const SYSTEM: &'static str = "postgresql";
    const SKIP_LOCKED: &'static str = "FOR UPDATE SKIP LOCKED";
    const ROW_LOCKS: bool = true;
    const WRITING_CTES: bool = true;

    fn into_pool(pool: sqlx::Pool<Self>) -> Pool {
        Pool::Postgres(pool)
    }

    fn rows_affected(result: &Self::QueryResult) -> u64 {
        result.rows_affected()
    }
}

/// The one-row table readiness writes to ([`Pool::probe_write`]), created when a database
/// is opened (it belongs to no service's schema and holds nothing of value).
pub const PROBE_TABLE: &str = "readiness_probe";
const PROBE_CREATE: &str = "CREATE TABLE IF NOT EXISTS readiness_probe (id INTEGER PRIMARY KEY, checked_at TIMESTAMPTZ NOT NULL)";
const PROBE_WRITE: &str = "INSERT INTO readiness_probe (id, checked_at) VALUES (1, $1) \
     ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at";

/// A service's migrations, one directory per backend (embedded with `sqlx::migrate!`).
pub struct Migrations {
    /// `migrations/sqlite`.
    pub sqlite: Migrator,
    /// `migrations/postgres`.
    pub postgres: Migrator,
}

impl Migrations {
    /// Both sets, accepting applied migrations this release does not know (a newer
    /// release's), so that an older replica still starts during a rolling update or a rollback.
    pub fn new(mut sqlite: Migrator, mut postgres: Migrator) -> Self {
        sqlite.set_ignore_missing(true);
        postgres.set_ignore_missing(true);
        Self { sqlite, postgres }
    }
}

/// Opens the database `url` names (PostgreSQL: a pool of up to `max_connections`) and applies
/// the service's migrations for that backend. The caller wraps the pool in its store.
pub async fn open(
    url: &DatabaseUrl,
    max_connections: u32,
    migrations: &Migrations,
) -> Result<Pool, StoreError> {
    let pool = match url {
        DatabaseUrl::Sqlite(path) => Pool::Sqlite(open_sqlite(path, &migrations.sqlite).await?),
        DatabaseUrl::Postgres(url) => {
            Pool::Postgres(open_postgres(url, max_connections, &migrations.postgres).await?)
        }
    };
    pool.create_probe_table().await?;
    Ok(pool)
}

/// Only runs the service's migrations on the database `url` names, then closes it (the
/// `migrate` subcommand: a Kubernetes Job before a rolling update).
pub async fn migrate(url: &DatabaseUrl, migrations: &Migrations) -> Result<(), StoreError> {
    open(url, 1, migrations).await?.close().await;
    Ok(())
}

/// What storage can fail with; knows nothing of HTTP.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database does not answer (connection refused, pool timeout, closed pool).
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A uniqueness constraint was violated; carries the constraint name where known.
    #[error("unique constraint violated: {0}")]
    Conflict(String),
    /// Anything else: a bug or a schema problem.
    #[error("database error: {0}")]
    Other(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        let mapped = Self::classify(&error);
        if matches!(mapped, Self::Unavailable(_)) {
            mark_unavailable();
        }
        mapped
    }
}

impl StoreError {
    fn classify(error: &sqlx::Error) -> Self {
        match error {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Tls(_) => Self::Unavailable(error.to_string()),
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                Self::Conflict(db.constraint().unwrap_or_default().to_owned())
            }
            sqlx::Error::Database(db)
                if db
                    .code()
                    .is_some_and(|code| refuses_service(db.as_ref(), &code)) =>
            {
                Self::Unavailable(error.to_string())
            }
            sqlx::Error::Migrate(e) => Self::Other(format!("migration failed: {e}")),
            _ => Self::Other(error.to_string()),
        }
    }
}

/// Whether a database error says the database cannot serve (a retry later may succeed, and
/// nothing was written) rather than that the query was wrong.
///
/// PostgreSQL (SQLSTATE): connection exceptions (08), insufficient resources (53: disk full,
/// out of memory, too many connections), shutdown and crash recovery (57P), system and I/O
/// errors (58), a read-only transaction (25006: a hot standby after a failover), the
/// database missing or not accepting connections (3D000, 55000), our credentials refused
/// (28000, 28P01).
/// SQLite (primary result code): busy or locked past the busy timeout (5, 6), out of memory
/// (7), read-only (8), I/O error (10), corrupt (11), disk full (13), cannot open (14),
/// locking protocol (15).
fn refuses_service(error: &dyn sqlx::error::DatabaseError, code: &str) -> bool {
    if error
        .try_downcast_ref::<sqlx::sqlite::SqliteError>()
        .is_some()
    {
        let primary = code.parse::<i32>().map_or(0, |extended| extended & 0xff);
        return [5, 6, 7, 8, 10, 11, 13, 14, 15].contains(&primary);
    }
    ["08", "53", "57P", "58"]
        .iter()
        .any(|class| code.starts_with(class))
        || ["25006", "3D000", "55000", "28000", "28P01"].contains(&code)
}

/// A pool of either backend: what every store hands out for readiness checks and shutdown.
#[derive(Debug, Clone)]
pub enum Pool {
    /// SQLite.
    Sqlite(SqlitePool),
    /// PostgreSQL.
    Postgres(PgPool),
}

impl Pool {
    /// One round trip to the database.
    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(pool) => sqlx::query("SELECT 1").execute(pool).await.map(drop),
            Self::Postgres(pool) => sqlx::query("SELECT 1").execute(pool).await.map(drop),
        }
        .map_err(StoreError::from)
    }

    /// One small committed write (a row of [`PROBE_TABLE`]): whether the database takes
    /// writes now, which a ping does not tell (a full disk, a read-only file or standby).
    pub async fn probe_write(&self) -> Result<(), StoreError> {
        let now = chrono::Utc::now();
        match self {
            Self::Sqlite(pool) => sqlx::query(PROBE_WRITE)
                .bind(now)
                .execute(pool)
                .await
                .map(drop),
            Self::Postgres(pool) => sqlx::query(PROBE_WRITE)
                .bind(now)
                .execute(pool)
                .await
                .map(drop),
        }
        .map_err(StoreError::from)
    }

    async fn create_probe_table(&self) -> Result<(), StoreError> {
        let created = match self {
            Self::Sqlite(pool) => sqlx::query(PROBE_CREATE).execute(pool).await.map(drop),
            Self::Postgres(pool) => sqlx::query(PROBE_CREATE).execute(pool).await.map(drop),
        };
        // Replicas starting together: PostgreSQL's `IF NOT EXISTS` does not stop a second
        // creator racing the first from hitting the catalog's unique index (23505) or finding
        // the table's row type just made (42710 duplicate_object, 42P07 duplicate_table).
        let raced = |error: &sqlx::Error| {
            error
                .as_database_error()
                .and_then(|db| db.code())
                .is_some_and(|code| matches!(&*code, "23505" | "42710" | "42P07"))
        };
        match created {
            Ok(()) => Ok(()),
            Err(error) if raced(&error) => Ok(()),
            Err(error) => Err(StoreError::from(error)),
        }
    }

    /// Closes the pool (at shutdown); later calls fail as unavailable.
    pub async fn close(&self) {
        match self {
            Self::Sqlite(pool) => pool.close().await,
            Self::Postgres(pool) => pool.close().await,
        }
    }
}

/// Readiness check `database`: passes when the database takes a write (a full disk, a
/// read-only file or a standby fail it, though they still answer a ping).
pub struct DatabaseCheck(pub Pool);

#[async_trait::async_trait]
impl HealthCheck for DatabaseCheck {
    fn name(&self) -> String {
        "database".into()
    }

    fn component_type(&self) -> &'static str {
        "datastore"
    }

    async fn check(&self) -> Result<(), String> {
        self.0.probe_write().await.map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_is_checked_when_idle_a_while_or_idle_since_the_database_failed() {
        let ms = |n: u64| Duration::from_millis(n);
        let now = 10_000_000; // 10 s after the epoch, in microseconds (+1)
        // Never failed: only a connection idle for half a second or more.
        assert!(!needs_check(ms(0), now, 0));
        assert!(!needs_check(ms(499), now, 0));
        assert!(needs_check(ms(500), now, 0));
        assert!(needs_check(ms(60_000), now, 0));
        // Failed 100 ms ago: connections idle since before then are checked, those used
        // since are not.
        let failed = now - 100_000;
        assert!(needs_check(ms(150), now, failed));
        assert!(needs_check(ms(100), now, failed));
        assert!(!needs_check(ms(50), now, failed));
        assert!(!needs_check(ms(0), now, failed));
    }

    #[test]
    fn pool_sizes_are_checked() {
        let env = crate::config::Env::from_pairs([("X_MAX", "0"), ("Y_MAX", "40")]);
        assert_eq!(
            max_connections(&env, "X_MAX").unwrap_err().variable,
            "X_MAX"
        );
        assert_eq!(max_connections(&env, "Y_MAX").unwrap(), 40);
        assert_eq!(
            max_connections(&env, "UNSET").unwrap(),
            DEFAULT_MAX_CONNECTIONS
        );
    }

    #[test]
    fn the_scheme_picks_the_backend() {
        assert_eq!(
            DatabaseUrl::parse("sqlite://data/a.db").unwrap(),
            DatabaseUrl::Sqlite("data/a.db".into())
        );
        assert_eq!(
            DatabaseUrl::parse("sqlite:/tmp/a.db?mode=rwc").unwrap(),
            DatabaseUrl::Sqlite("/tmp/a.db".into())
        );
        assert!(matches!(
            DatabaseUrl::parse("postgres://u:p@localhost/db").unwrap(),
            DatabaseUrl::Postgres(_)
        ));
        assert!(DatabaseUrl::parse("mysql://localhost/db").is_err());
        assert!(DatabaseUrl::parse("sqlite::memory:").is_err());
    }

    #[test]
    fn passwords_never_reach_the_logs() {
        let url = DatabaseUrl::parse("postgres://app:hunter2@db:5432/accounts").unwrap();
        assert!(!url.redacted().contains("hunter2"));
    }
}
