//! The database across releases and replicas: a database that a newer release has already
//! migrated still opens with this one (rolling updates and rollbacks start old replicas
//! against it), and each replica's share of PostgreSQL's connections is configurable.

use common::db::Pool;
use common::testkit::TestDatabase;

common::both_databases!(an_older_release_starts_on_a_newer_schema);

async fn an_older_release_starts_on_a_newer_schema(db: TestDatabase) {
    let store = accounts::store::open(&db.url, common::db::DEFAULT_MAX_CONNECTIONS)
        .await
        .unwrap();
    common::testkit::record_newer_migration(&store.database()).await;
    store.database().close().await;
    drop(store);

    let reopened = accounts::store::open(&db.url, common::db::DEFAULT_MAX_CONNECTIONS)
        .await
        .expect("a newer schema is accepted");
    assert!(reopened.any_admin().await.is_ok(), "and the store works");
}

#[tokio::test]
#[cfg_attr(
    not(test_postgres),
    ignore = "needs PostgreSQL: set TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres"
)]
async fn the_postgres_pool_has_the_configured_size() {
    let db = TestDatabase::postgres().await;
    let env = common::config::Env::from_pairs([
        ("ACCOUNTS_DATABASE_URL", db.url_string()),
        ("ACCOUNTS_DATABASE_MAX_CONNECTIONS", "3".to_owned()),
    ]);
    let config = accounts::AccountsConfig::from_env(&env).unwrap();
    let store = accounts::store::open(&config.database_url, config.database_max_connections)
        .await
        .unwrap();
    let Pool::Postgres(pool) = store.database() else {
        panic!("a PostgreSQL URL opens PostgreSQL");
    };
    assert_eq!(pool.options().get_max_connections(), 3);
    pool.close().await;
}
