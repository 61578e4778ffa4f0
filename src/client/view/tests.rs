use super::*;

fn node(id: NodeId) -> Node {
    Node {
        node_id: id,
        ip_address: "10.0.0.1".into(),
        port: 5000,
        capabilities: vec!["raft".into()],
        status: NodeStatus::Active,
        last_seen: 1.0,
        join_timestamp: 1.0,
        metadata: Default::default(),
    }
}

fn info(ids: &[NodeId], leader: Option<NodeId>, version: u64) -> ClusterInfo {
    ClusterInfo {
        nodes: ids.iter().map(|&i| node(i)).collect(),
        leader: leader.map(node),
        registry_version: version,
    }
}

fn ids(view: &ViewState) -> Vec<NodeId> {
    let shown = view.shown().unwrap();
    shown.cluster.nodes.iter().map(|n| n.node_id).collect()
}

const CARRY: Duration = Duration::from_secs(10);

#[test]
fn the_first_view_is_a_change_with_every_peer_joined() {
    let mut view = ViewState::default();
    let t = Instant::now();
    let change = view
        .update(
            info(&[2, 3], Some(2), 5),
            None,
            Some("a".into()),
            false,
            CARRY,
            t,
        )
        .unwrap();
    assert_eq!(change.joined.len(), 2);
    assert!(change.leader_changed);
    assert_eq!(view.fresh_key(), Some((Some("a"), 5)));
}

#[test]
fn a_new_version_with_the_same_content_is_no_change() {
    let mut view = ViewState::default();
    let t = Instant::now();
    view.update(info(&[2], None, 5), None, Some("a".into()), false, CARRY, t);
    let mut moved = info(&[2], None, 6);
    moved.nodes[0].last_seen = 99.0;
    assert_eq!(
        view.update(moved, None, Some("a".into()), false, CARRY, t),
        None
    );
}

#[test]
fn departures_and_updates_within_one_run_are_reported_at_once() {
    let mut view = ViewState::default();
    let t = Instant::now();
    view.update(
        info(&[2, 3], Some(2), 5),
        None,
        Some("a".into()),
        false,
        CARRY,
        t,
    );
    let mut next = info(&[2, 4], Some(2), 7);
    next.nodes[0].port = 6000;
    let change = view
        .update(next, None, Some("a".into()), false, CARRY, t)
        .unwrap();
    assert_eq!(change.left, vec![3]);
    assert_eq!(change.joined[0].node_id, 4);
    assert_eq!(change.updated[0].node_id, 2);
    assert!(!change.leader_changed && !change.epoch_changed);
}

#[test]
fn a_restart_carries_peers_until_they_are_back_and_reports_no_departure() {
    let mut view = ViewState::default();
    let t = Instant::now();
    view.update(
        info(&[2, 3], Some(2), 9),
        None,
        Some("a".into()),
        false,
        CARRY,
        t,
    );
    // The new run knows nobody yet, has no leader, and its version went backwards.
    let change = view.update(info(&[], None, 1), None, Some("b".into()), true, CARRY, t);
    // Issue 21, item 4: only the run changed, and that alone is reported.
    let change = change.expect("the new run is reported");
    assert!(
        change.epoch_changed && change.events().is_empty(),
        "{change:?}"
    );
    assert_eq!(ids(&view), vec![2, 3]);
    assert_eq!(
        view.shown()
            .unwrap()
            .cluster
            .leader
            .as_ref()
            .unwrap()
            .node_id,
        2
    );
    assert_eq!(view.shown().unwrap().key(), (Some("b"), 1));
    // Node 3 is back; node 2 not yet.
    assert_eq!(
        view.update(info(&[3], None, 2), None, Some("b".into()), false, CARRY, t),
        None
    );
    assert_eq!(ids(&view), vec![2, 3]);
    // Node 2 is back and is leader again: carrying ends.
    view.update(
        info(&[2, 3], Some(2), 4),
        None,
        Some("b".into()),
        false,
        CARRY,
        t,
    );
    assert!(view.carried.is_none());
}

#[test]
fn a_peer_that_never_comes_back_is_reported_gone_when_the_carry_period_ends() {
    let mut view = ViewState::default();
    let t = Instant::now();
    view.update(
        info(&[2, 3], None, 9),
        None,
        Some("a".into()),
        false,
        CARRY,
        t,
    );
    view.update(info(&[2], None, 1), None, Some("b".into()), true, CARRY, t);
    assert_eq!(view.confirm(t + CARRY / 2), None);
    assert_eq!(ids(&view), vec![2, 3]);
    let change = view.confirm(t + CARRY).unwrap();
    assert_eq!(change.left, vec![3]);
    assert_eq!(ids(&view), vec![2]);
}

#[test]
fn an_epoch_change_alone_starts_carrying() {
    let mut view = ViewState::default();
    let t = Instant::now();
    view.update(info(&[2], None, 9), None, Some("a".into()), false, CARRY, t);
    let change = view.update(info(&[], None, 9), None, Some("b".into()), false, CARRY, t);
    let change = change.expect("the new run is reported");
    assert!(
        change.epoch_changed && change.events().is_empty(),
        "{change:?}"
    );
    assert_eq!(ids(&view), vec![2]);
}
fn view_of(active: &[NodeId], suspected: &[NodeId]) -> ClusterView {
    let mut susp: Vec<Node> = suspected.iter().map(|&i| node(i)).collect();
    for n in &mut susp {
        n.status = NodeStatus::Suspected;
    }
    ClusterView {
        cluster: info(active, None, 1),
        suspected: susp,
        epoch: None,
        updated: Instant::now(),
        carried: Vec::new(),
        leader_carried: false,
    }
}

fn suspected(ids: &[NodeId]) -> Option<Vec<Node>> {
    Some(view_of(&[], ids).suspected)
}

fn node_ids(nodes: &[Node]) -> Vec<NodeId> {
    nodes.iter().map(|n| n.node_id).collect()
}

#[test]
fn a_suspicion_and_a_recovery_are_reported_as_such_not_as_leave_and_join() {
    let mut view = ViewState::default();
    let t = Instant::now();
    view.update(
        info(&[2, 3], None, 1),
        suspected(&[]),
        None,
        false,
        CARRY,
        t,
    );
    let change = view
        .update(info(&[2], None, 2), suspected(&[3]), None, false, CARRY, t)
        .unwrap();
    assert_eq!(node_ids(&change.suspected), vec![3]);
    assert!(
        change.left.is_empty() && change.joined.is_empty(),
        "{change:?}"
    );
    assert!(
        change.updated.is_empty(),
        "a status change is not an update"
    );
    assert_eq!(ids(&view), vec![2], "the peer list holds active nodes only");
    assert_eq!(node_ids(&view.shown().unwrap().suspected), vec![3]);
    let change = view
        .update(
            info(&[2, 3], None, 3),
            suspected(&[]),
            None,
            false,
            CARRY,
            t,
        )
        .unwrap();
    assert_eq!(node_ids(&change.recovered), vec![3]);
    assert!(change.joined.is_empty() && change.suspected.is_empty());
    // Suspected again, then reaped: a departure.
    view.update(info(&[2], None, 4), suspected(&[3]), None, false, CARRY, t);
    let change = view
        .update(info(&[2], None, 5), suspected(&[]), None, false, CARRY, t)
        .unwrap();
    assert_eq!(change.left, vec![3]);
}

#[test]
fn an_answer_without_suspected_nodes_keeps_those_known() {
    let mut view = ViewState::default();
    let t = Instant::now();
    view.update(
        info(&[2], None, 1),
        suspected(&[3, 4]),
        None,
        false,
        CARRY,
        t,
    );
    // A registration's answer lists active nodes only: 4 is active again, 3 still unknown.
    let change = view
        .update(info(&[2, 4], None, 2), None, None, false, CARRY, t)
        .unwrap();
    assert_eq!(node_ids(&change.recovered), vec![4]);
    assert!(change.left.is_empty());
    assert_eq!(node_ids(&view.shown().unwrap().suspected), vec![3]);
}

#[test]
fn an_older_description_of_the_same_run_is_ignored() {
    let mut view = ViewState::default();
    let t = Instant::now();
    view.update(
        info(&[2, 3], None, 7),
        None,
        Some("a".into()),
        false,
        CARRY,
        t,
    );
    let older = view.update(info(&[2], None, 6), None, Some("a".into()), false, CARRY, t);
    assert_eq!(older, None);
    assert_eq!(ids(&view), vec![2, 3]);
    assert_eq!(view.fresh_key(), Some((Some("a"), 7)));
}

#[test]
fn suspected_peers_are_carried_over_a_restart_with_their_status() {
    let mut view = ViewState::default();
    let t = Instant::now();
    view.update(
        info(&[2], None, 9),
        suspected(&[3]),
        Some("a".into()),
        false,
        CARRY,
        t,
    );
    let change = view.update(
        info(&[], None, 1),
        suspected(&[]),
        Some("b".into()),
        true,
        CARRY,
        t,
    );
    // Issue 21, item 4: only the run changed, and that alone is reported.
    let change = change.expect("the new run is reported");
    assert!(
        change.epoch_changed && change.events().is_empty(),
        "{change:?}"
    );
    assert_eq!(ids(&view), vec![2]);
    assert_eq!(node_ids(&view.shown().unwrap().suspected), vec![3]);
}

#[test]
fn events_print_one_line_and_one_json_object_each() {
    let old = view_of(&[2, 3], &[4]);
    let mut new = view_of(&[2, 4, 5], &[3]);
    new.cluster.leader = Some(node(2));
    let change = diff(Some(&old), &new, false).unwrap();
    let lines: Vec<String> = change.events().iter().map(|e| e.to_string()).collect();
    assert_eq!(
        lines,
        vec![
            "joined 5 10.0.0.1:5000",
            "suspected 3 10.0.0.1:5000",
            "back 4 10.0.0.1:5000",
            "leader 2 10.0.0.1:5000",
        ]
    );
    let gone = diff(Some(&new), &view_of(&[2, 4, 5], &[]), false).unwrap();
    let lines: Vec<String> = gone.events().iter().map(|e| e.to_string()).collect();
    assert_eq!(lines, vec!["left 3", "leader none"]);
    let json: Vec<serde_json::Value> = gone.events().iter().map(|e| e.to_json()).collect();
    assert_eq!(json[0], serde_json::json!({"event": "left", "node_id": 3}));
    assert_eq!(
        json[1],
        serde_json::json!({"event": "leader", "node_id": null, "node": null})
    );
    let joined = change.events()[0].to_json();
    assert_eq!(joined["event"], "joined");
    assert_eq!(joined["node_id"], 5);
    assert_eq!(joined["node"]["ip_address"], "10.0.0.1");
    assert_eq!(joined["node"]["status"], "active");
}

#[test]
fn an_event_line_stays_one_line_whatever_the_gateway_sent() {
    let mut forged = node(3);
    forged.ip_address = "10.0.0.3\nleader 9 10.0.0.9:1\u{1b}[2J".into();
    for event in [
        ChangeEvent::Joined(forged.clone()),
        ChangeEvent::Back(forged.clone()),
        ChangeEvent::Leader(Some(forged.clone())),
    ] {
        let line = event.to_string();
        assert!(!line.chars().any(char::is_control), "{line:?}");
        assert!(line.contains("10.0.0.3\\nleader 9"), "{line:?}");
    }
    assert_eq!(
        ChangeEvent::Joined(node(4)).to_string(),
        "joined 4 10.0.0.1:5000"
    );
}

/// Issue 21, item 4: a change of gateway run is news even when nothing else changed.
#[test]
fn a_new_epoch_alone_is_reported() {
    let mut state = ViewState::default();
    let now = Instant::now();
    let carry = Duration::from_secs(10);
    state.update(
        info(&[2], None, 1),
        Some(vec![]),
        Some("a".into()),
        false,
        carry,
        now,
    );
    let change = state
        .update(
            info(&[2], None, 1),
            Some(vec![]),
            Some("b".into()),
            false,
            carry,
            now,
        )
        .expect("an epoch change is reported");
    assert!(change.epoch_changed);
}

/// Issue 21, item 6: peers and a leader carried over a restart are marked until the gateway
/// lists them again.
#[test]
fn carried_peers_and_leader_are_marked_until_confirmed() {
    let mut state = ViewState::default();
    let now = Instant::now();
    let carry = Duration::from_secs(10);
    state.update(
        info(&[2, 3], Some(2), 1),
        Some(vec![]),
        Some("a".into()),
        false,
        carry,
        now,
    );
    state.update(
        info(&[3], None, 1),
        Some(vec![]),
        Some("b".into()),
        false,
        carry,
        now,
    );
    let view = state.shown().unwrap();
    assert_eq!(view.carried, vec![2]);
    assert!(view.leader_carried);
    state.update(
        info(&[2, 3], Some(2), 2),
        Some(vec![]),
        Some("b".into()),
        false,
        carry,
        now,
    );
    let view = state.shown().unwrap();
    assert!(view.carried.is_empty());
    assert!(!view.leader_carried);
}
