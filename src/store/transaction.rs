//! Transactions on pooled connections, and the notifications of their
//! appends, sent once they are committed.
//!
//! A NOTIFY inside a transaction makes PostgreSQL serialise the commits of
//! every notifying transaction, each waiting for the previous one's disk
//! flush (migration V0023). The pool's sessions therefore keep the
//! notifications of a commit pending (the setting [`AFTER_COMMIT`]) and send
//! them right after it, in a transaction of their own that writes nothing
//! durable. A server that dies between the two loses them; the realtime
//! hubs look at the heads of the projects they follow every few seconds and
//! catch up.

use std::future::Future;

use futures_util::FutureExt;

use super::StoreError;

/// The session setting, given to every connection of the pool, that holds
/// a transaction's notifications until `announce_heads()`.
pub(super) const AFTER_COMMIT: &str = "-c ferry.notify=after_commit";

const COMMIT_AND_ANNOUNCE: &str = "COMMIT; SELECT announce_heads()";

/// Runs `body`, a future of statements on `client`, in one transaction,
/// and commits it if it succeeds. The BEGIN goes out with the first of
/// those statements (both are sent before either is answered), and the
/// COMMIT in one message with the announce of the transaction's
/// notifications: one round trip besides the body's own, where
/// `Transaction` and a separate announce took three.
///
/// A BEGIN cannot fail for anything but the connection or the server
/// failing, and then the statements sent after it fail too; its answer is
/// still checked before anything else is. If `body` fails, or this future
/// is dropped before the commit, the transaction is rolled back.
pub async fn in_transaction<T, E>(
    client: &deadpool_postgres::Client,
    body: impl Future<Output = Result<T, E>>,
) -> Result<T, E>
where
    E: From<StoreError>,
{
    let mut open = RollbackUnlessCommitted(Some(client));
    // join! polls in order: the BEGIN is sent before the body's statements.
    let (begun, output) = futures_util::join!(client.batch_execute("BEGIN"), body);
    begun.map_err(StoreError::from)?;
    let output = output?;
    open.0 = None;
    client.batch_execute(COMMIT_AND_ANNOUNCE).await.map_err(StoreError::from)?;
    Ok(output)
}

/// Sends a ROLLBACK when dropped still holding the client, without waiting
/// for it (as tokio-postgres's own `Transaction` does): it is put on the
/// connection's queue (tokio-postgres sends a request at its future's first
/// poll), and the connection's next user's statements follow it.
struct RollbackUnlessCommitted<'a>(Option<&'a deadpool_postgres::Client>);

impl Drop for RollbackUnlessCommitted<'_> {
    fn drop(&mut self) {
        if let Some(client) = self.0 {
            let _queued = client.batch_execute("ROLLBACK").now_or_never();
        }
    }
}
