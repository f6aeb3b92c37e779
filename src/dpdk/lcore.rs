//! Running a closure on a worker lcore (an EAL thread pinned to its CPU set).

use super::{ffi, Eal, Error, Result};
use std::ffi::{c_int, c_void};

type Job = Box<dyn FnOnce() -> i32 + Send + 'static>;

/// A closure running on a worker lcore; [`LaunchedLcore::wait`] joins it.
#[must_use = "an unjoined lcore keeps running; call wait()"]
pub struct LaunchedLcore {
    lcore: u32,
    joined: bool,
}

/// Starts `job` on worker lcore `lcore`; the lcore must be enabled, not the main one,
/// and idle.
pub fn launch<F>(_eal: &Eal, lcore: u32, job: F) -> Result<LaunchedLcore>
where
    F: FnOnce() -> i32 + Send + 'static,
{
    let boxed: Box<Job> = Box::new(Box::new(job));
    let arg = Box::into_raw(boxed).cast::<c_void>();
    // SAFETY: `trampoline` matches lcore_function_t; `arg` is a leaked Box<Job> that the
    // trampoline takes back exactly once. On failure DPDK did not run it, so we reclaim it.
    let ret = unsafe { ffi::rte_eal_remote_launch(Some(trampoline), arg, lcore) };
    if ret != 0 {
        // SAFETY: the launch failed, so `arg` was not handed to any thread; reclaim it.
        drop(unsafe { Box::from_raw(arg.cast::<Job>()) });
        return Err(Error::from_code(
            format!("rte_eal_remote_launch(lcore {lcore})"),
            ret,
        ));
    }
    Ok(LaunchedLcore {
        lcore,
        joined: false,
    })
}

unsafe extern "C" fn trampoline(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the Box<Job> leaked by `launch`, handed to this lcore only.
    let job = unsafe { Box::from_raw(arg.cast::<Job>()) };
    // A panic must not unwind into C; report it as a failed lcore instead.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(*job)).unwrap_or(-1)
}

impl LaunchedLcore {
    /// The lcore this job runs on.
    pub fn lcore(&self) -> u32 {
        self.lcore
    }

    /// Waits for the job to return and gives its return value.
    pub fn wait(mut self) -> i32 {
        self.joined = true;
        // SAFETY: the lcore was launched by `launch` and has not been waited for.
        unsafe { ffi::rte_eal_wait_lcore(self.lcore) }
    }
}

impl Drop for LaunchedLcore {
    fn drop(&mut self) {
        if !self.joined {
            // SAFETY: as in `wait`; joining here keeps the job from outliving its owner.
            unsafe {
                ffi::rte_eal_wait_lcore(self.lcore);
            }
        }
    }
}
