//! Memory hints for the per-packet tables: a cache-line prefetch, and the check that the
//! tables can sit on transparent huge pages.
//!
//! A worker's connection-tracking table is one large array read at random (128 bytes a
//! flow: 128 MB at a million flows). With 4 KB pages every flow lookup also misses the
//! TLB, whose entries cover a few MB; with 2 MB pages the whole table needs ~70 of them.
//! The tables are ordinary heap memory, and glibc puts its heap on transparent huge
//! pages when the process starts with `GLIBC_TUNABLES=glibc.malloc.hugetlb=1` (the
//! systemd unit and the benches set it) and the kernel's THP mode is `madvise` or
//! `always`. [`huge_page_warning`] says when either is missing.
//!
//! This file is self-contained (std only) so that the dataplane's benches include it
//! rather than keep a copy of the prefetch.

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

/// Where the kernel says whether transparent huge pages are used.
pub const THP_SETTING: &str = "/sys/kernel/mm/transparent_hugepage/enabled";

/// The selected word of a `transparent_hugepage/enabled` text (`always [madvise] never`
/// → `madvise`), if the text has one.
pub fn thp_mode(setting: &str) -> Option<&str> {
    let start = setting.find('[')? + 1;
    let len = setting.get(start..)?.find(']')?;
    setting.get(start..start + len)
}

/// Whether a `GLIBC_TUNABLES` value asks malloc for transparent huge pages
/// (`glibc.malloc.hugetlb=1`; `=2` asks for reserved hugetlb pages, which also serves).
pub fn tunables_ask_for_huge_pages(tunables: &str) -> bool {
    tunables
        .split(':')
        .filter_map(|t| t.split_once('='))
        .any(|(name, value)| name == "glibc.malloc.hugetlb" && matches!(value, "1" | "2"))
}

/// A warning when the worker tables will sit on 4 KB pages: the kernel's THP mode is
/// `never` (or unreadable), or the process was not started with the malloc tunable.
/// `setting` is the text of [`THP_SETTING`], `tunables` the `GLIBC_TUNABLES` value.
pub fn huge_page_warning(setting: Option<&str>, tunables: Option<&str>) -> Option<String> {
    let consequence = "connection-tracking tables will use 4 KB pages (a TLB miss per \
                       flow lookup with many flows)";
    match setting.and_then(thp_mode) {
        Some("always") | Some("madvise") => {}
        Some(mode) => {
            return Some(format!(
                "transparent huge pages are '{mode}' in {THP_SETTING}: {consequence}; \
                 'madvise' is enough"
            ))
        }
        None => return Some(format!("cannot read {THP_SETTING}: {consequence}")),
    }
    if tunables.is_some_and(tunables_ask_for_huge_pages) {
        None
    } else {
        Some(format!(
            "GLIBC_TUNABLES does not set glibc.malloc.hugetlb=1: {consequence} (the systemd \
             unit sets it)"
        ))
    }
}

#[cfg(test)]
mod tests {
    // Each test imports what it uses: the benches compile this file with `cfg(test)` but
    // without its tests.

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
    fn warns_unless_thp_is_on_and_malloc_asks_for_it() {
        use super::huge_page_warning as warn;
        let on = Some("always [madvise] never\n");
        let tunable = Some("glibc.malloc.hugetlb=1");
        assert_eq!(warn(on, tunable), None);
        assert_eq!(warn(Some("[always] madvise never"), tunable), None);
        assert_eq!(
            warn(on, Some("glibc.malloc.arena_max=2:glibc.malloc.hugetlb=2")),
            None
        );
        let never = warn(Some("always madvise [never]"), tunable).unwrap();
        assert!(never.contains("'never'"), "{never}");
        assert!(warn(None, tunable).unwrap().contains("cannot read"));
        for missing in [None, Some(""), Some("glibc.malloc.hugetlb=0")] {
            let w = warn(on, missing).unwrap();
            assert!(w.contains("glibc.malloc.hugetlb=1"), "{w}");
        }
    }
}
