//! The `gleitzeit` command line; `gz` is the same program.

fn main() -> std::process::ExitCode {
    gleitzeit_cli::main()
}
