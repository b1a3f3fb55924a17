//! Query parameters of the JSON endpoints (`cell`, `drained`, `verdict`, `limit`). Anything else,
//! or a bad value, is refused with one sentence: nothing is silently ignored.

pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 10_000;
/// A longer query string is refused outright.
pub const MAX_QUERY: usize = 2048;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    /// Keep only connections with this cell at either end.
    pub cell: Option<String>,
    /// Keep only connections into this cell (its server end): a drain's holdouts.
    pub drained: Option<String>,
    /// `allowed` or `violation`.
    pub verdict: Option<&'static str>,
    pub limit: usize,
}

/// Parses `a=b&c=d`, accepting only the keys in `allowed`.
pub fn parse(raw: Option<&str>, allowed: &[&str]) -> Result<Query, String> {
    let mut q = Query { cell: None, drained: None, verdict: None, limit: DEFAULT_LIMIT };
    let Some(raw) = raw.filter(|r| !r.is_empty()) else { return Ok(q) };
    if raw.len() > MAX_QUERY {
        return Err(format!("the query string is longer than {MAX_QUERY} bytes"));
    }
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (k, v) = (decode(k)?, decode(v)?);
        if !allowed.contains(&k.as_str()) {
            return Err(format!(
                "unknown parameter `{}`: use {}",
                printable(&k),
                allowed.join(", ")
            ));
        }
        match k.as_str() {
            "cell" | "drained" => {
                if !crate::names::is_cell_name(&v) {
                    return Err(format!("`{k}` must be a cell name, not `{}`", printable(&v)));
                }
                let (this, other) =
                    if k == "cell" { (&mut q.cell, &q.drained) } else { (&mut q.drained, &q.cell) };
                if other.is_some() {
                    return Err("use `cell` or `drained`, not both".to_owned());
                }
                *this = Some(v);
            }
            "verdict" => {
                q.verdict = Some(match v.as_str() {
                    "allowed" => "allowed",
                    "violation" => "violation",
                    _ => {
                        return Err(format!(
                            "`verdict` must be allowed or violation, not `{}`",
                            printable(&v)
                        ));
                    }
                });
            }
            "limit" => {
                q.limit = match v.parse::<usize>() {
                    Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                    _ => {
                        return Err(format!(
                            "`limit` must be a number from 1 to {MAX_LIMIT}, not `{}`",
                            printable(&v)
                        ));
                    }
                };
            }
            _ => {}
        }
    }
    Ok(q)
}

/// Percent-decoding (and `+` for space); malformed escapes or non-UTF-8 are refused.
fn decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = b
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                out.push(hex.ok_or_else(|| "malformed %-escape in the query string".to_owned())?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| "the query string is not UTF-8".to_owned())
}

/// A value as quoted back: control characters escaped, at most 64 characters.
fn printable(v: &str) -> String {
    v.chars().take(64).flat_map(char::escape_default).collect()
}

#[cfg(test)]
mod tests;
