//! Direct transfers: the member's `ferry pull` fetches from the owner's
//! `ferry share` listener when it can, and through the relay when it cannot;
//! the listener serves a transfer's chunks only to its token, while the
//! transfer is open and the token unexpired.

use std::path::Path;

use ferry::client::tls::{pinned_client_config, Identity};
use ferry::protocol::transfers::CertSha256;
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::client_pull::{hash, write};
use crate::client_resume::owner_and_member;
use crate::client_share::{describe, eventually, noise, Person, Running, TempDir, AGENT_WITHIN};
use crate::helpers::TestApp;
use crate::support::cli::AtTerminal;

/// The route of the newest transfer of `path`, as the project's owner reads it.
pub(crate) async fn route_of(app: &TestApp, owner: &crate::client_share::Person, project: &str, path: &str) -> Value {
    let (status, page) = app.get(&format!("/api/projects/{project}/transfers"), &owner.token()).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let newest = page["transfers"].as_array().unwrap().iter().find(|t| t["file_path"] == path).cloned();
    newest.unwrap_or_else(|| panic!("no transfer of {path}: {page}"))["route"].clone()
}

/// A client that trusts only the certificate a direct endpoint of a
/// download answer pins, as `ferry pull` does.
pub(crate) fn pinned(cert_sha256: &str) -> reqwest::Client {
    let pinned = CertSha256::parse(cert_sha256).expect("a fingerprint");
    reqwest::Client::builder().use_preconfigured_tls(pinned_client_config(&pinned).unwrap()).build().unwrap()
}

/// The certificate and key the owner's agent keeps in its config folder.
pub(crate) fn agent_identity(owner: &Person) -> Identity {
    let name = std::fs::read_dir(owner.config.path())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .find(|name| name.starts_with("direct-") && name.ends_with(".pem"))
        .expect("the agent keeps its certificate");
    let device: Uuid = name["direct-".len()..name.len() - ".pem".len()].parse().unwrap();
    Identity::load_or_create(owner.config.path(), device).unwrap()
}

/// Files under `dir`, at any depth (none when it does not exist).
fn files_in(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries.filter_map(|e| e.ok()).map(|e| if e.path().is_dir() { files_in(&e.path()) } else { 1 }).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_fetches_directly_from_the_owners_machine_or_else_through_the_relay() {
    let app = TestApp::spawn().await;
    let (owner, member, project) = owner_and_member(&app, "Direct").await;
    let tree = TempDir::new("direct-src");
    let src = tree.path();
    let big = noise(5 * 1024 * 1024 + 99, 31);
    write(src, "media/big.bin", &big);
    write(src, "notes.txt", b"plain notes");
    let total = big.len() as u64 + 11;

    let mut agent = Running::share(&owner, &project, src);
    agent.wait_for("its first push", |v| v["event"] == "synced").await;
    let listening = agent.wait_for("listening", |v| v["event"] == "listening").await;
    assert!(listening["urls"][0].as_str().is_some_and(|u| u.starts_with("https://")), "{listening}");
    // It listens on the interface it advertises (the one facing the
    // server, here loopback's 127.0.0.1), not on every address.
    let url = reqwest::Url::parse(listening["urls"][0].as_str().unwrap()).unwrap();
    assert_eq!(url.host_str(), Some("127.0.0.1"), "{listening}");
    let elsewhere = std::net::SocketAddr::from(([127, 0, 0, 2], url.port().unwrap()));
    assert!(std::net::TcpStream::connect(elsewhere).is_err(), "not reachable at {elsewhere}");
    let cert = agent_identity(&owner).cert_sha256();
    assert_eq!(listening["cert_sha256"], json!(cert), "the certificate kept in the config folder: {listening}");

    // Reachable: every byte comes from the owner's machine, none via the relay.
    let direct = TempDir::new("direct-dst");
    let pulled = member.json(&["pull", &project, "--to", direct.path().to_str().unwrap()]).await;
    assert_eq!(
        (pulled["files"].as_u64(), pulled["bytes_transferred"].as_u64(), pulled["bytes_direct"].as_u64()),
        (Some(2), Some(total), Some(total)),
        "{pulled}"
    );
    assert!(std::fs::read(direct.path().join("media/big.bin")).unwrap() == big);
    assert_eq!(std::fs::read(direct.path().join("notes.txt")).unwrap(), b"plain notes");
    let served = agent
        .wait_for("serving the big file", |v| v["event"] == "transfer_served" && v["file_path"] == "/media/big.bin")
        .await;
    assert_eq!(
        (served["bytes_direct"].as_u64(), served["bytes_uploaded"].as_u64()),
        (Some(big.len() as u64), Some(0)),
        "{served}"
    );
    assert_eq!(files_in(&app.relay_dir()), 0, "nothing was put on the relay");
    let route = route_of(&app, &owner, &project, "/media/big.bin").await;
    assert_eq!(
        (route["bytes_direct"].as_u64(), route["bytes_relay"].as_u64()),
        (Some(big.len() as u64), Some(0)),
        "{route}"
    );
    assert_eq!(route["direct_endpoint"], listening["urls"][0], "where it came from: {route}");

    // Unreachable: the agent advertises an address nobody answers at, and
    // the member's pull goes through the relay instead.
    drop(agent);
    let mut agent = Running::share_with(&owner, &project, src, &["--advertise", "https://192.0.2.1:9"]);
    let listening = agent.wait_for("listening", |v| v["event"] == "listening").await;
    assert_eq!(listening["urls"], json!(["https://192.0.2.1:9"]));
    assert_eq!(listening["cert_sha256"], json!(cert), "the same certificate after a restart");
    let relayed = TempDir::new("relayed-dst");
    let pulled = member.json(&["pull", &project, "--to", relayed.path().to_str().unwrap()]).await;
    assert_eq!(
        (pulled["files"].as_u64(), pulled["bytes_transferred"].as_u64(), pulled["bytes_direct"].as_u64()),
        (Some(2), Some(total), Some(0)),
        "{pulled}"
    );
    assert!(std::fs::read(relayed.path().join("media/big.bin")).unwrap() == big);
    let served = agent
        .wait_for("serving the big file", |v| v["event"] == "transfer_served" && v["file_path"] == "/media/big.bin")
        .await;
    assert_eq!(
        (served["bytes_direct"].as_u64(), served["bytes_uploaded"].as_u64()),
        (Some(0), Some(big.len() as u64)),
        "{served}"
    );
    assert!(files_in(&app.relay_dir()) > 0, "the relay holds the chunks");
    let route = route_of(&app, &owner, &project, "/media/big.bin").await;
    assert_eq!(
        (route["bytes_direct"].as_u64(), route["bytes_relay"].as_u64()),
        (Some(0), Some(big.len() as u64)),
        "{route}"
    );
    assert!(route["direct_abandoned"].as_str().is_some_and(|why| why.contains("192.0.2.1")), "and why: {route}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owners_listener_serves_only_the_transfers_chunks_to_its_token_while_open() {
    const TTL_SECONDS: u32 = 3;
    let app = TestApp::spawn_with(|s| s.transfers.transfer_ttl_seconds = TTL_SECONDS).await;
    let (owner, member, project) = owner_and_member(&app, "Tokens").await;
    let tree = TempDir::new("tokens-src");
    let src = tree.path();
    write(src, "asked.txt", b"the file asked for");
    write(src, "other.txt", b"a file nobody asked for");
    let mut agent = Running::share(&owner, &project, src);
    agent.wait_for("its first push", |v| v["event"] == "synced").await;
    agent.wait_for("listening", |v| v["event"] == "listening").await;

    let (status, download) = app
        .post(&format!("/api/projects/{project}/files/download"), &member.token(), json!({"file_path": "/asked.txt"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{download}");
    let endpoint = &download["transfer_info"]["endpoints"][0];
    assert_eq!(endpoint["protocol"], "http", "{download}");
    let (url, token) = (endpoint["url"].as_str().unwrap(), endpoint["token"].as_str().unwrap());
    assert!(url.starts_with("https://"), "{download}");
    let http = pinned(endpoint["cert_sha256"].as_str().unwrap());

    // A peer that connects and never says a word is let go (the handshake
    // has a deadline), not held for as long as it likes.
    let authority = url.trim_start_matches("https://").to_owned();
    let silent = tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let mut tcp = tokio::net::TcpStream::connect(&authority).await.expect("the listener accepts");
        tokio::time::timeout(std::time::Duration::from_secs(40), tcp.read(&mut [0u8; 1])).await
    });

    let get = |chunk: String, token: Option<String>| {
        let request = http.get(format!("{url}/chunks/{chunk}"));
        async move {
            let res = match token {
                Some(t) => request.bearer_auth(t),
                None => request,
            }
            .send()
            .await
            .expect("the listener answers");
            let status = res.status();
            (status, res.bytes().await.unwrap().to_vec())
        }
    };
    let code = |body: &[u8]| serde_json::from_slice::<Value>(body).map(|v| v["error"]["code"].clone()).unwrap();
    let asked = hash(b"the file asked for");

    // The right token: the transfer's chunk, and nothing else.
    assert_eq!(get(asked.clone(), Some(token.into())).await, (StatusCode::OK, b"the file asked for".to_vec()));
    let (status, body) = get(hash(b"a file nobody asked for"), Some(token.into())).await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, json!("not_found")));

    // A malformed hash, and a path the listener does not serve.
    let (status, body) = get("not-a-hash".into(), Some(token.into())).await;
    assert_eq!((status, code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, json!("invalid_hash")));
    let res = http.get(format!("{url}/files")).bearer_auth(token).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(code(&res.bytes().await.unwrap()), json!("not_found"));

    // Plain HTTP gets nothing: the listener speaks TLS only.
    let plain = url.replace("https://", "http://");
    let answer = app.http.get(format!("{plain}/chunks/{asked}")).bearer_auth(token).send().await;
    assert!(answer.as_ref().map_or(true, |res| !res.status().is_success()), "plain HTTP answered: {answer:?}");

    // No token, a made-up one, one whose secret part is altered.
    let (mac_start, last) = token.rsplit_once('.').map(|(head, mac)| (head.len() + 1, mac)).unwrap();
    let flipped = if last.starts_with('0') { "1" } else { "0" };
    let tampered = format!("{}{flipped}{}", &token[..mac_start], &last[1..]);
    for wrong in [None, Some("not-a-token".to_owned()), Some(tampered)] {
        let (status, body) = get(asked.clone(), wrong.clone()).await;
        assert_eq!((status, code(&body)), (StatusCode::UNAUTHORIZED, json!("unauthorized")), "{wrong:?}");
    }

    // A failed attempt stops the serving; retried, it is served again.
    let transfer = download["download_id"].as_str().unwrap();
    let path = format!("/api/projects/{project}/transfers/{transfer}");
    let failed = json!({"status": "failed", "error_message": "disk hiccup"});
    let (status, body) = app.call(reqwest::Method::PATCH, &path, Some(&owner.device_token()), Some(&failed)).await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("failed")), "{body}");
    agent.wait_for("the stop", |v| v["event"] == "transfer_cancelled" && v["transfer_id"] == transfer).await;
    let (status, body) = app.post(&format!("{path}/retry"), &member.token(), json!({})).await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("pending")), "{body}");
    assert_eq!(get(asked.clone(), Some(token.into())).await, (StatusCode::OK, b"the file asked for".to_vec()));

    // Cancelled: the agent stops serving it, and its token opens nothing more.
    let (status, body) =
        app.post(&format!("/api/projects/{project}/transfers/{transfer}/cancel"), &member.token(), json!({})).await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("cancelled")), "{body}");
    agent.wait_for("the cancellation", |v| v["event"] == "transfer_cancelled" && v["transfer_id"] == transfer).await;
    let (status, body) = get(asked.clone(), Some(token.into())).await;
    assert_eq!((status, code(&body)), (StatusCode::GONE, json!("transfer_not_active")));

    // Past its transfer's expiry a token opens nothing.
    let (status, download) = app
        .post(&format!("/api/projects/{project}/files/download"), &member.token(), json!({"file_path": "/asked.txt"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{download}");
    let token = download["transfer_info"]["endpoints"][0]["token"].as_str().unwrap();
    let expires_at: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(download["transfer_info"]["expires_at"].clone()).unwrap();
    let wait = (expires_at - chrono::Utc::now()).to_std().unwrap_or_default() + std::time::Duration::from_millis(1100);
    tokio::time::sleep(wait).await;
    let (status, body) = get(asked, Some(token.into())).await;
    assert_eq!((status, code(&body)), (StatusCode::UNAUTHORIZED, json!("unauthorized")));

    let silent = silent.await.unwrap();
    assert!(matches!(silent, Ok(Ok(0) | Err(_))), "a silent connection was kept open for 40 s: {silent:?}");
}

/// An owner with two projects, each with a member, each with a folder of
/// files: (owner, [(project, member, folder, its one file's bytes)]).
async fn two_projects(app: &TestApp) -> (Person, Vec<(String, Person, TempDir, Vec<u8>)>) {
    let (owner, first_member, first) = owner_and_member(app, "First").await;
    let second_member = Person::new(app, "member-two");
    second_member.signup("member-two").await;
    let second = owner.json(&["project", "create", "Second"]).await["id"].as_str().unwrap().to_owned();
    let invite = owner.json(&["invite", "create", &second]).await["token"].as_str().unwrap().to_owned();
    second_member.json(&["join", &invite]).await;
    let mut projects = Vec::new();
    for (i, (project, member)) in [(first, first_member), (second, second_member)].into_iter().enumerate() {
        let tree = TempDir::new(&format!("several-src-{i}"));
        let bytes = noise(2 * 1024 * 1024 + i, 40 + i as u64);
        write(tree.path(), &format!("project-{i}.bin"), &bytes);
        projects.push((project, member, tree, bytes));
    }
    (owner, projects)
}

/// Each member pulls its project; every byte comes from the owner's
/// machine, none through the relay.
async fn each_member_pulls_directly(app: &TestApp, projects: &[(String, Person, TempDir, Vec<u8>)]) {
    for (i, (project, member, _, bytes)) in projects.iter().enumerate() {
        let to = TempDir::new(&format!("several-dst-{i}"));
        let pulled = member.json(&["pull", project, "--to", to.path().to_str().unwrap()]).await;
        let total = bytes.len() as u64;
        assert_eq!(
            (pulled["files"].as_u64(), pulled["bytes_transferred"].as_u64(), pulled["bytes_direct"].as_u64()),
            (Some(1), Some(total), Some(total)),
            "project {i}: {pulled}"
        );
        assert!(std::fs::read(to.path().join(format!("project-{i}.bin"))).unwrap() == *bytes);
    }
    assert_eq!(files_in(&app.relay_dir()), 0, "nothing was put on the relay");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_share_process_serves_several_projects_directly() {
    let app = TestApp::spawn().await;
    let (owner, projects) = two_projects(&app).await;
    let mut args = vec!["share"];
    for (project, _, tree, _) in &projects {
        args.extend([project.as_str(), tree.path().to_str().unwrap()]);
    }
    args.push("--json");
    let mut agent = Running::start(&owner, &args);
    // Each project pushed, then the one listener advertised for each.
    for (project, ..) in &projects {
        agent.wait_for("its first push", |v| v["event"] == "synced" && v["project_id"] == *project).await;
    }
    for (project, ..) in &projects {
        agent.wait_for("listening", |v| v["event"] == "listening" && v["project_id"] == *project).await;
    }
    each_member_pulls_directly(&app, &projects).await;

    // `--once` pushes each pair and says so per project.
    drop(agent);
    write(projects[1].2.path(), "added.txt", b"one more");
    args.insert(args.len() - 1, "--once");
    let output = owner.run(&args).await;
    assert!(output.status.success(), "{}", describe(&output));
    let lines: Vec<Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    let pushed: Vec<_> = lines.iter().map(|v| (v["project_id"].as_str(), v["changes_applied"].as_u64())).collect();
    assert_eq!(pushed, [(Some(projects[0].0.as_str()), Some(0)), (Some(projects[1].0.as_str()), Some(1))]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_share_processes_of_one_machine_each_serve_their_project_directly() {
    let app = TestApp::spawn().await;
    let (owner, projects) = two_projects(&app).await;
    // The same owner and device (one config), one process per project: the
    // second to start must not take the first one's direct transfers.
    let mut agents = Vec::new();
    for (project, _, tree, _) in &projects {
        let mut agent = Running::share(&owner, project, tree.path());
        agent.wait_for("listening", |v| v["event"] == "listening" && v["project_id"] == *project).await;
        agents.push(agent);
    }
    each_member_pulls_directly(&app, &projects).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_prints_one_line_per_file_it_sends() {
    let app = TestApp::spawn().await;
    let (owner, member, project) = owner_and_member(&app, "Lines").await;
    let tree = TempDir::new("lines-src");
    let src = tree.path();
    write(src, "media/big.bin", &noise(5 * 1024 * 1024, 7));
    write(src, "notes.txt", b"plain notes");

    // For people (no --json): the agent's sentences on stderr.
    let mut agent = Running::start(&owner, &["share", &project, src.to_str().unwrap()]);
    let listening = |lines: &[String]| lines.iter().any(|l| l.starts_with("Members of Lines"));
    while !listening(&agent.stderr()) {
        assert!(agent.child.try_wait().unwrap().is_none(), "the agent exited:\n{}", agent.stderr().join("\n"));
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let to = TempDir::new("lines-dst");
    member.json(&["pull", &project, "--to", to.path().to_str().unwrap()]).await;

    let who = member_name(&app, &owner, &project).await;
    let naming =
        |lines: &[String], path: &str| -> Vec<String> { lines.iter().filter(|l| l.contains(path)).cloned().collect() };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while ["/media/big.bin", "/notes.txt"].iter().any(|p| naming(&agent.stderr(), p).is_empty()) {
        assert!(std::time::Instant::now() < deadline, "not reported:\n{}", agent.stderr().join("\n"));
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Stopped, so that nothing more can come.
    drop(agent.child.kill());
    agent.child.wait().unwrap();
    let lines = agent.stderr();
    assert_eq!(
        naming(&lines, "/media/big.bin"),
        [format!("sent /media/big.bin of Lines to {who} (5.00 MiB, direct)")],
        "{lines:#?}"
    );
    assert_eq!(
        naming(&lines, "/notes.txt"),
        [format!("sent /notes.txt of Lines to {who} (11 B, direct)")],
        "{lines:#?}"
    );
}

/// What an 80-column terminal (what `script` gives without a terminal of
/// its own) shows once `printed` has been written to it: its lines, after
/// wrapping, carriage returns, cursor moves and erasures (the escape codes a
/// progress bar draws and clears itself with), trailing blanks trimmed.
fn screen(printed: &str) -> Vec<String> {
    const WIDTH: usize = 80;
    let mut rows: Vec<Vec<char>> = vec![vec![]];
    let (mut row, mut col) = (0usize, 0usize);
    let mut chars = printed.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\n' => {
                row += 1;
                if rows.len() <= row {
                    rows.push(vec![]);
                }
            }
            '\r' => col = 0,
            '\u{8}' => col = col.saturating_sub(1),
            '\u{1b}' if chars.peek() == Some(&'[') => {
                chars.next();
                let mut params = String::new();
                let command = loop {
                    match chars.next() {
                        Some(p) if p.is_ascii_digit() || p == ';' || p == '?' => params.push(p),
                        other => break other,
                    }
                };
                let n = params.trim_start_matches('?').parse::<usize>().unwrap_or(0);
                match command {
                    Some('A') => row = row.saturating_sub(n.max(1)),
                    Some('B') => row += n.max(1),
                    Some('C') => col += n.max(1),
                    Some('D') => col = col.saturating_sub(n.max(1)),
                    Some('G') => col = n.saturating_sub(1),
                    Some('K') if n == 2 => rows[row].clear(),
                    Some('K') => rows[row].truncate(col),
                    Some('J') => {
                        rows[row].truncate(col);
                        rows.truncate(row + 1);
                    }
                    _ => {}
                }
                while rows.len() <= row {
                    rows.push(vec![]);
                }
            }
            c if c.is_control() => {}
            c => {
                if col >= WIDTH {
                    row += 1;
                    col = 0;
                    if rows.len() <= row {
                        rows.push(vec![]);
                    }
                }
                let line = &mut rows[row];
                while line.len() < col {
                    line.push(' ');
                }
                if col < line.len() {
                    line[col] = c;
                } else {
                    line.push(c);
                }
                col += 1;
            }
        }
    }
    rows.into_iter().map(|r| r.into_iter().collect::<String>().trim_end().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_a_terminal_a_file_sent_is_one_line_even_while_another_ones_bar_runs() {
    let app = TestApp::spawn().await;
    let (owner, member, project) = owner_and_member(&app, "Screen").await;
    let tree = TempDir::new("screen-src");
    let src = tree.path();
    let big = noise(5 * 1024 * 1024, 9);
    write(src, "big.bin", &big);
    write(src, "notes.txt", b"plain notes");
    owner.json(&["share", &project, src.to_str().unwrap(), "--once"]).await;

    // `script` gives `ferry share` a terminal.
    let mut terminal =
        AtTerminal::spawn(&owner.command(&["share", &project, src.to_str().unwrap()])).expect("script runs");
    let wait_for = |what: &'static str| {
        let terminal = &terminal;
        async move { terminal.wait_for(what, AGENT_WITHIN).await.unwrap_or_else(|e| panic!("{e}")) }
    };
    wait_for("serving transfers").await;

    // The big file asked for and one chunk fetched: its bar is on screen
    // (and stays, the rest going to the relay, until the transfer ends).
    let (status, download) = app
        .post(&format!("/api/projects/{project}/files/download"), &member.token(), json!({"file_path": "/big.bin"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{download}");
    let endpoint = &download["transfer_info"]["endpoints"][0];
    let (url, token) = (endpoint["url"].as_str().unwrap(), endpoint["token"].as_str().unwrap());
    let first = download["transfer_info"]["chunks_needed"][0].as_str().unwrap();
    let http = pinned(endpoint["cert_sha256"].as_str().unwrap());
    let res = http.get(format!("{url}/chunks/{first}")).bearer_auth(token).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    wait_for("sending /big.bin").await;

    // Meanwhile a small file is pulled and sent: its line is printed while
    // the big file's bar runs.
    let to = TempDir::new("screen-dst");
    member.json(&["pull", &project, "/notes.txt", "--to", to.path().to_str().unwrap()]).await;
    wait_for("sent /notes.txt").await;
    let transfer = download["download_id"].as_str().unwrap();
    let cancel = format!("/api/projects/{project}/transfers/{transfer}/cancel");
    assert_eq!(app.post(&cancel, &member.token(), json!({})).await.0, StatusCode::OK);
    wait_for("transfer of /big.bin cancelled").await;
    let _ = terminal.child.kill();
    let _ = terminal.child.wait();

    let shown = screen(&terminal.printed());
    let who = member_name(&app, &owner, &project).await;
    // Long lines wrap at the terminal's width: the start of each is enough.
    let naming = |what: &str| -> Vec<&String> { shown.iter().filter(|l| l.contains(what)).collect() };
    let sent = naming("/notes.txt");
    assert!(
        sent.len() == 1 && sent[0].starts_with(&format!("sent /notes.txt of Screen to {}", &who[..20])),
        "one line for the file sent: {shown:#?}"
    );
    assert_eq!(naming("/big.bin"), ["transfer of /big.bin cancelled"], "{shown:#?}");
    assert!(!shown.iter().any(|l| l.contains("eta ") || l.contains("[=")), "no bar left behind: {shown:#?}");
}

/// The display name of the project's one member.
async fn member_name(app: &TestApp, owner: &Person, project: &str) -> String {
    let (_, members) = app.get(&format!("/api/projects/{project}/members"), &owner.token()).await;
    let member = members["members"].as_array().unwrap().iter().find(|m| m["role"] == "member").cloned();
    member.and_then(|m| m["display_name"].as_str().map(str::to_owned)).expect("a member")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_refuses_a_listener_with_another_certificate_and_goes_through_the_relay() {
    use actix_web::{web, App, HttpResponse, HttpServer};
    let app = TestApp::spawn().await;
    let (owner, member, project) = owner_and_member(&app, "Impostor").await;
    let tree = TempDir::new("impostor-src");
    let src = tree.path();
    let bytes = noise(300_000, 17);
    write(src, "secret.bin", &bytes);
    write(src, "later.txt", b"written after");

    // Something else answers at the advertised address, over TLS with a
    // certificate of its own, and would serve anything.
    let keys = TempDir::new("impostor-keys");
    let impostor = Identity::load_or_create(keys.path(), Uuid::now_v7()).unwrap();
    let server =
        HttpServer::new(|| App::new().default_service(web::to(|| async { HttpResponse::Ok().body("forged") })))
            .workers(1)
            .disable_signals()
            .listen_rustls_0_23(std::net::TcpListener::bind("127.0.0.1:0").unwrap(), impostor.server_config().unwrap())
            .unwrap();
    let address = format!("https://{}", server.addrs()[0]);
    let server = server.run();
    let handle = server.handle();
    tokio::spawn(server);

    let mut agent = Running::share_with(&owner, &project, src, &["--advertise", &address]);
    agent.wait_for("its first push", |v| v["event"] == "synced").await;
    let listening = agent.wait_for("listening", |v| v["event"] == "listening").await;
    assert_ne!(listening["cert_sha256"], json!(impostor.cert_sha256()));

    let dst = TempDir::new("impostor-dst");
    let pulled = member.json(&["pull", &project, "/secret.bin", "--to", dst.path().to_str().unwrap()]).await;
    assert_eq!(
        (pulled["bytes_transferred"].as_u64(), pulled["bytes_direct"].as_u64()),
        (Some(bytes.len() as u64), Some(0)),
        "{pulled}"
    );
    assert!(std::fs::read(dst.path().join("secret.bin")).unwrap() == bytes, "the owner's bytes, not the impostor's");
    let route = route_of(&app, &owner, &project, "/secret.bin").await;
    assert_eq!((route["bytes_direct"].as_u64(), route["bytes_relay"].as_u64()), (Some(0), Some(bytes.len() as u64)));
    assert!(
        route["direct_abandoned"].as_str().is_some_and(|why| why.contains("is not the one the server pinned")),
        "and why: {route}"
    );

    // An entry of an older agent (plain http, nothing to pin) is not tried:
    // no token goes out in the clear.
    let device_token = owner.device_token();
    let device = app.get("/api/me", &device_token).await.1["device"]["id"].as_str().unwrap().to_owned();
    let older =
        json!({"urls": [address.replace("https://", "http://")], "key": "ab".repeat(32), "project_id": project});
    let (status, body) = app
        .call(reqwest::Method::PUT, &format!("/api/devices/{device}/direct"), Some(&device_token), Some(&older))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let pulled = member.json(&["pull", &project, "/later.txt", "--to", dst.path().to_str().unwrap()]).await;
    assert_eq!(
        (pulled["bytes_transferred"].as_u64(), pulled["bytes_direct"].as_u64()),
        (Some(13), Some(0)),
        "{pulled}"
    );
    let route = route_of(&app, &owner, &project, "/later.txt").await;
    assert!(route["direct_abandoned"].as_str().is_some_and(|why| why.contains("not TLS")), "and why: {route}");
    drop(agent);
    handle.stop(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_outliving_its_direct_token_gets_a_fresh_one_and_stays_direct() {
    // Tokens live a second; the pull keeps to 1 MiB/s, so 3 MiB take at
    // least 2 seconds: it cannot finish directly on its first token.
    let app = TestApp::spawn_with(|s| s.transfers.direct_token_ttl_seconds = 1).await;
    let (owner, member, project) = owner_and_member(&app, "Renewal").await;
    let tree = TempDir::new("renewal-src");
    let src = tree.path();
    let bytes = noise(3 * 1024 * 1024, 23);
    write(src, "long.bin", &bytes);
    let mut agent = Running::share(&owner, &project, src);
    agent.wait_for("its first push", |v| v["event"] == "synced").await;
    agent.wait_for("listening", |v| v["event"] == "listening").await;

    let dst = TempDir::new("renewal-dst");
    let pulled =
        member.json(&["pull", &project, "--to", dst.path().to_str().unwrap(), "--max-download", "1MiB/s"]).await;
    assert_eq!(
        (pulled["bytes_transferred"].as_u64(), pulled["bytes_direct"].as_u64()),
        (Some(bytes.len() as u64), Some(bytes.len() as u64)),
        "{pulled}"
    );
    assert!(std::fs::read(dst.path().join("long.bin")).unwrap() == bytes);
    let route = route_of(&app, &owner, &project, "/long.bin").await;
    assert_eq!((route["bytes_direct"].as_u64(), &route["direct_abandoned"]), (Some(bytes.len() as u64), &Value::Null));
}

/// A port free on every interface just now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("0.0.0.0:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_advertise_the_listener_binds_the_advertised_addresses_of_this_machine_only() {
    use std::net::{IpAddr, TcpStream, UdpSocket};
    let app = TestApp::spawn().await;
    let (owner, _member, project) = owner_and_member(&app, "Bound").await;
    let tree = TempDir::new("bound-src");
    write(tree.path(), "notes.txt", b"plain notes");
    // Other addresses of this machine: the rest of loopback, and the one
    // facing the network when there is one (nothing is sent: connecting a
    // UDP socket only picks the route).
    let mut elsewhere = vec![IpAddr::from([127, 0, 0, 2])];
    elsewhere.extend(
        UdpSocket::bind("0.0.0.0:0")
            .and_then(|s| s.connect("198.51.100.1:9").and_then(|()| s.local_addr()))
            .ok()
            .map(|a| a.ip())
            .filter(|ip| !ip.is_loopback()),
    );

    // An unspecified --listen address, an advertised address of this machine:
    // it listens there, and nowhere else.
    let port = free_port();
    let advertised = format!("https://127.0.0.1:{port}");
    let listen = format!("0.0.0.0:{port}");
    let mut agent =
        Running::share_with(&owner, &project, tree.path(), &["--listen", &listen, "--advertise", &advertised]);
    let listening = agent.wait_for("listening", |v| v["event"] == "listening").await;
    assert_eq!(listening["urls"], json!([advertised]));
    assert!(TcpStream::connect(("127.0.0.1", port)).is_ok(), "reachable where it is advertised");
    for ip in &elsewhere {
        assert!(TcpStream::connect((*ip, port)).is_err(), "not reachable at {ip}:{port}");
    }
    assert!(!agent.stderr().iter().any(|l| l.contains("every interface")), "{:?}", agent.stderr());
    drop(agent);

    // A host name: which interface reaches it is unknown, so every
    // interface, and it says so.
    let port = free_port();
    let advertised = format!("https://localhost:{port}");
    let listen = format!("0.0.0.0:{port}");
    let mut agent =
        Running::share_with(&owner, &project, tree.path(), &["--listen", &listen, "--advertise", &advertised]);
    agent.wait_for("listening", |v| v["event"] == "listening").await;
    for ip in &elsewhere {
        assert!(TcpStream::connect((*ip, port)).is_ok(), "reachable at {ip}:{port}");
    }
    let said = eventually("the warning", || {
        let lines = agent.stderr();
        async move { lines.into_iter().find(|l| l.contains("listening on every interface")) }
    })
    .await;
    assert!(said.contains(&advertised) && said.contains("names no IP address"), "{said}");
}
