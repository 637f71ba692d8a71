//! Entry point; the wiring lives in `cli`.

fn main() {
    std::process::exit(portrange_exporter::cli::main());
}
