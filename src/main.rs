//! Entry point; the wiring lives in `cli`.

fn main() {
    portrange_exporter::platform::init_process();
    std::process::exit(portrange_exporter::cli::main());
}
