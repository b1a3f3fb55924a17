//! Unit tests of `ranges`.

use super::*;

fn overlap(x: Block, y: Block) -> bool {
    x.net == y.net && x.first <= y.last && y.first <= x.last
}

fn contains(b: Block, a: IpAddr) -> bool {
    let IpAddr::V4(v) = a else { return false };
    let [net, second, ..] = v.octets();
    net == b.net && (b.first..=b.last).contains(&second)
}

#[test]
fn no_two_areas_share_a_range() {
    for (i, (a, x)) in TABLE.iter().enumerate() {
        for (b, y) in &TABLE[i + 1..] {
            assert!(!overlap(*x, *y), "{a} ({x:?}) and {b} ({y:?}) overlap");
        }
    }
    // The check itself: neighbours and nesting are overlaps, other nets are not.
    assert!(overlap(Block::new(127, 1, 3), Block::new(127, 3, 9)));
    assert!(overlap(Block::new(127, 1, 9), Block::new(127, 3, 4)));
    assert!(!overlap(Block::new(127, 1, 3), Block::new(127, 4, 9)));
    assert!(!overlap(Block::new(127, 1, 3), Block::new(10, 1, 3)));
}

/// The blocks not chosen by tests hold what the files that fix them say.
#[test]
fn the_fixed_cell_maps_are_inside_their_blocks() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for (file, block) in
        [("agent/src/cmd/demo/demo.yaml", DEMO), ("deploy/kustomize/cells.yaml", DEPLOY)]
    {
        let text = std::fs::read_to_string(repo.join(file))
            .unwrap_or_else(|e| panic!("{file}: {e} (moved? update the table)"));
        let config = agent_core::config::Config::parse(file, &text).expect("a valid map");
        let v4: Vec<_> =
            config.cells.iter().flat_map(|c| &c.cidrs).filter(|n| n.network().is_ipv4()).collect();
        assert!(!v4.is_empty(), "{file}: no IPv4 cell");
        for n in v4 {
            assert!(
                contains(block, n.network()) && contains(block, n.broadcast()),
                "{file}: {n} is outside {block:?}"
            );
        }
    }
}

#[test]
fn addresses_and_cidrs_are_built_from_the_block() {
    assert_eq!(FOUNDATION.ip(1, 0, 1), "127.32.0.1".parse::<IpAddr>().unwrap());
    assert_eq!(FOUNDATION.cidr(7), "127.38.0.0/16");
    assert_eq!(HARNESS.cidr(0), "127.0.0.0/16");
    assert!(std::panic::catch_unwind(|| FOUNDATION.at(8)).is_err(), "127.39 is not ours");
}
