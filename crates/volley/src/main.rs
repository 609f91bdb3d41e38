//! The `volley` command: argument parsing and glue around the library crates.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod admin;
mod chat;
mod files;
mod serve;
mod test_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "volley",
    version,
    about = "Interactive, quasi-real-time conversations"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check flow and event files: precise errors with file:line:col. Exit 1 when any has errors.
    Check {
        /// Flow or event files, or directories (searched recursively for *.yaml / *.yml).
        #[arg(default_value = ".")]
        paths: Vec<PathBuf>,
        /// Print diagnostics as JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Talk to a flow in the terminal.
    Chat(chat::ChatArgs),
    /// Run conversation transcripts (*.transcript) against their flows.
    Test {
        /// Transcript files or directories.
        #[arg(default_value = ".")]
        paths: Vec<PathBuf>,
        /// Rewrite transcripts with the actual output (also VOLLEY_UPDATE=1).
        #[arg(long)]
        update: bool,
    },
    /// Print the JSON Schema of flow files (for editor autocompletion).
    Schema,
    /// Run the server: the HTTP API, the WebSocket protocol and the web widget.
    Serve(serve::ServeArgs),
    /// Console accounts: create users, reset passwords (prints one-time setup links).
    #[command(subcommand)]
    Admin(admin::AdminCommand),
    /// Copy the SQLite database into a new file, safely while the server runs, and
    /// check the copy (`PRAGMA integrity_check`).
    Backup {
        /// The new file (must not exist).
        out: PathBuf,
        #[command(flatten)]
        target: admin::Target,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check { paths, json } => check(&paths, json),
        Command::Chat(args) => chat::run(args),
        Command::Test { paths, update } => {
            let update = update || std::env::var("VOLLEY_UPDATE").is_ok_and(|v| v == "1");
            test_cmd::run(&paths, update)
        }
        Command::Serve(args) => serve::run(args),
        Command::Admin(command) => admin::run(command),
        Command::Backup { out, target } => admin::backup(&out, &target),
        Command::Schema => {
            println!(
                "{}",
                serde_json::to_string_pretty(&volley_flow::schema()).expect("schema is JSON")
            );
            Ok(ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn check(paths: &[PathBuf], json: bool) -> anyhow::Result<ExitCode> {
    let files = files::find(paths, files::is_flow_file)?;
    if files.is_empty() {
        anyhow::bail!(
            "no flow files (*.yaml, *.yml) found in {}",
            files::show_paths(paths)
        );
    }
    let color = files::use_color();
    let (mut errors, mut warnings) = (0, 0);
    let mut ids: std::collections::HashMap<String, PathBuf> = std::collections::HashMap::new();
    let mut event_ids: std::collections::HashMap<String, PathBuf> =
        std::collections::HashMap::new();
    let mut events = 0;
    for path in &files {
        let src = std::fs::read_to_string(path)?;
        let name = path.display().to_string();
        if volley_events::is_event_source(&src) {
            let checked = volley_events::compile(&src);
            events += 1;
            for d in &checked.diagnostics {
                if json {
                    let mut v = serde_json::to_value(d)?;
                    v["file"] = serde_json::json!(name);
                    println!("{v}");
                } else {
                    eprint!("{}", d.render(&name, &src, color));
                }
            }
            errors += checked.errors();
            if let Some(id) = checked.id.filter(|_| checked.event.is_some())
                && let Some(other) = event_ids.insert(id.clone(), path.clone())
            {
                eprintln!(
                    "{name}: error[duplicate-event]: event id `{id}` is also used by {}",
                    other.display()
                );
                errors += 1;
            }
            continue;
        }
        let checked = volley_flow::check(&src);
        for d in &checked.diagnostics {
            if json {
                let mut v = serde_json::to_value(d)?;
                v["file"] = serde_json::json!(name);
                println!("{v}");
            } else {
                eprint!("{}", d.render(&name, &src, color));
            }
        }
        errors += checked.errors();
        warnings += checked.warnings();
        if let Some(id) = checked.id.clone().filter(|_| checked.errors() == 0)
            && let Some(other) = ids.insert(id.clone(), path.clone())
        {
            eprintln!(
                "{name}: error[duplicate-flow]: flow id `{id}` is also used by {}",
                other.display()
            );
            errors += 1;
        }
    }
    let plural = |n: usize, w: &str| format!("{n} {w}{}", if n == 1 { "" } else { "s" });
    let checked_what = if events > 0 {
        format!(
            "{}, {}",
            plural(files.len() - events, "flow"),
            plural(events, "event")
        )
    } else {
        plural(files.len(), "flow")
    };
    eprintln!(
        "checked {checked_what}: {}, {}",
        plural(errors, "error"),
        plural(warnings, "warning")
    );
    Ok(if errors > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
