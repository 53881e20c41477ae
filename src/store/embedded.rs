//! The embedded PostgreSQL default: when `ferryd serve` runs without
//! `DATABASE_URL`, it runs its own private PostgreSQL cluster.
//!
//! Layout under the ferry data directory:
//!
//! * `pg/`          — the cluster (created once with `initdb`);
//! * `pg.password`  — the password of the superuser `ferry` (mode 0600, owned
//!   by the user running ferryd);
//! * `pg.log`       — the server log (`pg_ctl -l`);
//! * `pg.lock`      — an advisory lock held while starting/stopping, so that
//!   concurrent `start` calls on the same directory serialise;
//! * `pg.users`     — a shared lock held by every process using the cluster
//!   (`ferryd serve`, an admin command), so that only its last user stops it
//!   (see [`EmbeddedPostgres::release`]);
//! * `pg.init/`     — transient: a cluster being initialised. It is renamed to
//!   `pg/` only once complete (initdb + `CREATE DATABASE ferry`), so an
//!   interrupted initialisation is simply redone.
//!
//! The server listens on 127.0.0.1 only, on a port picked at start, and has
//! no Unix socket (so long paths don't matter). Loopback connections need the
//! password (`scram-sha-256`). The database `ferry` is created at
//! initialisation (with `postgres --single`, which always ships next to
//! `initdb`), and [`EmbeddedPostgres::database_url`] points at it.
//!
//! PostgreSQL refuses to run as root. When ferryd runs as root, every
//! PostgreSQL program is run as an unprivileged user instead: the owner of an
//! existing cluster, else the `postgres` system user, else `nobody`.
//!
//! Everything here is synchronous (`std::process::Command`); call it from a
//! blocking context (e.g. before building the runtime, or in
//! `tokio::task::spawn_blocking`).

use std::ffi::{CStr, CString};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use rand::distributions::Alphanumeric;
use rand::Rng;

const CLUSTER_DIR: &str = "pg";
const INIT_DIR: &str = "pg.init";
const PASSWORD_FILE: &str = "pg.password";
const INITDB_PWFILE: &str = "pg.pwfile.tmp";
const LOG_FILE: &str = "pg.log";
const LOCK_FILE: &str = "pg.lock";
const USERS_FILE: &str = "pg.users";
const SUPERUSER: &str = "ferry";
const DATABASE: &str = "ferry";
const PASSWORD_LEN: usize = 40;
/// Seconds `pg_ctl -w` waits for start/stop, and we wait for an adopted
/// cluster to become ready.
const TIMEOUT_SECS: u64 = 60;
/// Attempts at starting the server (a new port each time) when the port we
/// picked was taken in the meantime.
const START_ATTEMPTS: usize = 3;
/// Lines of `pg.log` included in a start failure.
const LOG_TAIL_LINES: usize = 40;

/// Errors from managing the embedded cluster.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    /// No `initdb`/`pg_ctl`/`postgres` found.
    #[error(
        "PostgreSQL is not installed: no `initdb`/`pg_ctl` found on PATH or under \
         /usr/lib/postgresql/*/bin. Install PostgreSQL (e.g. `apt-get install postgresql`) \
         or set DATABASE_URL to use an existing PostgreSQL server"
    )]
    NotInstalled,

    /// A filesystem or process-spawning error, with what we were doing.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },

    /// A PostgreSQL program failed; `output` holds its stdout/stderr (and,
    /// for a failed start, the tail of `pg.log`).
    #[error("`{command}` failed ({status}):\n{output}")]
    Command { command: String, status: String, output: String },

    /// Running as root, and no unprivileged user to run PostgreSQL as.
    #[error(
        "ferryd runs as root and PostgreSQL refuses to run as root, but neither a `postgres` \
         nor a `nobody` user exists to run it as; create one (e.g. `useradd --system postgres`) \
         or set DATABASE_URL"
    )]
    NoUnprivilegedUser,

    /// The cluster is running (or its `postmaster.pid` says so) but is not usable.
    #[error("embedded PostgreSQL in {cluster} is not usable: {reason}")]
    NotReady { cluster: PathBuf, reason: String },
}

impl EmbeddedError {
    fn io(context: impl Into<String>, source: io::Error) -> Self {
        EmbeddedError::Io { context: context.into(), source }
    }
}

/// Attaches a context message to an `io::Result`.
trait IoContext<T> {
    fn ctx(self, f: impl FnOnce() -> String) -> Result<T, EmbeddedError>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, f: impl FnOnce() -> String) -> Result<T, EmbeddedError> {
        self.map_err(|e| EmbeddedError::io(f(), e))
    }
}

/// The unprivileged user PostgreSQL programs run as when ferryd is root.
#[derive(Clone, Debug, PartialEq, Eq)]
struct RunAs {
    name: String,
    uid: u32,
    gid: u32,
}

#[derive(Clone, Debug)]
struct Binaries {
    initdb: PathBuf,
    pg_ctl: PathBuf,
    postgres: PathBuf,
}

/// A running embedded PostgreSQL cluster (started or adopted by
/// [`EmbeddedPostgres::start`]). The handle counts as one user of the
/// cluster for as long as it lives. Dropping it leaves the server running;
/// [`EmbeddedPostgres::release`] stops it unless another process still uses
/// it, [`EmbeddedPostgres::stop`] stops it regardless.
pub struct EmbeddedPostgres {
    data_dir: PathBuf,
    cluster: PathBuf,
    log_file: PathBuf,
    bins: Binaries,
    run_as: Option<RunAs>,
    port: u16,
    password: String,
    users: UsersLock,
}

/// What [`EmbeddedPostgres::release`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Released {
    /// This was the last user: the server is stopped.
    Stopped,
    /// Another process (e.g. `ferryd serve`) still uses the server: left running.
    LeftRunning,
}

impl fmt::Debug for EmbeddedPostgres {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedPostgres")
            .field("cluster", &self.cluster)
            .field("port", &self.port)
            .field("user", &SUPERUSER)
            .field("password", &"<redacted>")
            .field("database", &DATABASE)
            .field("pg_ctl", &self.bins.pg_ctl)
            .field("run_as", &self.run_as.as_ref().map(|u| &u.name))
            .finish()
    }
}

/// What `pg_ctl status` (plus a liveness check on the recorded PID) says.
enum Status {
    Running,
    NotRunning,
}

impl EmbeddedPostgres {
    /// Initialises `<data_dir>/pg` once (initdb), starts it with `pg_ctl -w`
    /// on a free port on 127.0.0.1, and returns a handle.
    ///
    /// If the cluster is already running (e.g. a crashed ferryd left it), it
    /// is adopted: the port is read from `postmaster.pid`.
    pub fn start(data_dir: &Path) -> Result<Self, EmbeddedError> {
        fs::create_dir_all(data_dir).ctx(|| format!("cannot create data directory {}", data_dir.display()))?;
        let data_dir =
            fs::canonicalize(data_dir).ctx(|| format!("cannot resolve data directory {}", data_dir.display()))?;
        let _lock = DirLock::acquire(&data_dir.join(LOCK_FILE))?;
        // Count ourselves as a user before looking at the cluster: a
        // releasing process decides under the DirLock whether it is the last
        // user, so it cannot stop the server between our adopting it and
        // this lock.
        let users = UsersLock::share(&data_dir.join(USERS_FILE))?;

        let cluster = data_dir.join(CLUSTER_DIR);
        if cluster.exists() && !cluster.join("PG_VERSION").exists() {
            tracing::warn!(
                "{} exists but holds no PostgreSQL cluster (interrupted initialisation?); \
                 removing it and initialising again",
                cluster.display()
            );
            fs::remove_dir_all(&cluster).ctx(|| format!("cannot remove {}", cluster.display()))?;
        }
        let cluster_version = fs::read_to_string(cluster.join("PG_VERSION")).ok().map(|v| v.trim().to_owned());
        let bins = find_binaries(cluster_version.as_deref()).ok_or(EmbeddedError::NotInstalled)?;

        let run_as = if is_root() { Some(choose_run_as(&cluster)?) } else { None };

        let mut pg = EmbeddedPostgres {
            log_file: data_dir.join(LOG_FILE),
            data_dir,
            cluster,
            bins,
            run_as,
            port: 0,
            password: String::new(),
            users,
        };

        if let Some(user) = &pg.run_as {
            ensure_traversable(&pg.data_dir, user)?;
        }
        if pg.cluster.exists() {
            pg.fix_cluster_ownership()?;
        } else {
            pg.initialise()?;
        }
        pg.prepare_log_file()?;

        let password_path = pg.data_dir.join(PASSWORD_FILE);
        let password = read_password(&password_path)?;

        if let Status::Running = pg.status()? {
            if password.is_none() {
                // Resetting the password needs the server stopped, which
                // must not pull it from under another process.
                if !pg.users.try_sole()? {
                    return Err(pg.not_ready(&format!(
                        "{} is missing and another process (e.g. `ferryd serve`) uses the running \
                         server; restore the file, or stop that process first",
                        password_path.display()
                    )));
                }
                tracing::warn!(
                    "{} is missing; stopping the running embedded PostgreSQL to reset the password",
                    password_path.display()
                );
                pg.stop()?;
                pg.users.hold_shared()?;
            } else if let Some(port) = pg.wait_until_ready()? {
                pg.port = port;
                pg.password = password.unwrap_or_default();
                tracing::info!("adopted running embedded PostgreSQL on 127.0.0.1:{} ({})", port, pg.cluster.display());
                return Ok(pg);
            }
        }

        pg.password = match password {
            Some(p) => p,
            None => pg.reset_password()?,
        };
        pg.start_server()?;
        Ok(pg)
    }

    /// `postgres://ferry:<password>@127.0.0.1:<port>/ferry` (the database
    /// `ferry` exists, owned by the superuser `ferry`).
    pub fn database_url(&self) -> String {
        format!("postgres://{SUPERUSER}:{}@127.0.0.1:{}/{DATABASE}", self.password, self.port)
    }

    /// The TCP port the server listens on (127.0.0.1 only).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Ends this handle's use of the cluster: stops the server if no other
    /// process uses it (its last user stops it), else leaves it running.
    ///
    /// Decided under the DirLock, so releases on the same directory happen
    /// one after the other: of two last users releasing at once, the first
    /// sees the second's share and leaves (dropping its own share before
    /// the DirLock), the second then finds itself alone and stops the
    /// server. A process killed before releasing loses its share with its
    /// life (the kernel drops flocks), so it never keeps the server counted.
    pub fn release(self) -> Result<Released, EmbeddedError> {
        let _lock = DirLock::acquire(&self.data_dir.join(LOCK_FILE))?;
        let released = if self.users.try_sole()? {
            self.stop().map(|()| Released::Stopped)
        } else {
            tracing::info!(
                "left embedded PostgreSQL running on 127.0.0.1:{}: another process uses it ({})",
                self.port,
                self.cluster.display()
            );
            Ok(Released::LeftRunning)
        };
        // Before the DirLock goes (`_lock` drops after this): the next
        // releaser must not count us.
        self.users.unlock()?;
        released
    }

    /// Stops the server (`pg_ctl stop -m fast -w`), whoever else uses it
    /// (see [`EmbeddedPostgres::release`]). Stopping a server that is not
    /// running is not an error.
    pub fn stop(&self) -> Result<(), EmbeddedError> {
        if let Status::NotRunning = self.status()? {
            return Ok(());
        }
        let mut cmd = self.pg_command(&self.bins.pg_ctl);
        cmd.arg("stop").arg("-D").arg(&self.cluster).args(["-m", "fast", "-w", "-t", &TIMEOUT_SECS.to_string()]);
        let (output, result) = run_captured(&mut cmd, None)?;
        if !output.status.success() {
            // It may have gone away by itself in the meantime.
            if let Status::NotRunning = self.status()? {
                return Ok(());
            }
            return Err(result.unwrap_err());
        }
        tracing::info!("stopped embedded PostgreSQL ({})", self.cluster.display());
        Ok(())
    }

    // ---- initialisation -------------------------------------------------

    /// initdb into `pg.init/`, create the database, write the password file,
    /// then rename `pg.init/` to `pg/`.
    fn initialise(&self) -> Result<(), EmbeddedError> {
        let init_dir = self.data_dir.join(INIT_DIR);
        if init_dir.exists() {
            fs::remove_dir_all(&init_dir).ctx(|| format!("cannot remove leftover {}", init_dir.display()))?;
        }
        fs::DirBuilder::new().mode(0o700).create(&init_dir).ctx(|| format!("cannot create {}", init_dir.display()))?;
        self.chown_to_run_as(&init_dir)?;

        let password = generate_password();
        {
            // initdb reads the password from a file: give it its own copy,
            // owned by the user it runs as, deleted afterwards.
            let pwfile = TempFile::create(&self.data_dir.join(INITDB_PWFILE), format!("{password}\n").as_bytes())?;
            self.chown_to_run_as(&pwfile.path)?;

            let mut cmd = self.pg_command(&self.bins.initdb);
            cmd.arg("-D")
                .arg(&init_dir)
                .args(["-U", SUPERUSER])
                .arg(format!("--pwfile={}", pwfile.path.display()))
                .args(["--auth-host=scram-sha-256", "--auth-local=peer", "-E", "UTF8", "--locale=C"])
                .env("HOME", &init_dir);
            run_checked(&mut cmd, None)?;
        }

        self.single_user(&init_dir, &format!("CREATE DATABASE {DATABASE};\n"))?;
        write_password(&self.data_dir.join(PASSWORD_FILE), &password)?;
        fs::rename(&init_dir, &self.cluster)
            .ctx(|| format!("cannot rename {} to {}", init_dir.display(), self.cluster.display()))?;
        tracing::info!("initialised embedded PostgreSQL in {}", self.cluster.display());
        Ok(())
    }

    /// The password file is gone but the cluster exists (and is stopped):
    /// set a new password in single-user mode.
    fn reset_password(&self) -> Result<String, EmbeddedError> {
        let password = generate_password();
        self.single_user(&self.cluster, &format!("ALTER ROLE {SUPERUSER} PASSWORD '{password}';\n"))?;
        write_password(&self.data_dir.join(PASSWORD_FILE), &password)?;
        tracing::warn!(
            "reset the password of the embedded PostgreSQL (new password in {})",
            self.data_dir.join(PASSWORD_FILE).display()
        );
        Ok(password)
    }

    /// Runs SQL (one statement per line) with `postgres --single` on a
    /// stopped cluster. Stops at the first error.
    fn single_user(&self, cluster: &Path, sql: &str) -> Result<(), EmbeddedError> {
        let mut cmd = self.pg_command(&self.bins.postgres);
        cmd.arg("--single").arg("-D").arg(cluster).args(["-c", "exit_on_error=on", "postgres"]).env("HOME", cluster);
        run_checked(&mut cmd, Some(sql.as_bytes()))?;
        Ok(())
    }

    /// When root: make sure the cluster (and everything in it) belongs to
    /// the user PostgreSQL runs as.
    fn fix_cluster_ownership(&self) -> Result<(), EmbeddedError> {
        let Some(user) = &self.run_as else {
            return Ok(());
        };
        let meta = fs::metadata(&self.cluster).ctx(|| format!("cannot stat {}", self.cluster.display()))?;
        if meta.uid() != user.uid {
            tracing::warn!(
                "changing the owner of {} to {} (PostgreSQL cannot run as root)",
                self.cluster.display(),
                user.name
            );
            chown_recursive(&self.cluster, user)?;
        }
        Ok(())
    }

    /// Creates `pg.log` if missing and, when root, hands it to the
    /// PostgreSQL user (pg_ctl opens it as that user).
    fn prepare_log_file(&self) -> Result<(), EmbeddedError> {
        OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&self.log_file)
            .ctx(|| format!("cannot create {}", self.log_file.display()))?;
        self.chown_to_run_as(&self.log_file)
    }

    // ---- running --------------------------------------------------------

    fn status(&self) -> Result<Status, EmbeddedError> {
        let mut cmd = self.pg_command(&self.bins.pg_ctl);
        cmd.arg("status").arg("-D").arg(&self.cluster);
        let (output, result) = run_captured(&mut cmd, None)?;
        match output.status.code() {
            Some(0) => {}
            // 3: not running; 4: no accessible data directory.
            Some(3) | Some(4) => return Ok(Status::NotRunning),
            _ => return Err(result.unwrap_err()),
        }
        // pg_ctl only checks that the PID in postmaster.pid exists (kill -0).
        let Some(info) = self.read_pid_file() else {
            return Ok(Status::Running);
        };
        match check_pid(info.pid, &self.cluster) {
            PidCheck::Ours => Ok(Status::Running),
            // After a reboot/container restart the PID may belong to
            // something else: the file is stale.
            PidCheck::Foreign => {
                tracing::warn!(
                    "{}/postmaster.pid names PID {}, which is not this cluster's server: \
                     removing the stale file",
                    self.cluster.display(),
                    info.pid
                );
                let path = self.cluster.join("postmaster.pid");
                fs::remove_file(&path).ctx(|| format!("cannot remove {}", path.display()))?;
                Ok(Status::NotRunning)
            }
            // The server died (e.g. kill -9) and waits to be reaped by its
            // parent (init): give that a moment.
            PidCheck::Zombie => {
                let deadline = Instant::now() + Duration::from_secs(TIMEOUT_SECS);
                while Instant::now() < deadline {
                    sleep(Duration::from_millis(100));
                    if !matches!(check_pid(info.pid, &self.cluster), PidCheck::Zombie) {
                        return self.status();
                    }
                }
                Err(self.not_ready(&format!("its server process (PID {}) died but was not reaped", info.pid)))
            }
        }
    }

    fn read_pid_file(&self) -> Option<PidFile> {
        let text = fs::read_to_string(self.cluster.join("postmaster.pid")).ok()?;
        PidFile::parse(&text)
    }

    /// Waits until an already running server is ready and reachable, and
    /// returns its port; `None` if it shut down in the meantime.
    fn wait_until_ready(&self) -> Result<Option<u16>, EmbeddedError> {
        let deadline = Instant::now() + Duration::from_secs(TIMEOUT_SECS);
        loop {
            let Some(info) = self.read_pid_file() else {
                if let Status::NotRunning = self.status()? {
                    return Ok(None);
                }
                return Err(self.not_ready("postmaster.pid is missing or unreadable"));
            };
            match info.status.as_deref() {
                // PostgreSQL < 10 writes no status line.
                Some("ready") | Some("standby") | None if info.port != 0 => {
                    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, info.port));
                    match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
                        Ok(_) => return Ok(Some(info.port)),
                        Err(e) if Instant::now() >= deadline => {
                            return Err(self.not_ready(&format!(
                                "it runs (PID {}) but 127.0.0.1:{} does not accept \
                                 connections ({e}); stop it with `pg_ctl stop -D {}`",
                                info.pid,
                                info.port,
                                self.cluster.display()
                            )));
                        }
                        Err(_) => {
                            if let Status::NotRunning = self.status()? {
                                return Ok(None);
                            }
                        }
                    }
                }
                _ => {
                    if let Status::NotRunning = self.status()? {
                        return Ok(None);
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(self.not_ready(&format!(
                    "it runs (PID {}) but did not become ready within {TIMEOUT_SECS}s \
                     (status {:?}); see {}",
                    info.pid,
                    info.status.as_deref().unwrap_or("unknown"),
                    self.log_file.display()
                )));
            }
            sleep(Duration::from_millis(100));
        }
    }

    fn not_ready(&self, reason: &str) -> EmbeddedError {
        EmbeddedError::NotReady { cluster: self.cluster.clone(), reason: reason.to_owned() }
    }

    /// `pg_ctl start -w` on a free port; retries with another port if the
    /// one picked got taken in the meantime.
    fn start_server(&mut self) -> Result<(), EmbeddedError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = free_port()?;
            let log_offset = fs::metadata(&self.log_file).map(|m| m.len()).unwrap_or(0);
            let mut cmd = self.pg_command(&self.bins.pg_ctl);
            cmd.arg("start")
                .arg("-D")
                .arg(&self.cluster)
                .arg("-l")
                .arg(&self.log_file)
                .args(["-w", "-t", &TIMEOUT_SECS.to_string()])
                .arg("-o")
                .arg(format!("-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=''"))
                .env("HOME", &self.cluster);
            let (_, result) = run_captured(&mut cmd, None)?;
            match result {
                Ok(_) => {
                    self.port = port;
                    tracing::info!("started embedded PostgreSQL on 127.0.0.1:{port}");
                    return Ok(());
                }
                Err(EmbeddedError::Command { command, status, output }) => {
                    let log = log_tail(&self.log_file, log_offset);
                    let port_taken = log.contains("could not bind") || log.contains("Address already in use");
                    if port_taken && attempt < START_ATTEMPTS {
                        tracing::warn!("port {port} got taken; starting PostgreSQL on another port");
                        continue;
                    }
                    let output =
                        format!("{}\n--- last lines of {} ---\n{}", output.trim_end(), self.log_file.display(), log);
                    return Err(EmbeddedError::Command { command, status, output });
                }
                Err(e) => return Err(e),
            }
        }
    }

    // ---- helpers --------------------------------------------------------

    /// A command for a PostgreSQL program: run as the unprivileged user when
    /// root, from the data directory, without PG* variables that could
    /// point it elsewhere.
    fn pg_command(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.current_dir(&self.data_dir);
        for var in ["PGDATA", "PGPORT", "PGHOST", "PGUSER", "PGDATABASE", "PGOPTIONS"] {
            cmd.env_remove(var);
        }
        if let Some(user) = &self.run_as {
            // std drops the supplementary groups when uid is set.
            cmd.gid(user.gid).uid(user.uid);
            cmd.env("USER", &user.name).env("LOGNAME", &user.name);
        }
        cmd
    }

    fn chown_to_run_as(&self, path: &Path) -> Result<(), EmbeddedError> {
        if let Some(user) = &self.run_as {
            std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid))
                .ctx(|| format!("cannot change the owner of {} to {}", path.display(), user.name))?;
        }
        Ok(())
    }
}

// ---- postmaster.pid -------------------------------------------------------

struct PidFile {
    pid: i32,
    port: u16,
    status: Option<String>,
}

impl PidFile {
    /// Line 1: PID, line 4: port, line 8: status (PostgreSQL >= 10).
    fn parse(text: &str) -> Option<PidFile> {
        let lines: Vec<&str> = text.lines().collect();
        let pid = lines.first()?.trim().parse().ok()?;
        let port = lines.get(3).and_then(|l| l.trim().parse().ok()).unwrap_or(0);
        let status = lines.get(7).map(|l| l.trim().to_owned()).filter(|s| !s.is_empty());
        Some(PidFile { pid, port, status })
    }
}

enum PidCheck {
    /// The cluster's server, or we cannot tell otherwise.
    Ours,
    /// Alive, but not a PostgreSQL server running in `cluster`.
    Foreign,
    /// Dead, not yet reaped.
    Zombie,
}

/// What Linux `/proc` says about the PID from `postmaster.pid` (which
/// pg_ctl already found alive). Without `/proc`, `Ours`.
fn check_pid(pid: i32, cluster: &Path) -> PidCheck {
    if pid <= 0 {
        return PidCheck::Ours;
    }
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return PidCheck::Ours;
    };
    // "<pid> (<comm>) <state> ..."; comm may contain spaces and parens.
    let state = stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().next());
    if matches!(state, Some("Z") | Some("X") | Some("x")) {
        return PidCheck::Zombie;
    }
    let comm = stat.find('(').zip(stat.rfind(')')).map(|(a, b)| &stat[a + 1..b]).unwrap_or("");
    if !(comm.starts_with("postgres") || comm.starts_with("postmaster")) {
        return PidCheck::Foreign;
    }
    // The postmaster's working directory is its data directory (readable
    // for our own processes, or as root). Compared by device and inode, so
    // symlinks and renames don't matter.
    match (fs::metadata(format!("/proc/{pid}/cwd")), fs::metadata(cluster)) {
        (Ok(cwd), Ok(dir)) if (cwd.dev(), cwd.ino()) != (dir.dev(), dir.ino()) => PidCheck::Foreign,
        _ => PidCheck::Ours,
    }
}

// ---- binaries -------------------------------------------------------------

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).filter(|dir| dir.is_absolute()).map(|dir| dir.join(name)).find(|p| is_executable(p))
}

fn binaries_in(dir: &Path) -> Option<Binaries> {
    let bins = Binaries { initdb: dir.join("initdb"), pg_ctl: dir.join("pg_ctl"), postgres: dir.join("postgres") };
    (is_executable(&bins.initdb) && is_executable(&bins.pg_ctl) && is_executable(&bins.postgres)).then_some(bins)
}

/// `initdb`, `pg_ctl` (and `postgres`, which ships next to `initdb`).
///
/// An existing cluster of major version `cluster_version` prefers
/// `/usr/lib/postgresql/<version>/bin` (a newer server cannot run it). Else
/// PATH first, then the highest version under `/usr/lib/postgresql/*/bin`.
fn find_binaries(cluster_version: Option<&str>) -> Option<Binaries> {
    if let Some(version) = cluster_version {
        let dir = Path::new("/usr/lib/postgresql").join(version).join("bin");
        if let Some(bins) = binaries_in(&dir) {
            return Some(bins);
        }
    }
    if let (Some(initdb), Some(pg_ctl)) = (which("initdb"), which("pg_ctl")) {
        // PATH often holds symlinks (e.g. /usr/local/bin/initdb ->
        // /usr/lib/postgresql/15/bin/initdb): look for `postgres` next to
        // the real initdb first.
        let postgres = fs::canonicalize(&initdb)
            .ok()
            .and_then(|real| real.parent().map(|d| d.join("postgres")))
            .filter(|p| is_executable(p))
            .or_else(|| which("postgres"));
        if let Some(postgres) = postgres {
            return Some(Binaries { initdb, pg_ctl, postgres });
        }
    }
    let mut versions: Vec<(Vec<u32>, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let name = entry.file_name().to_str()?.to_owned();
            let key = name.split('.').map(|part| part.parse::<u32>()).collect::<Result<Vec<_>, _>>().ok()?;
            Some((key, entry.path().join("bin")))
        })
        .collect();
    versions.sort();
    versions.into_iter().rev().find_map(|(_, dir)| binaries_in(&dir))
}

// ---- users and permissions ------------------------------------------------

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Looks up a user by name.
fn lookup_user(name: &str) -> Option<RunAs> {
    let cname = CString::new(name).ok()?;
    // SAFETY: forwards valid pointers to getpwnam_r.
    lookup_passwd(|pwd, buf, len, result| unsafe { libc::getpwnam_r(cname.as_ptr(), pwd, buf, len, result) })
}

/// Looks up a user by uid.
fn lookup_uid(uid: u32) -> Option<RunAs> {
    // SAFETY: forwards valid pointers to getpwuid_r.
    lookup_passwd(|pwd, buf, len, result| unsafe { libc::getpwuid_r(uid, pwd, buf, len, result) })
}

/// Calls getpwnam_r/getpwuid_r with a growing buffer.
fn lookup_passwd(
    mut call: impl FnMut(*mut libc::passwd, *mut libc::c_char, libc::size_t, *mut *mut libc::passwd) -> libc::c_int,
) -> Option<RunAs> {
    let mut buf: Vec<libc::c_char> = vec![0; 1024];
    loop {
        // SAFETY: passwd is plain data (all-zero is a valid value).
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = call(&mut pwd, buf.as_mut_ptr(), buf.len(), &mut result);
        if rc == libc::ERANGE && buf.len() < (1 << 20) {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        if rc != 0 || result.is_null() {
            return None;
        }
        // SAFETY: pw_name points into buf, NUL-terminated.
        let name = unsafe { CStr::from_ptr(pwd.pw_name) }.to_string_lossy().into_owned();
        return Some(RunAs { name, uid: pwd.pw_uid, gid: pwd.pw_gid });
    }
}

/// When root: the owner of an existing (non-root-owned) cluster, else the
/// `postgres` user, else `nobody`.
fn choose_run_as(cluster: &Path) -> Result<RunAs, EmbeddedError> {
    if let Ok(meta) = fs::metadata(cluster) {
        if meta.uid() != 0 {
            return Ok(match lookup_uid(meta.uid()) {
                Some(user) => user,
                None => RunAs { name: format!("uid {}", meta.uid()), uid: meta.uid(), gid: meta.gid() },
            });
        }
    }
    ["postgres", "nobody"]
        .into_iter()
        .filter_map(lookup_user)
        .find(|u| u.uid != 0)
        .ok_or(EmbeddedError::NoUnprivilegedUser)
}

/// Makes sure `user` can traverse `dir` and every ancestor of it, adding
/// only the o+x bit where it is missing.
fn ensure_traversable(dir: &Path, user: &RunAs) -> Result<(), EmbeddedError> {
    for ancestor in dir.ancestors() {
        let meta = fs::metadata(ancestor).ctx(|| format!("cannot stat {}", ancestor.display()))?;
        let mode = meta.permissions().mode();
        let can_traverse = if meta.uid() == user.uid {
            mode & 0o100 != 0
        } else if meta.gid() == user.gid {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        };
        if !can_traverse {
            let new_mode = (mode & 0o7777) | 0o001;
            fs::set_permissions(ancestor, fs::Permissions::from_mode(new_mode))
                .ctx(|| format!("cannot add o+x to {}", ancestor.display()))?;
            tracing::warn!(
                "added o+x to {} (mode {:o} -> {:o}) so that the PostgreSQL user {} can reach \
                 its data directory {}",
                ancestor.display(),
                mode & 0o7777,
                new_mode,
                user.name,
                dir.display()
            );
        }
    }
    Ok(())
}

fn chown_recursive(path: &Path, user: &RunAs) -> Result<(), EmbeddedError> {
    std::os::unix::fs::lchown(path, Some(user.uid), Some(user.gid))
        .ctx(|| format!("cannot change the owner of {}", path.display()))?;
    let meta = fs::symlink_metadata(path).ctx(|| format!("cannot stat {}", path.display()))?;
    if meta.is_dir() {
        for entry in fs::read_dir(path).ctx(|| format!("cannot list {}", path.display()))? {
            let entry = entry.ctx(|| format!("cannot list {}", path.display()))?;
            chown_recursive(&entry.path(), user)?;
        }
    }
    Ok(())
}

// ---- files ----------------------------------------------------------------

fn generate_password() -> String {
    rand::thread_rng().sample_iter(&Alphanumeric).take(PASSWORD_LEN).map(char::from).collect()
}

fn read_password(path: &Path) -> Result<Option<String>, EmbeddedError> {
    match fs::read_to_string(path) {
        Ok(text) => {
            let password = text.trim().to_owned();
            Ok((!password.is_empty()).then_some(password))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(EmbeddedError::io(format!("cannot read {}", path.display()), e)),
    }
}

/// Writes the password file atomically, mode 0600, owned by us.
fn write_password(path: &Path, password: &str) -> Result<(), EmbeddedError> {
    let tmp = path.with_extension("password.tmp");
    let _ = fs::remove_file(&tmp);
    {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .ctx(|| format!("cannot create {}", tmp.display()))?;
        file.write_all(format!("{password}\n").as_bytes())
            .and_then(|_| file.sync_all())
            .ctx(|| format!("cannot write {}", tmp.display()))?;
    }
    fs::rename(&tmp, path).ctx(|| format!("cannot rename {} to {}", tmp.display(), path.display()))
}

/// A file (mode 0600) removed on drop.
struct TempFile {
    path: PathBuf,
}

impl TempFile {
    fn create(path: &Path, contents: &[u8]) -> Result<Self, EmbeddedError> {
        let _ = fs::remove_file(path);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .ctx(|| format!("cannot create {}", path.display()))?;
        let temp = TempFile { path: path.to_owned() };
        file.write_all(contents).ctx(|| format!("cannot write {}", path.display()))?;
        Ok(temp)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Opens (creating) a lock file. std opens it close-on-exec, so the
/// PostgreSQL programs we spawn never inherit (and so never hold) its lock.
fn open_lock_file(path: &Path) -> Result<File, EmbeddedError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .ctx(|| format!("cannot open {}", path.display()))
}

/// flock(2), retried when a signal interrupts it.
fn flock(file: &File, operation: libc::c_int) -> io::Result<()> {
    loop {
        // SAFETY: the fd is valid while `file` lives.
        if unsafe { libc::flock(file.as_raw_fd(), operation) } == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// An exclusive advisory lock (flock) on a file, released on drop.
struct DirLock {
    _file: File,
}

impl DirLock {
    fn acquire(path: &Path) -> Result<Self, EmbeddedError> {
        let file = open_lock_file(path)?;
        flock(&file, libc::LOCK_EX).ctx(|| format!("cannot lock {}", path.display()))?;
        Ok(DirLock { _file: file })
    }
}

/// One user's share of the cluster: a shared flock on `pg.users`, held
/// from `start` until `release` (or the process's end). Each handle opens
/// the file itself, so two handles in one process count as two users.
///
/// Every lock change happens under the DirLock, and exclusive locks are
/// only ever tried without waiting, so no one ever waits on this file.
struct UsersLock {
    file: File,
    path: PathBuf,
}

impl UsersLock {
    fn share(path: &Path) -> Result<Self, EmbeddedError> {
        let lock = UsersLock { file: open_lock_file(path)?, path: path.to_owned() };
        lock.hold_shared()?;
        Ok(lock)
    }

    /// Whether we are the cluster's only user: tries to turn our share into
    /// an exclusive lock, without waiting. When that fails our share may be
    /// gone (flock converts by unlocking first, as on Linux): only unlock or
    /// give up afterwards.
    fn try_sole(&self) -> Result<bool, EmbeddedError> {
        match flock(&self.file, libc::LOCK_EX | libc::LOCK_NB) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(EmbeddedError::io(format!("cannot lock {}", self.path.display()), e)),
        }
    }

    /// Takes a shared lock (turning an exclusive one back into it).
    fn hold_shared(&self) -> Result<(), EmbeddedError> {
        flock(&self.file, libc::LOCK_SH).ctx(|| format!("cannot lock {}", self.path.display()))
    }

    fn unlock(&self) -> Result<(), EmbeddedError> {
        flock(&self.file, libc::LOCK_UN).ctx(|| format!("cannot unlock {}", self.path.display()))
    }
}

/// The last lines of the log written since `offset`.
fn log_tail(path: &Path, offset: u64) -> String {
    let mut text = Vec::new();
    let read = File::open(path).and_then(|mut f| {
        let len = f.metadata()?.len();
        // Cap what we read: the interesting part is at the end.
        let start = offset.max(len.saturating_sub(64 * 1024));
        f.seek(SeekFrom::Start(start))?;
        f.read_to_end(&mut text)
    });
    if let Err(e) = read {
        return format!("(cannot read {}: {e})", path.display());
    }
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    if lines.is_empty() {
        return "(empty)".to_owned();
    }
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

fn free_port() -> Result<u16, EmbeddedError> {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).ctx(|| "cannot find a free port on 127.0.0.1".to_owned())?;
    let port = listener.local_addr().ctx(|| "cannot find a free port on 127.0.0.1".to_owned())?.port();
    Ok(port)
}

// ---- running commands -----------------------------------------------------

fn command_line(cmd: &Command) -> String {
    fn quote(s: &std::ffi::OsStr) -> String {
        let s = s.to_string_lossy();
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_=./:,+@%".contains(&b)) {
            s.into_owned()
        } else {
            format!("'{}'", s.replace('\'', r"'\''"))
        }
    }
    std::iter::once(cmd.get_program()).chain(cmd.get_args()).map(quote).collect::<Vec<_>>().join(" ")
}

fn describe_status(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => status.to_string(),
    }
}

/// Runs a command (stdin: `input` or /dev/null), capturing its output.
/// Returns the output and, as a `Result`, whether it succeeded (with the
/// error already built). Spawn failures are returned as `Err` directly.
fn run_captured(cmd: &mut Command, input: Option<&[u8]>) -> Result<(Output, Result<(), EmbeddedError>), EmbeddedError> {
    let line = command_line(cmd);
    cmd.stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().ctx(|| format!("cannot run `{line}`"))?;
    if let Some(input) = input {
        let mut stdin = child.stdin.take().expect("stdin is piped");
        // A failed write shows up as the program's error output/status.
        let _ = stdin.write_all(input);
    }
    let output = child.wait_with_output().ctx(|| format!("cannot wait for `{line}`"))?;
    let result = if output.status.success() {
        Ok(())
    } else {
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr);
        if !text.is_empty() && !text.ends_with('\n') && !stderr.is_empty() {
            text.push('\n');
        }
        text.push_str(&stderr);
        Err(EmbeddedError::Command { command: line, status: describe_status(output.status), output: text })
    };
    Ok((output, result))
}

fn run_checked(cmd: &mut Command, input: Option<&[u8]>) -> Result<Output, EmbeddedError> {
    let (output, result) = run_captured(cmd, input)?;
    result.map(|()| output)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_postmaster_pid() {
        let text = "4242\n/data/pg\n1700000000\n54321\n\n127.0.0.1\n  1234567     65538\nready   \n";
        let info = PidFile::parse(text).unwrap();
        assert_eq!(info.pid, 4242);
        assert_eq!(info.port, 54321);
        assert_eq!(info.status.as_deref(), Some("ready"));
        assert!(PidFile::parse("").is_none());
    }

    #[test]
    fn password_is_long_and_alphanumeric() {
        let p = generate_password();
        assert!(p.len() >= 32);
        assert!(p.bytes().all(|b| b.is_ascii_alphanumeric()));
    }

    #[test]
    fn command_lines_are_quoted() {
        let mut cmd = Command::new("/usr/bin/pg_ctl");
        cmd.args(["-o", "-p 5 -c x=''", "start"]);
        assert_eq!(command_line(&cmd), r"/usr/bin/pg_ctl -o '-p 5 -c x='\'''\''' start");
    }

    #[test]
    fn debug_hides_password() {
        let pg = EmbeddedPostgres {
            data_dir: "/d".into(),
            cluster: "/d/pg".into(),
            log_file: "/d/pg.log".into(),
            bins: Binaries { initdb: "initdb".into(), pg_ctl: "pg_ctl".into(), postgres: "postgres".into() },
            run_as: None,
            port: 5,
            password: "s3cretpassword".into(),
            users: UsersLock { file: File::open("/dev/null").unwrap(), path: "/dev/null".into() },
        };
        assert!(!format!("{pg:?}").contains("s3cret"));
        assert!(pg.database_url().contains("s3cret"));
    }
}
