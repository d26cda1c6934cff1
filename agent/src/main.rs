use std::process::ExitCode;

fn main() -> ExitCode {
    kernsight::cli::main()
}
