//! Buffers shared with the driver through mmap, for the single-planar API (cameras) and the
//! multi-planar one (the Pi's codec), behind one interface.
//!
//! Everything the driver reports about a dequeued buffer (index, payload size, offset) is
//! checked against what was mapped before any slice is formed: a confused driver produces
//! an error, never an out-of-bounds read.

#![allow(unsafe_code)]

use std::ffi::c_void;
use std::num::NonZeroUsize;
use std::ptr::NonNull;

use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};

use super::device::{BufferDesc, Device};
use super::sys::timeval;
use super::V4l2Error;

/// Drivers never need more; the bound keeps a buggy REQBUFS answer from mapping gigabytes.
const MAX_BUFFERS: u32 = 32;

/// One plane of one buffer, mapped into our address space.
pub struct Mapping {
    ptr: NonNull<c_void>,
    len: usize,
}

// SAFETY: the mapping is owned by this value alone and is not tied to the thread that
// created it; moving it to another thread moves the only handle to it.
unsafe impl Send for Mapping {}

impl std::fmt::Debug for Mapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mapping").field("len", &self.len).finish()
    }
}

impl Mapping {
    pub fn new(dev: &Device, mem_offset: u32, len: u32) -> Result<Self, V4l2Error> {
        let size = NonZeroUsize::new(len as usize).ok_or_else(|| {
            V4l2Error::protocol(dev.path(), "QUERYBUF reported a plane of 0 bytes")
        })?;
        // Infallible where off_t is 64-bit, not on 32-bit ARM without large-file support.
        #[allow(clippy::unnecessary_fallible_conversions)]
        let offset = nix::libc::off_t::try_from(mem_offset).map_err(|_| {
            V4l2Error::protocol(
                dev.path(),
                format!("mmap offset {mem_offset:#x} out of range"),
            )
        })?;
        // SAFETY: a new shared mapping of the device at the offset the driver assigned to
        // this plane; `addr` is None, so no existing memory of ours is replaced.
        let ptr = unsafe {
            mmap(
                None,
                size,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                dev,
                offset,
            )
        }
        .map_err(|e| V4l2Error::sys(dev.path(), "mmap", e))?;
        Ok(Self {
            ptr,
            len: size.get(),
        })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` is valid for `len` bytes until Drop unmaps it, and the borrow ties
        // the slice to `self`. The driver writes only into buffers that are queued to it;
        // callers read only buffers they have dequeued.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().cast::<u8>(), self.len) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`; `&mut self` makes this the only slice of the mapping.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().cast::<u8>(), self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what mmap returned, and no slice of the mapping
        // can outlive `self`.
        if let Err(e) = unsafe { munmap(self.ptr, self.len) } {
            tracing::debug!("munmap of a V4L2 buffer failed: {e}");
        }
    }
}

/// Where the payload of one plane of a dequeued buffer lies, already checked against the
/// mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Payload {
    pub start: usize,
    pub end: usize,
}

/// A buffer the driver handed back.
#[derive(Debug, Clone)]
pub struct Dequeued {
    pub index: usize,
    pub flags: u32,
    pub timestamp: timeval,
    pub sequence: u32,
    pub planes: Vec<Payload>,
}

/// The mmap buffers of one queue.
#[derive(Debug)]
pub struct MmapQueue {
    buf_type: u32,
    buffers: Vec<Vec<Mapping>>,
}

impl MmapQueue {
    /// Requests `count` buffers and maps every plane of each.
    pub fn allocate(dev: &Device, buf_type: u32, count: u32) -> Result<Self, V4l2Error> {
        let granted = dev.request_buffers(buf_type, count)?;
        if granted == 0 {
            return Err(V4l2Error::unsupported(
                dev.path(),
                "VIDIOC_REQBUFS granted no buffers (out of buffer memory?)",
            ));
        }
        let mut buffers = Vec::new();
        for index in 0..granted.min(MAX_BUFFERS) {
            let mut desc = BufferDesc::new(buf_type, index);
            dev.query_buffer(&mut desc)?;
            let mut planes = Vec::new();
            for p in 0..desc.num_planes() {
                let info = desc.plane(p).ok_or_else(|| {
                    V4l2Error::protocol(dev.path(), format!("buffer {index} lost plane {p}"))
                })?;
                planes.push(Mapping::new(dev, info.mem_offset, info.length)?);
            }
            if planes.is_empty() {
                return Err(V4l2Error::protocol(
                    dev.path(),
                    format!("buffer {index} has no planes"),
                ));
            }
            buffers.push(planes);
        }
        Ok(Self { buf_type, buffers })
    }

    pub fn buf_type(&self) -> u32 {
        self.buf_type
    }

    pub fn len(&self) -> usize {
        self.buffers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buffers.is_empty()
    }

    pub fn plane(&self, index: usize, plane: usize) -> Option<&Mapping> {
        self.buffers.get(index)?.get(plane)
    }

    pub fn plane_mut(&mut self, index: usize, plane: usize) -> Option<&mut Mapping> {
        self.buffers.get_mut(index)?.get_mut(plane)
    }

    /// Gives buffer `index` to the driver: empty for capture, filled with `bytesused` bytes
    /// per plane (and tagged with `timestamp`) for output.
    pub fn queue(
        &self,
        dev: &Device,
        index: usize,
        bytesused: &[u32],
        timestamp: timeval,
    ) -> Result<(), V4l2Error> {
        let mapped = self.buffers.get(index).ok_or_else(|| {
            V4l2Error::protocol(dev.path(), format!("no buffer {index} to queue"))
        })?;
        let mut desc = BufferDesc::new(self.buf_type, index as u32);
        desc.set_field(super::sys::V4L2_FIELD_NONE);
        desc.set_timestamp(timestamp);
        for (p, m) in mapped.iter().enumerate() {
            let used = bytesused.get(p).copied().unwrap_or(0).min(m.len() as u32);
            desc.set_bytesused(p, used);
        }
        dev.queue_buffer(&mut desc)
    }

    /// Takes the next finished buffer, if any, with its payload bounds validated.
    pub fn dequeue(&self, dev: &Device) -> Result<Option<Dequeued>, V4l2Error> {
        let mut desc = BufferDesc::new(self.buf_type, 0);
        if !dev.dequeue_buffer(&mut desc)? {
            return Ok(None);
        }
        let index = desc.index() as usize;
        let mapped = self.buffers.get(index).ok_or_else(|| {
            V4l2Error::protocol(
                dev.path(),
                format!("DQBUF returned buffer {index}, only {} exist", self.len()),
            )
        })?;
        let mut planes = Vec::with_capacity(mapped.len());
        for (p, m) in mapped.iter().enumerate() {
            let info = desc.plane(p).unwrap_or_default();
            planes.push(payload_bounds(info.bytesused, info.data_offset, m.len()).ok_or_else(
                || {
                    V4l2Error::protocol(
                        dev.path(),
                        format!(
                            "buffer {index} plane {p}: {} bytes at offset {} do not fit its {} bytes",
                            info.bytesused,
                            info.data_offset,
                            m.len()
                        ),
                    )
                },
            )?);
        }
        Ok(Some(Dequeued {
            index,
            flags: desc.flags(),
            timestamp: desc.timestamp(),
            sequence: desc.sequence(),
            planes,
        }))
    }

    /// The payload of one plane of a dequeued buffer.
    pub fn payload(&self, d: &Dequeued, plane: usize) -> Option<&[u8]> {
        let bounds = d.planes.get(plane)?;
        self.plane(d.index, plane)?
            .as_slice()
            .get(bounds.start..bounds.end)
    }
}

/// The payload range of a plane: `bytesused` counts from the start of the plane, including
/// `data_offset` (the V4L2 rule); both must lie within the mapping.
pub fn payload_bounds(bytesused: u32, data_offset: u32, mapped: usize) -> Option<Payload> {
    let end = bytesused as usize;
    let start = data_offset as usize;
    (start <= end && end <= mapped).then_some(Payload { start, end })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4l2_payload_bounds_reject_what_does_not_fit() {
        assert_eq!(
            payload_bounds(100, 0, 4096),
            Some(Payload { start: 0, end: 100 })
        );
        assert_eq!(
            payload_bounds(100, 16, 4096),
            Some(Payload {
                start: 16,
                end: 100
            })
        );
        assert_eq!(
            payload_bounds(4096, 0, 4096),
            Some(Payload {
                start: 0,
                end: 4096
            })
        );
        assert_eq!(payload_bounds(4097, 0, 4096), None);
        assert_eq!(payload_bounds(10, 16, 4096), None);
        assert_eq!(
            payload_bounds(0, 0, 4096),
            Some(Payload { start: 0, end: 0 })
        );
    }
}
