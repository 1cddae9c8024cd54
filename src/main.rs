//! The `pipe` binary: the CLI in `pipe::cli`, with mimalloc as the allocator.

// Compile renders, parses and plans on every core and a build runs DataFusion on every core: both allocate heavily
// from many threads, where glibc's allocator spends a fifth of the time in its own locks (seen with perf on 10,000
// models). mimalloc is DataFusion's usual choice.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    pipe::cli::main()
}
