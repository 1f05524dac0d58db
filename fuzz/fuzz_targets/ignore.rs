//! Fuzz target `ignore`: see meshsync_fuzz::ignore.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| meshsync_fuzz::ignore(data));
