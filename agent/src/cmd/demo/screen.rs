//! The demo's screen: a frame (the pair table and the newest violations) redrawn in
//! place on a terminal, or appended plainly on a pipe (and with `--verbose`, whose log
//! lines on stderr would break an in-place redraw).
#![forbid(unsafe_code)]

use std::{
    io::{IsTerminal, Write},
    time::Duration,
};

use ratatui_crossterm::crossterm::terminal;

/// How often a frame is drawn: in place it costs no scrolling, so more often.
const IN_PLACE_EVERY: Duration = Duration::from_secs(1);
const APPEND_EVERY: Duration = Duration::from_secs(3);

pub(crate) struct Screen {
    in_place: bool,
    color: bool,
    /// Lines of the frame on screen, to move back over.
    drawn: usize,
}

impl Screen {
    /// In place when stdout is a terminal and the log is not on stderr; coloured on a
    /// terminal.
    pub(crate) fn new(verbose: bool) -> Self {
        let tty = std::io::stdout().is_terminal();
        Self { in_place: tty && !verbose, color: tty, drawn: 0 }
    }

    pub(crate) fn color(&self) -> bool {
        self.color
    }

    pub(crate) fn every(&self) -> Duration {
        if self.in_place { IN_PLACE_EVERY } else { APPEND_EVERY }
    }

    /// Draws `frame`: over the previous one on a terminal, after it on a pipe.
    pub(crate) fn show(&mut self, frame: &str) {
        let mut out = std::io::stdout().lock();
        if !self.in_place {
            let _ = writeln!(out, "{frame}");
            let _ = out.flush();
            return;
        }
        let (cols, rows) = terminal::size().unwrap_or((80, 24));
        // One screen line per frame line, so that moving back over them is exact.
        let lines: Vec<String> = frame.lines().map(|l| fit(l, usize::from(cols))).collect();
        let mut text = String::new();
        if lines.len() + 1 >= usize::from(rows) {
            // Taller than the terminal: the cursor cannot move back over it all.
            text.push_str("\x1b[H\x1b[2J");
        } else if self.drawn > 0 {
            text.push_str(&format!("\x1b[{}A\r\x1b[J", self.drawn));
        }
        for l in &lines {
            text.push_str(l);
            text.push('\n');
        }
        self.drawn = lines.len();
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    }
}

/// `line` cut to `width` visible characters; colour sequences do not count, and a cut
/// coloured line still ends its colour.
fn fit(line: &str, width: usize) -> String {
    let mut out = String::with_capacity(line.len());
    let (mut shown, mut in_escape, mut cut) = (0, false, false);
    for c in line.chars() {
        if in_escape {
            out.push(c);
            in_escape = c != 'm';
        } else if c == '\x1b' {
            out.push(c);
            in_escape = true;
        } else if shown < width {
            out.push(c);
            shown += 1;
        } else {
            cut = true;
        }
    }
    if cut && line.contains('\x1b') {
        out.push_str("\x1b[0m");
    }
    out
}

/// The frame: the pair table under its heading, then the newest violation of each
/// pair.
pub(crate) fn frame(heading: &str, table: &str, violations: &[String]) -> String {
    let mut out = format!("{heading}\n{table}\nnewest violations, one line per cell pair:\n");
    if violations.is_empty() {
        out.push_str("  (none yet)\n");
    }
    for v in violations {
        out.push_str("  ");
        out.push_str(v);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests;
