//! The EAL: one initialisation per process, cleaned up on drop; TSC time.

use super::{ffi, Error, Result};
use std::ffi::{c_char, c_int, CString};
use std::sync::atomic::{AtomicBool, Ordering};

static INITIALISED: AtomicBool = AtomicBool::new(false);

/// The initialised Environment Abstraction Layer. At most one per process, ever (DPDK
/// cannot re-initialise); dropping it runs `rte_eal_cleanup`, so drop it last.
pub struct Eal {
    _private: (),
}

impl Eal {
    /// Initialises DPDK with `args` (without the program name). Fails if called twice.
    pub fn init(args: &[String]) -> Result<Eal> {
        if INITIALISED.swap(true, Ordering::SeqCst) {
            return Err(Error {
                what: "rte_eal_init".into(),
                reason: "the EAL can be initialised only once per process".into(),
                code: libc::EALREADY,
            });
        }
        let mut owned: Vec<CString> = Vec::with_capacity(args.len() + 1);
        owned.push(CString::new("kubypass").unwrap_or_default());
        for a in args {
            owned.push(CString::new(a.as_str()).map_err(|_| Error {
                what: "rte_eal_init".into(),
                reason: format!("argument {a:?} contains a NUL byte"),
                code: libc::EINVAL,
            })?);
        }
        // rte_eal_init may permute argv; give it pointers into `owned`, which outlives
        // the call (DPDK copies what it keeps).
        let mut argv: Vec<*mut c_char> = owned.iter().map(|c| c.as_ptr().cast_mut()).collect();
        let argc = c_int::try_from(argv.len()).unwrap_or(c_int::MAX);
        // SAFETY: argv holds argc valid NUL-terminated strings that live across the call;
        // this is the only rte_eal_init of the process (guarded by INITIALISED).
        let ret = unsafe { ffi::rte_eal_init(argc, argv.as_mut_ptr()) };
        if ret < 0 {
            return Err(Error::from_errno("rte_eal_init"));
        }
        Ok(Eal { _private: () })
    }

    /// The main lcore (the one running the control thread).
    pub fn main_lcore(&self) -> u32 {
        // SAFETY: EAL is initialised (self exists).
        unsafe { ffi::rte_get_main_lcore() }
    }

    /// Whether `lcore` is enabled in this EAL's lcore set.
    pub fn lcore_enabled(&self, lcore: u32) -> bool {
        if lcore >= ffi::RTE_MAX_LCORE {
            return false;
        }
        // SAFETY: EAL initialised; lcore is below RTE_MAX_LCORE.
        unsafe { ffi::rte_lcore_is_enabled(lcore) != 0 }
    }

    /// The enabled lcores other than the main one, in order.
    pub fn worker_lcores(&self) -> Vec<u32> {
        let main = self.main_lcore();
        (0..ffi::RTE_MAX_LCORE)
            .filter(|&l| l != main && self.lcore_enabled(l))
            .collect()
    }

    /// The CPU that `lcore` runs on (its first CPU if it has several).
    pub fn lcore_cpu(&self, lcore: u32) -> u32 {
        // SAFETY: EAL initialised; rte_lcore_to_cpu_id checks the bound itself.
        let cpu = unsafe { ffi::rte_lcore_to_cpu_id(c_int::try_from(lcore).unwrap_or(-1)) };
        u32::try_from(cpu).unwrap_or(0)
    }

    /// The NUMA socket of the calling thread.
    pub fn socket_id(&self) -> i32 {
        // SAFETY: EAL initialised.
        let s = unsafe { ffi::rte_socket_id() };
        i32::try_from(s).unwrap_or(-1)
    }
}

impl Drop for Eal {
    fn drop(&mut self) {
        // SAFETY: runs once, after every DPDK object created through this module has been
        // released (callers drop ports and pools before the Eal).
        unsafe {
            ffi::rte_eal_cleanup();
        }
    }
}

/// The current TSC value (cycles).
#[inline]
pub fn tsc_now() -> u64 {
    // rdtsc inline rather than through DPDK's out-of-line wrapper: it runs every loop turn.
    #[cfg(target_arch = "x86_64")]
    // SAFETY: rdtsc reads the time-stamp counter; it has no preconditions.
    let t = unsafe { std::arch::x86_64::_rdtsc() };
    #[cfg(not(target_arch = "x86_64"))]
    // SAFETY: rte_rdtsc reads the cycle counter; no preconditions.
    let t = unsafe { ffi::rte_rdtsc() };
    t
}

/// TSC cycles per second, as measured by the EAL.
pub fn tsc_hz() -> u64 {
    // SAFETY: returns a value the EAL computed at init; harmless before init (0).
    unsafe { ffi::rte_get_tsc_hz() }
}
