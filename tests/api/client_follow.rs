//! The client's WebSocket follow loop (agent, sync, `transfers`) takes a
//! connection that went silent without closing — a network that vanished —
//! for dead, so its caller reconnects, instead of waiting forever.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry::client::api::{Api, Flow};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::TestApp;

/// A TCP proxy to the test server that, once frozen, passes nothing more
/// either way while keeping every connection open.
struct StallingProxy {
    url: String,
    frozen: Arc<AtomicBool>,
}

impl StallingProxy {
    async fn start(upstream: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let upstream = upstream.trim_start_matches("http://").to_owned();
        let frozen = Arc::new(AtomicBool::new(false));
        let flag = frozen.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let server = tokio::net::TcpStream::connect(&upstream).await.unwrap();
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(pass(client_read, server_write, flag.clone()));
                tokio::spawn(pass(server_read, client_write, flag.clone()));
            }
        });
        Self { url, frozen }
    }
}

async fn pass(mut from: impl AsyncReadExt + Unpin, mut to: impl AsyncWriteExt + Unpin, frozen: Arc<AtomicBool>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let Ok(n) = from.read(&mut buf).await else { return };
        if n == 0 {
            return;
        }
        while frozen.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn following_gives_up_on_a_connection_gone_silent() {
    let app = TestApp::spawn().await;
    let owner = app.signup("owner").await;
    let project = app.create_project(&owner, "Silent").await;
    let proxy = StallingProxy::start(&app.address).await;
    let every = Duration::from_millis(200);
    let api = Api::new(&proxy.url, Some(owner.token.clone())).with_ping_interval(every);

    let frozen = proxy.frozen.clone();
    let mut caught_up_at = None;
    let followed = tokio::time::timeout(
        Duration::from_secs(30),
        api.follow(project, 0, |message| {
            if message["type"] == "caught_up" {
                // From here on the network says nothing more.
                frozen.store(true, Ordering::SeqCst);
                caught_up_at = Some(Instant::now());
            }
            Ok(Flow::Continue)
        }),
    )
    .await
    .expect("follow noticed the silence instead of waiting forever");
    let error = followed.expect_err("a silent connection is an error, for the caller to reconnect");
    assert!(error.contains("no word from the server"), "{error}");
    let silent_for = caught_up_at.expect("the subscription was answered first").elapsed();
    assert!(silent_for >= every * 3, "not given up before three pings went unanswered ({silent_for:?})");
}
