//! The permission matrix: every project endpoint, called as each role,
//! answers the status it must. Later endpoints join this table.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{TestApp, TestUser};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Anonymous,
    Stranger,
    /// A device token of a user who is not in the project.
    StrangersDevice,
    Member,
    /// A member who did not request the fixture's transfer.
    OtherMember,
    /// The owner's source device, with its device token.
    OwnersDevice,
    Owner,
}

const ROLES: [Role; 7] = [
    Role::Anonymous,
    Role::Stranger,
    Role::StrangersDevice,
    Role::Member,
    Role::OtherMember,
    Role::OwnersDevice,
    Role::Owner,
];

/// The people, once; a fresh project per call so no call disturbs another.
struct World {
    owner: TestUser,
    member: TestUser,
    other_member: TestUser,
    stranger: TestUser,
    strangers_device: (Uuid, String),
    owners_device: (Uuid, String),
    members_device: Uuid,
    other_members_device: Uuid,
}

/// What one row's calls refer to.
struct Fixture {
    project: Uuid,
    invite: Uuid,
    /// Requested by the member.
    transfer: Uuid,
}

impl World {
    async fn new(app: &TestApp) -> Self {
        let owner = app.signup("owner").await;
        let member = app.signup("member").await;
        let stranger = app.signup("stranger").await;
        let other = app.signup("other").await;
        Self {
            owners_device: app.register_device(&owner, "studio").await,
            members_device: app.register_device(&member, "laptop").await.0,
            strangers_device: app.register_device(&stranger, "phone").await,
            other_member: other.clone(),
            other_members_device: app.register_device(&other, "tablet").await.0,
            owner,
            member,
            stranger,
        }
    }

    async fn fixture(&self, app: &TestApp) -> Fixture {
        let project = app.create_project(&self.owner, "Matrix").await;
        app.join(&self.owner, project, &self.member).await;
        app.join(&self.owner, project, &self.other_member).await;
        let attach = format!("/api/projects/{project}/devices/{}", self.owners_device.0);
        assert_eq!(app.call(Method::PUT, &attach, Some(&self.owner.token), None).await.0, StatusCode::OK);
        let (_, invite) = app.post(&format!("/api/projects/{project}/invites"), &self.owner.token, json!({})).await;
        let file = json!([{"op": "upsert", "path": "/m.bin", "size": 1, "hash": FILE_HASH}]);
        assert_eq!(app.push(&self.owners_device.1, project, file).await.0, StatusCode::OK);
        let (_, transfer) = app
            .post(
                &format!("/api/projects/{project}/files/download"),
                &self.member.token,
                json!({"file_path": "/m.bin"}),
            )
            .await;
        Fixture {
            project,
            invite: invite["id"].as_str().unwrap().parse().unwrap(),
            transfer: transfer["download_id"].as_str().unwrap().parse().unwrap(),
        }
    }

    fn token(&self, role: Role) -> Option<&str> {
        match role {
            Role::Anonymous => None,
            Role::Stranger => Some(&self.stranger.token),
            Role::StrangersDevice => Some(&self.strangers_device.1),
            Role::Member => Some(&self.member.token),
            Role::OtherMember => Some(&self.other_member.token),
            Role::OwnersDevice => Some(&self.owners_device.1),
            Role::Owner => Some(&self.owner.token),
        }
    }

    /// Each caller's own device, for the attach row.
    fn own_device(&self, role: Role) -> Uuid {
        match role {
            Role::Owner | Role::OwnersDevice => self.owners_device.0,
            Role::Member => self.members_device,
            Role::OtherMember => self.other_members_device,
            _ => self.strangers_device.0,
        }
    }
}

const FILE_HASH: &str = "abababababababababababababababababababababababababababababababab";

type PathFn = fn(&World, &Fixture, Role) -> String;

struct Row {
    method: Method,
    path: PathFn,
    body: Option<Value>,
    /// Expected status for each of ROLES, in order.
    expect: [u16; 7],
}

fn rows() -> Vec<Row> {
    let row = |method: Method, path: PathFn, body: Option<Value>, expect: [u16; 7]| Row { method, path, body, expect };
    let change = json!({"changes": [{"op": "upsert", "path": "/m.txt", "size": 1, "hash": FILE_HASH}]});
    vec![
        row(Method::GET, |_, f, _| format!("/api/projects/{}", f.project), None, [401, 404, 404, 200, 200, 200, 200]),
        row(
            Method::PATCH,
            |_, f, _| format!("/api/projects/{}", f.project),
            Some(json!({"name": "New"})),
            [401, 404, 404, 403, 403, 200, 200],
        ),
        row(
            Method::DELETE,
            |_, f, _| format!("/api/projects/{}", f.project),
            None,
            [401, 404, 404, 403, 403, 204, 204],
        ),
        row(
            Method::POST,
            |_, f, _| format!("/api/projects/{}/invites", f.project),
            Some(json!({})),
            [401, 404, 404, 403, 403, 201, 201],
        ),
        row(
            Method::GET,
            |_, f, _| format!("/api/projects/{}/invites", f.project),
            None,
            [401, 404, 404, 403, 403, 200, 200],
        ),
        row(
            Method::DELETE,
            |_, f, _| format!("/api/projects/{}/invites/{}", f.project, f.invite),
            None,
            [401, 404, 404, 403, 403, 204, 204],
        ),
        row(
            Method::GET,
            |_, f, _| format!("/api/projects/{}/members", f.project),
            None,
            [401, 404, 404, 200, 200, 200, 200],
        ),
        row(
            Method::DELETE,
            |w, f, _| format!("/api/projects/{}/members/{}", f.project, w.other_member.id),
            None,
            [401, 404, 404, 403, 204, 204, 204],
        ),
        row(
            Method::GET,
            |_, f, _| format!("/api/projects/{}/devices", f.project),
            None,
            [401, 404, 404, 200, 200, 200, 200],
        ),
        row(
            Method::PUT,
            |w, f, role| format!("/api/projects/{}/devices/{}", f.project, w.own_device(role)),
            Some(json!({})),
            [401, 404, 404, 200, 200, 200, 200],
        ),
        row(
            Method::DELETE,
            |w, f, _| format!("/api/projects/{}/devices/{}", f.project, w.owners_device.0),
            None,
            [401, 404, 404, 403, 403, 204, 204],
        ),
        row(
            Method::POST,
            |_, f, _| format!("/api/projects/{}/files/update", f.project),
            Some(change),
            [401, 404, 404, 403, 403, 200, 403],
        ),
        row(
            Method::GET,
            |_, f, _| format!("/api/projects/{}/files-paginated", f.project),
            None,
            [401, 404, 404, 200, 200, 200, 200],
        ),
        row(
            Method::GET,
            |_, f, _| format!("/api/projects/{}/events", f.project),
            None,
            [401, 404, 404, 200, 200, 200, 200],
        ),
        row(
            Method::GET,
            |_, f, _| format!("/api/projects/{}/project_events", f.project),
            None,
            [401, 404, 404, 200, 200, 200, 200],
        ),
        row(
            Method::POST,
            |_, f, _| format!("/api/projects/{}/files/download", f.project),
            Some(json!({"file_path": "/m.bin"})),
            [401, 404, 404, 201, 201, 201, 201],
        ),
        row(
            Method::GET,
            |_, f, _| format!("/api/projects/{}/transfers", f.project),
            None,
            [401, 404, 404, 200, 200, 200, 200],
        ),
        row(
            Method::GET,
            |_, f, _| format!("/api/projects/{}/transfers/{}", f.project, f.transfer),
            None,
            [401, 404, 404, 200, 404, 200, 200],
        ),
        row(
            Method::PATCH,
            |_, f, _| format!("/api/projects/{}/transfers/{}", f.project, f.transfer),
            Some(json!({"status": "in_progress"})),
            [401, 404, 404, 403, 404, 200, 403],
        ),
        row(
            Method::POST,
            |_, f, _| format!("/api/projects/{}/transfers/{}/verify", f.project, f.transfer),
            Some(json!({"hash": FILE_HASH})),
            [401, 404, 404, 200, 404, 403, 403],
        ),
        row(
            Method::POST,
            |_, f, _| format!("/api/projects/{}/transfers/{}/direct-token", f.project, f.transfer),
            None,
            [401, 404, 404, 200, 404, 403, 403],
        ),
        row(
            Method::POST,
            |_, f, _| format!("/api/projects/{}/transfers/{}/cancel", f.project, f.transfer),
            None,
            [401, 404, 404, 200, 404, 200, 200],
        ),
        row(
            Method::POST,
            |_, f, _| format!("/api/projects/{}/chunks/missing", f.project),
            Some(json!({"hashes": [FILE_HASH]})),
            [401, 404, 404, 403, 403, 200, 403],
        ),
        // An empty body does not hash to the name: permitted callers reach that check.
        row(
            Method::PUT,
            |_, f, _| format!("/api/projects/{}/chunks/{FILE_HASH}", f.project),
            None,
            [401, 404, 404, 403, 403, 422, 403],
        ),
        // Not uploaded yet: permitted callers reach "no such chunk".
        row(
            Method::GET,
            |_, f, _| format!("/api/projects/{}/chunks/{FILE_HASH}", f.project),
            None,
            [401, 404, 404, 404, 404, 404, 404],
        ),
        // Permitted callers get past the permission check to the state check.
        row(
            Method::POST,
            |_, f, _| format!("/api/projects/{}/transfers/{}/retry", f.project, f.transfer),
            None,
            [401, 404, 404, 409, 404, 409, 409],
        ),
    ]
}

#[tokio::test]
async fn every_project_endpoint_refuses_each_role_it_must() {
    let app = TestApp::spawn().await;
    let world = World::new(&app).await;
    let mut failures = Vec::new();
    for row in rows() {
        for (role, expected) in ROLES.iter().zip(row.expect) {
            let fixture = world.fixture(&app).await;
            let path = (row.path)(&world, &fixture, *role);
            let (status, body) = app.call(row.method.clone(), &path, world.token(*role), row.body.as_ref()).await;
            if status.as_u16() != expected {
                failures.push(format!("{} {path} as {role:?}: {status}, expected {expected}: {body}", row.method));
            }
            if !status.is_success() && body["error"]["code"].as_str().is_none() {
                failures.push(format!("{} {path} as {role:?}: error without a JSON body", row.method));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
