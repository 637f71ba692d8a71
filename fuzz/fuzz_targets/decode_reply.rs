//! The sock_diag reply decoder on arbitrary bytes: it must return an error
//! or sockets, never panic, and never report a socket the bytes do not hold.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portrange_exporter::ranges::Protocol;
use portrange_exporter::platform::linux::sock_diag::{decode, decode_socket};

fuzz_target!(|data: &[u8]| {
    for protocol in [Protocol::Tcp, Protocol::Udp] {
        let mut out = Vec::new();
        // The sequence number is taken from the input when it has one, so
        // the fuzzer reaches the message bodies.
        let seq = data.get(8..12).map_or(1, |b| u32::from_ne_bytes(b.try_into().unwrap()));
        if decode(data, seq, protocol, &mut out).is_ok() {
            assert!(out.len() <= data.len() / 88 + 1);
        }
        // Misaligned: the same bytes one past an allocation boundary.
        let mut shifted = vec![0u8; data.len() + 1];
        shifted[1..].copy_from_slice(data);
        let mut out2 = Vec::new();
        let a = decode(data, seq, protocol, &mut Vec::new()).map(|_| ());
        let b = decode(&shifted[1..], seq, protocol, &mut out2).map(|_| ());
        assert_eq!(a, b);
        let _ = decode_socket(data, protocol);
    }
});
