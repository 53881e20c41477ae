//! `ferryd`: the Ferry server and its admin commands.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ferry::config::{DatabaseSettings, ServeSettings};
use ferry::domain::accounts::{self, NewUser};
use ferry::protocol::validate::{Email, Password};

#[derive(Parser)]
#[command(name = "ferryd", version, about = "Ferry server: share a project's files from an owner's machine")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP and WebSocket server.
    Serve(ServeSettings),
    /// Apply pending database migrations and exit.
    Migrate(DatabaseSettings),
    /// Rebuild one projection (or all) from the log, without downtime.
    Rebuild {
        /// Projection name; all when omitted.
        name: Option<String>,
        #[command(flatten)]
        database: DatabaseSettings,
    },
    /// Read both logs across projects, oldest first.
    Audit {
        /// Only this project.
        #[arg(long)]
        project: Option<uuid::Uuid>,
        /// Only events by this user or device.
        #[arg(long)]
        actor: Option<uuid::Uuid>,
        /// Only these event types (comma-separated).
        #[arg(long = "type")]
        event_type: Option<String>,
        /// From this time on (RFC 3339).
        #[arg(long)]
        from: Option<chrono::DateTime<chrono::Utc>>,
        /// Before this time (RFC 3339).
        #[arg(long)]
        to: Option<chrono::DateTime<chrono::Utc>>,
        #[arg(long, value_enum, default_value = "table")]
        format: AuditFormat,
        #[command(flatten)]
        database: DatabaseSettings,
    },
    /// Administration.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum AuditFormat {
    /// Aligned columns for people.
    Table,
    /// One JSON object per line.
    Json,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create a user account (optionally an admin).
    CreateUser {
        #[arg(long)]
        email: String,
        #[arg(long)]
        password: String,
        #[arg(long)]
        admin: bool,
        #[command(flatten)]
        database: DatabaseSettings,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    ferry::telemetry::init();
    match run(Cli::parse().command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("ferryd: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> Result<(), String> {
    let chain = |e: &(dyn std::error::Error + 'static)| ferry::telemetry::error_chain(e);
    match command {
        Command::Serve(settings) => {
            let server = ferry::server::Server::build(&settings).await.map_err(|e| chain(&e))?;
            server.run().await.map_err(|e| chain(&e))
        }
        Command::Migrate(database) => {
            let db = database.open().await.map_err(|e| chain(&e))?;
            db.close().await;
            println!("migrations applied");
            Ok(())
        }
        Command::Rebuild { name, database } => {
            let projections: Vec<_> = match &name {
                Some(name) => vec![ferry::projections::find(name).ok_or_else(|| {
                    let known: Vec<_> = ferry::projections::ALL.iter().map(|p| p.name).collect();
                    format!("no projection named {name:?} (known: {})", known.join(", "))
                })?],
                None => ferry::projections::ALL.iter().collect(),
            };
            let db = database.open().await.map_err(|e| chain(&e))?;
            let mut result = Ok(());
            for projection in projections {
                match ferry::projections::rebuild(&db.pool, projection).await {
                    Ok(r) => println!("rebuilt {} (version {}) from {} events", r.name, r.version, r.events_read),
                    Err(e) => {
                        result = Err(chain(&e));
                        break;
                    }
                }
            }
            db.close().await;
            result
        }
        Command::Audit { project, actor, event_type, from, to, format, database } => {
            let types = ferry::domain::events::parse_types(event_type.as_deref()).map_err(|e| e.to_string())?;
            let mut query = ferry::domain::events::AuditQuery {
                project_id: project,
                actor_id: actor,
                types,
                from,
                to,
                after_position: None,
                limit: 1000,
            };
            let db = database.open().await.map_err(|e| chain(&e))?;
            let printed = print_audit(&db.pool, &mut query, format).await;
            db.close().await;
            printed
        }
        Command::Admin { command: AdminCommand::CreateUser { email, password, admin, database } } => {
            let new = NewUser {
                email: Email::parse(&email).map_err(|e| e.to_string())?,
                password: Password::parse(&password).map_err(|e| e.to_string())?,
                display_name: None,
                is_admin: admin,
            };
            let db = database.open().await.map_err(|e| chain(&e))?;
            let created =
                accounts::create_user(&db.pool, &ferry::domain::passwords::PasswordWork::per_core(None, 1), new).await;
            db.close().await;
            let created = created.map_err(|e| chain(&e))?;
            println!(
                "created user {} <{}>{}",
                created.user.id,
                created.user.email,
                if admin { " (admin)" } else { "" }
            );
            Ok(())
        }
    }
}

/// Prints every matching event, a page at a time.
async fn print_audit(
    pool: &ferry::store::Pool,
    query: &mut ferry::domain::events::AuditQuery,
    format: AuditFormat,
) -> Result<(), String> {
    use std::io::Write;
    let chain = |e: &(dyn std::error::Error + 'static)| ferry::telemetry::error_chain(e);
    let client = pool.get().await.map_err(|e| chain(&e))?;
    let mut out = std::io::stdout().lock();
    if let AuditFormat::Table = format {
        let _ = writeln!(
            out,
            "{:>10}  {:<32}  {:<36}  {:>6}  {:<24}  actor",
            "position", "created_at", "project", "seq", "type"
        );
    }
    loop {
        let page = ferry::domain::events::audit(&client, query).await.map_err(|e| chain(&e))?;
        for e in &page.events {
            let line = match format {
                AuditFormat::Json => serde_json::to_string(e).expect("events serialize"),
                AuditFormat::Table => {
                    let actor =
                        e.event.actor.device_id.or(e.event.actor.user_id).map_or("-".to_owned(), |id| id.to_string());
                    format!(
                        "{:>10}  {:<32}  {:<36}  {:>6}  {:<24}  {actor}",
                        e.position,
                        e.event.created_at.to_rfc3339(),
                        e.project_id,
                        e.event.seq,
                        e.event.data.event_type().as_str()
                    )
                }
            };
            if writeln!(out, "{line}").is_err() {
                return Ok(()); // the reader went away (e.g. `| head`)
            }
        }
        match page.events.last() {
            Some(last) if page.next_cursor.is_some() => query.after_position = Some(last.position),
            _ => return Ok(()),
        }
    }
}
