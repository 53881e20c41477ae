//! This pull's transfers as the project's live stream tells them: how each
//! attempt ended (failed, cancelled, expired), and whether the devices that
//! send them are online, so a fetch waiting for a chunk looks here instead
//! of asking the server again and again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use futures_util::StreamExt;
use tokio::sync::futures::Notified;
use tokio::sync::Notify;
use uuid::Uuid;

use super::super::api::{AbortOnDrop, Api, Live};
use super::lock;
use crate::protocol::events::data::TransferState;
use crate::protocol::membership::ProjectDevice;
use crate::protocol::transfers::TransferStatus;

/// How an attempt of a transfer ended, as its event says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Ended {
    /// Worth a retry through the API: the reason.
    Failed(String),
    /// Cancelled or expired: nothing more will come.
    Over(String),
}

/// The latest state the stream told of a transfer.
#[derive(Debug, Clone)]
struct Told {
    attempts: i32,
    ended: Option<Ended>,
}

#[derive(Debug, Default)]
struct Known {
    told: HashMap<Uuid, Told>,
    asked: HashMap<Uuid, Asked>,
    /// The project's devices: read whole at each (re)subscription, then
    /// kept by the presence the stream tells.
    devices: HashMap<Uuid, ProjectDevice>,
}

/// A transfer this pull asked for.
#[derive(Debug, Clone, Copy)]
struct Asked {
    /// The owner's device that is to send it.
    source: Uuid,
    /// The attempt this pull is on: an end told of an earlier one (its
    /// event may come after the retry) is past.
    attempt: i32,
}

pub(super) struct Tracked {
    api: Api,
    project: Uuid,
    after_seq: i64,
    known: Arc<Mutex<Known>>,
    /// Wakes whoever waits on what the stream tells (transfers, presence).
    told: Arc<Notify>,
    /// Started when the first transfer is asked for: a pull with nothing
    /// to fetch opens no socket.
    follow: OnceLock<AbortOnDrop>,
}

impl Tracked {
    /// Will follow the project's events after `after_seq`: a head read
    /// before any of this pull's transfers was asked for, so none of their
    /// events is missed.
    pub(super) fn new(api: &Api, project: Uuid, after_seq: i64) -> Self {
        Self {
            api: api.clone(),
            project,
            after_seq,
            known: Arc::default(),
            told: Arc::default(),
            follow: OnceLock::new(),
        }
    }

    fn follow(&self) {
        self.follow.get_or_init(|| {
            let (api, project) = (self.api.clone(), self.project);
            let mut live = api.live(project, self.after_seq);
            let (known, told) = (self.known.clone(), self.told.clone());
            AbortOnDrop(tokio::spawn(async move {
                while let Some(item) = live.next().await {
                    match item {
                        // Presence is not replayed: what changed while the
                        // stream was away is read whole.
                        Live::Subscribed => {
                            if let Ok(read) = api.project_devices(project).await {
                                lock(&known).devices = read.devices.into_iter().map(|d| (d.device_id, d)).collect();
                            }
                        }
                        Live::Presence(p) => {
                            if let Some(device) = lock(&known).devices.get_mut(&p.device_id) {
                                (device.online, device.last_seen_at) = (p.online, p.last_seen_at);
                            }
                        }
                        Live::Event(event) => {
                            let Some(state) = event.data.transfer_state() else { continue };
                            lock(&known).told.insert(state.transfer_id, told_of(state));
                        }
                        Live::Lost(_) => continue,
                    }
                    told.notify_waiters();
                }
            }))
        });
    }

    /// This pull asked for `transfer`, to be sent by the device `source`.
    pub(super) fn asked(&self, transfer: Uuid, source: Uuid) {
        lock(&self.known).asked.insert(transfer, Asked { source, attempt: 1 });
        self.follow();
    }

    /// This pull is on `attempt` of `transfer` now, after a retry.
    pub(super) fn retried(&self, transfer: Uuid, attempt: i32) {
        if let Some(asked) = lock(&self.known).asked.get_mut(&transfer) {
            asked.attempt = attempt;
        }
    }

    /// The device that is to send `transfer`, as last told (once the
    /// stream has said).
    pub(super) fn source(&self, transfer: Uuid) -> Option<ProjectDevice> {
        let known = lock(&self.known);
        let source = known.asked.get(&transfer)?.source;
        known.devices.get(&source).cloned()
    }

    /// How the attempt this pull is on ended, if it did (as far as the
    /// stream has told).
    pub(super) fn ended(&self, transfer: Uuid) -> Option<Ended> {
        let known = lock(&self.known);
        let told = known.told.get(&transfer)?;
        let current = known.asked.get(&transfer).map_or(1, |a| a.attempt);
        if told.attempts < current {
            return None;
        }
        told.ended.clone()
    }

    /// Wakes when the stream next tells something of a transfer or of a
    /// device's presence.
    pub(super) fn told(&self) -> Notified<'_> {
        self.told.notified()
    }
}

/// What a transfer event tells of the attempt it is about.
fn told_of(state: &TransferState) -> Told {
    let why = || state.error_message.clone().unwrap_or_else(|| state.status.as_str().to_owned());
    let ended = match state.status {
        TransferStatus::Failed => Some(Ended::Failed(why())),
        TransferStatus::Cancelled | TransferStatus::Expired => Some(Ended::Over(format!("the transfer was {}", why()))),
        _ => None,
    };
    Told { attempts: state.attempts, ended }
}
