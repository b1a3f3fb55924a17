//! What the keys do to the view: `q` quits, `s` cycles the sort, `/` starts typing a
//! cell name that Enter applies, Esc clears the filter.
#![forbid(unsafe_code)]

use agent_view::top::SortKey;
use ratatui_crossterm::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// The view's state that the keys change.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct App {
    pub(crate) sort: SortKey,
    /// Only pairs with this cell at an end.
    pub(crate) cell: Option<String>,
    /// A cell name being typed after `/`.
    pub(crate) typing: Option<String>,
}

/// What a key asks of the loop.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Action {
    Quit,
    Redraw,
}

impl App {
    pub(crate) fn key(&mut self, k: KeyEvent) -> Action {
        if k.modifiers.contains(KeyModifiers::CONTROL) && k.code == KeyCode::Char('c') {
            return Action::Quit;
        }
        if let Some(text) = &mut self.typing {
            match k.code {
                KeyCode::Enter => {
                    let name = text.trim().to_owned();
                    self.cell = (!name.is_empty()).then_some(name);
                    self.typing = None;
                }
                KeyCode::Esc => {
                    self.typing = None;
                    self.cell = None;
                }
                KeyCode::Backspace => {
                    text.pop();
                }
                KeyCode::Char(c) if !c.is_control() => text.push(c),
                _ => {}
            }
            return Action::Redraw;
        }
        match k.code {
            KeyCode::Char('q') => return Action::Quit,
            KeyCode::Char('s') => self.sort = self.sort.next(),
            KeyCode::Char('/') => self.typing = Some(String::new()),
            KeyCode::Esc => self.cell = None,
            _ => {}
        }
        Action::Redraw
    }
}

#[cfg(test)]
mod tests;
