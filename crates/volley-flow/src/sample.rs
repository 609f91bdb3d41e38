//! Plausible valid answers for any question: drives benchmarks and load tests through
//! whole flows without a script per flow.

use crate::engine::{Input, Question};
use crate::model::QuestionType;

/// A valid answer to `q`; `k` varies the choice among options.
pub fn answer(q: &Question, k: usize) -> Input {
    let text = |t: &str| Input::Text {
        text: t.to_string(),
    };
    let pick = |n: usize| {
        q.options
            .get(k % n.max(1))
            .map(|o| o.value.clone())
            .unwrap_or_default()
    };
    match q.input {
        QuestionType::Choice => Input::Choice {
            values: vec![pick(q.options.len())],
        },
        QuestionType::Multiple => {
            let want = q.min_picks.unwrap_or(1).max(1) as usize;
            Input::Choice {
                values: q
                    .options
                    .iter()
                    .take(want)
                    .map(|o| o.value.clone())
                    .collect(),
            }
        }
        QuestionType::Checklist => Input::Choice {
            values: q.items.iter().map(|i| i.value.clone()).collect(),
        },
        QuestionType::Number => {
            let min = q.min.as_ref().and_then(|v| v.as_f64()).unwrap_or(0.0);
            let max = q
                .max
                .as_ref()
                .and_then(|v| v.as_f64())
                .unwrap_or(min + 1000.0);
            let step = q.step_size.unwrap_or(1.0);
            let mut x = min + step * (((max - min) / step / 2.0).floor());
            if q.integer || step.fract() == 0.0 {
                x = x.round();
            }
            text(&x.to_string())
        }
        QuestionType::Email => text("ana@example.com"),
        QuestionType::Phone => text("+31612345678"),
        QuestionType::Url => text("https://example.com"),
        QuestionType::Date => text(
            q.min
                .as_ref()
                .and_then(|v| v.as_str())
                .unwrap_or("2026-12-31"),
        ),
        QuestionType::DateRange => {
            let d = q
                .min
                .as_ref()
                .and_then(|v| v.as_str())
                .unwrap_or("2026-12-31")
                .to_string();
            Input::Choice {
                values: vec![d.clone(), d],
            }
        }
        QuestionType::Rating => text(&q.scale.unwrap_or(5).min(4).to_string()),
        QuestionType::Nps => text("9"),
        QuestionType::YesNo => text(if k.is_multiple_of(2) { "yes" } else { "no" }),
        QuestionType::Text => {
            let min = q.min_length.unwrap_or(0) as usize;
            text(
                &"Thanks for asking, this is my answer"
                    .chars()
                    .cycle()
                    .take(min.max(12))
                    .collect::<String>(),
            )
        }
    }
}
