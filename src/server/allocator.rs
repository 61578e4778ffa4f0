//! How the gateway asks glibc's allocator to give memory back (one of the two places with
//! `unsafe` code; the other is `tiny_http_workarounds::listener::close_accepted`).
//!
//! A gateway that held 100,000 nodes and lost them should shrink back to about the size of an
//! empty one. glibc keeps freed memory for reuse, and three of its defaults defeat that here
//! (measured in BENCHMARKS.md, "memory after every node left"):
//!
//! - **Dynamic thresholds.** Freeing a large block that was mapped on its own (a 24 MB peer
//!   list) raises the mmap threshold to that size, and the trim threshold to twice it. From
//!   then on, large blocks come from the arenas, and an arena keeps its free top up to 48 MB.
//!   [`tune`] fixes both thresholds, which turns the adjustment off.
//! - **`malloc_trim` and the arenas' tops.** `malloc_trim` releases the free pages inside every
//!   arena, but only the main arena's free top; the other arenas shrink their top only when a
//!   large block is freed in them. With fixed thresholds they do.
//! - **One arena per thread, up to eight per core.** Records allocated by every worker and
//!   connection thread spread over up to 16 arenas, each with its own free pages and caches.
//!   [`tune`] caps them at [`ARENA_MAX`].
//!
//! And one thing no setting fixes: memory freed after a trim stays with the allocator. Each
//! thread caches some freed blocks and hands them back when it exits (tiny_http ends an idle
//! connection thread after 5 s), and a reader may hold an old peer list for a while. So the
//! gateway trims after a mass departure and again on the sweeps of the next
//! `gateway::TRIM_AGAIN_FOR` (`Gateway::sweep`).
//!
//! Elsewhere (musl, macOS, another global allocator) both functions do nothing.

/// Most malloc arenas (glibc's default is eight per core).
pub const ARENA_MAX: i32 = 4;

/// Blocks at least this large are mapped on their own and unmapped when freed; a free arena
/// top larger than this is given back (glibc's initial value of both, kept fixed).
pub const THRESHOLD: i32 = 128 * 1024;

/// Sets the allocator policy above, for the whole process. `gateway-server` calls it first
/// thing; a program that embeds the gateway decides for itself (it changes how every thread of
/// the process allocates).
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    glibc::tune();
}

/// Gives the allocator's free memory back to the system. Milliseconds of work: call it after
/// a mass departure, not per request.
pub fn release() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    glibc::release();
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
mod glibc {
    use std::ffi::c_int;

    // From glibc's <malloc.h>.
    const M_TRIM_THRESHOLD: c_int = -1;
    const M_MMAP_THRESHOLD: c_int = -3;
    const M_ARENA_MAX: c_int = -8;

    unsafe extern "C" {
        fn mallopt(param: c_int, value: c_int) -> c_int;
        fn malloc_trim(pad: usize) -> c_int;
    }

    pub(super) fn tune() {
        for (param, value, name) in [
            (M_TRIM_THRESHOLD, super::THRESHOLD, "M_TRIM_THRESHOLD"),
            (M_MMAP_THRESHOLD, super::THRESHOLD, "M_MMAP_THRESHOLD"),
            (M_ARENA_MAX, super::ARENA_MAX, "M_ARENA_MAX"),
        ] {
            // SAFETY: mallopt only changes the allocator's parameters, under its own lock; any
            // value is accepted or refused (0), never undefined.
            if unsafe { mallopt(param, value) } == 0 {
                log::debug!("the allocator refused {name} = {value}");
            }
        }
    }

    pub(super) fn release() {
        // SAFETY: malloc_trim only releases free memory held by the allocator; it takes the
        // allocator's own locks and is safe to call from any thread at any time.
        unsafe {
            malloc_trim(0);
        }
    }
}
