//! Entry point; the wiring lives in `cli`.

fn main() {
    limit_malloc_arenas();
    std::process::exit(portrange_exporter::cli::main());
}

/// glibc gives each thread that contends for the heap an arena of its own;
/// for a small exporter that is memory kept for nothing, and RSS that creeps
/// up while the thread pools warm. Two arenas are plenty.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    // SAFETY: mallopt only sets an allocator tunable; it is called before
    // any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}
