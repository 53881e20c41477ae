//! Invites, members and device assignment: project state, so every change
//! is an event and every read comes from a projection.

use chrono::{Duration, Utc};
use uuid::Uuid;

use super::projects::{access, lock_for};
use super::secrets::{new_secret, secret_hash};
use super::{Caller, Command, DomainError, Rejection};
use crate::protocol::events::data::{
    DetachReason, DeviceAttached, DeviceDetached, InviteCreated, InviteRevoked, MemberJoined, MemberRemoved,
    RemovalReason,
};
use crate::protocol::membership::{
    AcceptedInvite, AttachedDevice, CreatedInvite, DeviceRole, Invite, InvitePreview, InviteUnusable, Member,
    ProjectDevice,
};
use crate::protocol::projects::Role;
use crate::protocol::validate::ValidationError;
use crate::protocol::EventData;
use crate::store::{self, EventMeta, GenericClient};

const INVITE_PREFIX: &str = "fyi_";

/// Checked invite settings.
#[derive(Debug, Clone, Copy)]
pub struct InviteTerms {
    pub expires_in_seconds: i64,
    pub max_uses: i32,
}

impl InviteTerms {
    pub const DEFAULT_EXPIRY: i64 = 7 * 24 * 3600;
    pub const MAX_EXPIRY: i64 = 365 * 24 * 3600;
    pub const MAX_USES: i64 = 1000;

    pub fn parse(expires_in_seconds: Option<i64>, max_uses: Option<i64>) -> Result<Self, ValidationError> {
        let expires_in_seconds = expires_in_seconds.unwrap_or(Self::DEFAULT_EXPIRY);
        if !(60..=Self::MAX_EXPIRY).contains(&expires_in_seconds) {
            return Err(ValidationError::new(
                "invalid_expiry",
                format!("expires_in_seconds must be 60 to {}", Self::MAX_EXPIRY),
            ));
        }
        let max_uses = max_uses.unwrap_or(1);
        if !(1..=Self::MAX_USES).contains(&max_uses) {
            return Err(ValidationError::new("invalid_max_uses", format!("max_uses must be 1 to {}", Self::MAX_USES)));
        }
        Ok(Self { expires_in_seconds, max_uses: max_uses as i32 })
    }
}

pub async fn create_invite(
    client: &impl GenericClient,
    cmd: &Command,
    project_id: Uuid,
    terms: InviteTerms,
) -> Result<CreatedInvite, DomainError> {
    lock_for(client, project_id, &cmd.caller, true).await?;
    let (token, hash) = new_secret(INVITE_PREFIX);
    let id = Uuid::now_v7();
    let expires_at = Utc::now() + Duration::seconds(terms.expires_in_seconds);
    let event = InviteCreated { invite_id: id, token_hash: hex::encode(hash), expires_at, max_uses: terms.max_uses };
    store::append(client, project_id, &cmd.meta, &[EventData::InviteCreated(event)]).await?;
    Ok(CreatedInvite { id, token, expires_at, max_uses: terms.max_uses })
}

pub async fn list_invites(
    client: &impl GenericClient,
    caller: &Caller,
    project_id: Uuid,
) -> Result<Vec<Invite>, DomainError> {
    access(client, project_id, caller, true).await?;
    let rows = client
        .query(
            "SELECT id, created_at, expires_at, max_uses, uses, revoked_at IS NOT NULL
             FROM project_invites WHERE project_id = $1 ORDER BY created_at, id",
            &[&project_id],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Invite {
            id: r.get(0),
            created_at: r.get(1),
            expires_at: r.get(2),
            max_uses: r.get(3),
            uses: r.get(4),
            revoked: r.get(5),
        })
        .collect())
}

/// Revokes an invite; revoking a revoked invite changes nothing.
pub async fn revoke_invite(
    client: &impl GenericClient,
    cmd: &Command,
    project_id: Uuid,
    invite_id: Uuid,
) -> Result<(), DomainError> {
    lock_for(client, project_id, &cmd.caller, true).await?;
    let revoked: bool = client
        .query_opt(
            "SELECT revoked_at IS NOT NULL FROM project_invites WHERE id = $1 AND project_id = $2",
            &[&invite_id, &project_id],
        )
        .await?
        .ok_or_else(|| DomainError::not_found("invite"))?
        .get(0);
    if !revoked {
        let event = EventData::InviteRevoked(InviteRevoked { invite_id });
        store::append(client, project_id, &cmd.meta, &[event]).await?;
    }
    Ok(())
}

fn invite_not_found() -> DomainError {
    DomainError::rejected(Rejection::NotFound, "invite_not_found", "no invite has this token")
}

/// The hash an invite token is stored under; what cannot be one of our
/// tokens is unknown without asking the database.
fn invite_token_hash(token: &str) -> Result<Vec<u8>, DomainError> {
    if !token.starts_with(INVITE_PREFIX) || token.len() > 128 {
        return Err(invite_not_found());
    }
    Ok(secret_hash(token))
}

/// What an invite leads to, for anyone holding its token: read only, so
/// looking consumes no use. An unknown token reveals nothing (404). An
/// archived project's invites answer `revoked`, the word of the contract
/// that fits (archiving ends every invite the way revoking ends one); the
/// reasons are checked in the order accepting checks them.
pub async fn preview_invite(client: &impl GenericClient, token: &str) -> Result<InvitePreview, DomainError> {
    let hash = invite_token_hash(token)?;
    let row = client
        .query_opt(
            "SELECT p.id, p.name, u.display_name,
                    i.revoked_at IS NOT NULL OR p.archived_at IS NOT NULL, i.expires_at <= now(),
                    i.uses >= i.max_uses
             FROM project_invites i
             JOIN projects p ON p.id = i.project_id
             JOIN users u ON u.id = p.owner_id
             WHERE i.token_hash = $1",
            &[&hash],
        )
        .await?
        .ok_or_else(invite_not_found)?;
    let reason = if row.get(3) {
        Some(InviteUnusable::Revoked)
    } else if row.get(4) {
        Some(InviteUnusable::Expired)
    } else if row.get(5) {
        Some(InviteUnusable::UsedUp)
    } else {
        None
    };
    Ok(InvitePreview {
        project_id: row.get(0),
        project_name: row.get(1),
        owner_display_name: row.get(2),
        usable: reason.is_none(),
        reason,
    })
}

/// Joins the caller to the invite's project. Accepts of one project are
/// serialised by its head lock, so the last use goes to exactly one caller.
pub async fn accept_invite(
    client: &impl GenericClient,
    cmd: &Command,
    token: &str,
) -> Result<AcceptedInvite, DomainError> {
    let hash = invite_token_hash(token)?;
    let project_id: Uuid = client
        .query_opt("SELECT project_id FROM project_invites WHERE token_hash = $1", &[&hash])
        .await?
        .ok_or_else(invite_not_found)?
        .get(0);
    store::lock_stream(client, project_id).await?;
    let invite = client
        .query_one(
            "SELECT i.id, i.revoked_at IS NOT NULL, i.expires_at <= now(), i.uses >= i.max_uses,
                    p.archived_at IS NOT NULL
             FROM project_invites i JOIN projects p ON p.id = i.project_id
             WHERE i.token_hash = $1",
            &[&hash],
        )
        .await?;
    let (invite_id, revoked, expired, used_up, archived): (Uuid, bool, bool, bool, bool) =
        (invite.get(0), invite.get(1), invite.get(2), invite.get(3), invite.get(4));
    if archived {
        return Err(invite_not_found());
    }
    if super::projects::role_of(client, project_id, cmd.caller.user_id).await?.is_some() {
        return Err(DomainError::conflict("already_member", "you are already in this project"));
    }
    let gone = |code, message: &str| DomainError::rejected(Rejection::Gone, code, message);
    if revoked {
        return Err(gone("invite_revoked", "this invite was revoked"));
    }
    if expired {
        return Err(gone("invite_expired", "this invite has expired"));
    }
    if used_up {
        return Err(gone("invite_used_up", "this invite has been used up"));
    }
    let event = MemberJoined { user_id: cmd.caller.user_id, invite_id };
    store::append(client, project_id, &cmd.meta, &[EventData::MemberJoined(event)]).await?;
    Ok(AcceptedInvite { project_id, role: Role::Member })
}

pub async fn list_members(
    client: &impl GenericClient,
    caller: &Caller,
    project_id: Uuid,
) -> Result<Vec<Member>, DomainError> {
    access(client, project_id, caller, false).await?;
    let rows = client
        .query(
            "SELECT m.user_id, u.display_name, m.role, m.joined_at
             FROM project_members m JOIN users u ON u.id = m.user_id
             WHERE m.project_id = $1
             ORDER BY m.role = 'owner' DESC, m.joined_at, m.user_id",
            &[&project_id],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Member {
            user_id: r.get(0),
            display_name: r.get(1),
            role: Role::parse(r.get(2)).unwrap_or(Role::Member),
            joined_at: r.get(3),
        })
        .collect())
}

/// The owner removes a member, or a member leaves. Their devices leave the
/// project and their open transfers are cancelled in the same command, and
/// their access ends when it commits.
pub async fn remove_member(
    client: &impl GenericClient,
    cmd: &Command,
    project_id: Uuid,
    user_id: Uuid,
) -> Result<(), DomainError> {
    let caller_role = lock_for(client, project_id, &cmd.caller, false).await?;
    let leaving = user_id == cmd.caller.user_id;
    if caller_role == Role::Member && !leaving {
        return Err(DomainError::owner_only());
    }
    match super::projects::role_of(client, project_id, user_id).await? {
        None => return Err(DomainError::not_found("member")),
        Some(Role::Owner) => {
            return Err(DomainError::conflict("owner_cannot_be_removed", "the project's owner cannot be removed"))
        }
        Some(Role::Member) => {}
    }
    let reason = if leaving { RemovalReason::Left } else { RemovalReason::Removed };
    let mut events = vec![EventData::MemberRemoved(MemberRemoved { user_id, reason })];
    let devices = client
        .query(
            "SELECT device_id FROM project_devices WHERE project_id = $1 AND user_id = $2 ORDER BY device_id",
            &[&project_id, &user_id],
        )
        .await?;
    events.extend(devices.iter().map(|r| {
        let detached = DeviceDetached { device_id: r.get(0), user_id, reason: DetachReason::MemberRemoved };
        EventData::DeviceDetached(detached)
    }));
    events.extend(super::transfers::cancel_open_of(client, project_id, user_id).await?);
    store::append(client, project_id, &cmd.meta, &events).await?;
    Ok(())
}

/// Attaches one of the caller's own devices: a source for the owner, a
/// target for a member. Attaching an attached device changes nothing.
pub async fn attach_device(
    client: &impl GenericClient,
    cmd: &Command,
    project_id: Uuid,
    device_id: Uuid,
) -> Result<AttachedDevice, DomainError> {
    // The device row first, shared: deleting a device locks it, then the
    // heads of its projects, so both commands take locks in the same order.
    let device_owner: Uuid = client
        .query_opt("SELECT user_id FROM devices WHERE id = $1 AND deleted_at IS NULL FOR SHARE", &[&device_id])
        .await?
        .ok_or_else(|| DomainError::not_found("device"))?
        .get(0);
    let role = match lock_for(client, project_id, &cmd.caller, false).await? {
        Role::Owner => DeviceRole::Source,
        Role::Member => DeviceRole::Target,
    };
    if device_owner != cmd.caller.user_id {
        return Err(DomainError::rejected(
            Rejection::Forbidden,
            "not_your_device",
            "only a device's own user may attach it",
        ));
    }
    let online: bool =
        client.query_one(&format!("SELECT {}", super::presence::online_sql("$1::uuid")), &[&device_id]).await?.get(0);
    let attached = AttachedDevice { device_id, project_id, user_id: device_owner, role, online };
    let current = client
        .query_opt(
            "SELECT role FROM project_devices WHERE project_id = $1 AND device_id = $2",
            &[&project_id, &device_id],
        )
        .await?;
    if current.is_some_and(|r| DeviceRole::parse(r.get(0)) == Some(role)) {
        return Ok(attached);
    }
    let event = DeviceAttached { device_id, user_id: device_owner, role };
    store::append(client, project_id, &cmd.meta, &[EventData::DeviceAttached(event)]).await?;
    Ok(attached)
}

/// Detaches a device: its own user, or the owner, may.
pub async fn detach_device(
    client: &impl GenericClient,
    cmd: &Command,
    project_id: Uuid,
    device_id: Uuid,
) -> Result<(), DomainError> {
    let caller_role = lock_for(client, project_id, &cmd.caller, false).await?;
    let user_id: Uuid = client
        .query_opt(
            "SELECT user_id FROM project_devices WHERE project_id = $1 AND device_id = $2",
            &[&project_id, &device_id],
        )
        .await?
        .ok_or_else(|| DomainError::not_found("device"))?
        .get(0);
    if caller_role != Role::Owner && user_id != cmd.caller.user_id {
        return Err(DomainError::rejected(
            Rejection::Forbidden,
            "not_your_device",
            "only the device's user or the project's owner may detach it",
        ));
    }
    let event = DeviceDetached { device_id, user_id, reason: DetachReason::Detached };
    store::append(client, project_id, &cmd.meta, &[EventData::DeviceDetached(event)]).await?;
    Ok(())
}

/// Detaches a deleted device from every project it was attached to. Runs in
/// the deleting transaction, which holds the device row; heads are locked in
/// project order.
pub(crate) async fn detach_deleted_device(
    client: &impl GenericClient,
    meta: &EventMeta,
    device_id: Uuid,
) -> Result<(), DomainError> {
    let rows = client
        .query(
            "SELECT project_id, user_id FROM project_devices WHERE device_id = $1 ORDER BY project_id",
            &[&device_id],
        )
        .await?;
    for row in rows {
        let project_id: Uuid = row.get(0);
        store::lock_stream(client, project_id).await?;
        let event = DeviceDetached { device_id, user_id: row.get(1), reason: DetachReason::DeviceDeleted };
        store::append(client, project_id, meta, &[EventData::DeviceDetached(event)]).await?;
    }
    Ok(())
}

pub async fn list_devices(
    client: &impl GenericClient,
    caller: &Caller,
    project_id: Uuid,
) -> Result<Vec<ProjectDevice>, DomainError> {
    access(client, project_id, caller, false).await?;
    let rows = client
        .query(
            &format!(
                "SELECT pd.device_id, pd.user_id, d.name, pd.role, {}, p.last_seen_at
                 FROM project_devices pd
                 JOIN devices d ON d.id = pd.device_id
                 LEFT JOIN device_presence p ON p.device_id = pd.device_id
                 WHERE pd.project_id = $1
                 ORDER BY pd.role, pd.attached_at, pd.device_id",
                super::presence::online_sql("pd.device_id")
            ),
            &[&project_id],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| ProjectDevice {
            device_id: r.get(0),
            user_id: r.get(1),
            name: r.get(2),
            role: DeviceRole::parse(r.get(3)).unwrap_or(DeviceRole::Target),
            online: r.get(4),
            last_seen_at: r.get(5),
        })
        .collect())
}
