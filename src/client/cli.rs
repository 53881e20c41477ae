//! The commands of `ferry`: the clap definitions and what each one does.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use serde::Serialize;
use uuid::Uuid;

use super::agent::{DeleteGuard, DirectOptions, ShareOptions};
use super::api::Api;
use super::config::{config_dir, Config};
use super::output::{human_bytes, json_line, table, Output};
use super::rate::{describe, Limits, LimitsFile, Rate};
use super::transfers::Which;
use super::ClientError;
use crate::protocol::accounts::{LoginRequest, SignupRequest};
use crate::protocol::membership::CreateInviteRequest;
use crate::protocol::projects::Role;
use crate::protocol::transfers::TransferStatus;
use crate::protocol::{ErrorBody, ErrorDetail};

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
        #[command(flatten)]
        password: PasswordArgs,
        /// The name others see (default: the email's part before the @).
        #[arg(long)]
        display_name: Option<String>,
    },
    /// Log in and keep the token.
    Login {
        #[arg(long)]
        email: String,
        #[command(flatten)]
        password: PasswordArgs,
    },
    /// End the session: the token stops working.
    Logout,
    /// Create or list projects.
    #[command(subcommand)]
    Project(ProjectCommand),
    /// Invite people to a project (owner).
    #[command(subcommand)]
    Invite(InviteCommand),
    /// Join a project with an invite.
    Join {
        /// The invite link (`https://…/join/<token>`) or its token.
        invite: String,
    },
    /// List a project's members.
    Members {
        /// The project: its name or id.
        project: String,
    },
    /// List your devices, or with PROJECT the devices attached to it.
    Devices {
        /// The project: its name or id.
        project: Option<String>,
    },
    /// Owner: share DIR as PROJECT from this machine (several pairs in one
    /// process), then watch each and serve transfer requests until stopped.
    Share {
        /// The project (its name or id), then the folder whose files it
        /// shares; more PROJECT DIR pairs may follow.
        #[arg(value_name = "PROJECT DIR", num_args = 2.., required = true)]
        pairs: Vec<String>,
        /// Scan, push the changes and exit.
        #[arg(long)]
        once: bool,
        /// Where to listen for members fetching directly from this machine.
        #[arg(long, env = "FERRY_LISTEN", default_value = "0.0.0.0:0")]
        listen: std::net::SocketAddr,
        /// An https:// URL members reach the listener at (repeatable;
        /// default: this machine's address towards the server, on the
        /// listener's port). With an unspecified --listen address, the
        /// listener binds each advertised address of this machine (every
        /// interface when one is a name or another machine's address).
        #[arg(long, value_name = "URL")]
        advertise: Vec<String>,
        /// Serve through the relay only (no listener, whatever --listen says).
        #[arg(long)]
        no_direct: bool,
        /// Push a scan however many of the project's files it deletes.
        #[arg(long)]
        allow_deletes: bool,
        /// The share of the project's files one scan may delete without
        /// --allow-deletes (50 files or fewer always may).
        #[arg(long, env = "FERRY_MAX_DELETE_SHARE", default_value_t = 0.5, value_name = "FRACTION")]
        max_delete_share: f64,
        /// The project's files now live in DIR, not in the folder it was
        /// shared from before on this machine.
        #[arg(long)]
        move_folder: bool,
        /// Most bytes a second to send, over all transfers at once, direct
        /// and relayed (e.g. 5MiB/s, 40Mbit/s); `ferry limit` changes it
        /// while it runs.
        #[arg(long, value_name = "RATE")]
        max_upload: Option<Rate>,
    },
    /// List the project's files (all, or those under PREFIX).
    Ls {
        /// The project: its name or id.
        project: String,
        /// Only paths starting with this, e.g. /documents/.
        prefix: Option<String>,
    },
    /// Member: download files (all, or the PATHs: files or folders) into
    /// DIR, fetching only the chunks DIR lacks; resumes an interrupted pull.
    Pull {
        /// The project: its name or id.
        project: String,
        /// Files or folders of the project to download (default: all).
        paths: Vec<String>,
        /// The folder to download into.
        #[arg(long, value_name = "DIR")]
        to: PathBuf,
        /// Longest wait, in seconds, for the owner's machine to provide a
        /// chunk (say, while it is offline); then the pull stops, saying why.
        #[arg(long, default_value_t = 300)]
        wait: u64,
        /// Most bytes a second to download, over all files at once (e.g.
        /// 5MiB/s, 40Mbit/s); `ferry limit` changes it while it runs.
        #[arg(long, value_name = "RATE")]
        max_download: Option<Rate>,
    },
    /// Member: pull everything into DIR, then follow the project live and
    /// keep DIR current (adds, edits, deletes, moves) until stopped.
    Sync {
        /// The project: its name or id.
        project: String,
        /// The folder to keep current (or give it as --to DIR, as `pull` does).
        #[arg(required_unless_present = "to", conflicts_with = "to")]
        dir: Option<PathBuf>,
        /// The folder to keep current.
        #[arg(long, value_name = "DIR")]
        to: Option<PathBuf>,
        /// Longest wait, in seconds, for the owner's machine to provide a chunk.
        #[arg(long, default_value_t = 600)]
        wait: u64,
        /// Days the files the owner deleted or replaced stay in DIR/.ferry/trash.
        #[arg(long, env = "FERRY_TRASH_DAYS", default_value_t = 30)]
        trash_days: u32,
        /// Most bytes a second to download (e.g. 5MiB/s, 40Mbit/s); `ferry
        /// limit` changes it while it runs.
        #[arg(long, value_name = "RATE")]
        max_download: Option<Rate>,
    },
    /// Change the bandwidth limits of this machine's running `ferry share`,
    /// `pull` and `sync` (and the default of those started later without
    /// their own flag); without options, show them.
    Limit {
        /// Most bytes a second to upload (e.g. 5MiB/s, 40Mbit/s), or `off`.
        #[arg(long, value_name = "RATE|off")]
        max_upload: Option<Setting>,
        /// Most bytes a second to download, or `off`.
        #[arg(long, value_name = "RATE|off")]
        max_download: Option<Setting>,
    },
    /// Member: what `sync` set aside in DIR's trash, and bringing it back.
    #[command(subcommand)]
    Trash(TrashCommand),
    /// Where each of your projects stands from this machine: your role, the
    /// owner's computer, the folder here and its files, open transfers.
    Status,
    /// List the project's transfers and their progress; at a terminal, then
    /// follow the open ones live until they end.
    Transfers {
        /// The project: its name or id.
        project: String,
        /// Every transfer, not only the open and recent ones.
        #[arg(long, conflicts_with = "status")]
        all: bool,
        /// Only transfers in this state (all of them, however old).
        #[arg(long, value_parser = parse_status, value_name = "STATUS")]
        status: Option<TransferStatus>,
    },
}

/// A limit as `ferry limit` takes it: a rate, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    Off,
    To(Rate),
}

impl std::str::FromStr for Setting {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, String> {
        match value.trim() {
            "off" | "none" | "unlimited" => Ok(Setting::Off),
            rate => rate.parse().map(Setting::To),
        }
    }
}

impl Setting {
    fn bytes_per_second(self) -> Option<u64> {
        match self {
            Setting::Off => None,
            Setting::To(rate) => Some(rate.bytes_per_second()),
        }
    }
}

fn parse_status(value: &str) -> Result<TransferStatus, String> {
    TransferStatus::parse(value).ok_or_else(|| {
        let known: Vec<&str> = TransferStatus::ALL.iter().map(|s| s.as_str()).collect();
        format!("one of {}", known.join(", "))
    })
}

/// How a password is given: prompted for at a terminal, else a flag.
#[derive(Debug, Args)]
pub struct PasswordArgs {
    /// The password (visible in the process list: prefer the prompt, or --password-stdin).
    #[arg(long, env = "FERRY_PASSWORD", hide_env_values = true, conflicts_with = "password_stdin")]
    password: Option<String>,
    /// Read the password from the first line of standard input (for scripts).
    #[arg(long)]
    password_stdin: bool,
}

impl PasswordArgs {
    /// The password: from stdin when asked, the flag, else a prompt that
    /// does not echo, at a terminal only.
    fn read(self) -> Result<String, ClientError> {
        use std::io::{BufRead, IsTerminal};
        let password = if self.password_stdin {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .map_err(|e| ClientError::Usage(format!("cannot read the password from standard input: {e}")))?;
            line.trim_end_matches(['\r', '\n']).to_owned()
        } else if let Some(password) = self.password {
            password
        } else if std::io::stdin().is_terminal() {
            rpassword::prompt_password("Password: ")
                .map_err(|e| ClientError::Usage(format!("cannot read the password: {e}")))?
        } else {
            return Err(ClientError::Usage(
                "no password: not at a terminal, so give --password-stdin (or --password, or FERRY_PASSWORD)".into(),
            ));
        };
        if password.is_empty() {
            return Err(ClientError::Usage("the password is empty".into()));
        }
        Ok(password)
    }
}

#[derive(Debug, Subcommand)]
pub enum TrashCommand {
    /// The files the owner deleted or replaced that `sync` kept, newest first.
    List {
        /// The folder `ferry sync` keeps current.
        dir: PathBuf,
    },
    /// Puts the newest kept version of PATH back where it was.
    Restore {
        /// The folder `ferry sync` keeps current.
        dir: PathBuf,
        /// The file's path in the project, e.g. /docs/report.pdf.
        path: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ProjectCommand {
    /// Create a project; you become its owner.
    Create {
        /// Its name, 1 to 200 characters.
        name: String,
    },
    /// List your projects.
    List,
}

#[derive(Debug, Subcommand)]
pub enum InviteCommand {
    /// Create an invite and print its link (shown only once).
    Create {
        /// The project: its name or id.
        project: String,
        #[arg(long)]
        max_uses: Option<i64>,
        /// Seconds until it expires (default: 7 days).
        #[arg(long = "expires-in")]
        expires_in: Option<i64>,
    },
    /// List a project's invites.
    List {
        /// The project: its name or id.
        project: String,
    },
    /// Revoke an invite.
    Revoke {
        /// The project: its name or id.
        project: String,
        /// The invite's id, as `invite list` shows it.
        invite_id: Uuid,
    },
}

/// Keeps the allocator to two heaps. Chunks (about 1 MiB, up to 4 MiB) are
/// read on many blocking threads, and glibc gives threads heaps of their
/// own (up to eight per core), each keeping freed chunks for later: serving
/// 8 GiB directly grew the agent by 71 MiB, against 50 MiB for 1 GiB; with
/// two heaps, by 27 MiB (`scripts/bench-pull`).
/// Fixing glibc's mmap threshold at the smallest chunk (each chunk mapped
/// and given back whole) kept a pull of 8 GiB to 34 MiB against 51-54, but
/// the page faults and zeroing cost a third more CPU per GiB: not done.
fn bound_heaps() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called first thing,
    // before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Runs a command line; prints errors and answers the exit code.
pub fn run(cli: Cli) -> ExitCode {
    bound_heaps();
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
                let error = ErrorDetail { code: e.code().to_owned(), message: e.to_string() };
                println!("{}", json_line(ErrorBody { error }));
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
    /// The bandwidth limits of this process's transfers.
    pub limits: Limits,
}

impl Session {
    pub fn open(server: Option<&str>) -> Result<Self, ClientError> {
        let dir = config_dir()?;
        let config = Config::load(&dir)?;
        let server = config.resolve_server(server)?;
        Ok(Self { dir, config, server, limits: Limits::default() })
    }

    pub fn anonymous(&self) -> Api {
        Api::new(&self.server, None)
    }

    /// A client with the user's token.
    pub fn user(&self) -> Result<Api, ClientError> {
        let token = self.config.profile(&self.server).and_then(|p| p.token.clone());
        match token {
            Some(token) => Ok(Api::new(&self.server, Some(token)).with_limits(self.limits.clone())),
            None => Err(ClientError::NotLoggedIn(self.server.clone())),
        }
    }

    pub fn save(&self) -> Result<(), ClientError> {
        self.config.save(&self.dir)
    }

    /// Limits this process's transfers (each flag given, else what `ferry
    /// limit` set), and follows `ferry limit` while it runs.
    fn limit(&mut self, out: Output, upload: Option<Rate>, download: Option<Rate>) -> Result<(), ClientError> {
        self.limits = Limits::start(&self.dir, upload, download).map_err(ClientError::Other)?;
        tokio::spawn(self.limits.clone().follow(self.dir.clone(), move |said| out.note(&said)));
        Ok(())
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
            signup(&mut session, out, email, password.read()?, display_name).await
        }
        Command::Login { email, password } => login(&mut session, out, email, password.read()?).await,
        Command::Logout => logout(&mut session, out).await,
        Command::Project(ProjectCommand::Create { name }) => create_project(&session, out, &name).await,
        Command::Project(ProjectCommand::List) => list_projects(&session, out).await,
        Command::Invite(InviteCommand::Create { project, max_uses, expires_in }) => {
            create_invite(&session, out, &project, CreateInviteRequest { expires_in_seconds: expires_in, max_uses })
                .await
        }
        Command::Invite(InviteCommand::List { project }) => list_invites(&session, out, &project).await,
        Command::Invite(InviteCommand::Revoke { project, invite_id }) => {
            revoke_invite(&session, out, &project, invite_id).await
        }
        Command::Join { invite } => join(&session, out, &invite).await,
        Command::Members { project } => list_members(&session, out, &project).await,
        Command::Devices { project: None } => list_devices(&session, out).await,
        Command::Devices { project: Some(project) } => list_project_devices(&session, out, &project).await,
        Command::Share {
            pairs,
            once,
            listen,
            advertise,
            no_direct,
            allow_deletes,
            max_delete_share,
            move_folder,
            max_upload,
        } => {
            session.limit(out, max_upload, None)?;
            if let Some(plain) = advertise.iter().find(|u| !u.starts_with("https://")) {
                return Err(ClientError::Usage(format!(
                    "--advertise {plain}: the listener speaks TLS only, so give https:// URLs"
                )));
            }
            if !(0.0..=1.0).contains(&max_delete_share) {
                return Err(ClientError::Usage("--max-delete-share is a fraction from 0 to 1, e.g. 0.5".into()));
            }
            if pairs.len() % 2 != 0 {
                return Err(ClientError::Usage(
                    "give PROJECT DIR pairs: each project is followed by its folder".into(),
                ));
            }
            let shares: Vec<(String, PathBuf)> =
                pairs.chunks(2).map(|pair| (pair[0].clone(), PathBuf::from(&pair[1]))).collect();
            for (project, _) in &shares {
                refuse_members(&session, project).await?;
            }
            let options = ShareOptions {
                once,
                direct: (!no_direct).then_some(DirectOptions { listen, advertise }),
                guard: DeleteGuard { allow: allow_deletes, share: max_delete_share },
                move_folder,
            };
            super::agent::share(&mut session, out, &shares, options).await
        }
        Command::Ls { project, prefix } => list_files(&session, out, &project, prefix).await,
        Command::Pull { project, paths, to, wait, max_download } => {
            session.limit(out, None, max_download)?;
            let wait = std::time::Duration::from_secs(wait);
            super::pull::pull(&session, out, super::pull::PullRequest { project, paths, to, wait }).await
        }
        Command::Sync { project, dir, to, wait, trash_days, max_download } => {
            session.limit(out, None, max_download)?;
            let dir = dir.or(to).ok_or_else(|| ClientError::Usage("sync needs the folder to keep current".into()))?;
            remember_synced(&mut session, &project, &dir).await?;
            let wait = std::time::Duration::from_secs(wait);
            super::sync::sync(&session, out, &project, &dir, wait, trash_days).await
        }
        Command::Trash(TrashCommand::List { dir }) => list_trash(out, &dir),
        Command::Trash(TrashCommand::Restore { dir, path }) => restore_trashed(out, &dir, &path),
        Command::Status => super::status::status(&session, out).await,
        Command::Limit { max_upload, max_download } => limit(&session, out, max_upload, max_download),
        Command::Transfers { project, all, status } => {
            let which = match (all, status) {
                (_, Some(status)) => Which::Status(status),
                (true, None) => Which::All,
                (false, None) => Which::OpenAndRecent,
            };
            super::transfers::transfers(&session, out, &project, which).await
        }
    }
}

/// `ferry limit`: changes the limits (in the config folder, where running
/// processes pick them up) and says which are in force.
fn limit(
    session: &Session,
    out: Output,
    upload: Option<Setting>,
    download: Option<Setting>,
) -> Result<(), ClientError> {
    let mut file = LimitsFile::load(&session.dir).map_err(ClientError::Other)?;
    if upload.is_some() || download.is_some() {
        if let Some(upload) = upload {
            file.max_upload = upload.bytes_per_second();
        }
        if let Some(download) = download {
            file.max_download = download.bytes_per_second();
        }
        file.save(&session.dir).map_err(|e| ClientError::io(&LimitsFile::path(&session.dir), e))?;
    }
    out.result(&file, || format!("Limits: {}.", describe(&file)));
    Ok(())
}

/// A time as people read it in a table: to the minute, in UTC.
fn minute(time: chrono::DateTime<chrono::Utc>) -> String {
    time.format("%Y-%m-%d %H:%M").to_string()
}

async fn signup(
    session: &mut Session,
    out: Output,
    email: String,
    password: String,
    display_name: Option<String>,
) -> Result<(), ClientError> {
    let auth = session.anonymous().signup(&SignupRequest { email, password, display_name, session: None }).await?;
    remember_login(session, &auth)?;
    out.result(UserId { user_id: auth.user.id }, || {
        format!("Signed up and logged in as {} on {}.", auth.user.email, session.server)
    });
    Ok(())
}

async fn login(session: &mut Session, out: Output, email: String, password: String) -> Result<(), ClientError> {
    let auth = session.anonymous().login(&LoginRequest { email, password, session: None }).await?;
    remember_login(session, &auth)?;
    out.result(UserId { user_id: auth.user.id }, || format!("Logged in as {} on {}.", auth.user.email, session.server));
    Ok(())
}

async fn logout(session: &mut Session, out: Output) -> Result<(), ClientError> {
    match session.user()?.logout().await {
        Ok(()) | Err(ClientError::Api { status: 401, .. }) => {}
        Err(e) => return Err(e),
    }
    let server = session.server.clone();
    session.config.profile_mut(&server).token = None;
    session.save()?;
    out.result(LoggedOut { logged_out: true }, || format!("Logged out of {server}."));
    Ok(())
}

async fn create_project(session: &Session, out: Output, name: &str) -> Result<(), ClientError> {
    let p = session.user()?.create_project(name).await?;
    out.result(CreatedProject { id: p.id, name: &p.name }, || format!("Created project {:?} ({}).", p.name, p.id));
    Ok(())
}

async fn list_projects(session: &Session, out: Output) -> Result<(), ClientError> {
    let answer = session.user()?.projects().await?;
    let projects = &answer.projects;
    out.result(&answer, || {
        if projects.is_empty() {
            return "No projects yet: `ferry project create NAME` makes one.".into();
        }
        let rows: Vec<_> = projects
            .iter()
            .map(|p| vec![p.id.to_string(), p.name.clone(), p.role.as_str().into(), minute(p.created_at)])
            .collect();
        table(&["id", "name", "role", "created"], &rows)
    });
    Ok(())
}

async fn create_invite(
    session: &Session,
    out: Output,
    project: &str,
    request: CreateInviteRequest,
) -> Result<(), ClientError> {
    let api = session.user()?;
    let project = resolve_project(&api, project).await?;
    let invite = api.create_invite(project, &request).await?;
    let link = format!("{}/join/{}", session.server, invite.token);
    let answer = InviteLink {
        token: &invite.token,
        link: &link,
        expires_at: invite.expires_at,
        id: invite.id,
        max_uses: invite.max_uses,
    };
    out.result(answer, || {
        format!(
            "Invite created: it lets {} person(s) join until {} UTC.\nSend this link; it is shown only now:\n{link}",
            invite.max_uses,
            minute(invite.expires_at)
        )
    });
    Ok(())
}

async fn list_invites(session: &Session, out: Output, project: &str) -> Result<(), ClientError> {
    let api = session.user()?;
    let project = resolve_project(&api, project).await?;
    let answer = api.invites(project).await?;
    let invites = &answer.invites;
    out.result(&answer, || {
        let rows: Vec<_> = invites
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
                vec![i.id.to_string(), format!("{}/{}", i.uses, i.max_uses), minute(i.expires_at), state.into()]
            })
            .collect();
        table(&["id", "uses", "expires", "state"], &rows)
    });
    Ok(())
}

async fn revoke_invite(session: &Session, out: Output, project: &str, invite_id: Uuid) -> Result<(), ClientError> {
    let api = session.user()?;
    let project = resolve_project(&api, project).await?;
    api.revoke_invite(project, invite_id).await?;
    out.result(Revoked { revoked: invite_id }, || format!("Invite {invite_id} revoked."));
    Ok(())
}

/// The token of an invite given as its token or as its whole link
/// (`https://host/join/<token>`, as the owner sends it).
fn invite_token(invite: &str) -> String {
    let invite = invite.trim();
    match invite.rsplit_once("/join/") {
        Some((_, tail)) => {
            let token = tail.split(['?', '#', '/']).next().unwrap_or_default();
            percent_encoding::percent_decode_str(token).decode_utf8_lossy().into_owned()
        }
        None => invite.to_owned(),
    }
}

async fn join(session: &Session, out: Output, invite: &str) -> Result<(), ClientError> {
    let api = session.user()?;
    let accepted = api.accept_invite(&invite_token(invite)).await?;
    let project = api.project(accepted.project_id).await?;
    out.result(Joined { project_id: project.id, name: &project.name }, || {
        format!(
            "Joined the project {:?} as a member: `ferry sync {:?} DIR` keeps a folder of its files.",
            project.name, project.name
        )
    });
    Ok(())
}

async fn list_members(session: &Session, out: Output, project: &str) -> Result<(), ClientError> {
    let api = session.user()?;
    let project = resolve_project(&api, project).await?;
    let answer = api.members(project).await?;
    let members = &answer.members;
    out.result(&answer, || {
        let rows: Vec<_> = members
            .iter()
            .map(|m| vec![m.user_id.to_string(), m.display_name.clone(), m.role.as_str().into(), minute(m.joined_at)])
            .collect();
        table(&["user id", "name", "role", "joined"], &rows)
    });
    Ok(())
}

async fn list_devices(session: &Session, out: Output) -> Result<(), ClientError> {
    let answer = session.user()?.devices().await?;
    let devices = &answer.devices;
    let this = session.config.profile(&session.server).and_then(|p| p.device.as_ref()).map(|d| d.id);
    out.result(&answer, || {
        let rows: Vec<_> = devices
            .iter()
            .map(|d| {
                let name = if Some(d.id) == this { format!("{} (this machine)", d.name) } else { d.name.clone() };
                vec![d.id.to_string(), name, d.platform.clone().unwrap_or_default(), minute(d.created_at)]
            })
            .collect();
        table(&["id", "name", "platform", "registered"], &rows)
    });
    Ok(())
}

async fn list_project_devices(session: &Session, out: Output, project: &str) -> Result<(), ClientError> {
    let api = session.user()?;
    let project = resolve_project(&api, project).await?;
    let answer = api.project_devices(project).await?;
    let devices = &answer.devices;
    out.result(&answer, || {
        let rows: Vec<_> = devices
            .iter()
            .map(|d| {
                vec![
                    d.device_id.to_string(),
                    d.name.clone(),
                    d.role.as_str().into(),
                    if d.online { "online".into() } else { "offline".into() },
                    d.last_seen_at.map(minute).unwrap_or_else(|| "never".into()),
                ]
            })
            .collect();
        table(&["id", "name", "role", "status", "last seen"], &rows)
    });
    Ok(())
}

fn list_trash(out: Output, dir: &std::path::Path) -> Result<(), ClientError> {
    let files = super::trash::list(dir);
    out.result(Files { files: &files }, || {
        if files.is_empty() {
            return format!("The trash of {} is empty.", dir.display());
        }
        let rows: Vec<_> =
            files.iter().map(|t| vec![t.path.clone(), human_bytes(t.size), minute(t.trashed_at)]).collect();
        table(&["path", "size", "set aside"], &rows)
    });
    Ok(())
}

fn restore_trashed(out: Output, dir: &std::path::Path, path: &str) -> Result<(), ClientError> {
    let restored = super::trash::restore(dir, path)?;
    out.result(Restored { restored: &restored.path, trashed_at: restored.trashed_at }, || {
        format!("Restored {} (set aside {} UTC).", restored.path, minute(restored.trashed_at))
    });
    Ok(())
}

/// Keeps which folder syncs the project, for `status`.
async fn remember_synced(session: &mut Session, project: &str, dir: &std::path::Path) -> Result<(), ClientError> {
    let id = resolve_project(&session.user()?, project).await?;
    std::fs::create_dir_all(dir).map_err(|e| ClientError::io(dir, e))?;
    let dir = dir.canonicalize().map_err(|e| ClientError::io(dir, e))?;
    let server = session.server.clone();
    session.config.profile_mut(&server).synced_folders.insert(id, dir);
    session.save()
}

/// `share` is the owner's: a member hears so before anything is scanned.
async fn refuse_members(session: &Session, project: &str) -> Result<(), ClientError> {
    let api = session.user()?;
    let id = resolve_project(&api, project).await?;
    match api.project(id).await?.role {
        Role::Owner => Ok(()),
        Role::Member => Err(ClientError::Usage(format!(
            "only the project's owner shares files; as a member of {project:?}, \
             `ferry pull` downloads them and `ferry sync` keeps a folder of them"
        ))),
    }
}

async fn list_files(session: &Session, out: Output, project: &str, prefix: Option<String>) -> Result<(), ClientError> {
    let api = session.user()?;
    let project = resolve_project(&api, project).await?;
    let prefix = prefix.map(|p| if p.starts_with('/') { p } else { format!("/{p}") });
    let (files, _) = api.files_under(project, prefix.as_deref()).await?;
    out.result(Files { files: &files }, || {
        if files.is_empty() {
            return "No files.".into();
        }
        let rows: Vec<_> = files
            .iter()
            .map(|f| {
                vec![
                    f.path.clone(),
                    human_bytes(f.size.max(0) as u64),
                    f.modified_at.map(minute).unwrap_or_default(),
                    f.version.to_string(),
                    f.hash[..12.min(f.hash.len())].to_owned(),
                ]
            })
            .collect();
        table(&["path", "size", "modified", "version", "hash"], &rows)
    });
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

/// `--json` results of the commands above that have no wire type of their own.
#[derive(Serialize)]
struct UserId {
    user_id: Uuid,
}

#[derive(Serialize)]
struct LoggedOut {
    logged_out: bool,
}

#[derive(Serialize)]
struct CreatedProject<'a> {
    id: Uuid,
    name: &'a str,
}

/// A new invite with its link: the only time its token is shown.
#[derive(Serialize)]
struct InviteLink<'a> {
    token: &'a str,
    link: &'a str,
    expires_at: chrono::DateTime<chrono::Utc>,
    id: Uuid,
    max_uses: i32,
}

#[derive(Serialize)]
struct Revoked {
    revoked: Uuid,
}

#[derive(Serialize)]
struct Joined<'a> {
    project_id: Uuid,
    name: &'a str,
}

#[derive(Serialize)]
struct Files<'a, T> {
    files: &'a [T],
}

#[derive(Serialize)]
struct Restored<'a> {
    restored: &'a str,
    trashed_at: chrono::DateTime<chrono::Utc>,
}

#[cfg(test)]
mod tests {
    use super::invite_token;

    #[test]
    fn an_invite_is_its_token_or_its_whole_link() {
        for given in [
            "tok_EN-1",
            " tok_EN-1\n",
            "http://127.0.0.1:7070/join/tok_EN-1",
            "https://ferry.example.org/join/tok_EN-1?from=mail#top",
            "https://ferry.example.org/join/tok%5FEN-1/",
        ] {
            assert_eq!(invite_token(given), "tok_EN-1", "{given:?}");
        }
    }
}
