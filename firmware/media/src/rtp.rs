//! RTP for the viewers that speak it (RTSP clients, WebRTC): the fixed header of RFC 3550,
//! H.264 in packetization mode 1 (RFC 6184: single NAL unit packets and FU-A fragments)
//! and Opus (RFC 7587: one frame per packet). Sans IO: access units in, packets out, and
//! back again, so both directions are tested against each other and against garbage.

use crate::annexb::nal_units;

/// The fixed RTP header, without CSRCs or extensions (we never send those).
pub const HEADER_LEN: usize = 12;
/// H.264 and Opus use a 90 kHz and a 48 kHz RTP clock.
pub const VIDEO_CLOCK: u32 = 90_000;
pub const AUDIO_CLOCK: u32 = 48_000;

const NAL_FU_A: u8 = 28;
const NAL_STAP_A: u8 = 24;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RtpError {
    #[error("RTP packet of {0} bytes is shorter than its header")]
    Truncated(usize),
    #[error("RTP version {0}, expected 2")]
    Version(u8),
    #[error("RTP padding of {0} bytes is longer than the payload")]
    Padding(usize),
    #[error("empty H.264 RTP payload")]
    Empty,
    #[error("H.264 NAL type {0} is not allowed in packetization mode 1")]
    Unsupported(u8),
    #[error("malformed H.264 aggregation packet")]
    BadAggregate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Set on the last packet of an access unit (video) or on every packet (audio).
    pub marker: bool,
    pub payload_type: u8,
    pub sequence: u16,
    pub timestamp: u32,
    pub ssrc: u32,
}

impl Header {
    pub fn write(&self, out: &mut Vec<u8>) {
        out.push(0x80);
        out.push((u8::from(self.marker) << 7) | (self.payload_type & 0x7f));
        out.extend_from_slice(&self.sequence.to_be_bytes());
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&self.ssrc.to_be_bytes());
    }

    /// Splits a received packet into its header and payload, skipping CSRCs, a header
    /// extension and padding.
    pub fn parse(packet: &[u8]) -> Result<(Header, &[u8]), RtpError> {
        if packet.len() < HEADER_LEN {
            return Err(RtpError::Truncated(packet.len()));
        }
        let version = packet[0] >> 6;
        if version != 2 {
            return Err(RtpError::Version(version));
        }
        let padding = packet[0] & 0x20 != 0;
        let extension = packet[0] & 0x10 != 0;
        let csrcs = usize::from(packet[0] & 0x0f);
        let mut start = HEADER_LEN + 4 * csrcs;
        if extension {
            if packet.len() < start + 4 {
                return Err(RtpError::Truncated(packet.len()));
            }
            let words = usize::from(u16::from_be_bytes([packet[start + 2], packet[start + 3]]));
            start += 4 + 4 * words;
        }
        if packet.len() < start {
            return Err(RtpError::Truncated(packet.len()));
        }
        let mut end = packet.len();
        if padding {
            let pad = usize::from(packet[end - 1]);
            if pad == 0 || pad > end - start {
                return Err(RtpError::Padding(pad));
            }
            end -= pad;
        }
        let header = Header {
            marker: packet[1] & 0x80 != 0,
            payload_type: packet[1] & 0x7f,
            sequence: u16::from_be_bytes([packet[2], packet[3]]),
            timestamp: u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]),
            ssrc: u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]),
        };
        Ok((header, &packet[start..end]))
    }
}

/// Splits an H.264 access unit (Annex B) into RTP payloads of at most `max_payload`
/// bytes: a NAL unit that fits travels alone, a larger one in FU-A fragments.
pub fn packetize_h264(access_unit: &[u8], max_payload: usize) -> Vec<Vec<u8>> {
    let max_payload = max_payload.max(3);
    let mut out = Vec::new();
    for nal in nal_units(access_unit).filter(|n| !n.is_empty()) {
        if nal.len() <= max_payload {
            out.push(nal.to_vec());
            continue;
        }
        let indicator = (nal[0] & 0xe0) | NAL_FU_A;
        let nal_type = nal[0] & 0x1f;
        let body = &nal[1..];
        let chunk = max_payload - 2;
        let count = body.len().div_ceil(chunk);
        for (k, part) in body.chunks(chunk).enumerate() {
            let start = if k == 0 { 0x80 } else { 0 };
            let end = if k + 1 == count { 0x40 } else { 0 };
            let mut p = Vec::with_capacity(2 + part.len());
            p.push(indicator);
            p.push(start | end | nal_type);
            p.extend_from_slice(part);
            out.push(p);
        }
    }
    out
}

/// Numbers and stamps the payloads of one stream.
#[derive(Debug, Clone)]
pub struct Sender {
    pub payload_type: u8,
    pub ssrc: u32,
    pub sequence: u16,
}

impl Sender {
    /// Whole packets for one access unit (or audio frame) captured at `timestamp`; the
    /// marker goes on the last one.
    pub fn packets(&mut self, payloads: Vec<Vec<u8>>, timestamp: u32) -> Vec<Vec<u8>> {
        let n = payloads.len();
        payloads
            .into_iter()
            .enumerate()
            .map(|(k, payload)| {
                let mut p = Vec::with_capacity(HEADER_LEN + payload.len());
                Header {
                    marker: k + 1 == n,
                    payload_type: self.payload_type,
                    sequence: self.sequence,
                    timestamp,
                    ssrc: self.ssrc,
                }
                .write(&mut p);
                p.extend_from_slice(&payload);
                self.sequence = self.sequence.wrapping_add(1);
                p
            })
            .collect()
    }
}

/// What a depacketizer made of one packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Depacketized {
    /// Not the end of an access unit yet.
    Pending,
    /// A whole access unit, Annex B, with its RTP timestamp.
    AccessUnit { timestamp: u32, data: Vec<u8> },
    /// Packets were lost: the access unit being assembled was dropped.
    Lost { missing: u16 },
}

/// Reassembles H.264 access units from RTP packets of one stream, in order. A gap in
/// sequence numbers drops the access unit it hit, never a corrupted one out.
#[derive(Debug, Default)]
pub struct H264Depacketizer {
    next_sequence: Option<u16>,
    au: Vec<u8>,
    timestamp: Option<u32>,
    /// Inside a FU-A whose start was seen.
    in_fragment: bool,
    /// Drop everything until the next access unit begins.
    broken: bool,
}

impl H264Depacketizer {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, packet: &[u8]) -> Result<Depacketized, RtpError> {
        let (h, payload) = Header::parse(packet)?;
        let mut lost = None;
        if let Some(want) = self.next_sequence {
            if h.sequence != want {
                lost = Some(h.sequence.wrapping_sub(want));
            }
        }
        self.next_sequence = Some(h.sequence.wrapping_add(1));
        if self.timestamp.is_some_and(|t| t != h.timestamp) {
            // A new access unit began without the old one's marker (lost last packet).
            self.reset();
        }
        if lost.is_some() {
            self.reset();
            self.broken = true;
        }
        self.timestamp = Some(h.timestamp);
        let result = self.payload(payload);
        if let Err(e) = result {
            self.reset();
            self.broken = true;
            return Err(e);
        }
        if h.marker {
            let whole = !self.broken && !self.in_fragment && !self.au.is_empty();
            let data = std::mem::take(&mut self.au);
            self.reset();
            if let Some(missing) = lost {
                return Ok(Depacketized::Lost { missing });
            }
            if whole {
                return Ok(Depacketized::AccessUnit {
                    timestamp: h.timestamp,
                    data,
                });
            }
            return Ok(Depacketized::Lost { missing: 0 });
        }
        Ok(match lost {
            Some(missing) => Depacketized::Lost { missing },
            None => Depacketized::Pending,
        })
    }

    fn reset(&mut self) {
        self.au.clear();
        self.in_fragment = false;
        self.broken = false;
        self.timestamp = None;
    }

    fn start_nal(&mut self) {
        self.au.extend_from_slice(&[0, 0, 0, 1]);
    }

    fn payload(&mut self, p: &[u8]) -> Result<(), RtpError> {
        let Some(&first) = p.first() else {
            return Err(RtpError::Empty);
        };
        match first & 0x1f {
            1..=23 => {
                self.start_nal();
                self.au.extend_from_slice(p);
            }
            NAL_STAP_A => {
                let mut rest = &p[1..];
                while !rest.is_empty() {
                    if rest.len() < 2 {
                        return Err(RtpError::BadAggregate);
                    }
                    let n = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
                    if n == 0 || rest.len() < 2 + n {
                        return Err(RtpError::BadAggregate);
                    }
                    self.start_nal();
                    self.au.extend_from_slice(&rest[2..2 + n]);
                    rest = &rest[2 + n..];
                }
            }
            NAL_FU_A => {
                if p.len() < 3 {
                    return Err(RtpError::BadAggregate);
                }
                let (fu, body) = (p[1], &p[2..]);
                if fu & 0x80 != 0 {
                    self.start_nal();
                    self.au.push((first & 0xe0) | (fu & 0x1f));
                    self.in_fragment = true;
                } else if !self.in_fragment {
                    // A continuation whose start we never saw.
                    self.broken = true;
                    return Ok(());
                }
                self.au.extend_from_slice(body);
                if fu & 0x40 != 0 {
                    self.in_fragment = false;
                }
            }
            other => return Err(RtpError::Unsupported(other)),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn au(nals: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        for n in nals {
            out.extend_from_slice(&[0, 0, 0, 1]);
            out.extend_from_slice(n);
        }
        out
    }

    fn sender() -> Sender {
        Sender {
            payload_type: 96,
            ssrc: 0x1234_5678,
            sequence: 65_530,
        }
    }

    /// NAL units as an encoder makes them: a header byte (types 1 to 23), then a body
    /// without start-code look-alikes (emulation prevention guarantees that).
    fn nal() -> impl Strategy<Value = Vec<u8>> {
        (1u8..=23, 0u8..4, prop::collection::vec(4u8..=255, 0..4000)).prop_map(|(t, nri, body)| {
            let mut n = vec![(nri << 5) | t];
            n.extend(body);
            n
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

        #[test]
        fn access_units_survive_packetizing(
            nals in prop::collection::vec(nal(), 1..6),
            mtu in 40usize..1500,
        ) {
            let input = au(&nals);
            let mut s = sender();
            let packets = s.packets(packetize_h264(&input, mtu), 9000);
            let mut d = H264Depacketizer::new();
            let mut out = Vec::new();
            for (k, p) in packets.iter().enumerate() {
                prop_assert!(p.len() <= HEADER_LEN + mtu.max(3));
                let (h, _) = Header::parse(p).unwrap();
                prop_assert_eq!(h.marker, k + 1 == packets.len());
                out.push(d.push(p).unwrap());
            }
            prop_assert_eq!(
                out.last().unwrap(),
                &Depacketized::AccessUnit { timestamp: 9000, data: input }
            );
        }

        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = Header::parse(&bytes);
            let _ = H264Depacketizer::new().push(&bytes);
        }
    }

    #[test]
    fn a_lost_fragment_drops_its_access_unit_and_the_next_one_is_whole() {
        let big = au(&[{
            let mut n = vec![0x65];
            n.extend((0..3000).map(|i| 4 + (i % 200) as u8));
            n
        }]);
        let small = au(&[vec![0x41, 9, 9, 9]]);
        let mut s = sender();
        let first = s.packets(packetize_h264(&big, 1000), 0);
        let second = s.packets(packetize_h264(&small, 1000), 3000);
        assert!(first.len() >= 3);
        let mut d = H264Depacketizer::new();
        let mut outcomes = Vec::new();
        for (k, p) in first.iter().enumerate() {
            if k != 1 {
                outcomes.push(d.push(p).unwrap());
            }
        }
        assert!(
            !outcomes
                .iter()
                .any(|o| matches!(o, Depacketized::AccessUnit { .. })),
            "{outcomes:?}"
        );
        assert!(outcomes.contains(&Depacketized::Lost { missing: 1 }));
        assert_eq!(
            d.push(&second[0]).unwrap(),
            Depacketized::AccessUnit {
                timestamp: 3000,
                data: small
            }
        );
    }

    #[test]
    fn headers_with_csrcs_extension_and_padding_are_read() {
        let mut p = vec![0x80 | 0x20 | 0x10 | 0x01, 0x80 | 96];
        p.extend_from_slice(&7u16.to_be_bytes());
        p.extend_from_slice(&90_000u32.to_be_bytes());
        p.extend_from_slice(&1u32.to_be_bytes());
        p.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]); // one CSRC
        p.extend_from_slice(&[0xbe, 0xde, 0, 1, 1, 2, 3, 4]); // extension of one word
        p.extend_from_slice(&[0x41, 5, 6]); // payload
        p.extend_from_slice(&[0, 0, 3]); // three bytes of padding
        let (h, payload) = Header::parse(&p).unwrap();
        assert_eq!((h.marker, h.payload_type, h.sequence), (true, 96, 7));
        assert_eq!(payload, &[0x41, 5, 6]);
        for (bad, want) in [
            (&p[..11], RtpError::Truncated(11)),
            (&[0x40u8; 12][..], RtpError::Version(1)),
        ] {
            assert_eq!(Header::parse(bad).unwrap_err(), want);
        }
        let mut too_much = p.clone();
        *too_much.last_mut().unwrap() = 200;
        assert_eq!(
            Header::parse(&too_much).unwrap_err(),
            RtpError::Padding(200)
        );
    }

    #[test]
    fn aggregation_packets_are_unpacked() {
        let mut stap = vec![NAL_STAP_A];
        for n in [&[0x67u8, 1, 2][..], &[0x68, 3]] {
            stap.extend_from_slice(&(n.len() as u16).to_be_bytes());
            stap.extend_from_slice(n);
        }
        let mut s = sender();
        let p = s.packets(vec![stap], 5);
        assert_eq!(
            H264Depacketizer::new().push(&p[0]).unwrap(),
            Depacketized::AccessUnit {
                timestamp: 5,
                data: au(&[vec![0x67, 1, 2], vec![0x68, 3]])
            }
        );
        let bad = s.packets(vec![vec![NAL_STAP_A, 0, 9, 1]], 6);
        assert_eq!(
            H264Depacketizer::new().push(&bad[0]).unwrap_err(),
            RtpError::BadAggregate
        );
    }
}
