//! `volley serve`: merges flags, environment and the config file, then runs the server.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::ArgAction;
use clap::builder::BoolishValueParser;
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
    /// Directory of flow and event files to publish at start-up.
    #[arg(long, env = "VOLLEY_FLOWS")]
    flows: Option<PathBuf>,
    /// Do not publish the built-in demo flows and demo event.
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
    // The on/off flags take no value on the command line; their environment variables
    // take 1/0, true/false, yes/no or on/off.
    /// Skip fsync on commit (faster, survives process crashes but not power loss).
    #[arg(long, env = "VOLLEY_NO_FSYNC", action = ArgAction::SetTrue, value_parser = BoolishValueParser::new())]
    no_fsync: bool,
    /// Log as JSON lines.
    #[arg(long, env = "VOLLEY_LOG_JSON", action = ArgAction::SetTrue, value_parser = BoolishValueParser::new())]
    log_json: bool,
    /// Let flows' HTTP steps call private, loopback and link-local addresses.
    #[arg(long, env = "VOLLEY_ALLOW_PRIVATE_HTTP", action = ArgAction::SetTrue, value_parser = BoolishValueParser::new())]
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

/// The configuration file's settings (or the defaults), with the database and public
/// URL overridden when given: what `serve` and the admin commands share.
pub fn base_config(
    file: Option<&std::path::Path>,
    database: Option<String>,
    public_url: Option<String>,
) -> anyhow::Result<Config> {
    let mut c = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
            Config::from_toml(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        }
        None => Config::default(),
    };
    if let Some(v) = database {
        c.database = v;
    }
    if public_url.is_some() {
        c.public_url = public_url;
    }
    Ok(c)
}

fn config(args: ServeArgs) -> anyhow::Result<Config> {
    let mut c = base_config(args.config.as_deref(), args.database, args.public_url)?;
    if let Some(v) = args.listen {
        c.listen = v;
    }
    if args.flows.is_some() {
        c.flows = args.flows;
    }
    if args.no_demo {
        c.demo = false;
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
        let url = shown_url(&running.app.config, running.addr);
        let started = Started {
            flows: running.app.flows.all().len(),
            url: &url,
            ready_ms: started.elapsed().as_millis(),
            database: &database,
            new_admin_key: running.new_admin_key.as_deref(),
            new_admin_setup: running.new_admin_setup.as_deref(),
        };
        // stdout may be closed (`volley serve | head -1`): the server runs on regardless.
        let _ = started.print(&mut std::io::stdout().lock());
        shutdown_signal().await;
        let _ = writeln!(std::io::stdout().lock(), "shutting down…");
        running.shutdown().await;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// The URL people reach the server at: the public URL when set, else the address it
/// listens on (the port actually bound, when the configuration says 0).
fn shown_url(config: &Config, addr: SocketAddr) -> String {
    match &config.public_url {
        Some(_) => config.base_url(),
        None => format!("http://{addr}"),
    }
}

/// What `volley serve` prints once it is ready.
struct Started<'a> {
    flows: usize,
    /// The public URL when set, else the address the server listens on.
    url: &'a str,
    ready_ms: u128,
    database: &'a str,
    new_admin_key: Option<&'a str>,
    /// The path of the first admin's setup link.
    new_admin_setup: Option<&'a str>,
}

impl Started<'_> {
    fn print(&self, out: &mut impl Write) -> std::io::Result<()> {
        writeln!(
            out,
            "Volley is serving {} flows at {} (ready in {} ms)",
            self.flows, self.url, self.ready_ms
        )?;
        writeln!(
            out,
            "  data: {}",
            self.database.trim_start_matches("sqlite://")
        )?;
        if let Some(key) = self.new_admin_key {
            writeln!(out, "  admin API key (shown once, store it now): {key}")?;
        }
        if let Some(path) = self.new_admin_setup {
            writeln!(
                out,
                "  admin account: set its password at {}{path} (one-time link, shown once, valid 72 h)",
                self.url
            )?;
        }
        writeln!(out, "  try it: open {}/ in a browser", self.url)?;
        out.flush()
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Args, Command};

    /// What an on/off flag's environment variable value parses to: the flag is made to
    /// take a value on the command line, parsed by the same parser as its variable.
    fn env_value(flag: &str, value: &str) -> Result<bool, clap::Error> {
        let id = flag.replace('-', "_");
        let m = ServeArgs::augment_args(Command::new("serve"))
            .mut_arg(&id, |a| a.action(ArgAction::Set))
            .try_get_matches_from(["serve", &format!("--{flag}"), value])?;
        Ok(*m.get_one::<bool>(&id).expect("a value"))
    }

    #[test]
    fn on_off_environment_variables_take_the_usual_spellings() {
        for flag in ["no-fsync", "log-json", "allow-private-http"] {
            for on in ["1", "true", "yes", "on", "TRUE", "Yes"] {
                assert!(env_value(flag, on).unwrap(), "{flag}={on}");
            }
            for off in ["0", "false", "no", "off", "FALSE", "Off"] {
                assert!(!env_value(flag, off).unwrap(), "{flag}={off}");
            }
            assert!(env_value(flag, "maybe").is_err(), "{flag}=maybe");
        }
    }

    #[test]
    fn on_off_flags_take_no_value_on_the_command_line() {
        let cmd = ServeArgs::augment_args(Command::new("serve"));
        let m = cmd
            .clone()
            .try_get_matches_from(["serve", "--no-fsync", "--log-json"])
            .unwrap();
        assert!(m.get_flag("no_fsync") && m.get_flag("log_json"));
        assert!(
            cmd.try_get_matches_from(["serve", "--no-fsync=yes"])
                .is_err()
        );
    }

    #[test]
    fn the_start_up_lines_show_the_public_url_when_set() {
        let addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let mut config = Config::default();
        assert_eq!(shown_url(&config, addr), "http://127.0.0.1:8080");
        config.public_url = Some("https://chat.example.com/".into());
        let url = shown_url(&config, addr);
        assert_eq!(url, "https://chat.example.com");
        let mut out = Vec::new();
        Started {
            flows: 7,
            url: &url,
            ready_ms: 65,
            database: "sqlite://volley.db",
            new_admin_key: None,
            new_admin_setup: None,
        }
        .print(&mut out)
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "Volley is serving 7 flows at https://chat.example.com (ready in 65 ms)\n  \
             data: volley.db\n  \
             try it: open https://chat.example.com/ in a browser\n"
        );
    }

    #[test]
    fn a_closed_stdout_is_an_error_not_a_panic() {
        struct Closed;
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Err(std::io::ErrorKind::BrokenPipe.into())
            }
        }
        let started = Started {
            flows: 1,
            url: "http://127.0.0.1:8080",
            ready_ms: 1,
            database: "volley.db",
            new_admin_key: Some("vk_x"),
            new_admin_setup: Some("/console/setup?token=vs_x"),
        };
        let err = started.print(&mut Closed).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe);
    }
}
