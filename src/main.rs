//! The `pbak` command: parses arguments, calls one library function, prints.
#![deny(unsafe_code)]

mod cli;

fn main() {
    std::process::exit(cli::main());
}
