//! Building a projection from the log into fresh tables and swapping them in.
//!
//! 1. Build, in a REPEATABLE READ snapshot: create the tables in a private
//!    schema, note every project's head as the snapshot sees it, apply the
//!    whole log in one pass (a view of the snapshot's log as `new_events`;
//!    the projection's build SQL into keyless tables when it has one, its
//!    apply SQL otherwise), then make the keys and the secondary indexes.
//! 2. Swap, in one short transaction: lock `project_heads` in EXCLUSIVE mode
//!    (every command locks its head before it reads projections, so this
//!    waits for commands in flight and holds new ones back, while plain
//!    reads go on), apply the events committed since the snapshot, replace
//!    the live tables and the trigger, record the version.
//!
//! Readers see the old tables until the swap commits, then the new ones;
//! never an empty or half-built table, and no event is lost.

use chrono::{DateTime, Utc};
use deadpool_postgres::Object;
use tokio_postgres::error::SqlState;
use tokio_postgres::IsolationLevel;

use super::{Projection, ALL};
use crate::protocol::Log;
use crate::store::{GenericClient, Pool, StoreError};

/// Serialises rebuilds across servers sharing the database.
const REBUILD_LOCK: i64 = 0x6665_7272_795f_7262; // "ferry_rb"
/// Memory a rebuild's sorts and index builds may take: enough to sort a
/// million events' latest states without spilling to disk. One rebuild runs at
/// a time (they are serialised), and only in its own transaction.
const BUILD_WORK_MEM: &str = "1GB";
/// Below PostgreSQL's default deadlock_timeout (1 s), so the swap, not a
/// command, is the one that gives way.
const SWAP_LOCK_TIMEOUT_MS: u64 = 500;
const SWAP_ATTEMPTS: u32 = 20;
const LOG_COLUMNS: &str =
    "project_id, seq, id, type, data, actor_user_id, actor_device_id, idempotency_key, created_at, position";

#[cfg(test)]
mod tests {
    #[test]
    fn secondary_indexes_are_split_from_the_tables() {
        let (tables, indexes) = super::split_indexes(
            "-- a comment; with a semicolon\nCREATE TABLE t (a int PRIMARY KEY);\n\
             CREATE INDEX t_a ON t (a) WHERE a > 0;\ncreate unique index t_b ON t (a);\n",
        );
        assert!(tables.contains("CREATE TABLE t") && !tables.contains("INDEX") && !tables.contains("comment"));
        assert!(indexes.contains("CREATE INDEX t_a ON t (a) WHERE a > 0;") && indexes.contains("t_b"));
        assert!(!indexes.contains("CREATE TABLE"));
    }

    /// Each statement of the live trigger runs only for the types it reads:
    /// a rename runs the rename's UPDATE, not the creation's INSERT.
    #[test]
    fn the_live_trigger_guards_each_statement_by_its_types() {
        let projects = super::super::find("projects").unwrap();
        let sql = super::triggers_sql(&[projects]);
        let guarded = |types: &str| {
            let block = format!("IF types && ARRAY[{types}]::text[] THEN\n");
            let at = sql.find(&block).unwrap_or_else(|| panic!("no block guarded by {types} in\n{sql}")) + block.len();
            sql[at..].split("END IF;").next().unwrap().to_owned()
        };
        assert!(guarded("'project_created'").contains("INSERT INTO projects"));
        assert!(guarded("'project_renamed'").contains("UPDATE projects p SET name"));
        assert!(guarded("'project_archived'").contains("UPDATE projects p SET archived_at"));
        assert_eq!(sql.matches("IF types &&").count(), 3, "one block per statement:\n{sql}");
        assert!(!sql.contains("EXECUTE $apply$"), "no statement of projects asks to be planned again");
    }

    /// A statement marked `-- replan` is run by EXECUTE, planned at each run.
    #[test]
    fn a_statement_marked_replan_is_planned_at_each_run() {
        let file_chunks = super::super::find("file_chunks").unwrap();
        let sql = super::triggers_sql(&[file_chunks]);
        let executed = sql.split("EXECUTE $apply$").nth(1).expect("an EXECUTE").split("$apply$;").next().unwrap();
        assert!(executed.contains("DELETE FROM file_chunks c USING latest t"), "{sql}");
        assert!(!executed.contains("INSERT INTO file_chunks"), "only the marked statement: {sql}");
        assert_eq!(sql.matches("EXECUTE $apply$").count(), 1, "{sql}");
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebuildReport {
    pub name: &'static str,
    pub version: String,
    /// Events read from the log: the snapshot plus the catch-up.
    pub events_read: i64,
    /// Of those, committed while the build ran.
    pub caught_up: i64,
}

#[derive(Debug, Clone)]
pub struct ProjectionStatus {
    pub name: &'static str,
    /// The version of the projection file in this binary.
    pub version: String,
    /// The version the live tables were built from (None: never built).
    pub built_version: Option<String>,
    pub rebuilt_at: Option<DateTime<Utc>>,
    pub events_read: i64,
    /// Rows in the projection's first table.
    pub rows: i64,
}

/// Rebuilds every projection whose file changed, or that was never built.
pub async fn ensure_up_to_date(pool: &Pool) -> Result<Vec<RebuildReport>, StoreError> {
    let mut reports = Vec::new();
    for projection in ALL {
        if let Some(report) = run_locked(pool, projection, true).await? {
            tracing::info!(
                projection = report.name,
                version = %report.version,
                events = report.events_read,
                "rebuilt projection"
            );
            reports.push(report);
        }
    }
    Ok(reports)
}

/// Rebuilds one projection from the log, whatever its version.
pub async fn rebuild(pool: &Pool, projection: &'static Projection) -> Result<RebuildReport, StoreError> {
    let report = run_locked(pool, projection, false).await?;
    Ok(report.expect("a forced rebuild always runs"))
}

pub async fn status(pool: &Pool) -> Result<Vec<ProjectionStatus>, StoreError> {
    let client = pool.get().await?;
    let mut out = Vec::with_capacity(ALL.len());
    for projection in ALL {
        let row = client
            .query_opt(
                "SELECT version, rebuilt_at, events_read FROM projection_versions WHERE name = $1",
                &[&projection.name],
            )
            .await?;
        let rows: i64 = match &row {
            Some(_) => {
                let table = projection.tables()[0];
                client.query_one(&format!("SELECT count(*) FROM {table}"), &[]).await?.get(0)
            }
            None => 0,
        };
        out.push(ProjectionStatus {
            name: projection.name,
            version: projection.version(),
            built_version: row.as_ref().map(|r| r.get(0)),
            rebuilt_at: row.as_ref().map(|r| r.get(1)),
            events_read: row.as_ref().map_or(0, |r| r.get(2)),
            rows,
        });
    }
    Ok(out)
}

async fn run_locked(
    pool: &Pool,
    projection: &'static Projection,
    only_if_stale: bool,
) -> Result<Option<RebuildReport>, StoreError> {
    let mut client = pool.get().await?;
    client.execute("SELECT pg_advisory_lock($1)", &[&REBUILD_LOCK]).await?;
    let result = run(&mut client, projection, only_if_stale).await;
    // On a broken connection the session lock is gone with it.
    let _ = client.execute("SELECT pg_advisory_unlock($1)", &[&REBUILD_LOCK]).await;
    result
}

async fn run(
    client: &mut Object,
    projection: &'static Projection,
    only_if_stale: bool,
) -> Result<Option<RebuildReport>, StoreError> {
    let version = projection.version();
    if only_if_stale {
        let built: Option<String> = client
            .query_opt("SELECT version FROM projection_versions WHERE name = $1", &[&projection.name])
            .await?
            .map(|row| row.get(0));
        if built.as_deref() == Some(version.as_str()) {
            return Ok(None);
        }
    }

    let name = projection.name;
    let schema = format!("ferry_build_{name}");
    client.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema};")).await?;

    // 1. Build from a snapshot, the whole log in one pass: `new_events` is a
    // view of both logs as this snapshot sees them, so the apply SQL reads the
    // log in place (no copy into a scratch table, batch by batch) and writes
    // each row's final state once, however many events led to it. Secondary
    // indexes are made after the load: one sort, not an insert per row.
    let (tables, indexes) = split_indexes(projection.tables_sql());
    let tx = client.build_transaction().isolation_level(IsolationLevel::RepeatableRead).start().await?;
    tx.batch_execute(&format!(
        "SET LOCAL search_path = {schema}, public;
         SET LOCAL work_mem = '{BUILD_WORK_MEM}';
         SET LOCAL maintenance_work_mem = '{BUILD_WORK_MEM}';
         {tables}
         CREATE TABLE {schema}._heads AS SELECT project_id, head_seq FROM public.project_heads;
         CREATE TEMP VIEW new_events AS SELECT {LOG_COLUMNS} FROM public.events;"
    ))
    .await?;
    match projection.build_sql() {
        Some(build) => {
            // Keyless tables take each row once, in the build's order; the
            // keys are then one sorted build each, as the indexes are.
            let (drop_keys, add_keys) = key_constraints(&tx, &schema).await?;
            tx.batch_execute(&drop_keys).await?;
            tx.batch_execute(build).await?;
            tx.batch_execute(&add_keys).await?;
        }
        None => tx.batch_execute(projection.apply_sql()).await?,
    }
    tx.batch_execute(&indexes).await?;
    // Both logs share each project's gap-free seq: the heads count the events.
    let mut events_read: i64 = tx.query_one("SELECT coalesce(sum(head_seq), 0)::bigint FROM _heads", &[]).await?.get(0);
    tx.batch_execute("DROP VIEW new_events").await?;
    tx.commit().await?;

    // 2. Catch up and swap. The swap gives way rather than wait long for a
    // lock: a transaction holding a read of the old table while it waits for
    // a head would otherwise deadlock with it.
    let mut attempt = 0;
    let caught_up = loop {
        match swap(client, projection, &schema, &version, events_read).await {
            Ok(caught_up) => break caught_up,
            Err(e) if attempt < SWAP_ATTEMPTS && e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => {
                attempt += 1;
                tracing::debug!(projection = name, attempt, "projection swap gave way to a lock; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(50 * attempt as u64)).await;
            }
            Err(e) => return Err(e.into()),
        }
    };
    events_read += caught_up;
    Ok(Some(RebuildReport { name, version, events_read, caught_up }))
}

/// The projection's DDL split in two: its tables (with their primary keys,
/// which the apply SQL's upserts need), and its secondary indexes, made once
/// the tables are full. Comment lines are dropped.
fn split_indexes(ddl: &str) -> (String, String) {
    let code: String = ddl.lines().filter(|l| !l.trim_start().starts_with("--")).map(|l| format!("{l}\n")).collect();
    let (mut tables, mut indexes) = (String::new(), String::new());
    for statement in code.split_inclusive(';') {
        let head = statement.trim_start().to_ascii_uppercase();
        let target = if head.starts_with("CREATE INDEX") || head.starts_with("CREATE UNIQUE INDEX") {
            &mut indexes
        } else {
            &mut tables
        };
        target.push_str(statement);
    }
    (tables, indexes)
}

/// The statements dropping, and then making again, the primary keys and
/// unique constraints of the tables in `schema` (as they were declared).
async fn key_constraints(client: &impl GenericClient, schema: &str) -> Result<(String, String), tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT coalesce(string_agg(format('ALTER TABLE %s DROP CONSTRAINT %I;', conrelid::regclass, conname), E'\n'), ''),
                    coalesce(string_agg(format('ALTER TABLE %s ADD CONSTRAINT %I %s;', conrelid::regclass, conname,
                                               pg_get_constraintdef(oid)), E'\n'), '')
             FROM pg_constraint
             WHERE connamespace = $1::text::regnamespace AND contype IN ('p', 'u')",
            &[&schema],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}

/// Applies what was committed since the snapshot and swaps the new tables
/// and trigger in; answers the number of events caught up.
async fn swap(
    client: &mut Object,
    projection: &'static Projection,
    schema: &str,
    version: &str,
    built_from: i64,
) -> Result<i64, tokio_postgres::Error> {
    let name = projection.name;
    let tx = client.transaction().await?;
    tx.batch_execute(&format!(
        "SET LOCAL search_path = {schema}, public;
         SET LOCAL lock_timeout = '{SWAP_LOCK_TIMEOUT_MS}ms';
         LOCK TABLE public.project_heads IN EXCLUSIVE MODE;
         CREATE TEMP TABLE new_events (LIKE public.project_events) ON COMMIT DROP;"
    ))
    .await?;
    let caught_up = tx
        .execute(
            &format!(
                "INSERT INTO new_events ({LOG_COLUMNS})
                 SELECT e.* FROM public.project_heads h
                 LEFT JOIN {schema}._heads b USING (project_id)
                 CROSS JOIN LATERAL (
                     SELECT {LOG_COLUMNS} FROM public.events ev
                     WHERE ev.project_id = h.project_id AND ev.seq > coalesce(b.head_seq, 0)
                     ORDER BY ev.seq) e
                 WHERE h.head_seq > coalesce(b.head_seq, 0)"
            ),
            &[],
        )
        .await? as i64;
    if caught_up > 0 {
        tx.batch_execute(projection.apply_sql()).await?;
    }
    let tables = projection.tables();
    let live: Vec<String> = tables.iter().map(|t| format!("public.{t}")).collect();
    let moves: String = tables.iter().map(|t| format!("ALTER TABLE {schema}.{t} SET SCHEMA public;\n")).collect();
    tx.batch_execute(&format!(
        "DROP TABLE IF EXISTS {live} CASCADE;
         {moves}
         DROP SCHEMA {schema} CASCADE;",
        live = live.join(", "),
    ))
    .await?;
    // Every projection whose tables are live now, this one's included.
    let firsts: Vec<String> = ALL.iter().map(|p| format!("public.{}", p.tables()[0])).collect();
    let present: Vec<bool> = tx
        .query_one("SELECT array_agg(to_regclass(t) IS NOT NULL ORDER BY o) FROM unnest($1::text[]) WITH ORDINALITY AS u(t, o)", &[&firsts])
        .await?
        .get(0);
    let built: Vec<&Projection> = ALL.iter().zip(present).filter(|(_, live)| *live).map(|(p, _)| p).collect();
    tx.batch_execute(&triggers_sql(&built)).await?;
    let events_read = built_from + caught_up;
    tx.execute(
        "INSERT INTO public.projection_versions (name, version, rebuilt_at, events_read)
         VALUES ($1, $2, now(), $3)
         ON CONFLICT (name) DO UPDATE
             SET version = EXCLUDED.version, rebuilt_at = now(), events_read = EXCLUDED.events_read",
        &[&name, &version, &events_read],
    )
    .await?;
    tx.commit().await?;
    Ok(caught_up)
}

/// The live triggers: one statement trigger per log, whose function runs
/// each apply statement of the built projections only when the batch
/// brought one of the types it names. One trigger instead of one per
/// projection: a single-event append runs one PL/pgSQL call and one look at
/// `new_events`, not seven. `built` names the projections whose tables are
/// live (a projection not built yet has no tables to apply to).
fn triggers_sql(built: &[&Projection]) -> String {
    let mut sql = String::new();
    // The triggers of the previous format: one per projection.
    for projection in ALL {
        let name = projection.name;
        sql.push_str(&format!(
            "DROP TRIGGER IF EXISTS projection_{name} ON public.project_events;
             DROP TRIGGER IF EXISTS projection_{name} ON public.transfer_events;
             DROP FUNCTION IF EXISTS public.projection_{name}();\n"
        ));
    }
    for (log, table) in [(Log::Project, "project_events"), (Log::Transfer, "transfer_events")] {
        let mut body = String::new();
        for projection in built.iter().filter(|p| p.logs().contains(&log)) {
            body.push_str(&format!("-- {}\n", projection.name));
            for statement in projection.apply_statements() {
                let types: Vec<String> =
                    statement.types.iter().filter(|t| t.log() == log).map(|t| format!("'{}'", t.as_str())).collect();
                // A statement naming only the other log's types has nothing to do here.
                if types.is_empty() {
                    continue;
                }
                let run = if statement.replan {
                    // EXECUTE plans it each time; it still sees new_events.
                    format!("EXECUTE $apply${}$apply$;", statement.sql.trim_end().trim_end_matches(';'))
                } else {
                    statement.sql.to_owned()
                };
                body.push_str(&format!("IF types && ARRAY[{}]::text[] THEN\n{run}\nEND IF;\n", types.join(", ")));
            }
        }
        sql.push_str(&format!(
            "DROP TRIGGER IF EXISTS apply_projections ON public.{table};
             CREATE OR REPLACE FUNCTION public.apply_{table}() RETURNS trigger
             LANGUAGE plpgsql AS $projection$
             DECLARE
                 types text[];
             BEGIN
             SELECT array_agg(DISTINCT type) INTO types FROM new_events;
             {body}
             RETURN NULL;
             END $projection$;
             CREATE TRIGGER apply_projections AFTER INSERT ON public.{table}
                 REFERENCING NEW TABLE AS new_events
                 FOR EACH STATEMENT EXECUTE FUNCTION public.apply_{table}();\n"
        ));
    }
    sql
}
