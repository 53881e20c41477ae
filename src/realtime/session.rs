//! One WebSocket session: subscriptions to several projects, each replayed
//! from the client's seq and then followed live, in seq order, without
//! duplicates or gaps. A session tracks, per project, the seq it has covered
//! (sent, or skipped as not visible); a batch that does not follow on from
//! it, or a lag signal from the hub, sends it back to the log.
//!
//! What one socket may cost is bounded: it sends each event at most once
//! (subscribing again does not replay what it already sent), follows at most
//! `max_subscriptions` projects, never holds a cursor past the head, and
//! closes with 1009 on a frame over the limit. A session whose token is
//! revoked closes with 1008.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use actix_ws::{CloseCode, CloseReason, Message, MessageStream, Session};
use tokio::sync::{broadcast, mpsc};
use uuid::Uuid;

use super::frames::{too_big, MAX_FRAME};
use super::hub::{Batch, Lag, Push};
use super::Realtime;
use crate::domain::events::{feed, visible};
use crate::domain::projects::access;
use crate::domain::tokens::Revoked;
use crate::domain::{Caller, DomainError};
use crate::protocol::projects::Role;
use crate::protocol::realtime::{ClientMessage, DevicePresence, EventMessage, ServerMessage};
use crate::protocol::{Event, EventData};

/// Events read per page while replaying from the log.
const REPLAY_PAGE: i64 = 500;

struct Subscription {
    role: Role,
    /// Every event up to here was sent or is not for this caller.
    cursor: i64,
}

/// Why a session ends.
struct Closed;

struct SessionState {
    rt: Arc<Realtime>,
    caller: Caller,
    ws: Session,
    socket: u64,
    outbox: mpsc::Sender<Push>,
    lag: Arc<Lag>,
    subscriptions: HashMap<Uuid, Subscription>,
}

/// Runs a session until the client leaves or goes silent.
pub async fn run(rt: Arc<Realtime>, caller: Caller, ws: Session, mut stream: MessageStream) {
    let (outbox, mut inbox) = mpsc::channel(rt.config.queue.max(1));
    let device = caller.device_id;
    let mut state = SessionState {
        socket: rt.hub.next_socket_id(),
        rt: rt.clone(),
        caller,
        ws,
        outbox,
        lag: Arc::new(Lag::default()),
        subscriptions: HashMap::new(),
    };
    if let Some(device) = device {
        if let Err(e) = rt.presence.connect(device).await {
            tracing::warn!(error = %crate::telemetry::error_chain(&e), "presence not recorded");
        }
    }
    crate::telemetry::WS_SESSIONS.inc();

    let interval = rt.config.ping_interval;
    let mut pings = tokio::time::interval(interval);
    let mut heard = Instant::now();
    let lag = state.lag.clone();
    let mut revocations = rt.tokens.revocations();
    let mut reason = None;
    loop {
        let step = tokio::select! {
            message = stream.recv() => {
                heard = Instant::now();
                match message {
                    Some(Ok(Message::Text(text))) => state.on_text(&text).await,
                    Some(Ok(Message::Binary(_))) => state.error("invalid_message", "messages are JSON text", None).await,
                    Some(Ok(Message::Ping(bytes))) => state.ws.pong(&bytes).await.map_err(|_| Closed),
                    Some(Ok(Message::Pong(_) | Message::Continuation(_) | Message::Nop)) => Ok(()),
                    Some(Err(e)) if too_big(&e) => {
                        let description = format!("a frame may be at most {MAX_FRAME} bytes");
                        reason = Some(CloseReason { code: CloseCode::Size, description: Some(description) });
                        Err(Closed)
                    }
                    Some(Ok(Message::Close(_)) | Err(_)) | None => Err(Closed),
                }
            }
            Some(push) = inbox.recv() => match push {
                Push::Events(batch) => state.on_batch(&batch).await,
                Push::Presence(note) => state.on_presence(&note).await,
            },
            _ = lag.notify.notified() => state.on_lag().await,
            revoked = revocations.recv() => {
                if state.token_revoked(revoked).await {
                    let description = "the token was revoked".to_owned();
                    reason = Some(CloseReason { code: CloseCode::Policy, description: Some(description) });
                    Err(Closed)
                } else {
                    Ok(())
                }
            }
            _ = pings.tick() => {
                if heard.elapsed() > interval * 3 {
                    tracing::debug!(socket = state.socket, "dropping a silent socket");
                    Err(Closed)
                } else {
                    state.ws.ping(b"").await.map_err(|_| Closed)
                }
            }
        };
        if step.is_err() {
            break;
        }
    }

    for project_id in state.subscriptions.keys() {
        rt.hub.unsubscribe(*project_id, state.socket);
    }
    crate::telemetry::WS_SESSIONS.dec();
    if let Some(device) = device {
        if let Err(e) = rt.presence.disconnect(device).await {
            tracing::warn!(error = %crate::telemetry::error_chain(&e), "presence not cleared");
        }
    }
    let _ = state.ws.close(reason).await;
}

impl SessionState {
    /// Whether a revocation ends this session: it names this token, or
    /// some were missed and the token is gone.
    async fn token_revoked(&self, revoked: Result<Revoked, broadcast::error::RecvError>) -> bool {
        match revoked {
            Ok(revoked) if revoked.concerns(&self.caller) => true,
            Ok(Revoked::Unsure) | Err(broadcast::error::RecvError::Lagged(_)) => {
                match crate::domain::accounts::token_exists(&self.rt.pool, &self.caller).await {
                    Ok(exists) => !exists,
                    Err(e) => {
                        tracing::warn!(error = %crate::telemetry::error_chain(&e), "cannot check a socket's token");
                        false
                    }
                }
            }
            Ok(_) | Err(broadcast::error::RecvError::Closed) => false,
        }
    }

    async fn send(&mut self, message: &impl serde::Serialize) -> Result<(), Closed> {
        let text = serde_json::to_string(message).expect("messages serialize");
        self.ws.text(text).await.map_err(|_| Closed)
    }

    async fn error(&mut self, code: &str, message: &str, project_id: Option<Uuid>) -> Result<(), Closed> {
        self.send(&ServerMessage::Error { code: code.to_owned(), message: message.to_owned(), project_id }).await
    }

    async fn on_text(&mut self, text: &str) -> Result<(), Closed> {
        match serde_json::from_str::<ClientMessage>(text) {
            Ok(ClientMessage::Subscribe { project_id, after_seq }) => self.subscribe(project_id, after_seq).await,
            Ok(ClientMessage::Unsubscribe { project_id }) => {
                if self.subscriptions.remove(&project_id).is_some() {
                    self.rt.hub.unsubscribe(project_id, self.socket);
                }
                self.send(&ServerMessage::Unsubscribed { project_id }).await
            }
            Ok(ClientMessage::Ping) => self.send(&ServerMessage::Pong).await,
            Err(e) => self.error("invalid_message", &e.to_string(), None).await,
        }
    }

    /// Subscribes, or moves an existing subscription on. A socket is sent
    /// each event at most once: subscribing again to a project answers
    /// `subscribed` and `caught_up` again but replays only from
    /// max(after_seq, what this socket already covered). Repeated subscribes
    /// would otherwise each replay the whole log; a client that truly wants
    /// the log again unsubscribes first or opens another socket.
    async fn subscribe(&mut self, project_id: Uuid, after_seq: i64) -> Result<(), Closed> {
        let again = self.subscriptions.contains_key(&project_id);
        let max = self.rt.config.max_subscriptions;
        if !again && self.subscriptions.len() >= max {
            let message = format!("a socket may be subscribed to at most {max} projects; unsubscribe from one first");
            return self.error("too_many_subscriptions", &message, Some(project_id)).await;
        }
        let checked = async {
            let client = self.rt.pool.get().await?;
            let role = access(&client, project_id, &self.caller, false).await?;
            let head: i64 = client
                .query_one("SELECT head_seq FROM project_heads WHERE project_id = $1", &[&project_id])
                .await?
                .get(0);
            Ok::<_, DomainError>((role, head))
        };
        let (role, head) = match checked.await {
            Ok(found) => found,
            Err(e) => return self.refuse(project_id, e).await,
        };
        // Seqs start at 1: a negative after_seq means from the start, as on
        // GET /events.
        let after_seq = after_seq.max(0);
        if after_seq > head {
            // Such a cursor would silently drop every live event until the
            // log caught up with it; the client holds a seq of something else.
            let message = format!("after_seq {after_seq} is past the project's head_seq {head}");
            return self.error("after_seq_ahead", &message, Some(project_id)).await;
        }
        if let Some(sub) = self.subscriptions.get_mut(&project_id) {
            sub.role = role;
            sub.cursor = sub.cursor.max(after_seq);
        } else {
            // Join the live feed first, then replay: whatever commits meanwhile
            // arrives live or is found by the replay, and the cursor drops repeats.
            self.rt.hub.subscribe(project_id, self.socket, head, self.outbox.clone(), self.lag.clone());
            self.subscriptions.insert(project_id, Subscription { role, cursor: after_seq });
        }
        self.send(&ServerMessage::Subscribed { project_id, head_seq: head }).await?;
        self.replay(project_id).await?;
        let seq = self.subscriptions.get(&project_id).map_or(head, |s| s.cursor);
        if self.subscriptions.contains_key(&project_id) {
            self.send(&ServerMessage::CaughtUp { project_id, seq }).await?;
        }
        Ok(())
    }

    /// Sends what the log holds past the cursor, a page at a time.
    async fn replay(&mut self, project_id: Uuid) -> Result<(), Closed> {
        loop {
            let Some(cursor) = self.subscriptions.get(&project_id).map(|s| s.cursor) else { return Ok(()) };
            let page = async {
                let client = self.rt.pool.get().await?;
                feed(&client, &self.caller, project_id, cursor, None, REPLAY_PAGE).await
            };
            let page = match page.await {
                Ok(page) => page,
                Err(e) => return self.refuse(project_id, e).await,
            };
            let done = (page.events.len() as i64) < REPLAY_PAGE;
            let covered = if done { page.head_seq.max(cursor) } else { page.events.last().map_or(cursor, |e| e.seq) };
            for event in &page.events {
                if !self.deliver(project_id, event).await? {
                    return Ok(());
                }
            }
            if let Some(s) = self.subscriptions.get_mut(&project_id) {
                s.cursor = s.cursor.max(covered);
            }
            if done {
                return Ok(());
            }
        }
    }

    /// Sends one event and advances the cursor; answers false when the event
    /// ended the subscription (the caller left the project).
    async fn deliver(&mut self, project_id: Uuid, event: &Event) -> Result<bool, Closed> {
        self.send(&ServerMessage::Event(Box::new(EventMessage::new(project_id, event)))).await?;
        if let Some(s) = self.subscriptions.get_mut(&project_id) {
            s.cursor = s.cursor.max(event.seq);
        }
        let removed = matches!(&event.data, EventData::MemberRemoved(m) if m.user_id == self.caller.user_id);
        if removed {
            self.end(project_id, "access_revoked", "you are no longer in this project").await?;
            return Ok(false);
        }
        Ok(true)
    }

    async fn on_batch(&mut self, batch: &Batch) -> Result<(), Closed> {
        let project_id = batch.project_id;
        let Some(sub) = self.subscriptions.get(&project_id) else { return Ok(()) };
        if batch.to_seq <= sub.cursor {
            return Ok(());
        }
        if batch.from_seq > sub.cursor + 1 {
            // Something was dropped for this socket: the log has it.
            return self.replay(project_id).await;
        }
        let user = self.caller.user_id;
        for event in &batch.events {
            let Some(sub) = self.subscriptions.get(&project_id) else { return Ok(()) };
            if event.seq <= sub.cursor || !visible(sub.role, user, &event.data) {
                continue;
            }
            if !self.deliver(project_id, event).await? {
                return Ok(());
            }
        }
        if let Some(s) = self.subscriptions.get_mut(&project_id) {
            s.cursor = s.cursor.max(batch.to_seq);
        }
        Ok(())
    }

    async fn on_presence(&mut self, note: &DevicePresence) -> Result<(), Closed> {
        if !self.subscriptions.contains_key(&note.project_id) {
            return Ok(());
        }
        self.send(&ServerMessage::Presence(note.clone())).await
    }

    async fn on_lag(&mut self) -> Result<(), Closed> {
        for project_id in self.lag.take() {
            if self.subscriptions.contains_key(&project_id) {
                self.replay(project_id).await?;
            }
        }
        Ok(())
    }

    /// The caller may not (or no longer) see the project.
    async fn refuse(&mut self, project_id: Uuid, e: DomainError) -> Result<(), Closed> {
        match e {
            DomainError::Rejected { code, message, .. } => {
                if self.subscriptions.contains_key(&project_id) {
                    self.end(project_id, "access_revoked", &message).await
                } else {
                    self.error(code, &message, Some(project_id)).await
                }
            }
            DomainError::Store(e) => {
                tracing::warn!(error = %crate::telemetry::error_chain(&e), "session read failed");
                self.error("internal_error", "something went wrong on our side", Some(project_id)).await
            }
        }
    }

    async fn end(&mut self, project_id: Uuid, code: &str, message: &str) -> Result<(), Closed> {
        self.subscriptions.remove(&project_id);
        self.rt.hub.unsubscribe(project_id, self.socket);
        self.error(code, message, Some(project_id)).await
    }
}
