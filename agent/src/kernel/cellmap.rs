//! Writes a compiled config into the cell tries, cell flags, allow rules and settings,
//! touching only what changed since the last write.
use std::collections::{HashMap, HashSet};

use agent_common::{CellInfo, SETTING_EXTERNAL};
use aya::maps::lpm_trie::Key;
use ipnet::IpNet;

use super::loader::{KernelError, Maps, map_err};
use crate::policy::Compiled;

pub(super) fn apply(m: &mut Maps, next: &Compiled) -> Result<(), KernelError> {
    // Add and overwrite first, then remove what is gone: a lookup in between sees the
    // new entry or the old one, never a hole where the address falls to `external`.
    for (net, id) in &next.prefixes {
        put_prefix(m, *net, *id)?;
    }
    let keep: HashSet<IpNet> = next.prefixes.iter().map(|(n, _)| *n).collect();
    let stale: Vec<IpNet> =
        m.current.prefixes.iter().map(|(n, _)| *n).filter(|n| !keep.contains(n)).collect();
    for net in stale {
        drop_prefix(m, net)?;
    }

    let info: HashMap<u32, CellInfo> = next.info.iter().copied().collect();
    for (id, i) in &next.info {
        m.cell_info.set(*id, i, 0).map_err(map_err("CELL_INFO"))?;
    }
    let gone: Vec<u32> =
        m.current.info.iter().map(|(id, _)| *id).filter(|id| !info.contains_key(id)).collect();
    for id in gone {
        m.cell_info.set(id, CellInfo::default(), 0).map_err(map_err("CELL_INFO"))?;
    }

    for k in &next.allow {
        m.policy.insert(k, 1, 0).map_err(map_err("POLICY"))?;
    }
    let allow: HashSet<_> = next.allow.iter().collect();
    let revoked: Vec<_> = m.current.allow.iter().filter(|k| !allow.contains(k)).copied().collect();
    for k in revoked {
        m.policy.remove(&k).map_err(map_err("POLICY"))?;
    }

    m.settings.set(SETTING_EXTERNAL, next.external, 0).map_err(map_err("SETTINGS"))?;
    m.current = Compiled {
        prefixes: next.prefixes.clone(),
        info: next.info.clone(),
        allow: next.allow.clone(),
        external: next.external,
    };
    Ok(())
}

fn put_prefix(m: &mut Maps, net: IpNet, id: u32) -> Result<(), KernelError> {
    let len = u32::from(net.prefix_len());
    match net {
        IpNet::V4(n) => m
            .cells_v4
            .insert(&Key::new(len, n.network().octets()), id, 0)
            .map_err(map_err("CELLS_V4")),
        IpNet::V6(n) => m
            .cells_v6
            .insert(&Key::new(len, n.network().octets()), id, 0)
            .map_err(map_err("CELLS_V6")),
    }
}

fn drop_prefix(m: &mut Maps, net: IpNet) -> Result<(), KernelError> {
    let len = u32::from(net.prefix_len());
    match net {
        IpNet::V4(n) => {
            m.cells_v4.remove(&Key::new(len, n.network().octets())).map_err(map_err("CELLS_V4"))
        }
        IpNet::V6(n) => {
            m.cells_v6.remove(&Key::new(len, n.network().octets())).map_err(map_err("CELLS_V6"))
        }
    }
}
