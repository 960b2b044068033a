//! The repository stands alone: no tracked source, script or document refers to a path
//! outside it. A clone with nothing beside it must build, test and read the same as this
//! one, so these fail the test:
//!
//! - a `..` chain that climbs above the repository's root from where it is resolved: the
//!   file's folder (documents, scripts, manifests, `include_str!`), or the crate's folder for
//!   other Rust paths (`CARGO_MANIFEST_DIR`, and the working directory of `cargo test`);
//! - the workplace's shared folder (a `shared` directory reached with `..`), wherever it appears;
//! - an absolute path into a machine's own folders (`/work/…`, `/root/…`, `/home/<user>/…`,
//!   `/Users/…`). Azure's `/home/site/wwwroot` is not a folder of this machine and passes.
//!
//! The files are the ones `git ls-files` lists, so an untracked local file never counts. A
//! line that only looks like such a path (a hostile input in a test) says so with the words
//! "not a path of this repository" on it or on the line before.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn tracked_files() -> Vec<String> {
    let out = Command::new("git")
        .args(["ls-files", "-z"])
        .current_dir(root())
        .output()
        .expect("git ls-files runs (git is needed to tell tracked files from local ones)");
    assert!(
        out.status.success(),
        "git ls-files failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let files: Vec<String> = out
        .stdout
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    assert!(
        files.iter().any(|f| f == "Cargo.toml"),
        "git ls-files did not list the repository's files"
    );
    files
}

/// Characters after which a relative path can start.
fn starts_path(prev: Option<char>) -> bool {
    prev.is_none_or(|c| c.is_whitespace() || "\"'`([<=,:".contains(c))
}

/// Characters that end a path.
fn ends_path(c: char) -> bool {
    c.is_whitespace() || "\"'`)]>,;|&#?".contains(c)
}

/// How deep `dir` (relative to the root, `/`-separated) lies; "" is the root.
fn depth(dir: &str) -> usize {
    dir.split('/').filter(|s| !s.is_empty()).count()
}

/// Whether `path` (a relative path) climbs above the root from a folder `from` levels deep.
fn climbs_out(path: &str, from: usize) -> bool {
    let mut level = from as isize;
    for segment in path.split('/') {
        match segment {
            ".." => {
                level -= 1;
                if level < 0 {
                    return true;
                }
            }
            "" | "." => {}
            _ => level += 1,
        }
    }
    false
}

/// Where relative paths in a file are resolved from: the folder of `file` and, for Rust
/// code outside `include_*!`, its crate's folder.
struct Bases {
    file_dir: usize,
    crate_dir: Option<usize>,
}

fn bases(file: &str, files: &[String]) -> Bases {
    let dir = Path::new(file)
        .parent()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let crate_dir = file.ends_with(".rs").then(|| {
        let mut d = Path::new(file).parent();
        while let Some(p) = d {
            let manifest = p.join("Cargo.toml");
            if files.iter().any(|f| Path::new(f) == manifest) {
                return depth(&p.to_string_lossy());
            }
            d = p.parent();
        }
        0
    });
    Bases {
        file_dir: depth(&dir),
        crate_dir,
    }
}

/// Every reference to a path outside the repository in `text` (the contents of `file`),
/// as "file:line: what".
fn outside_references(file: &str, text: &str, bases: &Bases) -> Vec<String> {
    let mut found = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let at = |what: String| format!("{file}:{}: {what}: {}", i + 1, line.trim());
        if line.contains(&format!("..{}shared", '/')) {
            found.push(at("the workplace's shared folder".into()));
            continue;
        }
        if let Some(p) = absolute_machine_path(line) {
            found.push(at(format!("absolute path {p}")));
            continue;
        }
        let marked = |l: &str| l.contains("not a path of this repository");
        if marked(line)
            || i.checked_sub(1)
                .and_then(|j| lines.get(j))
                .is_some_and(|l| marked(l))
        {
            continue;
        }
        let in_include = line.contains("include_str!")
            || line.contains("include_bytes!")
            || i.checked_sub(1)
                .and_then(|j| lines.get(j))
                .is_some_and(|l| l.contains("include_str!") || l.contains("include_bytes!"));
        for path in relative_paths(line) {
            let from = match (bases.crate_dir, path.after_manifest_dir, in_include) {
                (Some(c), _, false) => c,
                (Some(_), _, true) | (None, _, _) => bases.file_dir,
            };
            if climbs_out(&path.text, from) {
                found.push(at(format!("{} climbs above the repository", path.text)));
            }
        }
    }
    found
}

fn absolute_machine_path(line: &str) -> Option<String> {
    let chars: Vec<(usize, char)> = line.char_indices().collect();
    for (k, &(i, c)) in chars.iter().enumerate() {
        if c != '/' || !starts_path(k.checked_sub(1).map(|j| chars[j].1)) {
            continue;
        }
        let rest = &line[i..];
        let end = rest.find(ends_path).unwrap_or(rest.len());
        let path = &rest[..end];
        let machine = ["/work/", "/root/", "/Users/"]
            .iter()
            .any(|p| path.starts_with(p))
            || (path.starts_with("/home/") && !path.starts_with("/home/site/"));
        if machine {
            return Some(path.to_owned());
        }
    }
    None
}

struct Relative {
    text: String,
    /// Written after the crate's folder (`"/../x"` in `concat!(env!("CARGO_MANIFEST_DIR"), …)`
    /// or `"{}/../x"`): resolved from the crate either way.
    after_manifest_dir: bool,
}

/// The relative paths of a line that start with `..`: `../x`, `"../.."`, `"/../x"` after
/// `CARGO_MANIFEST_DIR`. A bare `..` counts only in quotes (Rust's `..` ranges and patterns
/// are not paths); `$ROOT/..` and `$(dirname …)/..` start from a folder this scan can't
/// know and are left alone.
fn relative_paths(line: &str) -> Vec<Relative> {
    let mut out = Vec::new();
    let chars: Vec<(usize, char)> = line.char_indices().collect();
    let mut k = 0;
    while k + 1 < chars.len() {
        let (i, c) = chars[k];
        if c != '.' || chars[k + 1].1 != '.' {
            k += 1;
            continue;
        }
        let prev = k.checked_sub(1).map(|j| chars[j].1);
        let prev2 = k.checked_sub(2).map(|j| chars[j].1);
        let after_manifest_dir = prev == Some('/') && matches!(prev2, Some('"') | Some('}'));
        if prev == Some('.') || !(starts_path(prev) || after_manifest_dir) {
            k += 2;
            continue;
        }
        let rest = &line[i..];
        let end = rest.find(ends_path).unwrap_or(rest.len());
        let path = &rest[..end];
        let next = rest[2..].chars().next();
        let is_path = match next {
            Some('/') => true,
            // A bare `..`: only as a string literal.
            None | Some(_) if path == ".." => {
                matches!(prev, Some('"') | Some('\'')) && matches!(next, Some('"') | Some('\''))
                    || after_manifest_dir
            }
            _ => false,
        };
        if is_path {
            out.push(Relative {
                text: path.to_owned(),
                after_manifest_dir,
            });
        }
        k += path.chars().count().max(2);
    }
    out
}

#[test]
fn no_tracked_file_refers_to_a_path_outside_the_repository() {
    let files = tracked_files();
    let me = file!().replace('\\', "/");
    let mut found = Vec::new();
    let mut scanned = 0;
    for file in &files {
        if *file == me {
            continue;
        }
        let bytes = match std::fs::read(root().join(file)) {
            Ok(b) => b,
            // Deleted in the working tree but not yet in the index.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => panic!("{file}: {e}"),
        };
        let Ok(text) = String::from_utf8(bytes) else {
            continue; // images and other binary files
        };
        scanned += 1;
        found.extend(outside_references(file, &text, &bases(file, &files)));
    }
    assert!(scanned > 50, "only {scanned} text files were scanned");
    assert!(
        found.is_empty(),
        "{} reference(s) to paths outside the repository (a clone has nothing beside it):\n{}",
        found.len(),
        found.join("\n")
    );
}

#[test]
fn the_scan_finds_what_leaves_the_tree_and_nothing_else() {
    let files: Vec<String> = ["Cargo.toml", "dev/sim/Cargo.toml"]
        .map(str::to_owned)
        .to_vec();
    let scan = |file: &str, text: &str| outside_references(file, text, &bases(file, &files));
    let up = "..";
    // Outside: each of these is one finding.
    for (file, text) in [
        ("docs/a.md", format!("see [x]({up}/{up}/elsewhere.md)")),
        ("README.md", format!("[design]({up}/notes/DESIGN.md)")),
        (
            "tests/x.rs",
            format!("let p = Path::new(\"{up}/{up}/contracts\");"),
        ),
        (
            "dev/sim/src/x.rs",
            format!("include_str!(\"{up}/{up}/{up}/{up}/contracts/a.json\")"),
        ),
        (
            "dev/sim/src/x.rs",
            format!("PathBuf::from(env!(\"CARGO_MANIFEST_DIR\")).join(\"{up}/{up}/{up}\")"),
        ),
        (
            "dev/sim/src/x.rs",
            format!("concat!(env!(\"CARGO_MANIFEST_DIR\"), \"/{up}/{up}/{up}/x\")"),
        ),
        ("scripts/x", format!("cat \"$ROOT/{up}/shared/NOTES.md\"")),
        ("scripts/x", "cp /work/main/dist/handler .".to_owned()),
        ("docs/b.md", "built in `/root/src/defender-ops`".to_owned()),
        ("docs/b.md", "(/home/alice/defender-ops)".to_owned()),
    ] {
        assert_eq!(scan(file, &text).len(), 1, "{file}: {text}");
    }
    // Inside, or not a path at all.
    for (file, text) in [
        ("docs/a.md", format!("see [readme]({up}/README.md)")),
        (
            "dev/sim/src/x.rs",
            format!("include_str!(\"{up}/{up}/{up}/contracts/a.json\")"),
        ),
        (
            "dev/sim/src/x.rs",
            format!("PathBuf::from(env!(\"CARGO_MANIFEST_DIR\")).join(\"{up}/{up}\")"),
        ),
        (
            "dev/sim/src/x.rs",
            format!("concat!(env!(\"CARGO_MANIFEST_DIR\"), \"/{up}/{up}/host.json\")"),
        ),
        (
            "dev/sim/Cargo.toml",
            format!("x = {{ path = \"{up}/{up}\" }}"),
        ),
        (
            "src/x.rs",
            "for c in v.drain(..) { let S { a, .. } = c; }".to_owned(),
        ),
        ("src/x.rs", "let r = 0..10; let s = &v[..];".to_owned()),
        ("docs/a.md", "wait... then go on".to_owned()),
        (".ci/run", format!("cd \"$(dirname \"$0\")/{up}\"")),
        (
            "docs/c.md",
            "relative to the app root (`/home/site/wwwroot` in Azure)".to_owned(),
        ),
        (
            "docs/c.md",
            "https://example.com/work/x and /tmp/perf.md".to_owned(),
        ),
    ] {
        assert!(scan(file, &text).is_empty(), "{file}: {text}");
    }
}
