//! One shutdown primitive for threads and tasks alike: a [`Shutdown`] token is cancelled once,
//! with a [`Why`], and every waiter wakes at once (no sleep-polling). Tokens form a tree: the
//! process token's children are the streams' tokens, so process exit and the removal of one
//! stream are the same mechanism (Moonfire NVR's `base/shutdown.rs` is the model).

use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

/// Why a token was cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// The process is stopping (a signal, or the end of a run).
    Exit,
    /// One stream was removed while the others go on.
    Removed,
}

struct Inner {
    state: Mutex<State>,
    cv: Condvar,
}

#[derive(Default)]
struct State {
    why: Option<Why>,
    children: Vec<Weak<Inner>>,
    /// Async waiters, woken on cancellation.
    notify: Vec<Arc<tokio::sync::Notify>>,
}

/// A cancellable token; clones share one state.
#[derive(Clone)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown::new()
    }
}

impl std::fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Shutdown({:?})", self.why())
    }
}

impl Shutdown {
    pub fn new() -> Shutdown {
        Shutdown {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                cv: Condvar::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A token cancelled with this one (with the parent's reason), or on its own.
    pub fn child(&self) -> Shutdown {
        let child = Shutdown::new();
        let mut st = self.lock();
        match st.why {
            Some(why) => {
                drop(st);
                child.cancel(why);
            }
            None => {
                st.children.retain(|c| c.strong_count() > 0);
                st.children.push(Arc::downgrade(&child.inner));
            }
        }
        child
    }

    /// Cancels this token and its children; the first reason sticks.
    pub fn cancel(&self, why: Why) {
        let (children, notify) = {
            let mut st = self.lock();
            if st.why.is_some() {
                return;
            }
            st.why = Some(why);
            (
                std::mem::take(&mut st.children),
                std::mem::take(&mut st.notify),
            )
        };
        self.inner.cv.notify_all();
        for n in notify {
            n.notify_one();
        }
        for c in children.iter().filter_map(Weak::upgrade) {
            Shutdown { inner: c }.cancel(why);
        }
    }

    pub fn is_cancelled(&self) -> bool {
        self.lock().why.is_some()
    }

    /// The reason, once cancelled.
    pub fn why(&self) -> Option<Why> {
        self.lock().why
    }

    /// Sleeps `d` or until cancelled; true when the full time passed.
    pub fn sleep(&self, d: Duration) -> bool {
        let until = Instant::now() + d;
        let mut st = self.lock();
        loop {
            if st.why.is_some() {
                return false;
            }
            let now = Instant::now();
            if now >= until {
                return true;
            }
            st = self
                .inner
                .cv
                .wait_timeout(st, until - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Blocks until cancelled.
    pub fn wait(&self) -> Why {
        let mut st = self.lock();
        loop {
            if let Some(why) = st.why {
                return why;
            }
            st = self.inner.cv.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Resolves once cancelled (for tokio tasks).
    pub async fn cancelled(&self) -> Why {
        let n = Arc::new(tokio::sync::Notify::new());
        {
            let mut st = self.lock();
            if let Some(why) = st.why {
                return why;
            }
            st.notify.retain(|n| Arc::strong_count(n) > 1);
            st.notify.push(n.clone());
        }
        n.notified().await;
        self.why().unwrap_or(Why::Exit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancelling_wakes_a_sleeper_at_once_and_reaches_children_with_the_reason() {
        let root = Shutdown::new();
        let child = root.child();
        let other = root.child();
        let sleeper = {
            let c = child.clone();
            std::thread::spawn(move || {
                let t = Instant::now();
                (c.sleep(Duration::from_secs(60)), t.elapsed())
            })
        };
        std::thread::sleep(Duration::from_millis(20));
        child.cancel(Why::Removed);
        let (slept, took) = sleeper.join().unwrap();
        assert!(!slept);
        assert!(took < Duration::from_secs(30));
        assert_eq!(child.why(), Some(Why::Removed));
        // A removed child leaves its parent and siblings running.
        assert!(!root.is_cancelled() && !other.is_cancelled());
        root.cancel(Why::Exit);
        assert_eq!(other.why(), Some(Why::Exit));
        // The first reason sticks.
        assert_eq!(child.why(), Some(Why::Removed));
        // A child made after cancellation is born cancelled.
        assert_eq!(root.child().why(), Some(Why::Exit));
    }

    #[test]
    fn an_uncancelled_sleep_runs_its_full_time() {
        let t = Shutdown::new();
        assert!(t.sleep(Duration::from_millis(5)));
    }
}
