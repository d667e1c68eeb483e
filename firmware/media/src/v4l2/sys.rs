//! The kernel ABI of V4L2, written out by hand from `linux/videodev2.h` and
//! `linux/v4l2-controls.h`.
//!
//! Hand-written rather than generated so that building needs neither kernel headers nor
//! libclang (the image is cross-built). The size tests at the bottom, and the ioctl request
//! codes, which encode the sizes, are what keeps these layouts honest.

#![allow(unsafe_code)]
#![allow(non_camel_case_types)]

use std::ffi::{c_int, c_long, c_ulong, c_void};

pub const VIDEO_MAX_PLANES: usize = 8;

pub const V4L2_CAP_VIDEO_CAPTURE: u32 = 0x0000_0001;
pub const V4L2_CAP_VIDEO_OUTPUT: u32 = 0x0000_0002;
pub const V4L2_CAP_VIDEO_CAPTURE_MPLANE: u32 = 0x0000_1000;
pub const V4L2_CAP_VIDEO_OUTPUT_MPLANE: u32 = 0x0000_2000;
pub const V4L2_CAP_VIDEO_M2M_MPLANE: u32 = 0x0000_4000;
pub const V4L2_CAP_VIDEO_M2M: u32 = 0x0000_8000;
pub const V4L2_CAP_STREAMING: u32 = 0x0400_0000;
pub const V4L2_CAP_DEVICE_CAPS: u32 = 0x8000_0000;

pub const V4L2_BUF_TYPE_VIDEO_CAPTURE: u32 = 1;
pub const V4L2_BUF_TYPE_VIDEO_OUTPUT: u32 = 2;
pub const V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE: u32 = 9;
pub const V4L2_BUF_TYPE_VIDEO_OUTPUT_MPLANE: u32 = 10;

pub const V4L2_MEMORY_MMAP: u32 = 1;

pub const V4L2_FIELD_ANY: u32 = 0;
pub const V4L2_FIELD_NONE: u32 = 1;

pub const V4L2_BUF_FLAG_MAPPED: u32 = 0x0000_0001;
pub const V4L2_BUF_FLAG_QUEUED: u32 = 0x0000_0002;
pub const V4L2_BUF_FLAG_DONE: u32 = 0x0000_0004;
pub const V4L2_BUF_FLAG_KEYFRAME: u32 = 0x0000_0008;
pub const V4L2_BUF_FLAG_ERROR: u32 = 0x0000_0040;
pub const V4L2_BUF_FLAG_TIMESTAMP_MASK: u32 = 0x0000_e000;
pub const V4L2_BUF_FLAG_TIMESTAMP_UNKNOWN: u32 = 0x0000_0000;
pub const V4L2_BUF_FLAG_TIMESTAMP_MONOTONIC: u32 = 0x0000_2000;
pub const V4L2_BUF_FLAG_TIMESTAMP_COPY: u32 = 0x0000_4000;
pub const V4L2_BUF_FLAG_LAST: u32 = 0x0010_0000;

/// `v4l2_captureparm.capability`: the driver honours `timeperframe`.
pub const V4L2_CAP_TIMEPERFRAME: u32 = 0x1000;

/// `v4l2_fourcc(a, b, c, d)`.
pub const fn fourcc(code: &[u8; 4]) -> u32 {
    u32::from_le_bytes(*code)
}

pub const V4L2_PIX_FMT_YUYV: u32 = fourcc(b"YUYV");
pub const V4L2_PIX_FMT_NV12: u32 = fourcc(b"NV12");
/// I420: Y plane, then Cb, then Cr, each chroma plane a quarter of Y.
pub const V4L2_PIX_FMT_YUV420: u32 = fourcc(b"YU12");
pub const V4L2_PIX_FMT_H264: u32 = fourcc(b"H264");

pub const V4L2_CTRL_CLASS_CODEC: u32 = 0x0099_0000;
pub const V4L2_CID_CODEC_BASE: u32 = V4L2_CTRL_CLASS_CODEC | 0x900;
pub const V4L2_CID_MPEG_VIDEO_BITRATE: u32 = V4L2_CID_CODEC_BASE + 207;
pub const V4L2_CID_MPEG_VIDEO_REPEAT_SEQ_HEADER: u32 = V4L2_CID_CODEC_BASE + 226;
pub const V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME: u32 = V4L2_CID_CODEC_BASE + 229;
pub const V4L2_CID_MPEG_VIDEO_H264_I_PERIOD: u32 = V4L2_CID_CODEC_BASE + 358;
pub const V4L2_CID_MPEG_VIDEO_H264_LEVEL: u32 = V4L2_CID_CODEC_BASE + 359;
pub const V4L2_CID_MPEG_VIDEO_H264_PROFILE: u32 = V4L2_CID_CODEC_BASE + 363;

pub const V4L2_MPEG_VIDEO_H264_LEVEL_4_0: i32 = 11;
pub const V4L2_MPEG_VIDEO_H264_PROFILE_CONSTRAINED_BASELINE: i32 = 1;

/// Implements `Default` as all-zero bytes, which is how the kernel API expects every
/// request structure to start (reserved fields must be zero).
macro_rules! zeroed_default {
    ($($t:ty),* $(,)?) => {$(
        impl Default for $t {
            fn default() -> Self {
                // SAFETY: the type is a repr(C) aggregate of integers, integer arrays, raw
                // pointers and unions of those; the all-zero bit pattern is a valid value of
                // each (zero, or a null pointer).
                unsafe { std::mem::zeroed() }
            }
        }
    )*};
}

/// Writes a union without naming its contents, since unions cannot derive `Debug`.
macro_rules! opaque_debug {
    ($($t:ty),* $(,)?) => {$(
        impl std::fmt::Debug for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(concat!(stringify!($t), " { .. }"))
            }
        }
    )*};
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct v4l2_capability {
    pub driver: [u8; 16],
    pub card: [u8; 32],
    pub bus_info: [u8; 32],
    pub version: u32,
    pub capabilities: u32,
    pub device_caps: u32,
    pub reserved: [u32; 3],
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct v4l2_fmtdesc {
    pub index: u32,
    pub type_: u32,
    pub flags: u32,
    pub description: [u8; 32],
    pub pixelformat: u32,
    pub mbus_code: u32,
    pub reserved: [u32; 3],
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct v4l2_pix_format {
    pub width: u32,
    pub height: u32,
    pub pixelformat: u32,
    pub field: u32,
    pub bytesperline: u32,
    pub sizeimage: u32,
    pub colorspace: u32,
    pub priv_: u32,
    pub flags: u32,
    pub ycbcr_enc: u32,
    pub quantization: u32,
    pub xfer_func: u32,
}

#[repr(C, packed)]
#[derive(Debug, Clone, Copy)]
pub struct v4l2_plane_pix_format {
    pub sizeimage: u32,
    pub bytesperline: u32,
    pub reserved: [u16; 6],
}

#[repr(C, packed)]
#[derive(Debug, Clone, Copy)]
pub struct v4l2_pix_format_mplane {
    pub width: u32,
    pub height: u32,
    pub pixelformat: u32,
    pub field: u32,
    pub colorspace: u32,
    pub plane_fmt: [v4l2_plane_pix_format; VIDEO_MAX_PLANES],
    pub num_planes: u8,
    pub flags: u8,
    pub ycbcr_enc: u8,
    pub quantization: u8,
    pub xfer_func: u8,
    pub reserved: [u8; 7],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub union v4l2_format_fmt {
    pub pix: v4l2_pix_format,
    pub pix_mp: v4l2_pix_format_mplane,
    pub raw_data: [u8; 200],
    /// Stands in for the pointers inside `struct v4l2_window`, which give the kernel's union
    /// pointer alignment and so `v4l2_format` its 208 bytes on 64-bit (204 on 32-bit).
    _align: [c_ulong; 0],
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct v4l2_format {
    pub type_: u32,
    pub fmt: v4l2_format_fmt,
}

impl v4l2_format {
    pub fn pix(&self) -> v4l2_pix_format {
        // SAFETY: both union members consist only of integers, so any bytes are a valid value.
        unsafe { self.fmt.pix }
    }

    pub fn pix_mut(&mut self) -> &mut v4l2_pix_format {
        // SAFETY: as in `pix`; the reference borrows `self`, so it cannot outlive the union.
        unsafe { &mut self.fmt.pix }
    }

    pub fn pix_mp(&self) -> v4l2_pix_format_mplane {
        // SAFETY: both union members consist only of integers, so any bytes are a valid value.
        unsafe { self.fmt.pix_mp }
    }

    pub fn pix_mp_mut(&mut self) -> &mut v4l2_pix_format_mplane {
        // SAFETY: as in `pix_mp`; the struct is packed (alignment 1), so the reference is
        // always aligned.
        unsafe { &mut self.fmt.pix_mp }
    }
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct v4l2_requestbuffers {
    pub count: u32,
    pub type_: u32,
    pub memory: u32,
    pub capabilities: u32,
    pub flags: u8,
    pub reserved: [u8; 3],
}

/// `struct timeval` as the kernel sees it from this process: `long` seconds and
/// microseconds (the 32-bit-time ABI on 32-bit ARM, which the kernel still serves).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct timeval {
    pub tv_sec: c_long,
    pub tv_usec: c_long,
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct v4l2_timecode {
    pub type_: u32,
    pub flags: u32,
    pub frames: u8,
    pub seconds: u8,
    pub minutes: u8,
    pub hours: u8,
    pub userbits: [u8; 4],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub union v4l2_plane_m {
    pub mem_offset: u32,
    pub userptr: c_ulong,
    pub fd: i32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct v4l2_plane {
    pub bytesused: u32,
    pub length: u32,
    pub m: v4l2_plane_m,
    pub data_offset: u32,
    pub reserved: [u32; 11],
}

impl v4l2_plane {
    pub fn mem_offset(&self) -> u32 {
        // SAFETY: every member of the union is an integer; any bytes are a valid u32.
        unsafe { self.m.mem_offset }
    }
}

#[repr(C)]
#[derive(Clone, Copy)]
pub union v4l2_buffer_m {
    pub offset: u32,
    pub userptr: c_ulong,
    pub planes: *mut v4l2_plane,
    pub fd: i32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct v4l2_buffer {
    pub index: u32,
    pub type_: u32,
    pub bytesused: u32,
    pub flags: u32,
    pub field: u32,
    pub timestamp: timeval,
    pub timecode: v4l2_timecode,
    pub sequence: u32,
    pub memory: u32,
    pub m: v4l2_buffer_m,
    pub length: u32,
    pub reserved2: u32,
    pub request_fd: i32,
}

impl v4l2_buffer {
    pub fn offset(&self) -> u32 {
        // SAFETY: reading the integer member; on 64-bit it overlaps the low half of the
        // pointer member, and any bytes are a valid u32.
        unsafe { self.m.offset }
    }
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct v4l2_fract {
    pub numerator: u32,
    pub denominator: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct v4l2_captureparm {
    pub capability: u32,
    pub capturemode: u32,
    pub timeperframe: v4l2_fract,
    pub extendedmode: u32,
    pub readbuffers: u32,
    pub reserved: [u32; 4],
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct v4l2_outputparm {
    pub capability: u32,
    pub outputmode: u32,
    pub timeperframe: v4l2_fract,
    pub extendedmode: u32,
    pub writebuffers: u32,
    pub reserved: [u32; 4],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub union v4l2_streamparm_parm {
    pub capture: v4l2_captureparm,
    pub output: v4l2_outputparm,
    pub raw_data: [u8; 200],
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct v4l2_streamparm {
    pub type_: u32,
    pub parm: v4l2_streamparm_parm,
}

impl v4l2_streamparm {
    /// The capture or output member; both have the same layout up to `timeperframe`.
    pub fn capture(&self) -> v4l2_captureparm {
        // SAFETY: all members are plain integers; any bytes are a valid value.
        unsafe { self.parm.capture }
    }
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct v4l2_control {
    pub id: u32,
    pub value: i32,
}

#[repr(C, packed)]
#[derive(Clone, Copy)]
pub union v4l2_ext_control_value {
    pub value: i32,
    pub value64: i64,
    pub ptr: *mut c_void,
}

#[repr(C, packed)]
#[derive(Debug, Clone, Copy)]
pub struct v4l2_ext_control {
    pub id: u32,
    pub size: u32,
    pub reserved2: [u32; 1],
    pub value: v4l2_ext_control_value,
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct v4l2_ext_controls {
    /// `ctrl_class` or `which`, a union of two u32 in the kernel.
    pub which: u32,
    pub count: u32,
    pub error_idx: u32,
    pub request_fd: i32,
    pub reserved: [u32; 1],
    pub controls: *mut v4l2_ext_control,
}

zeroed_default!(
    v4l2_capability,
    v4l2_fmtdesc,
    v4l2_format,
    v4l2_requestbuffers,
    v4l2_plane,
    v4l2_buffer,
    v4l2_streamparm,
    v4l2_control,
    v4l2_ext_control,
    v4l2_ext_controls,
);

opaque_debug!(
    v4l2_format_fmt,
    v4l2_plane_m,
    v4l2_buffer_m,
    v4l2_streamparm_parm,
    v4l2_ext_control_value,
);

nix::ioctl_read!(
    /// VIDIOC_QUERYCAP.
    vidioc_querycap, b'V', 0, v4l2_capability
);
nix::ioctl_readwrite!(
    /// VIDIOC_ENUM_FMT.
    vidioc_enum_fmt, b'V', 2, v4l2_fmtdesc
);
nix::ioctl_readwrite!(
    /// VIDIOC_G_FMT.
    vidioc_g_fmt, b'V', 4, v4l2_format
);
nix::ioctl_readwrite!(
    /// VIDIOC_S_FMT.
    vidioc_s_fmt, b'V', 5, v4l2_format
);
nix::ioctl_readwrite!(
    /// VIDIOC_REQBUFS.
    vidioc_reqbufs, b'V', 8, v4l2_requestbuffers
);
nix::ioctl_readwrite!(
    /// VIDIOC_QUERYBUF.
    vidioc_querybuf, b'V', 9, v4l2_buffer
);
nix::ioctl_readwrite!(
    /// VIDIOC_QBUF.
    vidioc_qbuf, b'V', 15, v4l2_buffer
);
nix::ioctl_readwrite!(
    /// VIDIOC_DQBUF.
    vidioc_dqbuf, b'V', 17, v4l2_buffer
);
nix::ioctl_write_ptr!(
    /// VIDIOC_STREAMON.
    vidioc_streamon, b'V', 18, c_int
);
nix::ioctl_write_ptr!(
    /// VIDIOC_STREAMOFF.
    vidioc_streamoff, b'V', 19, c_int
);
nix::ioctl_readwrite!(
    /// VIDIOC_G_PARM.
    vidioc_g_parm, b'V', 21, v4l2_streamparm
);
nix::ioctl_readwrite!(
    /// VIDIOC_S_PARM.
    vidioc_s_parm, b'V', 22, v4l2_streamparm
);
nix::ioctl_readwrite!(
    /// VIDIOC_S_CTRL.
    vidioc_s_ctrl, b'V', 28, v4l2_control
);
nix::ioctl_readwrite!(
    /// VIDIOC_S_EXT_CTRLS.
    vidioc_s_ext_ctrls, b'V', 72, v4l2_ext_controls
);

/// A NUL-padded byte string from a kernel struct, as text.
pub fn c_str(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// A fourcc as its four letters, for messages ("YUYV", "MJPG").
pub fn fourcc_name(code: u32) -> String {
    code.to_le_bytes()
        .iter()
        .map(|&b| if b.is_ascii_graphic() { b as char } else { '?' })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::size_of;

    #[test]
    fn v4l2_struct_sizes_match_the_kernel() {
        assert_eq!(size_of::<v4l2_capability>(), 104);
        assert_eq!(size_of::<v4l2_fmtdesc>(), 64);
        assert_eq!(size_of::<v4l2_pix_format>(), 48);
        assert_eq!(size_of::<v4l2_plane_pix_format>(), 20);
        assert_eq!(size_of::<v4l2_pix_format_mplane>(), 192);
        assert_eq!(size_of::<v4l2_requestbuffers>(), 20);
        assert_eq!(size_of::<v4l2_timecode>(), 16);
        assert_eq!(size_of::<v4l2_streamparm>(), 204);
        assert_eq!(size_of::<v4l2_control>(), 8);
        assert_eq!(size_of::<v4l2_ext_control>(), 20);
    }

    #[cfg(target_pointer_width = "64")]
    #[test]
    fn v4l2_pointer_sized_structs_match_the_64_bit_kernel() {
        assert_eq!(size_of::<v4l2_format>(), 208);
        assert_eq!(size_of::<v4l2_buffer>(), 88);
        assert_eq!(size_of::<v4l2_plane>(), 64);
        assert_eq!(size_of::<v4l2_ext_controls>(), 32);
    }

    #[cfg(target_pointer_width = "32")]
    #[test]
    fn v4l2_pointer_sized_structs_match_the_32_bit_kernel() {
        assert_eq!(size_of::<v4l2_format>(), 204);
        assert_eq!(size_of::<v4l2_buffer>(), 68);
        assert_eq!(size_of::<v4l2_plane>(), 60);
        assert_eq!(size_of::<v4l2_ext_controls>(), 24);
    }

    /// The request codes as `linux/videodev2.h` defines them on x86_64 and aarch64 (both use
    /// the generic ioctl encoding), i.e. what `strace` shows for these calls.
    #[cfg(all(
        target_pointer_width = "64",
        any(target_arch = "x86_64", target_arch = "aarch64")
    ))]
    #[test]
    fn v4l2_request_codes_match_videodev2_h() {
        use std::mem::size_of as sz;
        assert_eq!(
            nix::request_code_read!(b'V', 0, sz::<v4l2_capability>()) as u32,
            0x8068_5600
        );
        assert_eq!(
            nix::request_code_readwrite!(b'V', 2, sz::<v4l2_fmtdesc>()) as u32,
            0xc040_5602
        );
        assert_eq!(
            nix::request_code_readwrite!(b'V', 5, sz::<v4l2_format>()) as u32,
            0xc0d0_5605
        );
        assert_eq!(
            nix::request_code_readwrite!(b'V', 8, sz::<v4l2_requestbuffers>()) as u32,
            0xc014_5608
        );
        assert_eq!(
            nix::request_code_readwrite!(b'V', 15, sz::<v4l2_buffer>()) as u32,
            0xc058_560f
        );
        assert_eq!(
            nix::request_code_write!(b'V', 18, sz::<c_int>()) as u32,
            0x4004_5612
        );
        assert_eq!(
            nix::request_code_readwrite!(b'V', 22, sz::<v4l2_streamparm>()) as u32,
            0xc0cc_5616
        );
        assert_eq!(
            nix::request_code_readwrite!(b'V', 28, sz::<v4l2_control>()) as u32,
            0xc008_561c
        );
        assert_eq!(
            nix::request_code_readwrite!(b'V', 72, sz::<v4l2_ext_controls>()) as u32,
            0xc020_5648
        );
    }

    #[test]
    fn v4l2_fourcc_spelling() {
        assert_eq!(V4L2_PIX_FMT_YUYV, 0x5659_5559);
        assert_eq!(V4L2_PIX_FMT_H264, 0x3436_3248);
        assert_eq!(fourcc_name(V4L2_PIX_FMT_YUV420), "YU12");
        assert_eq!(fourcc_name(0x0000_0001), "????");
    }

    #[test]
    fn v4l2_c_str_stops_at_nul() {
        assert_eq!(c_str(b"uvcvideo\0\0\0"), "uvcvideo");
        assert_eq!(c_str(b"full"), "full");
    }
}
