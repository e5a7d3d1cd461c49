//! The dependency rule of docs/ARCHITECTURE.md, checked: a unit test reads every
//! `src/**/*.rs`, collects which module refers to which (`crate::…` and `super::…`
//! paths, in `use` lines and inline; comments and string literals ignored) and fails
//! when a reference points up the layers, when one edge refers to another, when the
//! top-level modules form a cycle, or when two sibling modules (such as `http::scim`
//! and `http::bulk`) refer to each other. A new top-level module must be placed in
//! `LAYERS` below before the test passes. Test-only code; nothing here is compiled
//! into the bridge.

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::{Path, PathBuf};

    /// Top-level modules by layer, lowest first. A module may refer to modules of
    /// lower layers, and to modules of its own layer as long as no cycle forms
    /// (`ISOLATED` and `EDGES` narrow that).
    const LAYERS: &[&[&str]] = &[
        // The pure protocol core, the typed timestamp every layer passes around, the
        // secret type every layer holds secrets in, the limiter (counters and
        // permits, no knowledge of requests), the log-line escaper, the memory
        // trimmer, the local-trust checks of files and sockets, the plural of counts and
        // the version this build shows.
        &[
            "scim", "clock", "secret", "limiter", "logline", "memory", "localfs", "plural",
            "version",
        ],
        // The only module that knows redb.
        &["store"],
        // The application layer and the services beside it.
        &["app", "migrate", "auth", "config", "tls", "sdnotify"],
        // The edges.
        &["http", "control"],
        // Command line and server bootstrap.
        &["cli", "bootstrap", "server", "serve", "main"],
    ];
    /// Modules that refer to no other module of the crate.
    const ISOLATED: &[&str] = &[
        "scim", "clock", "secret", "limiter", "logline", "memory", "localfs", "plural", "version",
    ];
    /// The edges, which never call each other.
    const EDGES: &[&str] = &["http", "control"];
    /// References that break the rule today and are being removed, each with why. The
    /// test fails when one of them is gone, so this list only shrinks.
    const KNOWN: &[(&str, &str, &str)] = &[];

    /// A module path such as `["http", "admin"]`.
    type ModPath = Vec<String>;

    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    /// The module a file defines: `src/http/admin/mod.rs` → `http::admin`.
    fn module_of(src: &Path, file: &Path) -> ModPath {
        let rel = file.strip_prefix(src).unwrap();
        let mut parts: Vec<String> = rel
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        let last = parts.pop().unwrap_or_default();
        let stem = last.trim_end_matches(".rs");
        if !matches!(stem, "mod" | "lib") {
            parts.push(stem.to_owned());
        }
        parts
    }

    /// The code of a Rust file with comments, string and char literals blanked out
    /// (lengths kept), so only real paths are seen.
    fn code_only(text: &str) -> String {
        let b = text.as_bytes();
        let mut out = String::with_capacity(text.len());
        let mut i = 0;
        let blank = |out: &mut String, s: &[u8]| {
            out.extend(s.iter().map(|c| if *c == b'\n' { '\n' } else { ' ' }));
        };
        while i < b.len() {
            let rest = &b[i..];
            if rest.starts_with(b"//") {
                let end = rest.iter().position(|c| *c == b'\n').unwrap_or(rest.len());
                blank(&mut out, &rest[..end]);
                i += end;
            } else if rest.starts_with(b"/*") {
                let (mut depth, mut j) = (0usize, 0usize);
                while j < rest.len() {
                    if rest[j..].starts_with(b"/*") {
                        depth += 1;
                        j += 2;
                    } else if rest[j..].starts_with(b"*/") {
                        depth -= 1;
                        j += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        j += 1;
                    }
                }
                blank(&mut out, &rest[..j]);
                i += j;
            } else if let Some(len) = raw_string_len(rest, i == 0 || !ident_char(b[i - 1])) {
                blank(&mut out, &rest[..len]);
                i += len;
            } else if rest[0] == b'"' {
                let mut j = 1;
                while j < rest.len() && rest[j] != b'"' {
                    j += if rest[j] == b'\\' { 2 } else { 1 };
                }
                let len = (j + 1).min(rest.len());
                blank(&mut out, &rest[..len]);
                i += len;
            } else if rest[0] == b'\'' {
                // A char literal ('x', '\n', '\u{..}'); a lifetime stays as it is.
                let len = match rest.get(1) {
                    Some(b'\\') => rest
                        .get(3..)
                        .unwrap_or_default()
                        .iter()
                        .position(|c| *c == b'\'')
                        .map(|p| p + 4),
                    Some(_) if rest.get(2) == Some(&b'\'') => Some(3),
                    _ => None,
                };
                match len {
                    Some(len) => {
                        blank(&mut out, &rest[..len]);
                        i += len;
                    }
                    None => {
                        out.push('\'');
                        i += 1;
                    }
                }
            } else {
                // Multi-byte characters only occur in comments and strings here;
                // keep anything else byte for byte.
                let ch = text[i..].chars().next().unwrap();
                out.push(ch);
                i += ch.len_utf8();
            }
        }
        out
    }

    fn ident_char(c: u8) -> bool {
        c.is_ascii_alphanumeric() || c == b'_'
    }

    /// Length of a raw string literal (`r"…"`, `r#"…"#`, `br"…"`) at the start of `s`.
    fn raw_string_len(s: &[u8], at_token_start: bool) -> Option<usize> {
        if !at_token_start {
            return None;
        }
        let start = if s.starts_with(b"br") {
            2
        } else if s.starts_with(b"r") {
            1
        } else {
            return None;
        };
        let hashes = s[start..].iter().take_while(|c| **c == b'#').count();
        if s.get(start + hashes) != Some(&b'"') {
            return None;
        }
        let mut close = vec![b'"'];
        close.extend(std::iter::repeat_n(b'#', hashes));
        let body = start + hashes + 1;
        s[body..]
            .windows(close.len())
            .position(|w| w == close.as_slice())
            .map(|p| body + p + close.len())
    }

    /// Splits code into identifiers and single punctuation characters (`::` kept whole).
    fn tokens(code: &str) -> Vec<String> {
        let b = code.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            let c = b[i];
            if ident_char(c) {
                let start = i;
                while i < b.len() && ident_char(b[i]) {
                    i += 1;
                }
                out.push(code[start..i].to_owned());
            } else if b[i..].starts_with(b"::") {
                out.push("::".into());
                i += 2;
            } else if c.is_ascii_whitespace() || !c.is_ascii() {
                i += 1;
            } else {
                out.push((c as char).to_string());
                i += 1;
            }
        }
        out
    }

    /// Every module path a file refers to, resolved to absolute paths (as far as
    /// the path names modules: `crate::app::query::run` → `app::query::run`;
    /// the caller only looks at the first segments). `crate_name` is how the file
    /// names the library (`crate`, or `scimbridge` from main.rs).
    fn references(module: &ModPath, code: &str, crate_name: &str) -> Vec<ModPath> {
        let toks = tokens(code);
        let mut refs = Vec::new();
        // Inline modules (`mod tests { … }`) change what `super` means.
        let mut inline: Vec<(String, usize)> = Vec::new();
        let mut depth = 0usize;
        let mut i = 0;
        while i < toks.len() {
            let t = toks[i].as_str();
            match t {
                "{" => depth += 1,
                "}" => {
                    depth = depth.saturating_sub(1);
                    if inline.last().is_some_and(|(_, d)| *d == depth) {
                        inline.pop();
                    }
                }
                "mod" if toks.get(i + 2).is_some_and(|x| x == "{") => {
                    inline.push((toks[i + 1].clone(), depth));
                }
                _ => {}
            }
            let starts_path = (t == crate_name || t == "super")
                && toks.get(i + 1).is_some_and(|x| x == "::")
                && (i == 0 || toks[i - 1] != "::");
            if starts_path {
                let mut here: ModPath = module.clone();
                here.extend(inline.iter().map(|(n, _)| n.clone()));
                let (base, next) = resolve_prefix(&toks, i, &here, crate_name);
                collect_tree(&toks, next, base, &mut refs);
            }
            i += 1;
        }
        refs
    }

    /// Resolves `crate::` / `super::super::` at `toks[i]`; returns the base path and
    /// the index of the first token after the prefix.
    fn resolve_prefix(
        toks: &[String],
        mut i: usize,
        here: &ModPath,
        crate_name: &str,
    ) -> (ModPath, usize) {
        if toks[i] == crate_name {
            return (Vec::new(), i + 2);
        }
        let mut base = here.clone();
        while toks.get(i).is_some_and(|t| t == "super")
            && toks.get(i + 1).is_some_and(|t| t == "::")
        {
            base.pop();
            i += 2;
        }
        (base, i)
    }

    /// Reads `a::b::{c, d::e}` from `toks[i]` on, adding each full path to `out`.
    fn collect_tree(toks: &[String], mut i: usize, mut base: ModPath, out: &mut Vec<ModPath>) {
        loop {
            match toks.get(i).map(String::as_str) {
                Some("{") => {
                    // A group: each comma-separated member continues `base`.
                    let mut member_start = i + 1;
                    let mut depth = 0usize;
                    let mut j = i + 1;
                    while j < toks.len() {
                        match toks[j].as_str() {
                            "{" => depth += 1,
                            "}" if depth == 0 => break,
                            "}" => depth -= 1,
                            "," if depth == 0 => {
                                collect_tree(toks, member_start, base.clone(), out);
                                member_start = j + 1;
                            }
                            _ => {}
                        }
                        j += 1;
                    }
                    collect_tree(toks, member_start, base, out);
                    return;
                }
                Some(t) if t.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => {
                    if t != "self" {
                        base.push(t.to_owned());
                    }
                    if toks.get(i + 1).is_some_and(|x| x == "::") {
                        i += 2;
                        continue;
                    }
                    out.push(base);
                    return;
                }
                _ => {
                    out.push(base);
                    return;
                }
            }
        }
    }

    struct Graph {
        /// (from module path, to module path, file) for every reference.
        refs: Vec<(ModPath, ModPath, String)>,
    }

    fn graph() -> Graph {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        files.sort();
        let mut refs = Vec::new();
        for file in files {
            let module = module_of(&src, &file);
            let code = code_only(&std::fs::read_to_string(&file).unwrap());
            let crate_name = if module == ["main"] {
                "scimbridge"
            } else {
                "crate"
            };
            let shown = file.strip_prefix(&src).unwrap().display().to_string();
            for r in references(&module, &code, crate_name) {
                refs.push((module.clone(), r, shown.clone()));
            }
        }
        Graph { refs }
    }

    fn layer_of(module: &str) -> Option<usize> {
        LAYERS.iter().position(|l| l.contains(&module))
    }

    /// Problems with the references between top-level modules.
    fn layer_violations(g: &Graph) -> BTreeSet<(String, String, String)> {
        let mut out = BTreeSet::new();
        for (from, to, file) in &g.refs {
            let (Some(a), Some(b)) = (from.first(), to.first()) else {
                continue;
            };
            if a == b || layer_of(b).is_none() {
                // Same module, or not a module of ours (`crate::SOME_CONST` at the root).
                continue;
            }
            let why = match (layer_of(a), layer_of(b)) {
                (None, _) => Some(format!("{a} is in no layer of LAYERS")),
                _ if ISOLATED.contains(&a.as_str()) => {
                    Some(format!("{a} must not refer to other modules of the crate"))
                }
                _ if EDGES.contains(&a.as_str()) && EDGES.contains(&b.as_str()) => {
                    Some("one edge calls another".to_owned())
                }
                (Some(la), Some(lb)) if la < lb => Some("refers to a higher layer".to_owned()),
                _ => None,
            };
            if let Some(why) = why {
                out.insert((format!("{a} → {b}"), file.clone(), why));
            }
        }
        out
    }

    /// Cycles among the children of each module (`http::scim` ↔ `http::bulk`), and
    /// among the top-level modules (the children of the crate root).
    fn sibling_cycles(g: &Graph) -> BTreeSet<String> {
        // parent → (child → children it refers to)
        let mut edges: BTreeMap<ModPath, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
        let mut all: BTreeSet<ModPath> = BTreeSet::new();
        for (from, _, _) in &g.refs {
            for n in 1..=from.len() {
                all.insert(from[..n].to_vec());
            }
        }
        for (from, to, _) in &g.refs {
            let common = from.iter().zip(to).take_while(|(a, b)| a == b).count();
            // Both below one parent, on different branches (not parent ↔ child), and
            // the target a real module (not an item of the parent).
            if common < from.len() && common < to.len() && all.contains(&to[..=common]) {
                edges
                    .entry(from[..common].to_vec())
                    .or_default()
                    .entry(from[common].clone())
                    .or_default()
                    .insert(to[common].clone());
            }
        }
        let mut cycles = BTreeSet::new();
        for (parent, children) in &edges {
            for start in children.keys() {
                if let Some(path) = cycle_from(children, start) {
                    let mut names: Vec<String> = path
                        .iter()
                        .map(|c| {
                            let mut p = parent.clone();
                            p.push(c.clone());
                            p.join("::")
                        })
                        .collect();
                    // One spelling per cycle: start at its smallest member.
                    let min = (0..names.len())
                        .min_by_key(|i| names[*i].clone())
                        .unwrap_or(0);
                    names.rotate_left(min);
                    cycles.insert(names.join(" → "));
                }
            }
        }
        cycles
    }

    /// A path start → … → start, if one exists.
    fn cycle_from(edges: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
        let mut stack = vec![(start.to_owned(), vec![start.to_owned()])];
        let mut seen = BTreeSet::new();
        while let Some((node, path)) = stack.pop() {
            for next in edges.get(&node).into_iter().flatten() {
                if next == start {
                    return Some(path);
                }
                if seen.insert(next.clone()) {
                    let mut p = path.clone();
                    p.push(next.clone());
                    stack.push((next.clone(), p));
                }
            }
        }
        None
    }

    #[test]
    fn dependencies_point_down_the_layers() {
        let g = graph();
        let found = layer_violations(&g);
        let known: BTreeSet<(String, String)> = KNOWN
            .iter()
            .map(|(e, f, _)| (e.to_string(), f.to_string()))
            .collect();
        let new: Vec<_> = found
            .iter()
            .filter(|(e, f, _)| !known.contains(&(e.clone(), f.clone())))
            .collect();
        assert!(
            new.is_empty(),
            "references against the layers (scim, clock ← store ← app, migrate, auth, config \
             ← http, control ← cli, bootstrap):\n{new:#?}"
        );
        let gone: Vec<_> = known
            .iter()
            .filter(|(e, f)| !found.iter().any(|(fe, ff, _)| fe == e && ff == f))
            .collect();
        assert!(gone.is_empty(), "remove from KNOWN, fixed: {gone:?}");
    }

    #[test]
    fn no_module_cycles() {
        let cycles = sibling_cycles(&graph());
        assert!(
            cycles.is_empty(),
            "modules that refer to each other:\n{cycles:#?}"
        );
    }

    // The checker itself, on small inputs.

    #[test]
    fn reads_grouped_nested_and_relative_paths() {
        let here: ModPath = vec!["http".into(), "scim".into()];
        let code = code_only(
            "use crate::{app::{App, Operation}, clock::Timestamp};\n\
             use super::bulk;\n\
             fn f() { crate::store::new_id(); let s = \"crate::control\"; }\n\
             // crate::cli in a comment\n\
             mod tests { use super::*; use super::super::admin::x; }",
        );
        let refs: BTreeSet<String> = references(&here, &code, "crate")
            .into_iter()
            .map(|p| p.join("::"))
            .collect();
        let want: BTreeSet<String> = [
            "app::App",
            "app::Operation",
            "clock::Timestamp",
            "http::bulk",
            "store::new_id",
            "http::scim",
            "http::admin::x",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect();
        assert_eq!(refs, want);
    }

    #[test]
    fn finds_upward_references_edges_calling_edges_and_sibling_cycles() {
        let r = |from: &str, to: &str| {
            (
                from.split("::").map(str::to_owned).collect::<ModPath>(),
                to.split("::").map(str::to_owned).collect::<ModPath>(),
                "f.rs".to_owned(),
            )
        };
        let g = Graph {
            refs: vec![
                r("store", "app::App"),
                r("http::admin", "control::execute"),
                r("scim::filter", "clock::Timestamp"),
                r("http::scim", "http::bulk::handle"),
                r("http::bulk", "http::scim::actor"),
                r("http::bulk", "http::Handled"),
                r("app", "store::Store"),
            ],
        };
        let v: Vec<String> = layer_violations(&g)
            .into_iter()
            .map(|(e, _, _)| e)
            .collect();
        assert_eq!(v, ["http → control", "scim → clock", "store → app"]);
        assert_eq!(
            sibling_cycles(&g).into_iter().collect::<Vec<_>>(),
            ["app → store", "http::bulk → http::scim"]
        );
    }
}
