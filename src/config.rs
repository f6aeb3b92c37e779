//! The appliance configuration: one YAML file (see deploy/examples/kubypass.yaml),
//! validated before DPDK is touched, and turned into EAL arguments.

use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

/// A configuration problem, worded as "what is wrong: how to fix it".
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}: check the path passed to --config")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid YAML for this schema.
    #[error("invalid config file {path}: {message}: see deploy/examples/kubypass.yaml")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Parser message (with line and column).
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("invalid configuration: {0}")]
    Value(String),
}

/// The whole configuration file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// DPDK EAL settings.
    pub eal: EalConfig,
    /// The ports kubypass owns, in order (port i forwards to port i^1 in the forwarder).
    pub ports: Vec<PortConfig>,
    /// Worker lcores and what they run.
    pub workers: WorkersConfig,
    /// Descriptor ring sizes.
    pub queues: QueueConfig,
    /// The packet-buffer pool.
    pub mempool: MempoolConfig,
    /// Static routes besides the connected prefixes of port addresses.
    pub routes: Vec<RouteConfig>,
    /// Static neighbours (next hops whose MAC is known in advance); others are learned
    /// through ARP and ND.
    pub neighbours: Vec<NeighbourConfig>,
    /// Where Services come from; present, it makes the workers run the Service pipeline.
    pub services: Option<ServicesConfig>,
    /// Per-worker table sizes of the Service pipeline.
    pub dataplane: DataplaneConfig,
    /// The admin HTTP server.
    pub admin: AdminConfig,
}

/// EAL settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EalConfig {
    /// EAL `--lcores` value, e.g. "0-1" or "0@0,1@1,2@1"; the first lcore is the main one
    /// unless `main_lcore` says otherwise.
    pub lcores: String,
    /// EAL `--main-lcore`.
    pub main_lcore: Option<u32>,
    /// Memory to reserve in MiB (`-m`); DPDK's default if absent.
    pub memory_mb: Option<u32>,
    /// Run without hugepages (`--no-huge`): slower, for tests and virtual devices.
    pub no_huge: bool,
    /// Keep no shared files (`--in-memory`); otherwise (and always with `no_huge`, which
    /// DPDK does not combine with it) a per-run `--file-prefix` keeps runs apart.
    pub in_memory: bool,
    /// Keep DPDK's telemetry socket (off: `--no-telemetry`).
    pub telemetry: bool,
    /// Directory of PMD plugins to load (`-d`); the one found at build time if absent.
    pub pmd_dir: Option<PathBuf>,
    /// Further EAL arguments, passed as they are.
    pub extra_args: Vec<String>,
}

impl Default for EalConfig {
    fn default() -> Self {
        EalConfig {
            lcores: "0-1".into(),
            main_lcore: None,
            memory_mb: None,
            no_huge: false,
            in_memory: true,
            telemetry: false,
            pmd_dir: None,
            extra_args: Vec::new(),
        }
    }
}

/// One port.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PortConfig {
    /// A name for logs and counters.
    pub name: String,
    /// A PCI address (`0000:01:00.0`) or a DPDK vdev string (`net_ring0`,
    /// `net_pcap0,rx_pcap=in.pcap,tx_pcap=out.pcap`, `net_af_packet0,iface=veth0`, …).
    pub device: String,
    /// The appliance's own addresses on this port with their on-link prefix
    /// (`198.18.1.1/24`): ARP/ND answers for them and they make connected routes.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Whether frames sent here may leave checksums to the NIC: `auto` (the default)
    /// enables the tx checksum offloads (IPv4 header, TCP, UDP, SCTP) the device offers;
    /// `off` enables none, so every checksum is finished in software.
    #[serde(default)]
    pub checksum_offload: ChecksumOffloadMode,
}

/// A port's tx checksum offload setting.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ChecksumOffloadMode {
    /// Use every tx checksum offload the device offers.
    #[default]
    Auto,
    /// Use none: software finishes every checksum.
    Off,
}

/// The device behind a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Device {
    /// A PCI NIC bound to a DPDK driver; the address normalised to `DDDD:BB:DD.F`.
    Pci(String),
    /// A virtual device: its name (before the first comma) and the full `--vdev` string.
    Vdev {
        /// The ethdev name, e.g. `net_pcap0`.
        name: String,
        /// The `--vdev` argument.
        spec: String,
    },
}

impl Device {
    /// The ethdev name DPDK gives the device.
    pub fn ethdev_name(&self) -> &str {
        match self {
            Device::Pci(a) => a,
            Device::Vdev { name, .. } => name,
        }
    }
}

/// Worker settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WorkersConfig {
    /// The lcores that run workers (each must be in `eal.lcores`, none the main lcore).
    /// Empty: every EAL lcore but the main one.
    pub lcores: Vec<u32>,
    /// What workers do with frames (until the service pipeline is wired in).
    pub processor: ProcessorKind,
    /// Capacity of each worker's steering ring (frames handed over by other workers).
    pub steer_ring_size: usize,
    /// Yield the CPU on every idle turn after this many consecutive turns without a frame
    /// (0, the default: never, busy polling). For workers that share a CPU with each
    /// other or with the host, so a steered frame does not wait for a time slice.
    pub idle_yield_after: u32,
}

impl Default for WorkersConfig {
    fn default() -> Self {
        WorkersConfig {
            lcores: Vec::new(),
            processor: ProcessorKind::Auto,
            steer_ring_size: 1024,
            idle_yield_after: 0,
        }
    }
}

/// Built-in frame processors.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ProcessorKind {
    /// Each frame leaves by the paired port (0↔1, 2↔3, a lone last port to itself).
    Paired,
    /// As `paired`, but a frame is first steered to the worker a hash of its bytes names
    /// (exercises the steering rings).
    SteerByHash,
    /// The Service pipeline (DNAT for Kubernetes Services); needs a `services:` section.
    Service,
    /// `service` when a `services:` section is present, `paired` otherwise.
    Auto,
}

impl ProcessorKind {
    /// What `Auto` means for this configuration.
    pub fn resolve(self, config: &Config) -> ProcessorKind {
        match self {
            ProcessorKind::Auto if config.services.is_some() => ProcessorKind::Service,
            ProcessorKind::Auto => ProcessorKind::Paired,
            other => other,
        }
    }
}

/// Descriptor ring sizes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Rx descriptors per queue.
    pub rx_size: u16,
    /// Tx descriptors per queue.
    pub tx_size: u16,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            rx_size: 1024,
            tx_size: 1024,
        }
    }
}

/// The packet-buffer pool.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MempoolConfig {
    /// Number of mbufs (2^n - 1 is most efficient).
    pub size: u32,
    /// Per-lcore cache (at least 256, at most 512).
    pub cache: u32,
    /// Bytes per mbuf, headroom included.
    pub data_room: u16,
}

impl Default for MempoolConfig {
    fn default() -> Self {
        MempoolConfig {
            size: 16383,
            cache: 256,
            data_room: 2176,
        }
    }
}

/// A static route.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Destination prefix, `198.18.0.0/15` or `2001:db8::/32`.
    pub prefix: String,
    /// Name of the port the route leaves by.
    pub port: String,
    /// The gateway; absent, destinations are on-link.
    #[serde(default)]
    pub via: Option<IpAddr>,
}

/// A static neighbour.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NeighbourConfig {
    pub address: IpAddr,
    /// `02:00:c6:12:01:02`.
    pub mac: String,
}

/// Where Services and EndpointSlices come from, and this appliance as kube-proxy's rules
/// see it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServicesConfig {
    /// Manifest files or directories (YAML, multi-document or `kind: List`), reloaded
    /// when they change. Relative paths are relative to the configuration file.
    pub manifests: Vec<PathBuf>,
    /// Watch the Kubernetes API (instead of manifests).
    pub kubernetes: Option<KubernetesConfig>,
    /// Addresses NodePorts are captured on; empty: every port address.
    pub node_addresses: Vec<IpAddr>,
    /// This node's name (endpoints with this `nodeName` are local for `Local` policies;
    /// endpoints hinted for it are preferred, as kube-proxy prefers them).
    pub node_name: Option<String>,
    /// This node's zone (`topology.kubernetes.io/zone`): endpoints the EndpointSlice
    /// controller hints for it are preferred, as kube-proxy prefers them.
    pub zone: Option<String>,
    /// Our `service.kubernetes.io/service-proxy-name`; Services naming another proxy are
    /// left alone.
    pub proxy_name: Option<String>,
    /// How new flows pick a backend.
    pub scheduler: SchedulerKind,
    /// Seed of flow and backend hashes: appliances behind one ECMP group must share it.
    pub seed: u64,
    /// Coalesce bursts of changes for this long before building a table.
    pub debounce_ms: u64,
    /// How often manifest files are checked for changes.
    pub poll_interval_ms: u64,
    /// Threads that fill Maglev tables when a table is built, the control thread
    /// included; absent: the CPUs the appliance may use minus the workers' (1 to 4).
    pub build_threads: Option<usize>,
}

impl Default for ServicesConfig {
    fn default() -> Self {
        ServicesConfig {
            manifests: Vec::new(),
            kubernetes: None,
            node_addresses: Vec::new(),
            node_name: None,
            zone: None,
            proxy_name: None,
            scheduler: SchedulerKind::Maglev,
            seed: 0,
            debounce_ms: 10,
            poll_interval_ms: 200,
            build_threads: None,
        }
    }
}

/// The Kubernetes API source.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct KubernetesConfig {
    /// A kubeconfig file; absent: `KUBECONFIG`, `~/.kube/config`, then in-cluster.
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context; absent: its current context.
    pub context: Option<String>,
}

/// Backend selection for new flows.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SchedulerKind {
    /// Maglev consistent hashing: every worker and appliance agrees.
    Maglev,
    /// kube-proxy userspace mode's choice.
    RoundRobin,
    /// kube-proxy iptables mode's choice.
    Random,
}

/// Per-worker table sizes, fixed at start.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DataplaneConfig {
    /// Tracked flows per worker.
    pub conntrack_capacity: usize,
    /// ClientIP affinity entries per worker.
    pub affinity_capacity: usize,
    /// Fragmented datagrams followed per worker.
    pub fragment_capacity: usize,
    /// Take frames whatever their destination MAC.
    pub promiscuous: bool,
}

impl Default for DataplaneConfig {
    fn default() -> Self {
        DataplaneConfig {
            conntrack_capacity: 1 << 16,
            affinity_capacity: 1 << 14,
            fragment_capacity: 1024,
            promiscuous: false,
        }
    }
}

/// The admin HTTP server.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Where `/healthz`, `/metrics` and `/status` are served (localhost by default);
    /// `null` turns the server off.
    pub listen: Option<SocketAddr>,
    /// `/healthz` answers 503 once the source has been out of sync this long.
    pub max_out_of_sync_secs: u64,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 10256))),
            max_out_of_sync_secs: 60,
        }
    }
}

impl Config {
    /// Reads and parses `path` (no validation; see [`Config::validate`]).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Unreadable {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text).map_err(|message| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        })
    }

    /// Parses YAML text.
    pub fn parse(text: &str) -> Result<Config, String> {
        serde_yaml_ng::from_str(text).map_err(|e| e.to_string())
    }

    /// Checks values that need no DPDK, and resolves each port's device.
    pub fn validate(&self) -> Result<Vec<Device>, ConfigError> {
        let v = |m: String| Err(ConfigError::Value(m));
        if self.ports.is_empty() {
            return v("no ports: add at least one entry under `ports:`".into());
        }
        if self.mempool.cache < 256 || self.mempool.cache > 512 {
            return v(format!(
                "mempool.cache is {}: use 256..=512 (DPDK's per-lcore cache limit is 512)",
                self.mempool.cache
            ));
        }
        if self.mempool.size < 1024 {
            return v(format!(
                "mempool.size is {}: use at least 1024 mbufs",
                self.mempool.size
            ));
        }
        if self.mempool.data_room < 256 + 128 {
            return v(format!(
                "mempool.data_room is {}: use at least 384 (2176 is DPDK's default)",
                self.mempool.data_room
            ));
        }
        for (what, n) in [
            ("queues.rx_size", self.queues.rx_size),
            ("queues.tx_size", self.queues.tx_size),
        ] {
            if n < 64 || !n.is_power_of_two() {
                return v(format!("{what} is {n}: use a power of two >= 64"));
            }
        }
        if self.workers.steer_ring_size < 64 {
            return v(format!(
                "workers.steer_ring_size is {}: use at least 64",
                self.workers.steer_ring_size
            ));
        }
        if self.eal.lcores.trim().is_empty() {
            return v(
                "eal.lcores is empty: list the main lcore and worker lcores, e.g. \"0-1\"".into(),
            );
        }
        let mut names = std::collections::HashSet::new();
        let mut devices = Vec::with_capacity(self.ports.len());
        for p in &self.ports {
            if !names.insert(p.name.as_str()) {
                return v(format!(
                    "port name {:?} is used twice: give each port its own name",
                    p.name
                ));
            }
            let d = parse_device(&p.device)
                .map_err(|m| ConfigError::Value(format!("port {:?}: {m}", p.name)))?;
            if devices
                .iter()
                .any(|e: &Device| e.ethdev_name() == d.ethdev_name())
            {
                return v(format!(
                    "port {:?}: device {} is used twice: each port needs its own device",
                    p.name,
                    d.ethdev_name()
                ));
            }
            devices.push(d);
        }
        Ok(devices)
    }

    /// The EAL argument list for this configuration (program name excluded).
    /// `run_tag` makes the file prefix unique when `in_memory` is off.
    pub fn eal_args(
        &self,
        devices: &[Device],
        pmd_dir: Option<&Path>,
        run_tag: &str,
    ) -> Vec<String> {
        let e = &self.eal;
        let mut args = vec!["--lcores".to_owned(), e.lcores.clone()];
        if let Some(m) = e.main_lcore {
            args.extend(["--main-lcore".to_owned(), m.to_string()]);
        }
        if let Some(mb) = e.memory_mb {
            args.extend(["-m".to_owned(), mb.to_string()]);
        }
        if e.no_huge {
            args.push("--no-huge".into());
        }
        // --no-huge implies legacy memory, which DPDK refuses together with --in-memory.
        if e.in_memory && !e.no_huge {
            args.push("--in-memory".into());
        } else {
            args.extend(["--file-prefix".to_owned(), format!("kubypass-{run_tag}")]);
        }
        if !e.telemetry {
            args.push("--no-telemetry".into());
        }
        if let Some(dir) = pmd_dir {
            args.extend(["-d".to_owned(), dir.display().to_string()]);
        }
        let any_pci = devices.iter().any(|d| matches!(d, Device::Pci(_)));
        for d in devices {
            match d {
                Device::Pci(addr) => args.extend(["-a".to_owned(), addr.clone()]),
                Device::Vdev { spec, .. } => args.extend(["--vdev".to_owned(), spec.clone()]),
            }
        }
        if !any_pci {
            // Only virtual devices: keep the PCI bus from probing (and grabbing) NICs.
            args.push("--no-pci".into());
        }
        args.extend(e.extra_args.iter().cloned());
        args
    }
}

/// Virtual-device drivers kubypass knows (the PMD name prefix of a vdev string).
pub const KNOWN_VDEV_DRIVERS: &[&str] = &[
    "net_af_packet",
    "net_tap",
    "net_memif",
    "net_pcap",
    "net_ring",
    "net_null",
    "net_af_xdp",
    "net_virtio_user",
];

/// Classifies a port's `device` string.
pub fn parse_device(s: &str) -> Result<Device, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err(
            "device is empty: give a PCI address (0000:01:00.0) or a vdev (net_ring0)".into(),
        );
    }
    if s.starts_with("net_") {
        let name = s.split(',').next().unwrap_or(s).to_owned();
        if name.len() > 63 {
            return Err(format!("vdev name {name:?} is longer than 63 characters"));
        }
        return Ok(Device::Vdev {
            name,
            spec: s.to_owned(),
        });
    }
    if s.contains(':') {
        return parse_pci(s).map(Device::Pci);
    }
    Err(format!(
        "device {s:?} is neither a PCI address (0000:01:00.0) nor a DPDK vdev (net_ring0, net_pcap0,rx_pcap=..., net_af_packet0,iface=...)"
    ))
}

/// Normalises a PCI address (`DDDD:BB:DD.F` or `BB:DD.F`) to `DDDD:BB:DD.F`.
pub fn parse_pci(s: &str) -> Result<String, String> {
    let bad = || {
        format!(
            "bad PCI address {s:?}: write it as DDDD:BB:DD.F, e.g. 0000:01:00.0 (see `dpdk-devbind.py --status`)"
        )
    };
    let parts: Vec<&str> = s.split(':').collect();
    let (domain, bus, devfn) = match parts.as_slice() {
        [d, b, df] => (*d, *b, *df),
        [b, df] => ("0000", *b, *df),
        _ => return Err(bad()),
    };
    let (dev, func) = devfn.split_once('.').ok_or_else(bad)?;
    let hex = |t: &str, max_len: usize| {
        !t.is_empty() && t.len() <= max_len && t.chars().all(|c| c.is_ascii_hexdigit())
    };
    if !(hex(domain, 4) && hex(bus, 2) && hex(dev, 2) && hex(func, 1)) {
        return Err(bad());
    }
    let d = u32::from_str_radix(domain, 16).map_err(|_| bad())?;
    let b = u32::from_str_radix(bus, 16).map_err(|_| bad())?;
    let dv = u32::from_str_radix(dev, 16).map_err(|_| bad())?;
    let f = u32::from_str_radix(func, 16).map_err(|_| bad())?;
    if dv > 0x1f || f > 7 {
        return Err(bad());
    }
    Ok(format!("{d:04x}:{b:02x}:{dv:02x}.{f:x}"))
}

/// Free 2 MiB/1 GiB hugepages according to a `/proc/meminfo`-format text and whether
/// hugetlbfs is mounted (per a `/proc/mounts`-format text).
pub fn hugepages_free(meminfo: &str, mounts: &str) -> (u64, bool) {
    let free = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("HugePages_Free:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mounted = mounts
        .lines()
        .any(|l| l.split_whitespace().nth(2) == Some("hugetlbfs"));
    (free, mounted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses_and_validates() {
        let text = include_str!("../deploy/examples/kubypass.yaml");
        let c = Config::parse(text).expect("example parses");
        let devices = c.validate().expect("example validates");
        assert_eq!(devices.len(), c.ports.len());
    }

    #[test]
    fn defaults_fill_missing_sections() {
        let c = Config::parse("ports: [{name: a, device: net_ring0}]").unwrap();
        assert_eq!(c.mempool.cache, 256);
        assert_eq!(c.queues.rx_size, 1024);
        assert!(c.eal.in_memory);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn unknown_field_is_rejected() {
        let e = Config::parse("ports: []\nbogus: 1").unwrap_err();
        assert!(e.contains("bogus"), "{e}");
    }

    #[test]
    fn small_cache_is_rejected() {
        let mut c = Config::parse("ports: [{name: a, device: net_ring0}]").unwrap();
        c.mempool.cache = 32;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("mempool.cache"), "{e}");
    }

    #[test]
    fn checksum_offload_defaults_to_auto_and_parses_off() {
        let c = Config::parse(
            "ports: [{name: a, device: net_ring0}, {name: b, device: net_ring1, checksum_offload: off}, {name: c, device: net_ring2, checksum_offload: auto}]",
        )
        .unwrap();
        let modes: Vec<_> = c.ports.iter().map(|p| p.checksum_offload).collect();
        assert_eq!(
            modes,
            [
                ChecksumOffloadMode::Auto,
                ChecksumOffloadMode::Off,
                ChecksumOffloadMode::Auto
            ]
        );
        assert!(c.validate().is_ok());
    }

    #[test]
    fn bad_checksum_offload_value_is_a_clear_error() {
        let e = Config::parse("ports: [{name: a, device: net_ring0, checksum_offload: on}]")
            .unwrap_err();
        assert!(e.contains("checksum_offload"), "{e}");
        assert!(e.contains("`auto`") && e.contains("`off`"), "{e}");
    }

    #[test]
    fn devices_are_classified() {
        assert_eq!(
            parse_device("net_pcap0,rx_pcap=a.pcap").unwrap(),
            Device::Vdev {
                name: "net_pcap0".into(),
                spec: "net_pcap0,rx_pcap=a.pcap".into()
            }
        );
        assert_eq!(
            parse_device("01:00.1").unwrap(),
            Device::Pci("0000:01:00.1".into())
        );
        assert_eq!(
            parse_device("0000:AF:1f.7").unwrap(),
            Device::Pci("0000:af:1f.7".into())
        );
        for bad in [
            "0000:01:00",
            "0000:01:20.0",
            "01:00.8",
            "zz:00.0",
            "eth0",
            "",
        ] {
            assert!(parse_device(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn duplicate_devices_are_rejected() {
        let c = Config::parse(
            "ports: [{name: a, device: net_ring0}, {name: b, device: 'net_ring0,x=1'}]",
        )
        .unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("twice"));
    }

    #[test]
    fn eal_args_carry_devices_and_flags() {
        let c = Config::parse(
            "eal: {lcores: '0-2', no_huge: true, memory_mb: 256}\nports: [{name: a, device: net_null0}, {name: b, device: '0000:01:00.0'}]",
        )
        .unwrap();
        let d = c.validate().unwrap();
        let a = c.eal_args(&d, Some(Path::new("/pmds")), "t");
        let joined = a.join(" ");
        assert!(joined.contains("--lcores 0-2"));
        assert!(joined.contains("--no-huge"));
        assert!(joined.contains("-m 256"));
        assert!(!joined.contains("--in-memory"));
        assert!(joined.contains("--file-prefix kubypass-t"));
        assert!(joined.contains("--no-telemetry"));
        assert!(joined.contains("-d /pmds"));
        assert!(joined.contains("--vdev net_null0"));
        assert!(joined.contains("-a 0000:01:00.0"));
        assert!(!joined.contains("--no-pci"));
    }

    #[test]
    fn hugepage_check_reads_meminfo_and_mounts() {
        let mi = "MemTotal: 1 kB\nHugePages_Total:     512\nHugePages_Free:      500\n";
        let mounts = "none /dev/hugepages hugetlbfs rw 0 0\n";
        assert_eq!(hugepages_free(mi, mounts), (500, true));
        assert_eq!(
            hugepages_free("HugePages_Free: 0\n", "proc /proc proc rw 0 0"),
            (0, false)
        );
    }
}
