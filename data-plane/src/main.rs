/// With `--features mimalloc`, mimalloc replaces glibc's malloc (see BENCHMARKS.md).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    legate_proxy::server::main()
}
