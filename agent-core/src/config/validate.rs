//! Meaning checks on a parsed config. Every problem is collected, located, and
//! reported together, so a user fixes a file in one pass.
use std::collections::{HashMap, HashSet};

use ipnet::IpNet;

use super::{
    AllowRule, Cell, Config, External, Mode, Problem, Service,
    raw::{RawConfig, RawService, S},
};

use crate::names::{EXTERNAL, NAME_MAX, UNRESOLVED, is_cell_name};

#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn at<T>(&mut self, s: &S<T>, message: impl Into<String>) {
        self.0.push(Problem {
            line: s.referenced.line().max(1),
            column: s.referenced.column().max(1),
            message: message.into(),
        });
    }
}

pub(super) fn validate(raw: RawConfig) -> Result<Config, Vec<Problem>> {
    let mut p = Problems::default();

    let max_cells = agent_common::MAX_CELLS as usize;
    if let Some(c) = raw.cells.get(max_cells) {
        p.at(&c.name, format!("too many cells: at most {max_cells} are supported"));
    }

    // Cells: names, then prefixes (unique across all cells).
    let mut names: HashMap<String, ()> = HashMap::new();
    let mut owner: HashMap<IpNet, String> = HashMap::new();
    let mut cells = Vec::with_capacity(raw.cells.len());
    for rc in &raw.cells {
        let name = rc.name.value.clone();
        check_name(&mut p, &rc.name);
        if names.insert(name.clone(), ()).is_some() {
            p.at(&rc.name, format!("duplicate cell name `{}`", shown(&name)));
        }
        let mut cidrs = Vec::with_capacity(rc.cidrs.len());
        for c in &rc.cidrs {
            let Some(net) = cidr(&mut p, c) else { continue };
            match owner.get(&net) {
                Some(other) if *other == name => {
                    p.at(c, format!("prefix {net} is listed twice in cell `{name}`"));
                }
                Some(other) => {
                    p.at(c, format!("prefix {net} is in two cells: `{other}` and `{name}`"));
                }
                None => {
                    owner.insert(net, name.clone());
                    cidrs.push(net);
                }
            }
        }
        cells.push(Cell { name, global: rc.global, cidrs });
    }

    let known = |n: &str| names.contains_key(n);
    let mut allow = Vec::with_capacity(raw.allow.len());
    for r in &raw.allow {
        for end in [&r.from, &r.to] {
            if !known(&end.value) {
                p.at(end, format!("allow rule names unknown cell `{}`", shown(&end.value)));
            }
        }
        let mut ports = Vec::new();
        for port in r.ports.iter().flatten() {
            match u16::try_from(port.value) {
                Ok(v) if v > 0 => ports.push(v),
                _ => p.at(port, format!("port {} is out of range (1-65535)", port.value)),
            }
        }
        if r.ports.as_ref().is_some_and(Vec::is_empty) {
            p.at(&r.from, "allow rule has an empty `ports` list: omit it to allow every port");
        }
        ports.sort_unstable();
        ports.dedup();
        allow.push(AllowRule { from: r.from.value.clone(), to: r.to.value.clone(), ports });
    }

    let external = match &raw.external {
        None => External::default(),
        Some(s) => match s.value.as_str() {
            "allow" => External::Allow,
            "violation" => External::Violation,
            "ignore" => External::Ignore,
            other => {
                p.at(
                    s,
                    format!("unknown `external` value `{other}`: use allow, violation or ignore"),
                );
                External::default()
            }
        },
    };
    let mode = match &raw.mode {
        None => Mode::default(),
        Some(s) => match s.value.as_str() {
            "audit" => Mode::Audit,
            "enforce" => Mode::Enforce,
            other => {
                p.at(s, format!("unknown `mode` value `{}`: use audit or enforce", shown(other)));
                Mode::default()
            }
        },
    };

    let ignore_cidrs = match &raw.ignore_cidrs {
        None => default_ignore(),
        Some(list) => {
            let mut seen = HashSet::new();
            let mut out = Vec::with_capacity(list.len());
            for c in list {
                let Some(net) = cidr(&mut p, c) else { continue };
                if let Some(cell) = owner.get(&net) {
                    p.at(c, format!("prefix {net} is both ignored and in cell `{cell}`"));
                } else if seen.insert(net) {
                    out.push(net);
                }
            }
            out
        }
    };

    let enforce_cells = raw.enforce_cells.as_ref().map(|list| {
        list.iter()
            .filter(|s| {
                let ok = known(&s.value);
                if !ok {
                    p.at(*s, format!("`enforce_cells` names unknown cell `{}`", shown(&s.value)));
                }
                ok
            })
            .map(|s| s.value.clone())
            .collect()
    });

    let services = services(&mut p, &raw.services, &cells, &ignore_cidrs);
    let mut service_cidrs: Vec<IpNet> = Vec::with_capacity(raw.service_cidrs.len());
    for c in &raw.service_cidrs {
        let Some(net) = cidr(&mut p, c) else { continue };
        if let Some(cell) = owner.get(&net) {
            p.at(c, format!("prefix {net} is both a Service range and in cell `{cell}`"));
        } else if ignore_cidrs.contains(&net) {
            p.at(c, format!("prefix {net} is both a Service range and ignored"));
        } else if service_cidrs.contains(&net) {
            p.at(c, format!("prefix {net} is listed twice in `service_cidrs`"));
        } else {
            service_cidrs.push(net);
        }
    }
    if cells.len() + services.len() > max_cells
        && let Some(s) = raw.services.first()
    {
        p.at(
            &s.name,
            format!("too many cells and services: at most {max_cells} together are supported"),
        );
    }

    if p.0.is_empty() {
        Ok(Config {
            cells,
            allow,
            external,
            ignore_cidrs,
            mode,
            enforce_cells,
            services,
            service_cidrs,
        })
    } else {
        p.0.sort_by_key(|x| (x.line, x.column));
        Err(p.0)
    }
}

/// Services: names, prefixes (each inside one cell, all of a service in the same one),
/// ports, and no two services on the same address and port.
fn services(
    p: &mut Problems,
    raw: &[RawService],
    cells: &[Cell],
    ignored: &[IpNet],
) -> Vec<Service> {
    let mut names = HashSet::new();
    let mut out: Vec<Service> = Vec::with_capacity(raw.len());
    // Where each accepted service prefix came from, to locate overlap problems.
    for rs in raw {
        let name = rs.name.value.clone();
        if is_cell_name(&name) {
            if !names.insert(name.clone()) {
                p.at(&rs.name, format!("duplicate service name `{}`", shown(&name)));
            }
        } else {
            p.at(
                &rs.name,
                format!(
                    "invalid service name `{}`: use at most {NAME_MAX} lower-case letters, \
                     digits and `-`, starting and ending with a letter or digit",
                    shown(&name)
                ),
            );
        }
        let mut ports = Vec::new();
        for port in rs.ports.iter().flatten() {
            match u16::try_from(port.value) {
                Ok(v) if v > 0 => ports.push(v),
                _ => p.at(port, format!("port {} is out of range (1-65535)", port.value)),
            }
        }
        if rs.ports.as_ref().is_some_and(Vec::is_empty) {
            p.at(&rs.name, "service has an empty `ports` list: omit it for every port");
        }
        ports.sort_unstable();
        ports.dedup();
        if rs.cidrs.is_empty() {
            p.at(&rs.name, format!("service `{}` has no `cidrs`", shown(&name)));
        }
        let mut cidrs = Vec::with_capacity(rs.cidrs.len());
        let mut cell: Option<String> = None;
        for c in &rs.cidrs {
            let Some(net) = cidr(p, c) else { continue };
            let here = match home(net, cells, ignored) {
                Err(why) => {
                    p.at(c, format!("prefix {net} of service `{}` {why}", shown(&name)));
                    continue;
                }
                Ok(h) => h,
            };
            match &cell {
                Some(first) if *first != here => {
                    p.at(
                        c,
                        format!(
                            "service `{}` lies in two cells, `{first}` and `{here}`: a service \
                             lies inside one cell",
                            shown(&name)
                        ),
                    );
                    continue;
                }
                _ => cell = Some(here),
            }
            if cidrs.contains(&net) {
                p.at(c, format!("prefix {net} is listed twice in service `{}`", shown(&name)));
                continue;
            }
            for other in &out {
                let common = other.ports.is_empty()
                    || ports.is_empty()
                    || other.ports.iter().any(|q| ports.contains(q));
                if let Some(theirs) = other.cidrs.iter().find(|o| overlap(**o, net))
                    && common
                {
                    p.at(
                        c,
                        format!(
                            "prefix {net} of service `{}` overlaps {theirs} of service `{}` on \
                             a port both serve: a connection would belong to two services",
                            shown(&name),
                            other.name
                        ),
                    );
                }
            }
            cidrs.push(net);
        }
        if let Some(cell) = cell {
            out.push(Service { name, cidrs, ports, cell });
        }
    }
    out
}

fn overlap(a: IpNet, b: IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The cell a service prefix lies in: the cell of the longest prefix (cells' and
/// ignored ranges') that holds it all, with no other cell's or ignored prefix inside it.
fn home(net: IpNet, cells: &[Cell], ignored: &[IpNet]) -> Result<String, String> {
    let places = cells
        .iter()
        .flat_map(|c| c.cidrs.iter().map(move |n| (*n, Some(c.name.as_str()))))
        .chain(ignored.iter().map(|n| (*n, None)));
    let mut holder: Option<(IpNet, Option<&str>)> = None;
    let mut inside: Vec<(IpNet, Option<&str>)> = Vec::new();
    for (n, owner) in places {
        if n.contains(&net) {
            if holder.is_none_or(|(h, _)| n.prefix_len() > h.prefix_len()) {
                holder = Some((n, owner));
            }
        } else if net.contains(&n) {
            inside.push((n, owner));
        }
    }
    let Some((_, owner)) = holder else {
        return Err("is in no cell: a service lies inside a cell".to_owned());
    };
    let Some(cell) = owner else {
        return Err("is in an ignored range".to_owned());
    };
    if let Some((n, other)) = inside.iter().find(|(_, o)| *o != Some(cell)) {
        let what = other.map_or("an ignored range".to_owned(), |o| format!("cell `{o}`"));
        return Err(format!("spans cell `{cell}` and {what} ({n})"));
    }
    Ok(cell.to_owned())
}

/// A user value as quoted in a message: at most 64 characters.
fn shown(v: &str) -> String {
    const MAX: usize = 64;
    match v.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", &v[..i]),
        None => v.to_owned(),
    }
}

pub(super) fn default_ignore() -> Vec<IpNet> {
    ["127.0.0.0/8", "::1/128"].iter().filter_map(|s| s.parse().ok()).collect()
}

fn check_name(p: &mut Problems, s: &S<String>) {
    let n = s.value.as_str();
    if !is_cell_name(n) {
        p.at(
            s,
            format!(
                "invalid cell name `{}`: use at most {NAME_MAX} lower-case letters, digits \
                 and `-`, starting and ending with a letter or digit",
                shown(n)
            ),
        );
    } else if n == EXTERNAL {
        p.at(s, "the cell name `external` is reserved for peers in no cell");
    } else if n == UNRESOLVED {
        p.at(
            s,
            "the cell name `unresolved` is reserved for Service addresses with no backend found",
        );
    }
}

/// A CIDR in canonical form (no host bits set); a located problem otherwise.
fn cidr(p: &mut Problems, s: &S<String>) -> Option<IpNet> {
    let text = s.value.trim();
    match text.parse::<IpNet>() {
        Ok(net) if net.trunc() == net => Some(net),
        Ok(net) => {
            p.at(
                s,
                format!("prefix {} has host bits set: did you mean {}?", shown(text), net.trunc()),
            );
            None
        }
        Err(_) => {
            p.at(
                s,
                format!(
                    "invalid CIDR `{text}`: expected a prefix such as 10.1.0.0/16 or fd00::/48"
                ),
            );
            None
        }
    }
}
