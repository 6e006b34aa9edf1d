//! Failure containment (SPEC §1): the main thread waits for a stop signal *or* the
//! end of any worker thread. A worker that ends before shutdown was asked for —
//! returning an error, returning at all, or panicking (in builds that unwind; the
//! release profile aborts on panic) — ends the wait with an error, and the process
//! exits non-zero at once, so a supervisor restarts it instead of a gateway running
//! on with a listener nobody serves.

use std::any::Any;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::sync::mpsc::{Receiver, Sender};
use std::thread::{self, JoinHandle};

/// What the main thread waits for.
#[derive(Debug)]
pub enum Event {
    /// SIGTERM or SIGINT arrived.
    Signal(i32),
    /// A worker thread ended; `Err` says how it failed.
    WorkerEnded {
        worker: usize,
        outcome: Result<(), String>,
    },
}

/// A worker thread that ended when it should not have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Died {
    pub worker: usize,
    pub why: String,
}

impl std::fmt::Display for Died {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "worker {} died: {}", self.worker, self.why)
    }
}

/// Starts `body` as worker `worker` on a thread named `name`. However it ends —
/// returning, failing or panicking — its outcome goes to `events`.
pub fn spawn<F>(
    name: String,
    worker: usize,
    events: Sender<Event>,
    body: F,
) -> io::Result<JoinHandle<()>>
where
    F: FnOnce() -> Result<(), String> + Send + 'static,
{
    thread::Builder::new().name(name).spawn(move || {
        let outcome = match panic::catch_unwind(AssertUnwindSafe(body)) {
            Ok(result) => result,
            Err(payload) => Err(format!("panicked: {}", panic_text(payload.as_ref()))),
        };
        let _ = events.send(Event::WorkerEnded { worker, outcome });
    })
}

/// Waits for the signal that starts shutdown. `Err` when a worker ended first.
pub fn until_signal(events: &Receiver<Event>) -> Result<i32, Died> {
    match events.recv() {
        Ok(Event::Signal(sig)) => Ok(sig),
        Ok(Event::WorkerEnded { worker, outcome }) => Err(Died {
            worker,
            why: outcome
                .err()
                .unwrap_or_else(|| "stopped before shutdown".into()),
        }),
        // Every sender is gone: nothing can wake us any more.
        Err(_) => Err(Died {
            worker: 0,
            why: "the supervisor lost its workers".into(),
        }),
    }
}

/// After shutdown began: waits until `workers` workers ended. `Err` with the first
/// that failed (further signals are ignored; the drain has its own deadline).
pub fn until_ended(events: &Receiver<Event>, workers: usize) -> Result<(), Died> {
    let mut ended = 0;
    while ended < workers {
        match events.recv() {
            Ok(Event::Signal(_)) => {}
            Ok(Event::WorkerEnded {
                outcome: Ok(()), ..
            }) => ended += 1,
            Ok(Event::WorkerEnded {
                worker,
                outcome: Err(why),
            }) => return Err(Died { worker, why }),
            Err(_) => break,
        }
    }
    Ok(())
}

fn panic_text(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{mpsc, Arc};
    use std::time::Duration;

    /// Starts `n` workers that run until `stop`, except `bad`, which does `fail`.
    fn workers(
        n: usize,
        bad: usize,
        fail: fn() -> Result<(), String>,
    ) -> (Receiver<Event>, Arc<AtomicBool>, Vec<JoinHandle<()>>) {
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let handles = (0..n)
            .map(|i| {
                let stop = stop.clone();
                spawn(format!("test-worker-{i}"), i, tx.clone(), move || {
                    if i == bad {
                        return fail();
                    }
                    while !stop.load(Ordering::Acquire) {
                        thread::sleep(Duration::from_millis(1));
                    }
                    Ok(())
                })
                .unwrap()
            })
            .collect();
        (rx, stop, handles)
    }

    fn finish(stop: &AtomicBool, handles: Vec<JoinHandle<()>>) {
        stop.store(true, Ordering::Release);
        for h in handles {
            h.join().unwrap();
        }
    }

    #[test]
    fn a_panicking_worker_ends_the_wait_while_the_others_still_run() {
        let (rx, stop, handles) = workers(3, 1, || panic!("boom"));
        let died = until_signal(&rx).unwrap_err();
        assert_eq!(died.worker, 1);
        assert_eq!(died.why, "panicked: boom");
        assert!(died.to_string().starts_with("worker 1 died: "));
        assert!(!handles[0].is_finished() && !handles[2].is_finished());
        finish(&stop, handles);
    }

    #[test]
    fn a_worker_that_fails_or_returns_early_ends_the_wait() {
        let (rx, stop, handles) = workers(2, 0, || Err("epoll failed".into()));
        assert_eq!(
            until_signal(&rx),
            Err(Died {
                worker: 0,
                why: "epoll failed".into()
            })
        );
        finish(&stop, handles);
        let (rx, stop, handles) = workers(2, 1, || Ok(()));
        assert_eq!(until_signal(&rx).unwrap_err().worker, 1);
        finish(&stop, handles);
    }

    #[test]
    fn a_signal_then_clean_ends_is_a_clean_stop() {
        let (rx, stop, handles) = workers(3, usize::MAX, || Ok(()));
        let (tx, rx2) = mpsc::channel();
        tx.send(Event::Signal(15)).unwrap();
        assert_eq!(until_signal(&rx2), Ok(15));
        stop.store(true, Ordering::Release);
        assert_eq!(until_ended(&rx, 3), Ok(()));
        finish(&stop, handles);
    }

    #[test]
    fn a_worker_that_panics_during_the_drain_is_reported() {
        let (rx, stop, handles) = workers(3, 2, || panic!("{}", String::from("late")));
        assert_eq!(
            until_ended(&rx, 3),
            Err(Died {
                worker: 2,
                why: "panicked: late".into()
            })
        );
        finish(&stop, handles);
    }
}
