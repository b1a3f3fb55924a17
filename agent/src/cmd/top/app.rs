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
mod tests {
    use super::*;

    fn press(app: &mut App, keys: &str) -> Vec<Action> {
        keys.chars()
            .map(|c| {
                let code = match c {
                    '\n' => KeyCode::Enter,
                    '\x1b' => KeyCode::Esc,
                    '\x08' => KeyCode::Backspace,
                    c => KeyCode::Char(c),
                };
                app.key(KeyEvent::new(code, KeyModifiers::NONE))
            })
            .collect()
    }

    #[test]
    fn keys() {
        let mut app = App::default();
        press(&mut app, "ss");
        assert_eq!(app.sort, SortKey::Bytes);
        // While typing, q and s are letters of the name.
        press(&mut app, "/cell-qsx\x08\n");
        assert_eq!((app.cell.as_deref(), app.typing.as_ref()), (Some("cell-qs"), None));
        assert_eq!(app.sort, SortKey::Bytes);
        press(&mut app, "\x1b");
        assert_eq!(app.cell, None);
        press(&mut app, "/b\x1b");
        assert_eq!((app.cell.as_ref(), app.typing.as_ref()), (None, None));
        // An empty name clears the filter too.
        press(&mut app, "/a\n/\n");
        assert_eq!(app.cell, None);
        assert_eq!(press(&mut app, "q"), [Action::Quit]);
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        app.typing = Some(String::new());
        assert_eq!(app.key(ctrl_c), Action::Quit);
    }
}
