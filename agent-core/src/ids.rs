//! Cell name <-> kernel cell id. Ids are stable per name for the life of the pinned
//! maps, so counters keep their labels across reloads and restarts.

use std::collections::HashMap;

use agent_common::{CELL_EXTERNAL, CELL_SERVICE_ADDR, CELL_UNRESOLVED, MAX_CELLS};

/// Label value of a peer in no cell.
pub const EXTERNAL_LABEL: &str = crate::names::EXTERNAL;

/// Cell name <-> kernel id. Ids are handed out once per name and kept for the life of
/// the agent, so a reload that keeps a name keeps its id and its counters' labels, and
/// counts made under a removed cell still render with its name.
#[derive(Debug, Default)]
pub struct CellIds {
    by_name: HashMap<String, u32>,
    names: HashMap<u32, String>,
    next: u32,
}

#[derive(Debug, thiserror::Error)]
#[error(
    "more than {MAX_CELLS} distinct cell and service names were used over the life of the pinned \
     state (ids are kept across restarts so counters keep their labels); `cellwatch uninstall` and \
     a fresh start number them anew, counting from zero"
)]
pub struct IdsExhausted;

/// What a service's name is kept under among the cell names (`/` is in no cell name).
const SERVICE_PREFIX: &str = "service/";

impl CellIds {
    /// The id of `name`, assigning the next free one if it is new.
    pub fn id(&mut self, name: &str) -> Result<u32, IdsExhausted> {
        if let Some(id) = self.by_name.get(name) {
            return Ok(*id);
        }
        if self.next >= MAX_CELLS {
            return Err(IdsExhausted);
        }
        self.next += 1;
        self.by_name.insert(name.to_owned(), self.next);
        self.names.insert(self.next, name.to_owned());
        Ok(self.next)
    }

    /// The id of a known name, without assigning one.
    pub fn lookup(&self, name: &str) -> Option<u32> {
        if name == EXTERNAL_LABEL {
            return Some(CELL_EXTERNAL);
        }
        if name == crate::names::UNRESOLVED {
            return Some(CELL_UNRESOLVED);
        }
        self.by_name.get(name).copied()
    }

    /// Ids as an earlier agent handed them out (read back from the kernel); new names
    /// get ids above the highest.
    pub fn restore(names: impl IntoIterator<Item = (u32, String)>) -> Self {
        let mut ids = Self::default();
        for (id, name) in names {
            ids.next = ids.next.max(id);
            ids.by_name.insert(name.clone(), id);
            ids.names.insert(id, name);
        }
        ids
    }

    /// Every id handed out, with its name, by id.
    pub fn all(&self) -> Vec<(u32, String)> {
        let mut v: Vec<_> = self.names.iter().map(|(id, n)| (*id, n.clone())).collect();
        v.sort_unstable();
        v
    }

    /// The id of service `name`: services share the id space with cells (and the record
    /// a restarted agent reads back), under a prefix no cell name can have.
    pub fn service_id(&mut self, name: &str) -> Result<u16, IdsExhausted> {
        let id = self.id(&format!("{SERVICE_PREFIX}{name}"))?;
        u16::try_from(id).map_err(|_| IdsExhausted)
    }

    /// The id of a known service, without assigning one.
    pub fn service_lookup(&self, name: &str) -> Option<u16> {
        self.by_name.get(&format!("{SERVICE_PREFIX}{name}")).and_then(|id| u16::try_from(*id).ok())
    }

    /// The name of a service id, if it is one.
    pub fn service_name(&self, id: u16) -> Option<&str> {
        self.names.get(&u32::from(id)).and_then(|n| n.strip_prefix(SERVICE_PREFIX))
    }

    /// The label of a kernel cell id.
    pub fn name(&self, id: u32) -> &str {
        match id {
            CELL_EXTERNAL => EXTERNAL_LABEL,
            CELL_UNRESOLVED | CELL_SERVICE_ADDR => crate::names::UNRESOLVED,
            _ => self.names.get(&id).map_or("unknown", String::as_str),
        }
    }
}
