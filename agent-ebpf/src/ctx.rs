//! Small accessors over the raw `bpf_sock_ops` context: every unsafe read sits here.
use aya_ebpf::{
    bindings::bpf_sock_ops, helpers::generated::bpf_get_socket_cookie, programs::SockOpsContext,
};

/// Read-only view of the fields cellwatch uses. Each is a plain context load that the
/// verifier rewrites into a read of the socket; none can fault.
pub(crate) struct Ops<'a>(&'a SockOpsContext);

impl<'a> Ops<'a> {
    pub(crate) fn new(ctx: &'a SockOpsContext) -> Self {
        Self(ctx)
    }

    /// The context itself, for helpers such as aya-log that take it whole.
    pub(crate) fn ctx(&self) -> &SockOpsContext {
        self.0
    }

    fn raw(&self) -> *const bpf_sock_ops {
        self.0.ops
    }

    pub(crate) fn op(&self) -> u32 {
        self.0.op()
    }

    pub(crate) fn arg(&self, n: usize) -> u32 {
        self.0.arg(n)
    }

    pub(crate) fn family(&self) -> u32 {
        self.0.family()
    }

    pub(crate) fn cookie(&self) -> u64 {
        // SAFETY: sock_ops contexts are valid arguments of bpf_get_socket_cookie.
        unsafe { bpf_get_socket_cookie(self.0.ops.cast()) }
    }

    pub(crate) fn set_cb_flags(&self, flags: u32) -> bool {
        let current = self.0.cb_flags();
        self.0.set_cb_flags((current | flags) as i32).is_ok()
    }

    /// Local address: IPv4 in the first 4 bytes, network order.
    pub(crate) fn local_addr(&self, v6: bool) -> [u8; 16] {
        // SAFETY: plain context field loads (see `load`).
        unsafe {
            if v6 {
                let p = &raw const (*self.raw()).local_ip6;
                words_to_bytes([
                    load(p.cast()),
                    load(p.cast::<u32>().add(1)),
                    load(p.cast::<u32>().add(2)),
                    load(p.cast::<u32>().add(3)),
                ])
            } else {
                v4_to_bytes(load(&raw const (*self.raw()).local_ip4))
            }
        }
    }

    pub(crate) fn remote_addr(&self, v6: bool) -> [u8; 16] {
        // SAFETY: plain context field loads (see `load`).
        unsafe {
            if v6 {
                let p = &raw const (*self.raw()).remote_ip6;
                words_to_bytes([
                    load(p.cast()),
                    load(p.cast::<u32>().add(1)),
                    load(p.cast::<u32>().add(2)),
                    load(p.cast::<u32>().add(3)),
                ])
            } else {
                v4_to_bytes(load(&raw const (*self.raw()).remote_ip4))
            }
        }
    }

    /// Local port, host order (the kernel stores it in host order here).
    pub(crate) fn local_port(&self) -> u16 {
        self.0.local_port() as u16
    }

    /// Remote port, host order. The context holds the network-order port in the upper
    /// 16 bits on little-endian machines.
    pub(crate) fn remote_port(&self) -> u16 {
        u16::from_be((self.0.remote_port() >> 16) as u16)
    }

    /// Smoothed RTT in microseconds (the kernel keeps it shifted left by 3).
    pub(crate) fn srtt_us(&self) -> u32 {
        // SAFETY: plain context field load.
        unsafe { (*self.raw()).srtt_us >> 3 }
    }

    pub(crate) fn bytes_acked(&self) -> u64 {
        // SAFETY: plain context field load.
        unsafe { (*self.raw()).bytes_acked }
    }

    pub(crate) fn bytes_received(&self) -> u64 {
        // SAFETY: plain context field load.
        unsafe { (*self.raw()).bytes_received }
    }

    /// Oldest unacknowledged and next sequence number to send.
    pub(crate) fn snd_una_nxt(&self) -> (u32, u32) {
        // SAFETY: plain context field loads.
        unsafe { ((*self.raw()).snd_una, (*self.raw()).snd_nxt) }
    }

    pub(crate) fn total_retrans(&self) -> u32 {
        // SAFETY: plain context field load.
        unsafe { (*self.raw()).total_retrans }
    }
}

/// One context field load. Volatile, so LLVM never merges two field reads into one load
/// through an adjusted context pointer (`ctx + (v6 ? 48 : 28)`), which the verifier
/// refuses ("dereference of modified ctx ptr"): every context access must be a constant
/// offset from the context itself.
///
/// # Safety
/// `p` must point to a field of the live `bpf_sock_ops` context.
#[inline(always)]
unsafe fn load(p: *const u32) -> u32 {
    // SAFETY: per the function's contract.
    unsafe { core::ptr::read_volatile(p) }
}

fn v4_to_bytes(ip: u32) -> [u8; 16] {
    let b = ip.to_ne_bytes();
    [b[0], b[1], b[2], b[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
}

fn words_to_bytes(w: [u32; 4]) -> [u8; 16] {
    let (a, b, c, d) =
        (w[0].to_ne_bytes(), w[1].to_ne_bytes(), w[2].to_ne_bytes(), w[3].to_ne_bytes());
    [a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3], c[0], c[1], c[2], c[3], d[0], d[1], d[2], d[3]]
}
