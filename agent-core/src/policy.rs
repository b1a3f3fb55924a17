//! From a validated config to what the kernel needs: prefix -> cell id entries, cell
//! flags and allow-rule keys. Also the same verdict in plain Rust, the reference the
//! kernel's decision is tested against.

use std::{net::IpAddr, time::SystemTime};

use agent_common::{
    CELL_FLAG_DRAIN_REFUSE, CELL_FLAG_DRAINED, CELL_FLAG_ENFORCE, CELL_FLAG_GLOBAL, CELL_IGNORED,
    CellInfo, EXTERNAL_ALLOW, EXTERNAL_IGNORE, EXTERNAL_VIOLATION, PolicyKey, Verdict, cell_entry,
};
use ipnet::IpNet;

use crate::{
    config::{Config, External, Mode, Protocol, canonical},
    ids::{CellIds, IdsExhausted},
};

/// A config whose compiled form does not fit one of the kernel's maps: it is refused
/// before anything is written (by `check-config`, at start and on reload), so a write
/// never fails part-way for want of room.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the config needs {needed} entries in the kernel map {map} ({what}), which holds {capacity}"
)]
pub struct TooBig {
    pub map: &'static str,
    pub what: &'static str,
    pub needed: usize,
    pub capacity: u32,
}

impl TooBig {
    /// As a config problem of the file `path` (a whole-file one, so at 1:1).
    pub fn located(&self, path: &str) -> crate::config::ConfigError {
        crate::config::ConfigError::Invalid {
            path: path.to_owned(),
            problems: vec![crate::config::Problem {
                line: 1,
                column: 1,
                message: self.to_string(),
            }],
        }
    }
}

impl Compiled {
    /// Checks every map the config fills against its capacity.
    pub fn fits(&self) -> Result<(), TooBig> {
        use agent_common::{
            CELLS_V4_CAPACITY, CELLS_V6_CAPACITY, POLICY_CAPACITY, SERVICES_CAPACITY,
        };
        let v4 = |n: &IpNet| matches!(n, IpNet::V4(_));
        let tries = [
            (
                "CELLS_V4_A/_B",
                "IPv4 prefixes of cells, ignored ranges, service_cidrs and services",
                self.prefixes.iter().filter(|(n, _)| v4(n)).count(),
                CELLS_V4_CAPACITY,
            ),
            (
                "CELLS_V6_A/_B",
                "IPv6 prefixes of cells, ignored ranges, service_cidrs and services",
                self.prefixes.iter().filter(|(n, _)| !v4(n)).count(),
                CELLS_V6_CAPACITY,
            ),
            (
                "SERVICES_V4_A/_B",
                "IPv4 prefixes times ports of the services with ports",
                self.ported.iter().filter(|(n, ..)| v4(n)).count(),
                SERVICES_CAPACITY,
            ),
            (
                "SERVICES_V6_A/_B",
                "IPv6 prefixes times ports of the services with ports",
                self.ported.iter().filter(|(n, ..)| !v4(n)).count(),
                SERVICES_CAPACITY,
            ),
            (
                "SERVICES_UDP_V4_A/_B",
                "IPv4 prefixes times ports of the UDP services",
                self.ported_udp.iter().filter(|(n, ..)| v4(n)).count(),
                SERVICES_CAPACITY,
            ),
            (
                "SERVICES_UDP_V6_A/_B",
                "IPv6 prefixes times ports of the UDP services",
                self.ported_udp.iter().filter(|(n, ..)| !v4(n)).count(),
                SERVICES_CAPACITY,
            ),
            ("POLICY_A/_B", "allow rules times their ports", self.allow.len(), POLICY_CAPACITY),
        ];
        for (map, what, needed, capacity) in tries {
            if needed > capacity as usize {
                return Err(TooBig { map, what, needed, capacity });
            }
        }
        Ok(())
    }
}

/// The contents of the kernel's cell and policy maps for one config.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Compiled {
    /// Prefix -> cell-trie entry: the cell id, with the service id of a service without
    /// ports whose prefix it is (`agent_common::cell_entry`); ignored ranges as
    /// [`CELL_IGNORED`].
    pub prefixes: Vec<(IpNet, u32)>,
    /// TCP services with ports: (prefix, port, service id), for the ported services' tries.
    pub ported: Vec<(IpNet, u16, u16)>,
    /// UDP services (always with ports), the same way, for the UDP services' tries.
    pub ported_udp: Vec<(IpNet, u16, u16)>,
    /// Every service: id, name and the id of the cell it lies in.
    pub services: Vec<(u16, String, u32)>,
    /// Per cell id, its flags.
    pub info: Vec<(u32, CellInfo)>,
    /// Allow-rule keys (port 0 = every port), each with its deadline (`None`: none).
    pub allow: Vec<(PolicyKey, Option<SystemTime>)>,
    /// `SETTING_EXTERNAL` value.
    pub external: u32,
    /// `SETTING_ENFORCE` value: 1 under `mode: enforce`.
    pub enforce: u32,
    /// Every cell id handed out so far, with its name (kept in the kernel so a
    /// restarted agent labels the counters as this one did).
    pub names: Vec<(u32, String)>,
    /// Each drained cell's id, and the drain's start if the config gives it. Not in the
    /// kernel's maps (only the cells' flags are): read back, it is empty.
    pub drains: Vec<(u32, Option<SystemTime>)>,
    /// The temporary allow rules, for their deadlines' gauge. Not in the kernel's maps.
    pub temporary: Vec<Temporary>,
}

/// A temporary allow rule as the metrics name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Temporary {
    pub from: String,
    pub to: String,
    pub reason: String,
    pub until: SystemTime,
}

pub fn compile(cfg: &Config, ids: &mut CellIds) -> Result<Compiled, IdsExhausted> {
    let mut out = Compiled {
        external: match cfg.external {
            External::Allow => EXTERNAL_ALLOW,
            External::Violation => EXTERNAL_VIOLATION,
            External::Ignore => EXTERNAL_IGNORE,
        },
        enforce: u32::from(cfg.mode == Mode::Enforce),
        ..Compiled::default()
    };
    for cell in &cfg.cells {
        let id = ids.id(&cell.name)?;
        let mut flags = if cell.global { CELL_FLAG_GLOBAL } else { 0 };
        if enforced(cfg, &cell.name) {
            flags |= CELL_FLAG_ENFORCE;
        }
        if let Some(d) = &cell.drain {
            out.drains.push((id, d.since));
            flags |= CELL_FLAG_DRAINED;
            if d.refuse && cfg.mode == Mode::Enforce {
                flags |= CELL_FLAG_DRAIN_REFUSE;
            }
        }
        out.info.push((id, CellInfo { flags, _pad: 0 }));
        out.prefixes.extend(cell.cidrs.iter().map(|n| (*n, id)));
    }
    out.prefixes.extend(cfg.ignore_cidrs.iter().map(|n| (*n, CELL_IGNORED)));
    out.prefixes.extend(cfg.service_cidrs.iter().map(|n| (*n, agent_common::CELL_SERVICE_ADDR)));
    for svc in &cfg.services {
        let (id, cell) = (ids.service_id(&svc.name)?, ids.id(&svc.cell)?);
        out.services.push((id, svc.name.clone(), cell));
        for net in &svc.cidrs {
            if svc.protocol == Protocol::Udp {
                out.ported_udp.extend(svc.ports.iter().map(|port| (*net, *port, id)));
            } else if svc.ports.is_empty() {
                // Its prefix in the cell trie, naming the service (a prefix equal to a
                // cell's own is that entry).
                let entry = cell_entry(cell, id);
                match out.prefixes.iter_mut().find(|(n, _)| n == net) {
                    Some(e) => e.1 = entry,
                    None => out.prefixes.push((*net, entry)),
                }
                // The cell's own more specific prefixes inside it win the longest-prefix
                // match, so they name the service too (no other cell's prefix, and no
                // other service without ports, lies inside it: the config is validated).
                for e in out.prefixes.iter_mut().filter(|(n, _)| n != net && net.contains(n)) {
                    if agent_common::entry_cell(e.1) == cell
                        && agent_common::entry_service(e.1) == agent_common::NO_SERVICE
                    {
                        e.1 = entry;
                    }
                }
            } else {
                out.ported.extend(svc.ports.iter().map(|port| (*net, *port, id)));
            }
        }
    }
    for rule in &cfg.allow {
        let (src_cell, dst_cell) = (ids.id(&rule.from)?, ids.id(&rule.to)?);
        let until = rule.until.as_ref().map(|d| d.at);
        let key = |port| (PolicyKey { src_cell, dst_cell, port, _pad: [0; 6] }, until);
        if rule.ports.is_empty() {
            out.allow.push(key(0));
        } else {
            out.allow.extend(rule.ports.iter().map(|p| key(*p)));
        }
    }
    // Two rules for one flow: the one that allows longer wins (no deadline is longest).
    out.allow.sort_unstable_by_key(|(k, until)| (*k, std::cmp::Reverse((until.is_none(), *until))));
    out.allow.dedup_by_key(|(k, _)| *k);
    out.temporary = temporary(cfg, ids, &out.allow)?;
    out.names = ids.all();
    Ok(out)
}

/// The temporary rules that allow something a rule with no deadline does not: a rule
/// whose every flow a permanent one covers expires without effect, and has no deadline
/// to show. `allow` is the compiled, deduplicated allow list.
fn temporary(
    cfg: &Config,
    ids: &mut CellIds,
    allow: &[(PolicyKey, Option<SystemTime>)],
) -> Result<Vec<Temporary>, IdsExhausted> {
    let mut out = Vec::new();
    for rule in &cfg.allow {
        let Some(until) = rule.until.as_ref().map(|d| d.at) else { continue };
        let (src_cell, dst_cell) = (ids.id(&rule.from)?, ids.id(&rule.to)?);
        let forever = |port| {
            let key = PolicyKey { src_cell, dst_cell, port, _pad: [0; 6] };
            allow.binary_search_by_key(&key, |(k, _)| *k).is_ok_and(|i| allow[i].1.is_none())
        };
        let ports: &[u16] = if rule.ports.is_empty() { &[0] } else { &rule.ports };
        if ports.iter().all(|p| forever(*p) || forever(0)) {
            continue;
        }
        let (from, to) = (rule.from.clone(), rule.to.clone());
        out.push(Temporary { from, to, reason: rule.reason.clone(), until });
    }
    Ok(out)
}

/// One deadline per label set (`from`, `to`, `reason`) of the temporary rules, as their
/// gauge shows it at `now`: the next one still ahead, or the last one past when all are.
pub fn expiry_gauges(temporary: &[Temporary], now: SystemTime) -> Vec<Temporary> {
    let mut out: Vec<Temporary> = Vec::new();
    for t in temporary {
        let same =
            out.iter_mut().find(|o| (&o.from, &o.to, &o.reason) == (&t.from, &t.to, &t.reason));
        match same {
            None => out.push(t.clone()),
            Some(o) => {
                let better = match (o.until > now, t.until > now) {
                    (true, true) => t.until < o.until,
                    (false, true) => true,
                    (true, false) => false,
                    (false, false) => t.until > o.until,
                };
                if better {
                    o.until = t.until;
                }
            }
        }
    }
    out
}

/// Whether enforce mode refuses cross-cell connects made from cell `name`.
pub fn enforced(cfg: &Config, name: &str) -> bool {
    cfg.mode == Mode::Enforce
        && cfg.enforce_cells.as_ref().is_none_or(|cells| cells.iter().any(|c| c == name))
}

/// What enforce mode refuses under `cfg`, in words for the log.
pub fn enforce_summary(cfg: &Config) -> String {
    if cfg.mode != Mode::Enforce {
        return "off (audit: cross-cell connects are flagged, not refused)".to_owned();
    }
    // A global cell's connects are never violations: naming it would mislead.
    let cells: Vec<&str> = cfg
        .cells
        .iter()
        .filter(|c| !c.global && enforced(cfg, &c.name))
        .map(|c| c.name.as_str())
        .collect();
    match cells.len() {
        0 => "on, for no cell".to_owned(),
        _ => format!("on: cross-cell connects from {} are refused", cells.join(", ")),
    }
}

/// The drained cells and temporary rules under `cfg`, in words for the log.
pub fn drains_summary(cfg: &Config) -> String {
    let drained: Vec<String> = cfg
        .cells
        .iter()
        .filter_map(|c| c.drain.as_ref().map(|d| (c, d)))
        .map(|(c, d)| {
            let refused = d.refuse && cfg.mode == Mode::Enforce;
            format!("{}{}", c.name, if refused { " (new connects refused)" } else { "" })
        })
        .collect();
    let next = cfg.allow.iter().filter_map(|r| r.until.as_ref()).map(|d| d.at).min();
    let temporary = cfg.allow.iter().filter(|r| r.until.is_some()).count();
    format!(
        "drained: {}; temporary allow rules: {temporary}{}",
        if drained.is_empty() { "none".to_owned() } else { drained.join(", ") },
        next.map_or_else(String::new, |t| format!(
            " (the first deadline {})",
            crate::config::rfc3339(t)
        )),
    )
}

/// Where an address falls: a cell, no cell, or an ignored range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place<'a> {
    Cell(&'a str),
    External,
    Ignored,
}

/// The reference lookup: longest prefix over cells and ignored ranges together, as the
/// kernel's trie holds them.
pub fn place(cfg: &Config, addr: IpAddr) -> Place<'_> {
    let addr = canonical(addr);
    let cells = cfg
        .cells
        .iter()
        .flat_map(|c| c.cidrs.iter().map(move |n| (n, Place::Cell(c.name.as_str()))));
    let ignored = cfg.ignore_cidrs.iter().map(|n| (n, Place::Ignored));
    // Validation guarantees no prefix is in two places, so the longest match is unique.
    cells
        .chain(ignored)
        .filter(|(n, _)| n.contains(&addr))
        .max_by_key(|(n, _)| n.prefix_len())
        .map_or(Place::External, |(_, p)| p)
}

/// The reference service of a TCP server at `server`:`port`: a service with ports whose
/// prefix holds it and that serves `port`, else one without ports whose prefix holds it
/// (validation leaves at most one of each kind); `None` for an address in no cell or an
/// ignored range.
pub fn service(cfg: &Config, server: IpAddr, port: u16) -> Option<&str> {
    service_of(cfg, server, port, Protocol::Tcp)
}

/// [`service`] for a server of `protocol` (UDP services always name their ports).
pub fn service_of(cfg: &Config, server: IpAddr, port: u16, protocol: Protocol) -> Option<&str> {
    let addr = canonical(server);
    if !matches!(place(cfg, addr), Place::Cell(_)) {
        return None;
    }
    let holds = |s: &&crate::config::Service| {
        s.protocol == protocol && s.cidrs.iter().any(|n| n.contains(&addr))
    };
    let mut held = cfg.services.iter().filter(holds);
    let ported = cfg.services.iter().filter(holds).find(|s| s.ports.contains(&port));
    ported.or_else(|| held.find(|s| s.ports.is_empty())).map(|s| s.name.as_str())
}

/// The reference verdict of a connection from `client` to `server` on server `port`, as
/// the kernel records it ([`Verdict::ALLOWED`] or [`Verdict::VIOLATION`]); `None` when the
/// connection is not tracked.
pub fn verdict(cfg: &Config, client: IpAddr, server: IpAddr, port: u16) -> Option<Verdict> {
    verdict_at(cfg, client, server, port, SystemTime::now())
}

/// [`verdict`] at time `now`: a temporary rule allows only before its deadline.
pub fn verdict_at(
    cfg: &Config,
    client: IpAddr,
    server: IpAddr,
    port: u16,
    now: SystemTime,
) -> Option<Verdict> {
    let (src, dst) = (place(cfg, client), place(cfg, server));
    match (src, dst) {
        (Place::Ignored, _) | (_, Place::Ignored) => None,
        (Place::External, Place::External) => match cfg.external {
            External::Ignore => None,
            // Neither end in a cell: no boundary is crossed.
            External::Allow | External::Violation => Some(Verdict::ALLOWED),
        },
        (Place::External, _) | (_, Place::External) => match cfg.external {
            External::Allow => Some(Verdict::ALLOWED),
            External::Violation => Some(Verdict::VIOLATION),
            External::Ignore => None,
        },
        (Place::Cell(a), Place::Cell(b)) => {
            let global = |n: &str| cfg.cells.iter().any(|c| c.name == n && c.global);
            let allowed = a == b
                || global(a)
                || global(b)
                || cfg.allow.iter().any(|r| {
                    r.from == a
                        && r.to == b
                        && (r.ports.is_empty() || r.ports.contains(&port))
                        && r.until.as_ref().is_none_or(|d| now < d.at)
                });
            Some(if allowed { Verdict::ALLOWED } else { Verdict::VIOLATION })
        }
    }
}

#[cfg(test)]
mod tests;
