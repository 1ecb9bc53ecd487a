//! Hints to the CPU and the OS about memory the trainer is about to use: cache prefetches for
//! loops that know which scattered nodes they read next, and huge pages for its big arrays.

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

/// An empty vector with room for `len` items, whose memory Linux is asked to back with 2 MiB
/// pages when first touched (transparent huge pages in "madvise" mode, the common default). The
/// trainer's big arrays are read at random: with 4 KiB pages, building a 16 MB node array took
/// 4096 page faults (over half its build time, on one 1 MB chunk), and every scattered read can
/// miss the TLB as well.
pub(crate) fn with_huge_pages<T>(len: usize) -> Vec<T> {
    let items: Vec<T> = Vec::with_capacity(len);
    #[cfg(target_os = "linux")]
    {
        const HUGE_PAGE: usize = 2 << 20;
        let start = items.as_ptr() as usize;
        let end = start + len * std::mem::size_of::<T>();
        // Only whole huge pages inside the allocation are advised.
        let first = (start + HUGE_PAGE - 1) & !(HUGE_PAGE - 1);
        let last = end & !(HUGE_PAGE - 1);
        if last > first {
            // SAFETY: the range lies inside this vector's own allocation; MADV_HUGEPAGE changes
            // no contents and no mapping, only how untouched pages will be backed. A failure
            // (e.g. THP disabled) leaves ordinary pages, so its result is ignored.
            unsafe {
                libc::madvise(
                    first as *mut libc::c_void,
                    last - first,
                    libc::MADV_HUGEPAGE,
                );
            }
        }
    }
    items
}
