//! Unit tests of `app`.

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
