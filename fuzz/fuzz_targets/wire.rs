//! Fuzz target `wire`: see meshsync_fuzz::wire.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| meshsync_fuzz::wire(data));
