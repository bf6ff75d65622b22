//! The `gleitzeit` command line; `gz` is the same program.

#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    gleitzeit_cli::main()
}
