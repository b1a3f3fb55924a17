//! Indices into the small array maps the agent writes and the programs read (`SETTINGS`,
//! `LIVE`, `META`), and the values those entries take.

// Indices into the `SETTINGS` array map.
/// Which of the two cell-map sets (0 = A, 1 = B) the programs read. The agent fills the
/// other set completely, then flips this one word: no connection is ever judged against
/// a half-written map.
pub const SETTING_GENERATION: u32 = 0;
/// What the sweep writes besides counting: [`SWEEP_COUNT`], [`SWEEP_BRIEF`] or
/// [`SWEEP_WANTED`]. `/connections` runs the last two: the iterator over socket storage
/// restarts its bucket walk each time its output buffer fills, so one pass of full
/// records of every connection would cost the square of their number on a machine with
/// few CPUs (and so few buckets).
pub const SETTING_SWEEP_RECORDS: u32 = 1;
/// [`SETTING_SWEEP_RECORDS`]: nothing (the periodic sweep).
pub const SWEEP_COUNT: u32 = 0;
/// [`SETTING_SWEEP_RECORDS`]: a [`Brief`](crate::Brief) of every connection.
pub const SWEEP_BRIEF: u32 = 1;
/// [`SETTING_SWEEP_RECORDS`]: the full record of each connection whose cookie is in
/// `WANTED`.
pub const SWEEP_WANTED: u32 = 2;
/// The most connections one `/connections` request lists (its `limit`).
pub const LIST_MAX: u32 = 10_000;
/// `EXTERNAL_*` mode of set A; set B's is at the next index.
pub const SETTING_EXTERNAL: u32 = 2;
/// Violation events allowed per cell pair and direction per second, on each CPU (the
/// agent divides `--violation-event-rate` among the CPUs; 0 = none).
pub const SETTING_EVENT_RATE: u32 = 4;
/// Byte offset of `sock_cookie` in the `tcp:tcp_destroy_sock` record (0 = unknown).
pub const SETTING_DESTROY_COOKIE_OFFSET: u32 = 5;
/// 1 when set A's config is `mode: enforce`; set B's is at the next index.
pub const SETTING_ENFORCE: u32 = 6;
/// Most connections tracked at once (`--conn-capacity`).
pub const SETTING_CONN_CAPACITY: u32 = 8;
/// Byte offset of `skaddr` in the `tcp:tcp_destroy_sock` record (0 = unknown).
pub const SETTING_DESTROY_SKADDR_OFFSET: u32 = 9;
/// A listing's filter, applied by the brief pass: the cell (source or destination) a
/// connection must have, or [`LIST_ANY`].
pub const SETTING_LIST_CELL: u32 = 10;
/// A listing's filter, applied by the brief pass: the verdict
/// ([`Verdict`](crate::Verdict)) a connection must have, or [`LIST_ANY`].
pub const SETTING_LIST_VERDICT: u32 = 11;
/// A listing's filter, applied by the brief pass: which end [`SETTING_LIST_CELL`] names,
/// [`LIST_EITHER`], [`LIST_INTO`] or [`LIST_HOLDOUTS`].
pub const SETTING_LIST_INTO: u32 = 14;
/// [`SETTING_LIST_INTO`]: the cell is either end's.
pub const LIST_EITHER: u32 = 0;
/// [`SETTING_LIST_INTO`]: the cell is the server's (the connections into it).
pub const LIST_INTO: u32 = 1;
/// [`SETTING_LIST_INTO`]: every client side (egress) into any drained cell, whatever
/// [`SETTING_LIST_CELL`] says: a drain's holdouts.
pub const LIST_HOLDOUTS: u32 = 2;
/// The value of a listing's filter that every connection passes.
pub const LIST_ANY: u32 = u32::MAX;
/// 1 when set A's config has services with ports (so the programs look up the ported
/// services' tries at all); set B's is at the next index.
pub const SETTING_PORTED_SERVICES: u32 = 12;
/// Seconds of silence after which a UDP flow ends (`--udp-idle`).
pub const SETTING_UDP_IDLE: u32 = 15;
/// Length of the `SETTINGS` array.
pub const SETTINGS_LEN: u32 = 16;

// Values of `SETTING_EXTERNAL`: the policy for a peer in no cell (config `external:`).
/// Connections with such a peer are allowed.
pub const EXTERNAL_ALLOW: u32 = 0;
/// Connections with such a peer are violations (unless neither end is in a cell).
pub const EXTERNAL_VIOLATION: u32 = 1;
/// Connections with such a peer are not tracked.
pub const EXTERNAL_IGNORE: u32 = 2;

/// Index into the `LIVE` array: connections tracked now, across CPUs (the capacity check).
pub const LIVE_CONNS: u32 = 0;
/// Length of the `LIVE` array.
pub const LIVE_LEN: u32 = 1;

// Indices into the `META` array map: what a restarted agent checks before it adopts the
// pinned maps. Written by the agent last, once everything is attached.
/// [`LAYOUT_VERSION`](crate::LAYOUT_VERSION) of the pinned maps (0 = a start that never
/// finished).
pub const META_LAYOUT: u32 = 0;
/// Hash of the eBPF object whose programs the pinned links run.
pub const META_BUILD: u32 = 1;
/// Config reloads that succeeded, kept across restarts (written by the agent alone, so
/// `cellwatch_config_reloads_total` never goes back).
pub const META_RELOADS_SUCCESS: u32 = 2;
/// Config reloads that failed, kept the same way.
pub const META_RELOADS_ERROR: u32 = 3;
/// Length of the `META` array.
pub const META_LEN: u32 = 4;
