//! Writes a compiled config into the kernel's cell maps, atomically as the programs see
//! it: the inactive set (A or B) is brought to the new config, then one settings word
//! flips the programs over to it. Only what differs from what that set held is written.
use std::{
    collections::{HashMap, HashSet},
    time::Instant,
};

use agent_common::{
    ALLOW_FOREVER, CELL_NAME_MAX, CellInfo, CellName, MAX_CELLS, SETTING_ENFORCE, SETTING_EXTERNAL,
    SETTING_GENERATION, SETTING_PORTED_SERVICES, ServiceKeyV4, ServiceKeyV6,
};
use agent_core::{config::IpNet, policy::Compiled};
use aya::maps::lpm_trie::Key;

use crate::host::clock;

use super::{
    error::{KernelError, map_err},
    maps::{CellSet, Generation, Maps},
    object,
};

/// Maps pinned by an earlier run: the set the programs read now is read back when a
/// write first targets it (the first reload); the other set, the first write's target,
/// is read back now.
pub(super) fn adopt(m: &mut Maps) -> Result<(), KernelError> {
    let active = m.generation.active;
    m.sets[active].known = false;
    let target = &mut m.sets[1 - active];
    target.holds = read_set(target)?;
    Ok(())
}

pub(super) fn apply(m: &mut Maps, next: &Compiled) -> Result<(), KernelError> {
    let target = 1 - m.generation.active;
    let waited = m.generation.since.elapsed();
    if waited < Generation::GRACE {
        std::thread::sleep(Generation::GRACE - waited);
    }
    write_names(m, next)?;
    let set = &mut m.sets[target];
    if !set.known {
        set.holds = read_set(set)?;
        set.known = true;
    }
    if let Err(e) = write_set(set, next) {
        // Part of it may be written: what the set holds is known no more, and is read
        // back from the kernel before the next write, which then brings it to the config
        // whole. The programs go on reading the other set, untouched.
        set.known = false;
        return Err(e);
    }
    note_drains(m, next);
    let set_index = u32::from(target == 1);
    let settings = map_err(object::SETTINGS);
    m.settings.set(SETTING_EXTERNAL + set_index, next.external, 0).map_err(settings)?;
    let settings = map_err(object::SETTINGS);
    m.settings.set(SETTING_ENFORCE + set_index, next.enforce, 0).map_err(settings)?;
    let ported = u32::from(!next.ported.is_empty());
    let settings = map_err(object::SETTINGS);
    m.settings.set(SETTING_PORTED_SERVICES + set_index, ported, 0).map_err(settings)?;
    let settings = map_err(object::SETTINGS);
    m.settings.set(SETTING_GENERATION, set_index, 0).map_err(settings)?;
    m.generation = Generation { active: target, since: Instant::now() };
    Ok(())
}

fn write_set(set: &mut CellSet, next: &Compiled) -> Result<(), KernelError> {
    let keep: HashSet<IpNet> = next.prefixes.iter().map(|(n, _)| *n).collect();
    let stale: Vec<IpNet> =
        set.holds.prefixes.iter().map(|(n, _)| *n).filter(|n| !keep.contains(n)).collect();
    for net in stale {
        drop_prefix(set, net)?;
    }
    let had: HashMap<IpNet, u32> = set.holds.prefixes.iter().copied().collect();
    for (net, id) in &next.prefixes {
        if had.get(net) != Some(id) {
            put_prefix(set, *net, *id)?;
        }
    }

    let info: HashMap<u32, CellInfo> = next.info.iter().copied().collect();
    let gone: Vec<u32> =
        set.holds.info.iter().map(|(id, _)| *id).filter(|id| !info.contains_key(id)).collect();
    for id in gone {
        set.info.set(id, CellInfo::default(), 0).map_err(map_err(set.names.info))?;
    }
    let had: HashMap<u32, CellInfo> = set.holds.info.iter().copied().collect();
    for (id, i) in &next.info {
        if had.get(id) != Some(i) {
            set.info.set(*id, i, 0).map_err(map_err(set.names.info))?;
        }
    }

    let allow: HashSet<_> = next.allow.iter().map(|(k, _)| *k).collect();
    let revoked: Vec<_> =
        set.holds.allow.iter().map(|(k, _)| *k).filter(|k| !allow.contains(k)).collect();
    for k in revoked {
        set.policy.remove(&k).map_err(map_err(set.names.policy))?;
    }
    // A deadline is written whenever one is there: its wall time is converted to the
    // kernel's clock afresh, so a read-back one never compares equal.
    let had: HashSet<_> =
        set.holds.allow.iter().filter(|(_, u)| u.is_none()).map(|(k, _)| *k).collect();
    for (k, until) in next.allow.iter().filter(|(k, u)| u.is_some() || !had.contains(k)) {
        let value = until.map_or(ALLOW_FOREVER, clock::kernel_ns);
        set.policy.insert(k, value, 0).map_err(map_err(set.names.policy))?;
    }
    for udp in [false, true] {
        let (had, next) = if udp {
            (&set.holds.ported_udp, &next.ported_udp)
        } else {
            (&set.holds.ported, &next.ported)
        };
        let keep: HashSet<(IpNet, u16)> = next.iter().map(|(n, p, _)| (*n, *p)).collect();
        let stale: Vec<(IpNet, u16)> =
            had.iter().map(|(n, p, _)| (*n, *p)).filter(|k| !keep.contains(k)).collect();
        let had: HashMap<(IpNet, u16), u16> =
            had.iter().map(|(n, p, id)| ((*n, *p), *id)).collect();
        let changed: Vec<(IpNet, u16, u16)> =
            next.iter().filter(|(n, p, id)| had.get(&(*n, *p)) != Some(id)).copied().collect();
        for (net, port) in stale {
            service_entry(set, udp, net, port, None)?;
        }
        for (net, port, id) in changed {
            service_entry(set, udp, net, port, Some(id))?;
        }
    }
    set.holds = next.clone();
    Ok(())
}

/// Puts (`Some(id)`) or removes a ported service's entry (in the UDP services' tries
/// when `udp`): the port, then the prefix.
fn service_entry(
    set: &mut CellSet,
    udp: bool,
    net: IpNet,
    port: u16,
    id: Option<u16>,
) -> Result<(), KernelError> {
    let len = 16 + u32::from(net.prefix_len());
    let port_be = port.to_be_bytes();
    match net {
        IpNet::V4(n) => {
            let key = Key::new(len, ServiceKeyV4 { port: port_be, addr: n.network().octets() });
            let (trie, name) = if udp {
                (&mut set.udp_v4, set.names.udp_v4)
            } else {
                (&mut set.svc_v4, set.names.svc_v4)
            };
            let r = match id {
                Some(id) => trie.insert(&key, u32::from(id), 0),
                None => trie.remove(&key),
            };
            r.map_err(map_err(name))
        }
        IpNet::V6(n) => {
            let key = Key::new(len, ServiceKeyV6 { port: port_be, addr: n.network().octets() });
            let (trie, name) = if udp {
                (&mut set.udp_v6, set.names.udp_v6)
            } else {
                (&mut set.svc_v6, set.names.svc_v6)
            };
            let r = match id {
                Some(id) => trie.insert(&key, u32::from(id), 0),
                None => trie.remove(&key),
            };
            r.map_err(map_err(name))
        }
    }
}

/// Keeps when each cell drained with no start given was first seen drained, and forgets
/// the cells drained no more.
fn note_drains(m: &mut Maps, next: &Compiled) {
    let now = std::time::SystemTime::now();
    m.drained_since.retain(|id, _| next.drains.iter().any(|(d, since)| d == id && since.is_none()));
    for (id, since) in &next.drains {
        if since.is_none() {
            m.drained_since.entry(*id).or_insert(now);
        }
    }
}

/// Records the names of cell ids not recorded yet.
fn write_names(m: &mut Maps, next: &Compiled) -> Result<(), KernelError> {
    for (id, name) in &next.names {
        if m.names_written.contains(id) {
            continue;
        }
        let mut entry = CellName { len: 0, name: [0; CELL_NAME_MAX] };
        let n = name.len().min(CELL_NAME_MAX);
        entry.name[..n].copy_from_slice(&name.as_bytes()[..n]);
        // Validated names are at most CELL_NAME_MAX (63) bytes.
        entry.len = u8::try_from(n).unwrap_or(u8::MAX);
        m.cell_names.set(*id, entry, 0).map_err(map_err(object::CELL_NAMES))?;
        m.names_written.insert(*id);
    }
    Ok(())
}

/// What a pinned set holds, read back from the kernel, so the next write to it knows
/// what to remove.
fn read_set(set: &CellSet) -> Result<Compiled, KernelError> {
    let mut out = Compiled::default();
    for entry in set.v4.iter() {
        let (k, id) = entry.map_err(map_err(set.names.v4))?;
        let net = prefix_len(k.prefix_len())
            .and_then(|len| ipnet::Ipv4Net::new(k.data().into(), len).ok());
        out.prefixes.extend(net.map(|n| (IpNet::V4(n), id)));
    }
    for entry in set.v6.iter() {
        let (k, id) = entry.map_err(map_err(set.names.v6))?;
        let net = prefix_len(k.prefix_len())
            .and_then(|len| ipnet::Ipv6Net::new(k.data().into(), len).ok());
        out.prefixes.extend(net.map(|n| (IpNet::V6(n), id)));
    }
    for id in 0..=MAX_CELLS {
        let info = set.info.get(&id, 0).map_err(map_err(set.names.info))?;
        if info != CellInfo::default() {
            out.info.push((id, info));
        }
    }
    for entry in set.policy.iter() {
        let (key, until) = entry.map_err(map_err(set.names.policy))?;
        out.allow.push((key, (until != ALLOW_FOREVER).then(|| clock::wall_time(until))));
    }
    for udp in [false, true] {
        let (t4, t6, n4, n6) = if udp {
            (&set.udp_v4, &set.udp_v6, set.names.udp_v4, set.names.udp_v6)
        } else {
            (&set.svc_v4, &set.svc_v6, set.names.svc_v4, set.names.svc_v6)
        };
        let into = if udp { &mut out.ported_udp } else { &mut out.ported };
        for entry in t4.iter() {
            let (k, id) = entry.map_err(map_err(n4))?;
            let d = k.data();
            let net = k
                .prefix_len()
                .checked_sub(16)
                .and_then(prefix_len)
                .and_then(|len| ipnet::Ipv4Net::new(d.addr.into(), len).ok());
            if let (Some(n), Ok(id)) = (net, u16::try_from(id)) {
                into.push((IpNet::V4(n), u16::from_be_bytes(d.port), id));
            }
        }
        for entry in t6.iter() {
            let (k, id) = entry.map_err(map_err(n6))?;
            let d = k.data();
            let net = k
                .prefix_len()
                .checked_sub(16)
                .and_then(prefix_len)
                .and_then(|len| ipnet::Ipv6Net::new(d.addr.into(), len).ok());
            if let (Some(n), Ok(id)) = (net, u16::try_from(id)) {
                into.push((IpNet::V6(n), u16::from_be_bytes(d.port), id));
            }
        }
    }
    Ok(out)
}

/// A trie key's prefix length as a prefix length (at most 128; anything else is not one
/// of ours and is skipped).
fn prefix_len(len: u32) -> Option<u8> {
    u8::try_from(len).ok().filter(|l| *l <= 128)
}

fn put_prefix(set: &mut CellSet, net: IpNet, id: u32) -> Result<(), KernelError> {
    let len = u32::from(net.prefix_len());
    match net {
        IpNet::V4(n) => set
            .v4
            .insert(&Key::new(len, n.network().octets()), id, 0)
            .map_err(map_err(set.names.v4)),
        IpNet::V6(n) => set
            .v6
            .insert(&Key::new(len, n.network().octets()), id, 0)
            .map_err(map_err(set.names.v6)),
    }
}

fn drop_prefix(set: &mut CellSet, net: IpNet) -> Result<(), KernelError> {
    let len = u32::from(net.prefix_len());
    match net {
        IpNet::V4(n) => {
            set.v4.remove(&Key::new(len, n.network().octets())).map_err(map_err(set.names.v4))
        }
        IpNet::V6(n) => {
            set.v6.remove(&Key::new(len, n.network().octets())).map_err(map_err(set.names.v6))
        }
    }
}
