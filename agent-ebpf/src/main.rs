//! cellwatch's kernel programs: the life of every TCP connection and every UDP flow on
//! the node, named by cell at both ends and aggregated per cell pair.
//!
//! - [`sockops`]: the connection's life (connect, established, close) from `sock_ops`.
//! - [`udp`]: every UDP datagram, per flow and cell pair, from the cgroup skb hooks;
//!   [`dns`]: DNS answers by response code, from the header of those datagrams.
//! - [`connect`]: cgroup `connect4`/`connect6`: the process behind each connect, and
//!   enforce mode's refusal of cross-cell connects.
//! - [`sweep`]: the live sweep: what open connections moved, into the counters.
//! - [`seed`] and [`destroy`]: connections older than the agent, from their seeding to
//!   their end.
//! - [`conn`]: a connection's state in its socket's storage, and the capacity.
//! - [`drain`]: drained cells: what opens into them counted apart, and `drain: refuse`.
//! - [`netns`]: each network namespace's source address, for enforce on unbound sockets.
//! - [`events`]: violation events through the ring buffer, rate-limited.
//! - [`service_addr`] and [`settle`]: connections to a Service address, counted under
//!   the backend the agent found in conntrack.
//! - [`close`]: what a connection's end adds to its pair.
//! - [`cells`]: address -> cell and the verdict of a (client cell, server cell, port).
//! - [`stats`]: per-CPU aggregation per cell pair, and claims.
//! - [`ctx`] and [`kread`]: every read of a context or of kernel memory.
//! - [`maps`]: every map, in one place; [`probe`]: the smallest programs of two optional
//!   kinds, to tell whether the kernel takes them.
#![no_std]
#![no_main]
#![deny(unsafe_code)]
// Atomic adds on map values: core exposes no 64-bit RMW atomics for the BPF target.
#![feature(core_intrinsics)]
#![expect(internal_features, reason = "atomic_xadd is the BPF atomic add")]

mod cells;
mod close;
mod conn;
mod connect;
mod ctx;
mod destroy;
mod dns;
mod drain;
mod events;
mod kread;
mod maps;
mod netns;
mod probe;
mod seed;
mod service_addr;
mod settle;
mod sockops;
mod stats;
mod sweep;
mod udp;

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
