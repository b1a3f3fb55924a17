//! The terminal while `top` runs: raw mode and the alternate screen, given back when the
//! view ends however it ends: on `q`, on an error (the guard's drop) and on a panic (a
//! hook that restores the terminal before the panic message is printed).
#![forbid(unsafe_code)]

use std::{
    io::{self, Stdout},
    sync::Once,
};

use ratatui::Terminal;
use ratatui_crossterm::{
    CrosstermBackend,
    crossterm::{
        cursor, execute,
        terminal::{self, EnterAlternateScreen, LeaveAlternateScreen},
    },
};

/// The terminal in the view's state; dropping it restores the user's.
pub(crate) struct Term {
    pub(crate) terminal: Terminal<CrosstermBackend<Stdout>>,
}

impl Term {
    pub(crate) fn enter() -> io::Result<Self> {
        static HOOK: Once = Once::new();
        HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                restore();
                previous(info);
            }));
        });
        terminal::enable_raw_mode()?;
        let entered = execute!(io::stdout(), EnterAlternateScreen, cursor::Hide)
            .and_then(|()| Terminal::new(CrosstermBackend::new(io::stdout())));
        match entered {
            Ok(terminal) => Ok(Self { terminal }),
            Err(e) => {
                restore();
                Err(e)
            }
        }
    }
}

impl Drop for Term {
    fn drop(&mut self) {
        restore();
    }
}

/// Leaves raw mode and the alternate screen and shows the cursor; harmless when done
/// already.
fn restore() {
    let _ = terminal::disable_raw_mode();
    let _ = execute!(io::stdout(), LeaveAlternateScreen, cursor::Show);
}
