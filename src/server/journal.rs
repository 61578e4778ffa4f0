//! The change journal: what each recent registry version changed, node by node.
//!
//! Every visible change (a join, an update, a departure, a reaping, a suspicion, a recovery, a
//! new leader) is written here with the registry version it made, under the registry's own
//! lock: one entry, O(1). Readers ask for the changes after a version they hold
//! ([`Journal::since`]) and get them in order, or `None` when the journal no longer reaches
//! back that far (it keeps the last [`JOURNAL_CHANGES`]; a restart, a rollback or an etcd
//! reload starts it afresh): then only a full list will do.
//!
//! Two readers use it: the node list, which applies the changes to the previous list instead of
//! comparing every node, and delta answers (`GET /nodes?index=V&changes=1`), which send them.

use std::collections::VecDeque;

use crate::api::NodeId;

/// How many changes the journal keeps. At 200 changes a second this reaches back about five
/// minutes (a long-poll waits at most five); it costs about 24 bytes a change.
pub const JOURNAL_CHANGES: usize = 65_536;

/// One node's visible change, or a new leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// A new node registered.
    Joined(NodeId),
    /// A known node re-registered with a different address, capabilities or metadata.
    Updated(NodeId),
    /// A node was removed on request.
    Left(NodeId),
    /// A node was silent for `node_timeout` (or, over etcd, its lease ended) and was removed.
    Reaped(NodeId),
    /// A node was silent for `suspect_after`.
    Suspected(NodeId),
    /// A suspected node was heard from again.
    Recovered(NodeId),
    /// The leader changed (`None`: no leader).
    Leader(Option<NodeId>),
}

impl Change {
    /// The node whose record changed (gone, for `Left` and `Reaped`); `None` for a new leader.
    pub fn node_id(self) -> Option<NodeId> {
        match self {
            Change::Joined(id)
            | Change::Updated(id)
            | Change::Left(id)
            | Change::Reaped(id)
            | Change::Suspected(id)
            | Change::Recovered(id) => Some(id),
            Change::Leader(_) => None,
        }
    }
}

/// The last [`JOURNAL_CHANGES`] changes, each with the registry version it made.
#[derive(Debug, Clone)]
pub struct Journal {
    /// Oldest first; versions never go down (several changes may share one, over etcd).
    entries: VecDeque<(u64, Change)>,
    /// Every change made after this version is in `entries`.
    complete_after: u64,
    max: usize,
}

impl Journal {
    /// An empty journal for a registry at `version`: it holds every change after it.
    pub fn new(version: u64) -> Journal {
        Journal::with_capacity(version, JOURNAL_CHANGES)
    }

    /// The same, keeping at most `max` changes (at least one).
    pub fn with_capacity(version: u64, max: usize) -> Journal {
        Journal {
            entries: VecDeque::new(),
            complete_after: version,
            max: max.max(1),
        }
    }

    /// Writes down that `version` made `change`. Versions must not go down.
    pub fn push(&mut self, version: u64, change: Change) {
        debug_assert!(self.entries.back().is_none_or(|(v, _)| *v <= version));
        if self.entries.len() == self.max {
            // Forget the oldest version whole, so that what is left is complete after it.
            let (forgotten, _) = self.entries[0];
            while self.entries.front().is_some_and(|(v, _)| *v <= forgotten) {
                self.entries.pop_front();
            }
            self.complete_after = forgotten;
        }
        self.entries.push_back((version, change));
    }

    /// Forgets every change: the registry jumped to `version` by other means (a rollback, a
    /// reload) and only a full list shows what it is now.
    pub fn restart(&mut self, version: u64) {
        self.entries.clear();
        self.complete_after = version;
    }

    /// The changes made after `version`, oldest first, or `None` if some of them are no
    /// longer kept. A version from the future gets no changes.
    pub fn since(&self, version: u64) -> Option<impl ExactSizeIterator<Item = (u64, Change)>> {
        if version < self.complete_after {
            return None;
        }
        let first = self.entries.partition_point(|(v, _)| *v <= version);
        Some(self.entries.range(first..).copied())
    }

    /// How many changes are kept.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True if no change is kept.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn since(journal: &Journal, version: u64) -> Option<Vec<(u64, Change)>> {
        journal.since(version).map(Iterator::collect)
    }

    #[test]
    fn changes_after_a_version_come_in_order() {
        let mut journal = Journal::new(4);
        journal.push(5, Change::Joined(1));
        journal.push(6, Change::Leader(Some(1)));
        journal.push(7, Change::Left(1));
        assert_eq!(
            since(&journal, 5),
            Some(vec![(6, Change::Leader(Some(1))), (7, Change::Left(1))])
        );
        assert_eq!(since(&journal, 4).unwrap().len(), 3);
        assert_eq!(since(&journal, 7), Some(vec![]));
        assert_eq!(since(&journal, 99), Some(vec![]));
        assert_eq!(since(&journal, 3), None);
    }

    #[test]
    fn a_full_journal_forgets_the_oldest_version_whole() {
        let mut journal = Journal::with_capacity(0, 3);
        journal.push(1, Change::Joined(1));
        journal.push(2, Change::Joined(2));
        journal.push(2, Change::Joined(3));
        journal.push(3, Change::Joined(4));
        // Version 1 is forgotten: changes after 1 are all still there, after 0 not.
        assert_eq!(since(&journal, 0), None);
        assert_eq!(
            since(&journal, 1),
            Some(vec![
                (2, Change::Joined(2)),
                (2, Change::Joined(3)),
                (3, Change::Joined(4))
            ])
        );
        // Version 2 made two changes: both go when it is forgotten.
        journal.push(4, Change::Left(4));
        assert_eq!(since(&journal, 1), None);
        assert_eq!(
            since(&journal, 2),
            Some(vec![(3, Change::Joined(4)), (4, Change::Left(4))])
        );
        assert_eq!(journal.len(), 2);
    }

    #[test]
    fn a_restart_forgets_everything_before_it() {
        let mut journal = Journal::new(0);
        journal.push(1, Change::Joined(1));
        journal.restart(9);
        assert_eq!(since(&journal, 1), None);
        assert_eq!(since(&journal, 9), Some(vec![]));
        assert!(journal.is_empty());
    }
}
