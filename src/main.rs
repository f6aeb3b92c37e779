//! kubypass: the appliance's command line.

fn main() {
    eprintln!("kubypass: not yet built");
    std::process::exit(2);
}
