//! Running parallel work on a chosen number of threads (0 = rayon's global pool, all cores).

use std::sync::{Arc, Mutex};

use rayon::ThreadPool;

use crate::error::{Error, Result};

/// Pools kept across calls, most recently used last. A pool built per call cost a thread start
/// per worker and, worse, left every worker's chunk cache (thread-local) cold on every call.
static POOLS: Mutex<Vec<(usize, Arc<ThreadPool>)>> = Mutex::new(Vec::new());
/// Distinct thread counts kept; older pools are dropped (their threads exit once idle).
const KEPT_POOLS: usize = 4;

fn pool(num_threads: usize) -> Result<Arc<ThreadPool>> {
    // A poisoned lock only means another call panicked while holding it; the Vec is still valid.
    let mut pools = POOLS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(at) = pools.iter().position(|(n, _)| *n == num_threads) {
        let entry = pools.remove(at);
        let found = Arc::clone(&entry.1);
        pools.push(entry);
        return Ok(found);
    }
    let built = rayon::ThreadPoolBuilder::new()
        .num_threads(num_threads)
        .build()
        .map_err(|e| Error::InvalidArgument(format!("cannot start {num_threads} threads: {e}")))?;
    let built = Arc::new(built);
    if pools.len() >= KEPT_POOLS {
        pools.remove(0);
    }
    pools.push((num_threads, Arc::clone(&built)));
    Ok(built)
}

pub fn with_threads<R: Send>(num_threads: usize, work: impl FnOnce() -> R + Send) -> Result<R> {
    if num_threads == 0 {
        return Ok(work());
    }
    // The lock is released before the work runs, so concurrent calls share the pool.
    let pool = pool(num_threads)?;
    Ok(pool.install(work))
}

/// Runs `op` on the calling thread inside a scope of the chosen pool (0 = rayon's global pool):
/// what it spawns runs on that pool's threads, and the call returns once all of that is done.
/// `op` is also told the pool's thread count.
pub fn in_place_scope<'scope, R>(
    num_threads: usize,
    op: impl FnOnce(&rayon::Scope<'scope>, usize) -> R,
) -> Result<R> {
    if num_threads == 0 {
        return Ok(rayon::in_place_scope(|scope| {
            op(scope, rayon::current_num_threads())
        }));
    }
    let pool = pool(num_threads)?;
    Ok(pool.in_place_scope(|scope| op(scope, pool.current_num_threads())))
}
