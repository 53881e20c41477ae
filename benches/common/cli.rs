//! The `ferry` binary as a person runs it, for the benches that drive the
//! real client: one person's config folder, and an agent in the background.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::AsyncBufReadExt;
use uuid::Uuid;

use super::BoxError;

/// Longest run of one `ferry` command (a pull of a large file included).
const COMMAND_WITHIN: Duration = Duration::from_secs(1800);
/// Longest wait for the agent to say something, or to be seen online.
const AGENT_WITHIN: Duration = Duration::from_secs(600);
const PASSWORD: &str = "correct horse battery";

pub fn path_str(path: &Path) -> Result<&str, BoxError> {
    path.to_str().ok_or_else(|| format!("{} is not UTF-8", path.display()).into())
}

/// One person on one machine: a config folder and the server.
pub struct Person {
    config: PathBuf,
    server: String,
    name: String,
    /// Extra environment of its commands.
    env: Vec<(&'static str, &'static str)>,
}

impl Person {
    pub fn new(root: &Path, name: &str, server: &str) -> std::io::Result<Self> {
        let config = root.join(format!("config-{name}"));
        std::fs::create_dir_all(&config)?;
        Ok(Self { config, server: server.to_owned(), name: name.to_owned(), env: Vec::new() })
    }

    /// Its commands from now on run with `key=value` in their environment
    /// (or without `key` when `value` is None).
    pub fn set_env(&mut self, key: &'static str, value: Option<&'static str>) {
        self.env.retain(|(k, _)| *k != key);
        self.env.extend(value.map(|v| (key, v)));
    }

    pub fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_ferry"));
        cmd.args(args)
            .env("FERRY_CONFIG_DIR", &self.config)
            .env("FERRY_SERVER", &self.server)
            .env_remove("FERRY_PASSWORD")
            .env_remove("FERRY_LISTEN")
            .envs(self.env.iter().copied())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    /// Runs `ferry ARGS --json` to its end; answers its last stdout line.
    pub async fn json(&self, args: &[&str]) -> Result<Value, BoxError> {
        let mut all = args.to_vec();
        all.push("--json");
        let output = match tokio::time::timeout(COMMAND_WITHIN, self.command(&all).output()).await {
            Ok(output) => output?,
            Err(_) => return Err(format!("`ferry {}` still running after {COMMAND_WITHIN:?}", all.join(" ")).into()),
        };
        let stdout = String::from_utf8_lossy(&output.stdout);
        let last = stdout.lines().last().and_then(|l| serde_json::from_str::<Value>(l).ok());
        match last {
            Some(v) if output.status.success() => Ok(v),
            _ => Err(format!(
                "`ferry {}` failed ({}):\nstdout:\n{stdout}\nstderr:\n{}",
                all.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stderr)
            )
            .into()),
        }
    }

    pub async fn signup(&self) -> Result<(), BoxError> {
        let email = format!("{}-{}@example.org", self.name, Uuid::new_v4().simple());
        self.json(&["signup", "--email", &email, "--password", PASSWORD]).await?;
        Ok(())
    }

    /// `ferry pull PROJECT --to DIR --json`, timed from spawn to exit.
    pub async fn pull(&self, project: &str, to: &Path) -> Result<(Value, Duration), BoxError> {
        let started = Instant::now();
        let result = self.json(&["pull", project, "--to", path_str(to)?]).await?;
        Ok((result, started.elapsed()))
    }

    /// Waits until the project's source device is (or is no longer) online.
    pub async fn wait_online(&self, project: &str, online: bool) -> Result<(), BoxError> {
        let deadline = Instant::now() + AGENT_WITHIN;
        loop {
            let devices = self.json(&["devices", project]).await?;
            let any = devices["devices"].as_array().is_some_and(|d| d.iter().any(|d| d["online"] == true));
            if any == online {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the agent's device is still {}: {devices}",
                    if any { "online" } else { "offline" }
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// `ferry share` running in the background,
/// its stdout lines collected, its stderr in a log file; killed when dropped.
pub struct Agent {
    child: tokio::process::Child,
    /// Each stdout line with when it came.
    lines: tokio::sync::mpsc::UnboundedReceiver<(Instant, String)>,
    log: PathBuf,
}

impl Agent {
    /// `ferry share PROJECT DIR --json EXTRA...`, its stderr in `log`.
    pub fn start(owner: &Person, project: &str, dir: &Path, extra: &[&str], log: PathBuf) -> Result<Self, BoxError> {
        let mut args = vec!["share", project, path_str(dir)?, "--json"];
        args.extend_from_slice(extra);
        let mut child = owner.command(&args).stdout(Stdio::piped()).stderr(std::fs::File::create(&log)?).spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = tokio::io::BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        Ok(Self { child, lines, log })
    }

    /// The agent's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// The next JSON line that satisfies `want`.
    pub async fn wait_for(&mut self, what: &str, want: impl Fn(&Value) -> bool) -> Result<Value, BoxError> {
        Ok(self.wait_for_at(what, want).await?.1)
    }

    /// The next JSON line that satisfies `want`, and when it was printed.
    pub async fn wait_for_at(
        &mut self,
        what: &str,
        want: impl Fn(&Value) -> bool,
    ) -> Result<(Instant, Value), BoxError> {
        let deadline = tokio::time::Instant::now() + AGENT_WITHIN;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some((at, line))) => {
                    if let Ok(value) = serde_json::from_str::<Value>(&line) {
                        if want(&value) {
                            return Ok((at, value));
                        }
                    }
                }
                Ok(None) => return Err(format!("the agent ended before {what}: {}", self.tail()).into()),
                Err(_) => {
                    return Err(format!("no {what} from the agent within {AGENT_WITHIN:?}: {}", self.tail()).into())
                }
            }
        }
    }

    pub fn tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        format!("stderr:\n{}", lines[lines.len().saturating_sub(20)..].join("\n"))
    }

    /// SIGTERM, as Ctrl-C would (it withdraws its direct endpoints), and wait.
    pub async fn stop(mut self) -> Result<(), BoxError> {
        if let Some(pid) = self.child.id() {
            // SAFETY: signalling our own child, which has not been reaped.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        }
        match tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await {
            Ok(status) => {
                status?;
                Ok(())
            }
            Err(_) => Err(format!("the agent did not stop within 30 s of SIGTERM: {}", self.tail()).into()),
        }
    }
}
