//! The hub: per project, the seq this server has read up to and the sockets
//! subscribed. A wake-up reads the new rows once and hands every socket the
//! same batch; a socket whose queue is full is told it lagged instead, and
//! catches up from the log itself. A device's presence changing is read
//! once too, and handed to the sockets following its projects.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, Notify};
use uuid::Uuid;

use crate::domain::presence;
use crate::protocol::realtime::DevicePresence;
use crate::protocol::Event;
use crate::store::{self, Pool, RecordedEvent, StoreError};

/// Most events read per round trip.
const READ_BATCH: i64 = 1000;

/// Consecutive events of one project, `from_seq..=to_seq`, as read from the
/// log: every event of the range, visible to the socket or not, decoded
/// once for every socket.
#[derive(Debug)]
pub struct Batch {
    pub project_id: Uuid,
    pub from_seq: i64,
    pub to_seq: i64,
    pub events: Vec<Event>,
}

/// What the hub hands a socket.
#[derive(Debug, Clone)]
pub enum Push {
    Events(Arc<Batch>),
    /// Not in the log: a socket whose queue is full misses it (and reads
    /// the devices again when it reconnects).
    Presence(Arc<DevicePresence>),
}

/// How the hub tells a socket that it dropped batches for it.
#[derive(Default)]
pub struct Lag {
    projects: Mutex<HashSet<Uuid>>,
    pub notify: Notify,
}

impl Lag {
    fn mark(&self, project_id: Uuid) {
        self.projects.lock().expect("lag lock").insert(project_id);
        self.notify.notify_one();
    }

    /// The projects the socket lagged on since the last call.
    pub fn take(&self) -> Vec<Uuid> {
        self.projects.lock().expect("lag lock").drain().collect()
    }
}

struct Subscriber {
    outbox: mpsc::Sender<Push>,
    lag: Arc<Lag>,
}

struct Feed {
    /// Everything up to here has been handed to the subscribers.
    last_seq: i64,
    subscribers: HashMap<u64, Subscriber>,
    reading: bool,
    /// A wake-up came while reading: read once more.
    again: bool,
}

pub struct Hub {
    pool: Pool,
    feeds: Mutex<HashMap<Uuid, Feed>>,
    next_socket: AtomicU64,
}

impl Hub {
    pub fn new(pool: Pool) -> Arc<Self> {
        Arc::new(Self { pool, feeds: Mutex::new(HashMap::new()), next_socket: AtomicU64::new(1) })
    }

    pub fn next_socket_id(&self) -> u64 {
        self.next_socket.fetch_add(1, Ordering::Relaxed)
    }

    /// Adds a socket to a project's feed. `head` is a head the caller read
    /// before: a new feed starts there (the socket replays the rest itself).
    pub fn subscribe(&self, project_id: Uuid, socket: u64, head: i64, outbox: mpsc::Sender<Push>, lag: Arc<Lag>) {
        let mut feeds = self.feeds.lock().expect("hub lock");
        let feed = feeds.entry(project_id).or_insert_with(|| Feed {
            last_seq: head,
            subscribers: HashMap::new(),
            reading: false,
            again: false,
        });
        feed.subscribers.insert(socket, Subscriber { outbox, lag });
    }

    pub fn unsubscribe(&self, project_id: Uuid, socket: u64) {
        let mut feeds = self.feeds.lock().expect("hub lock");
        if let Some(feed) = feeds.get_mut(&project_id) {
            feed.subscribers.remove(&socket);
            if feed.subscribers.is_empty() && !feed.reading {
                feeds.remove(&project_id);
            }
        }
    }

    /// Something was committed in a project (up to `head`, when known).
    pub fn wake(self: &Arc<Self>, project_id: Uuid, head: Option<i64>) {
        let mut feeds = self.feeds.lock().expect("hub lock");
        let Some(feed) = feeds.get_mut(&project_id) else { return };
        if head.is_some_and(|h| h <= feed.last_seq) {
            return;
        }
        if feed.reading {
            feed.again = true;
            return;
        }
        feed.reading = true;
        tokio::spawn(self.clone().read(project_id));
    }

    /// Catch every feed up: after the listener reconnects, notifications
    /// may have been lost.
    pub fn wake_all(self: &Arc<Self>) {
        let projects: Vec<Uuid> = self.feeds.lock().expect("hub lock").keys().copied().collect();
        for project_id in projects {
            self.wake(project_id, None);
        }
    }

    /// Wakes the feeds whose project has moved past what they have read:
    /// those whose notification was lost (a commit's notifications are sent
    /// after it, see `store::transaction`, so its server may die in
    /// between, and a statement run on its own may leave its own pending).
    pub async fn catch_up(self: &Arc<Self>) -> Result<(), StoreError> {
        let projects: Vec<Uuid> = self.feeds.lock().expect("hub lock").keys().copied().collect();
        if projects.is_empty() {
            return Ok(());
        }
        let client = self.pool.get().await?;
        let stmt =
            client.prepare_cached("SELECT project_id, head_seq FROM project_heads WHERE project_id = ANY($1)").await?;
        for row in client.query(&stmt, &[&projects]).await? {
            self.wake(row.get(0), Some(row.get(1)));
        }
        Ok(())
    }

    /// [`Hub::catch_up`] every `interval`, for as long as the server runs.
    pub async fn catch_up_every(self: Arc<Self>, interval: Duration) {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if let Err(e) = self.catch_up().await {
                tracing::warn!(error = %crate::telemetry::error_chain(&e), "heads not read; trying again later");
            }
        }
    }

    /// A device's presence may have changed: reads it in the projects
    /// followed here, and hands it to their sockets.
    pub fn presence(self: &Arc<Self>, device_id: Uuid) {
        let projects: Vec<Uuid> = self.feeds.lock().expect("hub lock").keys().copied().collect();
        if projects.is_empty() {
            return;
        }
        let hub = self.clone();
        tokio::spawn(async move {
            let read = async {
                let client = hub.pool.get().await?;
                presence::in_projects(&client, device_id, &projects).await
            };
            let states = match read.await {
                Ok(states) => states,
                Err(e) => {
                    tracing::warn!(%device_id, error = %crate::telemetry::error_chain(&e), "presence not read");
                    return;
                }
            };
            let feeds = hub.feeds.lock().expect("hub lock");
            for state in states {
                let Some(feed) = feeds.get(&state.project_id) else { continue };
                let note = Arc::new(state);
                for subscriber in feed.subscribers.values() {
                    let _ = subscriber.outbox.try_send(Push::Presence(note.clone()));
                }
            }
        });
    }

    /// Reads the project's new events, once for every socket, and hands
    /// them out, until the log has no more.
    async fn read(self: Arc<Self>, project_id: Uuid) {
        loop {
            let Some(from) = self.feeds.lock().expect("hub lock").get(&project_id).map(|f| f.last_seq) else {
                return;
            };
            let events = match self.pool.get().await {
                Ok(client) => store::read_after(&client, project_id, from, READ_BATCH).await,
                Err(e) => Err(e.into()),
            }
            .and_then(|rows| rows.into_iter().map(RecordedEvent::into_event).collect::<Result<Vec<_>, _>>());
            let mut feeds = self.feeds.lock().expect("hub lock");
            let Some(feed) = feeds.get_mut(&project_id) else { return };
            let events = match events {
                Ok(events) => events,
                Err(e) => {
                    tracing::warn!(%project_id, error = %crate::telemetry::error_chain(&e), "hub read failed; retrying");
                    feed.reading = false;
                    drop(feeds);
                    let hub = self.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        hub.wake(project_id, None);
                    });
                    return;
                }
            };
            let full = events.len() as i64 == READ_BATCH;
            if let Some(last) = events.last() {
                let batch = Arc::new(Batch { project_id, from_seq: from + 1, to_seq: last.seq, events });
                feed.last_seq = batch.to_seq;
                crate::telemetry::WS_BATCHES.inc();
                for subscriber in feed.subscribers.values() {
                    if subscriber.outbox.try_send(Push::Events(batch.clone())).is_err() {
                        crate::telemetry::WS_LAGGED.inc();
                        subscriber.lag.mark(project_id);
                    }
                }
            }
            if full || feed.again {
                feed.again = false;
                continue;
            }
            feed.reading = false;
            if feed.subscribers.is_empty() {
                feeds.remove(&project_id);
            }
            return;
        }
    }
}
