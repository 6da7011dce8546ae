//! The ladder's raw libav calls, which ffmpeg-next has no safe form for: libav's log
//! captured per thread (the probe reports an encoder's own words for why it will not open),
//! a decoded frame shared by reference (`av_frame_ref`; `Video::clone` copies the pixels),
//! and VA-API's device and frame pool with the upload of each picture. Every `unsafe`
//! block of the ladder is in this file.

use ffmpeg_next as ff;
use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::Once;

// libav's log callback takes the C `va_list`, whose Rust type differs by target: a
// pointer to the tag on x86-64, the structure itself on AArch64.
#[cfg(target_arch = "x86_64")]
type VaList = *mut ff::ffi::__va_list_tag;
#[cfg(not(target_arch = "x86_64"))]
type VaList = ff::ffi::va_list;

thread_local! {
    /// Lines libav logs on this thread while [`capture_log`] runs.
    static CAPTURED: RefCell<Option<Vec<String>>> = const { RefCell::new(None) };
}

/// Severity levels from libav/log.h.
const AV_LOG_ERROR: c_int = 16;
const AV_LOG_WARNING: c_int = 24;

unsafe extern "C" fn log_line(
    object: *mut c_void,
    level: c_int,
    format: *const c_char,
    args: VaList,
) {
    let capturing = CAPTURED.with(|c| c.borrow().is_some());
    if level > AV_LOG_WARNING || (!capturing && level > AV_LOG_ERROR) {
        return;
    }
    let mut line = [0 as c_char; 1024];
    // No "[h264_nvenc @ 0x…]" prefix: the report names the encoder already.
    let mut prefix: c_int = 0;
    // SAFETY: libav hands us its own format string and arguments; av_log_format_line2
    // writes at most `line.len()` bytes, NUL-terminated, into our buffer.
    let text = unsafe {
        ff::ffi::av_log_format_line2(
            object,
            level,
            format,
            args,
            line.as_mut_ptr(),
            line.len() as c_int,
            &mut prefix,
        );
        CStr::from_ptr(line.as_ptr())
            .to_string_lossy()
            .trim()
            .to_string()
    };
    if text.is_empty() {
        return;
    }
    let kept = CAPTURED.with(|c| match c.borrow_mut().as_mut() {
        Some(lines) => {
            if lines.len() < 32 {
                lines.push(text.clone());
            }
            true
        }
        None => false,
    });
    if !kept {
        tracing::warn!(target: "libav", "{text}");
    }
}

/// Routes libav's log through ours: errors to tracing, and on a thread inside
/// [`capture_log`], its warnings and errors to the caller. Once per process.
pub fn install_log() {
    static ONCE: Once = Once::new();
    // SAFETY: the callback is a plain function that lives as long as the process.
    ONCE.call_once(|| unsafe { ff::ffi::av_log_set_callback(Some(log_line)) });
}

/// Runs `work`, returning what libav logged on this thread meanwhile (warnings and errors).
pub fn capture_log<R>(work: impl FnOnce() -> R) -> (R, Vec<String>) {
    install_log();
    let outer = CAPTURED.with(|c| c.borrow_mut().replace(Vec::new()));
    let result = work();
    let lines = CAPTURED.with(|c| std::mem::replace(&mut *c.borrow_mut(), outer));
    (result, lines.unwrap_or_default())
}

/// A second handle on the same decoded picture: its buffers are reference-counted, not
/// copied, so each rung reads the one decode.
pub fn share(frame: &ff::frame::Video) -> Option<ff::frame::Video> {
    let mut copy = ff::frame::Video::empty();
    // SAFETY: both frames are valid AVFrames; av_frame_ref takes new references on the
    // source's buffers and copies its properties into the empty destination.
    let status = unsafe { ff::ffi::av_frame_ref(copy.as_mut_ptr(), frame.as_ptr()) };
    (status >= 0).then_some(copy)
}

/// A VA-API device with a pool of NV12 surfaces of one size (Intel's encoder wants its
/// pictures on the GPU).
pub struct Vaapi {
    device: *mut ff::ffi::AVBufferRef,
    frames: *mut ff::ffi::AVBufferRef,
}

// SAFETY: the buffers are reference-counted libav objects used by one thread at a time
// (the rung's worker that owns this value).
unsafe impl Send for Vaapi {}

impl Vaapi {
    /// Opens the first render node and a surface pool for `width` x `height`.
    pub fn open(width: u32, height: u32) -> Result<Vaapi, String> {
        let mut vaapi = Vaapi {
            device: std::ptr::null_mut(),
            frames: std::ptr::null_mut(),
        };
        // SAFETY: out-pointers to our fields; libav allocates and we unref in Drop.
        unsafe {
            let status = ff::ffi::av_hwdevice_ctx_create(
                &mut vaapi.device,
                ff::ffi::AVHWDeviceType::AV_HWDEVICE_TYPE_VAAPI,
                std::ptr::null(),
                std::ptr::null_mut(),
                0,
            );
            if status < 0 {
                return Err(format!("no VA-API device: {}", ff::Error::from(status)));
            }
            vaapi.frames = ff::ffi::av_hwframe_ctx_alloc(vaapi.device);
            if vaapi.frames.is_null() {
                return Err("VA-API: out of memory".into());
            }
            let context = (*vaapi.frames).data.cast::<ff::ffi::AVHWFramesContext>();
            (*context).format = ff::ffi::AVPixelFormat::AV_PIX_FMT_VAAPI;
            (*context).sw_format = ff::ffi::AVPixelFormat::AV_PIX_FMT_NV12;
            (*context).width = c_int::try_from(width).map_err(|_| "too wide")?;
            (*context).height = c_int::try_from(height).map_err(|_| "too tall")?;
            (*context).initial_pool_size = 20;
            let status = ff::ffi::av_hwframe_ctx_init(vaapi.frames);
            if status < 0 {
                return Err(format!(
                    "VA-API surfaces {width}x{height}: {}",
                    ff::Error::from(status)
                ));
            }
        }
        Ok(vaapi)
    }

    /// Gives the encoder its surface pool (before it is opened).
    pub fn attach(&self, encoder: &mut ff::codec::context::Context) -> Result<(), String> {
        // SAFETY: a valid codec context not yet opened; it takes its own reference.
        unsafe {
            let reference = ff::ffi::av_buffer_ref(self.frames);
            if reference.is_null() {
                return Err("VA-API: out of memory".into());
            }
            (*encoder.as_mut_ptr()).hw_frames_ctx = reference;
        }
        Ok(())
    }

    /// Copies an NV12 picture into a surface of the pool, with its timing and type.
    pub fn upload(&self, picture: &ff::frame::Video) -> Result<ff::frame::Video, String> {
        let mut surface = ff::frame::Video::empty();
        // SAFETY: valid frames; the surface comes from our initialised pool.
        unsafe {
            let status = ff::ffi::av_hwframe_get_buffer(self.frames, surface.as_mut_ptr(), 0);
            if status < 0 {
                return Err(format!("VA-API surface: {}", ff::Error::from(status)));
            }
            let status =
                ff::ffi::av_hwframe_transfer_data(surface.as_mut_ptr(), picture.as_ptr(), 0);
            if status < 0 {
                return Err(format!("VA-API upload: {}", ff::Error::from(status)));
            }
            let status = ff::ffi::av_frame_copy_props(surface.as_mut_ptr(), picture.as_ptr());
            if status < 0 {
                return Err(format!("VA-API upload: {}", ff::Error::from(status)));
            }
        }
        Ok(surface)
    }
}

impl Drop for Vaapi {
    fn drop(&mut self) {
        // SAFETY: our references (or null, which av_buffer_unref accepts).
        unsafe {
            ff::ffi::av_buffer_unref(&mut self.frames);
            ff::ffi::av_buffer_unref(&mut self.device);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libav_log_lines_are_captured_on_their_thread_only() {
        let _ = ff::init();
        let (found, lines) = capture_log(|| {
            // An encoder that cannot open here logs why.
            ff::encoder::find_by_name("libx264").is_some()
        });
        assert!(found);
        assert!(lines.is_empty(), "{lines:?}");
        let say = |text: &'static std::ffi::CStr| {
            // SAFETY: av_log with a literal format and no arguments.
            unsafe { ff::ffi::av_log(std::ptr::null_mut(), AV_LOG_ERROR, text.as_ptr()) }
        };
        let ((), lines) = capture_log(|| {
            say(c"the probe hears this\n");
            // Another thread's line goes to tracing, not into this capture.
            std::thread::spawn(move || say(c"not the probe's\n"))
                .join()
                .expect("thread");
        });
        assert_eq!(lines, ["the probe hears this"]);
    }
}
