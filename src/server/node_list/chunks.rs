//! A list's chunks in order, as a tree whose unchanged parts lists of different versions share.
//!
//! Leaves are chunks; a branch holds [`FANOUT`] to [`2 * FANOUT`](FANOUT) children (fewer after
//! chunks are dropped), and what answers need of them: how many chunks and nodes, how many
//! suspected, the last node id, and, on first gzip use, the CRC-32 of its chunks' compressed
//! texts joined by commas, with and without the suspected nodes (`crc32fast`'s `combine`
//! joins two children's). A new version replaces the chunks its changes fall in: the branches
//! above them are copied (O(log chunks) each, their checksums computed again on next use), the
//! rest is shared. A gzip answer's checksum is a range of chunks: O(log chunks) combinations.

use std::sync::{Arc, OnceLock};

use crate::api::NodeId;

use super::{Chunk, join};

/// Children a branch is given when made or split; it is split past twice this.
const FANOUT: usize = 8;

/// The chunks, in node id order.
#[derive(Debug, Clone, Default)]
pub(super) struct Chunks {
    root: Option<Tree>,
}

#[derive(Debug, Clone)]
enum Tree {
    Leaf(Arc<Chunk>),
    Branch(Arc<Branch>),
}

#[derive(Debug)]
struct Branch {
    children: Vec<Tree>,
    chunks: usize,
    nodes: usize,
    suspected: usize,
    last_id: NodeId,
    /// The checksum of the children's compressed texts joined by commas (empty texts left
    /// out): `[0]` without the suspected nodes, `[1]` with them. Made on first use.
    crc: [OnceLock<crc32fast::Hasher>; 2],
}

/// Replaces chunk `.0` (an index into the list before the edit) with the chunks `.1` (none:
/// the chunk goes).
pub(super) type Edit = (usize, Vec<Arc<Chunk>>);

impl Chunks {
    /// A balanced tree over `chunks`.
    pub(super) fn from_vec(chunks: Vec<Arc<Chunk>>) -> Chunks {
        Chunks {
            root: rooted(chunks.into_iter().map(Tree::Leaf).collect()),
        }
    }

    /// How many chunks.
    pub(super) fn len(&self) -> usize {
        self.root.as_ref().map_or(0, Tree::chunks)
    }

    /// How many nodes, active and suspected.
    pub(super) fn nodes(&self) -> usize {
        self.root.as_ref().map_or(0, Tree::nodes)
    }

    /// How many suspected nodes.
    pub(super) fn suspected(&self) -> usize {
        self.root.as_ref().map_or(0, Tree::suspected)
    }

    /// Chunk `index` (O(log chunks)).
    pub(super) fn get(&self, mut index: usize) -> &Arc<Chunk> {
        let mut tree = self.root.as_ref().expect("a chunk of an empty list");
        loop {
            match tree {
                Tree::Leaf(chunk) => return chunk,
                Tree::Branch(branch) => {
                    let mut children = branch.children.iter();
                    tree = loop {
                        let child = children.next().expect("index within the list");
                        if index < child.chunks() {
                            break child;
                        }
                        index -= child.chunks();
                    };
                }
            }
        }
    }

    /// The chunks in order.
    pub(super) fn iter(&self) -> Iter<'_> {
        Iter {
            stack: self
                .root
                .as_ref()
                .map(|root| std::slice::from_ref(root).iter())
                .into_iter()
                .collect(),
        }
    }

    /// The index of the first chunk whose last node id is `node_id` or more: the chunk that
    /// holds `node_id` or would take it; `None` past the last chunk's last id.
    pub(super) fn chunk_of(&self, node_id: NodeId) -> Option<usize> {
        let mut tree = self.root.as_ref()?;
        if tree.last_id() < node_id {
            return None;
        }
        let mut index = 0;
        loop {
            match tree {
                Tree::Leaf(_) => return Some(index),
                Tree::Branch(branch) => {
                    let mut children = branch.children.iter();
                    tree = loop {
                        let child = children.next().expect("a child reaches that far");
                        if child.last_id() >= node_id {
                            break child;
                        }
                        index += child.chunks();
                    };
                }
            }
        }
    }

    /// The checksum of chunks `range` joined by commas (empty texts left out), with the
    /// suspected nodes (`with_suspected`) or without: O(log chunks) combinations.
    pub(super) fn crc(
        &self,
        with_suspected: bool,
        range: std::ops::Range<usize>,
    ) -> crc32fast::Hasher {
        let mut crc = crc32fast::Hasher::new();
        if let Some(root) = &self.root {
            root.crc_into(usize::from(with_suspected), &range, 0, &mut crc);
        }
        crc
    }

    /// The same chunks with `edits` made (sorted by index, one an index at most): the
    /// branches above an edited chunk are new, every other subtree is shared.
    pub(super) fn edit(&self, edits: &[Edit]) -> Chunks {
        let Some(root) = &self.root else {
            return Chunks::from_vec(edits.iter().flat_map(|(_, c)| c.iter().cloned()).collect());
        };
        if edits.is_empty() {
            return self.clone();
        }
        Chunks {
            root: rooted(root.edit(0, edits)),
        }
    }
}

/// One tree over `level` (trees of one height), adding levels as needed.
fn rooted(mut level: Vec<Tree>) -> Option<Tree> {
    while level.len() > 1 {
        level = level
            .chunks(FANOUT)
            .map(|children| Tree::branch(children.to_vec()))
            .collect();
    }
    let mut root = level.pop()?;
    // A branch of one branch (after chunks were dropped) is a level too many.
    while let Tree::Branch(branch) = &root
        && branch.children.len() == 1
        && matches!(branch.children[0], Tree::Branch(_))
    {
        root = branch.children[0].clone();
    }
    Some(root)
}

impl Tree {
    fn branch(children: Vec<Tree>) -> Tree {
        Tree::Branch(Arc::new(Branch {
            chunks: children.iter().map(Tree::chunks).sum(),
            nodes: children.iter().map(Tree::nodes).sum(),
            suspected: children.iter().map(Tree::suspected).sum(),
            last_id: children.last().expect("a branch has children").last_id(),
            children,
            crc: [OnceLock::new(), OnceLock::new()],
        }))
    }

    fn chunks(&self) -> usize {
        match self {
            Tree::Leaf(_) => 1,
            Tree::Branch(b) => b.chunks,
        }
    }

    fn nodes(&self) -> usize {
        match self {
            Tree::Leaf(c) => c.entries.len(),
            Tree::Branch(b) => b.nodes,
        }
    }

    fn suspected(&self) -> usize {
        match self {
            Tree::Leaf(c) => c.suspected,
            Tree::Branch(b) => b.suspected,
        }
    }

    fn last_id(&self) -> NodeId {
        match self {
            Tree::Leaf(c) => c.last_id().expect("a chunk has nodes"),
            Tree::Branch(b) => b.last_id,
        }
    }

    /// The checksum of this subtree's texts: `[0]` without suspected nodes, `[1]` with them.
    fn crc(&self, with_suspected: usize) -> crc32fast::Hasher {
        match self {
            Tree::Leaf(chunk) => {
                let variant = usize::from(with_suspected == 0 && chunk.has_suspected());
                chunk.compressed(variant).crc.clone()
            }
            Tree::Branch(branch) => branch.crc[with_suspected]
                .get_or_init(|| {
                    let mut crc = crc32fast::Hasher::new();
                    for child in &branch.children {
                        join(&mut crc, &child.crc(with_suspected));
                    }
                    crc
                })
                .clone(),
        }
    }

    /// Joins to `crc` the texts of this subtree's chunks (the first is number `start`) that
    /// fall in `range`.
    fn crc_into(
        &self,
        with_suspected: usize,
        range: &std::ops::Range<usize>,
        start: usize,
        crc: &mut crc32fast::Hasher,
    ) {
        let end = start + self.chunks();
        if end <= range.start || range.end <= start {
            return;
        }
        match self {
            Tree::Branch(branch) if start < range.start || range.end < end => {
                let mut at = start;
                for child in &branch.children {
                    child.crc_into(with_suspected, range, at, crc);
                    at += child.chunks();
                }
            }
            _ => join(crc, &self.crc(with_suspected)),
        }
    }

    /// This subtree (its first chunk number `start`) with `edits` made, all within it: trees
    /// of the same height, none if every chunk went, several if it outgrew a branch.
    fn edit(&self, start: usize, edits: &[Edit]) -> Vec<Tree> {
        let branch = match self {
            Tree::Leaf(_) => {
                debug_assert!(edits.len() == 1 && edits[0].0 == start);
                return edits[0].1.iter().cloned().map(Tree::Leaf).collect();
            }
            Tree::Branch(branch) => branch,
        };
        let mut children = Vec::with_capacity(branch.children.len() + 1);
        let (mut at, mut rest) = (start, edits);
        for child in &branch.children {
            let end = at + child.chunks();
            let mine = rest.partition_point(|(i, _)| *i < end);
            if mine == 0 {
                children.push(child.clone());
            } else {
                children.extend(child.edit(at, &rest[..mine]));
                rest = &rest[mine..];
            }
            at = end;
        }
        if children.len() <= 2 * FANOUT {
            return (!children.is_empty())
                .then(|| Tree::branch(children))
                .into_iter()
                .collect();
        }
        children
            .chunks(FANOUT)
            .map(|c| Tree::branch(c.to_vec()))
            .collect()
    }
}

/// The chunks of a [`Chunks`] in order.
#[derive(Debug)]
pub(super) struct Iter<'a> {
    /// The children not yet visited, level by level (a leaf root is its own one child).
    stack: Vec<std::slice::Iter<'a, Tree>>,
}

impl<'a> Iterator for Iter<'a> {
    type Item = &'a Arc<Chunk>;

    fn next(&mut self) -> Option<&'a Arc<Chunk>> {
        loop {
            let top = self.stack.last_mut()?;
            match top.next() {
                None => {
                    self.stack.pop();
                }
                Some(Tree::Leaf(chunk)) => return Some(chunk),
                Some(Tree::Branch(branch)) => self.stack.push(branch.children.iter()),
            }
        }
    }
}

/// Every chunk, to change in place (tests only: the branches must not be shared). Checksums
/// kept in the branches are dropped.
#[cfg(test)]
impl<'a> IntoIterator for &'a mut Chunks {
    type Item = &'a mut Arc<Chunk>;
    type IntoIter = std::vec::IntoIter<&'a mut Arc<Chunk>>;

    fn into_iter(self) -> Self::IntoIter {
        fn walk<'a>(tree: &'a mut Tree, out: &mut Vec<&'a mut Arc<Chunk>>) {
            match tree {
                Tree::Leaf(chunk) => out.push(chunk),
                Tree::Branch(branch) => {
                    let branch = Arc::get_mut(branch).expect("a branch not shared");
                    branch.crc = [OnceLock::new(), OnceLock::new()];
                    for child in &mut branch.children {
                        walk(child, out);
                    }
                }
            }
        }
        let mut out = Vec::new();
        if let Some(root) = &mut self.root {
            walk(root, &mut out);
        }
        out.into_iter()
    }
}
