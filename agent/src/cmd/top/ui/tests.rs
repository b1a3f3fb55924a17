//! Unit tests of `ui`.

use super::*;
use agent_view::top::Quantiles;
use ratatui::{Terminal, backend::TestBackend};

fn screen_text(s: &Screen<'_>) -> String {
    let mut t = Terminal::new(TestBackend::new(140, 16)).unwrap();
    t.draw(|f| draw(f, s)).unwrap();
    let buf = t.backend().buffer().clone();
    (0..buf.area.height)
        .map(|y| (0..buf.area.width).map(|x| buf[(x, y)].symbol().to_owned()).collect::<String>())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_screen_shows_rows_violations_and_keys() {
    let row = Row {
        src: "cell-3".into(),
        dst: "cell-2".into(),
        opened: 8.0,
        opened_rate: Some(0.5),
        active: 0.0,
        violations: 8.0,
        violation_rate: Some(0.5),
        byte_rate: Some(5.0),
        connect: Quantiles { p50: Some(64e-6), p99: Some(128e-6), recent: true },
        rtt: Quantiles::default(),
    };
    let app = App { cell: Some("cell-2".into()), ..App::default() };
    let v = vec!["3s ago  cell-3 -> cell-2  curl[7]  a -> b".to_owned()];
    let s = Screen {
        url: "http://x:1",
        app: &app,
        rows: std::slice::from_ref(&row),
        pairs: 4,
        violations: &v,
        trouble: None,
        interval: Some(2.0),
    };
    let text = screen_text(&s);
    assert!(text.contains("sort: opened  cell: cell-2  pairs: 1 of 4  over 2.0 s"), "{text}");
    let line = text.lines().find(|l| l.trim_start().starts_with("cell-3")).unwrap();
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        words,
        ["cell-3", "cell-2", "8", "0.5", "0", "8", "0.5", "5", "B", "64µs/128µs", "-"]
    );
    assert!(text.contains("curl[7]") && text.contains("q quit"), "{text}");
    let typing = App { typing: Some("cel".into()), ..App::default() };
    let text = screen_text(&Screen { app: &typing, rows: &[], trouble: Some("down"), ..s });
    assert!(text.contains("filter by cell: cel_") && text.contains("(no pair to show)"), "{text}");
    assert!(text.contains("down"), "{text}");
}
