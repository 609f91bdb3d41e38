//! `volley chat`: a terminal conversation with a flow, with typing pauses and commands.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use jiff::Timestamp;
use rustyline::error::ReadlineError;
use volley_flow::transcript::Recorder;
use volley_flow::{
    Awaiting, Contact, Effect, Flow, Input, MessageKind, Question, QuestionType, markdown,
};

#[derive(clap::Args)]
pub struct ChatArgs {
    /// The flow file.
    flow: PathBuf,
    /// Skip typing pauses.
    #[arg(long)]
    fast: bool,
    /// Contact profile: `name=Ana,email=ana@example.com,timezone=Europe/Lisbon,plan=pro`.
    #[arg(long, default_value = "")]
    contact: String,
    /// Random seed (A/B splits, jitter).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Save the conversation as a transcript file.
    #[arg(long)]
    record: Option<PathBuf>,
}

const HELP: &str = "commands: /back  /skip  /restart  /vars  /wait (skip ahead to a pending wait)  \
/late (resume it too late)  /timeout  /resume (a person hands back)  /expire  /http STATUS JSON  \
/http-fail WHY  /quit";

pub fn run(args: ChatArgs) -> anyhow::Result<ExitCode> {
    let flow = crate::files::load_flow(&args.flow)?;
    let contact = parse_contact(&args.contact)?;
    let tz = contact.timezone.clone();
    let mut editor = rustyline::DefaultEditor::new()?;
    let mut recorder = Recorder::new(&flow.id, &contact, Timestamp::now(), args.seed);
    println!("{} — {}", flow.title, HELP);
    let who = match &flow.assistant.name {
        Some(n) => format!("{n} ({})", flow.assistant.label),
        None => flow.assistant.label.clone(),
    };
    let mut session = Session {
        flow: &flow,
        who,
        fast: args.fast,
        offset: jiff::SignedDuration::ZERO,
    };
    let first = flow.start(contact.clone(), session.now(), args.seed);
    recorder.effects(&first.effects, tz.as_deref());
    let mut state = first.state;
    let mut question = session.show(&first.effects);
    loop {
        if state.is_ended() {
            println!("(conversation ended — /restart or /quit)");
        }
        let line = match editor.readline("you › ") {
            Ok(l) => l,
            Err(ReadlineError::Interrupted | ReadlineError::Eof) => break,
            Err(e) => return Err(e.into()),
        };
        let line = line.trim().to_string();
        if line.is_empty() {
            continue;
        }
        let _ = editor.add_history_entry(&line);
        let input = match line.as_str() {
            "/quit" | "/exit" => break,
            "/help" => {
                println!("{HELP}");
                continue;
            }
            "/vars" => {
                println!("{}", serde_json::to_string_pretty(&state.vars())?);
                continue;
            }
            "/restart" => {
                let t = flow.start(contact.clone(), session.now(), args.seed);
                state = t.state;
                question = session.show(&t.effects);
                continue;
            }
            "/back" => Input::Back,
            "/skip" => Input::Skip,
            "/resume" => Input::Resume,
            "/timeout" => {
                if let Awaiting::Answer {
                    timeout_at: Some(t),
                    ..
                } = state.awaiting(&flow)
                {
                    session.skip_to(t);
                }
                Input::Timeout
            }
            "/wait" => match state.awaiting(&flow) {
                Awaiting::Wait { until, .. } => {
                    println!("(skipping ahead to {until})");
                    session.skip_to(until);
                    Input::Resume
                }
                _ => {
                    println!("(nothing is waiting)");
                    continue;
                }
            },
            "/late" => match state.awaiting(&flow) {
                Awaiting::Wait { until, .. } => {
                    let late = state
                        .wait_lateness(&flow)
                        .and_then(|l| l.late_from(until))
                        .unwrap_or(until);
                    println!("(skipping ahead to {late}, too late for the wait)");
                    session.skip_to(late);
                    Input::Late
                }
                _ => {
                    println!("(nothing is waiting)");
                    continue;
                }
            },
            "/expire" => Input::Expire,
            l if l.starts_with("/http-fail") => Input::HttpFailed {
                error: l["/http-fail".len()..].trim().to_string(),
            },
            l if l.starts_with("/http ") => {
                let rest = &l[6..];
                let (status, body) = rest.split_once(' ').unwrap_or((rest, "null"));
                Input::HttpResponse {
                    status: status.parse()?,
                    body: serde_json::from_str(body)?,
                }
            }
            _ => to_answer(&line, question.as_ref()),
        };
        recorder.input(&line);
        let turn = flow.handle(&state, input, session.now())?;
        recorder.effects(&turn.effects, tz.as_deref());
        state = turn.state;
        if let Some(q) = session.show(&turn.effects) {
            question = Some(q);
        } else if !matches!(state.awaiting(&flow), Awaiting::Answer { .. }) {
            question = None;
        }
    }
    if let Some(path) = args.record {
        std::fs::write(&path, recorder.finish())?;
        println!("transcript saved to {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

struct Session<'f> {
    flow: &'f Flow,
    who: String,
    fast: bool,
    /// How far `/wait` and `/timeout` moved the clock ahead.
    offset: jiff::SignedDuration,
}

impl Session<'_> {
    fn now(&self) -> Timestamp {
        Timestamp::now()
            .checked_add(self.offset)
            .unwrap_or(Timestamp::MAX)
    }

    fn skip_to(&mut self, t: Timestamp) {
        let gap = t.duration_since(self.now());
        if gap.is_positive() {
            self.offset += gap;
        }
    }

    /// Prints visible effects; returns the question now open, if any.
    fn show(&self, effects: &[Effect]) -> Option<Question> {
        let _ = self.flow;
        let mut open = None;
        for e in effects {
            match e {
                Effect::Message(m) => {
                    if m.delay_ms > 0 && !self.fast {
                        if m.typing {
                            print!("  {} is typing…", self.who);
                            let _ = std::io::stdout().flush();
                        }
                        std::thread::sleep(Duration::from_millis(m.delay_ms.min(10_000)));
                        if m.typing {
                            print!("\r\x1b[K");
                        }
                    }
                    let prefix = if m.kind == MessageKind::Invalid {
                        "⚠"
                    } else {
                        "🤖"
                    };
                    if let Some(t) = &m.text {
                        println!("{prefix} {}", markdown::to_plain(t).replace('\n', "\n   "));
                    }
                    for media in [&m.image, &m.video].into_iter().flatten() {
                        println!(
                            "   [{}]",
                            m.alt
                                .as_deref()
                                .map_or(media.clone(), |a| format!("{a}: {media}"))
                        );
                    }
                    for l in &m.links {
                        println!("   ↗ {} <{}>", l.label, l.url);
                    }
                }
                Effect::Ask(q) => {
                    print_question(q);
                    open = Some((**q).clone());
                }
                Effect::Handoff { queue, .. } => {
                    println!(
                        "   (handed to a person{} — /resume to hand back)",
                        queue
                            .as_ref()
                            .map(|q| format!(" in `{q}`"))
                            .unwrap_or_default()
                    )
                }
                Effect::Wait { until, .. } => {
                    println!("   (paused until {until} — /wait to skip ahead)")
                }
                Effect::Http { request, .. } => println!(
                    "   (HTTP {} {} — answer with /http 200 {{…}})",
                    request.method, request.url
                ),
                Effect::Webhook { request, .. } => {
                    println!("   (webhook {} {})", request.method, request.url)
                }
                Effect::Goal { name, value } => println!(
                    "   (goal `{name}`{})",
                    value.map(|v| format!(" = {v}")).unwrap_or_default()
                ),
                Effect::End { outcome } => println!("   (end: {outcome})"),
                Effect::Rejected { message, .. } => println!("   ({message})"),
                Effect::Error { message, .. } => println!("   (flow error: {message})"),
                _ => {}
            }
        }
        open
    }
}

fn print_question(q: &Question) {
    let mut hints = Vec::new();
    match q.input {
        QuestionType::Choice | QuestionType::Multiple => {
            let opts: Vec<String> = q
                .options
                .iter()
                .enumerate()
                .map(|(i, o)| format!("[{}] {}", i + 1, o.label))
                .collect();
            println!("   {}", opts.join("   "));
            if q.input == QuestionType::Multiple {
                hints.push("pick several: 1, 3".to_string());
            }
        }
        QuestionType::Checklist => {
            for (i, it) in q.items.iter().enumerate() {
                println!("   [{}] {}", i + 1, markdown::to_plain(&it.label));
            }
            hints.push(format!(
                "tick all: {}",
                (1..=q.items.len())
                    .map(|i| i.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            ));
        }
        QuestionType::Rating => hints.push(format!("1–{}", q.scale.unwrap_or(5))),
        QuestionType::Nps => hints.push("0–10".into()),
        QuestionType::YesNo => hints.push("yes / no".into()),
        QuestionType::Date => hints.push("a date, e.g. 2026-12-31".into()),
        QuestionType::DateRange => hints.push("two dates: 2026-12-01 to 2026-12-05".into()),
        _ => {}
    }
    if q.can_back {
        hints.push("/back".into());
    }
    if q.optional {
        hints.push("/skip".into());
    }
    let progress = format!("{}%", (q.progress * 100.0).round());
    println!(
        "   ({progress}{}{})",
        if hints.is_empty() { "" } else { " · " },
        hints.join(" · ")
    );
}

/// Typed text becomes a text answer; `[Label]` clicks a button by its label.
fn to_answer(line: &str, q: Option<&Question>) -> Input {
    if let (Some(q), Some(label)) = (q, line.strip_prefix('[').and_then(|l| l.strip_suffix(']'))) {
        let pool = if q.items.is_empty() {
            &q.options
        } else {
            &q.items
        };
        if let Some(o) = pool.iter().find(|o| o.label == label) {
            return Input::Choice {
                values: vec![o.value.clone()],
            };
        }
    }
    Input::Text {
        text: line.to_string(),
    }
}

fn parse_contact(s: &str) -> anyhow::Result<Contact> {
    volley_flow::transcript::parse_contact(s).map_err(|e| anyhow::anyhow!("--contact: {e}"))
}
