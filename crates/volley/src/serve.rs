//! `volley serve`: merges flags, environment and the config file, then runs the server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use volley_server::Config;

#[derive(clap::Args)]
pub struct ServeArgs {
    /// TOML configuration file (flags and environment variables override it).
    #[arg(long, env = "VOLLEY_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "VOLLEY_LISTEN")]
    listen: Option<SocketAddr>,
    /// Database URL [default: sqlite://volley.db].
    #[arg(long, env = "VOLLEY_DATABASE")]
    database: Option<String>,
    /// Directory of flow files to publish at start-up.
    #[arg(long, env = "VOLLEY_FLOWS")]
    flows: Option<PathBuf>,
    /// Do not publish the built-in demo flows.
    #[arg(long)]
    no_demo: bool,
    /// Public base URL (used in embed snippets).
    #[arg(long, env = "VOLLEY_PUBLIC_URL")]
    public_url: Option<String>,
    /// Admin API key (otherwise generated and printed once on first start).
    #[arg(long, env = "VOLLEY_ADMIN_KEY", hide_env_values = true)]
    admin_key: Option<String>,
    /// Secret for signed identities (HMAC-SHA256 of the user id).
    #[arg(long, env = "VOLLEY_IDENTITY_SECRET", hide_env_values = true)]
    identity_secret: Option<String>,
    /// Human-like pacing of bot messages: on or off.
    #[arg(long, env = "VOLLEY_PACING", value_parser = ["on", "off"])]
    pacing: Option<String>,
    /// Skip fsync on commit (faster, survives process crashes but not power loss).
    #[arg(long, env = "VOLLEY_NO_FSYNC")]
    no_fsync: bool,
    /// Log as JSON lines.
    #[arg(long, env = "VOLLEY_LOG_JSON")]
    log_json: bool,
    /// Let flows' HTTP steps call private, loopback and link-local addresses.
    #[arg(long, env = "VOLLEY_ALLOW_PRIVATE_HTTP")]
    allow_private_http: bool,
    /// Notification channels (boxed: they would make every command's arguments large).
    #[command(flatten)]
    channels: Box<ChannelArgs>,
}

/// Flags for the notification channels (`[channels]` in the file).
#[derive(clap::Args)]
struct ChannelArgs {
    /// SMTP relay for email notifications (`smtp://host:port`, `smtps://host`); turns them on.
    #[arg(long, env = "VOLLEY_SMTP_URL", hide_env_values = true)]
    smtp_url: Option<String>,
    /// Sender of email notifications (`Name <noreply@example.com>`).
    #[arg(long, env = "VOLLEY_SMTP_FROM")]
    smtp_from: Option<String>,
    /// SMTP user name.
    #[arg(long, env = "VOLLEY_SMTP_USERNAME")]
    smtp_username: Option<String>,
    /// SMTP password (pass it through the environment).
    #[arg(long, env = "VOLLEY_SMTP_PASSWORD", hide_env_values = true)]
    smtp_password: Option<String>,
    /// URL that receives notifications as signed JSON POSTs; turns them on.
    #[arg(long, env = "VOLLEY_WEBHOOK_URL")]
    webhook_url: Option<String>,
    /// Signing secret of notification webhooks (pass it through the environment).
    #[arg(long, env = "VOLLEY_WEBHOOK_SECRET", hide_env_values = true)]
    webhook_secret: Option<String>,
}

fn config(args: ServeArgs) -> anyhow::Result<Config> {
    let mut c = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
            Config::from_toml(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        }
        None => Config::default(),
    };
    if let Some(v) = args.listen {
        c.listen = v;
    }
    if let Some(v) = args.database {
        c.database = v;
    }
    if args.flows.is_some() {
        c.flows = args.flows;
    }
    if args.no_demo {
        c.demo = false;
    }
    if args.public_url.is_some() {
        c.public_url = args.public_url;
    }
    if args.admin_key.is_some() {
        c.admin_key = args.admin_key;
    }
    if args.identity_secret.is_some() {
        c.identity_secret = args.identity_secret;
    }
    if let Some(p) = args.pacing {
        c.pacing = p == "on";
    }
    if args.no_fsync {
        c.durable = false;
    }
    if args.log_json {
        c.log_json = true;
    }
    if args.allow_private_http {
        c.allow_private_http = true;
    }
    let (email, webhook) = (&mut c.channels.email, &mut c.channels.webhook);
    let a = *args.channels;
    for (setting, arg) in [
        (&mut email.url, a.smtp_url),
        (&mut email.from, a.smtp_from),
        (&mut email.username, a.smtp_username),
        (&mut email.password, a.smtp_password),
        (&mut webhook.url, a.webhook_url),
        (&mut webhook.secret, a.webhook_secret),
    ] {
        if arg.is_some() {
            *setting = arg;
        }
    }
    Ok(c)
}

pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let config = config(args)?;
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("VOLLEY_LOG").unwrap_or_else(|_| "info".into());
    if config.log_json {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let started = std::time::Instant::now();
        let database = config.database.clone();
        let running = volley_server::start(config, Arc::new(volley_server::SystemClock))
            .await
            .map_err(|e| anyhow::anyhow!(e))?;
        let flows = running.app.flows.all().len();
        println!(
            "Volley is serving {flows} flows at http://{} (ready in {} ms)",
            running.addr,
            started.elapsed().as_millis()
        );
        println!("  data: {}", database.trim_start_matches("sqlite://"));
        if let Some(key) = &running.new_admin_key {
            println!("  admin API key (shown once, store it now): {key}");
        }
        println!("  try it: open http://{}/ in a browser", running.addr);
        shutdown_signal().await;
        println!("shutting down…");
        running.shutdown().await;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("signal handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
