//! Bytes from a peer, in arbitrary chunks, through the frame decoder: it must return
//! messages or a typed error, never panic; and every message it returns must encode back
//! to a frame that decodes to the same message. The same bytes as a group stream (where
//! `ObjectNext` continues the object before it): what it returns must encode back, with
//! the group-stream encoder, to a stream that decodes to the same messages.
#![no_main]

use cambox_mesh::wire::{self, Decoder, GroupEncoder};
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
    let mut group = Decoder::group_stream();
    group.push(bytes);
    let mut msgs = Vec::new();
    while let Ok(Some(msg)) = group.next() {
        msgs.push(msg);
    }
    let mut encoder = GroupEncoder::new();
    let mut again = Vec::new();
    for m in &msgs {
        encoder.encode(m, &mut again);
    }
    let mut d2 = Decoder::group_stream();
    d2.push(&again);
    for m in &msgs {
        assert_eq!(d2.next().ok().flatten().as_ref(), Some(m));
    }
});
