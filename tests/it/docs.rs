//! The Markdown documents link to files and headings that exist: every `*.md` file at the
//! repository root and under `docs/`, every inline link or image `[text](target)` and every
//! reference definition `[x]: target` outside code. Links to `src/` are refused: the sources
//! move, the documents should name them in backticks instead.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Component, Path, PathBuf};

/// The GitHub-style anchor of a heading's text: lowercase, every character that is not a
/// letter, digit, space, hyphen or underscore removed, spaces turned into hyphens.
fn slug(heading: &str) -> String {
    heading
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The lines of a document that are not inside fenced code blocks, with their line numbers
/// (from 1).
fn prose_lines(text: &str) -> Vec<(usize, &str)> {
    let mut lines = Vec::new();
    let mut fence: Option<(char, usize)> = None;
    for (index, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let marker = trimmed.chars().next().filter(|c| *c == '`' || *c == '~');
        if let Some(c) = marker {
            let run = trimmed.chars().take_while(|x| *x == c).count();
            if run >= 3 {
                match fence {
                    None => {
                        fence = Some((c, run));
                        continue;
                    }
                    Some((open, length)) if open == c && run >= length => {
                        if trimmed[run..].trim().is_empty() {
                            fence = None;
                            continue;
                        }
                    }
                    Some(_) => {}
                }
            }
        }
        if fence.is_none() {
            lines.push((index + 1, line));
        }
    }
    lines
}

/// The anchors of a document's headings (ATX headings outside code), duplicates numbered as
/// GitHub numbers them.
fn anchors(text: &str) -> HashSet<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut anchors = HashSet::new();
    for (_, line) in prose_lines(text) {
        let trimmed = line.trim_start();
        let hashes = trimmed.chars().take_while(|c| *c == '#').count();
        if hashes == 0 || hashes > 6 {
            continue;
        }
        let rest = &trimmed[hashes..];
        if !rest.is_empty() && !rest.starts_with(' ') {
            continue;
        }
        let title = rest.trim().trim_end_matches('#').trim();
        let base = slug(title);
        let count = seen.entry(base.clone()).or_insert(0);
        let anchor = if *count == 0 {
            base.clone()
        } else {
            format!("{base}-{count}")
        };
        *count += 1;
        anchors.insert(anchor);
    }
    anchors
}

/// A line with its inline code spans blanked out (same length, so nothing inside a span is
/// read as a link).
fn without_code_spans(line: &str) -> String {
    let chars: Vec<char> = line.chars().collect();
    let mut out = chars.clone();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] != '`' {
            i += 1;
            continue;
        }
        let run = chars[i..].iter().take_while(|c| **c == '`').count();
        // Find the closing run of the same length.
        let mut j = i + run;
        let mut close = None;
        while j < chars.len() {
            if chars[j] == '`' {
                let other = chars[j..].iter().take_while(|c| **c == '`').count();
                if other == run {
                    close = Some(j);
                    break;
                }
                j += other;
            } else {
                j += 1;
            }
        }
        match close {
            Some(j) => {
                for c in &mut out[i..j + run] {
                    *c = ' ';
                }
                i = j + run;
            }
            None => i += run,
        }
    }
    out.into_iter().collect()
}

/// The link targets of one line (code spans already removed): inline links and images
/// `[text](target "title")`, and a reference definition `[x]: target`.
fn link_targets(line: &str) -> Vec<String> {
    let mut targets = Vec::new();
    let trimmed = line.trim_start();
    if trimmed.starts_with('[')
        && let Some(end) = trimmed.find("]:")
    {
        let label = &trimmed[1..end];
        if !label.is_empty()
            && !label.contains('[')
            && let Some(target) = trimmed[end + 2..].split_whitespace().next()
        {
            targets.push(target.trim_matches(['<', '>']).to_owned());
            return targets;
        }
    }
    let bytes = line.as_bytes();
    let mut i = 0;
    while let Some(offset) = line[i..].find("](") {
        let start = i + offset + 2;
        // The destination ends at the matching `)` (parentheses may nest), or at a space
        // before a title.
        let mut depth = 0;
        let mut end = start;
        while end < bytes.len() {
            match bytes[end] {
                b'(' => depth += 1,
                b')' if depth == 0 => break,
                b')' => depth -= 1,
                _ => {}
            }
            end += 1;
        }
        let inside = &line[start..end];
        let target = inside.split_whitespace().next().unwrap_or("");
        targets.push(target.trim_matches(['<', '>']).to_owned());
        i = end.max(start);
    }
    targets
}

/// `path` with `.` and `..` resolved, without touching the file system.
fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Every `*.md` file at the root and under `docs/` (recursively).
fn documents(root: &Path) -> Vec<PathBuf> {
    fn markdown_in(dir: &Path, recurse: bool, out: &mut Vec<PathBuf>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                if recurse {
                    markdown_in(&path, true, out);
                }
            } else if path.extension().is_some_and(|e| e == "md") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    markdown_in(root, false, &mut files);
    markdown_in(&root.join("docs"), true, &mut files);
    files.sort();
    files
}

/// What is wrong with one link from `from` (a document), or `None` when it is fine.
fn check_link(root: &Path, from: &Path, target: &str) -> Option<String> {
    if target.is_empty() {
        return Some("empty link target".to_owned());
    }
    let lower = target.to_lowercase();
    if ["http://", "https://", "mailto:"]
        .iter()
        .any(|scheme| lower.starts_with(scheme))
    {
        return None;
    }
    let (path_part, anchor) = match target.split_once('#') {
        Some((path, anchor)) => (path, Some(anchor)),
        None => (target, None),
    };
    let file = if path_part.is_empty() {
        from.to_path_buf()
    } else {
        normalise(&from.parent().unwrap_or(root).join(path_part))
    };
    if let Ok(relative) = file.strip_prefix(root)
        && relative.starts_with("src")
    {
        return Some(
            "links into src/, whose files move: link to a document, or name the file in \
                 backticks"
                .to_owned(),
        );
    }
    if !file.exists() {
        return Some(format!("{} does not exist", file.display()));
    }
    let anchor = anchor?;
    if file.extension().is_none_or(|e| e != "md") {
        return Some(format!("#{anchor} points into a file that is not Markdown"));
    }
    let text = match fs::read_to_string(&file) {
        Ok(text) => text,
        Err(e) => return Some(format!("cannot read {}: {e}", file.display())),
    };
    if anchors(&text).contains(anchor) {
        None
    } else {
        Some(format!(
            "no heading with the anchor #{anchor} in {}",
            file.display()
        ))
    }
}

#[test]
fn every_link_in_the_documents_reaches_a_file_and_heading() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let files = documents(root);
    assert!(
        files.iter().any(|f| f.ends_with("README.md")),
        "no README.md found under {}",
        root.display()
    );
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in &files {
        let text = fs::read_to_string(file).unwrap();
        for (number, line) in prose_lines(&text) {
            for target in link_targets(&without_code_spans(line)) {
                checked += 1;
                if let Some(why) = check_link(root, file, &target) {
                    let name = file.strip_prefix(root).unwrap_or(file).display();
                    broken.push(format!("{name}:{number}: ({target}): {why}"));
                }
            }
        }
    }
    assert!(checked > 0, "no links found at all: the scan is broken");
    assert!(
        broken.is_empty(),
        "{} broken link(s):\n{}",
        broken.len(),
        broken.join("\n")
    );
}

#[test]
fn slugs_are_github_anchors() {
    assert_eq!(slug("Durability (`--data-dir`)"), "durability---data-dir");
    assert_eq!(
        slug("Configuration: flags, environment, `--config FILE`"),
        "configuration-flags-environment---config-file"
    );
    assert_eq!(
        slug("`GatewayClient`, the layer below"),
        "gatewayclient-the-layer-below"
    );
    assert_eq!(
        slug("The original's configuration"),
        "the-originals-configuration"
    );
    assert_eq!(
        slug("Bootstrap, and why it is not re-armed after reaping"),
        "bootstrap-and-why-it-is-not-re-armed-after-reaping"
    );
    assert_eq!(
        slug("Compatibility promise (0.x)"),
        "compatibility-promise-0x"
    );
    assert_eq!(slug("snake_case stays"), "snake_case-stays");
}

#[test]
fn duplicate_headings_are_numbered_and_code_is_skipped() {
    let text = "# Title\n## Run\n```sh\n# not a heading\n```\n## Run\n### Run\n";
    let found = anchors(text);
    for anchor in ["title", "run", "run-1", "run-2"] {
        assert!(found.contains(anchor), "{anchor} missing from {found:?}");
    }
    assert!(!found.contains("not-a-heading"));
}

#[test]
fn links_are_found_outside_code_spans_only() {
    let line = without_code_spans("see [a](docs/a.md#x) and `[b](nowhere.md)` and ![i](i.png)");
    assert_eq!(link_targets(&line), ["docs/a.md#x", "i.png"]);
    assert_eq!(
        link_targets("[ref]: ../RELIABILITY.md"),
        ["../RELIABILITY.md"]
    );
    assert_eq!(
        link_targets("[t](file.md \"a title\") [u](<plain.md>) [v](f(1).md)"),
        ["file.md", "plain.md", "f(1).md"]
    );
}
