//! The timeline: which cues fire between two positions, and what is open at one.
//!
//! Positions are offsets from the start of the media. Live, every viewer's position is
//! the same (now − start); in a replay each viewer has their own and may seek, and the
//! same cues fire at the same offsets, so chat prompts, polls, offers and Q&A come
//! back exactly where they were. Windows are half-open: a poll with `close_at: 12m`
//! takes votes at 11m59s, not at 12m.

use jiff::SignedDuration;

use crate::event::{Cue, CueKind, Event, Offer, Poll};

/// The cues with `from <= at < to`, ordered by offset, then by the order written.
pub fn cues_between(
    event: &Event,
    from: SignedDuration,
    to: SignedDuration,
) -> impl Iterator<Item = &Cue> {
    let cues = &event.timeline;
    let start = cues.partition_point(|c| c.at < from);
    let end = cues.partition_point(|c| c.at < to).max(start);
    cues[start..end].iter()
}

/// The cues a replay viewer meets when playback moves from `from` to `to`: the same
/// cues, at the same offsets, as live ([`cues_between`]). A seek backwards (`to` before
/// `from`) fires nothing; the viewer's state after any seek is [`active_at`] `to`.
pub fn replay_cues(
    event: &Event,
    from: SignedDuration,
    to: SignedDuration,
) -> impl Iterator<Item = &Cue> {
    cues_between(event, from, to.max(from))
}

/// What is open at a position.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ActiveState<'a> {
    /// Polls taking votes (`at <= position < close_at`).
    pub polls_open: Vec<&'a Poll>,
    /// Polls whose results are shown (`position >= results_at`, to the end).
    pub polls_showing_results: Vec<&'a Poll>,
    /// Offers on screen (`at <= position < until`).
    pub offers: Vec<&'a Offer>,
    /// A Q&A window is open (`at <= position < until`).
    pub qa_open: bool,
}

/// The polls, offers and Q&A windows open at `position`, in timeline order.
pub fn active_at(event: &Event, position: SignedDuration) -> ActiveState<'_> {
    let mut state = ActiveState::default();
    for cue in cues_between(
        event,
        SignedDuration::MIN,
        position.saturating_add(SignedDuration::from_nanos(1)),
    ) {
        match &cue.kind {
            CueKind::Poll(p) => {
                if position < p.close_at {
                    state.polls_open.push(p);
                }
                if position >= p.results_at {
                    state.polls_showing_results.push(p);
                }
            }
            CueKind::Offer(o) if position < o.until => state.offers.push(o),
            CueKind::Qa { until } if position < *until => state.qa_open = true,
            _ => {}
        }
    }
    state
}
