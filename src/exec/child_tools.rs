//! The worker's host table (`skillgate_plugin_host_v1` in process mode): each request the
//! plugin makes during a call is one `ToolRequest` frame to the host on the worker's
//! channel, carrying the call's sequence number, and the function blocks reading the
//! host's `ToolReply` (bounded by `limits.tool_reply_bytes`; the host's deadline for the
//! call kills the worker if it never comes). A progress message is one `Progress` frame,
//! unanswered.
//!
//! Everything here runs in the worker, beside plugin code: it checks what the ABI promises
//! (a name of the tool alphabet, JSON arguments within the bound) so that an honest plugin's
//! mistake is an error result rather than a frame the host must treat as a violation; a
//! hostile plugin can bypass all of it and write the channel itself, which is why the host
//! checks every frame again (`super::tools`).

use std::ffi::c_char;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::ring::Nudger;
use crate::base::host_abi::{
    HOST_TABLE_SIZE, HOST_TABLE_VERSION, HostTableV1, ToolErrorKind, error_reply, free_reply,
    prepare_progress, prepare_request, reply_to_plugin,
};
use crate::base::protocol::{FRAME_OVERHEAD, Tag, read_frame, write_frame};

/// The worker's end of its channel.
pub(super) type Channel = std::io::BufReader<std::fs::File>;

/// What the worker's host table bounds (from `Init`).
#[derive(Debug, Clone, Copy)]
pub(super) struct WorkerCaps {
    pub(super) request_bytes: usize,
    pub(super) reply_bytes: usize,
    pub(super) progress_bytes: usize,
}

/// The smallest reply the worker reads: room for any error result the host builds.
const REPLY_FLOOR: usize = 64 * 1024;

/// The channel, shared by the serve loop and the table (one user at a time).
static CHANNEL: Mutex<Option<Channel>> = Mutex::new(None);
/// Whether a call is running, and its sequence number.
static IN_CALL: AtomicBool = AtomicBool::new(false);
static SEQ: AtomicU64 = AtomicU64::new(0);
/// The bounds from `Init`.
static CAPS: Mutex<Option<WorkerCaps>> = Mutex::new(None);
/// Draws the host's attention to the socket after a frame went out during a call: the host
/// waits on the call region, not on the socket.
static NUDGER: Mutex<Option<Nudger>> = Mutex::new(None);

/// The table handed to the plugin in a worker.
pub(super) static WORKER_TABLE: HostTableV1 = HostTableV1 {
    version: HOST_TABLE_VERSION,
    size: HOST_TABLE_SIZE,
    call_tool: worker_call_tool,
    progress: worker_progress,
    free_string: free_reply,
};

/// Puts the channel where the table reaches it, before the plugin is handed the table.
pub(super) fn install(channel: Channel, caps: WorkerCaps, nudger: Nudger) {
    *NUDGER
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(nudger);
    *CHANNEL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(channel);
    *CAPS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(caps);
}

/// Runs `f` on the channel; `None` if it is not installed.
pub(super) fn with_channel<T>(f: impl FnOnce(&mut Channel) -> T) -> Option<T> {
    let mut guard = CHANNEL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    guard.as_mut().map(f)
}

/// A call with sequence number `seq` starts: requests may go out.
pub(super) fn begin_call(seq: u64) {
    SEQ.store(seq, Ordering::Release);
    IN_CALL.store(true, Ordering::Release);
}

/// The call ended: a request from now on is refused on the plugin's side.
pub(super) fn end_call() {
    IN_CALL.store(false, Ordering::Release);
}

/// Tells the host a frame is waiting on the socket.
fn nudge() {
    if let Some(n) = NUDGER
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .as_ref()
    {
        n.nudge();
    }
}

fn caps() -> Option<WorkerCaps> {
    *CAPS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn no_call() -> Vec<u8> {
    error_reply(
        ToolErrorKind::NoCall,
        "no call of this plugin is running (the host table is usable only during a call)",
    )
}

/// Ends the worker at once: the channel is out of step and nothing more can be trusted.
#[allow(unsafe_code)]
fn out_of_step(code: i32) -> ! {
    // SAFETY: `_exit` ends the process without running any handler; nothing is unwound.
    unsafe { libc::_exit(code) }
}

/// Sends one request and reads its reply, holding the channel for both.
fn exchange(payload: &[u8], reply_cap: usize) -> Vec<u8> {
    let outcome = with_channel(|channel| {
        // Checked under the lock: the serve loop ends a call under it too.
        if !IN_CALL.load(Ordering::Acquire) {
            return no_call();
        }
        let seq = SEQ.load(Ordering::Acquire);
        if write_frame(channel.get_mut(), Tag::ToolRequest, seq, payload).is_err() {
            out_of_step(27);
        }
        nudge();
        // The host's own error results (a few hundred bytes) fit whatever the limit.
        let cap = reply_cap.max(REPLY_FLOOR).saturating_add(FRAME_OVERHEAD);
        match read_frame(channel, cap) {
            Ok(frame) if frame.tag == Tag::ToolReply && frame.seq == seq => frame.payload,
            _ => out_of_step(28),
        }
    });
    outcome.unwrap_or_else(no_call)
}

#[allow(unsafe_code)]
unsafe extern "C" fn worker_call_tool(name: *const c_char, args: *const c_char) -> *mut c_char {
    let reply = match caps() {
        Some(caps) if IN_CALL.load(Ordering::Acquire) => {
            // SAFETY: the extension ABI passes NUL-terminated strings (or NULL).
            match unsafe { prepare_request(name, args, caps.request_bytes) } {
                Ok(payload) => exchange(&payload, caps.reply_bytes),
                Err(refused) => refused,
            }
        }
        _ => no_call(),
    };
    reply_to_plugin(reply)
}

#[allow(unsafe_code)]
unsafe extern "C" fn worker_progress(json: *const c_char) {
    let Some(caps) = caps() else {
        return;
    };
    if !IN_CALL.load(Ordering::Acquire) {
        return;
    }
    // SAFETY: the extension ABI passes a NUL-terminated string (or NULL).
    let Some(payload) = (unsafe { prepare_progress(json, caps.progress_bytes) }) else {
        return;
    };
    let _ = with_channel(|channel| {
        if IN_CALL.load(Ordering::Acquire) {
            let seq = SEQ.load(Ordering::Acquire);
            if write_frame(channel.get_mut(), Tag::Progress, seq, &payload).is_err() {
                out_of_step(27);
            }
            nudge();
        }
    });
}
