//! The `pipe` binary: the CLI in `pipe::cli`, with mimalloc as the allocator.

use std::ffi::c_long;

// Compile renders, parses and plans on every core and a build runs DataFusion on every core: both allocate heavily
// from many threads, where glibc's allocator spends a fifth of the time in its own locks (seen with perf on 10,000
// models). mimalloc is DataFusion's usual choice.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

// mimalloc's options, from the C library `libmimalloc-sys` builds (its Rust bindings for them need a feature whose
// dependency this build does not have).
extern "C" {
    fn mi_option_get(option: i32) -> c_long;
    fn mi_option_set(option: i32, value: c_long);
}

/// `mi_option_purge_delay`: milliseconds before freed memory goes back to the OS. Option 15 in mimalloc 2 (default
/// 10 ms) and 3 (default 1000 ms, the version this build links).
const MI_OPTION_PURGE_DELAY: i32 = 15;

/// Under `--memory-limit`: freed memory goes back to the OS at once, so the process's resident memory follows what
/// DataFusion's memory pool allows (10M events under a 1 GiB limit: peak RSS 1.54 GiB with the default delay,
/// 1.29 GiB without). It costs time, so an unlimited build keeps the default.
#[allow(unsafe_code)]
fn return_freed_memory_at_once() {
    // SAFETY: plain calls into mimalloc's option table; the option is recognised by its default value first, so a
    // mimalloc numbering its options otherwise is left alone.
    unsafe {
        if matches!(mi_option_get(MI_OPTION_PURGE_DELAY), 10 | 1000) {
            mi_option_set(MI_OPTION_PURGE_DELAY, 0);
        }
    }
}

fn main() -> std::process::ExitCode {
    let _ = pipe::cli::BOUNDED_MEMORY.set(return_freed_memory_at_once);
    pipe::cli::main()
}
