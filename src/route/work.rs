//! A count of the steps route selection takes (tape nodes visited, text bytes scanned),
//! so tests and fuzz targets can prove that evaluation is linear in the message size
//! by counting work instead of timing it. Compiled to nothing outside tests and fuzzing.

#[cfg(any(test, fuzzing))]
thread_local! {
    static STEPS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Records `n` steps of work on this thread.
#[inline(always)]
pub(super) fn add(n: usize) {
    #[cfg(any(test, fuzzing))]
    STEPS.with(|s| s.set(s.get().saturating_add(n as u64)));
    #[cfg(not(any(test, fuzzing)))]
    let _ = n;
}

/// The steps recorded on this thread since the last call, and a reset to zero.
#[cfg(any(test, fuzzing))]
pub fn take() -> u64 {
    STEPS.with(|s| s.replace(0))
}
