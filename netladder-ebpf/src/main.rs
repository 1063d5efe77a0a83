//! netladder's eBPF programs. This file only declares modules; each kernel signal family lives in
//! its own file. Programs are built for the bpf target by netladder-user's build.rs (aya-build).
#![no_std]
#![no_main]
// Atomic add on a map value (see maps::count_drop_write): core::sync has none for bpf.
#![allow(internal_features)]
#![feature(core_intrinsics)]
// aya-ebpf's map methods take `impl Borrow<K>`, so clippy would have every `MAP.get(&key)` pass
// the key by value; the programs keep aya's documented `&key` form (the kernel reads the key
// through a pointer either way, and a moved struct key could cost a copy on the 512-byte stack).
#![allow(clippy::needless_borrows_for_generic_args)]

mod bind;
mod conn;
mod dns;
mod drop;
mod icmp;
mod kernel;
mod listen;
mod maps;
mod neigh;
mod route;
mod ssh;
mod syscall;
mod tls;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
