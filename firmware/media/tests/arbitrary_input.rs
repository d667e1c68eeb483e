//! Every decoder of bytes that come from a file or the network, fed arbitrary input:
//! it returns a value or a typed error, never panics, never allocates without bound.
//! (Bounded property tests: they run in CI on every change.)

use cambox_media::annexb::{
    from_length_prefixed, sps_size, AccessUnitSplitter, AvcConfig, ParameterSets,
};
use cambox_media::fmp4::Mp4Reader;
use cambox_media::strip::read_strip;
use cambox_media::y4m::{parse_header, Y4mReader};
use proptest::prelude::*;

/// Bytes biased towards what the parsers look for: zeros (start codes), box names, headers.
fn tricky_bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        any::<u8>().prop_map(|b| vec![b]),
        Just(vec![0, 0, 1]),
        Just(vec![0, 0, 0, 1]),
        Just(b"moof".to_vec()),
        Just(b"mdat".to_vec()),
        Just(b"moov".to_vec()),
        Just(b"ftyp".to_vec()),
        Just(b"traf".to_vec()),
        Just(b"trun".to_vec()),
        Just(b"YUV4MPEG2 ".to_vec()),
        Just(b"FRAME\n".to_vec()),
        Just(vec![0xFF, 0xFF, 0xFF, 0xFF]),
        Just(vec![0x67, 0x42, 0xC0, 0x1F]),
        Just(vec![0x65, 0x88]),
    ];
    prop::collection::vec(piece, 0..200).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn annexb_parsers_never_panic(data in tricky_bytes(), split in 1usize..64) {
        let mut s = AccessUnitSplitter::new();
        for chunk in data.chunks(split) {
            if s.push(chunk).is_err() {
                break;
            }
        }
        let _ = s.finish();
        let _ = ParameterSets::default().complete(&data);
        let _ = AvcConfig::from_keyframe(&data);
        let _ = sps_size(&data);
        let _ = from_length_prefixed(&data);
    }

    #[test]
    fn mp4_reader_never_panics(data in tricky_bytes(), split in 1usize..64) {
        let mut r = Mp4Reader::new();
        for chunk in data.chunks(split) {
            if r.push(chunk).is_err() {
                break;
            }
        }
    }

    #[test]
    fn mp4_reader_survives_corrupted_real_streams(flips in prop::collection::vec((0usize..4000, any::<u8>()), 1..8)) {
        let mut stream = real_stream().to_vec();
        for (at, value) in flips {
            let i = at % stream.len();
            stream[i] = value;
        }
        let mut r = Mp4Reader::new();
        let _ = r.push(&stream);
    }

    #[test]
    fn y4m_reader_never_panics(data in tricky_bytes()) {
        let _ = parse_header(&data);
        if let Ok(mut r) = Y4mReader::new(&data[..]) {
            for _ in 0..4 {
                if !matches!(r.next_frame(), Ok(Some(_))) {
                    break;
                }
            }
        }
    }

    #[test]
    fn strip_reader_never_panics(data in prop::collection::vec(any::<u8>(), 0..5000), w in 0u32..400, h in 0u32..64, stride in 0usize..500) {
        let _ = read_strip(&data, stride, w, h);
    }
}

/// A short, valid live stream: init segment and a few fragments (made once).
fn real_stream() -> &'static [u8] {
    static STREAM: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    STREAM.get_or_init(make_stream)
}

fn make_stream() -> Vec<u8> {
    use cambox_media::encode::openh264::OpenH264Encoder;
    use cambox_media::encode::{VideoEncoder, VideoEncoderSettings};
    use cambox_media::fmp4::{init_segment, Fragmenter, StreamInfo};
    use cambox_media::{FrameRate, RawFrame, VideoFormat};
    let rate = FrameRate::per_second(30);
    let format = VideoFormat {
        width: 64,
        height: 48,
        rate,
    };
    let mut enc = OpenH264Encoder::new(VideoEncoderSettings {
        format,
        bitrate: 50_000,
        keyframe_interval: 30,
    })
    .unwrap();
    let mut out = Vec::new();
    let mut frag = Fragmenter::new(0, rate);
    for n in 0..3u64 {
        let raw = RawFrame {
            number: n,
            capture_us: n * 33_333,
            width: 64,
            height: 48,
            data: vec![n as u8 * 50; RawFrame::i420_len(64, 48)],
        };
        let f = enc.encode(&raw, n == 0).unwrap().unwrap();
        if n == 0 {
            let info = StreamInfo {
                video: AvcConfig::from_keyframe(&f.data).unwrap(),
                rate,
                audio_pre_skip: Some(312),
            };
            out.extend_from_slice(&init_segment(&info).unwrap());
        }
        out.extend_from_slice(
            &frag
                .av(
                    Some((f.capture_us, f.keyframe, &f.data[..])),
                    &[(f.capture_us, &[7u8; 20][..])],
                )
                .unwrap(),
        );
    }
    out
}
