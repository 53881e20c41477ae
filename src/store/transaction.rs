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

const ANNOUNCE: &str = "SELECT announce_heads()";

/// Runs `statement`, a future of one statement on `client`, as a
/// transaction of its own: outside a transaction block PostgreSQL commits a
/// statement when it ends, or rolls it back when it fails, so no BEGIN and
/// COMMIT are needed. The announce of its notifications is sent right after
/// it, before it is answered: one round trip in all.
///
/// A statement not prepared yet on this connection sends only its Parse at
/// its first poll, so it would run after that announce: when the statement
/// succeeded and the announce sent nothing, it is sent again. If that first
/// announce did send something, a payload some earlier user of the session
/// left pending (a request dropped between its statement and its second
/// announce), the statement's own stays pending until the session's next
/// announce, and the realtime hubs' look at the heads wakes its readers
/// meanwhile.
pub async fn on_its_own<T, E>(
    client: &deadpool_postgres::Client,
    statement: impl Future<Output = Result<T, E>>,
) -> Result<T, E>
where
    E: From<StoreError>,
{
    // join! polls in order: the statement is sent before the announce.
    let (output, announced) = futures_util::join!(statement, announce(client));
    let output = output?;
    if announced? == 0 {
        announce(client).await?;
    }
    Ok(output)
}

/// Sends the session's pending notifications; answers how many.
async fn announce(client: &deadpool_postgres::Client) -> Result<u64, StoreError> {
    let messages = client.simple_query(ANNOUNCE).await?;
    let sent = messages.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).and_then(|n| n.parse().ok()),
        _ => None,
    });
    sent.ok_or_else(|| StoreError::Invalid("announce_heads() answered no count".into()))
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
