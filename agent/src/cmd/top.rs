//! `cellwatch top`: a live terminal view of a running agent, from two scrapes of its
//! `/metrics` at a time and its `/violations`. The arithmetic is `agent_view`'s;
//! here are where the agent is read ([`source`]), the keys ([`app`]), the screen
//! ([`ui`]) and the terminal ([`term`]). `--once` prints one plain table instead.
#![forbid(unsafe_code)]

mod app;
mod source;
mod term;
mod ui;

use std::{
    io::{self, IsTerminal},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use agent_view::{
    top::{self, SortKey},
    violations::{self, Violation},
};
use ratatui_crossterm::crossterm::event::{self, Event, KeyEventKind};

use crate::cli::{TopArgs, TopSort};
use app::{Action, App};
use source::{Reading, Source};

/// Time between two scrapes: the interval the rates are over.
const INTERVAL: Duration = Duration::from_secs(2);
/// How many pairs the violation panel shows at most.
const PANEL_PAIRS: usize = 5;

#[derive(Debug, thiserror::Error)]
pub(crate) enum TopError {
    #[error("`{url}` is not an agent's URL: {why} (e.g. --url http://127.0.0.1:9473)")]
    Url { url: String, why: String },
    #[error(
        "cannot read a cellwatch agent at {url}: {source} (is `cellwatch run` serving there? \
         --url names its --listen address)"
    )]
    Unreachable { url: String, source: io::Error },
    #[error("{url}/metrics answers, but not with cellwatch's metrics")]
    NotCellwatch { url: String },
    #[error("stdout is not a terminal: `cellwatch top --once` prints one plain table")]
    NotTerminal,
    #[error("the terminal failed: {0}")]
    Terminal(#[source] io::Error),
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] io::Error),
}

pub(crate) fn top(args: &TopArgs) -> Result<(), TopError> {
    let source = Source::new(&args.url)?;
    let first = source.read()?;
    let app = App { sort: sort_key(args.sort), cell: args.cell.clone(), typing: None };
    if args.once {
        std::thread::sleep(INTERVAL);
        let second = source.read()?;
        print!("{}", once(&source.url, &app, &first, &second));
        return Ok(());
    }
    if !io::stdout().is_terminal() {
        return Err(TopError::NotTerminal);
    }
    live(&source, app, first)
}

fn sort_key(s: TopSort) -> SortKey {
    match s {
        TopSort::Opened => SortKey::Opened,
        TopSort::Violations => SortKey::Violations,
        TopSort::Bytes => SortKey::Bytes,
        TopSort::Rtt => SortKey::Rtt,
    }
}

/// Seconds since the Unix epoch, for the age of violations.
fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// The panel's lines: the newest violation of each pair the filter lets through.
fn panel(violations: &Result<Vec<Violation>, String>, cell: Option<&str>) -> Vec<String> {
    match violations {
        Ok(v) => violations::latest_per_pair(v, cell, PANEL_PAIRS)
            .into_iter()
            .map(|v| violations::violation_line(v, now()))
            .collect(),
        Err(e) => vec![e.clone()],
    }
}

/// `--once`: the rows between two readings, as plain text.
fn once(url: &str, app: &App, first: &Reading, second: &Reading) -> String {
    let seconds = second.at.duration_since(first.at).as_secs_f64();
    let rows = top::rows(Some(&first.pairs), &second.pairs, seconds);
    let pairs = rows.len();
    let rows = top::view(rows, app.sort, app.cell.as_deref());
    let mut out =
        top::heading(url, app.sort, app.cell.as_deref(), rows.len(), pairs, Some(seconds));
    out.push('\n');
    out.push_str(&top::plain_table(&rows));
    out.push_str(&format!("{}\n\nnewest violations, one line per cell pair:\n", top::FOOTNOTE));
    let lines = panel(&second.violations, app.cell.as_deref());
    if lines.is_empty() {
        out.push_str("  (none)\n");
    }
    for l in lines {
        out.push_str(&format!("  {l}\n"));
    }
    out
}

/// The live view until `q`: a reading every [`INTERVAL`], a redraw on every key. An
/// agent that stops answering leaves the last figures on screen with a line saying so;
/// when it answers again (restarted: its counters went down) the rates go on from there.
fn live(source: &Source, mut app: App, first: Reading) -> Result<(), TopError> {
    let mut term = term::Term::enter().map_err(TopError::Terminal)?;
    let mut rows = top::rows(None, &first.pairs, 0.0);
    let mut violations = first.violations;
    let mut base = (first.at, first.pairs);
    let mut interval = None;
    let mut trouble: Option<String> = None;
    let mut next = Instant::now() + INTERVAL;
    loop {
        let shown = top::view(rows.clone(), app.sort, app.cell.as_deref());
        let lines = panel(&violations, app.cell.as_deref());
        let screen = ui::Screen {
            url: &source.url,
            app: &app,
            rows: &shown,
            pairs: rows.len(),
            violations: &lines,
            trouble: trouble.as_deref(),
            interval,
        };
        term.terminal.draw(|f| ui::draw(f, &screen)).map_err(TopError::Terminal)?;
        let wait = next.saturating_duration_since(Instant::now());
        if event::poll(wait).map_err(TopError::Terminal)? {
            if let Event::Key(k) = event::read().map_err(TopError::Terminal)?
                && k.kind == KeyEventKind::Press
                && app.key(k) == Action::Quit
            {
                return Ok(());
            }
            continue;
        }
        next = Instant::now() + INTERVAL;
        match source.read() {
            Ok(r) => {
                let seconds = r.at.duration_since(base.0).as_secs_f64();
                rows = top::rows(Some(&base.1), &r.pairs, seconds);
                interval = Some(seconds);
                violations = r.violations;
                base = (r.at, r.pairs);
                trouble = None;
            }
            Err(e) => {
                let since = trouble.take().unwrap_or_else(|| {
                    format!(
                        "{e}; showing the last figures and trying again every {} s",
                        INTERVAL.as_secs()
                    )
                });
                trouble = Some(since);
            }
        }
    }
}
