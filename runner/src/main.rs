//! The `envelope-runner` binary: all work happens in the library.

fn main() {
    std::process::exit(envelope_runner::main(std::env::args_os()));
}
