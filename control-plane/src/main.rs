fn main() -> std::process::ExitCode {
    legate_control_plane::cli::main()
}
