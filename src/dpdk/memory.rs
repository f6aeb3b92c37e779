//! Memory hints for the per-packet tables: a cache-line prefetch, and a global allocator
//! that backs large allocations with transparent huge pages.
//!
//! Why huge pages. A worker's connection-tracking table is one large array (128 bytes a
//! flow: 128 MB at a million flows) read at random. With 4 KB pages every flow lookup
//! also misses the TLB (its 2,048 entries cover 8 MB), and the page walk is a dependent
//! memory load of its own in front of the flow's. With 2 MB pages the whole table needs
//! ~70 TLB entries. DPDK keeps its own memory (mbufs, rings) in the hugepages set up for
//! it; the tables kubypass builds in Rust come from this allocator instead, which leaves
//! DPDK's hugepage pool alone and asks the kernel for transparent huge pages.
//!
//! [`HugePageAlloc`] serves an allocation of [`LARGE`] bytes or more with its own
//! anonymous mapping, aligned to 2 MB and advised `MADV_HUGEPAGE` before anything touches
//! it, so the kernel backs it with huge pages as it is first written (when
//! `/sys/kernel/mm/transparent_hugepage/enabled` is `always` or `madvise`, Debian's
//! default; with `never` the advice is ignored and the memory is ordinary). Smaller
//! allocations go to the system allocator unchanged.
//!
//! This file is self-contained (std and libc only) so that the dataplane's benches include
//! it and measure the tables on the memory the appliance gives them.

use std::alloc::{GlobalAlloc, Layout, System};
use std::ptr;

/// Brings the cache line holding `p` towards the core (DPDK's `rte_prefetch0`): a hint
/// that never faults, whatever the address, so it is safe to call with any pointer.
#[inline]
pub fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `prefetcht0` is a hint: it reads nothing into the program and does not
    // fault on any address, mapped or not.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// The huge page size the mappings are aligned to (x86-64 and arm64 with 4 KB base pages).
pub const HUGE_PAGE: usize = 2 << 20;

/// Allocations of at least this many bytes get their own huge-page mapping: below it, a
/// mapping's rounding to 2 MB would waste more than it saves.
pub const LARGE: usize = 4 << 20;

/// The global allocator of the appliance (and of the dataplane benches): large
/// allocations on transparent huge pages (see the module documentation), the rest from
/// [`System`].
pub struct HugePageAlloc;

/// Whether `layout` is served by its own mapping.
#[inline]
fn is_large(layout: &Layout) -> bool {
    layout.size() >= LARGE && layout.align() <= HUGE_PAGE
}

/// `n` rounded up to a multiple of [`HUGE_PAGE`] (`None` on overflow).
#[inline]
fn huge_pages(n: usize) -> Option<usize> {
    n.checked_add(HUGE_PAGE - 1).map(|x| x & !(HUGE_PAGE - 1))
}

/// Maps `size` bytes (rounded up to huge pages) of zeroed anonymous memory aligned to
/// [`HUGE_PAGE`] and advises the kernel to back it with huge pages. Null on failure.
fn map_huge(size: usize) -> *mut u8 {
    let Some(len) = huge_pages(size) else {
        return ptr::null_mut();
    };
    // Map one huge page more than needed, then trim the unaligned head and the tail.
    let Some(span) = len.checked_add(HUGE_PAGE) else {
        return ptr::null_mut();
    };
    // SAFETY: an anonymous private mapping at an address of the kernel's choosing; it
    // touches no existing memory.
    let base = unsafe {
        libc::mmap(
            ptr::null_mut(),
            span,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return ptr::null_mut();
    }
    let start = base as usize;
    let aligned = (start + HUGE_PAGE - 1) & !(HUGE_PAGE - 1);
    let head = aligned - start;
    let tail = span - head - len;
    // SAFETY: both ranges lie inside the mapping just made and outside the part kept;
    // unmapping them cannot fail for lack of a mapping.
    unsafe {
        if head > 0 {
            libc::munmap(base, head);
        }
        if tail > 0 {
            libc::munmap((aligned + len) as *mut libc::c_void, tail);
        }
    }
    // SAFETY: advice on the mapping just made. It fails only where THP is not built into
    // the kernel, and then the memory is simply ordinary pages.
    unsafe { libc::madvise(aligned as *mut libc::c_void, len, libc::MADV_HUGEPAGE) };
    aligned as *mut u8
}

/// Where the kernel says whether transparent huge pages are used.
pub const THP_SETTING: &str = "/sys/kernel/mm/transparent_hugepage/enabled";

/// The selected word of a `transparent_hugepage/enabled` text (`always [madvise] never`
/// → `madvise`), if the text has one.
pub fn thp_mode(setting: &str) -> Option<&str> {
    let start = setting.find('[')? + 1;
    let len = setting.get(start..)?.find(']')?;
    setting.get(start..start + len)
}

/// A warning when this host will not give [`HugePageAlloc`] huge pages (THP set to
/// `never`, or not built into the kernel), `None` when it will.
pub fn huge_page_warning() -> Option<String> {
    let consequence = "large tables (connection tracking) use 4 KB pages, which costs a TLB \
                       miss per flow lookup with many flows";
    match std::fs::read_to_string(THP_SETTING) {
        Ok(text) => match thp_mode(&text) {
            Some("always") | Some("madvise") => None,
            Some(mode) => Some(format!(
                "transparent huge pages are '{mode}' ({THP_SETTING}): {consequence}; \
                 'madvise' is enough"
            )),
            None => Some(format!(
                "cannot read the mode in {THP_SETTING}: {consequence}"
            )),
        },
        Err(e) => Some(format!("{THP_SETTING}: {e}: {consequence}")),
    }
}

// SAFETY: every block is either the system allocator's (small layouts, handled by
// `System` in both directions) or a mapping of its own (large layouts: `map_huge` on
// the way in, `munmap` of the same rounded length on the way out); which one is decided
// by the layout alone, and `dealloc`/`realloc` receive the layout the block was
// allocated with. Mappings are page aligned, at least `HUGE_PAGE`, so any large layout's
// alignment (≤ `HUGE_PAGE`) is honoured, and they are zeroed, as `alloc_zeroed` needs.
unsafe impl GlobalAlloc for HugePageAlloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_large(&layout) {
            map_huge(layout.size())
        } else {
            // SAFETY: the caller's contract for `alloc`, passed on.
            unsafe { System.alloc(layout) }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_large(&layout) {
            // Fresh anonymous memory reads as zero; nothing is touched until used.
            map_huge(layout.size())
        } else {
            // SAFETY: the caller's contract for `alloc_zeroed`, passed on.
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_large(&layout) {
            if let Some(len) = huge_pages(layout.size()) {
                // SAFETY: `ptr` is a mapping `map_huge` made for this layout, of `len`
                // bytes, and the caller gives it up.
                unsafe { libc::munmap(ptr.cast(), len) };
            }
        } else {
            // SAFETY: `ptr` came from `System` with this layout.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `new_size`, rounded up to the alignment, does not
        // overflow `isize`, which is what `Layout` requires.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if !is_large(&layout) && !is_large(&new_layout) {
            // SAFETY: both sides are the system allocator's; the caller's contract holds.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // SAFETY: a fresh block for the new layout, the old block's bytes that fit copied
        // into it, then the old block freed with the layout it was allocated with.
        unsafe {
            let moved = self.alloc(new_layout);
            if !moved.is_null() {
                ptr::copy_nonoverlapping(ptr, moved, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            moved
        }
    }
}

#[cfg(test)]
mod tests {
    // Each test imports what it uses: the benches compile this file with `cfg(test)` but
    // without its tests.

    /// The `/proc/self/smaps` entry of the mapping that starts at `addr`, if any.
    fn smaps_entry(addr: usize) -> Option<String> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
        let mut entry: Option<String> = None;
        for line in smaps.lines() {
            let starts_mapping = line
                .split_once('-')
                .and_then(|(a, _)| usize::from_str_radix(a, 16).ok())
                .filter(|_| line.contains(' '));
            if let Some(start) = starts_mapping {
                if entry.is_some() {
                    break;
                }
                if start == addr {
                    entry = Some(String::new());
                }
            }
            if let Some(e) = entry.as_mut() {
                e.push_str(line);
                e.push('\n');
            }
        }
        entry
    }

    #[test]
    fn large_blocks_are_aligned_advised_zeroed_and_unmapped() {
        use super::*;
        let layout = Layout::from_size_align(LARGE + 12_345, 64).unwrap();
        // SAFETY: a non-zero layout; the block is freed below with the same layout.
        let p = unsafe { HugePageAlloc.alloc_zeroed(layout) };
        assert!(!p.is_null());
        assert_eq!(p as usize % HUGE_PAGE, 0, "2 MB aligned");
        // SAFETY: `p` is valid for `layout.size()` bytes.
        let block = unsafe { std::slice::from_raw_parts_mut(p, layout.size()) };
        assert!(block.iter().all(|&b| b == 0));
        block.fill(0xa5);
        let entry = smaps_entry(p as usize).expect("the block is its own mapping");
        let flags = entry
            .lines()
            .find_map(|l| l.strip_prefix("VmFlags:"))
            .expect("smaps lists VmFlags");
        assert!(
            flags.split_whitespace().any(|f| f == "hg"),
            "advised MADV_HUGEPAGE: {flags}"
        );
        // SAFETY: allocated above with this layout, no longer used.
        unsafe { HugePageAlloc.dealloc(p, layout) };
        assert!(smaps_entry(p as usize).is_none(), "unmapped on dealloc");
    }

    #[test]
    fn thp_mode_is_the_bracketed_word() {
        use super::thp_mode;
        assert_eq!(thp_mode("always [madvise] never\n"), Some("madvise"));
        assert_eq!(thp_mode("[always] madvise never"), Some("always"));
        assert_eq!(thp_mode("always madvise [never]"), Some("never"));
        assert_eq!(thp_mode("always madvise never"), None);
        assert_eq!(thp_mode("always [madvise"), None);
    }

    #[test]
    fn small_blocks_come_from_the_system_allocator() {
        use super::*;
        let layout = Layout::from_size_align(4096, 8).unwrap();
        // SAFETY: a non-zero layout; freed below with the same layout.
        let p = unsafe { HugePageAlloc.alloc(layout) };
        assert!(!p.is_null());
        assert!(smaps_entry(p as usize).is_none() || p as usize % HUGE_PAGE != 0);
        // SAFETY: allocated above with this layout.
        unsafe { HugePageAlloc.dealloc(p, layout) };
    }

    #[test]
    fn realloc_keeps_the_bytes_across_the_threshold_both_ways() {
        use super::*;
        let small = Layout::from_size_align(1000, 8).unwrap();
        // SAFETY: each step passes the block and the layout it currently has.
        unsafe {
            let p = HugePageAlloc.alloc(small);
            assert!(!p.is_null());
            for i in 0..1000 {
                *p.add(i) = i as u8;
            }
            let big = HugePageAlloc.realloc(p, small, LARGE * 2);
            assert!(!big.is_null());
            assert_eq!(big as usize % HUGE_PAGE, 0);
            assert!((0..1000).all(|i| *big.add(i) == i as u8));
            *big.add(LARGE * 2 - 1) = 7;
            let big_layout = Layout::from_size_align(LARGE * 2, 8).unwrap();
            let back = HugePageAlloc.realloc(big, big_layout, 500);
            assert!(!back.is_null());
            assert!((0..500).all(|i| *back.add(i) == i as u8));
            assert!(
                smaps_entry(big as usize).is_none(),
                "the mapping was given back"
            );
            HugePageAlloc.dealloc(back, Layout::from_size_align(500, 8).unwrap());
        }
    }
}
