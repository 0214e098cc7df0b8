//! When a failed or refused attempt may go out again, as pure functions of
//! what is known about the attempt: no sockets, no pingora, unit-tested.
//!
//! The rules, in one place:
//! - Nothing reached a backend (connect failed): any method may try the next
//!   backend, up to the route's `connect_tries`.
//! - A kept connection (bound to the client or from the idle pool) failed
//!   before the first response byte: the backend most likely closed it just
//!   as we wrote. An idempotent request whose body we still hold goes out
//!   again on a fresh connection to the same backend, once. Anything else
//!   may have run, so it is not sent again.
//! - A fresh connection failed after the request went out: never sent again.
//! - A backend answered, but another one can do better: a 404 for a request
//!   id we did not know (ask the next backend), or a draining backend's 503
//!   refusal of new work (replay once on a Ready one). Both only with the
//!   whole request body still held.

/// How an attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptError {
    /// The TCP connect failed or timed out: no byte reached the backend.
    Connect {
        /// Timed out rather than refused.
        timed_out: bool,
    },
    /// The proxy itself is out of file descriptors, buffers or ports: no
    /// backend is at fault, and every other one would fail the same way.
    LocalLimit,
    /// Writing the request or reading the response head failed.
    Exchange {
        /// A read or write timed out.
        timed_out: bool,
    },
}

/// What is known about the failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptFacts {
    /// GET, HEAD, OPTIONS, PUT, DELETE, TRACE.
    pub idempotent: bool,
    /// The whole request body is held (or there is none), so it can be sent again.
    pub body_held: bool,
    /// The connection was kept from an earlier request.
    pub reused: bool,
    /// Backends this request already failed to connect to (this one included).
    pub connect_failures: usize,
    /// The route's `connect_tries`.
    pub connect_tries: usize,
    /// This request was already resent once on a fresh connection.
    pub resent: bool,
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Try the next backend (the failed one is excluded and ejected).
    NextBackend,
    /// Send again to the same backend on a new connection.
    FreshConnection,
    /// Give up with this status: 503 when no backend could be reached (the
    /// SkyPilot client retries it), 504 on a timeout, 502 otherwise.
    Fail(u16),
}

/// The rule for a failed attempt.
pub fn after_failure(error: AttemptError, facts: AttemptFacts) -> AfterFailure {
    match error {
        AttemptError::Connect { .. } if facts.connect_failures < facts.connect_tries => AfterFailure::NextBackend,
        // No byte reached any backend: the no-backend case, not a gateway error.
        AttemptError::Connect { .. } => AfterFailure::Fail(503),
        // The client retries a 503; the flood that exhausted the proxy passes.
        AttemptError::LocalLimit => AfterFailure::Fail(503),
        AttemptError::Exchange { timed_out: false }
            if facts.reused && facts.idempotent && facts.body_held && !facts.resent =>
        {
            AfterFailure::FreshConnection
        }
        AttemptError::Exchange { timed_out: true } => AfterFailure::Fail(504),
        AttemptError::Exchange { timed_out: false } => AfterFailure::Fail(502),
    }
}

/// What is known about an answer that might be retried elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnswerFacts {
    /// The response status.
    pub status: u16,
    /// The request is a GET.
    pub get: bool,
    /// The path (relative to the route) is `/api/get` or `/api/stream`.
    pub id_path: bool,
    /// The request names a request id.
    pub has_request_id: bool,
    /// The proxy knew which backend owns that id.
    pub id_known: bool,
    /// Backends tried so far, this one included.
    pub tried: usize,
    /// The path (relative to the route) starts with `/api/`.
    pub api_path: bool,
    /// The route replays draining 503s (`replay_on_draining_503`).
    pub replay_enabled: bool,
    /// A draining 503 was replayed already.
    pub replayed: bool,
    /// The backend that answered is Draining.
    pub backend_draining: bool,
    /// A Ready backend not tried yet exists.
    pub ready_elsewhere: bool,
    /// The whole request body is held.
    pub body_held: bool,
}

/// Why an answer goes to another backend instead of the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Elsewhere {
    /// An unknown request id this backend does not have: ask the next one.
    UnknownRequestId,
    /// A draining backend refused new work without running it.
    DrainingRefusal,
}

impl Elsewhere {
    /// The `reason` label of `pinroute_request_replays_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Elsewhere::UnknownRequestId => "request_id_404",
            Elsewhere::DrainingRefusal => "draining_503",
        }
    }
}

/// Most backends asked for an unknown request id.
pub const MAX_ID_PROBES: usize = 8;

/// The rule for an answer; `None`: it goes to the client.
pub fn answer_elsewhere(facts: AnswerFacts) -> Option<Elsewhere> {
    if !facts.body_held {
        return None;
    }
    if facts.status == 404
        && facts.get
        && facts.id_path
        && facts.has_request_id
        && !facts.id_known
        && facts.tried < MAX_ID_PROBES
    {
        return Some(Elsewhere::UnknownRequestId);
    }
    // skypilot 0.14's shutdown refusal: 503 on every non-`/api/` path.
    let refusal = facts.status == 503 && facts.replay_enabled && !facts.replayed && !facts.api_path;
    (refusal && facts.backend_draining && facts.ready_elsewhere).then_some(Elsewhere::DrainingRefusal)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> AttemptFacts {
        AttemptFacts {
            idempotent: true,
            body_held: true,
            reused: false,
            connect_failures: 1,
            connect_tries: 3,
            resent: false,
        }
    }

    #[test]
    fn connect_failures_move_on_until_the_tries_are_spent() {
        let refused = AttemptError::Connect { timed_out: false };
        assert_eq!(after_failure(refused, facts()), AfterFailure::NextBackend);
        let post = AttemptFacts { idempotent: false, body_held: false, ..facts() };
        assert_eq!(after_failure(refused, post), AfterFailure::NextBackend, "nothing reached a backend");
        let spent = AttemptFacts { connect_failures: 3, ..facts() };
        assert_eq!(after_failure(refused, spent), AfterFailure::Fail(503));
        assert_eq!(after_failure(AttemptError::Connect { timed_out: true }, spent), AfterFailure::Fail(503));
        let fresh = AttemptFacts { connect_failures: 0, ..spent };
        assert_eq!(after_failure(AttemptError::LocalLimit, fresh), AfterFailure::Fail(503), "never the next backend");
    }

    #[test]
    fn a_kept_connection_that_died_resends_only_idempotent_held_requests_once() {
        let died = AttemptError::Exchange { timed_out: false };
        let kept = AttemptFacts { reused: true, ..facts() };
        assert_eq!(after_failure(died, kept), AfterFailure::FreshConnection);
        assert_eq!(after_failure(died, AttemptFacts { resent: true, ..kept }), AfterFailure::Fail(502));
        assert_eq!(after_failure(died, AttemptFacts { idempotent: false, ..kept }), AfterFailure::Fail(502));
        assert_eq!(after_failure(died, AttemptFacts { body_held: false, ..kept }), AfterFailure::Fail(502));
    }

    #[test]
    fn a_fresh_connection_that_failed_is_never_resent() {
        assert_eq!(after_failure(AttemptError::Exchange { timed_out: false }, facts()), AfterFailure::Fail(502));
        let kept = AttemptFacts { reused: true, ..facts() };
        assert_eq!(after_failure(AttemptError::Exchange { timed_out: true }, kept), AfterFailure::Fail(504));
    }

    fn answer() -> AnswerFacts {
        AnswerFacts {
            status: 404,
            get: true,
            id_path: true,
            has_request_id: true,
            id_known: false,
            tried: 1,
            api_path: true,
            replay_enabled: true,
            replayed: false,
            backend_draining: false,
            ready_elsewhere: true,
            body_held: true,
        }
    }

    #[test]
    fn unknown_request_ids_are_probed_on_the_next_backend() {
        assert_eq!(answer_elsewhere(answer()), Some(Elsewhere::UnknownRequestId));
        assert_eq!(answer_elsewhere(AnswerFacts { id_known: true, ..answer() }), None);
        assert_eq!(answer_elsewhere(AnswerFacts { get: false, ..answer() }), None);
        assert_eq!(answer_elsewhere(AnswerFacts { id_path: false, ..answer() }), None);
        assert_eq!(answer_elsewhere(AnswerFacts { tried: MAX_ID_PROBES, ..answer() }), None);
        assert_eq!(answer_elsewhere(AnswerFacts { status: 200, ..answer() }), None);
    }

    #[test]
    fn a_draining_refusal_is_replayed_once_on_a_ready_backend() {
        let refused = AnswerFacts { status: 503, get: false, api_path: false, backend_draining: true, ..answer() };
        assert_eq!(answer_elsewhere(refused), Some(Elsewhere::DrainingRefusal));
        assert_eq!(answer_elsewhere(AnswerFacts { replayed: true, ..refused }), None);
        assert_eq!(answer_elsewhere(AnswerFacts { api_path: true, ..refused }), None, "/api/ keeps serving");
        assert_eq!(answer_elsewhere(AnswerFacts { backend_draining: false, ..refused }), None);
        assert_eq!(answer_elsewhere(AnswerFacts { ready_elsewhere: false, ..refused }), None);
        assert_eq!(answer_elsewhere(AnswerFacts { replay_enabled: false, ..refused }), None);
        assert_eq!(answer_elsewhere(AnswerFacts { body_held: false, ..refused }), None, "body not held");
    }
}
