//! One open V4L2 device node and the ioctls cambox issues on it.
//!
//! Each method is one ioctl with its kernel name in the error, so a failure report says
//! exactly which step a driver refused. Nothing here interprets results; that is for
//! `capture` and `m2m`.

#![allow(unsafe_code)]

use std::ffi::c_int;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::stat::Mode;

use super::sys::*;
use super::V4l2Error;

/// No driver lists more formats than this; the bound only protects against a buggy driver
/// that never ends the enumeration.
const MAX_FORMATS: u32 = 64;

/// What `VIDIOC_QUERYCAP` says about a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    pub driver: String,
    pub card: String,
    pub bus_info: String,
    /// The capabilities of this node, not of the whole physical device (a Pi's codec
    /// block has several nodes with different roles).
    pub caps: u32,
}

impl Capabilities {
    pub fn from_raw(raw: &v4l2_capability) -> Self {
        let caps = if raw.capabilities & V4L2_CAP_DEVICE_CAPS != 0 {
            raw.device_caps
        } else {
            raw.capabilities
        };
        Self {
            driver: c_str(&raw.driver),
            card: c_str(&raw.card),
            bus_info: c_str(&raw.bus_info),
            caps,
        }
    }

    pub fn has(&self, cap: u32) -> bool {
        self.caps & cap == cap
    }

    pub fn is_m2m(&self) -> bool {
        self.caps & (V4L2_CAP_VIDEO_M2M | V4L2_CAP_VIDEO_M2M_MPLANE) != 0
    }

    /// "card (driver)" for messages.
    pub fn name(&self) -> String {
        format!("{} ({})", self.card, self.driver)
    }
}

/// A V4L2 node opened non-blocking: every wait goes through [`Device::wait`] with a timeout,
/// so a device that stops delivering cannot hang the thread that drives it.
#[derive(Debug)]
pub struct Device {
    fd: OwnedFd,
    path: String,
}

impl Device {
    pub fn open(path: &str) -> Result<Self, V4l2Error> {
        let fd = open(
            path,
            OFlag::O_RDWR | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| V4l2Error::sys(path, "open", e))?;
        Ok(Self {
            fd,
            path: path.to_owned(),
        })
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn fail(&self, op: &'static str, errno: Errno) -> V4l2Error {
        V4l2Error::sys(&self.path, op, errno)
    }

    pub fn query_caps(&self) -> Result<Capabilities, V4l2Error> {
        let mut raw = v4l2_capability::default();
        // SAFETY: `raw` is a valid, writable v4l2_capability, the type this ioctl fills.
        retry(|| unsafe { vidioc_querycap(self.raw(), &mut raw) })
            .map_err(|e| self.fail("VIDIOC_QUERYCAP", e))?;
        Ok(Capabilities::from_raw(&raw))
    }

    /// The pixel formats (fourccs) a queue offers, in the driver's order.
    pub fn enum_formats(&self, buf_type: u32) -> Result<Vec<u32>, V4l2Error> {
        let mut out = Vec::new();
        for index in 0..MAX_FORMATS {
            let mut desc = v4l2_fmtdesc {
                index,
                type_: buf_type,
                ..Default::default()
            };
            // SAFETY: `desc` is a valid, writable v4l2_fmtdesc, the type this ioctl uses.
            match retry(|| unsafe { vidioc_enum_fmt(self.raw(), &mut desc) }) {
                Ok(()) => out.push(desc.pixelformat),
                // EINVAL marks the end of the list.
                Err(Errno::EINVAL) => break,
                Err(e) => return Err(self.fail("VIDIOC_ENUM_FMT", e)),
            }
        }
        Ok(out)
    }

    pub fn get_format(&self, buf_type: u32) -> Result<v4l2_format, V4l2Error> {
        let mut fmt = v4l2_format {
            type_: buf_type,
            ..Default::default()
        };
        // SAFETY: `fmt` is a valid, writable v4l2_format, the type this ioctl uses.
        retry(|| unsafe { vidioc_g_fmt(self.raw(), &mut fmt) })
            .map_err(|e| self.fail("VIDIOC_G_FMT", e))?;
        Ok(fmt)
    }

    /// Asks for a format; the driver adjusts `fmt` to what it will actually do.
    pub fn set_format(&self, fmt: &mut v4l2_format) -> Result<(), V4l2Error> {
        // SAFETY: `fmt` is a valid, writable v4l2_format, the type this ioctl uses.
        retry(|| unsafe { vidioc_s_fmt(self.raw(), fmt) }).map_err(|e| self.fail("VIDIOC_S_FMT", e))
    }

    pub fn get_parm(&self, parm: &mut v4l2_streamparm) -> Result<(), V4l2Error> {
        // SAFETY: `parm` is a valid, writable v4l2_streamparm, the type this ioctl uses.
        retry(|| unsafe { vidioc_g_parm(self.raw(), parm) })
            .map_err(|e| self.fail("VIDIOC_G_PARM", e))
    }

    pub fn set_parm(&self, parm: &mut v4l2_streamparm) -> Result<(), V4l2Error> {
        // SAFETY: `parm` is a valid, writable v4l2_streamparm, the type this ioctl uses.
        retry(|| unsafe { vidioc_s_parm(self.raw(), parm) })
            .map_err(|e| self.fail("VIDIOC_S_PARM", e))
    }

    /// Allocates `count` mmap buffers on a queue; returns how many the driver granted.
    pub fn request_buffers(&self, buf_type: u32, count: u32) -> Result<u32, V4l2Error> {
        let mut req = v4l2_requestbuffers {
            count,
            type_: buf_type,
            memory: V4L2_MEMORY_MMAP,
            ..Default::default()
        };
        // SAFETY: `req` is a valid, writable v4l2_requestbuffers, the type this ioctl uses.
        retry(|| unsafe { vidioc_reqbufs(self.raw(), &mut req) })
            .map_err(|e| self.fail("VIDIOC_REQBUFS", e))?;
        Ok(req.count)
    }

    pub fn query_buffer(&self, buf: &mut BufferDesc) -> Result<(), V4l2Error> {
        let raw = buf.for_kernel();
        // SAFETY: `raw` is a valid v4l2_buffer; for multi-planar queues `for_kernel` has
        // pointed `m.planes` at the VIDEO_MAX_PLANES entries that `buf` owns and that
        // outlive this call, and `length` says how many there are.
        retry(|| unsafe { vidioc_querybuf(self.raw(), raw) })
            .map_err(|e| self.fail("VIDIOC_QUERYBUF", e))
    }

    pub fn queue_buffer(&self, buf: &mut BufferDesc) -> Result<(), V4l2Error> {
        let raw = buf.for_kernel();
        // SAFETY: as in `query_buffer`.
        retry(|| unsafe { vidioc_qbuf(self.raw(), raw) }).map_err(|e| self.fail("VIDIOC_QBUF", e))
    }

    /// Takes a finished buffer off a queue; `Ok(false)` when none is ready yet.
    pub fn dequeue_buffer(&self, buf: &mut BufferDesc) -> Result<bool, V4l2Error> {
        let raw = buf.for_kernel();
        // SAFETY: as in `query_buffer`.
        match retry(|| unsafe { vidioc_dqbuf(self.raw(), raw) }) {
            Ok(()) => Ok(true),
            Err(Errno::EAGAIN) => Ok(false),
            Err(e) => Err(self.fail("VIDIOC_DQBUF", e)),
        }
    }

    pub fn stream_on(&self, buf_type: u32) -> Result<(), V4l2Error> {
        let t = buf_type as c_int;
        // SAFETY: the argument is a pointer to a live c_int holding the buffer type.
        retry(|| unsafe { vidioc_streamon(self.raw(), &t) })
            .map_err(|e| self.fail("VIDIOC_STREAMON", e))
    }

    pub fn stream_off(&self, buf_type: u32) -> Result<(), V4l2Error> {
        let t = buf_type as c_int;
        // SAFETY: the argument is a pointer to a live c_int holding the buffer type.
        retry(|| unsafe { vidioc_streamoff(self.raw(), &t) })
            .map_err(|e| self.fail("VIDIOC_STREAMOFF", e))
    }

    /// Sets one control the old way, for drivers that lack the extended-control API.
    pub fn set_control(&self, id: u32, value: i32, op: &'static str) -> Result<(), V4l2Error> {
        let mut ctrl = v4l2_control { id, value };
        // SAFETY: `ctrl` is a valid, writable v4l2_control, the type this ioctl uses.
        retry(|| unsafe { vidioc_s_ctrl(self.raw(), &mut ctrl) }).map_err(|e| self.fail(op, e))
    }

    /// Sets one integer or menu control of `class` through `VIDIOC_S_EXT_CTRLS`; `op`
    /// names it in errors (one control per call, so an error names the control refused).
    pub fn set_ext_control(
        &self,
        class: u32,
        id: u32,
        value: i32,
        op: &'static str,
    ) -> Result<(), V4l2Error> {
        let mut ctrl = v4l2_ext_control {
            id,
            ..Default::default()
        };
        ctrl.value.value = value;
        let mut req = v4l2_ext_controls {
            which: class,
            count: 1,
            controls: &mut ctrl,
            ..Default::default()
        };
        // SAFETY: `req` is a valid v4l2_ext_controls whose `controls` points at one live
        // v4l2_ext_control (`ctrl`, on this stack frame for the whole call), and `count` is 1.
        retry(|| unsafe { vidioc_s_ext_ctrls(self.raw(), &mut req) }).map_err(|e| self.fail(op, e))
    }

    /// Waits until one of `events` is ready or `timeout` passes. Returns the ready events,
    /// empty on timeout.
    pub fn wait(&self, events: PollFlags, timeout: Duration) -> Result<PollFlags, V4l2Error> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            // Round up, so a sub-millisecond remainder waits instead of spinning.
            let ms = left.as_micros().div_ceil(1000);
            let t = PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX);
            let mut fds = [PollFd::new(self.fd.as_fd(), events)];
            match poll(&mut fds, t) {
                Ok(0) => return Ok(PollFlags::empty()),
                Ok(_) => return Ok(fds[0].revents().unwrap_or(PollFlags::empty())),
                Err(Errno::EINTR) if Instant::now() < deadline => continue,
                Err(Errno::EINTR) => return Ok(PollFlags::empty()),
                Err(e) => return Err(self.fail("poll", e)),
            }
        }
    }
}

impl AsFd for Device {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Repeats an ioctl interrupted by a signal, which V4L2 calls may be.
fn retry(mut call: impl FnMut() -> nix::Result<c_int>) -> Result<(), Errno> {
    loop {
        match call() {
            Ok(_) => return Ok(()),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// A `v4l2_buffer` together with the plane array that multi-planar queues need, so that
/// the pointer the kernel follows always points at memory this value owns.
#[derive(Debug, Clone)]
pub struct BufferDesc {
    raw: v4l2_buffer,
    planes: [v4l2_plane; VIDEO_MAX_PLANES],
}

/// One plane of a buffer as the driver describes it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlaneInfo {
    /// Bytes of payload, counted from the start of the plane (so including `data_offset`).
    pub bytesused: u32,
    pub length: u32,
    /// Where to mmap the plane.
    pub mem_offset: u32,
    /// Where the payload starts inside the plane.
    pub data_offset: u32,
}

impl BufferDesc {
    pub fn new(buf_type: u32, index: u32) -> Self {
        let mut raw = v4l2_buffer {
            index,
            type_: buf_type,
            memory: V4L2_MEMORY_MMAP,
            ..Default::default()
        };
        if is_multiplanar(buf_type) {
            raw.length = VIDEO_MAX_PLANES as u32;
        }
        Self {
            raw,
            planes: [v4l2_plane::default(); VIDEO_MAX_PLANES],
        }
    }

    /// The raw struct, with `m.planes` pointed at our array (the value may have moved
    /// since it was last handed to the kernel).
    fn for_kernel(&mut self) -> &mut v4l2_buffer {
        if is_multiplanar(self.raw.type_) {
            self.raw.m.planes = self.planes.as_mut_ptr();
        }
        &mut self.raw
    }

    pub fn is_multiplanar(&self) -> bool {
        is_multiplanar(self.raw.type_)
    }

    pub fn index(&self) -> u32 {
        self.raw.index
    }

    pub fn flags(&self) -> u32 {
        self.raw.flags
    }

    pub fn sequence(&self) -> u32 {
        self.raw.sequence
    }

    pub fn timestamp(&self) -> timeval {
        self.raw.timestamp
    }

    pub fn set_timestamp(&mut self, t: timeval) {
        self.raw.timestamp = t;
    }

    pub fn set_field(&mut self, field: u32) {
        self.raw.field = field;
    }

    /// How many planes the buffer has (the kernel fills this in on QUERYBUF/DQBUF).
    pub fn num_planes(&self) -> usize {
        if self.is_multiplanar() {
            (self.raw.length as usize).min(VIDEO_MAX_PLANES)
        } else {
            1
        }
    }

    pub fn plane(&self, plane: usize) -> Option<PlaneInfo> {
        if plane >= self.num_planes() {
            return None;
        }
        if self.is_multiplanar() {
            let p = self.planes.get(plane)?;
            Some(PlaneInfo {
                bytesused: p.bytesused,
                length: p.length,
                mem_offset: p.mem_offset(),
                data_offset: p.data_offset,
            })
        } else {
            Some(PlaneInfo {
                bytesused: self.raw.bytesused,
                length: self.raw.length,
                mem_offset: self.raw.offset(),
                data_offset: 0,
            })
        }
    }

    pub fn set_bytesused(&mut self, plane: usize, bytes: u32) {
        if self.is_multiplanar() {
            if let Some(p) = self.planes.get_mut(plane) {
                p.bytesused = bytes;
            }
        } else if plane == 0 {
            self.raw.bytesused = bytes;
        }
    }
}

pub fn is_multiplanar(buf_type: u32) -> bool {
    matches!(
        buf_type,
        V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE | V4L2_BUF_TYPE_VIDEO_OUTPUT_MPLANE
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4l2_device_caps_take_precedence_over_physical_caps() {
        let mut raw = v4l2_capability::default();
        raw.driver[..8].copy_from_slice(b"uvcvideo");
        raw.capabilities =
            V4L2_CAP_DEVICE_CAPS | V4L2_CAP_VIDEO_CAPTURE | V4L2_CAP_VIDEO_M2M | V4L2_CAP_STREAMING;
        raw.device_caps = V4L2_CAP_VIDEO_CAPTURE | V4L2_CAP_STREAMING;
        let caps = Capabilities::from_raw(&raw);
        assert_eq!(caps.driver, "uvcvideo");
        assert!(caps.has(V4L2_CAP_VIDEO_CAPTURE | V4L2_CAP_STREAMING));
        assert!(!caps.is_m2m());
        raw.capabilities &= !V4L2_CAP_DEVICE_CAPS;
        assert!(Capabilities::from_raw(&raw).is_m2m());
    }

    #[test]
    fn v4l2_buffer_desc_reads_the_right_plane_fields() {
        let mut single = BufferDesc::new(V4L2_BUF_TYPE_VIDEO_CAPTURE, 2);
        single.raw.bytesused = 100;
        single.raw.length = 4096;
        single.raw.m.offset = 8192;
        assert_eq!(single.num_planes(), 1);
        assert_eq!(
            single.plane(0),
            Some(PlaneInfo {
                bytesused: 100,
                length: 4096,
                mem_offset: 8192,
                data_offset: 0
            })
        );
        assert_eq!(single.plane(1), None);

        let mut multi = BufferDesc::new(V4L2_BUF_TYPE_VIDEO_OUTPUT_MPLANE, 0);
        assert_eq!(multi.num_planes(), VIDEO_MAX_PLANES);
        multi.raw.length = 1; // what the kernel writes back
        multi.planes[0].length = 1_382_400;
        multi.planes[0].m.mem_offset = 0x4000_0000;
        multi.set_bytesused(0, 1_382_400);
        let p = multi.plane(0).unwrap();
        assert_eq!((p.bytesused, p.mem_offset), (1_382_400, 0x4000_0000));
        assert_eq!(multi.plane(1), None);
        let ptr = multi.for_kernel().m;
        // SAFETY: reading back the pointer member we just wrote.
        assert_eq!(unsafe { ptr.planes }, multi.planes.as_mut_ptr());
    }
}
