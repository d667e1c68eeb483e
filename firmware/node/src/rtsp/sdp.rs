//! The session description a DESCRIBE answers with: H.264 as RFC 6184 (packetization
//! mode 1, parameter sets in `sprop-parameter-sets`, so a player can start before the
//! first in-band SPS) and Opus as RFC 7587.

use cambox_media::annexb::AvcConfig;

/// RTP payload types of the two tracks (dynamic range).
pub const VIDEO_PT: u8 = 96;
pub const AUDIO_PT: u8 = 97;

/// Track controls, relative to the stream's URL (`.../<broadcast>/trackID=0`).
pub const VIDEO_CONTROL: &str = "trackID=0";
pub const AUDIO_CONTROL: &str = "trackID=1";

/// The SDP of a broadcast whose picture is described by `avc`.
pub fn describe(name: &str, avc: &AvcConfig, fps: f64, audio: bool, server_ip: &str) -> String {
    let codec = avc.codec_string();
    let profile = codec.trim_start_matches("avc1.");
    let family = if server_ip.contains(':') {
        "IP6"
    } else {
        "IP4"
    };
    let mut s = format!(
        "v=0\r\n\
         o=- 0 0 IN {family} {server_ip}\r\n\
         s={name}\r\n\
         c=IN {family} {server_ip}\r\n\
         t=0 0\r\n\
         a=control:*\r\n\
         a=range:npt=now-\r\n\
         m=video 0 RTP/AVP {VIDEO_PT}\r\n\
         a=rtpmap:{VIDEO_PT} H264/90000\r\n\
         a=fmtp:{VIDEO_PT} packetization-mode=1;profile-level-id={profile};sprop-parameter-sets={},{}\r\n\
         a=framerate:{fps}\r\n\
         a=control:{VIDEO_CONTROL}\r\n",
        base64(&avc.sps),
        base64(&avc.pps),
    );
    if audio {
        s.push_str(&format!(
            "m=audio 0 RTP/AVP {AUDIO_PT}\r\n\
             a=rtpmap:{AUDIO_PT} opus/48000/2\r\n\
             a=fmtp:{AUDIO_PT} sprop-stereo=0\r\n\
             a=control:{AUDIO_CONTROL}\r\n"
        ));
    }
    s
}

/// Standard base64 with padding (RFC 4648), what `sprop-parameter-sets` takes.
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * k)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (plain, coded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), coded);
        }
    }

    #[test]
    fn description_names_both_tracks_and_the_parameter_sets() {
        let avc = AvcConfig {
            sps: bytes::Bytes::from_static(&[0x67, 0x42, 0xc0, 0x1f, 0xaa]),
            pps: bytes::Bytes::from_static(&[0x68, 0xce, 0x3c, 0x80]),
            width: 1280,
            height: 720,
        };
        let sdp = describe("hall", &avc, 30.0, true, "192.0.2.1");
        assert!(sdp.contains("profile-level-id=42c01f;"), "{sdp}");
        assert!(
            sdp.contains("sprop-parameter-sets=Z0LAH6o=,aM48gA=="),
            "{sdp}"
        );
        assert!(sdp.contains("a=rtpmap:97 opus/48000/2"));
        assert!(sdp.contains("a=control:trackID=1"));
        assert!(!describe("hall", &avc, 30.0, false, "192.0.2.1").contains("m=audio"));
    }
}
