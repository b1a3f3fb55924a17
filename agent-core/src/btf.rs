//! Just enough of the kernel's BTF (`/sys/kernel/btf/vmlinux`) to find where a struct
//! member lives: the kernel programs read a few socket fields no context carries, and
//! their offsets move between kernel builds. Parsing is bounds-checked throughout: a
//! truncated or foreign file is an error, never a panic.

use std::collections::HashMap;

use agent_common::FieldOffsets;

/// Why a member could not be located.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BtfError {
    #[error("not BTF data ({0})")]
    Malformed(&'static str),
    #[error("the kernel's BTF has no struct {0}")]
    NoStruct(String),
    #[error("the kernel's BTF has no member {member} in struct {ty}")]
    NoMember { ty: String, member: String },
    #[error("{ty}.{member} is a bit field, not a whole field")]
    BitField { ty: String, member: String },
}

const MAGIC: u16 = 0xeb9f;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_TYPEDEF: u32 = 8;

/// One type's header and where its extra data starts.
#[derive(Clone, Copy, Debug)]
struct Type {
    name_off: u32,
    kind: u32,
    vlen: u32,
    kind_flag: bool,
    /// `size` or `type`, depending on the kind.
    size_or_type: u32,
    /// Byte offset of the extra data (members, ...) in the type section.
    extra: usize,
}

/// A parsed BTF blob: types by id (id 0 is `void`), and their names.
pub struct Btf<'a> {
    types: Vec<Type>,
    type_section: &'a [u8],
    strings: &'a [u8],
    by_name: HashMap<&'a str, Vec<u32>>,
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at.checked_add(2)?)?.try_into().ok()?))
}

/// Bytes of a kind's extra data after the 12-byte header.
fn extra_len(kind: u32, vlen: u32) -> Option<usize> {
    let vlen = usize::try_from(vlen).ok()?;
    Some(match kind {
        // INT, VAR, DECL_TAG: one word.
        1 | 14 | 17 => 4,
        // ARRAY
        3 => 12,
        // STRUCT, UNION, DATASEC, ENUM64: 12 bytes per member.
        4 | 5 | 15 | 19 => 12 * vlen,
        // ENUM, FUNC_PROTO: 8 bytes per value / parameter.
        6 | 13 => 8 * vlen,
        // PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT, TYPE_TAG
        2 | 7 | 8 | 9 | 10 | 11 | 12 | 16 | 18 => 0,
        _ => return None,
    })
}

impl<'a> Btf<'a> {
    /// Parses little-endian BTF, as the kernel exposes it on x86_64 and arm64.
    pub fn parse(data: &'a [u8]) -> Result<Self, BtfError> {
        let bad = BtfError::Malformed;
        if u16_at(data, 0) != Some(MAGIC) {
            return Err(bad("no BTF magic"));
        }
        let word = |at| u32_at(data, at).and_then(|v| usize::try_from(v).ok());
        let (Some(hdr_len), Some(type_off), Some(type_len), Some(str_off), Some(str_len)) =
            (word(4), word(8), word(12), word(16), word(20))
        else {
            return Err(bad("short header"));
        };
        let section = |off: usize, len: usize| {
            let start = hdr_len.checked_add(off)?;
            data.get(start..start.checked_add(len)?)
        };
        let type_section = section(type_off, type_len).ok_or(bad("type section out of bounds"))?;
        let strings = section(str_off, str_len).ok_or(bad("string section out of bounds"))?;
        let mut types = vec![Type {
            name_off: 0,
            kind: 0,
            vlen: 0,
            kind_flag: false,
            size_or_type: 0,
            extra: 0,
        }];
        let mut at = 0;
        while at < type_section.len() {
            let (Some(name_off), Some(info), Some(size_or_type)) = (
                u32_at(type_section, at),
                u32_at(type_section, at + 4),
                u32_at(type_section, at + 8),
            ) else {
                return Err(bad("truncated type"));
            };
            let (kind, vlen) = ((info >> 24) & 0x1f, info & 0xffff);
            let extra = at + 12;
            let len = extra_len(kind, vlen).ok_or(bad("unknown type kind"))?;
            types.push(Type {
                name_off,
                kind,
                vlen,
                kind_flag: info >> 31 == 1,
                size_or_type,
                extra,
            });
            at = extra.checked_add(len).ok_or(bad("type section overflow"))?;
        }
        let mut btf = Self { types, type_section, strings, by_name: HashMap::new() };
        for (id, t) in btf.types.iter().enumerate().skip(1) {
            if matches!(t.kind, KIND_STRUCT | KIND_TYPEDEF)
                && let Some(name) = btf.name(t.name_off)
                && let Ok(id) = u32::try_from(id)
            {
                btf.by_name.entry(name).or_default().push(id);
            }
        }
        Ok(btf)
    }

    fn name(&self, off: u32) -> Option<&'a str> {
        let strings = self.strings;
        let rest = strings.get(usize::try_from(off).ok()?..)?;
        let end = rest.iter().position(|b| *b == 0)?;
        std::str::from_utf8(&rest[..end]).ok()
    }

    fn ty(&self, id: u32) -> Option<&Type> {
        self.types.get(usize::try_from(id).ok()?)
    }

    /// Follows typedefs (and const/volatile) to the type they name.
    fn resolve(&self, mut id: u32) -> Option<&Type> {
        for _ in 0..16 {
            let t = self.ty(id)?;
            match t.kind {
                KIND_TYPEDEF | 9 | 10 | 11 | 18 => id = t.size_or_type,
                _ => return Some(t),
            }
        }
        None
    }

    /// The byte offset of `member` in struct (or typedef of a struct) `ty`, looking into
    /// anonymous structs and unions; `path` may name nested members (`sk_lock.owned`).
    pub fn offset(&self, ty: &str, path: &str) -> Result<u32, BtfError> {
        let start = self
            .by_name
            .get(ty)
            .and_then(|ids| ids.iter().find_map(|id| self.resolve(*id).filter(|t| is_aggregate(t))))
            .ok_or_else(|| BtfError::NoStruct(ty.to_owned()))?;
        let no_member = || BtfError::NoMember { ty: ty.to_owned(), member: path.to_owned() };
        let mut current = *start;
        let mut total_bits = 0u64;
        for part in path.split('.') {
            let (bits, member_type) = self.find(&current, part, 0).ok_or_else(no_member)?;
            total_bits += bits;
            current = *self.resolve(member_type).ok_or_else(no_member)?;
        }
        if !total_bits.is_multiple_of(8) {
            return Err(BtfError::BitField { ty: ty.to_owned(), member: path.to_owned() });
        }
        u32::try_from(total_bits / 8).map_err(|_| no_member())
    }

    /// (bit offset, type id) of `name` in aggregate `t`, searching anonymous members.
    fn find(&self, t: &Type, name: &str, depth: u32) -> Option<(u64, u32)> {
        if depth > 8 || !is_aggregate(t) {
            return None;
        }
        for i in 0..usize::try_from(t.vlen).ok()? {
            let at = t.extra + 12 * i;
            let (m_name, m_type, m_off) = (
                u32_at(self.type_section, at)?,
                u32_at(self.type_section, at + 4)?,
                u32_at(self.type_section, at + 8)?,
            );
            // With kind_flag, the top 8 bits are a bit-field size.
            let bits = u64::from(if t.kind_flag { m_off & 0x00ff_ffff } else { m_off });
            if m_name == 0 {
                let inner = self.resolve(m_type)?;
                if let Some((b, id)) = self.find(inner, name, depth + 1) {
                    return Some((bits + b, id));
                }
            } else if self.name(m_name) == Some(name) {
                return Some((bits, m_type));
            }
        }
        None
    }
}

/// The offsets of every socket field the kernel programs read, each found under the
/// names the kernels since 6.1 give it.
pub fn socket_fields(btf: &Btf<'_>) -> Result<FieldOffsets, BtfError> {
    let find = |ty: &str, paths: &[&str]| {
        let mut first = None;
        for path in paths {
            match btf.offset(ty, path) {
                Ok(off) => return Ok(off),
                Err(e) => {
                    first.get_or_insert(e);
                }
            }
        }
        Err(first.unwrap_or_else(|| BtfError::NoStruct(ty.to_owned())))
    };
    Ok(FieldOffsets {
        sk_err: find("sock", &["sk_err"])?,
        // A member of `struct sock` until 6.x moved it into `struct sock_common`.
        sk_flags: find("sock", &["sk_flags", "__sk_common.skc_flags"])?,
        sk_lock_slock: find("sock", &["sk_lock.slock"])?,
        sk_lock_owned: find("sock", &["sk_lock.owned"])?,
        bytes_acked: find("tcp_sock", &["bytes_acked"])?,
        bytes_received: find("tcp_sock", &["bytes_received"])?,
        bytes_sent: find("tcp_sock", &["bytes_sent"])?,
        bytes_retrans: find("tcp_sock", &["bytes_retrans"])?,
        total_retrans: find("tcp_sock", &["total_retrans"])?,
        srtt_us: find("tcp_sock", &["srtt_us"])?,
        ..FieldOffsets::default()
    }
    .with_span())
}

fn is_aggregate(t: &Type) -> bool {
    t.kind == KIND_STRUCT || t.kind == KIND_UNION
}

#[cfg(test)]
mod tests;
