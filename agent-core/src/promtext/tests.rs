//! Unit tests of `promtext`.

use super::*;

#[test]
fn reads_names_labels_and_values() {
    let text = "# HELP x y\n# TYPE x counter\nup 1\n\
                    cellwatch_connections_opened_total{src_cell=\"cell-1\",dst_cell=\"a\\\"b\\\\\",direction=\"egress\"} 42\n\
                    h_bucket{le=\"+Inf\"} 3\nbroken{a=\"x\" 1\n";
    let s = parse(text);
    assert_eq!(s.len(), 3, "{s:?}");
    assert_eq!((s[0].name.as_str(), s[0].value, s[0].labels.len()), ("up", 1.0, 0));
    assert_eq!(s[1].label("src_cell"), "cell-1");
    assert_eq!(s[1].label("dst_cell"), "a\"b\\");
    assert_eq!(s[1].label("direction"), "egress");
    assert_eq!(s[1].value, 42.0);
    assert_eq!((s[2].label("le"), s[2].value), ("+Inf", 3.0));
}
