use super::*;
use serde_json::json;

/// A clock the test moves by hand.
struct Clock {
    start: Instant,
    offset: Duration,
    unix: f64,
}

impl Clock {
    fn new() -> Clock {
        Clock {
            start: Instant::now(),
            offset: Duration::ZERO,
            unix: 1_000_000.0,
        }
    }

    fn now(&self) -> Now {
        Now {
            instant: self.start + self.offset,
            unix: self.unix,
        }
    }

    fn advance(&mut self, secs: u64) {
        self.offset += Duration::from_secs(secs);
        self.unix += secs as f64;
    }
}

fn liveness() -> Liveness {
    Liveness {
        suspect_after: Duration::from_secs(90),
        node_timeout: Duration::from_secs(300),
    }
}

fn reg(node_id: NodeId) -> Registration {
    Registration {
        node_id,
        ip_address: format!("10.0.0.{node_id}"),
        port: 5000 + node_id as u16,
        capabilities: vec!["raft".into(), "gossip".into()],
        metadata: None,
        previous_epoch: None,
    }
}

fn with_metadata(node_id: NodeId, metadata: Value) -> Registration {
    Registration {
        metadata: Some(metadata.as_object().unwrap().clone()),
        ..reg(node_id)
    }
}

fn ids(registry: &Registry) -> Vec<NodeId> {
    let mut ids: Vec<_> = registry.nodes().map(|r| r.node_id).collect();
    ids.sort_unstable();
    ids
}

#[test]
fn first_node_of_an_empty_registry_bootstraps_and_leads() {
    let clock = Clock::new();
    let mut r = Registry::new(liveness());
    let first = r.register(reg(1), clock.now()).unwrap();
    assert_eq!(
        first,
        Registered {
            created: true,
            is_bootstrap: true
        }
    );
    assert_eq!(r.leader_id(), Some(1));
    assert!(r.bootstrap_initiated());
    let second = r.register(reg(2), clock.now()).unwrap();
    assert_eq!(
        second,
        Registered {
            created: true,
            is_bootstrap: false
        }
    );
    assert_eq!(r.leader_id(), Some(1));
}

#[test]
fn node_id_zero_is_a_valid_node_and_leader() {
    let clock = Clock::new();
    let mut r = Registry::new(liveness());
    assert!(r.register(reg(0), clock.now()).unwrap().is_bootstrap);
    assert_eq!(r.leader_id(), Some(0));
    r.register(reg(1), clock.now()).unwrap();
    assert!(r.set_leader(1));
    assert!(r.set_leader(0));
    assert_eq!(r.leader_id(), Some(0));
}

#[test]
fn re_registering_replaces_address_and_merges_metadata() {
    let clock = Clock::new();
    let mut r = Registry::new(liveness());
    r.register(with_metadata(3, json!({"zone": "a"})), clock.now())
        .unwrap();
    let update = Registration {
        ip_address: "10.0.0.33".into(),
        port: 6003,
        capabilities: vec!["raft".into()],
        ..with_metadata(3, json!({"rack": "r1"}))
    };
    let outcome = r.register(update, clock.now()).unwrap();
    assert_eq!(
        outcome,
        Registered {
            created: false,
            is_bootstrap: false
        }
    );
    let record = r.get(3).unwrap();
    assert_eq!(record.info.ip_address, "10.0.0.33");
    assert_eq!(record.info.port, 6003);
    assert_eq!(*record.info.capabilities, ["raft".to_string()]);
    let metadata: Value = serde_json::from_str(record.info.metadata.get()).unwrap();
    assert_eq!(metadata, json!({"zone": "a", "rack": "r1"}));
}

#[test]
fn re_registering_without_metadata_keeps_the_stored_metadata() {
    let clock = Clock::new();
    let mut r = Registry::new(liveness());
    r.register(with_metadata(1, json!({"zone": "a"})), clock.now())
        .unwrap();
    r.register(reg(1), clock.now()).unwrap();
    assert_eq!(r.get(1).unwrap().info.metadata.get(), r#"{"zone":"a"}"#);
}

#[test]
fn metadata_that_would_grow_past_the_limit_is_refused_and_nothing_changes() {
    let clock = Clock::new();
    let mut r = Registry::new(liveness());
    let first: Map<String, Value> = (0..limits::METADATA_KEYS)
        .map(|i| (format!("k{i}"), json!(i)))
        .collect();
    r.register(with_metadata(1, Value::Object(first)), clock.now())
        .unwrap();
    let version = r.version();
    let err = r
        .register(with_metadata(1, json!({"one_more": true})), clock.now())
        .unwrap_err();
    assert!(matches!(err, RegistryError::MetadataTooLarge(_)));
    assert_eq!(r.version(), version);
    assert!(!r.get(1).unwrap().info.metadata.get().contains("one_more"));
}

type Step = Box<dyn Fn(&mut Registry)>;

#[test]
fn version_grows_on_visible_changes_only() {
    let mut clock = Clock::new();
    let mut r = Registry::new(liveness());
    r.register(reg(1), clock.now()).unwrap();
    r.register(reg(2), clock.now()).unwrap();
    let v = r.version();

    clock.advance(1);
    assert!(r.heartbeat(2, clock.now()));
    r.register(reg(2), clock.now()).unwrap();
    assert_eq!(
        r.version(),
        v,
        "a heartbeat or identical re-registration changes nothing visible"
    );
    assert!(!r.set_leader(99));
    assert!(r.set_leader(1), "already leader");
    assert_eq!(r.version(), v);

    let steps: [(&str, Step); 4] = [
        (
            "metadata change",
            Box::new(|r| drop(r.register(with_metadata(2, json!({"a": 1})), Clock::new().now()))),
        ),
        (
            "address change",
            Box::new(|r| drop(r.register(Registration { port: 9, ..reg(2) }, Clock::new().now()))),
        ),
        ("leader change", Box::new(|r| assert!(r.set_leader(2)))),
        ("leave", Box::new(|r| assert!(r.remove(1)))),
    ];
    for (what, step) in steps {
        let before = r.version();
        step(&mut r);
        assert!(r.version() > before, "{what} must bump the version");
    }
}

#[test]
fn silent_nodes_are_suspected_then_reaped() {
    let mut clock = Clock::new();
    let mut r = Registry::new(liveness());
    r.register(reg(1), clock.now()).unwrap();
    r.register(reg(2), clock.now()).unwrap();

    clock.advance(89);
    assert!(r.heartbeat(2, clock.now()));
    assert_eq!(r.sweep(clock.now()), Swept::default());

    clock.advance(1);
    let v = r.version();
    assert_eq!(
        r.sweep(clock.now()),
        Swept {
            suspected: vec![1],
            reaped: vec![]
        }
    );
    assert_eq!(r.get(1).unwrap().status, NodeStatus::Suspected);
    assert!(r.version() > v);
    assert_eq!(r.counts().suspected_nodes, 1);
    assert_eq!(r.counts().active_nodes, 1);

    clock.advance(210);
    let swept = r.sweep(clock.now());
    assert_eq!(swept.reaped, vec![1]);
    assert_eq!(ids(&r), vec![2]);
    assert_eq!(r.counts().reaped_total, 1);
}

#[test]
fn a_heartbeat_or_registration_revives_a_suspected_node() {
    let mut clock = Clock::new();
    let mut r = Registry::new(liveness());
    r.register(reg(1), clock.now()).unwrap();
    r.register(reg(2), clock.now()).unwrap();
    clock.advance(100);
    assert_eq!(r.sweep(clock.now()).suspected, vec![1, 2]);
    assert_eq!(r.get(1).unwrap().status, NodeStatus::Suspected);
    assert_eq!(r.get(2).unwrap().status, NodeStatus::Suspected);
    let v = r.version();
    assert!(r.heartbeat(1, clock.now()));
    assert_eq!(r.get(1).unwrap().status, NodeStatus::Active);
    assert!(r.version() > v, "suspected -> active is visible");
    let v = r.version();
    r.register(reg(2), clock.now()).unwrap();
    assert_eq!(r.get(2).unwrap().status, NodeStatus::Active);
    assert!(r.version() > v, "suspected -> active is visible");
    assert_eq!(r.counts().suspected_nodes, 0);
}

#[test]
fn removing_or_reaping_the_leader_clears_it() {
    let mut clock = Clock::new();
    let mut r = Registry::new(liveness());
    r.register(reg(1), clock.now()).unwrap();
    r.register(reg(2), clock.now()).unwrap();
    assert!(r.remove(1));
    assert_eq!(r.leader_id(), None);

    assert!(r.set_leader(2));
    r.register(reg(3), clock.now()).unwrap();
    clock.advance(299);
    r.heartbeat(3, clock.now());
    clock.advance(1);
    r.sweep(clock.now());
    assert_eq!(r.leader_id(), None);
    assert_eq!(ids(&r), vec![3]);
}

#[test]
fn bootstrap_re_arms_when_everyone_left_on_purpose() {
    let clock = Clock::new();
    let mut r = Registry::new(liveness());
    r.register(reg(1), clock.now()).unwrap();
    r.register(reg(2), clock.now()).unwrap();
    assert!(r.remove(1));
    assert!(!r.bootstrap_armed(), "one node is still there");
    assert!(r.remove(2));
    assert!(r.bootstrap_armed());
    assert!(r.register(reg(3), clock.now()).unwrap().is_bootstrap);
    assert_eq!(r.leader_id(), Some(3));
}

#[test]
fn bootstrap_does_not_re_arm_when_the_registry_emptied_by_reaping() {
    let mut clock = Clock::new();
    let mut r = Registry::new(liveness());
    r.register(reg(1), clock.now()).unwrap();
    clock.advance(300);
    r.sweep(clock.now());
    assert_eq!(ids(&r), Vec::<NodeId>::new());
    let next = r.register(reg(2), clock.now()).unwrap();
    assert!(
        !next.is_bootstrap,
        "the cluster may still be running without us"
    );
    assert_eq!(r.leader_id(), None);
}

#[test]
fn removing_an_unknown_node_changes_nothing() {
    let clock = Clock::new();
    let mut r = Registry::new(liveness());
    r.register(reg(1), clock.now()).unwrap();
    let v = r.version();
    assert!(!r.remove(7));
    assert!(!r.heartbeat(7, clock.now()));
    assert_eq!(r.version(), v);
    assert!(!r.bootstrap_armed());
}

#[test]
fn the_wall_clock_does_not_decide_liveness() {
    let mut clock = Clock::new();
    let mut r = Registry::new(liveness());
    r.register(reg(1), clock.now()).unwrap();
    // The wall clock jumps a day ahead, then a day back; monotonic time barely moves.
    clock.unix += 86_400.0;
    assert_eq!(r.sweep(clock.now()), Swept::default());
    clock.unix -= 2.0 * 86_400.0;
    assert_eq!(r.sweep(clock.now()), Swept::default());
    assert!(r.heartbeat(1, clock.now()));
    assert_eq!(ids(&r), vec![1]);
}

#[test]
fn the_wall_clock_does_not_revive_a_suspected_node() {
    let mut clock = Clock::new();
    let mut r = Registry::new(liveness());
    r.register(reg(1), clock.now()).unwrap();
    clock.advance(100);
    assert_eq!(r.sweep(clock.now()).suspected, vec![1]);
    // The wall clock jumps back past the node's last_seen, then far ahead: it stays suspected,
    // neither revived nor reaped, until it is heard from.
    for jump in [-86_400.0, 2.0 * 86_400.0] {
        clock.unix += jump;
        assert_eq!(r.sweep(clock.now()), Swept::default());
        assert_eq!(r.get(1).unwrap().status, NodeStatus::Suspected);
    }
    assert_eq!(r.counts().suspected_nodes, 1);
    assert!(r.heartbeat(1, clock.now()));
    assert_eq!(r.get(1).unwrap().status, NodeStatus::Active);
}

#[test]
fn events_say_what_changed_in_order() {
    let mut clock = Clock::new();
    let mut r = Registry::new(liveness());
    r.register(reg(1), clock.now()).unwrap();
    clock.advance(300);
    r.sweep(clock.now());
    assert_eq!(
        r.take_events(),
        vec![
            Event::Joined {
                node_id: 1,
                address: "10.0.0.1:5001".into()
            },
            Event::LeaderChanged {
                from: None,
                to: Some(1)
            },
            Event::Reaped { node_id: 1 },
            Event::LeaderChanged {
                from: Some(1),
                to: None
            },
        ]
    );
    assert!(r.take_events().is_empty());
}

#[test]
fn the_journal_keeps_each_change_with_the_version_it_made() {
    use crate::server::journal::Change;
    let mut clock = Clock::new();
    let mut r = Registry::new(liveness());
    r.register(reg(1), clock.now()).unwrap();
    r.register(reg(2), clock.now()).unwrap();
    let joined = r.version();
    r.register(with_metadata(2, json!({"round": 1})), clock.now())
        .unwrap();
    r.heartbeat(1, clock.now());
    clock.advance(91);
    r.heartbeat(1, clock.now());
    r.sweep(clock.now());
    r.heartbeat(2, clock.now());
    r.remove(1);
    let changes: Vec<_> = r.journal().since(joined).unwrap().collect();
    assert_eq!(
        changes,
        vec![
            (joined + 1, Change::Updated(2)),
            (joined + 2, Change::Suspected(2)),
            (joined + 3, Change::Recovered(2)),
            (joined + 4, Change::Left(1)),
            (joined + 5, Change::Leader(None)),
        ]
    );
    assert_eq!(r.version(), joined + 5);
    let all: Vec<_> = r.journal().since(0).unwrap().map(|(_, c)| c).collect();
    assert_eq!(
        all[..3],
        [
            Change::Joined(1),
            Change::Leader(Some(1)),
            Change::Joined(2)
        ]
    );
}

#[test]
fn a_restored_or_rolled_back_registry_has_no_journal_before_it() {
    let clock = Clock::new();
    let mut r = Registry::new(liveness());
    r.register(reg(1), clock.now()).unwrap();
    let state = Restored {
        nodes: Vec::new(),
        version: r.version(),
        ..Restored::default()
    };
    r.roll_back(state.clone(), clock.now());
    assert!(r.journal().since(0).is_none());
    assert_eq!(r.journal().since(r.version()).unwrap().len(), 0);
    let restored = Registry::restore(liveness(), state, clock.now());
    assert!(restored.journal().since(0).is_none());
}

#[test]
fn a_record_serialises_in_the_wire_shape() {
    let clock = Clock::new();
    let mut r = Registry::new(liveness());
    r.register(with_metadata(1, json!({"role": "worker"})), clock.now())
        .unwrap();
    let text = serde_json::to_string(r.get(1).unwrap()).unwrap();
    let node: crate::api::Node = serde_json::from_str(&text).unwrap();
    assert_eq!(node.node_id, 1);
    assert_eq!(node.status, NodeStatus::Active);
    assert_eq!(node.last_seen, 1_000_000.0);
    assert_eq!(Value::Object(node.metadata), json!({"role": "worker"}));
    let keys: Vec<String> = serde_json::from_str::<Map<String, Value>>(&text)
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let mut expected = [
        "node_id",
        "ip_address",
        "port",
        "capabilities",
        "status",
        "last_seen",
        "join_timestamp",
        "metadata",
    ]
    .map(String::from)
    .to_vec();
    expected.sort();
    assert_eq!(keys, expected);
}

#[test]
fn a_rejoining_node_never_bootstraps_and_disarms_bootstrap_for_newcomers() {
    let clock = Clock::new();
    let mut r = Registry::new(liveness());
    let rejoin = Registration {
        previous_epoch: Some("18a-1".into()),
        ..reg(1)
    };
    let registered = r.register(rejoin, clock.now()).unwrap();
    assert_eq!(
        registered,
        Registered {
            created: true,
            is_bootstrap: false
        }
    );
    assert_eq!(r.leader_id(), None, "a rejoiner does not take the lead");
    assert!(!r.bootstrap_armed());
    assert!(r.bootstrap_initiated());
    let newcomer = r.register(reg(2), clock.now()).unwrap();
    assert!(
        !newcomer.is_bootstrap,
        "no second cluster beside the rejoiner"
    );
}

#[test]
fn a_rejoiner_into_a_registry_emptied_on_purpose_still_disarms_bootstrap() {
    let clock = Clock::new();
    let mut r = Registry::new(liveness());
    assert!(r.register(reg(1), clock.now()).unwrap().is_bootstrap);
    assert!(r.remove(1));
    assert!(r.bootstrap_armed());
    let rejoin = Registration {
        previous_epoch: Some("18a-1".into()),
        ..reg(3)
    };
    assert!(!r.register(rejoin, clock.now()).unwrap().is_bootstrap);
    assert!(!r.bootstrap_armed());
}

fn with_capabilities(node_id: NodeId, capabilities: &[&str]) -> Registration {
    Registration {
        capabilities: capabilities.iter().map(|c| c.to_string()).collect(),
        ..reg(node_id)
    }
}

fn capabilities_of(registry: &Registry, node_id: NodeId) -> Arc<[String]> {
    Arc::clone(&registry.get(node_id).unwrap().info.capabilities)
}

#[test]
fn nodes_offering_the_same_capabilities_share_one_copy_and_others_keep_their_own() {
    let clock = Clock::new();
    let mut registry = Registry::new(liveness());
    for id in 1..=4 {
        let caps: &[&str] = if id % 2 == 0 {
            &["raft"]
        } else {
            &["raft", "gossip"]
        };
        registry
            .register(with_capabilities(id, caps), clock.now())
            .unwrap();
    }
    let (one, two, three, four) = (
        capabilities_of(&registry, 1),
        capabilities_of(&registry, 2),
        capabilities_of(&registry, 3),
        capabilities_of(&registry, 4),
    );
    assert!(Arc::ptr_eq(&one, &three), "the same set is one copy");
    assert!(Arc::ptr_eq(&two, &four));
    assert_eq!(*one, ["raft".to_string(), "gossip".to_string()]);
    assert_eq!(*two, ["raft".to_string()]);
    // The order is the node's own: the same names in another order are another set.
    registry
        .register(with_capabilities(5, &["gossip", "raft"]), clock.now())
        .unwrap();
    let five = capabilities_of(&registry, 5);
    assert_eq!(*five, ["gossip".to_string(), "raft".to_string()]);
    assert!(!Arc::ptr_eq(&five, &one));
    // A re-registration that changes a node's set gives it the shared copy of the new one.
    registry
        .register(with_capabilities(1, &["raft"]), clock.now())
        .unwrap();
    assert!(Arc::ptr_eq(&capabilities_of(&registry, 1), &two));
    assert!(Arc::ptr_eq(&capabilities_of(&registry, 3), &three));
}

#[test]
fn more_distinct_capability_sets_than_are_kept_are_still_each_right() {
    let clock = Clock::new();
    let mut registry = Registry::new(liveness());
    let sets: Vec<Vec<String>> = (0..3 * SharedCapabilities::KEEP)
        .map(|i| vec![format!("cap{i}")])
        .collect();
    for round in 0..2 {
        for (i, set) in sets.iter().enumerate() {
            let id = (round * sets.len() + i) as NodeId + 1;
            let caps: Vec<&str> = set.iter().map(String::as_str).collect();
            registry
                .register(with_capabilities(id, &caps), clock.now())
                .unwrap();
        }
    }
    for (i, set) in sets.iter().enumerate() {
        for round in 0..2 {
            let id = (round * sets.len() + i) as NodeId + 1;
            assert_eq!(*capabilities_of(&registry, id), set[..]);
        }
    }
    assert!(registry.capabilities.recent.len() <= SharedCapabilities::KEEP);
}

#[test]
fn a_restored_registry_shares_the_capability_sets_again() {
    let clock = Clock::new();
    let info = |caps: &[&str]| {
        Arc::new(NodeInfo {
            ip_address: "10.0.0.1".into(),
            port: 5000,
            capabilities: caps
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .into(),
            metadata: serde_json::value::RawValue::from_string("{}".into()).unwrap(),
        })
    };
    let state = Restored {
        nodes: vec![
            (1, info(&["raft"]), 1.0),
            (2, info(&["raft"]), 2.0),
            (3, info(&["gossip"]), 3.0),
        ],
        ..Restored::default()
    };
    let mut registry = Registry::restore(liveness(), state, clock.now());
    let one = capabilities_of(&registry, 1);
    assert!(Arc::ptr_eq(&one, &capabilities_of(&registry, 2)));
    assert_eq!(*capabilities_of(&registry, 3), ["gossip".to_string()]);
    assert_eq!(registry.get(2).unwrap().join_timestamp, 2.0);
    // And a node that joins later with the same set gets the same copy.
    registry
        .register(with_capabilities(4, &["raft"]), clock.now())
        .unwrap();
    assert!(Arc::ptr_eq(&one, &capabilities_of(&registry, 4)));
}

#[test]
fn a_roll_back_restores_what_was_written_keeps_liveness_and_moves_the_version_past_both() {
    let mut clock = Clock::new();
    let mut r = Registry::new(liveness());
    r.register(reg(1), clock.now()).unwrap();
    r.register(reg(2), clock.now()).unwrap();
    // What the disk holds: nodes 1 and 2, node 1 leading, at version `written`.
    let written = Restored {
        nodes: [1, 2]
            .map(|id| {
                let record = r.get(id).unwrap();
                (id, Arc::clone(&record.info), record.join_timestamp)
            })
            .to_vec(),
        leader: Some(1),
        version: r.version(),
        bootstrap_initiated: true,
        bootstrap_armed: false,
    };
    clock.advance(89);
    assert!(r.heartbeat(2, clock.now()));
    clock.advance(1);
    r.sweep(clock.now());
    assert_eq!(r.get(1).unwrap().status, NodeStatus::Suspected);
    // A change that never reached the disk: node 3 and a new leader.
    r.register(reg(3), clock.now()).unwrap();
    assert!(r.set_leader(3));
    let (seen, touches) = (r.version(), r.touches());

    r.roll_back(written.clone(), clock.now());
    assert_eq!(ids(&r), vec![1, 2], "the unwritten node is gone");
    assert_eq!(r.leader_id(), Some(1));
    assert!(
        r.version() > seen,
        "past what readers saw: {} > {seen}",
        r.version()
    );
    assert!(r.version() > written.version);
    assert_ne!(r.touches(), touches);
    // Liveness is not on disk: a node keeps its own.
    assert_eq!(r.get(1).unwrap().status, NodeStatus::Suspected);
    assert_eq!(r.get(2).unwrap().last_seen, clock.now().unix - 1.0);
    assert!(!r.bootstrap_armed());

    // Going back to a version above the one in memory moves past that one too.
    let ahead = Restored {
        version: r.version() + 10,
        ..written
    };
    let target = ahead.version;
    r.roll_back(ahead, clock.now());
    assert!(r.version() > target);
}

/// What the budget should hold: every node's cost, counted afresh.
fn counted_afresh(registry: &Registry) -> u64 {
    registry
        .nodes()
        .map(|r| record_bytes(r.node_id, &r.info))
        .sum()
}

#[test]
fn the_budget_accounts_every_node_through_register_update_remove_reap_and_roll_back() {
    let mut clock = Clock::new();
    let mut r = Registry::new(liveness());
    for id in 1..=5 {
        r.register(reg(id), clock.now()).unwrap();
    }
    r.register(
        with_metadata(2, json!({"zone": "b".repeat(500)})),
        clock.now(),
    )
    .unwrap();
    assert!(r.remove(3));
    assert_eq!(r.budget().used, counted_afresh(&r));
    let kept = Restored {
        nodes: r
            .nodes()
            .map(|n| (n.node_id, Arc::clone(&n.info), n.join_timestamp))
            .collect(),
        ..Restored::default()
    };
    r.register(reg(9), clock.now()).unwrap();
    r.roll_back(kept, clock.now());
    assert_eq!(r.budget().used, counted_afresh(&r));
    clock.advance(100);
    r.heartbeat(1, clock.now());
    clock.advance(250);
    r.sweep(clock.now());
    assert_eq!(ids(&r), vec![1]);
    assert_eq!(r.budget().used, counted_afresh(&r));
    assert!(r.remove(1));
    assert_eq!(r.budget().used, 0);
}

#[test]
fn a_node_costs_at_least_what_a_list_writes_of_it_suspected_or_not() {
    let mut r = Registry::new(liveness());
    let mut wide = with_metadata(1, json!({"note": "quote \" and \\ and \u{1}", "n": 1.5}));
    wide.capabilities = vec!["a\"b".into(), "\u{2}".repeat(128)];
    r.register(wide, Now::system()).unwrap();
    let mut record = r.get(1).unwrap().clone();
    record.status = NodeStatus::Suspected;
    record.last_seen = f64::MAX;
    record.join_timestamp = -f64::MIN_POSITIVE;
    let written = serde_json::to_string(&record).unwrap().len() as u64;
    // Counted with the comma before it in a list.
    let comma = 1;
    assert!(
        r.budget().used >= written + comma,
        "{} < {written} + 1",
        r.budget().used
    );
    assert!(r.budget().used <= written + 1 + 48);
}

#[test]
fn past_the_budget_a_new_node_and_a_growing_one_are_refused_and_nothing_changes() {
    let clock = Clock::new();
    let mut r = Registry::new(liveness());
    r.register(reg(1), clock.now()).unwrap();
    let one = r.budget().used;
    r.set_max_bytes(one * 2 + 10);
    r.register(reg(2), clock.now()).unwrap();
    let version = r.version();
    let refused = r.register(reg(3), clock.now()).unwrap_err();
    assert!(
        matches!(refused, RegistryError::OverBudget { .. }),
        "{refused}"
    );
    let grow = with_metadata(2, json!({"more": "x".repeat(100)}));
    assert!(matches!(
        r.register(grow, clock.now()),
        Err(RegistryError::OverBudget { .. })
    ));
    assert_eq!((ids(&r), r.version()), (vec![1, 2], version));
    assert_eq!(r.budget().used, counted_afresh(&r));
    // What does not grow goes on.
    r.register(reg(2), clock.now()).unwrap();
    assert!(r.heartbeat(1, clock.now()));
    // A rejoining node that does not fit disarms nothing.
    let mut empty = Registry::new(liveness());
    empty.set_max_bytes(10);
    let mut rejoining = reg(3);
    rejoining.previous_epoch = Some("e".into());
    assert!(empty.register(rejoining, clock.now()).is_err());
    assert!(empty.bootstrap_armed() && !empty.bootstrap_initiated());
    assert_eq!(empty.version(), 0);
}
