//! Waiting for AWS to finish something: one loop with backoff, a deadline and a cancel flag.
//!
//! [`until`] asks `probe` again and again, pausing between the asks (from
//! [`Backoff::first`], times [`Backoff::factor`] each time, at most [`Backoff::max`]),
//! until the probe answers [`Poll::Ready`], fails, the cancel flag is set, or the next pause
//! would end past the deadline ([`PollError::TimedOut`], with how long it waited).
//!
//! The crate is runtime-agnostic: the caller passes the sleep (`tokio::time::sleep`).
//! The time waited is the time since the start, and never less than the pauses slept, so a
//! sleep that does not really sleep (a test's, or tokio's paused time) still reaches the deadline.
//!
//! [`retry`] is the other shape: a call asked again after a transient failure, with the same
//! [`Backoff`], at most a number of attempts (no deadline).
//!
//! ```
//! use std::time::Duration;
//! use aws_target::poll::{self, Backoff, Poll, PollError, Wait};
//!
//! # futures_executor_free::block_on(async {
//! let backoff = Backoff { first: Duration::from_secs(1), max: Duration::from_secs(10), factor: 2 };
//! let mut asked = 0;
//! // A sleep that returns at once (a real caller passes `tokio::time::sleep`).
//! let sleep = |_pause: Duration| std::future::ready(());
//! let done: Result<u32, PollError<String>> = poll::until(Wait::new(backoff, Duration::from_secs(60)), sleep, || {
//!     asked += 1;
//!     std::future::ready(Ok(if asked == 3 { Poll::Ready(asked) } else { Poll::Pending }))
//! })
//! .await;
//! assert_eq!(done.unwrap(), 3);
//!
//! // Never ready: a typed timeout naming how long it waited (1 + 2 + 4 + 8 s; 16 more would pass 20 s).
//! let never: Result<(), PollError<String>> =
//!     poll::until(Wait::new(backoff, Duration::from_secs(20)), sleep, || std::future::ready(Ok(Poll::Pending)))
//!         .await;
//! assert!(matches!(never, Err(PollError::TimedOut { polls: 5, .. })));
//! # });
//! # mod futures_executor_free {
//! #     pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
//! #         let waker = std::task::Waker::noop();
//! #         let mut cx = std::task::Context::from_waker(&waker);
//! #         let mut f = std::pin::pin!(f);
//! #         loop {
//! #             if let std::task::Poll::Ready(out) = f.as_mut().poll(&mut cx) { return out; }
//! #         }
//! #     }
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The pauses between polls: `first`, then times `factor` each time, at most `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first pause.
    pub first: Duration,
    /// The longest pause.
    pub max: Duration,
    /// How much each pause grows (2: doubled).
    pub factor: u32,
}

impl Backoff {
    /// The pause after `pause`.
    pub fn next(&self, pause: Duration) -> Duration {
        (pause * self.factor).min(self.max)
    }
}

/// How [`until`] waits.
#[derive(Debug, Clone, Copy)]
pub struct Wait<'a> {
    /// The pauses.
    pub backoff: Backoff,
    /// The longest wait: a poll whose pause would end past it is the last.
    pub deadline: Duration,
    /// Checked after each answered poll: set, the wait ends [`PollError::Cancelled`].
    pub cancel: Option<&'a AtomicBool>,
    /// Pause once before the first poll (for something just started).
    pub pause_first: bool,
    /// A pause that would end past the deadline is cut to end at it, and one last poll made
    /// there (for a wait that reports the state at its end rather than failing); without it,
    /// the wait ends at the poll before.
    pub poll_at_deadline: bool,
}

impl<'a> Wait<'a> {
    /// A wait with no cancel flag that polls at once.
    pub fn new(backoff: Backoff, deadline: Duration) -> Wait<'a> {
        Wait { backoff, deadline, cancel: None, pause_first: false, poll_at_deadline: false }
    }
}

/// One probe's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Poll<T> {
    /// Done: the wait ends with this.
    Ready(T),
    /// Not yet: poll again after the pause, unless the deadline would pass first.
    Pending,
    /// No answer this time (a read that failed for the network): poll again after the pause;
    /// the deadline is not checked for this poll.
    Again,
}

/// How a wait ended without [`Poll::Ready`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PollError<E> {
    /// The probe failed.
    Failed(E),
    /// The next pause would have ended past the deadline.
    TimedOut {
        /// How long it waited.
        waited: Duration,
        /// How many times it polled.
        polls: u32,
    },
    /// The cancel flag was set.
    Cancelled {
        /// How long it waited.
        waited: Duration,
        /// How many times it polled.
        polls: u32,
    },
}

impl<E: fmt::Display> fmt::Display for PollError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PollError::Failed(error) => error.fmt(f),
            PollError::TimedOut { waited, polls } => {
                write!(f, "still not done after {:.1} s ({polls} polls)", waited.as_secs_f64())
            }
            PollError::Cancelled { waited, polls } => {
                write!(f, "cancelled after {:.1} s ({polls} polls)", waited.as_secs_f64())
            }
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for PollError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PollError::Failed(error) => Some(error),
            _ => None,
        }
    }
}

/// Polls `probe` until it is [`Poll::Ready`], pausing with `sleep` between polls as `wait`
/// says. A probe's error ends the wait at once ([`PollError::Failed`]); after each answered
/// poll the cancel flag is checked, then a pending poll whose next pause would end past the
/// deadline ends it ([`PollError::TimedOut`]). The probe is an async closure, so it may keep
/// state between polls (the last status seen).
pub async fn until<T, E, F, S, SFut>(wait: Wait<'_>, sleep: S, mut probe: F) -> Result<T, PollError<E>>
where
    F: AsyncFnMut() -> Result<Poll<T>, E>,
    S: Fn(Duration) -> SFut,
    SFut: Future<Output = ()>,
{
    let started = Instant::now();
    let mut slept = Duration::ZERO;
    let waited = |slept: Duration| started.elapsed().max(slept);
    // The pause before the next poll: cut to end at the deadline when `poll_at_deadline` says so.
    let cut = |pause: Duration, waited: Duration| match wait.deadline.checked_sub(waited) {
        Some(left) if wait.poll_at_deadline && left > Duration::ZERO => Some(pause.min(left)),
        _ if waited + pause > wait.deadline => None,
        _ => Some(pause),
    };
    let mut pause = wait.backoff.first;
    let mut polls = 0;
    if wait.pause_first {
        let first = if wait.poll_at_deadline { pause.min(wait.deadline) } else { pause };
        sleep(first).await;
        slept += first;
        pause = wait.backoff.next(pause);
    }
    loop {
        let answer = probe().await.map_err(PollError::Failed)?;
        polls += 1;
        if wait.cancel.is_some_and(|c| c.load(Ordering::SeqCst)) {
            return Err(PollError::Cancelled { waited: waited(slept), polls });
        }
        let this_pause = match answer {
            Poll::Ready(done) => return Ok(done),
            Poll::Pending => match cut(pause, waited(slept)) {
                Some(this_pause) => this_pause,
                None => return Err(PollError::TimedOut { waited: waited(slept), polls }),
            },
            Poll::Again => pause,
        };
        sleep(this_pause).await;
        slept += this_pause;
        pause = wait.backoff.next(pause);
    }
}

/// Calls `op` until it succeeds, at most `attempts` times (at least once), pausing with
/// `sleep` between the calls as `backoff` says. A failed call is asked again only while an
/// attempt is left and `is_transient(&error, attempt)` says so (`attempt` counts from 1; the
/// closure may also report the retry); otherwise its error is returned as it is, so the
/// caller keeps its own typed error. There is no deadline: the attempts bound it.
///
/// ```
/// use std::time::Duration;
/// use aws_target::poll::{self, Backoff};
///
/// # futures_executor_free::block_on(async {
/// let backoff = Backoff { first: Duration::from_millis(400), max: Duration::from_secs(2), factor: 2 };
/// let sleep = |_pause: Duration| std::future::ready(());
/// let mut calls = 0;
/// // Throttled twice, then answered.
/// let answered: Result<u32, &str> = poll::retry(backoff, 4, sleep, |e, _| *e == "throttled", async || {
///     calls += 1;
///     if calls < 3 { Err("throttled") } else { Ok(calls) }
/// })
/// .await;
/// assert_eq!(answered, Ok(3));
/// // A refusal is not asked again.
/// let refused: Result<(), &str> =
///     poll::retry(backoff, 4, sleep, |e, _| *e == "throttled", async || Err("denied")).await;
/// assert_eq!(refused, Err("denied"));
/// # });
/// # mod futures_executor_free {
/// #     pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
/// #         let waker = std::task::Waker::noop();
/// #         let mut cx = std::task::Context::from_waker(&waker);
/// #         let mut f = std::pin::pin!(f);
/// #         loop {
/// #             if let std::task::Poll::Ready(out) = f.as_mut().poll(&mut cx) { return out; }
/// #         }
/// #     }
/// # }
/// ```
pub async fn retry<T, E, F, S, SFut>(
    backoff: Backoff,
    attempts: u32,
    sleep: S,
    mut is_transient: impl FnMut(&E, u32) -> bool,
    mut op: F,
) -> Result<T, E>
where
    F: AsyncFnMut() -> Result<T, E>,
    S: Fn(Duration) -> SFut,
    SFut: Future<Output = ()>,
{
    let mut pause = backoff.first;
    let mut attempt = 1;
    loop {
        match op().await {
            Ok(done) => return Ok(done),
            Err(error) if attempt < attempts && is_transient(&error, attempt) => {
                sleep(pause).await;
                pause = backoff.next(pause);
                attempt += 1;
            }
            Err(error) => return Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    const BACKOFF: Backoff = Backoff { first: Duration::from_secs(1), max: Duration::from_secs(10), factor: 2 };

    /// A sleep that records its pauses and returns at once: no real sleeping.
    fn recorder(pauses: &RefCell<Vec<u64>>) -> impl Fn(Duration) -> std::future::Ready<()> + '_ {
        move |pause| {
            pauses.borrow_mut().push(pause.as_secs());
            std::future::ready(())
        }
    }

    #[tokio::test]
    async fn polls_until_ready_with_growing_pauses_up_to_the_max() {
        let pauses = RefCell::new(Vec::new());
        let mut asked = 0;
        let out: Result<u32, PollError<()>> =
            until(Wait::new(BACKOFF, Duration::from_secs(600)), recorder(&pauses), || {
                asked += 1;
                std::future::ready(Ok(if asked == 7 { Poll::Ready(asked) } else { Poll::Pending }))
            })
            .await;
        assert_eq!(out, Ok(7));
        assert_eq!(*pauses.borrow(), [1, 2, 4, 8, 10, 10]);
    }

    #[tokio::test]
    async fn a_pending_poll_whose_pause_would_pass_the_deadline_times_out_typed() {
        let pauses = RefCell::new(Vec::new());
        let out: Result<(), PollError<()>> =
            until(Wait::new(BACKOFF, Duration::from_secs(30)), recorder(&pauses), || {
                std::future::ready(Ok(Poll::Pending))
            })
            .await;
        // 1 + 2 + 4 + 8 + 10 = 25 s slept; the next 10 s would pass 30 s.
        let Err(PollError::TimedOut { waited, polls }) = out else { panic!("{out:?}") };
        assert_eq!((waited, polls), (Duration::from_secs(25), 6));
        assert_eq!(*pauses.borrow(), [1, 2, 4, 8, 10]);
    }

    #[tokio::test]
    async fn again_skips_the_deadline_check_and_pause_first_sleeps_before_the_first_poll() {
        let pauses = RefCell::new(Vec::new());
        let mut asked = 0;
        let wait = Wait { pause_first: true, ..Wait::new(BACKOFF, Duration::from_secs(2)) };
        let out: Result<u32, PollError<()>> = until(wait, recorder(&pauses), || {
            asked += 1;
            std::future::ready(Ok(match asked {
                1 | 2 => Poll::Again,
                _ => Poll::Pending,
            }))
        })
        .await;
        // Slept 1 first, then 2 and 4 after the unanswered polls; the third poll times out.
        assert_eq!(out, Err(PollError::TimedOut { waited: Duration::from_secs(7), polls: 3 }));
        assert_eq!(*pauses.borrow(), [1, 2, 4]);
    }

    #[tokio::test]
    async fn a_failed_probe_ends_at_once_before_the_cancel_flag_and_cancel_after_an_answer() {
        let pauses = RefCell::new(Vec::new());
        let cancel = AtomicBool::new(true);
        let wait = Wait { cancel: Some(&cancel), ..Wait::new(BACKOFF, Duration::from_secs(60)) };
        let failed: Result<(), PollError<&str>> =
            until(wait, recorder(&pauses), || std::future::ready(Err("denied"))).await;
        assert_eq!(failed, Err(PollError::Failed("denied")));
        // Checked after the poll, even one that is ready.
        let cancelled: Result<(), PollError<&str>> =
            until(wait, recorder(&pauses), || std::future::ready(Ok(Poll::Ready(())))).await;
        assert!(matches!(cancelled, Err(PollError::Cancelled { polls: 1, .. })));
        assert!(pauses.borrow().is_empty());
        cancel.store(false, Ordering::SeqCst);
        let mut asked = 0;
        let ended: Result<(), PollError<&str>> = until(wait, recorder(&pauses), || {
            asked += 1;
            if asked == 3 {
                cancel.store(true, Ordering::SeqCst);
            }
            std::future::ready(Ok(Poll::Pending))
        })
        .await;
        assert!(matches!(ended, Err(PollError::Cancelled { polls: 3, .. })));
        assert_eq!(*pauses.borrow(), [1, 2]);
    }

    #[tokio::test]
    async fn poll_at_deadline_cuts_the_last_pause_and_polls_there() {
        let pauses = RefCell::new(Vec::new());
        let wait = Wait { pause_first: true, poll_at_deadline: true, ..Wait::new(BACKOFF, Duration::from_secs(10)) };
        let mut asked = 0;
        let out: Result<(), PollError<()>> = until(wait, recorder(&pauses), || {
            asked += 1;
            std::future::ready(Ok(Poll::Pending))
        })
        .await;
        // 1 first, then 2 and 4; 8 would pass 10 s, so 3 to the deadline and a last poll there.
        assert_eq!(out, Err(PollError::TimedOut { waited: Duration::from_secs(10), polls: 4 }));
        assert_eq!(*pauses.borrow(), [1, 2, 4, 3]);
        assert_eq!(asked, 4);
    }

    #[tokio::test]
    async fn retry_asks_again_while_transient_and_attempts_are_left() {
        let pauses = RefCell::new(Vec::new());
        let asked_about = RefCell::new(Vec::new());
        let transient = |e: &&str, attempt: u32| {
            asked_about.borrow_mut().push(attempt);
            *e == "throttled"
        };
        // Always throttled: four calls, three pauses, the last error returned as it is.
        let mut calls = 0;
        let out: Result<(), &str> = retry(BACKOFF, 4, recorder(&pauses), transient, async || {
            calls += 1;
            Err("throttled")
        })
        .await;
        assert_eq!((out, calls), (Err("throttled"), 4));
        assert_eq!(*pauses.borrow(), [1, 2, 4]);
        // Not asked about the last attempt: no retry is left to report.
        assert_eq!(*asked_about.borrow(), [1, 2, 3]);
        // A failure that is not transient ends at once; zero attempts still calls once.
        let mut calls = 0;
        let out: Result<(), &str> = retry(
            BACKOFF,
            0,
            recorder(&pauses),
            |_, _| true,
            async || {
                calls += 1;
                Err("denied")
            },
        )
        .await;
        assert_eq!((out, calls), (Err("denied"), 1));
        let out: Result<(), &str> =
            retry(BACKOFF, 4, recorder(&pauses), |e, _| *e == "throttled", async || Err("denied")).await;
        assert_eq!(out, Err("denied"));
        assert_eq!(pauses.borrow().len(), 3);
    }
}
