use super::*;

/// A client's listed versions, as a request carries them.
fn listed(initial: &HashMap<String, String>) -> InitialVersions<'_> {
    initial.iter().map(|(name, version)| (name.as_str(), crate::cache::parse_version(version))).collect()
}

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
    sub.apply(SubscriptionRequest { subscribe: &names(list), ..Default::default() }, usize::MAX);
}

fn updated(changes: &Changes) -> Vec<&str> {
    changes.updated.iter().map(|(n, _)| &**n).collect()
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
    sub.apply(SubscriptionRequest { unsubscribe: &names(&["*"]), ..Default::default() }, usize::MAX);
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
fn a_resource_named_while_held_through_the_wildcard_is_still_removed_when_it_goes() {
    let mut sub = Subscription::default();
    subscribe(&mut sub, &[]);
    send(&mut sub, &resources(&[("a", "1")]));
    // Naming it owes a resend, but the client still holds it; then it is deleted and unnamed.
    subscribe(&mut sub, &["a"]);
    sub.apply(SubscriptionRequest { unsubscribe: &names(&["a"]), ..Default::default() }, usize::MAX);
    assert_eq!(send(&mut sub, &resources(&[])).removed, ["a"]);
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
    sub.apply(SubscriptionRequest { unsubscribe: &names(&["b"]), ..Default::default() }, usize::MAX);
    assert!(!sub.owes_response);
    assert!(sub.changes(&resources(&[("a", "1")])).is_empty(), "no removal for an unsubscribed name");
}

#[test]
fn resubscribe_in_same_stream_is_answered_even_if_unchanged() {
    let mut sub = Subscription::default();
    subscribe(&mut sub, &["a"]);
    let res = resources(&[("a", "1")]);
    send(&mut sub, &res);
    subscribe(&mut sub, &["a"]);
    assert!(sub.owes_response);
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
    sub.apply(
        SubscriptionRequest {
            subscribe: &names(&["a", "b", "gone"]),
            initial_resource_versions: Some(&listed(&initial)),
            ..Default::default()
        },
        usize::MAX,
    );
    let changes = sub.changes(&resources(&[("a", "1"), ("b", "2")]));
    assert_eq!(updated(&changes), ["b"]);
    assert_eq!(changes.removed, ["gone"]);
}

#[test]
fn a_reconnecting_client_that_names_a_missing_resource_before_the_wildcard_is_told_it_is_absent() {
    // Its versions are checked against what is served, which becomes its baseline: the
    // diff then looks only at what differs from it, and the name it holds nothing of must
    // be among that, though naming it came before the wildcard widened the scope.
    let res = resources(&[("a", "1")]);
    let initial: HashMap<String, String> = res.iter().map(|(n, r)| (n.to_string(), r.version.clone())).collect();
    let mut sub = Subscription::default();
    sub.apply(
        SubscriptionRequest {
            subscribe: &names(&["b", "*"]),
            initial_resource_versions: Some(&listed(&initial)),
            current: Some(&res),
            ..Default::default()
        },
        usize::MAX,
    );
    let changes = sub.changes(&res);
    assert!(changes.updated.is_empty(), "a is held at the version served");
    assert_eq!(changes.removed, ["b"]);
}

#[test]
fn wildcard_initial_resource_versions_skip_everything_unchanged() {
    let res = resources(&[("a", "1"), ("b", "2")]);
    let initial: HashMap<String, String> = res.iter().map(|(n, r)| (n.to_string(), r.version.clone())).collect();
    let mut sub = Subscription::default();
    sub.apply(
        SubscriptionRequest { initial_resource_versions: Some(&listed(&initial)), ..Default::default() },
        usize::MAX,
    );
    assert!(sub.changes(&res).is_empty());
    assert!(sub.owes_response, "the first request is still answered");
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
    assert!(sub.resend(&Arc::from("a")));
    assert!(!sub.resend(&Arc::from("missing")));
    assert!(!sub.resend(&Arc::from("other")));
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

mod rebase_equivalence {
    //! Taking what a client holds as a baseline plus exceptions changes nothing it is sent:
    //! a subscription that rebases whenever it is in sync answers every request exactly as
    //! one that never rebases and keeps an exception per name.

    use super::*;
    use crate::cache::intern;
    use proptest::prelude::*;

    const NAMES: [&str; 5] = ["a", "b", "c", "d", "*"];

    #[derive(Clone, Debug)]
    enum Step {
        Subscribe(Vec<usize>),
        Unsubscribe(Vec<usize>),
        Replace(Vec<usize>, bool),
        Resources(Vec<(usize, u8)>),
        Send,
        Resend(usize),
    }

    fn step() -> impl Strategy<Value = Step> {
        let names = || prop::collection::vec(0..NAMES.len(), 0..3);
        prop_oneof![
            2 => names().prop_map(Step::Subscribe),
            1 => names().prop_map(Step::Unsubscribe),
            1 => (names(), any::<bool>()).prop_map(|(n, w)| Step::Replace(n, w)),
            2 => prop::collection::vec((0..4usize, 0..3u8), 0..4).prop_map(Step::Resources),
            4 => Just(Step::Send),
            1 => (0..4usize).prop_map(Step::Resend),
        ]
    }

    /// "d" is named-only, as a gRPC listener is: a property of the name, never of a version.
    fn build(items: &[(usize, u8)]) -> Resources {
        items
            .iter()
            .map(|(name, body)| {
                let resource =
                    VersionedResource { named_only: NAMES[*name] == "d", ..VersionedResource::new(vec![*body]) };
                (intern(NAMES[*name]), Arc::new(resource))
            })
            .collect()
    }

    fn held(sub: &Subscription) -> Vec<(String, u64)> {
        let mut held: Vec<_> = sub.held().map(|(n, h)| (n.to_owned(), h)).collect();
        held.sort();
        held
    }

    proptest! {
        #[test]
        fn a_rebased_subscription_sends_exactly_what_an_unrebased_one_sends(
            first in prop::collection::vec(0..NAMES.len(), 0..3),
            initial in prop::collection::vec((0..4usize, 0..3u8), 0..3),
            steps in prop::collection::vec(step(), 1..30),
        ) {
            let (mut plain, mut rebased) = (Subscription::default(), Subscription::default());
            let initial: HashMap<String, String> = initial
                .iter()
                .map(|(n, b)| (NAMES[*n].to_owned(), VersionedResource::new(vec![*b]).version))
                .collect();
            let subscribe: Vec<String> = first.iter().map(|n| NAMES[*n].to_owned()).collect();
            for sub in [&mut plain, &mut rebased] {
                sub.apply(SubscriptionRequest { subscribe: &subscribe, initial_resource_versions: Some(&listed(&initial)), ..Default::default() }, usize::MAX);
            }
            let mut resources = Resources::default();
            for step in steps {
                match step {
                    Step::Subscribe(n) => {
                        let list: Vec<String> = n.iter().map(|i| NAMES[*i].to_owned()).collect();
                        plain.apply(SubscriptionRequest { subscribe: &list, ..Default::default() }, usize::MAX);
                        rebased.apply(SubscriptionRequest { subscribe: &list, ..Default::default() }, usize::MAX);
                    }
                    Step::Unsubscribe(n) => {
                        let list: Vec<String> = n.iter().map(|i| NAMES[*i].to_owned()).collect();
                        plain.apply(SubscriptionRequest { unsubscribe: &list, ..Default::default() }, usize::MAX);
                        rebased.apply(SubscriptionRequest { unsubscribe: &list, ..Default::default() }, usize::MAX);
                    }
                    Step::Replace(n, wildcard) => {
                        let list: Vec<String> = n.iter().map(|i| NAMES[*i].to_owned()).collect();
                        prop_assert_eq!(plain.replace(&list, wildcard), rebased.replace(&list, wildcard));
                    }
                    Step::Resources(items) => resources = build(&items),
                    Step::Send => {
                        let (a, b) = (plain.changes(&resources), rebased.changes(&resources));
                        prop_assert_eq!(&a, &b);
                        plain.record_sent(&a);
                        rebased.record_sent(&b);
                        rebased.rebase(&resources);
                    }
                    Step::Resend(n) => prop_assert_eq!(plain.resend(&Arc::from(NAMES[n])), rebased.resend(&Arc::from(NAMES[n]))),
                }
                prop_assert_eq!(held(&plain), held(&rebased));
                prop_assert_eq!(plain.is_wildcard(), rebased.is_wildcard());
                prop_assert_eq!(plain.name_count(), rebased.name_count());
                prop_assert_eq!(plain.changes(&resources), rebased.changes(&resources));
            }
        }
    }
}
