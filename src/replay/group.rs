//! Group commit: callers that arrive while another caller is writing wait, and the first of them
//! to get the turn writes all of their requests at once, so concurrent pushes share one append
//! and one `fdatasync` instead of taking turns at the disk.
//!
//! A caller's request is answered only by the turn that took it: a caller never returns before
//! the write holding its request is done, whoever did it. Requests are handed to the writer in
//! the order they arrived.

use std::collections::HashMap;

use parking_lot::{Condvar, Mutex};

/// The queue of requests waiting for a turn, and the answers of finished turns.
#[derive(Debug)]
pub(super) struct Group<R, S> {
    state: Mutex<State<R, S>>,
    /// Signalled when a turn ends.
    turn_ended: Condvar,
}

#[derive(Debug)]
struct State<R, S> {
    next_ticket: u64,
    /// Requests no turn has taken yet, in arrival order.
    waiting: Vec<(u64, R)>,
    /// Answers not collected yet; `None` if the turn that took the request did not finish.
    answers: HashMap<u64, Option<S>>,
    /// Whether a caller is writing a turn.
    busy: bool,
}

impl<R, S> Default for Group<R, S> {
    fn default() -> Self {
        Group {
            state: Mutex::new(State {
                next_ticket: 0,
                waiting: Vec::new(),
                answers: HashMap::new(),
                busy: false,
            }),
            turn_ended: Condvar::new(),
        }
    }
}

impl<R, S> Group<R, S> {
    /// Queues `request` and returns its answer. If no turn is under way, this caller takes one:
    /// `write` gets every waiting request (this one included, in arrival order) and must return
    /// one answer per request, in the same order. `None` only if the turn that took the request
    /// panicked or answered the wrong number of requests.
    pub(super) fn submit(&self, request: R, write: impl FnOnce(Vec<R>) -> Vec<S>) -> Option<S> {
        let mut state = self.state.lock();
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.waiting.push((ticket, request));
        loop {
            if let Some(answer) = state.answers.remove(&ticket) {
                return answer;
            }
            if !state.busy {
                break;
            }
            self.turn_ended.wait(&mut state);
        }
        // Not answered and no turn under way, so no turn took this request yet: it is still
        // waiting, and this turn takes it with the others.
        state.busy = true;
        let (tickets, requests): (Vec<u64>, Vec<R>) = std::mem::take(&mut state.waiting).into_iter().unzip();
        drop(state);
        let mut turn = Turn {
            group: self,
            tickets,
            answers: None,
        };
        turn.answers = Some(write(requests));
        drop(turn);
        self.state.lock().answers.remove(&ticket).flatten()
    }
}

/// A turn under way. Dropping it ends the turn, answers handed out and waiters woken, also when
/// `write` panicked, so that no caller waits forever for an answer.
struct Turn<'a, R, S> {
    group: &'a Group<R, S>,
    tickets: Vec<u64>,
    answers: Option<Vec<S>>,
}

impl<R, S> Drop for Turn<'_, R, S> {
    fn drop(&mut self) {
        let mut state = self.group.state.lock();
        let tickets = std::mem::take(&mut self.tickets);
        match self.answers.take() {
            Some(answers) if answers.len() == tickets.len() => {
                for (ticket, answer) in tickets.into_iter().zip(answers) {
                    state.answers.insert(ticket, Some(answer));
                }
            }
            _ => {
                for ticket in tickets {
                    state.answers.insert(ticket, None);
                }
            }
        }
        state.busy = false;
        self.group.turn_ended.notify_all();
    }
}

#[cfg(test)]
impl<R, S> Group<R, S> {
    /// Requests no turn has taken yet.
    pub(super) fn waiting(&self) -> usize {
        self.state.lock().waiting.len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::sync::Arc;

    use super::*;

    /// Yields until `n` requests wait for a turn (the submitting threads are blocked in the
    /// group, so this is an event to wait for, not a guess at timing); fails after 10 s.
    fn until_waiting<R, S>(group: &Group<R, S>, n: usize) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while group.waiting() < n {
            assert!(
                std::time::Instant::now() < deadline,
                "{} of {n} requests wait for a turn after 10 s",
                group.waiting()
            );
            std::thread::yield_now();
        }
    }

    #[test]
    fn requests_that_arrive_during_a_turn_are_written_together_by_the_next_turn() {
        let group: Arc<Group<u32, u32>> = Arc::new(Group::default());
        let turns: Arc<Mutex<Vec<Vec<u32>>>> = Arc::default();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let (started_tx, started_rx) = mpsc::channel::<()>();
        let write = |turns: Arc<Mutex<Vec<Vec<u32>>>>| {
            move |requests: Vec<u32>| {
                turns.lock().push(requests.clone());
                requests.iter().map(|r| r * 10).collect::<Vec<u32>>()
            }
        };
        let first = {
            let (group, turns) = (Arc::clone(&group), Arc::clone(&turns));
            std::thread::spawn(move || {
                group.submit(1, |requests| {
                    started_tx.send(()).unwrap();
                    release_rx.recv().unwrap();
                    write(turns)(requests)
                })
            })
        };
        started_rx.recv().unwrap();
        let mut others = Vec::new();
        for (i, request) in [2u32, 3, 4].into_iter().enumerate() {
            let (g, turns) = (Arc::clone(&group), Arc::clone(&turns));
            others.push(std::thread::spawn(move || g.submit(request, write(turns))));
            // One at a time, so the arrival order is known.
            until_waiting(&group, i + 1);
        }
        release_tx.send(()).unwrap();
        assert_eq!(first.join().unwrap(), Some(10));
        let answers: Vec<Option<u32>> = others.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(answers, vec![Some(20), Some(30), Some(40)]);
        assert_eq!(
            *turns.lock(),
            vec![vec![1], vec![2, 3, 4]],
            "one turn for the three that waited"
        );
    }

    #[test]
    fn a_turn_that_panics_answers_its_waiters_with_none_and_the_group_goes_on() {
        let group: Arc<Group<u32, u32>> = Arc::new(Group::default());
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let (started_tx, started_rx) = mpsc::channel::<()>();
        let first = {
            let group = Arc::clone(&group);
            std::thread::spawn(move || {
                group.submit(1, |_| {
                    started_tx.send(()).unwrap();
                    release_rx.recv().unwrap();
                    // No answer: what a turn cut short by a panic leaves.
                    Vec::new()
                })
            })
        };
        started_rx.recv().unwrap();
        // Queued behind the first; the turn that takes it answers nothing either.
        let second = {
            let group = Arc::clone(&group);
            std::thread::spawn(move || group.submit(2, |_| Vec::new()))
        };
        until_waiting(&group, 1);
        release_tx.send(()).unwrap();
        assert_eq!(first.join().unwrap(), None);
        assert_eq!(second.join().unwrap(), None);
        let panicked = {
            let group = Arc::clone(&group);
            std::thread::spawn(move || group.submit(3, |_| -> Vec<u32> { panic!("writer panicked") }))
        };
        assert!(panicked.join().is_err());
        assert_eq!(
            group.submit(4, |r| r),
            Some(4),
            "the group takes turns after a panic"
        );
    }
}
