//! Appending to and reading from the two logs.

use std::sync::LazyLock;

use bytes::{BufMut, BytesMut};
use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::{GenericClient, StoreError};
use crate::protocol::{Actor, Event, EventData, EventType, Log};
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use tokio_postgres::{Row, Statement};

/// What [`append`] appends: an [`EventData`], as commands do, or a
/// [`NewEvent`].
pub trait Appendable {
    fn event_type(&self) -> EventType;
    /// Writes the payload, stored in `data`, as JSON text to `out`: straight
    /// from the typed event, with no `serde_json::Value` in between (a batch
    /// of 10,000 file events would otherwise build and drop 10,000 trees).
    fn write_payload(&self, out: &mut Vec<u8>);
}

impl Appendable for EventData {
    fn event_type(&self) -> EventType {
        EventData::event_type(self)
    }

    fn write_payload(&self, out: &mut Vec<u8>) {
        EventData::write_payload(self, out)
    }
}

/// An event with an untyped payload, for tests and benchmarks that write
/// the log directly; commands append [`EventData`].
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event_type: EventType,
    pub data: Value,
}

impl NewEvent {
    pub fn new(event_type: EventType, data: impl serde::Serialize) -> Self {
        let data = serde_json::to_value(data).expect("event payloads serialize to JSON");
        Self { event_type, data }
    }
}

impl Appendable for NewEvent {
    fn event_type(&self) -> EventType {
        self.event_type
    }

    fn write_payload(&self, out: &mut Vec<u8>) {
        serde_json::to_writer(out, &self.data).expect("a JSON value serializes");
    }
}

/// JSON text already serialised, sent as a `jsonb` parameter as it is: the
/// binary `jsonb` format is a version byte (1) and the text, so the server
/// parses it once and the client does no more than copy it.
struct JsonbText<'a>(&'a [u8]);

impl std::fmt::Debug for JsonbText<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&String::from_utf8_lossy(self.0))
    }
}

impl ToSql for JsonbText<'_> {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.put_u8(1);
        out.put_slice(self.0);
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::JSONB
    }

    to_sql_checked!();
}

/// What every event of one command carries besides its payload.
#[derive(Debug, Clone)]
pub struct EventMeta {
    pub actor: Actor,
    pub idempotency_key: Option<String>,
}

/// The seqs a command's events received, and the transaction's timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub from_seq: i64,
    pub to_seq: i64,
    pub created_at: DateTime<Utc>,
}

/// An event as stored: its type and payload as the log holds them; see
/// [`RecordedEvent::into_event`] for the typed event.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedEvent {
    pub project_id: Uuid,
    pub seq: i64,
    pub id: Uuid,
    pub event_type: String,
    pub data: Value,
    pub actor: Actor,
    pub created_at: DateTime<Utc>,
    pub position: i64,
}

/// Starts a project's stream: its head row at seq 0.
pub async fn create_stream(client: &impl GenericClient, project_id: Uuid) -> Result<(), StoreError> {
    client.execute("INSERT INTO project_heads (project_id) VALUES ($1)", &[&project_id]).await?;
    Ok(())
}

/// Locks the project's head row until the transaction ends and returns the
/// head seq, or `None` for an unknown project. Commands take this lock
/// before they validate, so the state they check cannot change under them.
pub async fn lock_stream(client: &impl GenericClient, project_id: Uuid) -> Result<Option<i64>, StoreError> {
    let stmt = lock_statement(client).await?;
    Ok(client.query_opt(&stmt, &[&project_id]).await?.map(|row| row.get(0)))
}

/// The statement of [`lock_stream`], prepared (once per connection), for
/// callers that pipeline it with the statements that follow: a statement
/// must be prepared before the pipeline is sent, or its Parse would go first
/// and its execution after the others.
pub async fn lock_statement(client: &impl GenericClient) -> Result<Statement, StoreError> {
    Ok(client.prepare_cached("SELECT head_seq FROM project_heads WHERE project_id = $1 FOR UPDATE").await?)
}

/// Raises the head by the batch size (taking the head row lock, held until
/// commit, so commit order is seq order) and inserts the whole batch, in one
/// statement. Each event's position is drawn in batch order, so within a
/// project position order is seq order too. Only the logs the batch touches
/// are written, so no empty statement fires the other log's triggers.
///
/// With `check` (see [`append_checked`]), the row answered also holds the
/// columns of that function call, evaluated once the head row is locked.
fn append_sql(project: bool, transfer: bool, check: Option<&str>) -> String {
    let insert = |table: &str, which: &str| {
        format!(
            ", {table}_rows AS (
    INSERT INTO {table}
        (project_id, seq, id, type, data, actor_user_id, actor_device_id, idempotency_key, position)
    SELECT $1, seq, id, type, data, $6, $7, $8, position FROM batch WHERE {which}
)"
        )
    };
    format!(
        "WITH head AS (
    UPDATE project_heads SET head_seq = head_seq + cardinality($2::uuid[])
    WHERE project_id = $1
    RETURNING head_seq
), batch AS MATERIALIZED (
    SELECT head.head_seq - cardinality($2::uuid[]) + e.ord AS seq,
           e.id, e.type, e.data, e.is_transfer, nextval('event_position') AS position
    FROM head,
         unnest($2::uuid[], $3::text[], $4::jsonb[], $5::bool[])
             WITH ORDINALITY AS e(id, type, data, is_transfer, ord)
){}{}
SELECT head_seq, now(){} FROM head{}",
        if project { insert("project_events", "NOT is_transfer") } else { String::new() },
        if transfer { insert("transfer_events", "is_transfer") } else { String::new() },
        if check.is_some() { ", checked.*" } else { "" },
        check.map(|call| format!(", {call} AS checked")).unwrap_or_default(),
    )
}

static APPEND_PROJECT: LazyLock<String> = LazyLock::new(|| append_sql(true, false, None));
static APPEND_TRANSFER: LazyLock<String> = LazyLock::new(|| append_sql(false, true, None));
static APPEND_BOTH: LazyLock<String> = LazyLock::new(|| append_sql(true, true, None));

/// Appends `events` to the project's logs in the caller's transaction.
pub async fn append(
    client: &impl GenericClient,
    project_id: Uuid,
    meta: &EventMeta,
    events: &[impl Appendable],
) -> Result<Appended, StoreError> {
    let sql = match logs_of(events) {
        (true, false) => &*APPEND_PROJECT,
        (false, true) => &*APPEND_TRANSFER,
        _ => &*APPEND_BOTH,
    };
    let stmt = client.prepare_cached(sql).await?;
    let row = append_row(client, &stmt, project_id, meta, events, &[]).await?;
    Ok(appended_of(&row, events.len()))
}

/// Which logs `events` go to: (project log, transfer log).
fn logs_of(events: &[impl Appendable]) -> (bool, bool) {
    let has = |log| events.iter().any(|e| e.event_type().log() == log);
    (has(Log::Project), has(Log::Transfer))
}

/// [`append`] and a check in one statement, which needs no transaction
/// around it. `check` calls a function that raises to refuse, such as
/// `command_project($1, $9, $10)` (migration V0024): `$1` is the project,
/// `$9` on are `check_params`. It is called once the statement holds the
/// head lock, and a volatile function's queries each take a snapshot of
/// their own, so it sees every command committed before; its refusal rolls
/// the append back. Answers the append and the row, whose columns from 2
/// on are the function's.
pub async fn append_checked(
    client: &impl GenericClient,
    project_id: Uuid,
    meta: &EventMeta,
    events: &[impl Appendable],
    check: &str,
    check_params: &[&(dyn ToSql + Sync)],
) -> Result<(Appended, Row), StoreError> {
    let (project, transfer) = logs_of(events);
    let stmt = client.prepare_cached(&append_sql(project, transfer, Some(check))).await?;
    let row = append_row(client, &stmt, project_id, meta, events, check_params).await?;
    Ok((appended_of(&row, events.len()), row))
}

fn appended_of(row: &Row, events: usize) -> Appended {
    let to_seq: i64 = row.get(0);
    crate::telemetry::EVENTS_APPENDED.inc_by(events as u64);
    Appended { from_seq: to_seq - events as i64 + 1, to_seq, created_at: row.get(1) }
}

/// Runs an append statement of [`append_sql`], with `extra` parameters
/// after its own eight; an unknown project answers no row.
async fn append_row(
    client: &impl GenericClient,
    stmt: &Statement,
    project_id: Uuid,
    meta: &EventMeta,
    events: &[impl Appendable],
    extra: &[&(dyn ToSql + Sync)],
) -> Result<Row, StoreError> {
    if events.is_empty() {
        return Err(StoreError::Invalid("append of an empty batch".into()));
    }
    let ids: Vec<Uuid> = events.iter().map(|_| Uuid::now_v7()).collect();
    let types: Vec<&str> = events.iter().map(|e| e.event_type().as_str()).collect();
    // Every payload into one buffer, then a slice of it per event.
    let mut text = Vec::with_capacity(events.len() * 256);
    let mut ends = Vec::with_capacity(events.len());
    for event in events {
        event.write_payload(&mut text);
        ends.push(text.len());
    }
    let data: Vec<JsonbText<'_>> =
        ends.iter().scan(0, |start, &end| Some(JsonbText(&text[std::mem::replace(start, end)..end]))).collect();
    let is_transfer: Vec<bool> = events.iter().map(|e| e.event_type().log() == Log::Transfer).collect();
    let own: [&(dyn ToSql + Sync); 8] = [
        &project_id,
        &ids,
        &types,
        &data,
        &is_transfer,
        &meta.actor.user_id,
        &meta.actor.device_id,
        &meta.idempotency_key,
    ];
    let params = own.iter().chain(extra).copied();
    client.query_opt(stmt, &params.collect::<Vec<_>>()).await?.ok_or(StoreError::UnknownStream(project_id))
}

/// The columns of both logs, in the order [`RecordedEvent::from_row`] reads.
pub const EVENT_COLUMNS: &str = "project_id, seq, id, type, data, actor_user_id, actor_device_id, created_at, position";

impl RecordedEvent {
    pub fn from_row(row: &tokio_postgres::Row) -> Self {
        Self {
            project_id: row.get(0),
            seq: row.get(1),
            id: row.get(2),
            event_type: row.get(3),
            data: row.get(4),
            actor: Actor { user_id: row.get(5), device_id: row.get(6) },
            created_at: row.get(7),
            position: row.get(8),
        }
    }

    /// The event with its typed payload. The log only holds what commands
    /// appended as [`EventData`], so a failure here is a damaged log.
    pub fn into_event(self) -> Result<Event, StoreError> {
        let (seq, project_id) = (self.seq, self.project_id);
        let damaged = |why: String| StoreError::Invalid(format!("event {seq} of project {project_id}: {why}"));
        let event_type = EventType::parse(&self.event_type).ok_or_else(|| damaged("unknown type".into()))?;
        let data = EventData::from_payload(event_type, self.data).map_err(|e| damaged(e.to_string()))?;
        Ok(Event { seq: self.seq, id: self.id, data, actor: self.actor, created_at: self.created_at })
    }
}

/// The events of a project with seq > `after_seq`, both logs merged in seq
/// order, at most `limit`.
pub async fn read_after(
    client: &impl GenericClient,
    project_id: Uuid,
    after_seq: i64,
    limit: i64,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE project_id = $1 AND seq > $2 ORDER BY seq LIMIT $3");
    let stmt = client.prepare_cached(&sql).await?;
    let rows = client.query(&stmt, &[&project_id, &after_seq, &limit]).await?;
    Ok(rows.iter().map(RecordedEvent::from_row).collect())
}
