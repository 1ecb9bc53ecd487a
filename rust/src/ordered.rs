//! Parallel work whose results the calling thread takes, in order, while the rest is still running.
//!
//! The binding's `encode_batch` uses it: pool threads encode documents while the calling thread
//! (the one holding the GIL) turns the documents already encoded into Python lists, so building
//! the output overlaps the encoding instead of following it. When the next result in order is not
//! ready, the calling thread encodes a unit itself rather than wait, so `num_threads` threads stay
//! busy in all (the pool's threads but one, plus the caller).

use std::ops::Range;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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
/// `num_threads` 0 means rayon's global pool.
pub fn split_units(lengths: &[usize], num_threads: usize) -> Vec<Range<usize>> {
    let threads = match num_threads {
        0 => rayon::current_num_threads(),
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

struct Shared<T> {
    /// The next unit nobody has claimed yet (it runs past `units` once all are claimed).
    next: AtomicUsize,
    units: usize,
    /// Set when the calling thread stops taking results (an error, a panic): claim no more units.
    stop: AtomicBool,
    /// Each unit's result (or its panic), from its end until the calling thread takes it.
    done: Mutex<Vec<Option<std::thread::Result<T>>>>,
    ready: Condvar,
}

impl<T> Shared<T> {
    fn claim(&self) -> Option<usize> {
        if self.stop.load(Ordering::Relaxed) {
            return None;
        }
        let unit = self.next.fetch_add(1, Ordering::Relaxed);
        (unit < self.units).then_some(unit)
    }

    fn done(&self) -> MutexGuard<'_, Vec<Option<std::thread::Result<T>>>> {
        // Nothing panics while holding the lock (`produce` runs outside it), so a poisoned lock
        // still holds valid data.
        self.done.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn run(&self, unit: usize, produce: &(impl Fn(usize) -> T + Sync)) {
        // A panic is handed to the calling thread with the unit, which re-raises it in order;
        // a worker that let it unwind would leave the calling thread waiting for the unit forever.
        let result = catch_unwind(AssertUnwindSafe(|| produce(unit)));
        self.done()[unit] = Some(result);
        self.ready.notify_all();
    }
}

/// Sets `stop` when the calling thread leaves its loop, normally or not.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Runs `produce(unit)` for every unit in `0..units` on `num_threads` threads (0 = rayon's global
/// pool) and hands every result to `consume` on the calling thread, in unit order, as soon as it
/// and all before it are done. The calling thread runs `produce` (and waits) only through
/// `unlocked`, which may release a lock around it (the binding releases the GIL) and must call
/// the function it is given exactly once.
///
/// Returns `consume`'s first error, after which no further unit is started (those running finish).
/// A panic in `produce` reaches the caller when its unit's turn comes.
pub fn run_ordered<T: Send, E>(
    units: usize,
    num_threads: usize,
    produce: impl Fn(usize) -> T + Sync,
    mut consume: impl FnMut(usize, T) -> std::result::Result<(), E>,
    unlocked: impl Fn(&(dyn Fn() + Sync)),
) -> Result<std::result::Result<(), E>> {
    let shared = Shared {
        next: AtomicUsize::new(0),
        units,
        stop: AtomicBool::new(false),
        done: Mutex::new((0..units).map(|_| None).collect()),
        ready: Condvar::new(),
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
        let _stop = StopOnDrop(&shared.stop);
        for unit in 0..units {
            let result = loop {
                if let Some(result) = shared.done()[unit].take() {
                    break result;
                }
                match shared.claim() {
                    Some(other) => unlocked(&|| shared.run(other, produce)),
                    // Every unit is claimed, so `unit` is being produced by a worker: wait for it.
                    None => unlocked(&|| {
                        let mut done = shared.done();
                        while done[unit].is_none() {
                            done = shared.ready.wait(done).unwrap_or_else(|e| e.into_inner());
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
    use std::sync::atomic::AtomicUsize;

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
}
