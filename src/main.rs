//! The `walrs` binary: parse, dispatch, map the outcome to an exit status. Nothing else.

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(walrs::cli::run(std::env::args_os()).code())
}
