//! `ferry transfers PROJECT`: the project's transfers as a table (or JSON);
//! at a terminal, then a live bar per open transfer, moved by the project's
//! events, until every one of them has ended (or Ctrl-C).

use std::collections::HashMap;
use std::io::IsTerminal;

use futures_util::StreamExt;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use uuid::Uuid;

use super::agent::stop_signal;
use super::api::{Api, Live};
use super::cli::{resolve_project, Session};
use super::output::{human_bytes, table, Output};
use super::ClientError;
use crate::protocol::transfers::{Transfer, TransferRoute, TransferStatus};
use crate::protocol::EventData;

/// Which transfers `ferry transfers` lists.
#[derive(Debug, Clone, Copy)]
pub enum Which {
    /// Open ones, and those asked for in the last day (the default).
    OpenAndRecent,
    All,
    Status(TransferStatus),
}

/// How far back "recent" reaches.
const RECENT: chrono::TimeDelta = chrono::TimeDelta::hours(24);

pub async fn transfers(session: &Session, out: Output, project: &str, which: Which) -> Result<(), ClientError> {
    let api = session.user()?;
    let project = resolve_project(&api, project).await?;
    // The head first: events after it may already show in the list, and
    // replaying them sets the same values again.
    let head = api.files_page(project, None, 1).await?.head_seq;
    let transfers = list(&api, project, which).await?;
    out.result(Listed { transfers: &transfers }, || listing(&transfers, which));
    let open: Vec<&Transfer> = transfers.iter().filter(|t| t.status.is_active()).collect();
    if out.json || open.is_empty() || !std::io::stdout().is_terminal() {
        return Ok(());
    }
    out.note(&format!("Following {} open transfer(s); Ctrl-C stops.", open.len()));
    let mut bars = Bars::new(&open);
    tokio::select! {
        result = follow(&api, project, head, &mut bars) => result,
        _ = stop_signal() => Ok(()),
    }
}

/// `--json`: `{"transfers": [...]}`.
#[derive(Serialize)]
struct Listed<'a> {
    transfers: &'a [Transfer],
}

/// The transfers asked for, newest first; for the default, pages are read
/// only as far back as "recent" reaches.
async fn list(api: &Api, project: Uuid, which: Which) -> Result<Vec<Transfer>, ClientError> {
    let status = match which {
        Which::Status(status) => Some(status),
        _ => None,
    };
    let since = chrono::Utc::now() - RECENT;
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = api.transfers_page(project, status, cursor.as_deref()).await?;
        let reached_old = page.transfers.last().is_some_and(|t| t.requested_at < since);
        all.extend(page.transfers);
        match page.next_cursor {
            Some(next) if !(matches!(which, Which::OpenAndRecent) && reached_old) => cursor = Some(next),
            _ => break,
        }
    }
    if matches!(which, Which::OpenAndRecent) {
        all.retain(|t| t.status.is_active() || t.requested_at >= since);
    }
    Ok(all)
}

/// Bytes a second, in the units the progress bars show.
fn speed(speed_mbps: Option<f64>) -> Option<String> {
    speed_mbps.map(|mbps| format!("{}/s", human_bytes((mbps * 1e6 / 8.0) as u64)))
}

fn listing(transfers: &[Transfer], which: Which) -> String {
    if transfers.is_empty() {
        return match which {
            Which::OpenAndRecent => "No open transfers, and none in the last day (--all lists every one).".into(),
            _ => "No transfers.".into(),
        };
    }
    let rows = transfers
        .iter()
        .map(|t| {
            vec![
                t.id.to_string(),
                t.file_path.clone(),
                t.status.as_str().into(),
                t.requested_at.format("%Y-%m-%d %H:%M").to_string(),
                format!("{:.0}%", t.percent_complete),
                format!(
                    "{}/{}",
                    human_bytes(t.bytes_transferred.max(0) as u64),
                    human_bytes(t.total_bytes.max(0) as u64)
                ),
                speed(t.speed_mbps).unwrap_or_default(),
                route(&t.route),
                t.attempts.to_string(),
                t.error_message.clone().unwrap_or_default(),
            ]
        })
        .collect::<Vec<_>>();
    table(&["id", "file", "status", "asked", "done", "bytes", "speed", "route", "attempts", "error"], &rows)
}

/// Which way a transfer's bytes went, in the bars' units: `direct 3.0 MiB
/// (https://10.0.0.2:7071)`, `relay 1.0 MiB`, and why direct was given up.
fn route(route: &TransferRoute) -> String {
    let mut parts = Vec::new();
    if route.bytes_direct > 0 || route.direct_endpoint.is_some() {
        let from = route.direct_endpoint.as_ref().map(|e| format!(" ({e})")).unwrap_or_default();
        parts.push(format!("direct {}{from}", human_bytes(route.bytes_direct.max(0) as u64)));
    }
    if route.bytes_relay > 0 {
        parts.push(format!("relay {}", human_bytes(route.bytes_relay as u64)));
    }
    if let Some(why) = &route.direct_abandoned {
        parts.push(format!("direct given up: {why}"));
    }
    parts.join(", ")
}

/// Follows the project's events until no followed transfer is open.
async fn follow(api: &Api, project: Uuid, after_seq: i64, bars: &mut Bars) -> Result<(), ClientError> {
    let mut live = api.live(project, after_seq);
    while bars.open() > 0 {
        match live.next().await {
            Some(Live::Event(event)) => bars.on_event(&event.data),
            Some(Live::Lost(Some(e))) => {
                bars.multi.suspend(|| eprintln!("warning: the live connection dropped ({e}); reconnecting"))
            }
            Some(Live::Lost(None) | Live::Subscribed | Live::Presence(_)) => {}
            None => break,
        }
    }
    Ok(())
}

/// A bar per followed transfer, while it is open.
struct Bars {
    multi: MultiProgress,
    bars: HashMap<Uuid, ProgressBar>,
}

impl Bars {
    fn new(open: &[&Transfer]) -> Self {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stdout());
        let style = ProgressStyle::with_template("{msg:40!} [{bar:30}] {bytes}/{total_bytes} {prefix}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        let bars = open
            .iter()
            .map(|t| {
                let bar = multi.add(ProgressBar::new(t.total_bytes.max(0) as u64).with_style(style.clone()));
                bar.set_message(t.file_path.clone());
                bar.set_position(t.bytes_transferred.max(0) as u64);
                bar.set_prefix(status_text(t.status, t.speed_mbps));
                (t.id, bar)
            })
            .collect();
        Self { multi, bars }
    }

    fn open(&self) -> usize {
        self.bars.len()
    }

    fn on_event(&mut self, event: &EventData) {
        // A transfer's own events, after the request that started it.
        let Some(state) = event.transfer_state().filter(|_| !matches!(event, EventData::TransferRequested(_))) else {
            return;
        };
        let Some(bar) = self.bars.get(&state.transfer_id) else { return };
        bar.set_length(state.total_bytes.max(0) as u64);
        bar.set_position(state.bytes_transferred.max(0) as u64);
        bar.set_prefix(status_text(state.status, state.speed_mbps));
        if !state.status.is_active() {
            let why = state.error_message.as_ref().map(|m| format!(" ({m})")).unwrap_or_default();
            bar.finish_and_clear();
            let _ = self.multi.println(format!("{} {}{why}", state.status.as_str(), state.file_path));
            self.bars.remove(&state.transfer_id);
        }
    }
}

fn status_text(status: TransferStatus, speed_mbps: Option<f64>) -> String {
    match speed(speed_mbps) {
        Some(speed) => format!("{} {speed}", status.as_str()),
        None => status.as_str().to_owned(),
    }
}
