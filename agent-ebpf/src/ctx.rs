//! Small accessors over the raw `bpf_sock_ops`, `bpf_sock_addr` and `__sk_buff` contexts:
//! every unsafe read of a context sits here.
#![expect(unsafe_code, reason = "context fields are raw pointer loads")]
use core::ffi::c_void;

use aya_ebpf::{
    EbpfContext,
    bindings::{bpf_sock_addr, bpf_sock_ops},
    helpers::generated::{
        bpf_get_netns_cookie, bpf_get_socket_cookie, bpf_seq_write, bpf_skb_load_bytes,
        bpf_skc_to_tcp_sock,
    },
    programs::{SkBuffContext, SockAddrContext, SockOpsContext, TracePointContext},
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

    /// `AF_INET` or `AF_INET6` (0 for anything that is not an address family).
    pub(crate) fn family(&self) -> u16 {
        u16::try_from(self.0.family()).unwrap_or(0)
    }

    pub(crate) fn cookie(&self) -> u64 {
        // SAFETY: sock_ops contexts are valid arguments of bpf_get_socket_cookie.
        unsafe { bpf_get_socket_cookie(self.0.ops.cast()) }
    }

    /// The socket, as the storage and probe-read helpers take it (`None` for a request
    /// socket, which has no storage).
    pub(crate) fn sk(&self) -> Option<*mut c_void> {
        // SAFETY: a plain context field load (`sk` is typed by the verifier).
        let sk: *mut c_void = unsafe { (*self.raw()).__bindgen_anon_2.sk.cast() };
        (!sk.is_null()).then_some(sk)
    }

    /// The socket's network namespace.
    pub(crate) fn netns_cookie(&self) -> u64 {
        // SAFETY: sock_ops contexts are valid arguments of bpf_get_netns_cookie.
        unsafe { bpf_get_netns_cookie(self.0.ops.cast()) }
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
                load_ip6(p.cast())
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
                load_ip6(p.cast())
            } else {
                v4_to_bytes(load(&raw const (*self.raw()).remote_ip4))
            }
        }
    }

    /// Local port, host order (the kernel stores it in host order here).
    #[expect(clippy::cast_possible_truncation, reason = "a port: the field's low 16 bits")]
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

    pub(crate) fn total_retrans(&self) -> u32 {
        // SAFETY: plain context field load.
        unsafe { (*self.raw()).total_retrans }
    }
}

/// A u64 field of a tracepoint record, at the byte offset the agent found in tracefs and
/// stored in `SETTINGS[setting]`; `None` when the offset is unknown (0) or the read fails.
pub(crate) fn record_u64(ctx: &TracePointContext, setting: u32) -> Option<u64> {
    let off = crate::maps::SETTINGS.get(setting).copied().filter(|o| *o != 0)?;
    // SAFETY: read_at is a bounds-checked probe read of the tracepoint record.
    unsafe { ctx.read_at::<u64>(off as usize) }.ok()
}

/// The `sock_cookie` of a tracepoint record (see [`record_u64`]).
pub(crate) fn record_cookie(ctx: &TracePointContext, setting: u32) -> Option<u64> {
    record_u64(ctx, setting)
}

/// Read-only view of a `connect()` as the cgroup `connect4`/`connect6` hooks see it.
pub(crate) struct Connect<'a>(&'a SockAddrContext);

impl<'a> Connect<'a> {
    pub(crate) fn new(ctx: &'a SockAddrContext) -> Self {
        Self(ctx)
    }

    fn raw(&self) -> *const bpf_sock_addr {
        self.0.sock_addr
    }

    /// SOCK_STREAM, SOCK_DGRAM, ...
    pub(crate) fn sock_type(&self) -> u32 {
        // SAFETY: plain context field load.
        unsafe { load(&raw const (*self.raw()).type_) }
    }

    pub(crate) fn cookie(&self) -> u64 {
        // SAFETY: sock_addr contexts are valid arguments of bpf_get_socket_cookie.
        unsafe { bpf_get_socket_cookie(self.0.as_ptr()) }
    }

    /// The connecting socket, as the storage helpers take it.
    pub(crate) fn sk(&self) -> Option<*mut c_void> {
        // SAFETY: a plain context field load (`sk` is typed by the verifier).
        let sk: *mut c_void = unsafe { (*self.raw()).__bindgen_anon_1.sk.cast() };
        (!sk.is_null()).then_some(sk)
    }

    pub(crate) fn netns_cookie(&self) -> u64 {
        // SAFETY: sock_addr contexts are valid arguments of bpf_get_netns_cookie.
        unsafe { bpf_get_netns_cookie(self.0.as_ptr()) }
    }

    /// The address connected to: IPv4 in the first 4 bytes for `connect4`.
    pub(crate) fn dst_addr(&self, v6: bool) -> [u8; 16] {
        // SAFETY: plain context field loads.
        unsafe {
            if v6 {
                let p = &raw const (*self.raw()).user_ip6;
                load_ip6(p.cast())
            } else {
                v4_to_bytes(load(&raw const (*self.raw()).user_ip4))
            }
        }
    }

    /// The port connected to, host order (the context holds it in network order in the
    /// low 16 bits).
    #[expect(clippy::cast_possible_truncation, reason = "a port: the field's low 16 bits")]
    pub(crate) fn dst_port(&self) -> u16 {
        // SAFETY: plain context field load.
        u16::from_be(unsafe { load(&raw const (*self.raw()).user_port) } as u16)
    }

    /// The source address when the socket was bound before `connect()`; `None` when the
    /// kernel will choose it (unbound, or bound to the wildcard address).
    pub(crate) fn bound_src(&self, v6: bool) -> Option<[u8; 16]> {
        // SAFETY: `sk` of a sock_addr context is a valid socket pointer for the run (the
        // verifier types it PTR_TO_SOCKET); its address fields are plain loads.
        let addr = unsafe {
            let sk = (*self.raw()).__bindgen_anon_1.sk;
            if sk.is_null() {
                return None;
            }
            if v6 {
                let p = &raw const (*sk).src_ip6;
                load_ip6(p.cast())
            } else {
                v4_to_bytes(load(&raw const (*sk).src_ip4))
            }
        };
        addr.iter().any(|b| *b != 0).then_some(addr)
    }
}

/// One context field load. Volatile, so LLVM never merges two field reads into one load
/// through an adjusted context pointer (`ctx + (v6 ? 48 : 28)`), which the verifier
/// refuses ("dereference of modified ctx ptr"): every context access must be a constant
/// offset from the context itself.
///
/// # Safety
/// `p` must point to a field of a live program context or of a socket it gives.
#[inline(always)]
unsafe fn load(p: *const u32) -> u32 {
    // SAFETY: per the function's contract.
    unsafe { core::ptr::read_volatile(p) }
}

/// An IPv6 address as four context words, each one load (see [`load`]).
///
/// # Safety
/// `p` must point to a four-word address field of a live program context or its socket.
#[inline(always)]
unsafe fn load_ip6(p: *const u32) -> [u8; 16] {
    // SAFETY: per the function's contract.
    unsafe { words_to_bytes([load(p), load(p.add(1)), load(p.add(2)), load(p.add(3))]) }
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

/// `struct bpf_iter_meta`: the seq file an iterator writes to.
#[repr(C)]
pub(crate) struct IterMeta {
    seq: *mut c_void,
    session_id: u64,
    seq_num: u64,
}

/// `struct bpf_iter__bpf_sk_storage_map`: one socket and its storage in the map.
#[repr(C)]
pub(crate) struct StorageIterCtx {
    meta: *mut IterMeta,
    map: *mut c_void,
    sk: *mut c_void,
    value: *mut c_void,
}

/// `struct bpf_iter__tcp`: one TCP socket of the iterator's network namespace.
#[repr(C)]
pub(crate) struct TcpIterCtx {
    meta: *mut IterMeta,
    sk_common: *mut c_void,
    uid: u32,
}

/// `struct bpf_iter__bpf_map_elem`: one element of a hash map.
#[repr(C)]
pub(crate) struct MapElemIterCtx {
    meta: *mut IterMeta,
    map: *mut c_void,
    key: *mut c_void,
    value: *mut c_void,
}

/// A step of a map-element iterator: the element's key and value; `None` for the final
/// call (no element).
#[inline(always)]
pub(crate) fn map_elem(ctx: *mut MapElemIterCtx) -> Option<(*mut c_void, *mut c_void)> {
    // SAFETY: `ctx` is the iterator's context; its fields are loads the verifier types.
    let (key, value) = unsafe { ((*ctx).key, (*ctx).value) };
    (!key.is_null() && !value.is_null()).then_some((key, value))
}

/// One step of an iterator: where it writes, and what it is at.
pub(crate) struct Iter {
    seq: *mut c_void,
    sk: *mut c_void,
    value: *mut c_void,
}

impl Iter {
    /// A step of the socket-storage iterator; `None` for the final call (no socket).
    #[inline(always)]
    pub(crate) fn storage(ctx: *mut StorageIterCtx) -> Option<Self> {
        // SAFETY: `ctx` is the iterator's context; its fields are loads the verifier types.
        let (meta, sk, value) = unsafe { ((*ctx).meta, (*ctx).sk, (*ctx).value) };
        if sk.is_null() || value.is_null() {
            return None;
        }
        // SAFETY: `meta` is a trusted pointer the kernel passes with every step.
        Some(Self { seq: unsafe { (*meta).seq }, sk, value })
    }

    /// A step of the TCP iterator, at a full TCP socket; `None` otherwise (a request or
    /// TIME_WAIT socket, or the final call).
    #[inline(always)]
    pub(crate) fn tcp(ctx: *mut TcpIterCtx) -> Option<Self> {
        // SAFETY: as in `storage`.
        let (meta, common) = unsafe { ((*ctx).meta, (*ctx).sk_common) };
        if common.is_null() {
            return None;
        }
        // SAFETY: `common` is a socket the verifier typed; the helper returns null for
        // anything but a full TCP socket.
        let sk: *mut c_void = unsafe { bpf_skc_to_tcp_sock(common) }.cast();
        if sk.is_null() {
            return None;
        }
        // SAFETY: as in `storage`.
        Some(Self { seq: unsafe { (*meta).seq }, sk, value: core::ptr::null_mut() })
    }

    /// The socket (a typed pointer the storage helpers take).
    pub(crate) fn sk(&self) -> *mut c_void {
        self.sk
    }

    /// The storage value (socket-storage iterator only).
    pub(crate) fn value(&self) -> *mut c_void {
        self.value
    }

    pub(crate) fn cookie(&self) -> u64 {
        // SAFETY: tracing programs may ask a typed socket for its cookie.
        unsafe { bpf_get_socket_cookie(self.sk) }
    }

    /// Appends `record` to the iterator's output.
    #[inline(always)]
    pub(crate) fn write<T>(&self, record: &T) {
        // Records are a few hundred bytes.
        let len = u32::try_from(size_of::<T>()).unwrap_or(0);
        // SAFETY: `seq` is the iterator's seq file; `record` is `len` readable bytes.
        let _ = unsafe { bpf_seq_write(self.seq.cast(), (&raw const *record).cast(), len) };
    }
}

/// A packet at a cgroup skb hook, its network header first (`data` points at it).
pub(crate) struct Skb<'a>(&'a SkBuffContext);

impl<'a> Skb<'a> {
    pub(crate) fn new(ctx: &'a SkBuffContext) -> Self {
        Self(ctx)
    }

    /// Bytes from the network header on (the IP packet, or a GSO/GRO train of them).
    pub(crate) fn len(&self) -> u32 {
        self.0.len()
    }

    /// Datagrams the packet carries: more than one only for a GSO or GRO train.
    pub(crate) fn segments(&self) -> u32 {
        // SAFETY: a plain context field load.
        let segs = unsafe { (*self.0.skb.skb).gso_segs };
        if segs == 0 { 1 } else { segs }
    }

    /// `N` bytes from `off`, copied (`bpf_skb_load_bytes`), wherever they lie; `None`
    /// when the packet is shorter. The length is the constant `N`, as the verifier wants.
    #[inline(always)]
    pub(crate) fn bytes<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        let mut b = [0u8; N];
        #[expect(clippy::cast_possible_truncation, reason = "offsets and N are small")]
        // SAFETY: `b` is N writable bytes; the helper checks the packet's bounds.
        let ret = unsafe {
            bpf_skb_load_bytes(self.0.skb.skb.cast(), off as u32, b.as_mut_ptr().cast(), N as u32)
        };
        (ret == 0).then_some(b)
    }
}
