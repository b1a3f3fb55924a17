//! How `top`, `report`, `drain-status` and the demo print: figures (rates, bytes,
//! durations, shares, times and spans of time), text made safe for a terminal, and tables
//! of aligned columns.

/// `12.5` (per second), with `k` above ten thousand; `-` without a rate yet.
pub fn fmt_rate(v: Option<f64>) -> String {
    match v {
        None => "-".to_owned(),
        Some(v) if v >= 10_000.0 => format!("{:.1}k", v / 1e3),
        Some(v) => format!("{v:.1}"),
    }
}

/// Bytes in binary units: `512 B`, `1.5 KiB`, `3.2 MiB`, `1.1 GiB`.
pub fn fmt_bytes(v: Option<f64>) -> String {
    let Some(v) = v else { return "-".to_owned() };
    const UNITS: [&str; 3] = ["KiB", "MiB", "GiB"];
    if v < 1024.0 {
        return format!("{v:.0} B");
    }
    let mut scaled = v / 1024.0;
    let mut unit = UNITS[0];
    for u in &UNITS[1..] {
        if scaled < 1024.0 {
            break;
        }
        scaled /= 1024.0;
        unit = u;
    }
    format!("{scaled:.1} {unit}")
}

/// Seconds as `64µs`, `1.25ms`, `12.5ms`, `250ms`, `1.05s`.
pub fn fmt_duration(s: f64) -> String {
    if s < 1e-3 {
        format!("{:.0}µs", s * 1e6)
    } else if s < 1e-2 {
        format!("{:.2}ms", s * 1e3)
    } else if s < 0.1 {
        format!("{:.1}ms", s * 1e3)
    } else if s < 1.0 {
        format!("{:.0}ms", s * 1e3)
    } else {
        format!("{s:.2}s")
    }
}

/// A share as `62.5%`; `-` with nothing to share.
pub fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{:.1}%", v * 100.0))
}

/// Unix seconds as RFC 3339 in UTC, to the second: `2026-12-01T10:00:00Z`. A time that
/// is not finite is `-`.
pub fn rfc3339(unix: f64) -> String {
    if !unix.is_finite() {
        return "-".to_owned();
    }
    let secs = whole_seconds(unix);
    let (days, of_day) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil(days);
    let (hh, mm, ss) = (of_day / 3600, of_day % 3600 / 60, of_day % 60);
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
}

/// Seconds, rounded down, within what a date of four digits holds.
#[expect(clippy::cast_possible_truncation, reason = "clamped to years 0 to 9999 first")]
fn whole_seconds(unix: f64) -> i64 {
    unix.floor().clamp(-62_167_219_200.0, 253_402_300_799.0) as i64
}

/// Days since 1970-01-01 as (year, month, day) of the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
fn civil(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let (era, doe) = (z.div_euclid(146_097), z.rem_euclid(146_097));
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// A span of whole seconds in its two largest units: `3d 4h`, `2h 5m`, `4m 10s`, `12s`.
pub fn fmt_span(secs: u64) -> String {
    const UNITS: [(&str, u64); 4] = [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)];
    let Some(i) = UNITS.iter().position(|(_, per)| secs >= *per) else {
        return "0s".to_owned();
    };
    let (unit, per) = UNITS[i];
    match UNITS.get(i + 1) {
        Some((next, next_per)) if secs % per >= *next_per => {
            format!("{}{unit} {}{next}", secs / per, secs % per / next_per)
        }
        _ => format!("{}{unit}", secs / per),
    }
}

/// `s` with every control character escaped (`\u{1b}`...): a process can name itself
/// anything, escape sequences that would erase or rewrite the operator's screen included.
pub fn printable(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_owned();
    }
    s.chars()
        .flat_map(|c| {
            let esc: Vec<char> =
                if c.is_control() { c.escape_default().collect() } else { vec![c] };
            esc
        })
        .collect()
}

/// Each column's width: its widest cell or its heading, at least `min` (when given).
pub fn widths<R: AsRef<[String]>>(header: &[&str], min: &[usize], rows: &[R]) -> Vec<usize> {
    (0..header.len())
        .map(|i| {
            let widest = rows.iter().map(|r| r.as_ref()[i].chars().count());
            let at_least = min.get(i).copied().unwrap_or(0);
            widest.chain([header[i].len(), at_least]).max().unwrap_or(0)
        })
        .collect()
}

/// A table of aligned columns: each line starts with `indent`, columns are `gap` apart,
/// as wide as [`widths`] says; `numeric` ones are aligned right. Lines end trimmed.
#[derive(Clone, Copy)]
pub struct Table<'a> {
    pub indent: &'a str,
    pub gap: &'a str,
    pub header: &'a [&'a str],
    pub numeric: &'a [bool],
    /// Each column's least width (none when empty).
    pub min: &'a [usize],
}

impl<'a> Table<'a> {
    /// Columns two spaces apart, as wide as they need.
    pub fn new(indent: &'a str, header: &'a [&'a str], numeric: &'a [bool]) -> Self {
        Self { indent, gap: "  ", header, numeric, min: &[] }
    }

    /// The heading line, then one line per row, without line ends.
    pub fn lines<R: AsRef<[String]>>(&self, rows: &[R]) -> Vec<String> {
        let widths = widths(self.header, self.min, rows);
        let line = |row: &[String]| {
            let mut out = self.indent.to_owned();
            for (i, c) in row.iter().enumerate() {
                let pad = " ".repeat(widths[i].saturating_sub(c.chars().count()));
                out.push_str(if i == 0 { "" } else { self.gap });
                if self.numeric[i] {
                    out.push_str(&pad);
                    out.push_str(c);
                } else {
                    out.push_str(c);
                    out.push_str(&pad);
                }
            }
            out.trim_end().to_owned()
        };
        let header: Vec<String> = self.header.iter().map(|h| (*h).to_owned()).collect();
        let mut out = vec![line(&header)];
        out.extend(rows.iter().map(|r| line(r.as_ref())));
        out
    }

    /// [`Table::lines`], each ending a line.
    pub fn render<R: AsRef<[String]>>(&self, rows: &[R]) -> String {
        self.lines(rows).into_iter().map(|l| l + "\n").collect()
    }
}

#[cfg(test)]
mod tests;
