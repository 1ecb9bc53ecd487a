//! Running parallel work on a chosen number of threads (0 = rayon's global pool, all cores).

use crate::error::{Error, Result};

pub fn with_threads<R: Send>(num_threads: usize, work: impl FnOnce() -> R + Send) -> Result<R> {
    if num_threads == 0 {
        return Ok(work());
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(num_threads)
        .build()
        .map_err(|e| Error::InvalidArgument(format!("cannot start {num_threads} threads: {e}")))?;
    Ok(pool.install(work))
}
