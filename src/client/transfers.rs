//! `ferry transfers PROJECT`: the project's transfers as a table (or JSON);
//! at a terminal, then a live bar per open transfer, moved by the project's
//! events, until every one of them has ended (or Ctrl-C).

use std::collections::HashMap;
use std::io::IsTerminal;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Value};
use uuid::Uuid;

use super::agent::stop_signal;
use super::api::{Api, Flow};
use super::cli::{resolve_project, Session};
use super::output::{human_bytes, table, Output};
use super::ClientError;
use crate::protocol::events::data::TransferState;
use crate::protocol::transfers::{Transfer, TransferStatus};

pub async fn transfers(session: &Session, out: Output, project: &str) -> Result<(), ClientError> {
    let api = session.user()?;
    let project = resolve_project(&api, project).await?;
    // The head first: events after it may already show in the list, and
    // replaying them sets the same values again.
    let head = api.files_page(project, None, 1).await?.head_seq;
    let transfers = api.all_transfers(project).await?;
    out.result(json!({"transfers": transfers}), || listing(&transfers));
    let open: Vec<&Transfer> = transfers.iter().filter(|t| t.status.is_active()).collect();
    if out.json || open.is_empty() || !std::io::stdout().is_terminal() {
        return Ok(());
    }
    out.note(&format!("Following {} open transfer(s); Ctrl-C stops.", open.len()));
    let mut live = Live::new(&open);
    tokio::select! {
        result = follow(&api, project, head, &mut live) => result,
        _ = stop_signal() => Ok(()),
    }
}

fn listing(transfers: &[Transfer]) -> String {
    if transfers.is_empty() {
        return "No transfers.".into();
    }
    let rows = transfers
        .iter()
        .map(|t| {
            vec![
                t.id.to_string(),
                t.file_path.clone(),
                t.status.as_str().into(),
                format!("{:.0}%", t.percent_complete),
                format!(
                    "{}/{}",
                    human_bytes(t.bytes_transferred.max(0) as u64),
                    human_bytes(t.total_bytes.max(0) as u64)
                ),
                t.speed_mbps.map(|s| format!("{s:.1} Mbit/s")).unwrap_or_default(),
                t.attempts.to_string(),
                t.error_message.clone().unwrap_or_default(),
            ]
        })
        .collect::<Vec<_>>();
    table(&["id", "file", "status", "done", "bytes", "speed", "attempts", "error"], &rows)
}

/// Follows the project's events until no followed transfer is open,
/// reconnecting when the connection drops.
async fn follow(api: &Api, project: Uuid, mut after_seq: i64, live: &mut Live) -> Result<(), ClientError> {
    let mut backoff = std::time::Duration::from_millis(500);
    loop {
        let from = after_seq;
        let result = api
            .follow(project, from, |message| {
                if let Some(seq) = message["seq"].as_i64() {
                    after_seq = after_seq.max(seq);
                }
                live.on_event(&message);
                Ok(if live.open() == 0 { Flow::Stop } else { Flow::Continue })
            })
            .await;
        if live.open() == 0 {
            return Ok(());
        }
        if let Err(e) = result {
            live.multi.suspend(|| eprintln!("warning: the live connection dropped ({e}); reconnecting"));
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(std::time::Duration::from_secs(15));
    }
}

/// A bar per followed transfer, while it is open.
struct Live {
    multi: MultiProgress,
    bars: HashMap<Uuid, ProgressBar>,
}

impl Live {
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

    fn on_event(&mut self, message: &Value) {
        if !message["type"].as_str().is_some_and(|t| t.starts_with("file_transfer_") || t == "transfer_retried") {
            return;
        }
        let Ok(state) = serde_json::from_value::<TransferState>(message["data"].clone()) else { return };
        let Some(bar) = self.bars.get(&state.transfer_id) else { return };
        bar.set_length(state.total_bytes.max(0) as u64);
        bar.set_position(state.bytes_transferred.max(0) as u64);
        bar.set_prefix(status_text(state.status, state.speed_mbps));
        if !state.status.is_active() {
            let why = state.error_message.map(|m| format!(" ({m})")).unwrap_or_default();
            bar.finish_and_clear();
            let _ = self.multi.println(format!("{} {}{why}", state.status.as_str(), state.file_path));
            self.bars.remove(&state.transfer_id);
        }
    }
}

fn status_text(status: TransferStatus, speed_mbps: Option<f64>) -> String {
    match speed_mbps {
        Some(speed) => format!("{} {speed:.1} Mbit/s", status.as_str()),
        None => status.as_str().to_owned(),
    }
}
