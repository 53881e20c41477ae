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
    /// Administration.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
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
    let chain = |e: &(dyn std::error::Error + 'static)| ferry::api::error_chain(e);
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
        Command::Admin { command: AdminCommand::CreateUser { email, password, admin, database } } => {
            let new = NewUser {
                email: Email::parse(&email).map_err(|e| e.to_string())?,
                password: Password::parse(&password).map_err(|e| e.to_string())?,
                display_name: None,
                is_admin: admin,
            };
            let db = database.open().await.map_err(|e| chain(&e))?;
            let created = accounts::create_user(&db.pool, new).await;
            db.close().await;
            let created = created.map_err(|e| chain(&e))?;
            println!("created user {} <{}>{}", created.user.id, created.user.email, if admin { " (admin)" } else { "" });
            Ok(())
        }
    }
}
