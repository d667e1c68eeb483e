//! The Raspberry Pi camera through libcamera.
//!
//! libcamera-rs objects borrow the `CameraManager`, are not `Send`, and call back on
//! libcamera's own thread, so the whole camera lives on a dedicated thread that owns the
//! manager and hands finished pictures to [`LibcameraSource`] over a channel. A panic inside
//! the bindings (they unwrap in places) ends that thread, which the source reports as an
//! error instead of taking the node down.
//!
//! Pictures are copied out of the camera's buffers (YUV420 with padded rows) into tightly
//! packed I420 before the buffer is handed back, so the camera never waits for the encoder.
//! When the consumer falls behind, the newest pictures are dropped rather than queued: a live
//! picture is worth more than a complete one. Capture times come from the sensor timestamp
//! (start of exposure), converted to UNIX time; see `camera_util`.
//!
//! This file is only built with the `libcamera` feature, inside the image: every call into
//! libcamera-rs 0.7 was checked against that crate's source and examples.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ::libcamera::camera::{Camera, CameraConfigurationStatus};
use ::libcamera::camera_manager::{CameraList, CameraManager};
use ::libcamera::control::{ControlEntry, ControlList};
use ::libcamera::controls;
use ::libcamera::framebuffer::{AsFrameBuffer, FrameMetadataStatus};
use ::libcamera::framebuffer_allocator::{FrameBuffer, FrameBufferAllocator};
use ::libcamera::framebuffer_map::MemoryMappedFrameBuffer;
use ::libcamera::geometry::Size;
use ::libcamera::pixel_format::PixelFormat;
use ::libcamera::properties;
use ::libcamera::request::{Request, RequestStatus, ReuseFlag};
use ::libcamera::stream::StreamRole;

use super::camera_util::{self, ClockOffset, FrameNumbering};
use super::{SourceError, VideoSource};
use crate::frame::{now_us, Captured, FrameRate, RawFrame, VideoFormat};

/// DRM_FORMAT_YUV420 ("YU12"), libcamera's `formats::YUV420`: planar Y, U, V. Built from
/// the fourcc rather than taken from the generated `formats` module, which varies with the
/// libcamera version found at build time.
const YUV420: PixelFormat = PixelFormat::new(u32::from_le_bytes(*b"YU12"), 0);

/// Pictures waiting for the consumer; more would only add latency.
const FRAME_QUEUE: usize = 2;
/// How long starting a camera may take (the first open after boot loads tuning files).
const OPEN_TIMEOUT: Duration = Duration::from_secs(15);
/// The first picture takes a while: sensor start-up and exposure convergence.
const FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the camera thread looks at the stop flag.
const POLL: Duration = Duration::from_millis(200);
/// How often the monotonic-to-UNIX offset is re-measured.
const REMEASURE: Duration = Duration::from_secs(1);

/// libcamera allows one `CameraManager` per process (a second one aborts), so probing and
/// capturing take turns: `true` while a capture session owns the manager.
static MANAGER_BUSY: Mutex<bool> = Mutex::new(false);

fn manager_state() -> MutexGuard<'static, bool> {
    MANAGER_BUSY.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The right to create a `CameraManager`, held by a capture session for its lifetime.
struct ManagerSlot;

impl ManagerSlot {
    fn claim() -> Option<Self> {
        let mut busy = manager_state();
        if *busy {
            None
        } else {
            *busy = true;
            Some(ManagerSlot)
        }
    }
}

impl Drop for ManagerSlot {
    fn drop(&mut self) {
        *manager_state() = false;
    }
}

/// Whether libcamera sees a camera, so that the box can pick the camera over the test
/// source without configuration. True while this process already captures from one.
pub fn camera_present() -> bool {
    // Probing holds the lock throughout, so that no capture session creates a second
    // manager meanwhile.
    let busy = manager_state();
    if *busy {
        return true;
    }
    let present = match CameraManager::new() {
        Ok(mgr) => !mgr.cameras().is_empty(),
        Err(e) => {
            tracing::debug!(error = %e, "libcamera did not start; assuming no camera");
            false
        }
    };
    drop(busy);
    present
}

/// A camera seen through libcamera, delivering I420 pictures.
#[derive(Debug)]
pub struct LibcameraSource {
    describe: String,
    format: VideoFormat,
    frames: Option<Receiver<Result<RawFrame, SourceError>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// What the camera thread reports once the camera runs.
struct Opened {
    describe: String,
    format: VideoFormat,
}

impl LibcameraSource {
    /// Opens `camera` (its libcamera id, its model such as `imx708`, or part of its id;
    /// `None` for the first camera) and starts capturing at the size and rate closest to
    /// `want` that the camera supports.
    pub fn open(camera: Option<&str>, want: VideoFormat) -> Result<Self, SourceError> {
        if want.width == 0
            || want.height == 0
            || !want.width.is_multiple_of(2)
            || !want.height.is_multiple_of(2)
        {
            return Err(SourceError::Format {
                what: "libcamera".into(),
                reason: format!(
                    "size {}x{} is not usable: YUV420 needs an even width and height",
                    want.width, want.height
                ),
            });
        }
        if want.rate.num == 0 || want.rate.den == 0 {
            return Err(SourceError::Format {
                what: "libcamera".into(),
                reason: "frame rate must be above zero".into(),
            });
        }
        let (init_tx, init_rx) = mpsc::channel();
        let (frame_tx, frame_rx) = mpsc::sync_channel(FRAME_QUEUE);
        let stop = Arc::new(AtomicBool::new(false));
        let name = camera.map(str::to_owned);
        let thread_stop = stop.clone();
        let thread = std::thread::Builder::new()
            .name("libcamera".into())
            .spawn(move || camera_thread(name, want, init_tx, frame_tx, thread_stop))
            .map_err(|e| SourceError::Open {
                what: "libcamera capture thread".into(),
                source: e,
            })?;
        match init_rx.recv_timeout(OPEN_TIMEOUT) {
            Ok(Ok(opened)) => Ok(Self {
                describe: opened.describe,
                format: opened.format,
                frames: Some(frame_rx),
                stop,
                thread: Some(thread),
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(RecvTimeoutError::Timeout) => {
                // Do not join: the thread is stuck inside libcamera. It sees the flag (or
                // the dropped channel) and cleans up if it ever comes back.
                stop.store(true, Ordering::Relaxed);
                Err(SourceError::Device {
                    what: "libcamera".into(),
                    reason: format!(
                        "the camera did not start within {} s",
                        OPEN_TIMEOUT.as_secs()
                    ),
                })
            }
            Err(RecvTimeoutError::Disconnected) => {
                let panicked = thread.join().is_err();
                Err(SourceError::Device {
                    what: "libcamera".into(),
                    reason: if panicked {
                        "the camera thread crashed while opening the camera (see the log)".into()
                    } else {
                        "the camera thread ended while opening the camera".into()
                    },
                })
            }
        }
    }
}

impl VideoSource for LibcameraSource {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn format(&self) -> VideoFormat {
        self.format
    }

    fn next_frame(&mut self) -> Result<Option<Captured>, SourceError> {
        let gone = |reason: &str| SourceError::Device {
            what: self.describe.clone(),
            reason: reason.into(),
        };
        let Some(frames) = &self.frames else {
            return Err(gone("the camera was closed after an error"));
        };
        // The camera thread reports stalls itself; this only guards against it hanging.
        match frames.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(frame)) => Ok(Some(Captured::Raw(frame))),
            Ok(Err(e)) => {
                self.frames = None;
                Err(e)
            }
            Err(RecvTimeoutError::Timeout) => Err(gone("no picture for 30 s")),
            Err(RecvTimeoutError::Disconnected) => {
                self.frames = None;
                Err(gone("the camera thread stopped (see the log)"))
            }
        }
    }
}

impl Drop for LibcameraSource {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Dropping the receiver first frees a camera thread blocked on sending an error.
        self.frames = None;
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::warn!("libcamera capture thread had crashed");
            }
        }
    }
}

fn camera_thread(
    name: Option<String>,
    want: VideoFormat,
    init_tx: Sender<Result<Opened, SourceError>>,
    frame_tx: SyncSender<Result<RawFrame, SourceError>>,
    stop: Arc<AtomicBool>,
) {
    let mut init = Some(init_tx);
    if let Err(e) = run_camera(name.as_deref(), want, &mut init, &frame_tx, &stop) {
        match init.take() {
            Some(init) => {
                let _ = init.send(Err(e));
            }
            None => {
                tracing::warn!(error = %e, "camera stopped");
                let _ = frame_tx.send(Err(e));
            }
        }
    }
}

fn model_of(cam: &Camera<'_>) -> Option<String> {
    cam.properties()
        .get::<properties::Model>()
        .ok()
        .map(|m| m.0)
}

/// Finds the camera the user asked for, or explains which ones there are.
fn pick_camera<'d>(
    cameras: &CameraList<'d>,
    name: Option<&str>,
) -> Result<Camera<'d>, SourceError> {
    let mut found: Vec<Camera<'d>> = (0..cameras.len()).filter_map(|i| cameras.get(i)).collect();
    if found.is_empty() {
        return Err(SourceError::Device {
            what: "libcamera".into(),
            reason: "no camera found: check the ribbon cable (contacts, orientation) and that \
                     config.txt has camera_auto_detect=1 or the sensor's dtoverlay"
                .into(),
        });
    }
    let index = match name {
        None => Some(0),
        // An exact id wins over a model name or id fragment that several cameras share.
        Some(name) => found.iter().position(|cam| cam.id() == name).or_else(|| {
            found.iter().position(|cam| {
                model_of(cam).is_some_and(|m| m.eq_ignore_ascii_case(name))
                    || cam.id().contains(name)
            })
        }),
    };
    match (index, name) {
        (Some(i), _) => Ok(found.swap_remove(i)),
        (None, name) => {
            let listing: Vec<String> = found
                .iter()
                .map(|cam| match model_of(cam) {
                    Some(model) => format!("{} ({model})", cam.id()),
                    None => cam.id().to_owned(),
                })
                .collect();
            Err(SourceError::Device {
                what: format!("camera '{}'", name.unwrap_or_default()),
                reason: format!("not found; available: {}", listing.join(", ")),
            })
        }
    }
}

fn run_camera(
    name: Option<&str>,
    want: VideoFormat,
    init: &mut Option<Sender<Result<Opened, SourceError>>>,
    frame_tx: &SyncSender<Result<RawFrame, SourceError>>,
    stop: &AtomicBool,
) -> Result<(), SourceError> {
    // Declaration order is teardown order in reverse: requests and buffers go before the
    // camera is released, the camera before the manager, the manager before the slot.
    let Some(_slot) = ManagerSlot::claim() else {
        return Err(SourceError::Device {
            what: "libcamera".into(),
            reason: "a camera is already open in this process; libcamera allows only one user"
                .into(),
        });
    };
    let mgr = CameraManager::new().map_err(|e| SourceError::Open {
        what: "libcamera".into(),
        source: e,
    })?;
    let cameras = mgr.cameras();
    let camera = pick_camera(&cameras, name)?;
    let id = camera.id().to_owned();
    let label = model_of(&camera).unwrap_or_else(|| id.clone());
    let what = format!("camera {label}");
    let mut cam = camera.acquire().map_err(|e| SourceError::Open {
        what: if e.kind() == std::io::ErrorKind::ResourceBusy {
            format!("{what} (in use by another program, e.g. rpicam-*?)")
        } else {
            what.clone()
        },
        source: e,
    })?;
    let device = |reason: String| SourceError::Device {
        what: what.clone(),
        reason,
    };

    let mut cfgs = cam
        .generate_configuration(&[StreamRole::VideoRecording])
        .ok_or_else(|| device("no video configuration offered".into()))?;
    {
        let mut stream_cfg = cfgs
            .get_mut(0)
            .ok_or_else(|| device("the video configuration has no stream".into()))?;
        stream_cfg.set_pixel_format(YUV420);
        stream_cfg.set_size(Size::new(want.width, want.height));
    }
    match cfgs.validate() {
        CameraConfigurationStatus::Valid => {}
        CameraConfigurationStatus::Adjusted => {
            tracing::info!(camera = %label, config = ?cfgs, "camera adjusted the configuration");
        }
        CameraConfigurationStatus::Invalid => {
            return Err(SourceError::Format {
                what: what.clone(),
                reason: format!(
                    "cannot capture YUV420 at {}x{}: libcamera rejected the configuration",
                    want.width, want.height
                ),
            });
        }
    }
    let (pixel_format, size, stride) = {
        let stream_cfg = cfgs
            .get(0)
            .ok_or_else(|| device("the video configuration has no stream".into()))?;
        (
            stream_cfg.get_pixel_format(),
            stream_cfg.get_size(),
            stream_cfg.get_stride(),
        )
    };
    if pixel_format != YUV420 {
        return Err(SourceError::Format {
            what: what.clone(),
            reason: format!("the camera cannot deliver YUV420 (it offers {pixel_format:?})"),
        });
    }
    if !size.width.is_multiple_of(2) || !size.height.is_multiple_of(2) || stride < size.width {
        return Err(SourceError::Format {
            what: what.clone(),
            reason: format!(
                "the camera chose an unusable layout: {}x{} with stride {stride}",
                size.width, size.height
            ),
        });
    }
    cam.configure(&mut cfgs)
        .map_err(|e| device(format!("configuring the stream failed: {e}")))?;
    let stream = cfgs
        .get(0)
        .and_then(|c| c.stream())
        .ok_or_else(|| device("the configured stream is missing".into()))?;

    let mut alloc = FrameBufferAllocator::new(&cam);
    let buffers = alloc
        .alloc(&stream)
        .map_err(|e| device(format!("allocating picture buffers failed: {e}")))?;
    let mut requests = Vec::with_capacity(buffers.len());
    for (i, buffer) in buffers.into_iter().enumerate() {
        let buffer = MemoryMappedFrameBuffer::new(buffer)
            .map_err(|e| device(format!("mapping a picture buffer failed: {e}")))?;
        let mut req = cam
            .create_request(Some(i as u64))
            .ok_or_else(|| device("creating a capture request failed".into()))?;
        req.add_buffer(&stream, buffer)
            .map_err(|e| device(format!("attaching a buffer to a request failed: {e}")))?;
        requests.push(req);
    }

    let (done_tx, done_rx) = mpsc::channel::<Request>();
    cam.on_request_completed(move |req| {
        // Runs on libcamera's thread: hand over and return, never block or panic here.
        let _ = done_tx.send(req);
    });

    let want_us = camera_util::frame_duration_us(want.rate);
    let limits = cam
        .controls()
        .find(<controls::FrameDurationLimits as ControlEntry>::ID)
        .ok()
        .and_then(|info| {
            Some((
                i64::try_from(info.min()).ok()?,
                i64::try_from(info.max()).ok()?,
            ))
        });
    let frame_us = camera_util::clamp_frame_duration_us(want_us, limits);
    let rate = if frame_us == want_us {
        want.rate
    } else {
        tracing::warn!(
            camera = %label,
            wanted_us = want_us,
            using_us = frame_us,
            "frame rate outside what the sensor mode supports; using the nearest"
        );
        FrameRate {
            num: 1_000_000,
            den: frame_us.clamp(1, u32::MAX as i64) as u32,
        }
    };
    let mut start_controls = ControlList::new();
    start_controls
        .set(controls::FrameDurationLimits([frame_us, frame_us]))
        .map_err(|e| device(format!("setting the frame rate failed: {e}")))?;

    let mut clock = camera_util::measure_monotonic_offset_us().map(ClockOffset::new);
    if clock.is_none() {
        tracing::warn!(
            "cannot read the monotonic clock; capture times will include delivery delay"
        );
    }

    if stop.load(Ordering::Relaxed) {
        return Ok(());
    }
    cam.start(Some(&*start_controls))
        .map_err(|e| device(format!("starting capture failed: {e}")))?;
    for req in requests {
        cam.queue_request(req)
            .map_err(|(_, e)| device(format!("queueing a capture request failed: {e}")))?;
    }

    let format = VideoFormat {
        width: size.width,
        height: size.height,
        rate,
    };
    let describe = format!("libcamera {label} {}x{}@{}", size.width, size.height, rate);
    tracing::info!(camera = %id, %describe, stride, "camera started");
    if let Some(init) = init.take() {
        if init.send(Ok(Opened { describe, format })).is_err() {
            // `open` gave up waiting; nobody wants the pictures.
            let _ = cam.stop();
            return Ok(());
        }
    }

    let stall_after = Duration::from_micros(frame_us.max(0) as u64 * 4).max(Duration::from_secs(2));
    let mut last_frame = Instant::now();
    let mut first = true;
    let mut last_measure = Instant::now();
    let mut numbering = FrameNumbering::default();
    let mut dropped: u64 = 0;
    let result = loop {
        if stop.load(Ordering::Relaxed) {
            break Ok(());
        }
        let mut req = match done_rx.recv_timeout(POLL) {
            Ok(req) => req,
            Err(RecvTimeoutError::Timeout) => {
                let limit = if first {
                    FIRST_FRAME_TIMEOUT
                } else {
                    stall_after
                };
                if last_frame.elapsed() > limit {
                    break Err(device(format!(
                        "no picture for {:.1} s: the sensor stopped (cable, power?)",
                        last_frame.elapsed().as_secs_f64()
                    )));
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => {
                break Err(device("libcamera stopped returning requests".into()));
            }
        };
        if req.status() != RequestStatus::Complete {
            // Cancelled: only happens while stopping.
            continue;
        }
        last_frame = Instant::now();
        first = false;

        if let Some(c) = clock.as_mut() {
            if last_measure.elapsed() >= REMEASURE {
                last_measure = Instant::now();
                if let Some(step) = camera_util::measure_monotonic_offset_us()
                    .and_then(|measured| c.remeasured(measured))
                {
                    tracing::info!(step_us = step, "wall clock moved; camera times follow");
                }
            }
        }

        let picture = match req.buffer::<MemoryMappedFrameBuffer<FrameBuffer>>(&stream) {
            None => Err(device("a completed request has no picture buffer".into())),
            Some(fb) => {
                let metadata = fb.metadata();
                let usable = metadata.as_ref().is_none_or(|m| {
                    matches!(
                        m.status(),
                        FrameMetadataStatus::Success | FrameMetadataStatus::Startup
                    )
                });
                if usable {
                    let sequence = metadata.as_ref().map(|m| m.sequence());
                    let sensor_ns = req
                        .metadata()
                        .get::<controls::SensorTimestamp>()
                        .ok()
                        .map(|t| t.0)
                        .or_else(|| metadata.as_ref().map(|m| m.timestamp() as i64));
                    let planes = fb.data();
                    camera_util::i420_from_planes(&planes, size.width, size.height, stride)
                        .map(|data| Some((sequence, sensor_ns, data)))
                        .map_err(|e| SourceError::Format {
                            what: what.clone(),
                            reason: format!("unexpected picture layout: {e}"),
                        })
                } else {
                    Ok(None)
                }
            }
        };
        // The picture is copied out: the buffer can go back to the camera at once.
        req.reuse(ReuseFlag::REUSE_BUFFERS);
        if let Err((_, e)) = cam.queue_request(req) {
            break Err(device(format!("re-queueing a capture request failed: {e}")));
        }
        let (sequence, sensor_ns, data) = match picture {
            Ok(Some(p)) => p,
            Ok(None) => continue,
            Err(e) => break Err(e),
        };

        let now = now_us();
        let capture_us = match sensor_ns {
            Some(ns) => {
                // Without a monotonic clock reading, anchor on the first picture's arrival:
                // late by the delivery delay, but steady from then on.
                let c = clock
                    .get_or_insert_with(|| ClockOffset::new(now as i64 - ns.div_euclid(1_000)));
                // A picture cannot be taken in the future; clamp a bad offset rather than
                // hand the encoder times that run ahead of the wall clock.
                c.to_unix_us(ns).min(now)
            }
            None => now,
        };
        let frame = RawFrame {
            number: numbering.number(sequence),
            capture_us,
            width: size.width,
            height: size.height,
            data,
        };
        match frame_tx.try_send(Ok(frame)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                dropped += 1;
                if dropped.is_power_of_two() {
                    tracing::debug!(dropped, "consumer is behind; dropping pictures");
                }
            }
            Err(TrySendError::Disconnected(_)) => break Ok(()),
        }
    };
    if let Err(e) = cam.stop() {
        tracing::debug!(error = %e, "stopping the camera");
    }
    // Completed and cancelled requests hold mapped buffers: release them before the camera.
    drop(done_rx);
    result
}
