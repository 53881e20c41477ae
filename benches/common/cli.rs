//! The `ferry` binary as a person runs it, for the benches that drive the
//! real client (on the test support's [`cli`](super::support::cli)): one
//! person's config folder, and an agent in the background.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use uuid::Uuid;

use super::support::cli::{self, Background};
use super::support::PASSWORD;
use super::BoxError;

/// Longest run of one `ferry` command (a pull of a large file included).
const COMMAND_WITHIN: Duration = Duration::from_secs(1800);
/// Longest wait for the agent to say something, or to be seen online.
const AGENT_WITHIN: Duration = Duration::from_secs(600);

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

    /// `ferry ARGS` as this person runs it.
    fn ferry(&self, args: &[&str]) -> std::process::Command {
        let mut cmd = cli::ferry(&self.config, &self.server, args);
        for (key, value) in &self.env {
            cmd.env(key, value);
        }
        cmd
    }

    pub fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::from(self.ferry(args));
        cmd.kill_on_drop(true);
        cmd
    }

    /// Runs `ferry ARGS --json` to its end; answers its last stdout line.
    pub async fn json(&self, args: &[&str]) -> Result<Value, BoxError> {
        let mut all = args.to_vec();
        all.push("--json");
        let output = cli::run(self.ferry(&all), COMMAND_WITHIN).await?;
        if !output.status.success() {
            return Err(format!("`ferry {}` failed:\n{}", all.join(" "), cli::describe(&output)).into());
        }
        Ok(cli::last_json(&output)?)
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

/// `ferry share` running in the background; killed when dropped.
pub struct Agent(Background);

impl Agent {
    /// `ferry share PROJECT DIR --json EXTRA...`.
    pub fn start(owner: &Person, project: &str, dir: &Path, extra: &[&str]) -> Result<Self, BoxError> {
        let mut args = vec!["share", project, path_str(dir)?, "--json"];
        args.extend_from_slice(extra);
        Ok(Self(Background::spawn(owner.ferry(&args), false)?))
    }

    /// The agent's process id.
    pub fn pid(&self) -> u32 {
        self.0.pid()
    }

    /// The next JSON line that satisfies `want`.
    pub async fn wait_for(&mut self, what: &str, want: impl Fn(&Value) -> bool) -> Result<Value, BoxError> {
        self.wait_for_within(what, AGENT_WITHIN, want).await
    }

    /// The next JSON line that satisfies `want`, within `within`.
    pub async fn wait_for_within(
        &mut self,
        what: &str,
        within: Duration,
        want: impl Fn(&Value) -> bool,
    ) -> Result<Value, BoxError> {
        Ok(self.0.wait_for_at(what, within, want).await?.1)
    }

    /// The next JSON line that satisfies `want`, and when it was printed.
    pub async fn wait_for_at(
        &mut self,
        what: &str,
        want: impl Fn(&Value) -> bool,
    ) -> Result<(Instant, Value), BoxError> {
        Ok(self.0.wait_for_at(what, AGENT_WITHIN, want).await?)
    }

    /// SIGTERM, as Ctrl-C would (it withdraws its direct endpoints), and wait.
    pub async fn stop(self) -> Result<(), BoxError> {
        Ok(self.0.stop().await?)
    }
}
