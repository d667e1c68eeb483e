//! Bytes from a peer, in arbitrary chunks, through the frame decoder: it must return
//! messages or a typed error, never panic; and every message it returns must encode back
//! to a frame that decodes to the same message.
#![no_main]

use cambox_mesh::wire::{self, Decoder};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, bytes)) = data.split_first() else {
        return;
    };
    let cut = (split as usize).min(bytes.len());
    let mut d = Decoder::new();
    for part in [&bytes[..cut], &bytes[cut..]] {
        d.push(part);
        while let Ok(Some(msg)) = d.next() {
            let mut again = Vec::new();
            wire::encode(&msg, &mut again);
            let mut d2 = Decoder::new();
            d2.push(&again);
            assert_eq!(d2.next().ok().flatten().as_ref(), Some(&msg));
        }
    }
});
