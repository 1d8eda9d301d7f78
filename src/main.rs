use std::process::ExitCode;

fn main() -> ExitCode {
    iotpipe::cli::main()
}
