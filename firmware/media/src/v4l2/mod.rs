//! Video4Linux2 spoken directly: the kernel structures and ioctls, an open device node,
//! memory-mapped buffer queues, and the two kinds of device cambox drives with them, a
//! camera ([`capture`]) and the hardware H.264 encoder ([`m2m`]).
//!
//! Written by hand instead of using a binding crate so that the image builds without
//! kernel headers and so that exactly the calls cambox makes are visible and reviewable.
//! Every device interaction sits behind [`CaptureDevice`] or [`M2mDevice`], which lets the
//! logic above them (sources and encoders) be tested with simulated devices on machines
//! that have no camera and no encoder.

pub mod buffers;
pub mod capture;
pub mod clock;
pub mod device;
pub mod m2m;
pub mod pixfmt;
#[cfg(test)]
pub(crate) mod sim;
pub mod sys;

pub use capture::{CaptureBuffer, CaptureDevice, CaptureHardware, CaptureSetup};
pub use device::{Capabilities, Device};
pub use m2m::{EncodedBuffer, M2mConfig, M2mDevice, M2mHardware, M2mSetup};
pub use pixfmt::{ConvertError, PixelFormat, PixelLayout};

use nix::errno::Errno;

/// Why talking to a V4L2 device failed. Always names the device and what was being done,
/// because a Pi may have a dozen `/dev/video*` nodes and the user must know which one.
#[derive(Debug)]
pub enum V4l2Error {
    /// A system call (open, ioctl, mmap, poll) failed.
    Sys {
        device: String,
        op: &'static str,
        errno: Errno,
    },
    /// The device works but cannot do what cambox needs.
    Unsupported { device: String, reason: String },
    /// The device answered something the API does not allow (a buffer index it never
    /// handed out, a payload longer than its buffer): a driver bug, reported, not trusted.
    Protocol { device: String, reason: String },
    /// The device stopped doing its job: reported an error while streaming, or let a
    /// deadline pass.
    Failed { device: String, reason: String },
}

impl V4l2Error {
    pub fn sys(device: &str, op: &'static str, errno: Errno) -> Self {
        Self::Sys {
            device: device.into(),
            op,
            errno,
        }
    }

    pub fn unsupported(device: &str, reason: impl Into<String>) -> Self {
        Self::Unsupported {
            device: device.into(),
            reason: reason.into(),
        }
    }

    pub fn protocol(device: &str, reason: impl Into<String>) -> Self {
        Self::Protocol {
            device: device.into(),
            reason: reason.into(),
        }
    }

    pub fn failed(device: &str, reason: impl Into<String>) -> Self {
        Self::Failed {
            device: device.into(),
            reason: reason.into(),
        }
    }

    pub fn device(&self) -> &str {
        match self {
            Self::Sys { device, .. }
            | Self::Unsupported { device, .. }
            | Self::Protocol { device, .. }
            | Self::Failed { device, .. } => device,
        }
    }

    pub fn errno(&self) -> Option<Errno> {
        match self {
            Self::Sys { errno, .. } => Some(*errno),
            _ => None,
        }
    }

    /// The message without the device name, for error types that carry the name already.
    pub fn detail(&self) -> String {
        match self {
            Self::Sys { op, errno, .. } => format!("{op} failed: {errno}{}", hint(*errno)),
            Self::Unsupported { reason, .. } | Self::Failed { reason, .. } => reason.clone(),
            Self::Protocol { reason, .. } => format!("driver misbehaved: {reason}"),
        }
    }
}

impl std::fmt::Display for V4l2Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.device(), self.detail())
    }
}

impl std::error::Error for V4l2Error {}

/// What the user can do about the errors that have a usual cause.
fn hint(errno: Errno) -> &'static str {
    match errno {
        Errno::EACCES | Errno::EPERM => " (add the user to the 'video' group, or run as root)",
        Errno::EBUSY => " (the device is in use: stop the other program that has it open)",
        Errno::ENOENT | Errno::ENODEV | Errno::ENXIO => {
            " (is it plugged in? `ls /dev/video*` shows what exists)"
        }
        Errno::ENOTTY => " (not a V4L2 video device, or it does not support this call)",
        Errno::ENOMEM => {
            " (out of buffer memory: lower the resolution or raise the CMA size in config.txt)"
        }
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4l2_error_names_device_call_and_errno() {
        let e = V4l2Error::sys("/dev/video11", "VIDIOC_S_FMT", Errno::EINVAL);
        assert_eq!(
            e.to_string(),
            "/dev/video11: VIDIOC_S_FMT failed: EINVAL: Invalid argument"
        );
        let e = V4l2Error::sys("/dev/video0", "open", Errno::EBUSY);
        assert!(e.to_string().contains("in use"), "{e}");
        assert_eq!(e.errno(), Some(Errno::EBUSY));
    }
}
