//! The real `ferry` binary as a person runs it, for the tests and the
//! benches: a command with one person's config folder, a run to its end
//! within a bound, and a command running in the background whose stdout
//! lines are read as they come.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::BoxError;

/// `ferry ARGS` as the person whose config folder is `config` runs it
/// against `server`: no password or listen address from the environment,
/// nothing on stdin.
pub fn ferry(config: &Path, server: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferry"));
    cmd.args(args)
        .env("FERRY_CONFIG_DIR", config)
        .env("FERRY_SERVER", server)
        .env_remove("FERRY_PASSWORD")
        .env_remove("FERRY_LISTEN")
        .stdin(Stdio::null());
    cmd
}

/// Runs `cmd` to its end; an error when it is still running after `within`
/// (it is killed).
pub async fn run(cmd: Command, within: Duration) -> Result<Output, BoxError> {
    let shown = format!("{cmd:?}");
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(true);
    match tokio::time::timeout(within, cmd.output()).await {
        Ok(output) => Ok(output?),
        Err(_) => Err(format!("{shown} still running after {within:?}").into()),
    }
}

/// What a finished command printed, for a failure message.
pub fn describe(output: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The last stdout line of a `--json` run: its result, or its error.
pub fn last_json(output: &Output) -> Result<Value, String> {
    let stdout = String::from_utf8_lossy(&output.stdout);
    match stdout.lines().last().map(serde_json::from_str::<Value>) {
        Some(Ok(value)) => Ok(value),
        _ => Err(format!("the last line is not JSON:\n{}", describe(output))),
    }
}

/// A `ferry` command running in the background (`share`, `sync`, a pull):
/// its stdout lines collected as they come, with when; its stderr kept (and
/// passed on to this process's own when `echo`). Killed when dropped.
pub struct Background {
    pub child: Child,
    lines: mpsc::Receiver<(Instant, String)>,
    /// Every stdout line taken in so far.
    pub seen: Vec<String>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Background {
    pub fn spawn(mut cmd: Command, echo: bool) -> std::io::Result<Self> {
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        let stderr = child.stderr.take().expect("stderr is piped");
        let kept = Arc::new(Mutex::new(Vec::new()));
        let keeping = kept.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if echo {
                    eprintln!("{line}");
                }
                keeping.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
        Ok(Self { child, lines, seen: Vec::new(), stderr: kept })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What it printed on stderr so far.
    pub fn stderr(&self) -> Vec<String> {
        self.stderr.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The next JSON line that satisfies `want`, and when it was printed;
    /// an error naming `what` when none does within `within`.
    pub async fn wait_for_at(
        &mut self,
        what: &str,
        within: Duration,
        want: impl Fn(&Value) -> bool,
    ) -> Result<(Instant, Value), String> {
        let deadline = Instant::now() + within;
        loop {
            match self.lines.try_recv() {
                Ok((at, line)) => {
                    self.seen.push(line.clone());
                    if let Ok(value) = serde_json::from_str::<Value>(&line) {
                        if want(&value) {
                            return Ok((at, value));
                        }
                    }
                }
                Err(mpsc::TryRecvError::Empty) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => {
                    let why = if e == mpsc::TryRecvError::Empty {
                        format!("within {within:?}")
                    } else {
                        "before it ended".into()
                    };
                    return Err(format!(
                        "ferry never reported {what} {why}; it printed:\n{}\nstderr:\n{}",
                        self.seen.join("\n"),
                        self.stderr().join("\n")
                    ));
                }
            }
        }
    }

    /// Takes in what was printed so far.
    pub fn drain(&mut self) {
        while let Ok((_, line)) = self.lines.try_recv() {
            self.seen.push(line);
        }
    }

    /// Every JSON line printed so far.
    pub fn events(&mut self) -> Vec<Value> {
        self.drain();
        self.seen.iter().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }

    /// SIGTERM, as Ctrl-C would, and waits up to 30 s for it to end.
    pub async fn stop(mut self) -> Result<(), String> {
        // SAFETY: signalling our own child, which has not been reaped.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!("it did not stop within 30 s of SIGTERM; stderr:\n{}", self.stderr().join("\n")))
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A command run at a terminal (`script` gives it one, as a person's shell
/// would), what it printed (escapes included) read as it comes. Killed when
/// dropped.
pub struct AtTerminal {
    pub child: Child,
    printed: Arc<Mutex<String>>,
}

impl AtTerminal {
    pub fn spawn(cmd: &Command) -> std::io::Result<Self> {
        let quoted = |s: &std::ffi::OsStr| format!("'{}'", s.to_string_lossy().replace('\'', r"'\''"));
        let line = std::iter::once(cmd.get_program()).chain(cmd.get_args()).map(quoted).collect::<Vec<_>>().join(" ");
        let mut terminal = Command::new("script");
        terminal.args(["-qfec", &line, "/dev/null"]).stdin(Stdio::null()).stdout(Stdio::piped());
        for (key, value) in cmd.get_envs() {
            match value {
                Some(v) => terminal.env(key, v),
                None => terminal.env_remove(key),
            };
        }
        let mut child = terminal.spawn()?;
        let mut stdout = child.stdout.take().expect("stdout is piped");
        let printed = Arc::new(Mutex::new(String::new()));
        let sink = printed.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = std::io::Read::read(&mut stdout, &mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap_or_else(|e| e.into_inner()).push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Ok(Self { child, printed })
    }

    /// Everything printed so far.
    pub fn printed(&self) -> String {
        self.printed.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits until `what` was printed; an error when it is not within `within`.
    pub async fn wait_for(&self, what: &str, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        while !self.printed().contains(what) {
            if Instant::now() >= deadline {
                return Err(format!("never printed {what:?}:\n{}", self.printed()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }
}

impl Drop for AtTerminal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
