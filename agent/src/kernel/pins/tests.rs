//! Unit tests of `pins`.

use super::*;

#[test]
fn what_a_run_does_with_what_it_finds() {
    assert_eq!(decide(Found::Nothing, 7, false), PinnedState::Fresh);
    assert_eq!(decide(Found::Readable { build: 7 }, 7, false), PinnedState::Adopted);
    assert_eq!(decide(Found::Readable { build: 7 }, 7, true), PinnedState::Replaced);
    assert_eq!(decide(Found::Readable { build: 6 }, 7, false), PinnedState::Replaced);
    let newer = Unreadable::Layout(LAYOUT_VERSION + 1);
    assert_eq!(decide(Found::Unreadable(newer), 7, false), PinnedState::Discarded(newer));
    assert_eq!(newer.to_string(), format!("has layout {}", LAYOUT_VERSION + 1));
}

#[test]
fn build_ids_tell_objects_apart() {
    assert_ne!(build_id(b"cellwatch-a"), build_id(b"cellwatch-b"));
    assert_eq!(build_id(b""), 0x811c_9dc5);
}

#[test]
fn a_missing_directory_holds_nothing() {
    let dir = PinDir::new(std::path::Path::new("/nonexistent/cellwatch-pins"));
    assert_eq!(inspect(&dir), Found::Nothing);
}
