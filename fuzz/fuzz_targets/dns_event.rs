#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| netladder_user::fuzz::dns_event(data));
