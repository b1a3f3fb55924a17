//! cellwatch's kernel programs: the life of every TCP connection on the node, named by
//! cell at both ends and aggregated per cell pair.
//!
//! - [`sockops`]: the connection's life (connect, established, close) from `sock_ops`.
//! - [`connect`]: cgroup `connect4`/`connect6`: the process behind each connect, and
//!   enforce mode's refusal of cross-cell connects.
//! - [`netns`]: each network namespace's source address, for enforce on unbound sockets.
//! - [`events`]: violation events through the ring buffer, rate-limited.
//! - [`resets`]: the `tcp:tcp_receive_reset` tracepoint, telling refused from timed out.
//! - [`destroy`]: `tcp:tcp_destroy_sock`, the end of connections older than the agent.
//! - [`cells`]: address -> cell and the verdict of a (client cell, server cell, port).
//! - [`stats`]: per-CPU aggregation per cell pair.
//! - [`maps`]: every map, in one place.
#![no_std]
#![no_main]
#![deny(unsafe_code)]
// Atomic adds on map values: core exposes no 64-bit RMW atomics for the BPF target.
#![feature(core_intrinsics)]
#![expect(internal_features, reason = "atomic_xadd is the BPF atomic add")]

mod cells;
mod connect;
mod ctx;
mod destroy;
mod events;
mod maps;
mod netns;
mod resets;
mod sockops;
mod stats;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier proves there is no reachable panic; this is never called.
    loop {}
}

/// The kernel lets GPL-compatible programs use every helper cellwatch calls.
#[expect(unsafe_code, reason = "the loader finds the licence by its section and symbol name")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
