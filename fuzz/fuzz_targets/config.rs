//! Fuzz target `config`: see meshsync_fuzz::config.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| meshsync_fuzz::config(data));
