//! The one LISTEN connection of a server: dedicated, never pooled, read with
//! `poll_message`. It reconnects on its own and then wakes every feed, so
//! whatever was committed while it was down is caught up from the log.
//! It also hears relay chunks land (`ferry_chunks`) and wakes the readers
//! waiting for them (after a reconnect it wakes them all to look again),
//! and devices' presence change (`ferry_presence`), and tokens revoked
//! (`ferry_tokens`): it drops them from this server's token cache, which
//! answers only while this connection is up.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio_postgres::AsyncMessage;
use uuid::Uuid;

use super::presence::CHANNEL as PRESENCE;
use super::Hub;
use crate::domain::relay::CHUNKS_CHANNEL as CHUNKS;
use crate::domain::tokens::{TokenCache, CHANNEL as TOKENS};
use crate::relay::arrivals::ChunkArrivals;

pub const CHANNEL: &str = "ferry_events";

#[derive(serde::Deserialize)]
struct Payload {
    project_id: Uuid,
    head_seq: i64,
}

pub async fn listen(
    config: tokio_postgres::Config,
    hub: Arc<Hub>,
    arrivals: Arc<ChunkArrivals>,
    tokens: Arc<TokenCache>,
    listening: Arc<AtomicBool>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match config.connect(tokio_postgres::NoTls).await {
            Ok((client, mut connection)) => {
                let (notes, mut received) = tokio::sync::mpsc::unbounded_channel();
                let driver = tokio::spawn(async move {
                    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                    while let Some(message) = messages.next().await {
                        match message {
                            Ok(AsyncMessage::Notification(n)) => {
                                if notes.send((n.channel().to_owned(), n.payload().to_owned())).is_err() {
                                    return;
                                }
                            }
                            Ok(_) => {}
                            Err(e) => {
                                tracing::warn!(error = %e, "LISTEN connection failed");
                                return;
                            }
                        }
                    }
                });
                match client
                    .batch_execute(&format!("LISTEN {CHANNEL}; LISTEN {CHUNKS}; LISTEN {PRESENCE}; LISTEN {TOKENS}"))
                    .await
                {
                    Ok(()) => {
                        tracing::info!("listening for events");
                        tokens.set_live(true);
                        listening.store(true, Ordering::Relaxed);
                        backoff = Duration::from_millis(100);
                        hub.wake_all();
                        arrivals.wake_all();
                        while let Some((channel, payload)) = received.recv().await {
                            match channel.as_str() {
                                CHUNKS => arrivals.wake_from_payload(&payload),
                                TOKENS => tokens.forget_from_payload(&payload),
                                PRESENCE => match payload.parse::<Uuid>() {
                                    Ok(device_id) => hub.presence(device_id),
                                    Err(e) => tracing::warn!(%payload, error = %e, "unreadable presence notification"),
                                },
                                _ => match serde_json::from_str::<Payload>(&payload) {
                                    Ok(p) => hub.wake(p.project_id, Some(p.head_seq)),
                                    Err(e) => tracing::warn!(%payload, error = %e, "unreadable notification"),
                                },
                            }
                        }
                        listening.store(false, Ordering::Relaxed);
                        tokens.set_live(false);
                    }
                    Err(e) => tracing::warn!(error = %e, "LISTEN failed"),
                }
                driver.abort();
            }
            Err(e) => tracing::warn!(error = %e, "cannot connect the listener"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
