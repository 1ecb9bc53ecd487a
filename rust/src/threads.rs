//! Running parallel work on a chosen number of threads (0 = all cores), safely across `fork()`.
//!
//! All parallel work runs in pools this module owns; rayon's global pool is never used. After a
//! `fork()` the child has copies of the parent's pools but none of their threads, so waiting on
//! one would hang forever (and a lock another parent thread held at the moment of the fork would
//! stay held). A `pthread_atfork` child handler bumps a generation counter; the first parallel call
//! in the child sees a generation its pool registry was not made for, and builds a fresh registry
//! with fresh pools instead. The parent's registry is leaked in the child, never locked or dropped:
//! its locks may be held by threads that do not exist there.

use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rayon::ThreadPool;

use crate::error::{Error, Result};

/// Distinct thread counts kept; older pools are dropped (their threads exit once idle).
/// A pool built per call cost a thread start per worker and, worse, left every worker's chunk
/// cache (thread-local) cold on every call.
const KEPT_POOLS: usize = 4;

/// Incremented in a child process right after `fork()`.
static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);
static FORK_HANDLER_SET: AtomicBool = AtomicBool::new(false);

/// The pools of one process image.
struct Registry {
    generation: u64,
    /// Most recently used last.
    pools: Mutex<Vec<(usize, Arc<ThreadPool>)>>,
}

static REGISTRY: AtomicPtr<Registry> = AtomicPtr::new(std::ptr::null_mut());

#[cfg(unix)]
extern "C" fn after_fork_in_child() {
    // Only an atomic add: async-signal-safe, as a fork handler must be.
    FORK_GENERATION.fetch_add(1, Ordering::SeqCst);
}

fn watch_forks() {
    #[cfg(unix)]
    if FORK_HANDLER_SET
        .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
    {
        // SAFETY: registers a handler that only touches an atomic; it stays valid for the life of
        // the process (it is a plain function). The return value is an error code for ENOMEM, in
        // which case forks are simply not detected (the old behaviour).
        unsafe {
            libc::pthread_atfork(None, None, Some(after_fork_in_child));
        }
    }
}

/// This process image's registry (a fresh one in a child forked since the last call).
fn registry() -> &'static Registry {
    watch_forks();
    loop {
        let generation = FORK_GENERATION.load(Ordering::SeqCst);
        let current = REGISTRY.load(Ordering::Acquire);
        // SAFETY: a registry, once published, is never freed (see the module docs).
        if let Some(found) = unsafe { current.as_ref() } {
            if found.generation == generation {
                return found;
            }
        }
        let fresh = Box::into_raw(Box::new(Registry {
            generation,
            pools: Mutex::new(Vec::new()),
        }));
        match REGISTRY.compare_exchange(current, fresh, Ordering::AcqRel, Ordering::Acquire) {
            // SAFETY: just published, never freed.
            Ok(_) => return unsafe { &*fresh },
            // Another thread published one first: drop ours (never shared) and look again.
            // SAFETY: `fresh` came from Box::into_raw above and was never published.
            Err(_) => drop(unsafe { Box::from_raw(fresh) }),
        }
    }
}

/// The thread count that 0 ("all cores") means: RAYON_NUM_THREADS when set (as rayon's own
/// default honours it), else the cores this process may run on.
pub fn default_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
}

fn pool(num_threads: usize) -> Result<Arc<ThreadPool>> {
    let num_threads = if num_threads == 0 {
        default_threads()
    } else {
        num_threads
    };
    // A poisoned lock only means another call panicked while holding it; the Vec is still valid.
    let mut pools = registry().pools.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(at) = pools.iter().position(|(n, _)| *n == num_threads) {
        let entry = pools.remove(at);
        let found = Arc::clone(&entry.1);
        pools.push(entry);
        return Ok(found);
    }
    let built = rayon::ThreadPoolBuilder::new()
        .num_threads(num_threads)
        .thread_name(|i| format!("bpe_fast-{i}"))
        .build()
        .map_err(|e| Error::InvalidArgument(format!("cannot start {num_threads} threads: {e}")))?;
    let built = Arc::new(built);
    if pools.len() >= KEPT_POOLS {
        pools.remove(0);
    }
    pools.push((num_threads, Arc::clone(&built)));
    Ok(built)
}

/// Runs `work` inside a pool of `num_threads` threads (0 = `default_threads()`): what it runs in
/// parallel (par_iter...) uses that pool's threads.
pub fn with_threads<R: Send>(num_threads: usize, work: impl FnOnce() -> R + Send) -> Result<R> {
    // The registry lock is released before the work runs, so concurrent calls share the pool.
    let pool = pool(num_threads)?;
    Ok(pool.install(work))
}

/// Runs `op` on the calling thread inside a scope of the chosen pool (0 = `default_threads()`):
/// what it spawns runs on that pool's threads, and the call returns once all of that is done.
/// `op` is also told the pool's thread count.
pub fn in_place_scope<'scope, R>(
    num_threads: usize,
    op: impl FnOnce(&rayon::Scope<'scope>, usize) -> R,
) -> Result<R> {
    let pool = pool(num_threads)?;
    Ok(pool.in_place_scope(|scope| op(scope, pool.current_num_threads())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayon::prelude::*;

    #[test]
    fn zero_threads_means_the_default_pool_and_counts_are_reused() {
        let n = with_threads(0, rayon::current_num_threads).unwrap();
        assert_eq!(n, default_threads());
        let a = pool(3).unwrap();
        let b = pool(3).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        let sum: u64 = with_threads(2, || (0..1000u64).into_par_iter().sum()).unwrap();
        assert_eq!(sum, 499_500);
    }

    #[test]
    fn a_new_fork_generation_gets_fresh_pools() {
        let before = pool(2).unwrap();
        FORK_GENERATION.fetch_add(1, Ordering::SeqCst);
        let after = pool(2).unwrap();
        assert!(!Arc::ptr_eq(&before, &after));
        let sum: u64 = with_threads(2, || (0..100u64).into_par_iter().sum()).unwrap();
        assert_eq!(sum, 4950);
    }
}
