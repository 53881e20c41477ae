use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use ferry::projections;
use ferry::protocol::{Actor, EventType};
use ferry::store::{self, EventMeta, GenericClient, NewEvent, Pool};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::TestApp;

const TABLES: [&str; 7] = [
    "projects",
    "project_members",
    "project_invites",
    "project_devices",
    "remote_files",
    "file_transfers",
    "file_chunks",
];

/// Appends one random command: a new project, or a batch of renames,
/// archives, invites, joins, removals, device attachments and detachments
/// on an existing one (the same user or device coming and going within one
/// batch included).
async fn random_command(pool: &Pool, rng: &mut StdRng, projects: &mut Vec<Uuid>, users: &[Uuid]) {
    let mut client = pool.get().await.unwrap();
    let tx = client.transaction().await.unwrap();
    let meta = EventMeta { actor: Actor { user_id: Some(users[0]), device_id: None }, idempotency_key: None };
    if projects.is_empty() || rng.gen_bool(0.2) {
        let id = Uuid::now_v7();
        store::create_stream(&tx, id).await.unwrap();
        let owner = users[rng.gen_range(0..users.len())];
        let created = NewEvent::new(
            EventType::ProjectCreated,
            json!({"name": format!("p{}", projects.len()), "owner_id": owner}),
        );
        store::append(&tx, id, &meta, &[created]).await.unwrap();
        projects.push(id);
    } else {
        let project = projects[rng.gen_range(0..projects.len())];
        let batch: Vec<NewEvent> = (0..rng.gen_range(1..6))
            .map(|i| {
                let user = users[rng.gen_range(0..users.len())];
                // Few invite and device ids, so they recur across batches.
                let invite = Uuid::from_u128(rng.gen_range(1..4) + (project.as_u128() << 8));
                let device = Uuid::from_u128(rng.gen_range(1..4));
                let path = |rng: &mut StdRng| format!("/d{}/f{}", rng.gen_range(0..2), rng.gen_range(0..4));
                let state = |rng: &mut StdRng, path: String| {
                    let size = rng.gen_range(0..1000);
                    // No chunk list (the file is its own chunk, none when
                    // empty), or one to three chunks, a hash repeated within
                    // a file or across files included.
                    let chunks = match rng.gen_range(0..4) {
                        0 => Value::Null,
                        n => (0..n)
                            .map(|_| json!({"hash": format!("{:064x}", rng.gen_range(0..6)), "size": size}))
                            .collect(),
                    };
                    json!({"path": path, "size": size, "hash": format!("{:064x}", rng.gen::<u64>()), "mime_type": "text/plain",
                           "modified_at": null, "chunks": chunks, "version": rng.gen_range(1..50)})
                };
                let transfer = |rng: &mut StdRng, status: &str| {
                    json!({"transfer_id": Uuid::from_u128(rng.gen_range(1..4) + (project.as_u128() << 8) + 100),
                           "requester_id": user, "file_path": "/d0/f1", "status": status,
                           "bytes_transferred": rng.gen_range(0..100), "total_bytes": 100, "percent": 1.5,
                           "speed_mbps": null, "eta_seconds": null, "attempts": rng.gen_range(1..4), "error_message": null,
                           "started_at": null, "completed_at": null, "expires_at": "2030-01-01T00:00:00Z",
                           "last_activity_at": "2030-01-01T00:00:00Z", "last_progress_at": null, "window": [[1, 2]],
                           "file_hash": format!("{:064x}", 7), "mime_type": "text/plain", "source_device_id": device,
                           "target_device_id": null, "protocol": "relay", "request_mode": "full", "chunks_needed": []})
                };
                match rng.gen_range(0..26) {
                    22..=23 => {
                        let t = transfer(rng, "pending");
                        NewEvent::new(EventType::TransferRequested, t)
                    }
                    24..=25 => {
                        let (event_type, status) = [
                            (EventType::FileTransferStarted, "in_progress"),
                            (EventType::FileTransferProgress, "in_progress"),
                            (EventType::FileTransferFailed, "failed"),
                            (EventType::TransferRetried, "pending"),
                            (EventType::FileTransferComplete, "completed"),
                        ][rng.gen_range(0..5)];
                        let t = transfer(rng, status);
                        NewEvent::new(event_type, t)
                    }
                    16..=17 => {
                        let t = if rng.gen() { EventType::FileAdded } else { EventType::FileUpdated };
                        let p = path(rng);
                        NewEvent::new(t, state(rng, p))
                    }
                    18 => {
                        let p = path(rng);
                        NewEvent::new(EventType::FileDeleted, state(rng, p))
                    }
                    19..=21 => {
                        let (from, to) = (path(rng), path(rng));
                        let mut moved = state(rng, to.clone());
                        moved["from"] = json!(from);
                        moved["to"] = json!(to);
                        moved["from_version"] = json!(rng.gen_range(1..50));
                        NewEvent::new(EventType::FileMoved, moved)
                    }
                    0..=1 => NewEvent::new(EventType::ProjectRenamed, json!({"name": format!("r{i}-{}", rng.gen::<u16>())})),
                    2 => NewEvent::new(EventType::ProjectArchived, json!({})),
                    3..=4 => NewEvent::new(EventType::MemberJoined, json!({"user_id": user, "invite_id": invite})),
                    5..=6 => NewEvent::new(EventType::MemberRemoved, json!({"user_id": user, "reason": "left"})),
                    7..=8 => NewEvent::new(
                        EventType::InviteCreated,
                        json!({"invite_id": invite, "token_hash": format!("{:064x}", invite.as_u128()),
                               "expires_at": "2030-01-01T00:00:00Z", "max_uses": rng.gen_range(1..4)}),
                    ),
                    9 => NewEvent::new(EventType::InviteRevoked, json!({"invite_id": invite})),
                    10..=12 => NewEvent::new(
                        EventType::DeviceAttached,
                        json!({"device_id": device, "user_id": user, "role": if rng.gen() { "source" } else { "target" }}),
                    ),
                    _ => NewEvent::new(EventType::DeviceDetached, json!({"device_id": device, "user_id": user, "reason": "detached"})),
                }
            })
            .collect();
        store::append(&tx, project, &meta, &batch).await.unwrap();
    }
    tx.commit().await.unwrap();
}

async fn snapshot(app: &TestApp) -> Vec<Vec<Value>> {
    let mut out = Vec::new();
    for table in TABLES {
        out.push(app.table(table).await);
    }
    out
}

/// Panics naming the table and the rows that differ.
fn assert_same(rebuilt: &[Vec<Value>], live: &[Vec<Value>], context: &str) {
    for ((table, rebuilt), live) in TABLES.iter().zip(rebuilt).zip(live) {
        let missing: Vec<&Value> = live.iter().filter(|r| !rebuilt.contains(r)).collect();
        let extra: Vec<&Value> = rebuilt.iter().filter(|r| !live.contains(r)).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{context}: {table} differs.\nonly live: {missing:#?}\nonly rebuilt: {extra:#?}"
        );
    }
}

async fn rebuild_all(pool: &Pool) {
    for projection in projections::ALL {
        projections::rebuild(pool, projection).await.unwrap();
    }
}

#[tokio::test]
async fn rebuild_equals_live_after_a_long_random_history() {
    let app = TestApp::spawn().await;
    let mut rng = StdRng::seed_from_u64(20261127);
    let users: Vec<Uuid> = (0..6).map(|_| Uuid::now_v7()).collect();
    let mut projects = Vec::new();
    for _ in 0..400 {
        random_command(&app.pool, &mut rng, &mut projects, &users).await;
    }
    let live = snapshot(&app).await;
    assert!(
        live.iter().all(|rows| rows.len() > 20),
        "the history is not trivial: {:?}",
        live.iter().map(Vec::len).collect::<Vec<_>>()
    );
    // Every shape of a chunk list made it into file_chunks: later chunks of
    // a file, a hash listed twice in one file, a file that is its own chunk.
    let client = app.pool.get().await.unwrap();
    let (later, twice): (i64, i64) = client
        .query_one(
            "SELECT (SELECT count(*) FROM file_chunks WHERE idx > 0),
                    (SELECT count(*) FROM (SELECT 1 FROM file_chunks GROUP BY project_id, path, hash
                                           HAVING count(*) > 1) d)",
            &[],
        )
        .await
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert!(later > 0 && twice > 0, "later chunks {later}, hashes twice in a file {twice}");
    drop(client);
    rebuild_all(&app.pool).await;
    assert_same(&snapshot(&app).await, &live, "rebuild after a random history");

    // A build into keyless tables made the keys again: the rebuilt tables
    // have the keys and indexes their files declare, made here afresh.
    let mut client = app.pool.get().await.unwrap();
    let rebuilt = keys_and_indexes(&client, "public").await;
    let tx = client.transaction().await.unwrap();
    tx.batch_execute("CREATE SCHEMA declared; SET LOCAL search_path = declared;").await.unwrap();
    for projection in projections::ALL {
        tx.batch_execute(projection.tables_sql()).await.unwrap();
    }
    assert_eq!(rebuilt, keys_and_indexes(&tx, "declared").await);
    assert!(rebuilt.iter().any(|(table, _, def)| table == "remote_files" && def == "PRIMARY KEY (project_id, path)"));
}

/// The constraints and indexes of the projections' tables in `schema`:
/// (table, name, definition without the schema).
async fn keys_and_indexes(client: &impl GenericClient, schema: &str) -> Vec<(String, String, String)> {
    let rows = client
        .query(
            "SELECT c.relname::text, k.conname::text, pg_get_constraintdef(k.oid)
             FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
             WHERE k.connamespace = $1::text::regnamespace AND c.relname = ANY($2)
             UNION ALL
             SELECT tablename::text, indexname::text, replace(indexdef, ' ON ' || schemaname || '.', ' ON ')
             FROM pg_indexes WHERE schemaname = $1 AND tablename = ANY($2)
             ORDER BY 1, 2, 3",
            &[&schema, &TABLES.to_vec()],
        )
        .await
        .unwrap();
    rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect()
}

#[tokio::test]
async fn rebuild_under_concurrent_writers_loses_nothing_and_never_shows_an_empty_table() {
    let app = TestApp::spawn().await;
    let users: Vec<Uuid> = (0..4).map(|_| Uuid::now_v7()).collect();
    let done = Arc::new(AtomicBool::new(false));

    let writers: Vec<_> = (0..4u64)
        .map(|w| {
            let (pool, users) = (app.pool.clone(), users.clone());
            tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(w);
                let mut projects = Vec::new();
                for _ in 0..120 {
                    random_command(&pool, &mut rng, &mut projects, &users).await;
                }
            })
        })
        .collect();
    // Projects are never deleted, so their count may only grow.
    let reader = {
        let (pool, done) = (app.pool.clone(), done.clone());
        tokio::spawn(async move {
            let client = pool.get().await.unwrap();
            let (mut last, mut reads) = (0_i64, 0);
            while !done.load(Ordering::Relaxed) {
                let n: i64 = client.query_one("SELECT count(*) FROM projects", &[]).await.unwrap().get(0);
                assert!(n >= last, "projects went from {last} to {n} rows");
                (last, reads) = (n, reads + 1);
            }
            reads
        })
    };
    let mut rebuilds = 0;
    while writers.iter().any(|w| !w.is_finished()) || rebuilds < 2 {
        rebuild_all(&app.pool).await;
        rebuilds += 1;
    }
    for writer in writers {
        writer.await.unwrap();
    }
    done.store(true, Ordering::Relaxed);
    assert!(reader.await.unwrap() > 0);

    let live = snapshot(&app).await;
    assert!(!live[0].is_empty());
    rebuild_all(&app.pool).await;
    assert_same(&snapshot(&app).await, &live, &format!("events appended during {rebuilds} rebuilds"));
}

#[tokio::test]
async fn a_changed_projection_is_rebuilt_at_start_and_reported() {
    let app = TestApp::spawn().await;
    let owner = app.signup("owner").await;
    app.create_project(&owner, "kept").await;
    assert!(projections::ensure_up_to_date(&app.pool).await.unwrap().is_empty(), "all current");

    app.pool
        .get()
        .await
        .unwrap()
        .execute("UPDATE projection_versions SET version = 'older' WHERE name = 'projects'", &[])
        .await
        .unwrap();
    let rebuilt = projections::ensure_up_to_date(&app.pool).await.unwrap();
    assert_eq!(rebuilt.iter().map(|r| r.name).collect::<Vec<_>>(), vec!["projects"]);
    assert_eq!(rebuilt[0].events_read, 1);

    let status = projections::status(&app.pool).await.unwrap();
    let projects = status.iter().find(|s| s.name == "projects").unwrap();
    assert_eq!(projects.built_version.as_deref(), Some(projects.version.as_str()));
    assert_eq!(projects.rows, 1);
    assert_eq!(app.get("/api/projects", &owner.token).await.1["projects"][0]["name"], "kept");
}

/// The projections are applied by one statement trigger per log (one
/// PL/pgSQL call per append, not one per projection), and rebuilding one
/// projection keeps every other one applied live.
#[tokio::test]
async fn one_trigger_per_log_applies_every_projection_live_after_a_rebuild() {
    let app = TestApp::spawn().await;
    let triggers = || async {
        let client = app.pool.get().await.unwrap();
        let rows = client
            .query(
                "SELECT c.relname::text, t.tgname::text FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
                 WHERE c.relname IN ('project_events', 'transfer_events') AND t.tgnewtable IS NOT NULL
                 ORDER BY 1, 2",
                &[],
            )
            .await
            .unwrap();
        rows.iter().map(|r| (r.get::<_, String>(0), r.get::<_, String>(1))).collect::<Vec<_>>()
    };
    let expected = vec![
        ("project_events".to_owned(), "apply_projections".to_owned()),
        ("transfer_events".to_owned(), "apply_projections".to_owned()),
    ];
    assert_eq!(triggers().await, expected);

    projections::rebuild(&app.pool, projections::find("remote_files").unwrap()).await.unwrap();
    assert_eq!(triggers().await, expected, "a rebuild swaps the same two triggers in");
    let mut rng = StdRng::seed_from_u64(19);
    let users: Vec<Uuid> = (0..4).map(|_| Uuid::now_v7()).collect();
    let mut projects = Vec::new();
    for _ in 0..250 {
        random_command(&app.pool, &mut rng, &mut projects, &users).await;
    }
    let live = snapshot(&app).await;
    assert!(live.iter().all(|rows| !rows.is_empty()), "{:?}", live.iter().map(Vec::len).collect::<Vec<_>>());
    rebuild_all(&app.pool).await;
    assert_same(&snapshot(&app).await, &live, "live after a rebuild of one projection");
}
