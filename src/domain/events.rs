//! Reading the log: a project's event feed (filtered by what the caller may
//! see) and the admins' audit across projects.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::projects::access;
use super::{Caller, DomainError, Rejection};
use crate::protocol::events::{AuditEvent, AuditPage, EventsPage};
use crate::protocol::projects::Role;
use crate::protocol::validate::ValidationError;
use crate::protocol::{EventData, EventType};
use crate::store::events::EVENT_COLUMNS;
use crate::store::{GenericClient, RecordedEvent, StoreError};

/// Project events members do not see: invites are the owner's business.
pub const HIDDEN_FROM_MEMBERS: [EventType; 2] = [EventType::InviteCreated, EventType::InviteRevoked];

/// Whether someone with `role` sees `event`: the owner everything; a member
/// the project's events but invites, and only their own transfers.
pub fn visible(role: Role, user_id: Uuid, event: &EventData) -> bool {
    match role {
        Role::Owner => true,
        Role::Member => match event.transfer_state() {
            Some(transfer) => transfer.requester_id == user_id,
            None => !HIDDEN_FROM_MEMBERS.contains(&event.event_type()),
        },
    }
}

/// The same rule in SQL, over `events`: $3 = is owner, $4 = user id text.
const VISIBLE_SQL: &str = "($3 OR (log = 'project' AND type <> ALL($5::text[]))
                              OR (log = 'transfer' AND data->>'requester_id' = $4))";

/// Parses `type=a,b` into known event types.
pub fn parse_types(value: Option<&str>) -> Result<Option<Vec<EventType>>, ValidationError> {
    let Some(value) = value.filter(|v| !v.is_empty()) else { return Ok(None) };
    value
        .split(',')
        .map(|name| {
            EventType::parse(name.trim())
                .ok_or_else(|| ValidationError::new("invalid_type", format!("unknown event type {name:?}")))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// Event types as the log's `type` column holds them.
fn type_names(types: &[EventType]) -> Vec<&'static str> {
    types.iter().map(|t| t.as_str()).collect()
}

pub fn parse_limit(limit: Option<i64>, default: i64, max: i64) -> Result<i64, ValidationError> {
    let limit = limit.unwrap_or(default);
    if (1..=max).contains(&limit) {
        Ok(limit)
    } else {
        Err(ValidationError::new("invalid_limit", format!("limit must be 1 to {max}")))
    }
}

/// The events of a project after `after_seq` that the caller may see,
/// both logs merged in seq order.
pub async fn feed(
    client: &impl GenericClient,
    caller: &Caller,
    project_id: Uuid,
    after_seq: i64,
    types: Option<&[EventType]>,
    limit: i64,
) -> Result<EventsPage, DomainError> {
    let role = access(client, project_id, caller, false).await?;
    // The head first: events are only appended, so everything up to it is
    // committed and visible to the next statement.
    let head_seq: i64 =
        client.query_one("SELECT head_seq FROM project_heads WHERE project_id = $1", &[&project_id]).await?.get(0);
    let hidden: Vec<&str> = HIDDEN_FROM_MEMBERS.iter().map(|t| t.as_str()).collect();
    let types: Option<Vec<&str>> = types.map(type_names);
    let stmt = client
        .prepare_cached(&format!(
            "SELECT {EVENT_COLUMNS} FROM events
             WHERE project_id = $1 AND seq > $2 AND seq <= $7 AND {VISIBLE_SQL}
               AND ($6::text[] IS NULL OR type = ANY($6))
             ORDER BY seq LIMIT $8"
        ))
        .await?;
    let rows = client
        .query(
            &stmt,
            &[
                &project_id,
                &after_seq,
                &(role == Role::Owner),
                &caller.user_id.to_string(),
                &hidden,
                &types,
                &head_seq,
                &limit,
            ],
        )
        .await?;
    let events = rows.iter().map(|r| RecordedEvent::from_row(r).into_event()).collect::<Result<_, _>>()?;
    Ok(EventsPage { events, head_seq })
}

/// Filters of an audit query; all optional.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub project_id: Option<Uuid>,
    /// A user or a device.
    pub actor_id: Option<Uuid>,
    pub types: Option<Vec<EventType>>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// Continue after this global position.
    pub after_position: Option<i64>,
    pub limit: i64,
}

pub fn require_admin(caller: &Caller) -> Result<(), DomainError> {
    if caller.is_admin {
        Ok(())
    } else {
        Err(DomainError::rejected(Rejection::Forbidden, "admin_only", "only administrators may do this"))
    }
}

/// Both logs of every project in global position order, filtered. Only the
/// filters given become SQL, so each query can use its index.
pub async fn audit(client: &impl GenericClient, q: &AuditQuery) -> Result<AuditPage, DomainError> {
    let mut conditions = vec!["position > $1".to_owned()];
    let after = q.after_position.unwrap_or(0);
    let types: Option<Vec<&str>> = q.types.as_deref().map(type_names);
    let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&after];
    if let Some(p) = &q.project_id {
        params.push(p);
        conditions.push(format!("project_id = ${}", params.len()));
    }
    if let Some(a) = &q.actor_id {
        params.push(a);
        conditions.push(format!("(actor_user_id = ${n} OR actor_device_id = ${n})", n = params.len()));
    }
    if let Some(t) = &types {
        params.push(t);
        conditions.push(format!("type = ANY(${})", params.len()));
    }
    if let Some(from) = &q.from {
        params.push(from);
        conditions.push(format!("created_at >= ${}", params.len()));
    }
    if let Some(to) = &q.to {
        params.push(to);
        conditions.push(format!("created_at < ${}", params.len()));
    }
    let fetch = q.limit + 1;
    params.push(&fetch);
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE {} ORDER BY position LIMIT ${}",
        conditions.join(" AND "),
        params.len()
    );
    let rows = client.query(&sql, &params).await?;
    let more = rows.len() as i64 > q.limit;
    let events: Vec<AuditEvent> = rows
        .iter()
        .take(q.limit as usize)
        .map(|r| {
            let e = RecordedEvent::from_row(r);
            Ok(AuditEvent { position: e.position, project_id: e.project_id, event: e.into_event()? })
        })
        .collect::<Result<_, StoreError>>()?;
    let next_cursor = more.then(|| encode_position(events.last().expect("a full page").position));
    Ok(AuditPage { events, next_cursor })
}

pub fn encode_position(position: i64) -> String {
    crate::protocol::files::Cursor(position.to_string()).encode()
}

pub fn decode_position(cursor: &str) -> Result<i64, ValidationError> {
    crate::protocol::files::Cursor::decode(cursor)?
        .0
        .parse()
        .map_err(|_| ValidationError::new("invalid_cursor", "the cursor is not one this server gave out"))
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::protocol::events::data::{InviteRevoked, ProjectRenamed, TransferState};
    use crate::protocol::transfers::TransferStatus;

    fn transfer(requester_id: Uuid) -> EventData {
        let now = Utc::now();
        EventData::FileTransferProgress(TransferState {
            transfer_id: Uuid::now_v7(),
            requester_id,
            file_path: "/a".into(),
            status: TransferStatus::InProgress,
            bytes_transferred: 1,
            total_bytes: 2,
            percent: 50.0,
            speed_mbps: None,
            eta_seconds: None,
            attempts: 1,
            error_message: None,
            started_at: Some(now),
            completed_at: None,
            expires_at: now,
            last_activity_at: now,
            last_progress_at: None,
            window: vec![],
            route: Default::default(),
        })
    }

    #[test]
    fn members_see_the_project_but_invites_and_only_their_own_transfers() {
        let (me, other) = (Uuid::now_v7(), Uuid::now_v7());
        let renamed = EventData::ProjectRenamed(ProjectRenamed { name: "n".into() });
        let revoked = EventData::InviteRevoked(InviteRevoked { invite_id: Uuid::now_v7() });
        for event in [&renamed, &revoked, &transfer(me), &transfer(other)] {
            assert!(visible(Role::Owner, me, event), "the owner sees {:?}", event.event_type());
        }
        assert!(visible(Role::Member, me, &renamed));
        assert!(!visible(Role::Member, me, &revoked));
        assert!(visible(Role::Member, me, &transfer(me)));
        assert!(!visible(Role::Member, me, &transfer(other)));
    }

    #[test]
    fn type_filters_parse_known_names_only() {
        assert_eq!(parse_types(None).unwrap(), None);
        assert_eq!(parse_types(Some("")).unwrap(), None);
        assert_eq!(
            parse_types(Some("file_added, transfer_retried")).unwrap(),
            Some(vec![EventType::FileAdded, EventType::TransferRetried])
        );
        assert_eq!(parse_types(Some("file_added,nope")).unwrap_err().code, "invalid_type");
    }
}
