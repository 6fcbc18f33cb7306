fn main() {
    std::process::exit(envelope_agent::main(std::env::args_os()));
}
