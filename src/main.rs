//! The `extdrop` binary: everything lives in the library.

fn main() -> std::process::ExitCode {
    extdrop::cli::main()
}
