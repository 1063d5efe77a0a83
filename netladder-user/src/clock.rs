//! The clock of the kernel's records: `bpf_ktime_get_ns` counts CLOCK_MONOTONIC, so userspace
//! reads the same clock to compare its own moments (ticks, polls, exit) with the records' times.

/// CLOCK_MONOTONIC in nanoseconds.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: plain libc call writing into a timespec owned here.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
