//! Property tests of translation over generated objects, usable or not, that contend for
//! the same addresses and ports:
//! - after any sequence of changes (objects added, replaced, removed; lists reordered;
//!   tables built on the last table, an older one or none), the incremental
//!   [`Translator`] says exactly what [`translate`] says from scratch;
//! - only addresses the objects name as ours are captured;
//! - an unusable Service changes nothing for the others.

use super::tests::hints;
use super::translator_tests::{contents, step};
use super::*;
use k8s_openapi::api::core::v1::{
    ClientIPConfig, LoadBalancerIngress, LoadBalancerStatus, ServiceSpec as K8sServiceSpec,
    ServiceStatus as K8sServiceStatus, SessionAffinityConfig,
};
use k8s_openapi::api::discovery::v1::{EndpointConditions, EndpointPort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use proptest::prelude::*;
use proptest::sample::select;
use std::collections::BTreeMap;

const NAMESPACES: [&str; 2] = ["default", "other"];
const NAMES: [&str; 3] = ["a", "b", "c"];
// Each knob below has usual values and odd ones (unusable, or ignored by rule), picked one
// time in ten ([`pick`]): most objects are usable and meet (a Service port and a slice
// port of the same name and protocol, endpoints of the family), and the odd ones are
// there to be skipped without disturbing the rest.

/// Cluster IPs, shared so that Services contend for them; "None" is headless.
const CLUSTER_IPS: ([&str; 4], [&str; 3]) = (
    ["198.18.0.10", "198.18.0.11", "198.18.0.12", "2001:db8::10"],
    ["None", "not-an-ip", ""],
);
const EXTERNAL_IPS: ([&str; 3], [&str; 1]) =
    (["198.19.0.1", "198.19.0.2", "2001:db8:9::1"], ["300.1.1.1"]);
const ENDPOINTS: ([&str; 5], [&str; 3]) = (
    [
        "10.0.0.1",
        "10.0.0.2",
        "10.0.0.3",
        "2001:db8:2::1",
        "2001:db8:2::2",
    ],
    ["10.0.0.256", "", "db.example"],
);
const PORT_NAMES: ([&str; 3], [&str; 1]) = (["", "http", "dns"], ["metrics"]);
const PROTOCOLS: ([&str; 2], [&str; 2]) = (["TCP", "UDP"], ["SCTP", "ICMP"]);
const PORTS: ([i32; 2], [i32; 3]) = ([80, 53], [0, -1, 70_000]);
const SLICE_PORTS: ([Option<i32>; 2], [Option<i32>; 2]) = ([Some(8080), Some(53)], [Some(0), None]);
const NODE_PORTS: ([Option<i32>; 3], [Option<i32>; 1]) =
    ([None, Some(30080), Some(30081)], [Some(99_999)]);
const TYPES: ([Option<&str>; 4], [Option<&str>; 2]) = (
    [
        None,
        Some("ClusterIP"),
        Some("NodePort"),
        Some("LoadBalancer"),
    ],
    [Some("ExternalName"), Some("Weird")],
);
/// No affinity (`None`), or ClientIP with the default timeout (`Some(None)`) or a given
/// one.
type Affinity = Option<Option<i32>>;
/// Affinities; 0 and 100,000 s are out of range.
const AFFINITIES: ([Affinity; 3], [Affinity; 2]) = (
    [None, Some(None), Some(Some(60))],
    [Some(Some(0)), Some(Some(100_000))],
);
const PROXIES: ([Option<&str>; 2], [Option<&str>; 1]) = ([None, Some("kubypass")], [Some("other")]);
const FAMILIES: ([&str; 3], [&str; 1]) = (["IPv4", "IPv4", "IPv6"], ["FQDN"]);
const SOURCE_RANGES: ([&str; 2], [&str; 1]) = (["198.18.0.0/15", "2001:db8::/32"], ["bogus/99"]);
const NODES: ([Option<&str>; 2], [Option<&str>; 1]) = ([None, Some("node-a")], [Some("node-b")]);
const TRISTATE: ([Option<bool>; 2], [Option<bool>; 1]) = ([None, Some(true)], [Some(false)]);
/// Node hints: none, this node ("node-a"), another.
const NODE_HINTS: ([&[&str]; 3], [&[&str]; 1]) = ([&[], &[], &["node-a"]], [&["node-b"]]);
/// Zone hints: none, this node's zone ("zone-a"), another, both; one unnamed zone.
const ZONES: ([&[&str]; 4], [&[&str]; 1]) = (
    [&[], &["zone-a"], &["zone-b"], &["zone-a", "zone-b"]],
    [&[""]],
);

/// A usual value nine times in ten, else an odd one.
fn pick<T: Clone + fmt::Debug + 'static, const U: usize, const O: usize>(
    (usual, odd): ([T; U], [T; O]),
) -> impl Strategy<Value = T> {
    prop_oneof![9 => select(usual.to_vec()), 1 => select(odd.to_vec())]
}

fn settings() -> ProxySettings {
    ProxySettings {
        node_addresses: vec![
            "198.18.1.1".parse().unwrap(),
            "2001:db8:1::1".parse().unwrap(),
        ],
        node_name: Some("node-a".into()),
        zone: Some("zone-a".into()),
        proxy_name: Some("kubypass".into()),
        ..Default::default()
    }
}

fn meta(ns: &str, name: &str, labels: Vec<(&str, &str)>) -> ObjectMeta {
    ObjectMeta {
        namespace: Some(ns.into()),
        name: Some(name.into()),
        labels: (!labels.is_empty()).then(|| {
            labels
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        }),
        ..Default::default()
    }
}

fn strings(v: Vec<&str>) -> Option<Vec<String>> {
    (!v.is_empty()).then(|| v.into_iter().map(String::from).collect())
}

/// The ports most Services and slices use, so that they meet: (name, protocol, Service
/// port, slice port).
const USUAL_PORTS: [(&str, &str, i32, i32); 3] = [
    ("http", "TCP", 80, 8080),
    ("", "TCP", 80, 8080),
    ("dns", "UDP", 53, 53),
];

fn service_port() -> impl Strategy<Value = ServicePort> {
    let any_port = (
        pick(PORT_NAMES),
        pick(PROTOCOLS),
        pick(PORTS),
        0..4u8,
        pick(NODE_PORTS),
    );
    let usual = (select(&USUAL_PORTS[..]), 0..3u8, pick(NODE_PORTS)).prop_map(
        |((name, protocol, port, _), target, node_port)| (name, protocol, port, target, node_port),
    );
    prop_oneof![3 => usual, 1 => any_port].prop_map(|(name, protocol, port, target, node_port)| {
        ServicePort {
            name: (!name.is_empty()).then(|| name.into()),
            protocol: Some(protocol.into()),
            port,
            target_port: match target {
                0 => None,
                1 => Some(IntOrString::Int(8080)),
                2 => Some(IntOrString::String(name.into())),
                _ => Some(IntOrString::Int(0)),
            },
            node_port,
            ..Default::default()
        }
    })
}

/// A Service `ns/name` of any type, valid or not.
fn service(ns: &'static str, name: &'static str) -> impl Strategy<Value = Service> {
    let addresses = (
        proptest::collection::vec(pick(CLUSTER_IPS), 1..3),
        proptest::collection::vec(pick(EXTERNAL_IPS), 0..3),
        proptest::collection::vec(
            (
                pick(EXTERNAL_IPS),
                select(&[None, Some("VIP"), Some("Proxy")][..]),
            ),
            0..3,
        ),
        proptest::collection::vec(pick(SOURCE_RANGES), 0..2),
    );
    let policies = (
        pick(TYPES),
        pick(AFFINITIES),
        proptest::bool::weighted(0.2),
        proptest::bool::weighted(0.2),
        pick(PROXIES),
    );
    (
        addresses,
        proptest::collection::vec(service_port(), 1..3),
        policies,
    )
        .prop_map(
            move |(
                (cluster_ips, external_ips, ingress, ranges),
                ports,
                (type_, affinity, internal_local, external_local, proxy),
            )| {
                let labels = proxy
                    .map(|p| vec![(LABEL_SERVICE_PROXY_NAME, p)])
                    .unwrap_or_default();
                let local = |yes: bool| Some(if yes { "Local" } else { "Cluster" }.to_string());
                Service {
                    metadata: meta(ns, name, labels),
                    spec: Some(K8sServiceSpec {
                        type_: type_.map(String::from),
                        cluster_ip: cluster_ips.first().map(|s| s.to_string()),
                        cluster_ips: strings(cluster_ips),
                        external_ips: strings(external_ips),
                        ports: (!ports.is_empty()).then_some(ports),
                        session_affinity: affinity.map(|_| "ClientIP".to_string()),
                        session_affinity_config: affinity.flatten().map(|t| {
                            SessionAffinityConfig {
                                client_ip: Some(ClientIPConfig {
                                    timeout_seconds: Some(t),
                                }),
                            }
                        }),
                        internal_traffic_policy: local(internal_local),
                        external_traffic_policy: local(external_local),
                        load_balancer_source_ranges: strings(ranges),
                        ..Default::default()
                    }),
                    status: Some(K8sServiceStatus {
                        load_balancer: Some(LoadBalancerStatus {
                            ingress: Some(
                                ingress
                                    .into_iter()
                                    .map(|(ip, mode)| LoadBalancerIngress {
                                        ip: Some(ip.into()),
                                        ip_mode: mode.map(String::from),
                                        ..Default::default()
                                    })
                                    .collect(),
                            ),
                        }),
                        ..Default::default()
                    }),
                }
            },
        )
}

/// An EndpointSlice `ns/name` of Service `ns/svc`, valid or not.
fn slice(
    ns: &'static str,
    svc: &'static str,
    name: String,
) -> impl Strategy<Value = EndpointSlice> {
    let port = |(name, protocol, port): (&str, &str, Option<i32>)| EndpointPort {
        name: (!name.is_empty()).then(|| name.into()),
        protocol: Some(protocol.into()),
        port,
        ..Default::default()
    };
    let any_ports = proptest::collection::vec(
        (pick(PORT_NAMES), pick(PROTOCOLS), pick(SLICE_PORTS)).prop_map(port),
        1..3,
    );
    let usual_ports = Just(
        USUAL_PORTS
            .iter()
            .map(|&(name, protocol, _, p)| port((name, protocol, Some(p))))
            .collect::<Vec<_>>(),
    );
    let endpoint = (
        proptest::collection::vec(pick(ENDPOINTS), 1..3),
        (pick(TRISTATE), pick(TRISTATE), pick(TRISTATE)),
        pick(NODES),
        (pick(NODE_HINTS), pick(ZONES)),
    )
        .prop_map(
            |(addresses, (ready, serving, terminating), node, (nodes, zones))| Endpoint {
                addresses: addresses.into_iter().map(String::from).collect(),
                conditions: Some(EndpointConditions {
                    ready,
                    serving,
                    terminating,
                }),
                node_name: node.map(String::from),
                hints: hints(nodes, zones),
                ..Default::default()
            },
        );
    (
        pick(FAMILIES),
        prop_oneof![3 => usual_ports, 1 => any_ports],
        proptest::collection::vec(endpoint, 1..5),
        proptest::bool::weighted(0.1),
    )
        .prop_map(move |(family, ports, endpoints, headless)| {
            let mut labels = vec![(LABEL_SERVICE_NAME, svc)];
            if headless {
                labels.push((LABEL_HEADLESS, ""));
            }
            EndpointSlice {
                metadata: meta(ns, &name, labels),
                address_type: family.into(),
                ports: Some(ports),
                endpoints,
            }
        })
}

/// One change to the objects: a Service or slice (by key) put, edited or removed.
#[derive(Clone, Debug)]
enum Change {
    PutService((usize, usize), Box<Service>),
    /// One field of the Service with this key changed, if there is one.
    EditService((usize, usize), ServiceEdit),
    RemoveService((usize, usize)),
    PutSlice((usize, usize, usize), Box<EndpointSlice>),
    /// One endpoint of the slice with this key changed, if there is one.
    EditSlice((usize, usize, usize), usize, EndpointEdit),
    RemoveSlice((usize, usize, usize)),
}

/// The small edits a live cluster makes to a Service.
#[derive(Clone, Debug)]
enum ServiceEdit {
    Type(Option<&'static str>),
    ClusterIp(&'static str),
    ExternalIps(Vec<&'static str>),
    /// The node port of the first port.
    NodePort(Option<i32>),
    /// The name of the first port.
    PortName(&'static str),
    Affinity(Affinity),
    ExternalLocal(bool),
}

/// The small edits endpoint controllers make to an endpoint.
#[derive(Clone, Debug)]
enum EndpointEdit {
    Ready(Option<bool>),
    Terminating(Option<bool>),
    Address(&'static str),
    Node(Option<&'static str>),
    /// Node and zone hints.
    Hints(&'static [&'static str], &'static [&'static str]),
}

fn service_edit() -> impl Strategy<Value = ServiceEdit> {
    prop_oneof![
        pick(TYPES).prop_map(ServiceEdit::Type),
        pick(CLUSTER_IPS).prop_map(ServiceEdit::ClusterIp),
        proptest::collection::vec(pick(EXTERNAL_IPS), 0..3).prop_map(ServiceEdit::ExternalIps),
        pick(NODE_PORTS).prop_map(ServiceEdit::NodePort),
        pick(PORT_NAMES).prop_map(ServiceEdit::PortName),
        pick(AFFINITIES).prop_map(ServiceEdit::Affinity),
        any::<bool>().prop_map(ServiceEdit::ExternalLocal),
    ]
}

fn endpoint_edit() -> impl Strategy<Value = EndpointEdit> {
    prop_oneof![
        pick(TRISTATE).prop_map(EndpointEdit::Ready),
        pick(TRISTATE).prop_map(EndpointEdit::Terminating),
        pick(ENDPOINTS).prop_map(EndpointEdit::Address),
        pick(NODES).prop_map(EndpointEdit::Node),
        (pick(NODE_HINTS), pick(ZONES)).prop_map(|(n, z)| EndpointEdit::Hints(n, z)),
    ]
}

fn change() -> impl Strategy<Value = Change> {
    let svc_key = (0..NAMESPACES.len(), 0..NAMES.len());
    let slice_key = (0..NAMESPACES.len(), 0..NAMES.len(), 0..2usize);
    prop_oneof![
        3 => svc_key.clone().prop_flat_map(|(n, s)| {
            service(NAMESPACES[n], NAMES[s]).prop_map(move |svc| Change::PutService((n, s), Box::new(svc)))
        }),
        3 => (svc_key.clone(), service_edit()).prop_map(|(k, e)| Change::EditService(k, e)),
        1 => svc_key.prop_map(Change::RemoveService),
        6 => slice_key.clone().prop_flat_map(|(n, s, i)| {
            slice(NAMESPACES[n], NAMES[s], format!("{}-{i}", NAMES[s]))
                .prop_map(move |e| Change::PutSlice((n, s, i), Box::new(e)))
        }),
        4 => (slice_key.clone(), 0..4usize, endpoint_edit())
            .prop_map(|(k, i, e)| Change::EditSlice(k, i, e)),
        1 => slice_key.prop_map(Change::RemoveSlice),
    ]
}

fn edit_service(spec: &mut K8sServiceSpec, edit: ServiceEdit) {
    let first_port = spec.ports.as_mut().and_then(|p| p.first_mut());
    match edit {
        ServiceEdit::Type(t) => spec.type_ = t.map(String::from),
        ServiceEdit::ClusterIp(ip) => {
            spec.cluster_ip = Some(ip.into());
            spec.cluster_ips = Some(vec![ip.into()]);
        }
        ServiceEdit::ExternalIps(ips) => spec.external_ips = strings(ips),
        ServiceEdit::NodePort(np) => {
            if let Some(p) = first_port {
                p.node_port = np;
            }
        }
        ServiceEdit::PortName(name) => {
            if let Some(p) = first_port {
                p.name = (!name.is_empty()).then(|| name.into());
            }
        }
        ServiceEdit::Affinity(a) => {
            spec.session_affinity = a.map(|_| "ClientIP".to_string());
            spec.session_affinity_config = a.flatten().map(|t| SessionAffinityConfig {
                client_ip: Some(ClientIPConfig {
                    timeout_seconds: Some(t),
                }),
            });
        }
        ServiceEdit::ExternalLocal(local) => {
            spec.external_traffic_policy =
                Some(if local { "Local" } else { "Cluster" }.to_string());
        }
    }
}

fn edit_endpoint(ep: &mut Endpoint, edit: EndpointEdit) {
    let conditions = ep.conditions.get_or_insert_with(Default::default);
    match edit {
        EndpointEdit::Ready(r) => conditions.ready = r,
        EndpointEdit::Terminating(t) => conditions.terminating = t,
        EndpointEdit::Address(a) => ep.addresses = vec![a.into()],
        EndpointEdit::Node(n) => ep.node_name = n.map(String::from),
        EndpointEdit::Hints(n, z) => ep.hints = hints(n, z),
    }
}

/// The objects as a reflector store holds them: one per key, each its own allocation
/// until replaced.
#[derive(Default)]
struct World {
    services: BTreeMap<(usize, usize), Arc<Service>>,
    slices: BTreeMap<(usize, usize, usize), Arc<EndpointSlice>>,
}

impl World {
    fn apply(&mut self, c: Change) {
        match c {
            Change::PutService(k, s) => {
                self.services.insert(k, Arc::new(*s));
            }
            Change::EditService(k, edit) => {
                if let Some(old) = self.services.get_mut(&k) {
                    let mut s = (**old).clone();
                    if let Some(spec) = s.spec.as_mut() {
                        edit_service(spec, edit);
                    }
                    *old = Arc::new(s);
                }
            }
            Change::RemoveService(k) => {
                self.services.remove(&k);
            }
            Change::PutSlice(k, e) => {
                self.slices.insert(k, Arc::new(*e));
            }
            Change::EditSlice(k, i, edit) => {
                if let Some(old) = self.slices.get_mut(&k) {
                    let mut e = (**old).clone();
                    if let Some(ep) = e.endpoints.get_mut(i) {
                        edit_endpoint(ep, edit);
                    }
                    *old = Arc::new(e);
                }
            }
            Change::RemoveSlice(k) => {
                self.slices.remove(&k);
            }
        }
    }

    /// The objects as lists, in key order or reversed.
    fn lists(&self, reversed: bool) -> (Vec<Arc<Service>>, Vec<Arc<EndpointSlice>>) {
        let mut services: Vec<_> = self.services.values().cloned().collect();
        let mut slices: Vec<_> = self.slices.values().cloned().collect();
        if reversed {
            services.reverse();
            slices.reverse();
        }
        (services, slices)
    }
}

/// Every address a Service that may be ours names as a frontend (cluster IPs, external
/// IPs, load balancer ingress) and the node addresses: nothing else may be captured.
fn nameable(services: &[Arc<Service>], settings: &ProxySettings) -> FastSet<IpAddr> {
    let mut out: FastSet<IpAddr> = settings.node_addresses.iter().copied().collect();
    for s in services {
        let Some(spec) = &s.spec else { continue };
        let labels = s.metadata.labels.as_ref();
        let proxy = labels.and_then(|l| l.get(LABEL_SERVICE_PROXY_NAME));
        if proxy.is_some_and(|p| Some(p) != settings.proxy_name.as_ref()) {
            continue;
        }
        let ingress = s
            .status
            .iter()
            .flat_map(|st| st.load_balancer.iter())
            .flat_map(|lb| lb.ingress.iter().flatten())
            .filter_map(|i| i.ip.as_deref());
        let named = spec
            .cluster_ips
            .iter()
            .flatten()
            .chain(spec.external_ips.iter().flatten())
            .map(String::as_str)
            .chain(ingress);
        out.extend(named.filter_map(|a| a.parse::<IpAddr>().ok()));
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// The incremental translator agrees with translating from scratch (status,
    /// warnings, every pool's spec, every frontend and the pool it leads to, the
    /// generation) after each change of a random sequence, whichever table it builds on;
    /// and it captures only addresses the objects name.
    #[test]
    fn the_translator_agrees_with_translating_from_scratch(
        start in proptest::collection::vec(change(), 0..40),
        // (changes this step, lists reversed?, build on: 0 the last table, 1 none,
        // 2 the one before)
        steps in proptest::collection::vec(
            (proptest::collection::vec(change(), 0..3), any::<bool>(), 0..3u8),
            1..12,
        ),
    ) {
        let settings = settings();
        let mut world = World::default();
        for c in start {
            world.apply(c);
        }
        let mut tr = Translator::new(settings.clone());
        let (services, slices) = world.lists(false);
        let first = step(&mut tr, &services, &slices, None);
        let mut tables = vec![first.table];
        for (changes, reversed, base) in steps {
            for c in changes {
                world.apply(c);
            }
            let (services, slices) = world.lists(reversed);
            let previous = match base {
                0 => tables.last(),
                1 => None,
                _ => tables.iter().rev().nth(1),
            };
            let got = step(&mut tr, &services, &slices, previous);
            let allowed = nameable(&services, &settings);
            for f in got.table.frontends() {
                prop_assert!(allowed.contains(&f.key.addr), "{:?} captured", f.key);
            }
            let served: usize = got
                .status
                .iter()
                .map(|s| match &s.outcome {
                    Outcome::Served(pools) => pools.iter().map(|p| p.frontends.len()).sum(),
                    Outcome::Ignored(_) => 0,
                })
                .sum();
            prop_assert_eq!(served, got.table.frontends().count());
            tables.push(got.table);
        }
    }

    /// A Service that cannot be served (no usable cluster IP, or no usable port) sorted
    /// before every other, on an address others use, takes nothing from them: the table
    /// is the same with it as without it, and a warning names it.
    #[test]
    fn an_unusable_service_changes_nothing_for_the_others(
        changes in proptest::collection::vec(change(), 0..16),
        bad_ip in select(&["not-an-ip", "198.18.0.10", "2001:db8::10", "198.18.0.300"][..]),
        bad_ports in proptest::collection::vec(
            (pick(PROTOCOLS), pick(PORTS)), 1..3),
    ) {
        let settings = settings();
        let mut world = World::default();
        for c in changes {
            world.apply(c);
        }
        let (services, slices) = world.lists(false);
        let mut ports: Vec<ServicePort> = bad_ports
            .into_iter()
            .map(|(protocol, port)| ServicePort {
                protocol: Some(protocol.into()),
                port,
                ..Default::default()
            })
            .collect();
        // A usable cluster IP gets only unusable ports; an unusable one any port.
        let usable_ip = bad_ip.parse::<IpAddr>().is_ok();
        if usable_ip {
            for p in &mut ports {
                if (1..=65_535).contains(&p.port) && p.protocol.as_deref() != Some("ICMP") {
                    p.port = 0;
                }
            }
        }
        let bad = Arc::new(Service {
            metadata: meta("default", "0-bad", vec![]),
            spec: Some(K8sServiceSpec {
                type_: Some("NodePort".into()),
                cluster_ips: Some(vec![bad_ip.into()]),
                ports: Some(ports),
                ..Default::default()
            }),
            ..Default::default()
        });
        let mut with_bad = services.clone();
        with_bad.push(bad);
        let without = contents(&translate(&services, &slices, &settings, None));
        let with = contents(&translate(&with_bad, &slices, &settings, None));
        prop_assert_eq!(&with.2, &without.2, "pools");
        prop_assert_eq!(&with.3, &without.3, "frontends");
        for w in &without.1 {
            prop_assert!(with.1.contains(w), "lost warning {}", w);
        }
        prop_assert!(
            with.1.iter().any(|w| w.object == "Service default/0-bad"),
            "no warning names the bad Service: {:?}", with.1
        );
    }
}
