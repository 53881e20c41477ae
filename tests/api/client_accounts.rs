//! The `ferry` commands for accounts, projects, invites and members, run
//! as the real binary against the real server.

use std::io::Write;
use std::process::Stdio;

use crate::client_share::{describe, last_json, Person, Running, TempDir, PASSWORD};
use crate::helpers::TestApp;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_projects_invites_and_members_from_the_command_line() {
    let app = TestApp::spawn().await;
    let owner = Person::new(&app, "owner");
    let member = Person::new(&app, "member");
    let (owner_email, owner_id) = owner.signup("owner").await;
    let (_, member_id) = member.signup("member").await;

    // `--json` before or after the subcommand.
    let created = owner.json(&["--json", "project", "create", "Demo"]).await;
    assert_eq!(created["name"], "Demo");
    let project = created["id"].as_str().unwrap().to_owned();
    let listed = owner.json(&["project", "list"]).await;
    assert_eq!(listed["projects"][0]["id"].as_str(), Some(project.as_str()), "{listed}");

    let invite = owner.json(&["invite", "create", "Demo", "--max-uses", "1", "--expires-in", "3600"]).await;
    assert!(invite["expires_at"].is_string(), "{invite}");
    let joined = member.json(&["join", invite["token"].as_str().unwrap()]).await;
    assert_eq!(joined["project_id"].as_str(), Some(project.as_str()));

    let members = owner.json(&["members", &project]).await;
    let mut ids: Vec<&str> =
        members["members"].as_array().unwrap().iter().map(|m| m["user_id"].as_str().unwrap()).collect();
    ids.sort();
    let mut want = vec![owner_id.as_str(), member_id.as_str()];
    want.sort();
    assert_eq!(ids, want);

    // Human output is a table, not JSON.
    let table = owner.run(&["members", &project]).await;
    assert!(table.status.success(), "{}", describe(&table));
    assert!(String::from_utf8_lossy(&table.stdout).contains("owner"), "{}", describe(&table));

    // A used-up invite: a clear message and a failing exit code.
    let third = Person::new(&app, "third");
    third.signup("third").await;
    let refused = third.run(&["join", invite["token"].as_str().unwrap()]).await;
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.starts_with("error: ") && !stderr.contains("panicked"), "{}", describe(&refused));

    // Revoke an invite, see it listed as revoked; with --json the error is JSON too.
    let second = owner.json(&["invite", "create", &project]).await;
    let invite_id = second["id"].as_str().unwrap().to_owned();
    owner.json(&["invite", "revoke", &project, &invite_id]).await;
    let invites = owner.json(&["invite", "list", &project]).await;
    assert!(
        invites["invites"].as_array().unwrap().iter().any(|i| i["id"] == invite_id.as_str() && i["revoked"] == true),
        "{invites}"
    );
    let gone = third.run(&["join", second["token"].as_str().unwrap(), "--json"]).await;
    assert!(!gone.status.success());
    assert_eq!(last_json(&gone)["error"]["code"], "invite_revoked", "{}", describe(&gone));

    // A member is refused owner actions; a wrong password is refused.
    let forbidden = member.run(&["invite", "create", &project]).await;
    assert!(!forbidden.status.success(), "{}", describe(&forbidden));
    let wrong = owner.run(&["login", "--email", &owner_email, "--password", "not the password"]).await;
    assert!(
        !wrong.status.success() && String::from_utf8_lossy(&wrong.stderr).contains("error: "),
        "{}",
        describe(&wrong)
    );
    owner.json(&["login", "--email", &owner_email, "--password", PASSWORD]).await;

    // Logged out, commands say so; an unreachable server is named.
    owner.json(&["logout"]).await;
    let out = owner.run(&["project", "list"]).await;
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("not logged in"),
        "{}",
        describe(&out)
    );
    let unreachable = member
        .run(&["login", "--email", "x@example.org", "--password", PASSWORD, "--server", "http://127.0.0.1:9"])
        .await;
    assert!(String::from_utf8_lossy(&unreachable.stderr).contains("cannot reach"), "{}", describe(&unreachable));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_small_things_a_person_notices() {
    let app = TestApp::spawn().await;
    // The server as people type it, without a scheme; the password from a pipe.
    let mut owner = Person::new(&app, "small-owner");
    owner.server = app.address.trim_start_matches("http://").to_owned();
    let email = format!("owner-{}@example.org", uuid::Uuid::new_v4().simple());
    let mut signup = owner.command(&["signup", "--email", &email, "--password-stdin", "--json"]);
    signup.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = signup.spawn().unwrap();
    child.stdin.take().unwrap().write_all(format!("{PASSWORD}\n").as_bytes()).unwrap();
    let signed_up = child.wait_with_output().unwrap();
    assert!(signed_up.status.success(), "{}", describe(&signed_up));
    assert!(String::from_utf8_lossy(&signed_up.stdout).contains("user_id"), "{}", describe(&signed_up));
    // The same account by its full address: one server, one login.
    owner.server = app.address.clone();
    owner.json(&["login", "--email", &email, "--password", PASSWORD]).await;

    // Not a server address, and no password away from a terminal: said exactly.
    let bad = owner.run(&["project", "list", "--server", "ftp://example.org"]).await;
    let said = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success() && said.contains("is not a Ferry server address"), "{}", describe(&bad));
    let no_password = owner.run(&["login", "--email", &email]).await;
    let said = String::from_utf8_lossy(&no_password.stderr);
    assert!(!no_password.status.success() && said.contains("--password-stdin"), "{}", describe(&no_password));

    // The invite is a link; joining takes the link and names the project.
    let project = owner.json(&["project", "create", "Field Recordings"]).await["id"].as_str().unwrap().to_owned();
    let invite = owner.json(&["invite", "create", &project]).await;
    let link = invite["link"].as_str().unwrap();
    assert_eq!(link, format!("{}/join/{}", app.address, invite["token"].as_str().unwrap()), "{invite}");
    let member = Person::new(&app, "small-member");
    member.signup("member").await;
    let joined = member.json(&["join", link]).await;
    assert_eq!((joined["project_id"].as_str(), joined["name"].as_str()), (Some(&*project), Some("Field Recordings")));

    // A member's `share` is refused before anything is read or written.
    let tree = TempDir::new("small-share");
    std::fs::write(tree.path().join("mine.txt"), b"the member's own").unwrap();
    let refused = member.run(&["share", &project, tree.path().to_str().unwrap(), "--once"]).await;
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && said.contains("only the project's owner shares files"),
        "{}",
        describe(&refused)
    );
    let left: Vec<_> = std::fs::read_dir(tree.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, ["mine.txt"], "share wrote into the member's folder");

    // `sync` takes its folder as `pull` does (`--to DIR`), or positionally; not both.
    let target = TempDir::new("small-sync");
    let to = target.path().to_str().unwrap();
    let mut sync = Running::start(&member, &["sync", &project, "--to", to, "--json"]);
    sync.wait_for("its first pull", |v| v["event"] == "pulled").await;
    drop(sync);
    let both = member.run(&["sync", &project, to, "--to", to]).await;
    assert!(!both.status.success(), "{}", describe(&both));

    // `status`: per project, the role, the owner's computer, the folder
    // here and its files, open transfers.
    let shared = TempDir::new("small-shared");
    std::fs::write(shared.path().join("a.wav"), b"one").unwrap();
    std::fs::create_dir_all(shared.path().join("b")).unwrap();
    std::fs::write(shared.path().join("b/c.wav"), b"two").unwrap();
    owner.json(&["share", &project, shared.path().to_str().unwrap(), "--once"]).await;
    let status = owner.json(&["status"]).await;
    let mine = &status["projects"][0];
    assert_eq!((mine["name"].as_str(), mine["role"].as_str()), (Some("Field Recordings"), Some("owner")), "{status}");
    let here = shared.path().canonicalize().unwrap();
    assert_eq!((mine["folder"].as_str(), mine["files"].as_u64()), (here.to_str(), Some(2)), "{status}");
    assert_eq!(mine["owner_device"]["online"], false, "`--once` has ended: {status}");
    assert_eq!(mine["open_transfers"], 0, "{status}");
    let status = member.json(&["status"]).await;
    let theirs = &status["projects"][0];
    let synced = target.path().canonicalize().unwrap();
    assert_eq!((theirs["role"].as_str(), theirs["folder"].as_str()), (Some("member"), synced.to_str()), "{status}");
    let table = owner.run(&["status"]).await;
    assert!(String::from_utf8_lossy(&table.stdout).contains(": offline"), "{}", describe(&table));
}
