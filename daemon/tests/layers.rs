//! Imports point one way: each module of the daemon uses only modules of lower layers, as
//! the table in `src/lib.rs` says. This reads that table and every source file, and names
//! each import that points up (or sideways, within a layer).

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used)]

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// `module → layer`, from the `//! | N | `a`, `b` | … |` rows of lib.rs's docs.
fn layers() -> HashMap<String, u32> {
    let lib = std::fs::read_to_string(src().join("lib.rs")).expect("lib.rs");
    let mut layers = HashMap::new();
    for line in lib.lines() {
        let Some(row) = line.strip_prefix("//! | ") else {
            continue;
        };
        let mut cells = row.split(" | ");
        let (Some(layer), Some(modules)) = (cells.next(), cells.next()) else {
            continue;
        };
        let Ok(layer) = layer.trim().parse::<u32>() else {
            continue;
        };
        for module in modules.split(',') {
            layers.insert(module.trim().trim_matches('`').to_string(), layer);
        }
    }
    layers
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level modules a piece of code names as `crate::x…` or `use crate::{x, y…}`.
fn crate_modules(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level items of the group: `a`, `b::c`, `d::{e, f}`.
            let mut depth = 0;
            let mut item_start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && !c.is_whitespace() => {
                        found.insert(ident(&group[i..]));
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            found.insert(ident(rest));
        }
    }
    found.remove("");
    found
}

#[test]
fn imports_point_down_the_layers() {
    let layers = layers();
    assert!(layers.len() >= 10, "the layer table in lib.rs: {layers:?}");
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut wrong = Vec::new();
    for file in files {
        let relative = file.strip_prefix(src()).expect("under src");
        let first = relative
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .expect("name");
        let module = first.trim_end_matches(".rs");
        if module == "lib" || module == "main" {
            continue;
        }
        let own = *layers
            .get(module)
            .unwrap_or_else(|| panic!("module `{module}` is missing from lib.rs's layer table"));
        let code: String = std::fs::read_to_string(&file)
            .expect("read")
            .lines()
            // Doc links and comments name modules without depending on them.
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        for used in crate_modules(&code) {
            if used == module {
                continue;
            }
            match layers.get(&used) {
                Some(&layer) if layer < own => {}
                Some(&layer) => wrong.push(format!(
                    "{} (layer {own}) uses `{used}` (layer {layer})",
                    relative.display()
                )),
                None => wrong.push(format!(
                    "{} uses `crate::{used}`, which is not in the layer table",
                    relative.display()
                )),
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports pointing up:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_checker_sees_grouped_and_nested_imports() {
    let code =
        "use crate::{auth::{self, Claims}, store, hls::Broadcast};\nlet x = crate::chat::room();";
    let found: Vec<_> = crate_modules(code).into_iter().collect();
    assert_eq!(found, ["auth", "chat", "hls", "store"]);
}
