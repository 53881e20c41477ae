//! The commands of `ferry`: the clap definitions and what each one does.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use serde_json::json;
use uuid::Uuid;

use super::api::Api;
use super::config::{config_dir, Config};
use super::output::{human_bytes, table, Output};
use super::ClientError;
use crate::protocol::accounts::{LoginRequest, SignupRequest};
use crate::protocol::membership::CreateInviteRequest;

#[derive(Debug, Parser)]
#[command(name = "ferry", version, about = "Share a project's files from the owner's machine with its members")]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// The Ferry server (default: the last one logged in to, else http://127.0.0.1:7070).
    #[arg(long, global = true, env = "FERRY_SERVER")]
    pub server: Option<String>,
    /// Print one JSON object as the last line of stdout (for scripts).
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create an account and log in.
    Signup {
        #[arg(long)]
        email: String,
        #[arg(long, env = "FERRY_PASSWORD", hide_env_values = true)]
        password: String,
        #[arg(long)]
        display_name: Option<String>,
    },
    /// Log in and keep the token.
    Login {
        #[arg(long)]
        email: String,
        #[arg(long, env = "FERRY_PASSWORD", hide_env_values = true)]
        password: String,
    },
    /// End the session: the token stops working.
    Logout,
    /// Create or list projects.
    #[command(subcommand)]
    Project(ProjectCommand),
    /// Invite people to a project (owner).
    #[command(subcommand)]
    Invite(InviteCommand),
    /// Join a project with an invite token.
    Join { token: String },
    /// List a project's members.
    Members { project: String },
    /// List your devices, or with PROJECT the devices attached to it.
    Devices { project: Option<String> },
    /// Owner: share DIR as PROJECT from this machine, then watch it and
    /// serve transfer requests until stopped.
    Share {
        project: String,
        dir: PathBuf,
        /// Scan, push the changes and exit.
        #[arg(long)]
        once: bool,
        /// Where to listen for members fetching directly from this machine.
        #[arg(long, env = "FERRY_LISTEN", default_value = "0.0.0.0:0")]
        listen: std::net::SocketAddr,
        /// A URL members reach the listener at (repeatable; default: this
        /// machine's address towards the server, on the listener's port).
        #[arg(long, value_name = "URL")]
        advertise: Vec<String>,
        /// Serve through the relay only (no listener, whatever --listen says).
        #[arg(long)]
        no_direct: bool,
    },
    /// List the project's files (all, or those under PREFIX).
    Ls { project: String, prefix: Option<String> },
    /// Member: download files (all, or the PATHs: files or folders) into
    /// DIR, fetching only the chunks DIR lacks; resumes an interrupted pull.
    Pull {
        project: String,
        paths: Vec<String>,
        #[arg(long)]
        to: PathBuf,
        /// Longest wait, in seconds, for the owner's machine to provide a chunk.
        #[arg(long, default_value_t = 600)]
        wait: u64,
    },
    /// Member: pull everything into DIR, then follow the project live and
    /// keep DIR current (adds, edits, deletes, moves) until stopped.
    Sync {
        project: String,
        dir: PathBuf,
        /// Longest wait, in seconds, for the owner's machine to provide a chunk.
        #[arg(long, default_value_t = 600)]
        wait: u64,
    },
    /// List the project's transfers and their progress; at a terminal, then
    /// follow the open ones live until they end.
    Transfers { project: String },
}

#[derive(Debug, Subcommand)]
pub enum ProjectCommand {
    /// Create a project; you become its owner.
    Create { name: String },
    /// List your projects.
    List,
}

#[derive(Debug, Subcommand)]
pub enum InviteCommand {
    /// Create an invite and print its token (shown only once).
    Create {
        project: String,
        #[arg(long)]
        max_uses: Option<i64>,
        /// Seconds until it expires (default: 7 days).
        #[arg(long = "expires-in")]
        expires_in: Option<i64>,
    },
    /// List a project's invites.
    List { project: String },
    /// Revoke an invite.
    Revoke { project: String, invite_id: Uuid },
}

/// Runs a command line; prints errors and answers the exit code.
pub fn run(cli: Cli) -> ExitCode {
    let out = Output::new(cli.global.json);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(execute(cli, out)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            if out.json {
                println!("{}", json!({"error": {"code": e.code(), "message": e.to_string()}}));
            }
            ExitCode::FAILURE
        }
    }
}

/// The config, its folder, and the server this command talks to.
pub struct Session {
    pub dir: PathBuf,
    pub config: Config,
    pub server: String,
}

impl Session {
    pub fn open(server: Option<&str>) -> Result<Self, ClientError> {
        let dir = config_dir()?;
        let config = Config::load(&dir)?;
        let server = config.resolve_server(server);
        Ok(Self { dir, config, server })
    }

    pub fn anonymous(&self) -> Api {
        Api::new(&self.server, None)
    }

    /// A client with the user's token.
    pub fn user(&self) -> Result<Api, ClientError> {
        let token = self.config.profile(&self.server).and_then(|p| p.token.clone());
        match token {
            Some(token) => Ok(Api::new(&self.server, Some(token))),
            None => Err(ClientError::NotLoggedIn(self.server.clone())),
        }
    }

    pub fn save(&self) -> Result<(), ClientError> {
        self.config.save(&self.dir)
    }
}

/// A project named by id, or by its exact name among the caller's projects.
pub async fn resolve_project(api: &Api, reference: &str) -> Result<Uuid, ClientError> {
    if let Ok(id) = reference.parse::<Uuid>() {
        return Ok(id);
    }
    let projects = api.projects().await?.projects;
    let matching: Vec<_> = projects.iter().filter(|p| p.name == reference).collect();
    match matching.as_slice() {
        [one] => Ok(one.id),
        [] => Err(ClientError::Usage(format!("no project of yours is named {reference:?} (give its name or id)"))),
        _ => Err(ClientError::Usage(format!("several of your projects are named {reference:?}: give its id"))),
    }
}

async fn execute(cli: Cli, out: Output) -> Result<(), ClientError> {
    let mut session = Session::open(cli.global.server.as_deref())?;
    match cli.command {
        Command::Signup { email, password, display_name } => {
            let auth =
                session.anonymous().signup(&SignupRequest { email, password, display_name, session: None }).await?;
            remember_login(&mut session, &auth)?;
            out.result(json!({"user_id": auth.user.id}), || {
                format!("Signed up and logged in as {} on {}.", auth.user.email, session.server)
            });
        }
        Command::Login { email, password } => {
            let auth = session.anonymous().login(&LoginRequest { email, password, session: None }).await?;
            remember_login(&mut session, &auth)?;
            out.result(json!({"user_id": auth.user.id}), || {
                format!("Logged in as {} on {}.", auth.user.email, session.server)
            });
        }
        Command::Logout => {
            let api = session.user()?;
            match api.logout().await {
                Ok(()) | Err(ClientError::Api { status: 401, .. }) => {}
                Err(e) => return Err(e),
            }
            let profile = session.config.profile_mut(&session.server.clone());
            profile.token = None;
            session.save()?;
            out.result(json!({"logged_out": true}), || format!("Logged out of {}.", session.server));
        }
        Command::Project(ProjectCommand::Create { name }) => {
            let p = session.user()?.create_project(&name).await?;
            out.result(json!({"id": p.id, "name": p.name}), || format!("Created project {:?} ({}).", p.name, p.id));
        }
        Command::Project(ProjectCommand::List) => {
            let projects = session.user()?.projects().await?.projects;
            out.result(json!({"projects": projects}), || {
                if projects.is_empty() {
                    return "No projects yet: `ferry project create NAME` makes one.".into();
                }
                let rows = projects
                    .iter()
                    .map(|p| {
                        vec![
                            p.id.to_string(),
                            p.name.clone(),
                            p.role.as_str().into(),
                            p.created_at.format("%Y-%m-%d %H:%M").to_string(),
                        ]
                    })
                    .collect::<Vec<_>>();
                table(&["id", "name", "role", "created"], &rows)
            });
        }
        Command::Invite(InviteCommand::Create { project, max_uses, expires_in }) => {
            let api = session.user()?;
            let project = resolve_project(&api, &project).await?;
            let invite =
                api.create_invite(project, &CreateInviteRequest { expires_in_seconds: expires_in, max_uses }).await?;
            out.result(json!({"token": invite.token, "expires_at": invite.expires_at, "id": invite.id, "max_uses": invite.max_uses}), || {
                format!(
                    "Invite created (id {}), usable {} time(s) until {}.\nShare this token; it is shown only now:\n{}",
                    invite.id, invite.max_uses, invite.expires_at, invite.token
                )
            });
        }
        Command::Invite(InviteCommand::List { project }) => {
            let api = session.user()?;
            let project = resolve_project(&api, &project).await?;
            let invites = api.invites(project).await?.invites;
            out.result(json!({"invites": invites}), || {
                let rows = invites
                    .iter()
                    .map(|i| {
                        let state = if i.revoked {
                            "revoked"
                        } else if i.uses >= i.max_uses {
                            "used up"
                        } else if i.expires_at < chrono::Utc::now() {
                            "expired"
                        } else {
                            "open"
                        };
                        vec![
                            i.id.to_string(),
                            format!("{}/{}", i.uses, i.max_uses),
                            i.expires_at.format("%Y-%m-%d %H:%M").to_string(),
                            state.into(),
                        ]
                    })
                    .collect::<Vec<_>>();
                table(&["id", "uses", "expires", "state"], &rows)
            });
        }
        Command::Invite(InviteCommand::Revoke { project, invite_id }) => {
            let api = session.user()?;
            let project = resolve_project(&api, &project).await?;
            api.revoke_invite(project, invite_id).await?;
            out.result(json!({"revoked": invite_id}), || format!("Invite {invite_id} revoked."));
        }
        Command::Join { token } => {
            let accepted = session.user()?.accept_invite(&token).await?;
            out.result(json!({"project_id": accepted.project_id}), || {
                format!("Joined project {} as a member.", accepted.project_id)
            });
        }
        Command::Members { project } => {
            let api = session.user()?;
            let project = resolve_project(&api, &project).await?;
            let members = api.members(project).await?.members;
            out.result(json!({"members": members}), || {
                let rows = members
                    .iter()
                    .map(|m| {
                        vec![
                            m.user_id.to_string(),
                            m.display_name.clone(),
                            m.role.as_str().into(),
                            m.joined_at.format("%Y-%m-%d %H:%M").to_string(),
                        ]
                    })
                    .collect::<Vec<_>>();
                table(&["user id", "name", "role", "joined"], &rows)
            });
        }
        Command::Devices { project: None } => {
            let devices = session.user()?.devices().await?.devices;
            let this = session.config.profile(&session.server).and_then(|p| p.device.as_ref()).map(|d| d.id);
            out.result(json!({"devices": devices}), || {
                let rows = devices
                    .iter()
                    .map(|d| {
                        let name =
                            if Some(d.id) == this { format!("{} (this machine)", d.name) } else { d.name.clone() };
                        vec![
                            d.id.to_string(),
                            name,
                            d.platform.clone().unwrap_or_default(),
                            d.created_at.format("%Y-%m-%d %H:%M").to_string(),
                        ]
                    })
                    .collect::<Vec<_>>();
                table(&["id", "name", "platform", "registered"], &rows)
            });
        }
        Command::Devices { project: Some(project) } => {
            let api = session.user()?;
            let project = resolve_project(&api, &project).await?;
            let devices = api.project_devices(project).await?.devices;
            out.result(json!({"devices": devices}), || {
                let rows = devices
                    .iter()
                    .map(|d| {
                        let seen = d
                            .last_seen_at
                            .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
                            .unwrap_or_else(|| "never".into());
                        vec![
                            d.device_id.to_string(),
                            d.name.clone(),
                            d.role.as_str().into(),
                            if d.online { "online".into() } else { "offline".into() },
                            seen,
                        ]
                    })
                    .collect::<Vec<_>>();
                table(&["id", "name", "role", "status", "last seen"], &rows)
            });
        }
        Command::Share { project, dir, once, listen, advertise, no_direct } => {
            let direct = (!no_direct).then_some(super::agent::DirectOptions { listen, advertise });
            super::agent::share(&mut session, out, &project, &dir, once, direct).await?;
        }
        Command::Ls { project, prefix } => {
            let api = session.user()?;
            let project = resolve_project(&api, &project).await?;
            let prefix = prefix.map(|p| if p.starts_with('/') { p } else { format!("/{p}") });
            let files = api.files_under(project, prefix.as_deref()).await?;
            out.result(json!({"files": files}), || {
                if files.is_empty() {
                    return "No files.".into();
                }
                let rows = files
                    .iter()
                    .map(|f| {
                        vec![
                            f.path.clone(),
                            human_bytes(f.size.max(0) as u64),
                            f.modified_at.map(|t| t.format("%Y-%m-%d %H:%M").to_string()).unwrap_or_default(),
                            f.version.to_string(),
                            f.hash[..12.min(f.hash.len())].to_owned(),
                        ]
                    })
                    .collect::<Vec<_>>();
                table(&["path", "size", "modified", "version", "hash"], &rows)
            });
        }
        Command::Pull { project, paths, to, wait } => {
            super::pull::pull(
                &session,
                out,
                super::pull::PullRequest { project, paths, to, wait: std::time::Duration::from_secs(wait) },
            )
            .await?;
        }
        Command::Sync { project, dir, wait } => {
            super::sync::sync(&session, out, &project, &dir, std::time::Duration::from_secs(wait)).await?;
        }
        Command::Transfers { project } => {
            super::transfers::transfers(&session, out, &project).await?;
        }
    }
    Ok(())
}

fn remember_login(session: &mut Session, auth: &crate::protocol::accounts::AuthResponse) -> Result<(), ClientError> {
    let server = session.server.clone();
    let profile = session.config.profile_mut(&server);
    if profile.user_id != Some(auth.user.id) {
        // Another account on this machine: its device is not ours.
        profile.device = None;
    }
    profile.token = Some(auth.token.clone());
    profile.user_id = Some(auth.user.id);
    profile.email = Some(auth.user.email.clone());
    session.config.server = Some(server);
    session.save()
}
