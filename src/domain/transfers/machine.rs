//! The transfer state machine and its progress maths: what each move does
//! to a transfer's state, with no database. The commands load a state,
//! ask here for the events a move makes, and append them.
//!
//! ```text
//! requested ─► pending ─► in_progress ─► completed
//!                 │            │      └─► failed ──retry──► pending
//!                 └──────┬─────┘
//!                        ├─► cancelled (requester or owner)
//!                        └─► expired   (server, after expires_at)
//! ```

use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

use super::{rejected, TransferPolicy};
use crate::domain::{DomainError, Rejection};
use crate::protocol::events::data::TransferState;
use crate::protocol::transfers::{FailureReason, TransferReport, TransferRoute, TransferStatus};
use crate::protocol::validate::ValidationError;
use crate::protocol::EventData;

use TransferStatus::{Cancelled, Completed, Expired, Failed, InProgress, Pending};

/// The span of the moving window speed and ETA are computed over.
const WINDOW: Duration = Duration::seconds(10);
const WINDOW_SAMPLES: usize = 10;

/// Whether a transfer may go from one status to another (a status to
/// itself: progress while in progress).
pub fn allowed(from: TransferStatus, to: TransferStatus) -> bool {
    matches!(
        (from, to),
        (Pending, InProgress)
            | (InProgress, InProgress)
            | (Pending | InProgress, Completed | Failed | Cancelled)
            | (Pending, Expired)
            | (Failed, Pending | Cancelled)
    )
}

/// 409 naming the state that forbids the move.
pub(crate) fn illegal(from: TransferStatus, to: &str) -> DomainError {
    let code = match from {
        Pending => "transfer_pending",
        InProgress => "transfer_in_progress",
        Completed => "transfer_completed",
        Failed => "transfer_failed",
        Cancelled => "transfer_cancelled",
        Expired => "transfer_expired",
    };
    rejected(Rejection::Conflict, code, format!("a {} transfer cannot become {to}", from.as_str()))
}

/// Percent of `total` that `bytes` are, to two decimals; an empty file is
/// always whole.
pub fn percent(bytes: i64, total: i64) -> f64 {
    if total == 0 {
        100.0
    } else {
        (bytes as f64 * 100.0 / total as f64 * 100.0).round() / 100.0
    }
}

/// Adds a progress sample and recomputes speed and ETA over the window.
pub(crate) fn record_progress(state: &mut TransferState, bytes: i64, now: DateTime<Utc>) {
    let now_ms = now.timestamp_millis();
    state.window.retain(|[t, _]| now_ms - t <= WINDOW.num_milliseconds());
    state.window.push([now_ms, bytes]);
    if state.window.len() > WINDOW_SAMPLES {
        state.window.remove(0);
    }
    state.bytes_transferred = bytes;
    state.percent = percent(bytes, state.total_bytes);
    let ([t0, b0], [t1, b1]) = (state.window[0], state.window[state.window.len() - 1]);
    let bytes_per_second = if t1 > t0 { (b1 - b0) as f64 * 1000.0 / (t1 - t0) as f64 } else { 0.0 };
    if state.window.len() >= 2 {
        state.speed_mbps = Some((bytes_per_second * 8.0 / 1e6 * 1000.0).round() / 1000.0);
        state.eta_seconds =
            (bytes_per_second > 0.0).then(|| ((state.total_bytes - bytes) as f64 / bytes_per_second).ceil() as i64);
    }
    state.last_activity_at = now;
    state.last_progress_at = Some(now);
}

/// The pending → in-progress start: the start is the window's first
/// sample. (A reported start also marks activity; a relayed one leaves
/// that to the progress it comes with.)
pub(crate) fn start(state: &mut TransferState, now: DateTime<Utc>) {
    state.status = InProgress;
    state.started_at = Some(now);
    state.window = vec![[now.timestamp_millis(), state.bytes_transferred]];
}

/// `bytes` may be reported: never backwards, never past the total.
pub(crate) fn check_bytes(state: &TransferState, bytes: i64) -> Result<(), DomainError> {
    if bytes < state.bytes_transferred {
        return Err(rejected(
            Rejection::Conflict,
            "bytes_backwards",
            format!("bytes_transferred cannot go back from {} to {bytes}", state.bytes_transferred),
        ));
    }
    if bytes > state.total_bytes {
        return Err(rejected(
            Rejection::Conflict,
            "bytes_past_total",
            format!("bytes_transferred cannot pass total_bytes ({})", state.total_bytes),
        ));
    }
    Ok(())
}

/// A new transfer's state: pending, first attempt, nothing moved.
pub(crate) fn requested(
    transfer_id: Uuid,
    requester_id: Uuid,
    file_path: String,
    size: i64,
    expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> TransferState {
    TransferState {
        transfer_id,
        requester_id,
        file_path,
        status: Pending,
        bytes_transferred: 0,
        total_bytes: size,
        percent: percent(0, size),
        speed_mbps: None,
        eta_seconds: None,
        attempts: 1,
        error_message: None,
        started_at: None,
        completed_at: None,
        expires_at,
        last_activity_at: now,
        last_progress_at: None,
        window: vec![],
        route: TransferRoute::default(),
    }
}

/// Whether the source's progress report of `bytes` falls inside the
/// coalescing interval, so that it changes nothing.
pub(crate) fn coalesces(state: &TransferState, bytes: i64, now: DateTime<Utc>, interval: Duration) -> bool {
    state.status == InProgress
        && (state.bytes_transferred..state.total_bytes).contains(&bytes)
        && state.last_progress_at.is_some_and(|at| now - at < interval)
}

/// A report of the source device (`from_source`), or of the requester's
/// failure: the events it makes, none for nothing new or progress inside
/// the coalescing interval.
pub(crate) fn report(
    state: &TransferState,
    report: TransferReport,
    from_source: bool,
    now: DateTime<Utc>,
    progress_interval: Duration,
) -> Result<Vec<EventData>, DomainError> {
    let TransferReport { status, bytes_transferred: bytes, error_message, route } = report;
    let from = state.status;
    let mut state = state.clone();
    let mut events = Vec::new();
    if let Some(route) = route {
        if from_source {
            return Err(ValidationError::new("route_from_requester", "the route is the requester's to report").into());
        }
        take_route(&mut state, route)?;
    }
    match status {
        Some(Failed) => {
            if !from.is_active() {
                return Err(illegal(from, "failed"));
            }
            if let Some(bytes) = bytes {
                check_bytes(&state, bytes)?;
                state.bytes_transferred = bytes;
                state.percent = percent(bytes, state.total_bytes);
            }
            state.status = Failed;
            let side = if from_source { FailureReason::FailedAtSource } else { FailureReason::FailedAtRequester };
            state.error_message = Some(error_message.unwrap_or_else(|| side.to_string()));
            state.last_activity_at = now;
            events.push(EventData::FileTransferFailed(state));
        }
        Some(InProgress) | None => {
            if status.is_none() && bytes.is_none() {
                return Err(ValidationError::new("empty_report", "report a status or bytes_transferred").into());
            }
            if !from.is_active() {
                return Err(illegal(from, "in_progress"));
            }
            if from == Pending {
                start(&mut state, now);
                state.last_activity_at = now;
                events.push(EventData::FileTransferStarted(state.clone()));
            }
            if let Some(bytes) = bytes {
                check_bytes(&state, bytes)?;
                let coalesced = events.is_empty()
                    && bytes < state.total_bytes
                    && state.last_progress_at.is_some_and(|at| now - at < progress_interval);
                if bytes > state.bytes_transferred && !coalesced {
                    record_progress(&mut state, bytes, now);
                    events.push(EventData::FileTransferProgress(state));
                }
            }
        }
        Some(other) => {
            return Err(ValidationError::new(
                "invalid_status",
                format!("a source device reports in_progress or failed, not {}", other.as_str()),
            )
            .into())
        }
    }
    Ok(events)
}

/// The requester's account of the direct leg, checked.
fn take_route(state: &mut TransferState, route: TransferRoute) -> Result<(), ValidationError> {
    let size = 0..=state.total_bytes;
    if !size.contains(&route.bytes_direct) || !size.contains(&route.bytes_relay) {
        return Err(ValidationError::new(
            "invalid_route",
            "bytes_direct and bytes_relay are each 0 to the file's size",
        ));
    }
    let too_long = |text: &Option<String>, most: usize| text.as_ref().is_some_and(|t| t.chars().count() > most);
    if too_long(&route.direct_endpoint, 2048) || too_long(&route.direct_abandoned, 1000) {
        return Err(ValidationError::new(
            "invalid_route",
            "direct_endpoint is at most 2048 characters, direct_abandoned at most 1000",
        ));
    }
    state.route = route;
    Ok(())
}

/// Bytes the relay served to the requester: started if pending, never past
/// the total; nothing for a transfer that is over.
pub(crate) fn advance(state: &TransferState, bytes: i64, now: DateTime<Utc>) -> Vec<EventData> {
    if !state.status.is_active() || bytes <= 0 {
        return vec![];
    }
    let mut state = state.clone();
    let mut events = Vec::new();
    if state.status == Pending {
        start(&mut state, now);
        events.push(EventData::FileTransferStarted(state.clone()));
    }
    let total = (state.bytes_transferred + bytes).min(state.total_bytes);
    if total > state.bytes_transferred {
        record_progress(&mut state, total, now);
        events.push(EventData::FileTransferProgress(state));
    }
    events
}

/// The requester's hash of what it received (and how its direct leg
/// went): completed when it is the file's, failed when not.
pub(crate) fn verify(
    state: &TransferState,
    matches: bool,
    route: Option<TransferRoute>,
    now: DateTime<Utc>,
) -> Result<EventData, DomainError> {
    let from = state.status;
    if !from.is_active() {
        return Err(illegal(from, "completed"));
    }
    let mut state = state.clone();
    if let Some(route) = route {
        take_route(&mut state, route)?;
    }
    state.last_activity_at = now;
    Ok(if matches {
        state.status = Completed;
        state.bytes_transferred = state.total_bytes;
        state.percent = 100.0;
        state.eta_seconds = Some(0);
        state.completed_at = Some(now);
        EventData::FileTransferComplete(state)
    } else {
        state.status = Failed;
        state.error_message = Some(FailureReason::HashMismatch.to_string());
        EventData::FileTransferFailed(state)
    })
}

/// The requester or the owner cancels a pending or in-progress transfer.
pub(crate) fn cancel(state: &TransferState, now: DateTime<Utc>) -> Result<EventData, DomainError> {
    let from = state.status;
    if !from.is_active() {
        return Err(illegal(from, "cancelled"));
    }
    let mut state = state.clone();
    state.status = Cancelled;
    state.last_activity_at = now;
    Ok(EventData::FileTransferCancelled(state))
}

/// A failed transfer tried again: pending, one more attempt, a fresh expiry.
pub(crate) fn retry(
    state: &TransferState,
    policy: &TransferPolicy,
    now: DateTime<Utc>,
) -> Result<EventData, DomainError> {
    let from = state.status;
    if from != Failed {
        return Err(illegal(from, "pending (retry)"));
    }
    if state.attempts >= policy.max_attempts {
        return Err(rejected(
            Rejection::Conflict,
            "retry_limit_reached",
            format!("this transfer was tried {} times, the most allowed", state.attempts),
        ));
    }
    let mut state = state.clone();
    state.status = Pending;
    state.attempts += 1;
    state.bytes_transferred = 0;
    state.percent = percent(0, state.total_bytes);
    state.speed_mbps = None;
    state.eta_seconds = None;
    state.error_message = None;
    state.started_at = None;
    state.expires_at = now + policy.ttl;
    state.last_activity_at = now;
    state.last_progress_at = None;
    state.window.clear();
    state.route = TransferRoute::default();
    Ok(EventData::TransferRetried(state))
}

/// The sweeper's move for a due transfer: a pending one expires, an
/// in-progress one fails as stalled; any other is not due.
pub(crate) fn sweep(state: &TransferState, now: DateTime<Utc>) -> Option<EventData> {
    let mut state = state.clone();
    state.last_activity_at = now;
    match state.status {
        Pending => {
            state.status = Expired;
            Some(EventData::FileTransferExpired(state))
        }
        InProgress => {
            state.status = Failed;
            state.error_message = Some(FailureReason::Stalled.to_string());
            Some(EventData::FileTransferFailed(state))
        }
        _ => None,
    }
}

/// An open (or failed) transfer of a member who was removed is cancelled.
pub(crate) fn member_removed(state: &TransferState, now: DateTime<Utc>) -> Option<EventData> {
    if !matches!(state.status, Pending | InProgress | Failed) {
        return None;
    }
    let mut state = state.clone();
    state.status = Cancelled;
    state.error_message = Some(FailureReason::MemberRemoved.to_string());
    state.last_activity_at = now;
    Some(EventData::FileTransferCancelled(state))
}

/// An open transfer of a file that changed (or went away) fails.
pub(crate) fn file_changed(state: &TransferState, now: DateTime<Utc>) -> Option<EventData> {
    if !state.status.is_active() {
        return None;
    }
    let mut state = state.clone();
    state.status = Failed;
    state.error_message = Some(FailureReason::FileChanged.to_string());
    state.last_activity_at = now;
    Some(EventData::FileTransferFailed(state))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::domain::DomainError;

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).expect("a time")
    }

    fn rep(status: Option<TransferStatus>, bytes: Option<i64>) -> TransferReport {
        TransferReport { status, bytes_transferred: bytes, ..Default::default() }
    }

    #[test]
    fn the_requester_reports_the_route_checked_and_a_retry_starts_it_afresh() {
        let s = last(&advance(&new(100), 30, t0()));
        let relayed = TransferRoute {
            bytes_relay: 100,
            direct_abandoned: Some("connection refused".into()),
            ..Default::default()
        };
        let from_source = TransferReport { route: Some(relayed.clone()), ..rep(None, Some(90)) };
        assert_eq!(code(report(&s, from_source, true, t0(), interval()).unwrap_err()), "route_from_requester");
        for past in [
            TransferRoute { bytes_relay: 101, ..Default::default() },
            TransferRoute { bytes_direct: -1, ..Default::default() },
            TransferRoute { direct_abandoned: Some("x".repeat(1001)), ..Default::default() },
        ] {
            assert_eq!(code(verify(&s, true, Some(past), t0()).unwrap_err()), "invalid_route");
        }
        let done = state_of(&verify(&s, true, Some(relayed.clone()), t0()).expect("a verdict")).clone();
        assert_eq!(done.route, relayed);

        // A failed attempt's route is reported with it; a retry starts afresh.
        let failing = TransferRoute {
            bytes_direct: 40,
            direct_endpoint: Some("https://10.0.0.2:7071".into()),
            ..Default::default()
        };
        let failure = TransferReport { route: Some(failing.clone()), ..rep(Some(Failed), None) };
        let failed = last(&report(&s, failure, false, t0(), interval()).expect("the requester's failure"));
        assert_eq!(failed.route, failing);
        let again = state_of(&retry(&failed, &TransferPolicy::default(), t0()).expect("a retry")).clone();
        assert_eq!(again.route, TransferRoute::default());
    }

    fn new(size: i64) -> TransferState {
        requested(Uuid::nil(), Uuid::nil(), "a/b.bin".into(), size, t0() + Duration::hours(1), t0())
    }

    fn code(e: DomainError) -> &'static str {
        match e {
            DomainError::Rejected { code, .. } => code,
            DomainError::Store(e) => panic!("a store error from a pure function: {e}"),
        }
    }

    fn state_of(event: &EventData) -> &TransferState {
        event.transfer_state().expect("a transfer event")
    }

    fn last(events: &[EventData]) -> TransferState {
        state_of(events.last().expect("an event")).clone()
    }

    fn interval() -> Duration {
        TransferPolicy::default().progress_interval
    }

    #[test]
    fn percent_is_two_decimals_and_an_empty_file_is_whole() {
        assert_eq!(percent(0, 0), 100.0);
        assert_eq!(percent(0, 3), 0.0);
        assert_eq!(percent(1, 3), 33.33);
        assert_eq!(percent(2, 3), 66.67);
        assert_eq!(percent(3, 3), 100.0);
    }

    #[test]
    fn speed_and_eta_come_from_the_window() {
        let mut s = new(10_000_000);
        start(&mut s, t0());
        assert_eq!(s.window, vec![[t0().timestamp_millis(), 0]]);
        record_progress(&mut s, 1_000_000, t0() + Duration::seconds(1));
        // 1 MB in a second: 8 Mbit/s, 9 s to go.
        assert_eq!(s.speed_mbps, Some(8.0));
        assert_eq!(s.eta_seconds, Some(9));
        assert_eq!(s.percent, 10.0);
        assert_eq!(s.last_progress_at, Some(t0() + Duration::seconds(1)));
        // Samples older than the window fall out of it.
        record_progress(&mut s, 2_000_000, t0() + Duration::seconds(20));
        assert_eq!(s.window.len(), 1);
        assert_eq!(s.speed_mbps, Some(8.0), "one sample leaves the last speed");
        record_progress(&mut s, 4_000_000, t0() + Duration::seconds(21));
        assert_eq!(s.speed_mbps, Some(16.0));
        assert_eq!(s.eta_seconds, Some(3));
    }

    #[test]
    fn the_window_keeps_at_most_ten_samples() {
        let mut s = new(1_000);
        start(&mut s, t0());
        for i in 1..=20 {
            record_progress(&mut s, i, t0() + Duration::milliseconds(i * 100));
        }
        assert_eq!(s.window.len(), WINDOW_SAMPLES);
        assert_eq!(s.window[0], [(t0() + Duration::milliseconds(1100)).timestamp_millis(), 11]);
    }

    #[test]
    fn a_report_starts_a_pending_transfer_once_and_marks_activity() {
        let s = new(100);
        let now = t0() + Duration::seconds(5);
        let events = report(&s, rep(None, Some(10)), true, now, interval()).expect("a start");
        assert!(matches!(events[0], EventData::FileTransferStarted(_)));
        assert!(matches!(events[1], EventData::FileTransferProgress(_)));
        let started = state_of(&events[0]);
        assert_eq!((started.status, started.started_at, started.last_activity_at), (InProgress, Some(now), now));
        let s = last(&events);
        assert_eq!(s.bytes_transferred, 10);
        // Inside the interval, progress short of the end is coalesced away...
        let soon = now + Duration::milliseconds(500);
        assert!(coalesces(&s, 20, soon, interval()));
        assert!(report(&s, rep(None, Some(20)), true, soon, interval()).expect("coalesced").is_empty());
        // ...but the last bytes are not.
        assert!(!coalesces(&s, 100, soon, interval()));
        let done = report(&s, rep(None, Some(100)), true, soon, interval()).expect("the end");
        assert_eq!(last(&done).percent, 100.0);
    }

    #[test]
    fn a_relayed_start_leaves_activity_to_its_progress() {
        let s = new(100);
        let now = t0() + Duration::seconds(5);
        let events = advance(&s, 150, now);
        assert_eq!(events.len(), 2);
        assert_eq!(state_of(&events[0]).last_activity_at, t0());
        let s = last(&events);
        assert_eq!((s.bytes_transferred, s.last_activity_at), (100, now), "never past the total");
        assert!(advance(&s, 0, now).is_empty());
    }

    #[test]
    fn refusals_name_their_reason() {
        let s = new(100);
        assert_eq!(code(report(&s, rep(None, None), true, t0(), interval()).unwrap_err()), "empty_report");
        assert_eq!(code(report(&s, rep(Some(Completed), None), true, t0(), interval()).unwrap_err()), "invalid_status");
        assert_eq!(code(report(&s, rep(None, Some(101)), true, t0(), interval()).unwrap_err()), "bytes_past_total");
        let s = last(&report(&s, rep(None, Some(50)), true, t0(), interval()).expect("progress"));
        assert_eq!(code(report(&s, rep(None, Some(49)), true, t0(), interval()).unwrap_err()), "bytes_backwards");
        assert_eq!(code(retry(&s, &TransferPolicy::default(), t0()).unwrap_err()), "transfer_in_progress");
        let failed = state_of(&verify(&s, false, None, t0()).expect("a verdict")).clone();
        assert_eq!(failed.error_message.as_deref(), Some(FailureReason::HashMismatch.to_string().as_str()));
        let policy = TransferPolicy { max_attempts: 1, ..Default::default() };
        assert_eq!(code(retry(&failed, &policy, t0()).unwrap_err()), "retry_limit_reached");
        let again = state_of(&retry(&failed, &TransferPolicy::default(), t0()).expect("a retry")).clone();
        assert_eq!((again.status, again.attempts, again.bytes_transferred), (Pending, 2, 0));
        let done = state_of(&verify(&again, true, None, t0()).expect("a verdict")).clone();
        assert_eq!(code(cancel(&done, t0()).unwrap_err()), "transfer_completed");
    }

    #[derive(Debug, Clone)]
    enum Move {
        Report { status: Option<TransferStatus>, bytes: Option<i64>, from_source: bool },
        Relayed(i64),
        Verify(bool),
        Cancel,
        Retry,
        Sweep,
        MemberRemoved,
        FileChanged,
        Wait(i64),
    }

    fn status() -> impl Strategy<Value = TransferStatus> {
        prop_oneof![Just(Pending), Just(InProgress), Just(Completed), Just(Failed), Just(Cancelled), Just(Expired)]
    }

    fn moves(size: i64) -> impl Strategy<Value = Move> {
        prop_oneof![
            4 => (prop::option::weighted(0.8, prop_oneof![4 => Just(InProgress), 1 => status()]),
                  prop::option::of(0..=size + 10), any::<bool>())
                .prop_map(|(status, bytes, from_source)| Move::Report { status, bytes, from_source }),
            3 => (-10..=size / 2 + 10).prop_map(Move::Relayed),
            1 => any::<bool>().prop_map(Move::Verify),
            1 => Just(Move::Cancel),
            2 => Just(Move::Retry),
            1 => Just(Move::Sweep),
            1 => Just(Move::MemberRemoved),
            1 => Just(Move::FileChanged),
            3 => (0..3_000i64).prop_map(Move::Wait),
        ]
    }

    fn scenario() -> impl Strategy<Value = (i64, Vec<Move>)> {
        prop_oneof![Just(0i64), 1..=5_000i64]
            .prop_flat_map(|size| (Just(size), prop::collection::vec(moves(size), 0..60)))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Whatever moves come, in whatever order: a terminal transfer
        /// never changes, bytes stay within the size and only grow within
        /// an attempt, only allowed transitions happen, each event names the
        /// status it leaves, and a refused move changes nothing.
        #[test]
        fn moves_keep_the_invariants((size, moves) in scenario()) {
            let policy = TransferPolicy::default();
            let mut now = t0();
            let mut state = new(size);
            for m in moves {
                let outcome: Result<Vec<EventData>, DomainError> = match m {
                    Move::Report { status, bytes, from_source } => {
                        report(&state, rep(status, bytes), from_source, now, policy.progress_interval)
                    }
                    Move::Relayed(bytes) => Ok(advance(&state, bytes, now)),
                    Move::Verify(matches) => verify(&state, matches, None, now).map(|e| vec![e]),
                    Move::Cancel => cancel(&state, now).map(|e| vec![e]),
                    Move::Retry => retry(&state, &policy, now).map(|e| vec![e]),
                    Move::Sweep => Ok(sweep(&state, now).into_iter().collect()),
                    Move::MemberRemoved => Ok(member_removed(&state, now).into_iter().collect()),
                    Move::FileChanged => Ok(file_changed(&state, now).into_iter().collect()),
                    Move::Wait(ms) => {
                        now += Duration::milliseconds(ms);
                        Ok(vec![])
                    }
                };
                let Ok(events) = outcome else { continue };
                if state.status.is_terminal() {
                    prop_assert!(events.is_empty(), "a {} transfer moved: {events:?}", state.status.as_str());
                }
                for event in &events {
                    let next = state_of(event);
                    let (from, to) = (state.status, next.status);
                    prop_assert!(allowed(from, to), "{} -> {} by {event:?}", from.as_str(), to.as_str());
                    let named = match event {
                        EventData::FileTransferStarted(_) | EventData::FileTransferProgress(_) => InProgress,
                        EventData::FileTransferComplete(_) => Completed,
                        EventData::FileTransferFailed(_) => Failed,
                        EventData::FileTransferCancelled(_) => Cancelled,
                        EventData::FileTransferExpired(_) => Expired,
                        EventData::TransferRetried(_) => Pending,
                        other => return Err(TestCaseError::fail(format!("not a transfer move: {other:?}"))),
                    };
                    prop_assert_eq!(named, to);
                    prop_assert!(0 <= next.bytes_transferred && next.bytes_transferred <= next.total_bytes);
                    prop_assert!((0.0..=100.0).contains(&next.percent));
                    prop_assert_eq!(next.total_bytes, size);
                    prop_assert!(next.attempts <= policy.max_attempts);
                    prop_assert!(next.speed_mbps.is_none_or(|v| v >= 0.0));
                    prop_assert!(next.eta_seconds.is_none_or(|v| v >= 0));
                    if next.attempts == state.attempts {
                        prop_assert!(next.bytes_transferred >= state.bytes_transferred, "bytes went back");
                        prop_assert!(next.percent >= state.percent, "percent went back");
                        prop_assert_eq!(next.started_at.is_some(), state.started_at.is_some() || to == InProgress
                            && from == Pending);
                    } else {
                        prop_assert_eq!(next.attempts, state.attempts + 1);
                        prop_assert_eq!((from, to, next.bytes_transferred), (Failed, Pending, 0));
                    }
                    if to == Completed {
                        prop_assert_eq!(next.bytes_transferred, next.total_bytes);
                        prop_assert_eq!(next.percent, 100.0);
                    }
                    prop_assert!(next.last_activity_at >= state.last_activity_at, "activity went back");
                    state = next.clone();
                }
            }
        }
    }
}
