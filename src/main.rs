fn main() -> std::process::ExitCode {
    pipe::cli::main()
}
