//! A client connection's deadlines: handshake, idle, maximum duration, server ping,
//! pong and close linger. Each connection holds ONE wheel entry, armed at the earliest
//! of the deadlines that apply in its state. Deadlines that move later (the idle one,
//! with every message) are not re-armed: the entry fires early, the deadlines are
//! checked against the clock, and the entry is armed again at the next one. Entries
//! are cancelled when the connection goes, so the wheel never holds more entries than
//! there are open connections (issue 8, defect 8).

use std::time::{Duration, Instant};

use super::Worker;
use crate::close;
use crate::config::Limits;
use crate::conn::Conn;
use crate::frame;
use crate::session::State;
use crate::timer::Kind;

/// How long we wait for the client's close frame after sending ours, and for a
/// connection that is done to take its last bytes.
pub(super) const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// The earliest deadline of `conn` in its current state, `None` when nothing is due
/// (`$connect` pending: the call's own timeout decides).
pub(super) fn next_deadline(
    conn: &Conn,
    l: &Limits,
    handshake_timeout: Duration,
) -> Option<Instant> {
    match conn.session.state() {
        State::Handshaking => Some(conn.phase_since.instant() + handshake_timeout),
        State::Connecting => None,
        State::Closing | State::Done => Some(conn.phase_since.instant() + CLOSE_LINGER),
        State::Open => {
            let mut due = (conn.last_active.instant() + l.idle_timeout)
                .min(conn.phase_since.instant() + l.max_connection_duration);
            for d in [conn.ping_at, conn.pong_due].into_iter().flatten() {
                due = due.min(d.instant());
            }
            Some(due)
        }
    }
}

impl Worker {
    /// Keeps a connection's timer in step with its state: called after anything that
    /// may have changed the state or moved a deadline earlier.
    pub(super) fn sync_timer(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let state = conn.session.state();
        if state != conn.timed_state {
            let was = conn.timed_state;
            conn.timed_state = state;
            conn.phase_since = self.now.into();
            // Upgraded, also when the same read already closed it again.
            if matches!(was, State::Handshaking | State::Connecting)
                && state != State::Connecting
                && conn.session.is_registered()
            {
                self.on_open(key);
            }
        }
        self.arm_client(key, false);
    }

    /// Arms the connection's entry at its next deadline unless an entry that fires no
    /// later is armed already (`force`: the current entry just fired).
    fn arm_client(&mut self, key: usize, force: bool) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let config = &self.shared.config;
        let due = next_deadline(conn, &config.limits, config.server.handshake_timeout);
        if let Some(h) = conn.timer {
            if !force {
                match (self.timers.deadline(h), due) {
                    (Some(armed), Some(due)) if armed <= due + crate::timer::TICK => return,
                    _ => {}
                }
            }
            self.timers.cancel(h);
            conn.timer = None;
        }
        if let Some(due) = due {
            conn.timer = Some(self.timers.arm(due, key, conn.generation, Kind::Client));
        }
    }

    /// Lets go of a connection's entry (it is being removed).
    pub(super) fn cancel_client_timer(&mut self, key: usize) {
        if let Some(h) = self.conns.get_mut(key).and_then(|c| c.timer.take()) {
            self.timers.cancel(h);
        }
    }

    /// The connection's entry fired: act on every deadline that passed, then arm the
    /// next one.
    pub(super) fn on_client_timer(&mut self, key: usize, generation: u32) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.generation != generation {
            return;
        }
        conn.timer = None;
        let now = self.now;
        let l = &self.shared.config.limits;
        let handshake_timeout = self.shared.config.server.handshake_timeout;
        match conn.session.state() {
            State::Handshaking if now >= conn.phase_since.instant() + handshake_timeout => {
                log::debug!("worker {}: {} handshake timeout", self.index, conn.peer());
                return self.close(key);
            }
            State::Closing | State::Done if now >= conn.phase_since.instant() + CLOSE_LINGER => {
                return self.close(key);
            }
            State::Open => {
                if now >= conn.phase_since.instant() + l.max_connection_duration {
                    return self.close_with(key, close::GOING_AWAY, "Maximum connection duration");
                }
                if now >= conn.last_active.instant() + l.idle_timeout {
                    return self.close_with(key, close::GOING_AWAY, "Idle timeout");
                }
                if conn.pong_due.is_some_and(|d| now >= d.instant()) {
                    if conn.session.pong_seen() {
                        conn.pong_due = None;
                    } else if conn.read_paused || conn.session.is_holding() {
                        // Reading waits (calls in flight at their limit, or output
                        // the client has not taken): the pong may be among the
                        // bytes not read yet.
                        conn.pong_due = Some((now + l.pong_timeout).into());
                    } else {
                        return self.close_with(key, close::GOING_AWAY, "Ping timeout");
                    }
                }
                if conn.ping_at.is_some_and(|d| now >= d.instant()) {
                    let (interval, pong_timeout) = (l.ping_interval, l.pong_timeout);
                    conn.session.ping_sent();
                    conn.pong_due = Some((now + pong_timeout).into());
                    conn.ping_at = Some((now + interval.max(pong_timeout)).into());
                    frame::write_message(
                        &mut self.shared.wbuf,
                        frame::OpCode::Ping,
                        b"wsgate",
                        125,
                    );
                    self.finish_output(key);
                }
            }
            _ => {}
        }
        self.arm_client(key, true);
    }
}
