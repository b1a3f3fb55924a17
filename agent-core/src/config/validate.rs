//! Meaning checks on a parsed config. Every problem is collected, located, and
//! reported together, so a user fixes a file in one pass.
use std::collections::{HashMap, HashSet};

use ipnet::IpNet;

use super::{
    AllowRule, Cell, Config, Deadline, Drain, External, Mode, Problem, Protocol, Service,
    parse_rfc3339,
    raw::{RawAllow, RawCell, RawConfig, RawDrained, RawService, S},
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

    /// `value` when nothing was found wrong; every problem otherwise, in file order.
    fn or<T>(mut self, value: T) -> Result<T, Vec<Problem>> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            self.0.sort_by_key(|x| (x.line, x.column));
            Err(self.0)
        }
    }
}

/// The cells, checked, with what the later checks look up in them.
struct Cells {
    cells: Vec<Cell>,
    names: HashSet<String>,
    /// The cell each accepted prefix belongs to.
    owner: HashMap<IpNet, String>,
}

pub(super) fn validate(raw: RawConfig) -> Result<Config, Vec<Problem>> {
    let mut p = Problems::default();

    let max_cells = agent_common::MAX_CELLS as usize;
    if let Some(c) = raw.cells.get(max_cells) {
        p.at(&c.name, format!("too many cells: at most {max_cells} are supported"));
    }

    let Cells { cells, names, owner } = cells(&mut p, &raw.cells);
    let allow = raw.allow.iter().map(|r| allow_rule(&mut p, r, &names)).collect();
    let external = external(&mut p, raw.external.as_ref());
    let mode = mode(&mut p, raw.mode.as_ref());
    let ignore_cidrs = ignore_cidrs(&mut p, raw.ignore_cidrs.as_deref(), &owner);
    let enforce_cells = raw.enforce_cells.as_deref().map(|l| enforce_cells(&mut p, l, &names));
    let services = services(&mut p, &raw.services, &cells, &ignore_cidrs);
    let service_cidrs = service_cidrs(&mut p, &raw.service_cidrs, &owner, &ignore_cidrs);
    if cells.len() + services.len() > max_cells
        && let Some(s) = raw.services.first()
    {
        p.at(
            &s.name,
            format!("too many cells and services: at most {max_cells} together are supported"),
        );
    }

    p.or(Config {
        cells,
        allow,
        external,
        ignore_cidrs,
        mode,
        enforce_cells,
        services,
        service_cidrs,
    })
}

/// Cells: names, then prefixes (unique across all cells).
fn cells(p: &mut Problems, raw: &[RawCell]) -> Cells {
    let mut names = HashSet::new();
    let mut owner: HashMap<IpNet, String> = HashMap::new();
    let mut cells = Vec::with_capacity(raw.len());
    for rc in raw {
        let name = rc.name.value.clone();
        check_name(p, &rc.name);
        if !names.insert(name.clone()) {
            p.at(&rc.name, format!("duplicate cell name `{}`", shown(&name)));
        }
        let mut cidrs = Vec::with_capacity(rc.cidrs.len());
        for c in &rc.cidrs {
            let Some(net) = cidr(p, c) else { continue };
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
        let drain = drain(p, rc);
        cells.push(Cell { name, global: rc.global, cidrs, drain });
    }
    Cells { cells, names, owner }
}

/// An allow rule: both ends known cells, its ports in range.
fn allow_rule(p: &mut Problems, r: &RawAllow, names: &HashSet<String>) -> AllowRule {
    for end in [&r.from, &r.to] {
        if !names.contains(&end.value) {
            p.at(end, format!("allow rule names unknown cell `{}`", shown(&end.value)));
        }
    }
    let ports = ports(p, r.ports.as_deref());
    if r.ports.as_ref().is_some_and(Vec::is_empty) {
        p.at(&r.from, "allow rule has an empty `ports` list: omit it to allow every port");
    }
    let until = r.until.as_ref().and_then(|u| match parse_rfc3339(&u.value) {
        Ok(at) => Some(Deadline {
            at,
            line: u.referenced.line().max(1),
            column: u.referenced.column().max(1),
        }),
        Err(why) => {
            p.at(u, format!("allow rule `until`: {why}"));
            None
        }
    });
    let reason = r.reason.as_ref().map_or_else(String::new, |s| s.value.trim().to_owned());
    if let Some(s) = &r.reason
        && reason.chars().count() > REASON_MAX
    {
        p.at(s, format!("allow rule `reason` is longer than {REASON_MAX} characters"));
    }
    AllowRule { from: r.from.value.clone(), to: r.to.value.clone(), ports, until, reason }
}

/// Longest `reason:` of an allow rule (a label value).
const REASON_MAX: usize = 200;

/// A cell's `drained:` and `drain:`.
fn drain(p: &mut Problems, rc: &RawCell) -> Option<Drain> {
    let refuse = match rc.drain.as_ref().map(|s| (s, s.value.as_str())) {
        None | Some((_, "observe")) => false,
        Some((_, "refuse")) => true,
        Some((s, other)) => {
            p.at(s, format!("unknown `drain` value `{}`: use observe or refuse", shown(other)));
            false
        }
    };
    let since = match &rc.drained.as_ref()?.value {
        RawDrained::Flag(false) => return None,
        RawDrained::Flag(true) => None,
        RawDrained::Since(t) => match parse_rfc3339(t) {
            Ok(at) => Some(at),
            Err(why) => {
                if let Some(d) = &rc.drained {
                    p.at(d, format!("`drained`: {why}, or true"));
                }
                None
            }
        },
    };
    Some(Drain { since, refuse })
}

/// Ports in range (1-65535), sorted, each once; a problem for each one out of range.
fn ports(p: &mut Problems, raw: Option<&[S<i64>]>) -> Vec<u16> {
    let mut ports = Vec::new();
    for port in raw.into_iter().flatten() {
        match u16::try_from(port.value) {
            Ok(v) if v > 0 => ports.push(v),
            _ => p.at(port, format!("port {} is out of range (1-65535)", port.value)),
        }
    }
    ports.sort_unstable();
    ports.dedup();
    ports
}

fn external(p: &mut Problems, raw: Option<&S<String>>) -> External {
    let Some(s) = raw else { return External::default() };
    match s.value.as_str() {
        "allow" => External::Allow,
        "violation" => External::Violation,
        "ignore" => External::Ignore,
        other => {
            p.at(s, format!("unknown `external` value `{other}`: use allow, violation or ignore"));
            External::default()
        }
    }
}

fn mode(p: &mut Problems, raw: Option<&S<String>>) -> Mode {
    let Some(s) = raw else { return Mode::default() };
    match s.value.as_str() {
        "audit" => Mode::Audit,
        "enforce" => Mode::Enforce,
        other => {
            p.at(s, format!("unknown `mode` value `{}`: use audit or enforce", shown(other)));
            Mode::default()
        }
    }
}

/// The ignored prefixes (loopback when the list is absent): none also in a cell.
fn ignore_cidrs(
    p: &mut Problems,
    raw: Option<&[S<String>]>,
    owner: &HashMap<IpNet, String>,
) -> Vec<IpNet> {
    let Some(list) = raw else { return default_ignore() };
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(list.len());
    for c in list {
        let Some(net) = cidr(p, c) else { continue };
        if let Some(cell) = owner.get(&net) {
            p.at(c, format!("prefix {net} is both ignored and in cell `{cell}`"));
        } else if seen.insert(net) {
            out.push(net);
        }
    }
    out
}

/// The cells enforce mode applies to: the known ones; a problem for each unknown one.
fn enforce_cells(p: &mut Problems, raw: &[S<String>], names: &HashSet<String>) -> Vec<String> {
    raw.iter()
        .filter(|s| {
            let ok = names.contains(&s.value);
            if !ok {
                p.at(*s, format!("`enforce_cells` names unknown cell `{}`", shown(&s.value)));
            }
            ok
        })
        .map(|s| s.value.clone())
        .collect()
}

/// Kubernetes Service ranges: none also in a cell or ignored, each once.
fn service_cidrs(
    p: &mut Problems,
    raw: &[S<String>],
    owner: &HashMap<IpNet, String>,
    ignored: &[IpNet],
) -> Vec<IpNet> {
    let mut out: Vec<IpNet> = Vec::with_capacity(raw.len());
    for c in raw {
        let Some(net) = cidr(p, c) else { continue };
        if let Some(cell) = owner.get(&net) {
            p.at(c, format!("prefix {net} is both a Service range and in cell `{cell}`"));
        } else if ignored.contains(&net) {
            p.at(c, format!("prefix {net} is both a Service range and ignored"));
        } else if out.contains(&net) {
            p.at(c, format!("prefix {net} is listed twice in `service_cidrs`"));
        } else {
            out.push(net);
        }
    }
    out
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
    for rs in raw {
        let name = rs.name.value.clone();
        service_name(p, &rs.name, &mut names);
        let ports = ports(p, rs.ports.as_deref());
        if rs.ports.as_ref().is_some_and(Vec::is_empty) {
            p.at(&rs.name, "service has an empty `ports` list: omit it for every port");
        }
        if rs.cidrs.is_empty() {
            p.at(&rs.name, format!("service `{}` has no `cidrs`", shown(&name)));
        }
        let protocol = protocol(p, rs);
        // Only services of the same protocol can overlap.
        let same: Vec<Service> = out.iter().filter(|s| s.protocol == protocol).cloned().collect();
        let theirs = Theirs { cells, ignored, services: &same };
        let (cidrs, cell) = service_prefixes(p, rs, &ports, &theirs);
        if let Some(cell) = cell {
            out.push(Service { name, cidrs, ports, protocol, cell });
        }
    }
    out
}

/// A service's `protocol`: `tcp` (also when absent) or `udp`, which names its ports (a
/// UDP service is looked up by port, once per flow).
fn protocol(p: &mut Problems, rs: &RawService) -> Protocol {
    let Some(raw) = &rs.protocol else { return Protocol::Tcp };
    match raw.value.as_str() {
        "tcp" => Protocol::Tcp,
        "udp" => {
            if rs.ports.is_none() {
                p.at(
                    raw,
                    format!(
                        "service `{}` has `protocol: udp` but no `ports`: a UDP service names \
                         its ports (53 for DNS)",
                        shown(&rs.name.value)
                    ),
                );
            }
            Protocol::Udp
        }
        other => {
            p.at(raw, format!("unknown protocol `{}`: use tcp or udp", shown(other)));
            Protocol::Tcp
        }
    }
}

/// A service's name: valid, and not taken by an earlier service.
fn service_name(p: &mut Problems, s: &S<String>, names: &mut HashSet<String>) {
    let name = &s.value;
    if is_cell_name(name) {
        if !names.insert(name.clone()) {
            p.at(s, format!("duplicate service name `{}`", shown(name)));
        }
    } else {
        p.at(
            s,
            format!(
                "invalid service name `{}`: use at most {NAME_MAX} lower-case letters, \
                 digits and `-`, starting and ending with a letter or digit",
                shown(name)
            ),
        );
    }
}

/// What a service's prefixes are checked against.
struct Theirs<'a> {
    cells: &'a [Cell],
    ignored: &'a [IpNet],
    /// The services accepted before this one.
    services: &'a [Service],
}

/// A service's prefixes that lie in one cell (each once), and that cell; `None` when
/// none did.
fn service_prefixes(
    p: &mut Problems,
    rs: &RawService,
    ports: &[u16],
    theirs: &Theirs<'_>,
) -> (Vec<IpNet>, Option<String>) {
    let name = &rs.name.value;
    let mut cidrs = Vec::with_capacity(rs.cidrs.len());
    let mut cell: Option<String> = None;
    for c in &rs.cidrs {
        let Some(net) = cidr(p, c) else { continue };
        let here = match home(net, theirs.cells, theirs.ignored) {
            Err(why) => {
                p.at(c, format!("prefix {net} of service `{}` {why}", shown(name)));
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
                        shown(name)
                    ),
                );
                continue;
            }
            _ => cell = Some(here),
        }
        if cidrs.contains(&net) {
            p.at(c, format!("prefix {net} is listed twice in service `{}`", shown(name)));
            continue;
        }
        overlaps(p, c, net, name, ports, theirs.services);
        cidrs.push(net);
    }
    (cidrs, cell)
}

/// A problem for each earlier service a prefix of service `name` overlaps on a port
/// both serve.
fn overlaps(
    p: &mut Problems,
    c: &S<String>,
    net: IpNet,
    name: &str,
    ports: &[u16],
    earlier: &[Service],
) {
    for other in earlier {
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
                    shown(name),
                    other.name
                ),
            );
        }
    }
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
