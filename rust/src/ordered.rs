//! Parallel work whose results the calling thread takes, in order, while the rest is still running.
//!
//! The binding's `encode_batch` uses it: pool threads encode documents while the calling thread
//! (the one holding the GIL) turns the documents already encoded into Python lists, so building
//! the output overlaps the encoding instead of following it. When the next result in order is not
//! ready, the calling thread encodes a unit itself rather than wait, so `num_threads` threads stay
//! busy in all (the pool's threads but one, plus the caller).

use std::ops::Range;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::{Condvar, Mutex, MutexGuard};

use crate::error::Result;
use crate::threads::in_place_scope;

/// Units of work are runs of consecutive items of about this many bytes at most (an item longer
/// than that is a unit of its own), so that a batch of many short texts does not pay a hand-off
/// per text.
const MAX_UNIT_BYTES: usize = 64 * 1024;
/// ... and at least this many, even when that leaves fewer than `UNITS_PER_THREAD` per thread.
const MIN_UNIT_BYTES: usize = 4 * 1024;
/// Units per thread aimed at, so that the last units to finish are small next to the whole.
const UNITS_PER_THREAD: usize = 16;

/// Consecutive ranges of item indices covering `0..lengths.len()`, each of roughly the same
/// number of bytes (see `MAX_UNIT_BYTES`); empty for no items.
/// `num_threads` 0 means all cores (`threads::default_threads`).
pub fn split_units(lengths: &[usize], num_threads: usize) -> Vec<Range<usize>> {
    let threads = match num_threads {
        0 => crate::threads::default_threads(),
        n => n,
    };
    let total: usize = lengths.iter().sum();
    let target = (total / (threads * UNITS_PER_THREAD)).clamp(MIN_UNIT_BYTES, MAX_UNIT_BYTES);
    let mut units = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (index, &length) in lengths.iter().enumerate() {
        bytes += length;
        if bytes >= target {
            units.push(start..index + 1);
            start = index + 1;
            bytes = 0;
        }
    }
    if start < lengths.len() {
        units.push(start..lengths.len());
    }
    units
}

struct State<T> {
    /// Units whose inputs are ready (`prepare` has run for `0..prepared`).
    prepared: usize,
    /// The next unit nobody has claimed yet.
    next: usize,
    /// Set when the calling thread stops taking results (an error, a panic): claim no more units.
    stop: bool,
    /// Each unit's result (or its panic), from its end until the calling thread takes it.
    done: Vec<Option<std::thread::Result<T>>>,
}

struct Shared<T> {
    units: usize,
    state: Mutex<State<T>>,
    /// Notified when a unit is prepared or done, and on stop.
    changed: Condvar,
}

impl<T> Shared<T> {
    fn state(&self) -> MutexGuard<'_, State<T>> {
        // Nothing panics while holding the lock (`prepare`, `produce` and `consume` run outside
        // it), so a poisoned lock still holds valid data.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wait<'a>(&self, state: MutexGuard<'a, State<T>>) -> MutexGuard<'a, State<T>> {
        self.changed.wait(state).unwrap_or_else(|e| e.into_inner())
    }

    fn update(&self, change: impl FnOnce(&mut State<T>)) {
        change(&mut self.state());
        self.changed.notify_all();
    }

    /// The next unit to produce, once it is prepared; None when all are claimed or on stop.
    fn claim(&self) -> Option<usize> {
        let mut state = self.state();
        loop {
            if state.stop || state.next >= self.units {
                return None;
            }
            if state.next < state.prepared {
                state.next += 1;
                return Some(state.next - 1);
            }
            state = self.wait(state);
        }
    }

    fn run(&self, unit: usize, produce: &(impl Fn(usize) -> T + Sync)) {
        // A panic is handed to the calling thread with the unit, which re-raises it in order;
        // a worker that let it unwind would leave the calling thread waiting for the unit forever.
        let result = catch_unwind(AssertUnwindSafe(|| produce(unit)));
        self.update(|state| state.done[unit] = Some(result));
    }
}

/// Stops the workers when the calling thread leaves its loop, normally or not.
struct StopOnDrop<'a, T>(&'a Shared<T>);

impl<T> Drop for StopOnDrop<'_, T> {
    fn drop(&mut self) {
        self.0.update(|state| state.stop = true);
    }
}

/// Runs `produce(unit)` for every unit in `0..units` on `num_threads` threads (0 = rayon's global
/// pool) and hands every result to `consume` on the calling thread, in unit order, as soon as it
/// and all before it are done.
///
/// The calling thread first runs `prepare(unit)` for every unit in order (a unit is produced only
/// once prepared, so pool threads start on the first units while it prepares the rest), then
/// consumes, producing units itself when the next result is not ready. It runs `produce` (and
/// waits) only through `unlocked`, which may release a lock around it (the binding releases the
/// GIL) and must call the function it is given exactly once.
///
/// Returns the first error of `prepare` or `consume`, after which no further unit is started
/// (those running finish). A panic in `produce` reaches the caller when its unit's turn comes.
pub fn run_ordered<T: Send, E>(
    units: usize,
    num_threads: usize,
    mut prepare: impl FnMut(usize) -> std::result::Result<(), E>,
    produce: impl Fn(usize) -> T + Sync,
    mut consume: impl FnMut(usize, T) -> std::result::Result<(), E>,
    unlocked: impl Fn(&(dyn Fn() + Sync)),
) -> Result<std::result::Result<(), E>> {
    let shared = Shared {
        units,
        state: Mutex::new(State {
            prepared: 0,
            next: 0,
            stop: false,
            done: (0..units).map(|_| None).collect(),
        }),
        changed: Condvar::new(),
    };
    let (shared, produce) = (&shared, &produce);
    in_place_scope(num_threads, |scope, threads| {
        // The calling thread is one of the `threads`.
        let workers = threads.saturating_sub(1).min(units.saturating_sub(1));
        for _ in 0..workers {
            scope.spawn(move |_| {
                while let Some(unit) = shared.claim() {
                    shared.run(unit, produce);
                }
            });
        }
        let _stop = StopOnDrop(shared);
        for unit in 0..units {
            prepare(unit)?;
            shared.update(|state| state.prepared = unit + 1);
        }
        for unit in 0..units {
            let result = loop {
                if let Some(result) = shared.state().done[unit].take() {
                    break result;
                }
                match shared.claim() {
                    Some(other) => unlocked(&|| shared.run(other, produce)),
                    // Every unit is claimed, so `unit` is being produced by a worker: wait for it.
                    None => unlocked(&|| {
                        let mut state = shared.state();
                        while state.done[unit].is_none() {
                            state = shared.wait(state);
                        }
                    }),
                }
            };
            match result {
                Ok(value) => consume(unit, value)?,
                Err(panic) => resume_unwind(panic),
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn units_cover_all_items_in_order() {
        assert!(split_units(&[], 2).is_empty());
        for lengths in [
            vec![0; 5],
            vec![100_000; 3],
            vec![50; 10_000],
            vec![1, 70_000, 2, 3],
        ] {
            for threads in [0, 1, 2, 8] {
                let units = split_units(&lengths, threads);
                let flat: Vec<usize> = units.iter().flat_map(|u| u.clone()).collect();
                assert_eq!(flat, (0..lengths.len()).collect::<Vec<_>>());
                assert!(units.iter().all(|u| !u.is_empty()));
            }
        }
        // Short items are grouped, long ones stand alone.
        assert!(split_units(&[50; 10_000], 2).len() < 200);
        assert_eq!(split_units(&[100_000; 3], 2).len(), 3);
    }

    fn squares(units: usize, threads: usize) -> Vec<(usize, usize)> {
        let mut seen = Vec::new();
        let calls = AtomicUsize::new(0);
        run_ordered(
            units,
            threads,
            |_| Ok(()),
            |unit| unit * unit,
            |unit, value| {
                seen.push((unit, value));
                Ok::<_, ()>(())
            },
            |work| {
                calls.fetch_add(1, Ordering::Relaxed);
                work()
            },
        )
        .unwrap()
        .unwrap();
        seen
    }

    #[test]
    fn results_come_in_order_whatever_the_threads() {
        for threads in [0, 1, 2, 4] {
            for units in [0, 1, 2, 3, 100] {
                let want: Vec<(usize, usize)> = (0..units).map(|u| (u, u * u)).collect();
                assert_eq!(squares(units, threads), want);
            }
        }
    }

    #[test]
    fn consume_error_stops_early() {
        let produced = AtomicUsize::new(0);
        let mut consumed = 0;
        let outcome = run_ordered(
            10_000,
            2,
            |_| Ok(()),
            |unit| {
                produced.fetch_add(1, Ordering::Relaxed);
                unit
            },
            |_, value| {
                consumed += 1;
                if value == 3 {
                    Err(format!("bad unit {value}"))
                } else {
                    Ok(())
                }
            },
            |work| work(),
        )
        .unwrap();
        assert_eq!(outcome, Err("bad unit 3".to_string()));
        assert_eq!(consumed, 4);
        assert!(produced.load(Ordering::Relaxed) < 10_000);
    }

    #[test]
    fn a_panic_in_produce_reaches_the_caller() {
        for threads in [1, 2] {
            let caught = catch_unwind(AssertUnwindSafe(|| {
                run_ordered(
                    50,
                    threads,
                    |_| Ok(()),
                    |unit| {
                        if unit == 7 {
                            panic!("unit seven");
                        }
                        unit
                    },
                    |_, _| Ok::<_, ()>(()),
                    |work| work(),
                )
            }));
            let payload = caught.unwrap_err();
            assert_eq!(payload.downcast_ref::<&str>(), Some(&"unit seven"));
        }
    }

    #[test]
    fn units_are_produced_only_once_prepared() {
        for threads in [1, 2, 4] {
            let inputs: Vec<Mutex<Option<usize>>> = (0..200).map(|_| Mutex::new(None)).collect();
            let mut seen = Vec::new();
            run_ordered(
                inputs.len(),
                threads,
                |unit| {
                    std::thread::yield_now();
                    *inputs[unit].lock().unwrap() = Some(unit + 1);
                    Ok::<_, ()>(())
                },
                |unit| inputs[unit].lock().unwrap().take().expect("prepared") * 10,
                |_, value| {
                    seen.push(value);
                    Ok(())
                },
                |work| work(),
            )
            .unwrap()
            .unwrap();
            assert_eq!(seen, (1..=200).map(|v| v * 10).collect::<Vec<_>>());
        }
    }

    #[test]
    fn prepare_error_stops_everything() {
        for threads in [1, 2, 4] {
            let produced = AtomicUsize::new(0);
            let highest = AtomicUsize::new(0);
            let outcome = run_ordered(
                100,
                threads,
                |unit| if unit == 5 { Err(unit) } else { Ok(()) },
                |unit| {
                    produced.fetch_add(1, Ordering::Relaxed);
                    highest.fetch_max(unit, Ordering::Relaxed);
                },
                |_, _| Ok(()),
                |work| work(),
            )
            .unwrap();
            assert_eq!(outcome, Err(5));
            assert!(produced.load(Ordering::Relaxed) <= 5);
            assert!(highest.load(Ordering::Relaxed) < 5);
        }
    }
}
