use std::collections::BTreeMap;
use std::time::Duration;

use ferry::protocol::{Actor, EventType};
use ferry::store::{self, EventMeta, NewEvent, Pool};
use futures_util::StreamExt;
use serde_json::json;
use uuid::Uuid;

use crate::helpers::TestApp;

fn meta() -> EventMeta {
    EventMeta { actor: Actor { user_id: None, device_id: None }, idempotency_key: None }
}

async fn new_stream(pool: &Pool) -> Uuid {
    let mut client = pool.get().await.unwrap();
    let tx = client.transaction().await.unwrap();
    let id = Uuid::now_v7();
    store::create_stream(&tx, id).await.unwrap();
    let created = NewEvent::new(EventType::ProjectCreated, json!({"name": "p", "owner_id": Uuid::now_v7()}));
    store::append(&tx, id, &meta(), &[created]).await.unwrap();
    tx.commit().await.unwrap();
    id
}

/// A batch mixing both logs, so the shared sequence is exercised.
fn mixed_batch(n: usize) -> Vec<NewEvent> {
    (0..n)
        .map(|i| {
            let t = if i % 2 == 0 { EventType::ProjectRenamed } else { EventType::FileTransferProgress };
            NewEvent::new(t, json!({"name": format!("n{i}")}))
        })
        .collect()
}

#[tokio::test]
async fn concurrent_appenders_leave_gap_free_sequences() {
    let app = TestApp::spawn().await;
    let mut projects = Vec::new();
    for _ in 0..4 {
        projects.push(new_stream(&app.pool).await);
    }
    let writers = (0..16).map(|w| {
        let pool = app.pool.clone();
        let projects = projects.clone();
        tokio::spawn(async move {
            for i in 0..40usize {
                let project = projects[(w + i) % projects.len()];
                let mut client = pool.get().await.unwrap();
                let tx = client.transaction().await.unwrap();
                store::append(&tx, project, &meta(), &mixed_batch(1 + (w + i) % 3)).await.unwrap();
                // Every fifth command rolls back: its seqs must not leave a gap.
                if i % 5 == 4 {
                    tx.rollback().await.unwrap();
                } else {
                    tx.commit().await.unwrap();
                }
            }
        })
    });
    for writer in futures_util::future::join_all(writers).await {
        writer.unwrap();
    }

    let client = app.pool.get().await.unwrap();
    for project in projects {
        let rows = client
            .query("SELECT seq, position, log FROM events WHERE project_id = $1 ORDER BY seq", &[&project])
            .await
            .unwrap();
        let seqs: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
        let expected: Vec<i64> = (1..=seqs.len() as i64).collect();
        assert_eq!(seqs, expected, "project {project}: gap or duplicate");
        let head: i64 = client
            .query_one("SELECT head_seq FROM project_heads WHERE project_id = $1", &[&project])
            .await
            .unwrap()
            .get(0);
        assert_eq!(head, seqs.len() as i64);
        let positions: Vec<i64> = rows.iter().map(|r| r.get(1)).collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "positions follow seqs");
        let logs: Vec<String> = rows.iter().map(|r| r.get(2)).collect();
        assert!(logs.contains(&"transfer".to_owned()) && logs.contains(&"project".to_owned()));
    }
}

#[tokio::test]
async fn logs_refuse_update_delete_and_truncate() {
    let app = TestApp::spawn().await;
    let project = new_stream(&app.pool).await;
    {
        let mut client = app.pool.get().await.unwrap();
        let tx = client.transaction().await.unwrap();
        store::append(&tx, project, &meta(), &mixed_batch(2)).await.unwrap();
        tx.commit().await.unwrap();
    }
    let client = app.pool.get().await.unwrap();
    for table in ["project_events", "transfer_events"] {
        for sql in [
            format!("UPDATE {table} SET data = '{{}}' WHERE project_id = '{project}'"),
            format!("DELETE FROM {table} WHERE project_id = '{project}'"),
            format!("TRUNCATE {table} CASCADE"),
        ] {
            let err = client.batch_execute(&sql).await.expect_err(&sql);
            assert!(err.as_db_error().unwrap().message().contains("append-only"), "{sql}: {err}");
        }
    }
    assert_eq!(app.log(project).await.len(), 3);
}

/// The logs have no foreign key to the heads: the append derives every row
/// from the head it raises, and a head, once there, stays.
#[tokio::test]
async fn heads_are_never_removed() {
    let app = TestApp::spawn().await;
    let project = new_stream(&app.pool).await;
    let client = app.pool.get().await.unwrap();
    for sql in [
        format!("DELETE FROM project_heads WHERE project_id = '{project}'"),
        "TRUNCATE project_heads CASCADE".to_owned(),
    ] {
        let err = client.batch_execute(&sql).await.expect_err(&sql);
        assert!(err.as_db_error().unwrap().message().contains("keeps every stream"), "{sql}: {err}");
    }
    let heads: i64 =
        client.query_one("SELECT count(*) FROM project_heads WHERE project_id = $1", &[&project]).await.unwrap().get(0);
    assert_eq!(heads, 1);
}

/// A LISTEN session on `ferry_events`: the payloads it hears, as JSON.
async fn listen(url: &str) -> (tokio_postgres::Client, tokio::sync::mpsc::UnboundedReceiver<serde_json::Value>) {
    let (listener, mut connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    let (tx_notes, notes) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            if let tokio_postgres::AsyncMessage::Notification(n) = message {
                let _ = tx_notes.send(serde_json::from_str(n.payload()).unwrap());
            }
        }
    });
    listener.batch_execute("LISTEN ferry_events").await.unwrap();
    (listener, notes)
}

/// What `notes` hears until it has been quiet for `quiet`.
async fn heard(
    notes: &mut tokio::sync::mpsc::UnboundedReceiver<serde_json::Value>,
    quiet: Duration,
) -> Vec<serde_json::Value> {
    let mut payloads = Vec::new();
    while let Ok(Some(p)) = tokio::time::timeout(quiet, notes.recv()).await {
        payloads.push(p);
    }
    payloads
}

/// The pool's sessions keep their notifications until the session's next
/// `store::in_transaction` commits, which sends them: one per project and
/// committed transaction, carrying only the head. A rolled-back transaction
/// leaves none.
#[tokio::test]
async fn pooled_notifications_wait_for_the_announce_one_per_transaction() {
    let app = TestApp::spawn().await;
    let (_listener, mut notes) = listen(&app.database_url).await;

    let mut client = app.pool.get().await.unwrap();
    let project = Uuid::now_v7();
    let tx = client.transaction().await.unwrap();
    store::create_stream(&tx, project).await.unwrap();
    store::append(&tx, project, &meta(), &mixed_batch(1)).await.unwrap();
    tx.commit().await.unwrap();
    let tx = client.transaction().await.unwrap();
    store::append(&tx, project, &meta(), &mixed_batch(3)).await.unwrap();
    store::append(&tx, project, &meta(), &mixed_batch(2)).await.unwrap();
    tx.commit().await.unwrap();
    let tx = client.transaction().await.unwrap();
    store::append(&tx, project, &meta(), &mixed_batch(4)).await.unwrap();
    drop(tx);
    assert_eq!(
        heard(&mut notes, Duration::from_millis(300)).await,
        Vec::<serde_json::Value>::new(),
        "nothing before the announce"
    );

    store::in_transaction(&client, async { Ok::<_, store::StoreError>(()) }).await.unwrap();
    assert_eq!(
        heard(&mut notes, Duration::from_millis(500)).await,
        vec![json!({"project_id": project, "head_seq": 1}), json!({"project_id": project, "head_seq": 6})],
        "one per committed transaction, in commit order, carrying only the head"
    );
}

/// `store::on_its_own` runs one statement as its own transaction and
/// announces it. On a connection new to the statement, its Parse goes out
/// first and the announce runs before it; the announce is then sent again,
/// so nothing is left pending (on a pool of its own: nothing else on that
/// session could send it instead). A failed statement leaves nothing.
#[tokio::test]
async fn a_statement_on_its_own_is_announced_even_when_it_was_prepared_first() {
    let app = TestApp::spawn().await;
    let project = new_stream(&app.pool).await;
    let (_listener, mut notes) = listen(&app.database_url).await;
    let pool = store::connect(&app.database_url, 1).unwrap();
    let client = pool.get().await.unwrap();
    let pending = || async {
        let row = client.query_one("SELECT current_setting('ferry.pending_notifications', true)", &[]).await.unwrap();
        row.get::<_, Option<String>>(0).unwrap_or_default()
    };

    let appended = store::on_its_own(&client, store::append(&client, project, &meta(), &mixed_batch(2))).await.unwrap();
    assert_eq!(appended.to_seq, 3);
    assert_eq!(pending().await, "", "nothing left pending");
    assert_eq!(
        heard(&mut notes, Duration::from_millis(500)).await,
        vec![json!({"project_id": project, "head_seq": 3})],
        "announced once, with its head"
    );

    let unknown = Uuid::now_v7();
    let refused = store::on_its_own(&client, store::append(&client, unknown, &meta(), &mixed_batch(1))).await;
    assert!(matches!(refused, Err(store::StoreError::UnknownStream(_))), "{refused:?}");
    assert_eq!(pending().await, "");
    assert_eq!(heard(&mut notes, Duration::from_millis(300)).await, Vec::<serde_json::Value>::new());
}

/// `store::in_transaction` commits what its body did when the body
/// succeeds; a body that fails, or is dropped half-way (a request whose
/// client went away), leaves nothing, and the connection is out of the
/// transaction for its next user.
#[tokio::test]
async fn in_transaction_commits_or_leaves_nothing() {
    let app = TestApp::spawn().await;
    let project = new_stream(&app.pool).await;
    let client = app.pool.get().await.unwrap();
    let count = || async {
        let n: i64 =
            client.query_one("SELECT count(*) FROM events WHERE project_id = $1", &[&project]).await.unwrap().get(0);
        n
    };

    let appended = store::in_transaction(&client, store::append(&client, project, &meta(), &mixed_batch(2))).await;
    assert_eq!(appended.unwrap().to_seq, 3);
    assert_eq!(count().await, 3);

    let failed = store::in_transaction(&client, async {
        store::append(&client, project, &meta(), &mixed_batch(2)).await?;
        Err::<(), _>(store::StoreError::Invalid("refused".into()))
    })
    .await;
    assert!(failed.is_err());
    assert_eq!(count().await, 3, "a failed body leaves nothing");

    let dropped = tokio::time::timeout(
        Duration::from_millis(200),
        store::in_transaction(&client, async {
            store::append(&client, project, &meta(), &mixed_batch(2)).await?;
            std::future::pending::<Result<(), store::StoreError>>().await
        }),
    )
    .await;
    assert!(dropped.is_err(), "the body never ends");
    assert_eq!(count().await, 3, "a dropped body leaves nothing, and the session is out of its transaction");
    let in_block: bool = client.query_one("SELECT txid_current_if_assigned() IS NOT NULL", &[]).await.unwrap().get(0);
    assert!(!in_block, "no transaction left open");
}

/// A session that does not ask for them after the commit (psql, an admin's
/// script) is notified in its transaction, as before.
#[tokio::test]
async fn other_sessions_notify_in_their_transaction() {
    let app = TestApp::spawn().await;
    let (_listener, mut notes) = listen(&app.database_url).await;
    let mut client = app.pool.get().await.unwrap();
    client.batch_execute("SET ferry.notify TO 'in_transaction'").await.unwrap();
    let project = Uuid::now_v7();
    let tx = client.transaction().await.unwrap();
    store::create_stream(&tx, project).await.unwrap();
    store::append(&tx, project, &meta(), &mixed_batch(3)).await.unwrap();
    store::append(&tx, project, &meta(), &mixed_batch(2)).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        heard(&mut notes, Duration::from_millis(500)).await,
        vec![json!({"project_id": project, "head_seq": 5})]
    );
}

/// A command announces its commit: a LISTEN session hears it at once (the
/// servers' look at the heads, set far apart here, sends nothing).
#[tokio::test]
async fn a_command_announces_its_commit() {
    let app = TestApp::spawn_with(|s| s.realtime.ws_catch_up_ms = 600_000).await;
    let owner = app.signup("owner").await;
    let project = app.create_project(&owner, "Announced").await;
    let (_listener, mut notes) = listen(&app.database_url).await;
    let path = format!("/api/projects/{project}");
    let (status, body) =
        app.call(reqwest::Method::PATCH, &path, Some(&owner.token), Some(&json!({"name": "renamed"}))).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    // The project's creation may be heard first: its announce ran on its own.
    let expected = json!({"project_id": project, "head_seq": body["head_seq"]});
    let announced = async {
        while let Some(payload) = notes.recv().await {
            if payload == expected {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), announced).await.expect("the rename is announced");
}

#[tokio::test]
async fn reads_merge_both_logs_in_seq_order() {
    let app = TestApp::spawn().await;
    let project = new_stream(&app.pool).await;
    let mut client = app.pool.get().await.unwrap();
    let tx = client.transaction().await.unwrap();
    let appended = store::append(&tx, project, &meta(), &mixed_batch(5)).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!((appended.from_seq, appended.to_seq), (2, 6));

    let page = store::read_after(&client, project, 2, 3).await.unwrap();
    let seen: BTreeMap<i64, String> = page.iter().map(|e| (e.seq, e.event_type.clone())).collect();
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        vec![
            (3, "file_transfer_progress".to_owned()),
            (4, "project_renamed".to_owned()),
            (5, "file_transfer_progress".to_owned())
        ]
    );
    assert!(store::read_after(&client, project, 6, 10).await.unwrap().is_empty());
    let unknown = Uuid::now_v7();
    let tx = client.transaction().await.unwrap();
    let err = store::append(&tx, unknown, &meta(), &mixed_batch(1)).await.unwrap_err();
    assert!(matches!(err, store::StoreError::UnknownStream(id) if id == unknown));
    let orphans: i64 =
        tx.query_one("SELECT count(*) FROM events WHERE project_id = $1", &[&unknown]).await.unwrap().get(0);
    assert_eq!(orphans, 0, "an append to a project without a head inserts nothing");
}

/// Payloads go to the log as JSON text written straight from the events
/// (binary jsonb): what is read back is what was appended, typed or not,
/// whatever the text holds (escapes, non-ASCII, numbers, nesting).
#[tokio::test]
async fn payloads_read_back_as_appended() {
    use ferry::protocol::events::data::FileState;
    use ferry::protocol::files::ChunkRef;
    use ferry::protocol::EventData;

    let app = TestApp::spawn().await;
    let project = new_stream(&app.pool).await;
    let state = FileState {
        path: "/naïve \"quoted\"/tab\there/日本語.txt".into(),
        size: (1 << 53) - 1,
        hash: format!("{:064x}", 7),
        mime_type: "text/plain".into(),
        modified_at: Some(chrono::DateTime::from_timestamp(1_700_000_000, 123_456_789).unwrap()),
        chunks: Some(vec![ChunkRef { hash: format!("{:064x}", 8), size: 1 }]),
        version: 3,
    };
    let typed = vec![EventData::FileAdded(state.clone()), EventData::FileDeleted(FileState { chunks: None, ..state })];
    let untyped = NewEvent::new(
        EventType::ProjectRenamed,
        json!({"name": "\u{1F600} \\ \u{0001} </script>", "n": [1.5, -2, 1e300, {"deep": [[]]}], "empty": {}}),
    );
    let mut client = app.pool.get().await.unwrap();
    let tx = client.transaction().await.unwrap();
    store::append(&tx, project, &meta(), &typed).await.unwrap();
    store::append(&tx, project, &meta(), std::slice::from_ref(&untyped)).await.unwrap();
    tx.commit().await.unwrap();

    let read = store::read_after(&client, project, 1, 10).await.unwrap();
    assert_eq!(read.len(), 3);
    let events: Vec<EventData> = read[..2].iter().map(|e| e.clone().into_event().unwrap().data).collect();
    assert_eq!(events, typed);
    assert_eq!(read[2].data, untyped.data);
}
