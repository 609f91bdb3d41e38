//! `volley admin`: account commands run against the database directly (the server may
//! be running or not). Glue only: the rules live in `volley_server::auth`.

use std::path::PathBuf;
use std::process::ExitCode;

use volley_server::auth;

/// Where the database is: the same flags, environment and file as `volley serve`.
#[derive(clap::Args)]
pub struct Target {
    /// TOML configuration file (its `database`, `public_url` and `durable` are used).
    #[arg(long, env = "VOLLEY_CONFIG")]
    config: Option<PathBuf>,
    /// Database URL [default: sqlite://volley.db].
    #[arg(long, env = "VOLLEY_DATABASE")]
    database: Option<String>,
    /// Public base URL, to print full links [default: http://<listen address>].
    #[arg(long, env = "VOLLEY_PUBLIC_URL")]
    public_url: Option<String>,
}

/// `volley backup OUT`: a consistent copy of the SQLite database, taken while the
/// server may be running, then checked.
pub fn backup(out: &std::path::Path, target: &Target) -> anyhow::Result<ExitCode> {
    let config = crate::serve::base_config(
        target.config.as_deref(),
        target.database.clone(),
        target.public_url.clone(),
    )?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let b = runtime.block_on(volley_server::backup(&config.database, out))?;
    println!(
        "backed up {} conversations and {} log entries to {} ({} bytes); integrity check: ok",
        b.conversations,
        b.events,
        out.display(),
        b.bytes
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Subcommand)]
pub enum AdminCommand {
    /// Create a console user and print their one-time setup link.
    CreateUser {
        #[arg(long)]
        email: String,
        #[arg(long)]
        name: String,
        #[arg(long, value_parser = ["admin", "agent", "moderator"])]
        role: String,
        /// Conversations an agent handles at once.
        #[arg(long, default_value_t = auth::DEFAULT_CAPACITY)]
        capacity: i64,
        #[command(flatten)]
        target: Target,
    },
    /// Print a new setup link for a user and sign them out everywhere.
    ResetPassword {
        #[arg(long)]
        email: String,
        #[command(flatten)]
        target: Target,
    },
}

pub fn run(command: AdminCommand) -> anyhow::Result<ExitCode> {
    let target = match &command {
        AdminCommand::CreateUser { target, .. } | AdminCommand::ResetPassword { target, .. } => {
            target
        }
    };
    let config = crate::serve::base_config(
        target.config.as_deref(),
        target.database.clone(),
        target.public_url.clone(),
    )?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let store = volley_server::open_store(&config)
            .await
            .map_err(|e| anyhow::anyhow!(e))?;
        let now = jiff::Timestamp::now().as_millisecond();
        let result = match command {
            AdminCommand::CreateUser {
                email,
                name,
                role,
                capacity,
                ..
            } => {
                let new = auth::NewUser {
                    email,
                    name,
                    role: auth::Role::parse(&role).expect("clap checked the role"),
                    capacity: Some(capacity),
                };
                auth::create_user(store.as_ref(), now, new)
                    .await
                    .map(|(user, token)| (format!("created {} ({})", user.email, user.role), token))
            }
            AdminCommand::ResetPassword { email, .. } => {
                auth::reset_password(store.as_ref(), now, &email)
                    .await
                    .map(|(user, token)| {
                        (format!("{} is signed out everywhere", user.email), token)
                    })
            }
        };
        store.close().await;
        let (what, token) = result.map_err(|e| anyhow::anyhow!(e.message))?;
        println!("{what}");
        println!(
            "setup link (one-time, valid {} h): {}{}",
            auth::SETUP_LINK_MS / 3_600_000,
            config.base_url(),
            auth::setup_path(&token)
        );
        Ok(ExitCode::SUCCESS)
    })
}
