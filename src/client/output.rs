//! What a command prints: sentences, tables and progress bars for people;
//! with `--json`, one JSON object as the last line of stdout and no bars.

use std::io::IsTerminal;
use std::sync::OnceLock;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

#[derive(Debug, Clone, Copy)]
pub struct Output {
    pub json: bool,
}

impl Output {
    pub fn new(json: bool) -> Self {
        Self { json }
    }

    /// The command's result: `value` with `--json`, else `human`.
    pub fn result(&self, value: impl Serialize, human: impl FnOnce() -> String) {
        if self.json {
            println!("{}", json_line(value));
        } else {
            let text = human();
            if !text.is_empty() {
                println!("{text}");
            }
        }
    }

    /// A line of news from a long-running command: a JSON line on stdout
    /// with `--json`, a sentence on stderr otherwise.
    pub fn event(&self, value: impl Serialize, human: impl FnOnce() -> String) {
        if self.json {
            println!("{}", json_line(value));
        } else {
            say(&human());
        }
    }

    /// A remark for people (on stderr, never in the way of `--json`).
    pub fn note(&self, text: &str) {
        if !self.json {
            say(text);
        }
    }

    pub fn warn(&self, text: &str) {
        say(&format!("warning: {text}"));
    }

    /// A byte progress bar on stderr, for people at a terminal only.
    pub fn bytes_bar(&self, message: &str) -> ProgressBar {
        if self.json || !std::io::stderr().is_terminal() {
            return ProgressBar::hidden();
        }
        let bar = bars().add(ProgressBar::new(0));
        bar.set_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_message(message.to_owned());
        bar
    }
}

/// Every bar of the process, drawn together below the lines printed
/// meanwhile: transfers served at once do not draw over each other, and a
/// finished bar leaves nothing behind but the line that reports it.
fn bars() -> &'static MultiProgress {
    static BARS: OnceLock<MultiProgress> = OnceLock::new();
    BARS.get_or_init(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()))
}

/// A line on stderr, above whatever bars are running.
fn say(line: &str) {
    bars().suspend(|| eprintln!("{line}"));
}

/// One `--json` line: the object's keys in order, as scripts have always
/// read them.
pub fn json_line(value: impl Serialize) -> String {
    serde_json::to_value(value).expect("output serializes to JSON").to_string()
}

/// A plain table: a header and rows, columns padded to fit.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells.iter().enumerate().map(|(i, c)| format!("{c:<w$}", w = widths[i])).collect();
        padded.join("  ").trim_end().to_owned()
    };
    let mut out = vec![line(header.iter().map(|h| h.to_uppercase()).collect())];
    out.extend(rows.iter().map(|r| line(r.clone())));
    out.join("\n")
}

/// 1536 → "1.5 KiB".
pub fn human_bytes(n: u64) -> String {
    indicatif::BinaryBytes(n).to_string()
}
