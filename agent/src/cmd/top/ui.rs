//! One screen of `top`: a title line, the pair table (violating pairs in red), the
//! newest violation of each pair, what the columns mean and what the keys do.
#![forbid(unsafe_code)]

use agent_view::{
    format::widths,
    top::{COLUMNS, FOOTNOTE, NUMERIC, Row, heading},
};
use ratatui::{
    Frame,
    layout::{Constraint, Layout},
    style::{Color, Modifier, Style},
    text::Line,
    widgets::{Cell, Paragraph, Row as TableRow, Table},
};

use super::app::App;

/// What one screen shows.
pub(crate) struct Screen<'a> {
    pub(crate) url: &'a str,
    pub(crate) app: &'a App,
    /// Filtered and sorted.
    pub(crate) rows: &'a [Row],
    /// Pairs before the filter.
    pub(crate) pairs: usize,
    pub(crate) violations: &'a [String],
    /// Why the figures are not fresh (the agent does not answer), when they are not.
    pub(crate) trouble: Option<&'a str>,
    /// Seconds between the two scrapes the rates come from; `None` before the second.
    pub(crate) interval: Option<f64>,
}

pub(crate) fn draw(f: &mut Frame<'_>, s: &Screen<'_>) {
    let height = |n: usize| u16::try_from(n).unwrap_or(u16::MAX);
    // The table as tall as its rows (and its header), the panel right under it.
    let [title, trouble, table, violations, _, footnote, keys] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Length(height(s.rows.len().max(1) + 1)),
        Constraint::Length(height(s.violations.len().max(1) + 2)),
        Constraint::Fill(1),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(f.area());
    f.render_widget(Paragraph::new(title_line(s)).style(Style::new().bold()), title);
    if let Some(t) = s.trouble {
        f.render_widget(Paragraph::new(t).style(Style::new().fg(Color::Yellow)), trouble);
    }
    f.render_widget(pair_table(s.rows), table);
    if s.rows.is_empty() {
        let below_header = table.rows().nth(1).unwrap_or(table);
        f.render_widget(Paragraph::new("(no pair to show)"), below_header);
    }
    let mut lines = vec![Line::raw(""), Line::raw("newest violations, one line per cell pair:")];
    if s.violations.is_empty() {
        lines.push(Line::raw("  (none)"));
    }
    lines.extend(s.violations.iter().map(|v| Line::raw(format!("  {v}"))));
    f.render_widget(Paragraph::new(lines), violations);
    f.render_widget(
        Paragraph::new(FOOTNOTE).style(Style::new().add_modifier(Modifier::DIM)),
        footnote,
    );
    f.render_widget(Paragraph::new(key_line(s.app)).style(Style::new().reversed()), keys);
}

fn title_line(s: &Screen<'_>) -> String {
    heading(s.url, s.app.sort, s.app.cell.as_deref(), s.rows.len(), s.pairs, s.interval)
}

fn key_line(app: &App) -> String {
    match &app.typing {
        Some(text) => format!("filter by cell: {text}_   Enter applies, Esc clears"),
        None => format!(
            "q quit   s sort (now {}, next {})   / filter by cell   Esc clear the filter",
            app.sort.name(),
            app.sort.next().name()
        ),
    }
}

fn pair_table(rows: &[Row]) -> Table<'static> {
    let cells: Vec<[String; 10]> = rows.iter().map(Row::cells).collect();
    let widths: Vec<Constraint> = widths(&COLUMNS, &[], &cells)
        .into_iter()
        .map(|w| Constraint::Length(u16::try_from(w).unwrap_or(u16::MAX)))
        .collect();
    let cell = |i: usize, text: String| {
        let line = Line::raw(text);
        Cell::from(if NUMERIC[i] { line.right_aligned() } else { line })
    };
    let header = TableRow::new(COLUMNS.iter().enumerate().map(|(i, c)| cell(i, (*c).to_owned())))
        .style(Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED));
    let body = rows.iter().zip(cells).map(|(r, c)| {
        let row = TableRow::new(c.into_iter().enumerate().map(|(i, t)| cell(i, t)));
        if r.violations > 0.0 { row.style(Style::new().fg(Color::Red)) } else { row }
    });
    Table::new(body, widths).header(header).column_spacing(2)
}

#[cfg(test)]
mod tests;
