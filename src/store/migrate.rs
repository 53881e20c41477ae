use super::{Pool, StoreError};

refinery::embed_migrations!("migrations");

/// Arbitrary but fixed: serialises migrations of servers starting together.
const MIGRATION_LOCK: i64 = 0x6665_7272_795f_6d69; // "ferry_mi"

/// Applies the pending migrations of `migrations/`, one server at a time.
pub async fn run(pool: &Pool) -> Result<usize, StoreError> {
    let mut client = pool.get().await?;
    client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK]).await?;
    let report = migrations::runner().run_async(&mut **client).await;
    client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]).await?;
    let applied = report?.applied_migrations().len();
    if applied > 0 {
        tracing::info!(applied, "applied migrations");
    }
    Ok(applied)
}
