fn main() -> std::process::ExitCode {
    legate_proxy::server::main()
}
