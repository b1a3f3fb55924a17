//! Reads of kernel socket fields that no program context carries (`sk_err`, the socket
//! lock, `bytes_sent`, ...), at the byte offsets the agent found in the kernel's BTF
//! (`FIELDS`). Every `bpf_probe_read_kernel` sits here.
#![expect(unsafe_code, reason = "kernel memory is read with bpf_probe_read_kernel")]

use core::ffi::c_void;

use agent_common::{FieldOffsets, Progress, SOCK_DONE, SPAN_MAX};
use aya_ebpf::helpers::generated::bpf_probe_read_kernel;

use crate::maps::{FIELDS, SCRATCH};

/// A kernel socket (`struct sock`, which a `struct tcp_sock` begins with), by address.
#[derive(Clone, Copy)]
pub(crate) struct Sock {
    addr: u64,
    at: &'static FieldOffsets,
}

/// What a sweep or a close reads of a connection in one go.
pub(crate) struct Reading {
    pub(crate) progress: Progress,
    /// The peer's FIN arrived (`SOCK_DONE`).
    pub(crate) fin_received: bool,
    pub(crate) srtt_us: u32,
}

impl Sock {
    /// The socket behind a pointer the verifier types (a sock_ops or iterator socket).
    /// Its numeric address is copied out through the stack, because the verifier allows
    /// no arithmetic on such pointers; `None` while the agent has not written `FIELDS`.
    #[inline(always)]
    pub(crate) fn of(ptr: *const c_void) -> Option<Self> {
        let slot = ptr;
        let addr = read::<u64>((&raw const slot) as u64)?;
        Self::at(addr)
    }

    /// The socket at a numeric address (a tracepoint's `skaddr`).
    #[inline(always)]
    pub(crate) fn at(addr: u64) -> Option<Self> {
        if addr == 0 {
            return None;
        }
        let at = FIELDS.get(0)?;
        (at.bytes_acked != 0).then_some(Self { addr, at })
    }

    #[inline(always)]
    fn field<T: Copy + Default>(&self, offset: u32) -> Option<T> {
        // Offsets are below 64 KiB (struct tcp_sock is a few KiB); the mask tells the
        // verifier so.
        read::<T>(self.addr + u64::from(offset & 0xffff))
    }

    /// `sk_err`: the error the connection ended with (0 = none).
    #[inline(always)]
    pub(crate) fn err(&self) -> u32 {
        self.field::<u32>(self.at.sk_err).unwrap_or(0)
    }

    /// Whether someone works on the socket now (its spinlock held, or a process owns
    /// it): its counters may be mid-update.
    #[inline(always)]
    fn busy(&self) -> bool {
        let slock = self.field::<u32>(self.at.sk_lock_slock).unwrap_or(1);
        let owned = self.field::<u32>(self.at.sk_lock_owned).unwrap_or(1);
        slock != 0 || owned != 0
    }

    /// Payload bytes sent once (`bytes_sent - bytes_retrans`).
    #[inline(always)]
    pub(crate) fn sent_once(&self) -> Option<u64> {
        let sent = self.field::<u64>(self.at.bytes_sent)?;
        Some(sent.saturating_sub(self.field::<u64>(self.at.bytes_retrans)?))
    }

    /// Whether the peer's FIN arrived (`SOCK_DONE`).
    #[inline(always)]
    pub(crate) fn fin_received(&self) -> Option<bool> {
        Some(self.field::<u64>(self.at.sk_flags)? & SOCK_DONE != 0)
    }

    /// The socket's counters. Consistent only when the caller holds the socket lock (a
    /// `sock_ops` callback) or the socket is dead (its destroy).
    #[inline(always)]
    pub(crate) fn read(&self) -> Option<Reading> {
        let t = match self.span() {
            Some(span) => span.fields(self.at),
            None => self.fields()?,
        };
        Some(Reading {
            progress: Progress {
                acked: t.acked,
                sent_once: t.sent.saturating_sub(t.retrans_bytes),
                received: t.received,
                retrans: u64::from(t.total_retrans),
            },
            fin_received: self.fin_received()?,
            srtt_us: t.srtt >> 3,
        })
    }

    /// The `tcp_sock` fields, one read each.
    #[inline(always)]
    fn fields(&self) -> Option<TcpFields> {
        Some(TcpFields {
            acked: self.field::<u64>(self.at.bytes_acked)?,
            received: self.field::<u64>(self.at.bytes_received)?,
            sent: self.field::<u64>(self.at.bytes_sent)?,
            retrans_bytes: self.field::<u64>(self.at.bytes_retrans)?,
            total_retrans: self.field::<u32>(self.at.total_retrans)?,
            srtt: self.field::<u32>(self.at.srtt_us)?,
        })
    }

    /// The span of `tcp_sock` that holds those fields, copied into this CPU's scratch
    /// buffer in one read; `None` when the kernel's layout spreads them wider.
    #[inline(always)]
    fn span(&self) -> Option<Span> {
        let len = self.at.span_len;
        if len == 0 || len > SPAN_MAX {
            return None;
        }
        let buf = SCRATCH.get_ptr_mut(0)?;
        let src = self.addr + u64::from(self.at.span_start & 0xffff);
        // SAFETY: the destination is this CPU's scratch buffer of SPAN_MAX bytes and
        // `len` is at most that; the source is checked by the helper itself.
        let rc = unsafe { bpf_probe_read_kernel(buf.cast(), len, src as *const c_void) };
        (rc == 0).then_some(Span { buf: buf.cast(), start: self.at.span_start })
    }

    /// The socket's counters, read from outside its lock (a sweep): only when nobody
    /// worked on the socket from before the first read to after the last, so the byte
    /// count and the FIN flag belong together. `None` when it stayed busy.
    #[inline(always)]
    pub(crate) fn read_quiet(&self) -> Option<Reading> {
        for _ in 0..3 {
            if self.busy() {
                continue;
            }
            let r = self.read();
            if !self.busy() {
                return r;
            }
        }
        None
    }
}

/// The `tcp_sock` fields a reading needs, as the kernel holds them.
struct TcpFields {
    acked: u64,
    received: u64,
    sent: u64,
    retrans_bytes: u64,
    total_retrans: u32,
    srtt: u32,
}

/// A copy of part of a `tcp_sock`, from byte `start` on, in the scratch buffer.
struct Span {
    buf: *const u8,
    start: u32,
}

impl Span {
    #[inline(always)]
    fn fields(&self, at: &FieldOffsets) -> TcpFields {
        TcpFields {
            acked: self.get::<u64>(at.bytes_acked),
            received: self.get::<u64>(at.bytes_received),
            sent: self.get::<u64>(at.bytes_sent),
            retrans_bytes: self.get::<u64>(at.bytes_retrans),
            total_retrans: self.get::<u32>(at.total_retrans),
            srtt: self.get::<u32>(at.srtt_us),
        }
    }

    /// The `T` at struct offset `off`. The agent computed the span to hold every field;
    /// the mask keeps any offset inside the buffer (which has room for a `T` past
    /// SPAN_MAX - 1) and tells the verifier so.
    #[inline(always)]
    fn get<T: Copy>(&self, off: u32) -> T {
        let rel = u64::from(off.wrapping_sub(self.start)) & u64::from(SPAN_MAX - 1);
        // SAFETY: `rel + size_of::<T>()` is within the SPAN_MAX + 8 byte buffer, and the
        // fields are naturally aligned in the struct, as `start` (8-aligned) keeps them.
        #[expect(clippy::cast_possible_truncation, reason = "rel is below SPAN_MAX")]
        unsafe {
            self.buf.add(rel as usize).cast::<T>().read()
        }
    }
}

/// One probe read of a `T` at a kernel address.
#[inline(always)]
fn read<T: Copy + Default>(addr: u64) -> Option<T> {
    let mut v = T::default();
    #[expect(clippy::cast_possible_truncation, reason = "T is a u32 or a u64 here")]
    let size = size_of::<T>() as u32;
    // SAFETY: bpf_probe_read_kernel checks the source address itself and fails instead
    // of faulting; the destination is a local of exactly `size` bytes.
    let rc = unsafe { bpf_probe_read_kernel((&raw mut v).cast(), size, addr as *const c_void) };
    (rc == 0).then_some(v)
}
