//! netladder: tells why a connection failed, while it fails.
fn main() {
    std::process::exit(netladder_user::main());
}
