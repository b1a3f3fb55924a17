//! Tests that the tree's indexes and layout cannot drift: every source file is in the
//! README's map (every test file in `tests/README.md`'s), every list of test areas in the
//! docs is `AREAS` or `FORCED_AREAS`, a module's doc that lists its submodules lists them
//! all, one layout for modules and unit tests, and no modules importing in a circle.

use std::{
    fs,
    path::{Path, PathBuf},
};

use crate::vm::init::{AREAS, FORCED_AREAS};

/// The crates whose sources the map must name, as the map's top-level lines spell them.
const MAPPED: &[&str] = &[
    "agent-ebpf/src/",
    "agent-common/src/",
    "agent-core/src/",
    "agent-view/src/",
    "agent/src/",
    "xtask/",
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace").to_path_buf()
}

fn read(path: &str) -> String {
    fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The code block that follows "## How it works" in the README.
fn map(readme: &str) -> &str {
    let section = &readme[readme.find("## How it works").expect("the README's map section")..];
    let start = section.find("```\n").expect("the map's code block") + 4;
    let len = section[start..].find("```").expect("the map's closing fence");
    &section[start..start + len]
}

/// The part of the map under the top-level line that starts with `krate`, up to the
/// next top-level line.
fn section<'a>(map: &'a str, krate: &str) -> &'a str {
    let start = map
        .lines()
        .position(|l| l.starts_with(krate))
        .unwrap_or_else(|| panic!("the README's map has no line for {krate}"));
    let lines: Vec<&str> = map.lines().collect();
    let end = lines[start + 1..]
        .iter()
        .position(|l| !l.starts_with(' '))
        .map_or(lines.len(), |n| start + 1 + n);
    let first = lines[start].as_ptr() as usize - map.as_ptr() as usize;
    let last = lines.get(end).map_or(map.len(), |l| l.as_ptr() as usize - map.as_ptr() as usize);
    &map[first..last]
}

/// Every `.rs` file under `dir`, as paths relative to it.
fn sources(dir: &Path, rel: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = fs::read_dir(dir.join(rel))
        .unwrap_or_else(|e| panic!("{}: {e}", dir.join(rel).display()))
        .map(|e| e.expect("a directory entry"))
        .collect();
    entries.sort_by_key(fs::DirEntry::file_name);
    for e in entries {
        let path = rel.join(e.file_name());
        if e.file_type().expect("a file type").is_dir() {
            sources(dir, &path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// The word the map names `path` by: a directory module by `dir/`, a file by its name
/// (or, for xtask's terser lines, its stem). Crate roots and test files need none.
fn named_by(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    match name {
        "tests.rs" => None,
        "lib.rs" | "main.rs" if path.parent() == Some(Path::new("")) => None,
        "mod.rs" => Some(format!("{}/", path.parent()?.file_name()?.to_str()?)),
        _ => Some(name.to_owned()),
    }
}

/// Whether `text` holds `word` not as part of a longer name.
fn mentions(text: &str, word: &str) -> bool {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    text.match_indices(word).any(|(i, _)| {
        !text[..i].chars().next_back().is_some_and(is_name)
            && !text[i + word.len()..].chars().next().is_some_and(is_name)
    })
}

/// The files of `krate` (a map line such as `agent/src/`) under `tree` that `map` does
/// not name.
fn unmapped(tree: &Path, map: &str, krate: &str) -> Vec<String> {
    let part = section(map, krate);
    let dir = if krate == "xtask/" { "xtask/src/" } else { krate };
    let mut files = Vec::new();
    sources(&tree.join(dir), Path::new(""), &mut files);
    files
        .iter()
        .filter_map(|f| {
            let word = named_by(f)?;
            let stem = word.trim_end_matches(".rs").trim_end_matches('/');
            let found = mentions(part, &word) || (krate == "xtask/" && mentions(part, stem));
            (!found).then(|| format!("{dir}{}", f.display()))
        })
        .collect()
}

#[test]
fn every_source_file_is_in_the_readmes_map() {
    let readme = read("README.md");
    let map = map(&readme);
    let missing: Vec<String> = MAPPED.iter().flat_map(|k| unmapped(&root(), map, k)).collect();
    assert!(missing.is_empty(), "the README's map (## How it works) does not name: {missing:?}");
}

/// The test binary's modules and the harness's, each named in `tests/README.md`'s layout.
#[test]
fn every_test_file_is_in_the_tests_readme() {
    let readme = read("tests/README.md");
    let layout = &readme[readme.find("## Layout").expect("tests/README.md's layout")..];
    let layout = &layout[..layout[3..].find("\n## ").map_or(layout.len(), |n| n + 3)];
    let mut missing = Vec::new();
    for (dir, spelled) in [("tests/tests/it", ""), ("tests/src", "src/")] {
        let mut files = Vec::new();
        sources(&root().join(dir), Path::new(""), &mut files);
        for f in files {
            let name = f.display().to_string();
            let found = if spelled.is_empty() {
                mentions(layout, &name)
            } else {
                mentions(layout, &format!("{spelled}{name}")) || mentions(layout, &name)
            };
            if !found {
                missing.push(format!("{dir}/{name}"));
            }
        }
    }
    assert!(missing.is_empty(), "tests/README.md's layout does not name: {missing:?}");
}

#[test]
fn a_file_left_out_of_the_map_is_found() {
    let map = "agent/src/   the agent\n  main.rs, cli.rs  the binary\n  serve/  http.rs\nxtask/\n";
    assert!(mentions(section(map, "agent/src/"), "http.rs"));
    assert!(!mentions(section(map, "agent/src/"), "xtask/"));
    assert!(!mentions("timed.rs", "med.rs"));
    assert_eq!(named_by(Path::new("serve/mod.rs")).as_deref(), Some("serve/"));
    assert_eq!(named_by(Path::new("main.rs")), None);
    assert_eq!(named_by(Path::new("serve/tests.rs")), None);
    // A tree with one file more than its map names.
    let tree = std::env::temp_dir().join(format!("cellwatch-index-{}", std::process::id()));
    for f in ["main.rs", "cli.rs", "serve.rs", "serve/http.rs", "serve/tests.rs", "serve/extra.rs"]
    {
        let path = tree.join("agent/src").join(f);
        fs::create_dir_all(path.parent().expect("a parent")).expect("the scratch tree");
        fs::write(&path, "").expect("a scratch file");
    }
    let map =
        "agent/src/   the agent\n  main.rs, cli.rs  the binary\n  serve.rs, serve/  http.rs\n";
    let missing = unmapped(&tree, map, "agent/src/");
    fs::remove_dir_all(&tree).expect("the scratch tree removed");
    assert_eq!(missing, ["agent/src/serve/extra.rs"]);
}

/// Every "the a, b and c areas" in `text`, each as its list of areas.
fn area_lists(text: &str) -> Vec<Vec<String>> {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let word = |w: &str| !w.is_empty() && w.chars().all(|c| c.is_ascii_lowercase() || c == '_');
    let mut lists = Vec::new();
    for (i, _) in flat.match_indices(" areas") {
        let Some(the) = flat[..i].rfind("the ") else { continue };
        let Some((head, last)) = flat[the + 4..i].rsplit_once(" and ") else { continue };
        let mut list: Vec<String> = head.split(", ").map(str::to_owned).collect();
        list.push(last.to_owned());
        if list.len() > 1 && list.iter().all(|w| word(w)) {
            lists.push(list);
        }
    }
    lists
}

#[test]
fn the_docs_lists_of_areas_are_the_matrixs() {
    let known = [AREAS, FORCED_AREAS];
    let mut seen = 0;
    for doc in ["README.md", "tests/README.md"] {
        for list in area_lists(&read(doc)) {
            assert!(
                known.iter().any(|k| *k == list.as_slice()),
                "{doc} lists the areas {list:?}, which are neither AREAS {AREAS:?} nor \
                 FORCED_AREAS {FORCED_AREAS:?} (xtask/src/vm/init.rs)"
            );
            seen += 1;
        }
    }
    assert!(seen >= 2, "the docs list the matrix's areas (README's Development section)");
    assert_eq!(
        area_lists("runs the foundation, cells and\n   live areas; the x areas"),
        [["foundation", "cells", "live"]]
    );
}

/// Every crate's sources, for the layout rules below.
const LAID_OUT: &[&str] = &[
    "agent-ebpf/src",
    "agent-common/src",
    "agent-core/src",
    "agent-view/src",
    "agent/src",
    "xtask/src",
    "tests/src",
    "tests/tests",
];

#[test]
fn one_layout_for_modules_and_unit_tests() {
    let mut wrong = Vec::new();
    for dir in LAID_OUT {
        let mut files = Vec::new();
        sources(&root().join(dir), Path::new(""), &mut files);
        for f in files {
            let path = format!("{dir}/{}", f.display());
            if f.file_name().is_some_and(|n| n == "mod.rs") {
                wrong.push(format!("{path}: a module with submodules is `foo.rs` beside `foo/`"));
            }
            if read(&path).lines().any(|l| l.ends_with("mod tests {")) {
                wrong.push(format!("{path}: unit tests go in the module's own `tests.rs`"));
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// A crate's modules by path (`kernel::load`), each with the source file it is in.
fn modules(src: &str) -> Vec<(String, String)> {
    let mut files = Vec::new();
    sources(&root().join(src), Path::new(""), &mut files);
    files
        .iter()
        .filter(|f| f.file_name().is_some_and(|n| n != "tests.rs"))
        .map(|f| {
            let path = f.with_extension("").display().to_string().replace('/', "::");
            let path = if path == "lib" || path == "main" { String::new() } else { path };
            (path, read(&format!("{src}/{}", f.display())))
        })
        .collect()
}

/// The items (`fn`, `struct`, `const`...) `text` defines with some `pub`.
fn defines(text: &str) -> Vec<String> {
    let kinds = ["fn", "struct", "enum", "type", "trait", "static", "const"];
    text.lines()
        .map(str::trim)
        .filter(|l| l.starts_with("pub"))
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            // `pub const fn f` names `f`: the name follows the last kind word.
            let i = words.iter().rposition(|w| kinds.contains(w))?;
            let name =
                words.get(i + 1)?.split(|c: char| !c.is_alphanumeric() && c != '_').next()?;
            Some(name.to_owned())
        })
        .collect()
}

/// The modules `text` (the code of module `me`, comments left out) imports from its
/// crate: the longest known module of each `crate::a::b` and `super::a` path, and for an
/// item the crate root re-exports (`crate::Item`), the module that defines it
/// (`owners`: item, module).
fn imports(me: &str, text: &str, known: &[String], owners: &[(String, String)]) -> Vec<String> {
    let code: String = text
        .lines()
        .map(|l| l.split_once("//").map_or(l, |(code, _)| code))
        .collect::<Vec<_>>()
        .join("\n")
        .replace(char::is_whitespace, "");
    let parent = me.rsplit_once("::").map_or("", |(p, _)| p);
    let mut out = Vec::new();
    for (prefix, base) in [("crate::", ""), ("super::", parent)] {
        for (i, _) in code.match_indices(prefix) {
            let rest = &code[i + prefix.len()..];
            // `crate::{a, b::c}` names several paths; `crate::a::b` one.
            let group = rest.strip_prefix('{').map_or(rest, |g| &g[..g.find('}').unwrap_or(0)]);
            for item in group.split(',') {
                let mut path = base.to_owned();
                let mut found = None;
                let parts: Vec<&str> = item
                    .split("::")
                    .map(|p| p.trim_matches(|c: char| !c.is_alphanumeric() && c != '_'))
                    .collect();
                for part in &parts {
                    path = if path.is_empty() {
                        (*part).to_owned()
                    } else {
                        format!("{path}::{part}")
                    };
                    if known.contains(&path) {
                        found = Some(path.clone());
                    }
                }
                if found.is_none() && base.is_empty() {
                    found = owners.iter().find(|(i, _)| i == parts[0]).map(|(_, m)| m.clone());
                }
                if let Some(m) = found.filter(|m| m != me && !me.starts_with(&format!("{m}::"))) {
                    out.push(m);
                }
            }
        }
    }
    out
}

/// A circle of imports among `graph`'s modules, if there is one.
fn circle(graph: &[(String, Vec<String>)]) -> Option<Vec<String>> {
    fn visit(
        m: &str,
        graph: &[(String, Vec<String>)],
        path: &mut Vec<String>,
        done: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == m) {
            return Some(path[i..].to_vec());
        }
        if done.iter().any(|d| d == m) {
            return None;
        }
        path.push(m.to_owned());
        let next = graph.iter().find(|(n, _)| n == m).map(|(_, e)| e.clone()).unwrap_or_default();
        for n in next {
            if let Some(c) = visit(&n, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.push(m.to_owned());
        None
    }
    let mut done = Vec::new();
    graph.iter().find_map(|(m, _)| visit(m, graph, &mut Vec::new(), &mut done))
}

#[test]
fn no_module_imports_in_a_circle() {
    let crates = MAPPED
        .iter()
        .map(|k| if *k == "xtask/" { "xtask/src" } else { k.trim_end_matches('/') })
        .chain(["tests/src"]);
    for src in crates {
        let mods = modules(src);
        let known: Vec<String> = mods.iter().map(|(m, _)| m.clone()).collect();
        let owners: Vec<(String, String)> = mods
            .iter()
            .filter(|(m, _)| !m.is_empty())
            .flat_map(|(m, text)| defines(text).into_iter().map(move |i| (i, m.clone())))
            .collect();
        let graph: Vec<(String, Vec<String>)> =
            mods.iter().map(|(m, text)| (m.clone(), imports(m, text, &known, &owners))).collect();
        assert_eq!(circle(&graph), None, "{src}: these modules import each other in a circle");
    }
    let known = ["a".to_owned(), "a::b".to_owned(), "c".to_owned()];
    let owners = [("Thing".to_owned(), "c".to_owned())];
    assert_eq!(imports("c", "use crate::{a::b::Thing, x};", &known, &owners), ["a::b"]);
    assert_eq!(
        imports("a::b", "use super::c;\nuse crate::a::X; // crate::c", &known, &owners),
        Vec::<String>::new()
    );
    // Through the root's re-export: `crate::Thing` is `c`'s.
    assert_eq!(imports("a", "use crate::{Thing, b};", &known, &owners), ["c"]);
    assert_eq!(
        defines("pub const fn f() {}\npub(crate) struct S<T>;\npub const N: u8 = 1;"),
        ["f", "S", "N"]
    );
    let graph = [("a".to_owned(), vec!["c".to_owned()]), ("c".to_owned(), vec!["a".to_owned()])];
    assert_eq!(circle(&graph), Some(vec!["a".to_owned(), "c".to_owned()]));
}

/// The submodules `text` declares (`mod x;`, `pub(crate) mod x;`), tests left out.
fn declared(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_suffix(';')?.rsplit_once("mod ").map(|(_, m)| m.to_owned()))
        .filter(|m| m != "tests" && m.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        .collect()
}

#[test]
fn a_modules_doc_that_lists_its_submodules_lists_them_all() {
    let mut wrong = Vec::new();
    for src in
        MAPPED.iter().map(|k| if *k == "xtask/" { "xtask/src" } else { k.trim_end_matches('/') })
    {
        for (module, text) in modules(src) {
            let doc: String =
                text.lines().take_while(|l| l.starts_with("//!")).collect::<Vec<_>>().join(" ");
            let subs = declared(&text);
            let linked: Vec<&String> =
                subs.iter().filter(|m| doc.contains(&format!("[`{m}`]"))).collect();
            let missing: Vec<&String> =
                subs.iter().filter(|m| !doc.contains(&format!("[`{m}`]"))).collect();
            if !linked.is_empty() && !missing.is_empty() {
                wrong.push(format!(
                    "{src}: the doc of `{module}` lists its submodules but not {missing:?}"
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    assert_eq!(declared("mod a;\n#[cfg(test)]\nmod tests;\npub(crate) mod b_c;\n"), ["a", "b_c"]);
}
