//! The event store: the pool, migrations, the embedded PostgreSQL default,
//! appending under the project's head lock, idempotency, reads by seq.

pub mod embedded;
pub mod events;
pub mod idempotency;
pub mod migrate;
pub mod transaction;

pub use deadpool_postgres::{Client, GenericClient, Pool, Transaction};
pub use events::{
    append, create_stream, lock_stream, read_after, Appendable, Appended, EventMeta, NewEvent, RecordedEvent,
};
pub use transaction::{in_transaction, on_its_own};

use std::str::FromStr;
use std::time::Duration;

/// Failures of the store. Callers map `UnknownStream` to "not found"; the
/// rest are unexpected and answer 500 at the edge.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error")]
    Db(#[from] tokio_postgres::Error),
    #[error("could not get a database connection")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("migration failed")]
    Migration(#[from] refinery::Error),
    #[error("invalid database url")]
    Config(#[source] tokio_postgres::Error),
    #[error("could not build the connection pool")]
    Build(#[from] deadpool_postgres::BuildError),
    #[error("embedded PostgreSQL")]
    Embedded(#[from] embedded::EmbeddedError),
    #[error("no event stream for project {0}")]
    UnknownStream(uuid::Uuid),
    #[error("{0}")]
    Invalid(String),
}

impl StoreError {
    /// The SQLSTATE of a database error, if that is what this is.
    pub fn sql_state(&self) -> Option<&tokio_postgres::error::SqlState> {
        match self {
            StoreError::Db(e) => e.code(),
            _ => None,
        }
    }

    /// The database could not be reached or went away mid-request (it is
    /// restarting, say): a 503 worth retrying, not a bug.
    pub fn is_unavailable(&self) -> bool {
        use tokio_postgres::error::SqlState;
        match self {
            StoreError::Pool(deadpool_postgres::PoolError::Backend(e)) => is_connection_error(e),
            StoreError::Pool(_) => true,
            StoreError::Db(e) => {
                is_connection_error(e)
                    || e.code().is_some_and(|c| {
                        c.code().starts_with("08")
                            || [
                                SqlState::ADMIN_SHUTDOWN,
                                SqlState::CRASH_SHUTDOWN,
                                SqlState::CANNOT_CONNECT_NOW,
                                SqlState::TOO_MANY_CONNECTIONS,
                            ]
                            .contains(c)
                    })
            }
            _ => false,
        }
    }

    pub fn is_unique_violation(&self) -> bool {
        self.sql_state() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
    }
}

/// A connection that is closed, or failed at the socket: no server answered.
fn is_connection_error(e: &tokio_postgres::Error) -> bool {
    use std::error::Error;
    e.is_closed() || e.source().is_some_and(|s| s.is::<std::io::Error>())
}

/// Builds a pool on `database_url`. Connections are made lazily; call
/// [`check`] to fail fast on a wrong URL.
pub fn connect(database_url: &str, max_size: usize) -> Result<Pool, StoreError> {
    let mut config = tokio_postgres::Config::from_str(database_url).map_err(StoreError::Config)?;
    if config.get_application_name().is_none() {
        config.application_name("ferryd");
    }
    // Notifications of appends wait for the commit (see `transaction`).
    let options =
        [config.get_options(), Some(transaction::AFTER_COMMIT)].into_iter().flatten().collect::<Vec<_>>().join(" ");
    config.options(&options);
    config.connect_timeout(Duration::from_secs(10));
    let manager = deadpool_postgres::Manager::from_config(
        config,
        tokio_postgres::NoTls,
        deadpool_postgres::ManagerConfig { recycling_method: deadpool_postgres::RecyclingMethod::Fast },
    );
    Ok(Pool::builder(manager)
        .max_size(max_size)
        .wait_timeout(Some(Duration::from_secs(30)))
        .create_timeout(Some(Duration::from_secs(10)))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()?)
}

/// What a pool serves, as `/metrics` labels it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolRole {
    /// The HTTP workers' pools, one each.
    Http,
    /// Live events, the sweeper, relayed progress.
    Background,
}

impl PoolRole {
    pub fn label(self) -> &'static str {
        match self {
            PoolRole::Http => "http",
            PoolRole::Background => "background",
        }
    }
}

/// Every pool of a process (the background's and each HTTP worker's):
/// figures about its connections are about them all, by role. A pool is
/// held weakly: one whose worker died (and was restarted with a new one)
/// drops out.
#[derive(Clone, Default)]
pub struct Pools(std::sync::Arc<std::sync::Mutex<Vec<(PoolRole, deadpool_postgres::WeakPool)>>>);

impl Pools {
    pub fn add(&self, role: PoolRole, pool: &Pool) {
        self.0.lock().expect("pools lock").push((role, pool.weak()));
    }

    /// The live pools' statuses, summed per role, every role present.
    pub fn status(&self) -> Vec<(PoolRole, deadpool_postgres::Status)> {
        let zero = deadpool_postgres::Status { max_size: 0, size: 0, available: 0, waiting: 0 };
        let mut sums = [(PoolRole::Http, zero), (PoolRole::Background, zero)];
        self.0.lock().expect("pools lock").retain(|(role, pool)| {
            let Some(s) = pool.upgrade().map(|p| p.status()) else { return false };
            let (_, sum) = sums.iter_mut().find(|(r, _)| r == role).expect("every role has a sum");
            sum.max_size += s.max_size;
            sum.size += s.size;
            sum.available += s.available;
            sum.waiting += s.waiting;
            true
        });
        sums.to_vec()
    }
}

/// One round trip: is the database reachable?
pub async fn check(pool: &Pool) -> Result<(), StoreError> {
    pool.get().await?.simple_query("SELECT 1").await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pools_are_summed_by_role_while_they_live() {
        // Connections are made lazily: no server is needed to size a pool.
        let url = "postgres://nobody@127.0.0.1:1/none";
        let background = connect(url, 2).unwrap();
        let workers = [connect(url, 3).unwrap(), connect(url, 3).unwrap()];
        let pools = Pools::default();
        pools.add(PoolRole::Background, &background);
        for worker in &workers {
            pools.add(PoolRole::Http, worker);
        }
        let max = |pools: &Pools| pools.status().iter().map(|(role, s)| (*role, s.max_size)).collect::<Vec<_>>();
        assert_eq!(max(&pools), [(PoolRole::Http, 6), (PoolRole::Background, 2)]);
        // A worker that died takes its pool with it.
        let [first, _] = workers;
        drop(first);
        assert_eq!(max(&pools), [(PoolRole::Http, 3), (PoolRole::Background, 2)]);
    }
}
