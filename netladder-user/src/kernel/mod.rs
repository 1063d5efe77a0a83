//! Everything that touches the kernel: BTF, tracefs, the hook plan, loading and the event stream.
pub mod aggregate;
pub mod btf;
pub mod config;
pub mod decode;
pub mod kallsyms;
pub mod libs;
pub mod loader;
pub mod mapped;
pub mod multi;
pub mod plan;
pub mod startup;
pub mod targets;
pub mod tracefs;
