//! Pod networking for the test kubelet, as the bridge CNI plugin does it: each Node gets a
//! Linux bridge in the host's network namespace holding the first address of the Node's pod
//! CIDR, and each Pod a network namespace joined to its Node's bridge by a veth pair, with the
//! lowest free address of that CIDR (so a new pod may get a gone pod's address, as in a real
//! cluster). Test traffic to a pod goes to an address inside a namespace the tests made.
//!
//! Addresses come from 198.18.0.0/15, which RFC 2544 sets aside for testing (the API server
//! refuses loopback endpoints). The range is cut into 32 slots of 16 /24s; a test process
//! claims a free slot with a lock file naming its pid, so test binaries run side by side.
//! However the test process ends (a panic, a static never dropped, `kill -9`), a janitor
//! process it started removes what the slot holds once its pipe from the test process closes,
//! then frees the slot; a slot whose owner and janitor are both gone is swept and reused.
//! Names carry the slot: `exds<slot>b<node>` bridges, `exds<slot>p<pod>` namespaces and
//! `exds<slot>v<pod>` veths.
//!
//! Every pod adds neighbour entries (the host's for the pod, the pod's for its gateway), and
//! the kernel's neighbour table is shared by every namespace: its default limits (512 soft,
//! 1,024 hard) leave pods past about 500 unreachable. Claiming a slot raises them when lower
//! (never lowers them).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, Result, bail};

const SLOTS: u16 = 32;
const NODES_PER_SLOT: u16 = 16;
const LOCKS: &str = "/run/edgexds-tests/net";

/// Waits for its stdin to close, then removes slot `$1`'s namespaces (killing what runs in
/// them) and bridges, and the lock file `$2`.
const JANITOR: &str = r#"
read -r _ || true
for ns in $(ip netns list | awk '{print $1}' | grep "^exds${1}p"); do
  for pid in $(ip netns pids "$ns"); do kill -KILL "$pid" 2>/dev/null; done
  ip netns del "$ns"
done
for bridge in $(ip -o link show type bridge | awk -F': ' '{print $2}' | grep "^exds${1}b"); do
  ip link del "$bridge"
done
rm -f "$2"
"#;

/// One test process's share of the pod address range, and everything it made there.
pub struct Network {
    slot: u16,
    /// Holds the janitor's pipe open while this process lives.
    janitor: Option<std::process::Child>,
    next_pod: AtomicU32,
    /// Per node: the addresses in use.
    used: Mutex<Vec<BTreeSet<u8>>>,
}

/// A Node's bridge and pod CIDR.
#[derive(Clone, Debug)]
pub struct NodeNet {
    pub index: u16,
    pub bridge: String,
    /// The bridge's address: the first of the CIDR, the pods' gateway and the Node's address.
    pub gateway: Ipv4Addr,
    pub cidr: String,
}

/// A Pod's network namespace and address.
#[derive(Clone, Debug)]
pub struct PodNet {
    pub netns: String,
    pub ip: Ipv4Addr,
    node: u16,
}

impl Network {
    /// Claims a free slot, sweeping one whose owner and janitor are gone.
    pub fn claim() -> Result<Self> {
        std::fs::create_dir_all(LOCKS).with_context(|| format!("creating {LOCKS}"))?;
        for slot in 0..SLOTS {
            let lock = PathBuf::from(LOCKS).join(format!("slot-{slot}"));
            let free = match std::fs::OpenOptions::new().write(true).create_new(true).open(&lock) {
                Ok(_) => true,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let holders = std::fs::read_to_string(&lock).unwrap_or_default();
                    !holders.split_whitespace().any(|pid| PathBuf::from(format!("/proc/{pid}")).exists())
                }
                Err(e) => return Err(e).with_context(|| format!("claiming {}", lock.display())),
            };
            if !free {
                continue;
            }
            // Written at once, so no other claimant takes it while it is swept.
            std::fs::write(&lock, std::process::id().to_string())?;
            sweep(slot);
            make_neighbour_room()?;
            let janitor = std::process::Command::new("sh")
                .arg("-c")
                .arg(JANITOR)
                .arg("janitor")
                .arg(slot.to_string())
                .arg(&lock)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .context("starting the network janitor")?;
            std::fs::write(&lock, format!("{} {}", std::process::id(), janitor.id()))?;
            return Ok(Self {
                slot,
                janitor: Some(janitor),
                next_pod: AtomicU32::new(0),
                used: Mutex::new(Vec::new()),
            });
        }
        bail!("all {SLOTS} pod network slots under {LOCKS} are held by live test processes")
    }

    /// The bridge of the next Node, up with its gateway address.
    pub async fn add_node(&self) -> Result<NodeNet> {
        let index = {
            let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
            if used.len() >= usize::from(NODES_PER_SLOT) {
                bail!("at most {NODES_PER_SLOT} nodes per test process");
            }
            used.push(BTreeSet::new());
            (used.len() - 1) as u16
        };
        let block = self.slot * NODES_PER_SLOT + index;
        let prefix = format!("198.{}.{}", 18 + block / 256, block % 256);
        let node = NodeNet {
            index,
            bridge: format!("exds{}b{index}", self.slot),
            gateway: format!("{prefix}.1").parse()?,
            cidr: format!("{prefix}.0/24"),
        };
        ip_batch(
            None,
            &[
                format!("link add {} type bridge", node.bridge),
                format!("addr add {}/24 dev {}", node.gateway, node.bridge),
                format!("link set {} up", node.bridge),
            ],
        )
        .await?;
        Ok(node)
    }

    /// A namespace for a pod on `node`, joined to its bridge, with an address.
    pub async fn add_pod(&self, node: &NodeNet) -> Result<PodNet> {
        let host = {
            let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
            let used = &mut used[usize::from(node.index)];
            let free = (2..=254u8).find(|host| !used.contains(host)).context("the node's pod CIDR is full")?;
            used.insert(free);
            free
        };
        let octets = node.gateway.octets();
        let ip = Ipv4Addr::new(octets[0], octets[1], octets[2], host);
        let number = self.next_pod.fetch_add(1, Ordering::Relaxed);
        let pod = PodNet { netns: format!("exds{}p{number}", self.slot), ip, node: node.index };
        let veth = format!("exds{}v{number}", self.slot);
        let made = async {
            ip_batch(
                None,
                &[
                    format!("netns add {}", pod.netns),
                    format!("link add {veth} type veth peer name eth0 netns {}", pod.netns),
                    format!("link set {veth} master {} up", node.bridge),
                ],
            )
            .await?;
            ip_batch(
                Some(&pod.netns),
                &[
                    "link set lo up".to_owned(),
                    format!("addr add {ip}/24 dev eth0"),
                    "link set eth0 up".to_owned(),
                    format!("route add default via {}", node.gateway),
                ],
            )
            .await
        };
        if let Err(error) = made.await {
            self.remove_pod(&pod).await;
            return Err(error);
        }
        Ok(pod)
    }

    /// Deletes the pod's namespace (its veth goes with it) and frees its address.
    pub async fn remove_pod(&self, pod: &PodNet) {
        let _ = tokio::process::Command::new("ip").args(["netns", "del", &pod.netns]).output().await;
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(used) = used.get_mut(usize::from(pod.node)) {
            used.remove(&pod.ip.octets()[3]);
        }
    }
}

impl Drop for Network {
    /// The janitor cleans up as its pipe closes; this waits for it to be done.
    fn drop(&mut self) {
        if let Some(mut janitor) = self.janitor.take() {
            drop(janitor.stdin.take());
            let _ = janitor.wait();
        }
    }
}

/// Raises the kernel's neighbour-table limits to room for thousands of pods, where lower.
fn make_neighbour_room() -> Result<()> {
    for (name, room) in [("gc_thresh1", 2048u64), ("gc_thresh2", 8192), ("gc_thresh3", 16384)] {
        let path = format!("/proc/sys/net/ipv4/neigh/default/{name}");
        let now: u64 = std::fs::read_to_string(&path).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(0);
        if now < room {
            std::fs::write(&path, room.to_string()).with_context(|| format!("raising {path}"))?;
        }
    }
    Ok(())
}

/// Runs `ip -batch -` (in `netns` when given) with `commands`.
async fn ip_batch(netns: Option<&str>, commands: &[String]) -> Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut command = tokio::process::Command::new("ip");
    if let Some(netns) = netns {
        command.args(["-n", netns]);
    }
    let mut child = command
        .args(["-batch", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("running ip (iproute2)")?;
    let mut stdin = child.stdin.take().context("ip's stdin")?;
    stdin.write_all(commands.join("\n").as_bytes()).await?;
    drop(stdin);
    let output = child.wait_with_output().await?;
    if !output.status.success() {
        bail!("ip {}: {}", commands.join("; "), String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(())
}

/// Removes every namespace (with the processes in it) and bridge of `slot` now: the
/// janitor's work, with nothing to wait for.
fn sweep(slot: u16) {
    let _ = std::process::Command::new("sh")
        .arg("-c")
        .arg(JANITOR)
        .arg("sweep")
        .arg(slot.to_string())
        .arg("")
        .stdin(std::process::Stdio::null())
        .output();
}
