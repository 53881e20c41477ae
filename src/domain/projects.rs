//! Projects: created, renamed and archived through the log; read from the
//! `projects` and `project_members` projections.

use uuid::Uuid;

use super::{Caller, Command, DomainError};
use crate::protocol::events::data;
use crate::protocol::projects::{Project, Role};
use crate::protocol::validate::ProjectName;
use crate::protocol::EventData;
use crate::store::{self, GenericClient, Pool, StoreError};

/// The caller's role in a live (not archived) project, or None when the
/// project is unknown, archived, or the caller is not in it.
pub async fn role_of(
    client: &impl GenericClient,
    project_id: Uuid,
    user_id: Uuid,
) -> Result<Option<Role>, DomainError> {
    let stmt = client.prepare_cached(ROLE_OF).await?;
    let row = client.query_opt(&stmt, &[&project_id, &user_id]).await?;
    Ok(row.and_then(|r| Role::parse(r.get(0))))
}

type Params<'a, const N: usize> = [&'a (dyn tokio_postgres::types::ToSql + Sync); N];

const ROLE_OF: &str = "SELECT m.role FROM project_members m JOIN projects p ON p.id = m.project_id
                       WHERE m.project_id = $1 AND m.user_id = $2 AND p.archived_at IS NULL";

/// [`access`] decided from the row of [`ROLE_OF`].
fn role_allowed(row: Option<tokio_postgres::Row>, owner_only: bool) -> Result<Role, DomainError> {
    allowed(row.as_ref().map(|r| r.get(0)), owner_only)
}

/// [`access`] decided from the caller's role, as the projection spells it.
pub(crate) fn allowed(role: Option<&str>, owner_only: bool) -> Result<Role, DomainError> {
    match role.and_then(Role::parse) {
        Some(Role::Member) if owner_only => Err(DomainError::owner_only()),
        Some(role) => Ok(role),
        None => Err(DomainError::not_found("project")),
    }
}

/// The caller's role in the project: 404 when they cannot see it, 403 when
/// `owner_only` and they are only a member.
pub async fn access(
    client: &impl GenericClient,
    project_id: Uuid,
    caller: &Caller,
    owner_only: bool,
) -> Result<Role, DomainError> {
    match role_of(client, project_id, caller.user_id).await? {
        Some(Role::Member) if owner_only => Err(DomainError::owner_only()),
        Some(role) => Ok(role),
        None => Err(DomainError::not_found("project")),
    }
}

/// Locks the project's head (so the state checked cannot change before the
/// append), then checks [`access`]. The two statements are pipelined: sent
/// together, one round trip. PostgreSQL still runs them in order, the check
/// in its own snapshot taken once the lock is held, so it sees every command
/// committed before.
pub async fn lock_for(
    client: &impl GenericClient,
    project_id: Uuid,
    caller: &Caller,
    owner_only: bool,
) -> Result<Role, DomainError> {
    LockFor::prepare(client).await?.run(client, project_id, caller, owner_only).await
}

/// [`lock_for`]'s statements, prepared: its [`LockFor::run`] sends them
/// at its first poll, so it can be pipelined with statements that must run
/// after the lock (joined after it). A statement still to be prepared would
/// send only its Parse first, and its execution after the others'.
pub struct LockFor {
    lock: tokio_postgres::Statement,
    role: tokio_postgres::Statement,
}

impl LockFor {
    pub async fn prepare(client: &impl GenericClient) -> Result<Self, DomainError> {
        Ok(Self { lock: store::events::lock_statement(client).await?, role: client.prepare_cached(ROLE_OF).await? })
    }

    pub async fn run(
        &self,
        client: &impl GenericClient,
        project_id: Uuid,
        caller: &Caller,
        owner_only: bool,
    ) -> Result<Role, DomainError> {
        let (lock_params, role_params): (Params<1>, Params<2>) = ([&project_id], [&project_id, &caller.user_id]);
        let (_, row) = futures_util::try_join!(
            client.query_opt(&self.lock, &lock_params),
            client.query_opt(&self.role, &role_params)
        )?;
        role_allowed(row, owner_only)
    }
}

pub async fn create(client: &impl GenericClient, cmd: &Command, name: ProjectName) -> Result<Project, DomainError> {
    let id = Uuid::now_v7();
    store::create_stream(client, id).await?;
    let event = EventData::ProjectCreated(data::ProjectCreated {
        name: name.as_str().to_owned(),
        owner_id: cmd.caller.user_id,
    });
    let appended = store::append(client, id, &cmd.meta, &[event]).await?;
    Ok(Project {
        id,
        name: name.into_inner(),
        owner_id: cmd.caller.user_id,
        role: Role::Owner,
        head_seq: appended.to_seq,
        member_count: None,
        created_at: appended.created_at,
    })
}

/// The check of a command on a project that is one statement (migration
/// V0024): the caller's project, refused with 404 or, for an owner's
/// command, 403; its columns follow the head seq and time.
const CHECK: &str = "command_project($1, $9, $10)";

/// A refusal of [`CHECK`] (or an unknown project) as the command's.
fn refused(e: StoreError) -> DomainError {
    match e.sql_state().map(|c| c.code()) {
        Some("FY404") => DomainError::not_found("project"),
        Some("FY403") => DomainError::owner_only(),
        _ if matches!(e, StoreError::UnknownStream(_)) => DomainError::not_found("project"),
        _ => e.into(),
    }
}

/// One statement: the append and its check (see [`CHECK`]).
pub async fn rename(
    client: &impl GenericClient,
    cmd: &Command,
    project_id: Uuid,
    name: ProjectName,
) -> Result<Project, DomainError> {
    let events = [EventData::ProjectRenamed(data::ProjectRenamed { name: name.as_str().to_owned() })];
    let check: Params<2> = [&cmd.caller.user_id, &true];
    let (appended, row) =
        store::events::append_checked(client, project_id, &cmd.meta, &events, CHECK, &check).await.map_err(refused)?;
    Ok(Project {
        id: project_id,
        name: name.into_inner(),
        owner_id: row.get(3),
        role: Role::Owner,
        head_seq: appended.to_seq,
        member_count: Some(row.get(6)),
        created_at: row.get(4),
    })
}

/// One statement, as [`rename`].
pub async fn archive(client: &impl GenericClient, cmd: &Command, project_id: Uuid) -> Result<(), DomainError> {
    let events = [EventData::ProjectArchived(data::ProjectArchived {})];
    let check: Params<2> = [&cmd.caller.user_id, &true];
    store::events::append_checked(client, project_id, &cmd.meta, &events, CHECK, &check).await.map_err(refused)?;
    Ok(())
}

const PROJECT_COLUMNS: &str = "p.id, p.name, p.owner_id, m.role, h.head_seq, p.created_at";

fn project_from_row(row: &tokio_postgres::Row) -> Project {
    Project {
        id: row.get(0),
        name: row.get(1),
        owner_id: row.get(2),
        role: Role::parse(row.get(3)).unwrap_or(Role::Member),
        head_seq: row.get(4),
        member_count: None,
        created_at: row.get(5),
    }
}

/// The live projects the caller owns or is a member of, newest first.
pub async fn list(pool: &Pool, caller: &Caller) -> Result<Vec<Project>, DomainError> {
    let client = pool.get().await?;
    let rows = client
        .query(
            &format!(
                "SELECT {PROJECT_COLUMNS}
                 FROM project_members m
                 JOIN projects p ON p.id = m.project_id AND p.archived_at IS NULL
                 JOIN project_heads h ON h.project_id = p.id
                 WHERE m.user_id = $1
                 ORDER BY p.created_at DESC, p.id DESC"
            ),
            &[&caller.user_id],
        )
        .await?;
    Ok(rows.iter().map(project_from_row).collect())
}

/// One project with its member count; 404 unless the caller is in it.
pub async fn get(client: &impl GenericClient, caller: &Caller, project_id: Uuid) -> Result<Project, DomainError> {
    let stmt = client.prepare_cached(&GET).await?;
    let row = client
        .query_opt(&stmt, &[&project_id, &caller.user_id])
        .await?
        .ok_or_else(|| DomainError::not_found("project"))?;
    Ok(project_of(row))
}

static GET: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT {PROJECT_COLUMNS},
                (SELECT count(*) FROM project_members c WHERE c.project_id = p.id)
         FROM project_members m
         JOIN projects p ON p.id = m.project_id AND p.archived_at IS NULL
         JOIN project_heads h ON h.project_id = p.id
         WHERE m.project_id = $1 AND m.user_id = $2"
    )
});

/// A row of [`GET`].
fn project_of(row: tokio_postgres::Row) -> Project {
    Project { member_count: Some(row.get(6)), ..project_from_row(&row) }
}
