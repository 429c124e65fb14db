use super::*;

fn resources(items: &[(&str, &str)]) -> Resources {
    items
        .iter()
        .map(|(name, body)| (name.to_string(), Arc::new(VersionedResource::new(body.as_bytes().to_vec()))))
        .collect()
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn subscribe(sub: &mut Subscription, list: &[&str]) {
    sub.apply(SubscriptionRequest { subscribe: &names(list), ..Default::default() });
}

fn updated(changes: &Changes) -> Vec<&str> {
    changes.updated.iter().map(|(n, _)| n.as_str()).collect()
}

fn send(sub: &mut Subscription, res: &Resources) -> Changes {
    let changes = sub.changes(res);
    sub.record_sent(&changes);
    changes
}

#[test]
fn first_request_without_names_is_legacy_wildcard() {
    let mut sub = Subscription::default();
    subscribe(&mut sub, &[]);
    assert!(sub.is_wildcard());
    let res = resources(&[("a", "1"), ("b", "2")]);
    assert_eq!(updated(&sub.changes(&res)), ["a", "b"]);
}

#[test]
fn explicit_star_subscribes_wildcard_and_unsubscribing_star_ends_it() {
    let mut sub = Subscription::default();
    subscribe(&mut sub, &["x"]);
    assert!(!sub.is_wildcard());
    subscribe(&mut sub, &["*"]);
    assert!(sub.is_wildcard());
    let res = resources(&[("a", "1"), ("x", "2")]);
    send(&mut sub, &res);
    sub.apply(SubscriptionRequest { unsubscribe: &names(&["*"]), ..Default::default() });
    assert!(!sub.is_wildcard());
    // "a" was only wanted through the wildcard; it is forgotten, "x" stays.
    let gone = resources(&[("x", "2")]);
    assert!(sub.changes(&gone).is_empty());
}

#[test]
fn first_request_with_names_is_not_wildcard() {
    let mut sub = Subscription::default();
    subscribe(&mut sub, &["a"]);
    let res = resources(&[("a", "1"), ("b", "2")]);
    assert_eq!(updated(&sub.changes(&res)), ["a"]);
}

#[test]
fn subscribing_to_a_missing_name_removes_it_once_and_sends_it_when_it_appears() {
    let mut sub = Subscription::default();
    subscribe(&mut sub, &["ghost"]);
    let empty = resources(&[]);
    assert_eq!(send(&mut sub, &empty).removed, ["ghost"]);
    assert!(sub.changes(&empty).is_empty(), "absence is told once");
    let appeared = resources(&[("ghost", "1")]);
    assert_eq!(updated(&send(&mut sub, &appeared)), ["ghost"]);
}

#[test]
fn deleted_resources_are_sent_in_removed_resources() {
    let mut sub = Subscription::default();
    subscribe(&mut sub, &[]);
    send(&mut sub, &resources(&[("a", "1"), ("b", "2")]));
    let changes = send(&mut sub, &resources(&[("a", "1")]));
    assert!(changes.updated.is_empty());
    assert_eq!(changes.removed, ["b"]);
}

#[test]
fn unchanged_resources_are_not_resent() {
    let mut sub = Subscription::default();
    subscribe(&mut sub, &[]);
    let res = resources(&[("a", "1"), ("b", "2")]);
    send(&mut sub, &res);
    let changes = sub.changes(&resources(&[("a", "1"), ("b", "3")]));
    assert_eq!(updated(&changes), ["b"]);
}

#[test]
fn unsubscribe_forgets_the_name_and_owes_nothing() {
    let mut sub = Subscription::default();
    subscribe(&mut sub, &["a", "b"]);
    let res = resources(&[("a", "1"), ("b", "2")]);
    send(&mut sub, &res);
    sub.apply(SubscriptionRequest { unsubscribe: &names(&["b"]), ..Default::default() });
    assert!(!sub.owes_response());
    assert!(sub.changes(&resources(&[("a", "1")])).is_empty(), "no removal for an unsubscribed name");
}

#[test]
fn resubscribe_in_same_stream_is_answered_even_if_unchanged() {
    let mut sub = Subscription::default();
    subscribe(&mut sub, &["a"]);
    let res = resources(&[("a", "1")]);
    send(&mut sub, &res);
    subscribe(&mut sub, &["a"]);
    assert!(sub.owes_response());
    assert_eq!(updated(&sub.changes(&res)), ["a"]);
}

#[test]
fn initial_resource_versions_skip_unchanged_and_remove_vanished() {
    let mut sub = Subscription::default();
    let initial = HashMap::from([
        ("a".to_string(), VersionedResource::new(b"1".to_vec()).version),
        ("b".to_string(), "old".to_string()),
        ("gone".to_string(), "x".to_string()),
    ]);
    sub.apply(SubscriptionRequest {
        subscribe: &names(&["a", "b", "gone"]),
        initial_resource_versions: Some(&initial),
        ..Default::default()
    });
    let changes = sub.changes(&resources(&[("a", "1"), ("b", "2")]));
    assert_eq!(updated(&changes), ["b"]);
    assert_eq!(changes.removed, ["gone"]);
}

#[test]
fn wildcard_initial_resource_versions_skip_everything_unchanged() {
    let res = resources(&[("a", "1"), ("b", "2")]);
    let initial: HashMap<String, String> = res.iter().map(|(n, r)| (n.clone(), r.version.clone())).collect();
    let mut sub = Subscription::default();
    sub.apply(SubscriptionRequest { initial_resource_versions: Some(&initial), ..Default::default() });
    assert!(sub.changes(&res).is_empty());
    assert!(sub.owes_response(), "the first request is still answered");
}

#[test]
fn a_sent_version_is_not_resent_after_a_nack() {
    // NACKs do not roll back what the client holds: Envoy keeps its previous
    // version, and sending the rejected one again would only be rejected again.
    let mut sub = Subscription::default();
    subscribe(&mut sub, &[]);
    send(&mut sub, &resources(&[("a", "bad")]));
    assert!(sub.changes(&resources(&[("a", "bad")])).is_empty());
    assert_eq!(updated(&sub.changes(&resources(&[("a", "fixed")]))), ["a"]);
}

#[test]
fn resend_only_applies_to_names_the_client_holds() {
    let mut sub = Subscription::default();
    subscribe(&mut sub, &["a", "missing"]);
    let res = resources(&[("a", "1")]);
    send(&mut sub, &res);
    assert!(sub.resend("a"));
    assert!(!sub.resend("missing"));
    assert!(!sub.resend("other"));
    assert_eq!(updated(&sub.changes(&res)), ["a"]);
}

#[test]
fn a_name_is_never_both_updated_and_removed() {
    let mut sub = Subscription::default();
    subscribe(&mut sub, &["a", "b"]);
    send(&mut sub, &resources(&[("a", "1")]));
    let changes = sub.changes(&resources(&[("b", "1")]));
    assert_eq!(updated(&changes), ["b"]);
    assert_eq!(changes.removed, ["a"]);
}
