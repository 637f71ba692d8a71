//! The YAML config parser on arbitrary text: it must accept or refuse with a
//! positioned one-line error, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portrange_exporter::config::{Config, ConfigError};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match Config::parse(text, "fuzz.yml") {
        Ok(cfg) => {
            assert!(!cfg.ranges.is_empty());
            for r in &cfg.ranges {
                assert!(r.ports.len() >= 1 && r.ports.len() <= 65535);
                assert!(!r.protocols.is_empty());
            }
        }
        Err(ConfigError::Invalid { message, key, .. }) => {
            assert!(!key.is_empty());
            assert!(!message.contains('\n'), "{message:?}");
        }
        Err(ConfigError::Read { .. }) => unreachable!("parse reads no file"),
    }
});
