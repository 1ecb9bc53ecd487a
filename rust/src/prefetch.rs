//! A cache prefetch hint, for loops that know which scattered memory they will read next.

/// Asks the CPU to start loading the cache line at `item`. Only a hint: it reads nothing, cannot
/// fault, and does nothing on targets without the instruction.
#[inline(always)]
pub(crate) fn prefetch<T>(item: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads no memory and cannot fault, whatever the address.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(item.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = item;
}
