//! The `extdrop` binary: everything lives in the library.

/// mimalloc, not the system allocator: a burst allocates and frees small buffers, paths and
/// futures at every step of every file, on several threads, and glibc's allocator took a fifth
/// of the daemon's user-space CPU (README, Design). Built without transparent huge pages
/// (`no_thp`): with them, the idle daemon's RSS grew from 13 to 28 MiB.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    extdrop::cli::main()
}
