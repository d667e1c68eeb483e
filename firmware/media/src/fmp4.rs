//! Fragmented MP4: the init segment, one fragment per frame, and a reader for the same.
//!
//! One fragment per frame keeps the live endpoint's latency at one frame; MSE in Chromium
//! and Firefox, ffmpeg and VLC all play it. Boxes are built with `mp4-atom`.

use bytes::Bytes;
use mp4_atom::{
    Any, Audio, Avc1, Avcc, Codec, Decode, Dinf, Dops, Dref, Encode, Ftyp, Hdlr, Mdat, Mdhd, Mdia,
    Mfhd, Minf, Moof, Moov, Mvex, Mvhd, Opus, Smhd, Stbl, Stco, Stsc, Stsd, Stsz, Stts, Tfdt, Tfhd,
    Tkhd, Traf, Trak, Trex, Trun, TrunEntry, TrunSamples, Url, Visual, Vmhd,
};

use crate::annexb::{to_length_prefixed, AvcConfig};
use crate::frame::{FrameRate, AUDIO_BLOCK_SAMPLES, AUDIO_SAMPLE_RATE};

pub const VIDEO_TRACK: u32 = 1;
pub const AUDIO_TRACK: u32 = 2;
pub const VIDEO_TIMESCALE: u32 = 90_000;

/// Sample flags: a sync sample (keyframe) and a sample that depends on others.
const FLAGS_SYNC: u32 = 0x0200_0000;
const FLAGS_NON_SYNC: u32 = 0x0101_0000;

#[derive(Debug, thiserror::Error)]
pub enum Mp4Error {
    #[error("MP4 encoding failed: {0}")]
    Encode(String),
    #[error("not a valid MP4 stream: {0}")]
    Invalid(String),
}

fn enc_err(e: mp4_atom::Error) -> Mp4Error {
    Mp4Error::Encode(e.to_string())
}

/// Everything the init segment describes.
#[derive(Debug, Clone)]
pub struct StreamInfo {
    pub video: AvcConfig,
    pub rate: FrameRate,
    /// Opus pre-skip in samples, or `None` for a stream without sound.
    pub audio_pre_skip: Option<u16>,
}

impl StreamInfo {
    /// The MIME type with codecs, as MSE's `addSourceBuffer` wants it.
    pub fn mime(&self) -> String {
        match self.audio_pre_skip {
            Some(_) => format!("video/mp4; codecs=\"{},opus\"", self.video.codec_string()),
            None => format!("video/mp4; codecs=\"{}\"", self.video.codec_string()),
        }
    }
}

fn dinf() -> Dinf {
    Dinf {
        dref: Dref {
            entries: vec![Url {
                location: "".into(),
            }
            .into()],
        },
    }
}

fn empty_stbl(codec: Codec) -> Stbl {
    Stbl {
        stsd: Stsd {
            codecs: vec![codec],
        },
        stts: Stts::default(),
        stsc: Stsc::default(),
        stsz: Stsz::default(),
        stco: Some(Stco::default()),
        ..Default::default()
    }
}

/// ftyp + moov for a live stream of unknown length.
pub fn init_segment(info: &StreamInfo) -> Result<Bytes, Mp4Error> {
    let v = &info.video;
    let avc1 = Avc1 {
        visual: Visual {
            data_reference_index: 1,
            width: v.width as u16,
            height: v.height as u16,
            horizresolution: 72.into(),
            vertresolution: 72.into(),
            frame_count: 1,
            compressor: "".into(),
            depth: 24,
        },
        avcc: Avcc::new(&v.sps, &v.pps).map_err(enc_err)?,
        ..Default::default()
    };
    let mut traks = vec![Trak {
        tkhd: Tkhd {
            track_id: VIDEO_TRACK,
            enabled: true,
            in_movie: true,
            width: (v.width as u16).into(),
            height: (v.height as u16).into(),
            ..Default::default()
        },
        mdia: Mdia {
            mdhd: Mdhd {
                timescale: VIDEO_TIMESCALE,
                language: "und".into(),
                ..Default::default()
            },
            hdlr: Hdlr {
                handler: b"vide".into(),
                name: "cambox video".into(),
            },
            minf: Minf {
                vmhd: Some(Vmhd::default()),
                dinf: dinf(),
                stbl: empty_stbl(avc1.into()),
                ..Default::default()
            },
        },
        ..Default::default()
    }];
    let mut trex = vec![Trex {
        track_id: VIDEO_TRACK,
        default_sample_description_index: 1,
        ..Default::default()
    }];
    if let Some(pre_skip) = info.audio_pre_skip {
        let opus = Opus {
            audio: Audio {
                data_reference_index: 1,
                channel_count: 1,
                sample_size: 16,
                sample_rate: (AUDIO_SAMPLE_RATE as u16).into(),
            },
            dops: Dops {
                output_channel_count: 1,
                pre_skip,
                input_sample_rate: AUDIO_SAMPLE_RATE,
                output_gain: 0,
                channel_mapping: None,
            },
            btrt: None,
        };
        traks.push(Trak {
            tkhd: Tkhd {
                track_id: AUDIO_TRACK,
                alternate_group: 1,
                enabled: true,
                in_movie: true,
                volume: 1.into(),
                ..Default::default()
            },
            mdia: Mdia {
                mdhd: Mdhd {
                    timescale: AUDIO_SAMPLE_RATE,
                    language: "und".into(),
                    ..Default::default()
                },
                hdlr: Hdlr {
                    handler: b"soun".into(),
                    name: "cambox audio".into(),
                },
                minf: Minf {
                    smhd: Some(Smhd::default()),
                    dinf: dinf(),
                    stbl: empty_stbl(opus.into()),
                    ..Default::default()
                },
            },
            ..Default::default()
        });
        trex.push(Trex {
            track_id: AUDIO_TRACK,
            default_sample_description_index: 1,
            ..Default::default()
        });
    }
    let moov = Moov {
        mvhd: Mvhd {
            timescale: 1000,
            rate: 1.into(),
            volume: 1.into(),
            next_track_id: AUDIO_TRACK + 1,
            ..Default::default()
        },
        mvex: Some(Mvex {
            trex,
            ..Default::default()
        }),
        trak: traks,
        ..Default::default()
    };
    let ftyp = Ftyp {
        major_brand: b"isom".into(),
        minor_version: 512,
        compatible_brands: vec![
            b"isom".into(),
            b"iso6".into(),
            b"avc1".into(),
            b"mp41".into(),
        ],
    };
    let mut out = Vec::new();
    ftyp.encode(&mut out).map_err(enc_err)?;
    moov.encode(&mut out).map_err(enc_err)?;
    Ok(out.into())
}

/// Turns frames into moof+mdat fragments on a timeline that starts at `base_us`.
#[derive(Debug)]
pub struct Fragmenter {
    base_us: u64,
    seq: u32,
    video_duration: u32,
}

impl Fragmenter {
    /// `base_us` is the capture time that becomes time zero (the first keyframe's).
    pub fn new(base_us: u64, rate: FrameRate) -> Self {
        let video_duration =
            (VIDEO_TIMESCALE as u64 * rate.den as u64 / rate.num.max(1) as u64) as u32;
        Self {
            base_us,
            seq: 0,
            video_duration,
        }
    }

    pub fn base_us(&self) -> u64 {
        self.base_us
    }

    fn ticks(&self, capture_us: u64, timescale: u32) -> u64 {
        let d = capture_us.saturating_sub(self.base_us) as u128;
        ((d * timescale as u128 + 500_000) / 1_000_000) as u64
    }

    /// A fragment holding one H.264 access unit (Annex-B in, length-prefixed out).
    pub fn video(&mut self, capture_us: u64, keyframe: bool, au: &[u8]) -> Result<Bytes, Mp4Error> {
        self.av(Some((capture_us, keyframe, au)), &[])
    }

    /// A fragment holding one Opus packet of 20 ms.
    pub fn audio(&mut self, capture_us: u64, packet: &[u8]) -> Result<Bytes, Mp4Error> {
        self.av(None, &[(capture_us, packet)])
    }

    /// One fragment with a video frame and the Opus packets captured since the previous
    /// one, a `traf` each. Browsers expect every media segment of a muxed stream to carry
    /// every track; a segment without one of them leaves MSE unable to tell a gap from a
    /// pause in that track.
    pub fn av(
        &mut self,
        video: Option<(u64, bool, &[u8])>,
        audio: &[(u64, &[u8])],
    ) -> Result<Bytes, Mp4Error> {
        let mut trafs = Vec::new();
        let mut payloads: Vec<Vec<u8>> = Vec::new();
        if let Some((capture_us, keyframe, au)) = video {
            let sample = to_length_prefixed(au);
            let flags = if keyframe { FLAGS_SYNC } else { FLAGS_NON_SYNC };
            let entry = TrunEntry {
                duration: Some(self.video_duration),
                size: Some(sample.len() as u32),
                flags: Some(flags),
                cts: None,
            };
            trafs.push(traf(
                VIDEO_TRACK,
                self.ticks(capture_us, VIDEO_TIMESCALE),
                vec![entry],
            ));
            payloads.push(sample);
        }
        if let Some(&(first, _)) = audio.first() {
            let ticks: Vec<u64> = audio
                .iter()
                .map(|(c, _)| self.ticks(*c, AUDIO_SAMPLE_RATE))
                .collect();
            // Durations follow the capture times, so a lost packet leaves a gap of the
            // right length instead of shifting everything after it.
            let entries = audio
                .iter()
                .enumerate()
                .map(|(i, (_, p))| TrunEntry {
                    duration: Some(ticks.get(i + 1).map_or(AUDIO_BLOCK_SAMPLES as u32, |n| {
                        n.saturating_sub(ticks[i]) as u32
                    })),
                    size: Some(p.len() as u32),
                    flags: Some(FLAGS_SYNC),
                    cts: None,
                })
                .collect();
            trafs.push(traf(
                AUDIO_TRACK,
                self.ticks(first, AUDIO_SAMPLE_RATE),
                entries,
            ));
            payloads.push(audio.iter().flat_map(|(_, p)| p.iter().copied()).collect());
        }
        self.seq = self.seq.wrapping_add(1);
        let mut moof = Moof {
            mfhd: Mfhd {
                sequence_number: self.seq,
            },
            traf: trafs,
        };
        // Data offsets count from the moof's first byte to each traf's samples in the mdat.
        let mut probe = Vec::new();
        moof.encode(&mut probe).map_err(enc_err)?;
        let mut offset = probe.len() + 8;
        for (t, payload) in moof.traf.iter_mut().zip(&payloads) {
            t.trun[0].data_offset = Some(offset as i32);
            offset += payload.len();
        }
        let data = payloads.concat();
        let mut out = Vec::with_capacity(probe.len() + data.len() + 16);
        moof.encode(&mut out).map_err(enc_err)?;
        Mdat { data }.encode(&mut out).map_err(enc_err)?;
        Ok(out.into())
    }
}

fn traf(track_id: u32, decode_time: u64, entries: Vec<TrunEntry>) -> Traf {
    Traf {
        tfhd: Tfhd {
            track_id,
            default_base_is_moof: true,
            ..Default::default()
        },
        tfdt: Some(Tfdt {
            base_media_decode_time: decode_time,
        }),
        trun: vec![Trun {
            data_offset: Some(0),
            samples: TrunSamples::Explicit(entries),
        }],
        ..Default::default()
    }
}

/// Kinds of track the reader understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackKind {
    Video,
    Audio,
    Other,
}

#[derive(Debug, Clone)]
pub struct TrackMeta {
    pub id: u32,
    pub kind: TrackKind,
    pub timescale: u32,
    pub default_duration: u32,
}

/// What the reader finds in a fragmented MP4 stream.
#[derive(Debug, Clone)]
pub enum Mp4Event {
    /// The init segment: its raw bytes and the tracks it declares.
    Init {
        bytes: Bytes,
        tracks: Vec<TrackMeta>,
        avc: Option<(Bytes, Bytes)>,
    },
    /// A fragment (moof + mdat) as raw bytes, with its samples.
    Fragment { bytes: Bytes, samples: Vec<Sample> },
}

#[derive(Debug, Clone)]
pub struct Sample {
    pub track_id: u32,
    /// In the track's timescale.
    pub decode_time: u64,
    pub duration: u32,
    pub keyframe: bool,
    pub data: Bytes,
}

/// Limit on one top-level box: a live fragment is a frame, never anywhere near this.
const MAX_BOX: u64 = 64 << 20;

/// Reads a fragmented MP4 byte stream fed in arbitrary chunks. Malformed input is an error.
#[derive(Debug, Default)]
pub struct Mp4Reader {
    buf: Vec<u8>,
    tracks: Vec<TrackMeta>,
    init: Vec<u8>,
    pending_moof: Option<(Vec<u8>, Moof)>,
    next_time: std::collections::HashMap<u32, u64>,
}

impl Mp4Reader {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn tracks(&self) -> &[TrackMeta] {
        &self.tracks
    }

    pub fn push(&mut self, data: &[u8]) -> Result<Vec<Mp4Event>, Mp4Error> {
        self.buf.extend_from_slice(data);
        let mut events = Vec::new();
        while let Some((kind, len)) = box_header(&self.buf)? {
            if (self.buf.len() as u64) < len {
                break;
            }
            let bytes: Vec<u8> = self.buf.drain(..len as usize).collect();
            self.handle_box(kind, bytes, &mut events)?;
        }
        Ok(events)
    }

    fn handle_box(
        &mut self,
        kind: [u8; 4],
        bytes: Vec<u8>,
        events: &mut Vec<Mp4Event>,
    ) -> Result<(), Mp4Error> {
        let invalid = |e: mp4_atom::Error| Mp4Error::Invalid(e.to_string());
        match &kind {
            b"ftyp" | b"styp" => self.init.extend_from_slice(&bytes),
            b"moov" => {
                let moov = Moov::decode(&mut bytes.as_slice()).map_err(invalid)?;
                self.init.extend_from_slice(&bytes);
                let mut avc = None;
                self.tracks = moov
                    .trak
                    .iter()
                    .map(|t| {
                        let handler = t.mdia.hdlr.handler;
                        let kind = if handler == b"vide".into() {
                            TrackKind::Video
                        } else if handler == b"soun".into() {
                            TrackKind::Audio
                        } else {
                            TrackKind::Other
                        };
                        for c in &t.mdia.minf.stbl.stsd.codecs {
                            if let Codec::Avc1(a) = c {
                                if let (Some(s), Some(p)) = (
                                    a.avcc.sequence_parameter_sets.first(),
                                    a.avcc.picture_parameter_sets.first(),
                                ) {
                                    avc = Some((Bytes::from(s.to_vec()), Bytes::from(p.to_vec())));
                                }
                            }
                        }
                        let default_duration = moov
                            .mvex
                            .as_ref()
                            .and_then(|m| m.trex.iter().find(|x| x.track_id == t.tkhd.track_id))
                            .map_or(0, |x| x.default_sample_duration);
                        TrackMeta {
                            id: t.tkhd.track_id,
                            kind,
                            timescale: t.mdia.mdhd.timescale.max(1),
                            default_duration,
                        }
                    })
                    .collect();
                events.push(Mp4Event::Init {
                    bytes: std::mem::take(&mut self.init).into(),
                    tracks: self.tracks.clone(),
                    avc,
                });
            }
            b"moof" => {
                let moof = Moof::decode(&mut bytes.as_slice()).map_err(invalid)?;
                self.pending_moof = Some((bytes, moof));
            }
            b"mdat" => {
                let Some((moof_bytes, moof)) = self.pending_moof.take() else {
                    return Err(Mp4Error::Invalid("mdat without a moof before it".into()));
                };
                let samples = self.samples(&moof, moof_bytes.len(), &bytes)?;
                let mut all = moof_bytes;
                all.extend_from_slice(&bytes);
                events.push(Mp4Event::Fragment {
                    bytes: all.into(),
                    samples,
                });
            }
            _ => {
                // Other boxes (free, sidx, prft, ...) carry nothing a live reader needs.
                let _ = Any::decode(&mut bytes.as_slice());
            }
        }
        Ok(())
    }

    fn samples(
        &mut self,
        moof: &Moof,
        moof_len: usize,
        mdat: &[u8],
    ) -> Result<Vec<Sample>, Mp4Error> {
        let header =
            if mdat.len() >= 8 && u32::from_be_bytes([mdat[0], mdat[1], mdat[2], mdat[3]]) == 1 {
                16
            } else {
                8
            };
        let mut out = Vec::new();
        for traf in &moof.traf {
            let id = traf.tfhd.track_id;
            let meta = self.tracks.iter().find(|t| t.id == id).cloned();
            let mut time = traf
                .tfdt
                .as_ref()
                .map(|t| t.base_media_decode_time)
                .or_else(|| self.next_time.get(&id).copied())
                .unwrap_or(0);
            for trun in &traf.trun {
                // Offsets count from the moof start; our mdat follows it directly.
                let mut pos = trun.data_offset.unwrap_or(0) as i64 - moof_len as i64;
                for (i, e) in trun.samples.iter().enumerate() {
                    let size = e.size.or(traf.tfhd.default_sample_size).unwrap_or(0) as i64;
                    let duration = e
                        .duration
                        .or(traf.tfhd.default_sample_duration)
                        .unwrap_or(meta.as_ref().map_or(0, |m| m.default_duration));
                    let flags = e
                        .flags
                        .or(traf.tfhd.default_sample_flags)
                        .unwrap_or(if i == 0 { FLAGS_SYNC } else { FLAGS_NON_SYNC });
                    let start = pos;
                    let end = pos + size;
                    if start < header as i64 || end > mdat.len() as i64 {
                        return Err(Mp4Error::Invalid(format!(
                            "sample of track {id} lies outside its mdat"
                        )));
                    }
                    out.push(Sample {
                        track_id: id,
                        decode_time: time,
                        duration,
                        keyframe: flags & 0x0001_0000 == 0,
                        data: Bytes::copy_from_slice(&mdat[start as usize..end as usize]),
                    });
                    time += duration as u64;
                    pos = end;
                }
            }
            self.next_time.insert(id, time);
        }
        Ok(out)
    }
}

/// Type and total length of the box at the start of `buf`, if its header is complete.
fn box_header(buf: &[u8]) -> Result<Option<([u8; 4], u64)>, Mp4Error> {
    if buf.len() < 8 {
        return Ok(None);
    }
    let size = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as u64;
    let kind = [buf[4], buf[5], buf[6], buf[7]];
    let len = match size {
        1 => {
            if buf.len() < 16 {
                return Ok(None);
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[8..16]);
            u64::from_be_bytes(b)
        }
        0 => {
            return Err(Mp4Error::Invalid(
                "box extends to end of file; not a live fragmented stream".into(),
            ))
        }
        n => n,
    };
    if !(8..=MAX_BOX).contains(&len) {
        return Err(Mp4Error::Invalid(format!(
            "box '{}' has implausible size {len}",
            String::from_utf8_lossy(&kind)
        )));
    }
    Ok(Some((kind, len)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::openh264::OpenH264Encoder;
    use crate::encode::{VideoEncoder, VideoEncoderSettings};
    use crate::frame::{RawFrame, VideoFormat};

    #[test]
    fn reader_reads_back_what_the_fragmenter_writes() {
        let rate = FrameRate::per_second(30);
        let format = VideoFormat {
            width: 320,
            height: 180,
            rate,
        };
        let mut enc = OpenH264Encoder::new(VideoEncoderSettings {
            format,
            bitrate: 300_000,
            keyframe_interval: 30,
        })
        .unwrap();
        let base = 1_000_000_000;
        let frames: Vec<_> = (0..3u64)
            .map(|n| {
                let raw = RawFrame {
                    number: n,
                    capture_us: base + rate.frame_offset_us(n),
                    width: 320,
                    height: 180,
                    data: vec![(n * 40) as u8; RawFrame::i420_len(320, 180)],
                };
                enc.encode(&raw, n == 0).unwrap().unwrap()
            })
            .collect();
        let info = StreamInfo {
            video: AvcConfig::from_keyframe(&frames[0].data).unwrap(),
            rate,
            audio_pre_skip: Some(120),
        };
        assert_eq!(info.mime(), "video/mp4; codecs=\"avc1.42c00d,opus\"");
        let mut stream = init_segment(&info).unwrap().to_vec();
        let mut frag = Fragmenter::new(base, rate);
        for f in &frames {
            stream.extend_from_slice(&frag.video(f.capture_us, f.keyframe, &f.data).unwrap());
        }
        stream.extend_from_slice(&frag.audio(base + 20_000, &[0xAB; 7]).unwrap());
        // One fragment with both tracks; the second audio packet was lost.
        stream.extend_from_slice(
            &frag
                .av(
                    Some((base + 100_000, false, &frames[2].data[..])),
                    &[
                        (base + 40_000, &[1u8; 5][..]),
                        (base + 80_000, &[2u8; 6][..]),
                    ],
                )
                .unwrap(),
        );

        let mut reader = Mp4Reader::new();
        let mut events = Vec::new();
        for chunk in stream.chunks(100) {
            events.extend(reader.push(chunk).unwrap());
        }
        assert_eq!(events.len(), 6);
        let Mp4Event::Init { tracks, avc, .. } = &events[0] else {
            panic!("init first")
        };
        assert_eq!(tracks.len(), 2);
        assert_eq!(
            (tracks[0].kind, tracks[0].timescale),
            (TrackKind::Video, 90_000)
        );
        assert_eq!(
            (tracks[1].kind, tracks[1].timescale),
            (TrackKind::Audio, 48_000)
        );
        assert_eq!(avc.as_ref().unwrap().0, info.video.sps);
        let samples: Vec<Sample> = events[1..]
            .iter()
            .flat_map(|e| match e {
                Mp4Event::Fragment { samples, .. } => samples.clone(),
                _ => vec![],
            })
            .collect();
        let times: Vec<(u32, u64, bool)> = samples
            .iter()
            .map(|s| (s.track_id, s.decode_time, s.keyframe))
            .collect();
        assert_eq!(
            times,
            vec![
                (1, 0, true),
                (1, 3000, false),
                (1, 6000, false),
                (2, 960, true),
                (1, 9000, false),
                (2, 1920, true),
                (2, 3840, true),
            ]
        );
        assert_eq!(&samples[3].data[..], &[0xAB; 7]);
        assert_eq!(
            samples[5].duration, 1920,
            "the gap of the lost packet is kept"
        );
        assert_eq!(
            (&samples[5].data[..], &samples[6].data[..]),
            (&[1u8; 5][..], &[2u8; 6][..])
        );
        assert_eq!(samples[4].data, samples[2].data);
        // The sample is the access unit without parameter sets, NALs intact.
        let back = crate::annexb::from_length_prefixed(&samples[1].data).unwrap();
        assert_eq!(
            crate::annexb::to_length_prefixed(&back),
            samples[1].data.to_vec()
        );
        assert_eq!(
            crate::annexb::to_length_prefixed(&frames[1].data),
            samples[1].data.to_vec()
        );
    }

    #[test]
    fn garbage_is_refused() {
        let mut r = Mp4Reader::new();
        assert!(r.push(&[0, 0, 0, 3, b'm', b'o', b'o', b'v']).is_err());
        let mut r = Mp4Reader::new();
        assert!(r
            .push(&[0, 0, 0, 16, b'm', b'd', b'a', b't', 0, 0, 0, 0, 0, 0, 0, 0])
            .is_err());
        let mut r = Mp4Reader::new();
        assert!(r
            .push(&[0, 0, 0, 12, b'm', b'o', b'o', b'v', 1, 2, 3, 4])
            .is_err());
    }
}
