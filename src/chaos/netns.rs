//! A private network for a chaos run: one Linux network namespace per coordinator, joined by a
//! bridge, so that links can be cut the way real networks fail.
//!
//! [`Fabric::create`] makes, for a run's process id `P` and nodes `1..=n`: a bridge `tfcPb` in
//! the host namespace holding `10.A.B.1/24`, and per node a namespace `tfcPnI` whose end of a
//! veth pair holds `10.A.B.(10+I)/24` (the host end, `tfcPhI`, is a port of the bridge). `10.A.B`
//! is a /24 no route of the host uses. Coordinators run inside their namespaces
//! (`ip netns exec`) and listen on their private address; workers and clients stay in the host
//! namespace and reach them through the bridge. Nothing is routed beyond the /24: no traffic
//! leaves the namespaces, the bridge or loopback.
//!
//! Cuts: [`Fabric::isolate`] takes a node's link down (it reaches nobody, nobody reaches it);
//! [`Fabric::drop_to`] adds a blackhole route in one namespace towards one address (what that
//! node sends there is dropped; what comes from there still arrives); [`Fabric::heal`] undoes
//! every cut. Dropping the fabric deletes the namespaces (their veth ends go with them) and the
//! bridge; a fabric left behind by a run that was killed is found by its dead process id and
//! removed by the next [`Fabric::create`].
//!
//! Making namespaces needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN): [`Fabric::create`] says so
//! when it cannot, and the caller reports that it could not run rather than failing.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

/// Names of everything a run makes start with this.
const PREFIX: &str = "tfc";

/// The private network of one run.
#[derive(Debug)]
pub struct Fabric {
    pid: u32,
    /// `10.A.B`: the run's /24.
    net: (u8, u8),
    nodes: u64,
    /// Nodes whose link is down, and (node, address) blackholes in place.
    isolated: BTreeSet<u64>,
    blackholes: BTreeSet<(u64, Ipv4Addr)>,
}

/// Runs `ip ARGS`; its stderr on failure.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `ip`: {e} (install iproute2)"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn ip_output(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `ip`: {e} (install iproute2)"))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

impl Fabric {
    /// Makes the namespaces, veth pairs and bridge for `nodes` coordinators. An error says
    /// why (not root, no `ip`, the kernel refused) and leaves nothing behind.
    pub fn create(nodes: u64) -> Result<Fabric, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err(
                "network partitions need root (CAP_NET_ADMIN) to make network namespaces; run \
                 as root or leave out --partitions"
                    .to_string(),
            );
        }
        remove_abandoned();
        let pid = std::process::id();
        let net = free_net(pid)?;
        let mut fabric = Fabric {
            pid,
            net,
            nodes: 0,
            isolated: BTreeSet::new(),
            blackholes: BTreeSet::new(),
        };
        let bridge = fabric.bridge();
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/24", fabric.host_addr()),
            "dev",
            &bridge,
        ])?;
        ip(&["link", "set", &bridge, "up"])?;
        for node in 1..=nodes {
            fabric.nodes = node; // what Drop removes
            fabric.add_node(node)?;
        }
        Ok(fabric)
    }

    fn add_node(&self, node: u64) -> Result<(), String> {
        let (ns, host, inner) = (
            self.netns(node),
            self.host_veth(node),
            self.inner_veth(node),
        );
        ip(&["netns", "add", &ns])?;
        ip(&["link", "add", &host, "type", "veth", "peer", "name", &inner])?;
        ip(&["link", "set", &inner, "netns", &ns])?;
        ip(&["link", "set", &host, "master", &self.bridge()])?;
        ip(&["link", "set", &host, "up"])?;
        let addr = format!("{}/24", self.addr(node));
        ip(&["-n", &ns, "addr", "add", &addr, "dev", &inner])?;
        ip(&["-n", &ns, "link", "set", &inner, "up"])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])
    }

    fn bridge(&self) -> String {
        format!("{PREFIX}{}b", self.pid)
    }

    /// The namespace of `node`.
    pub fn netns(&self, node: u64) -> String {
        format!("{PREFIX}{}n{node}", self.pid)
    }

    fn host_veth(&self, node: u64) -> String {
        format!("{PREFIX}{}h{node}", self.pid)
    }

    fn inner_veth(&self, node: u64) -> String {
        format!("{PREFIX}{}i{node}", self.pid)
    }

    /// The private address of `node`.
    pub fn addr(&self, node: u64) -> Ipv4Addr {
        Ipv4Addr::new(10, self.net.0, self.net.1, 10 + node as u8)
    }

    /// The bridge's address in the host namespace (where workers and clients are).
    pub fn host_addr(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.net.0, self.net.1, 1)
    }

    /// Cuts `node` off: its link goes down, so it reaches nobody and nobody reaches it.
    pub fn isolate(&mut self, node: u64) -> Result<(), String> {
        ip(&["link", "set", &self.host_veth(node), "down"])?;
        self.isolated.insert(node);
        Ok(())
    }

    /// From now on, what `node` sends to `to` is dropped (a one-way cut).
    pub fn drop_to(&mut self, node: u64, to: Ipv4Addr) -> Result<(), String> {
        let target = format!("{to}/32");
        ip(&[
            "-n",
            &self.netns(node),
            "route",
            "add",
            "blackhole",
            &target,
        ])?;
        self.blackholes.insert((node, to));
        Ok(())
    }

    /// Undoes every cut.
    pub fn heal(&mut self) -> Result<(), String> {
        let mut errors = Vec::new();
        for node in std::mem::take(&mut self.isolated) {
            if let Err(e) = ip(&["link", "set", &self.host_veth(node), "up"]) {
                errors.push(e);
            }
        }
        for (node, to) in std::mem::take(&mut self.blackholes) {
            let target = format!("{to}/32");
            if let Err(e) = ip(&[
                "-n",
                &self.netns(node),
                "route",
                "del",
                "blackhole",
                &target,
            ]) {
                errors.push(e);
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }

    /// Cuts in place now, as text for a report.
    pub fn cuts(&self) -> Vec<String> {
        let isolated = self.isolated.iter().map(|n| format!("node {n} isolated"));
        let one_way = (self.blackholes.iter()).map(|(n, to)| format!("node {n} → {to} dropped"));
        isolated.chain(one_way).collect()
    }
}

impl Drop for Fabric {
    fn drop(&mut self) {
        for node in 1..=self.nodes {
            let _ = ip(&["netns", "del", &self.netns(node)]);
            let _ = ip(&["link", "del", &self.host_veth(node)]);
        }
        let _ = ip(&["link", "del", &self.bridge()]);
    }
}

/// A /24 in 10.0.0.0/8 that no route of the host touches, chosen from the process id.
fn free_net(pid: u32) -> Result<(u8, u8), String> {
    let routes = ip_output(&["-4", "route", "show", "table", "all"])?;
    let addrs = ip_output(&["-4", "addr"])?;
    for step in 0..512u32 {
        let n = pid.wrapping_add(step.wrapping_mul(7919));
        let net = (200 + (n % 50) as u8, (n / 50 % 256) as u8);
        let prefix = format!("10.{}.{}.", net.0, net.1);
        if !routes.contains(&prefix) && !addrs.contains(&prefix) {
            return Ok(net);
        }
    }
    Err("no free /24 in 10.200.0.0-10.249.255.0 for the chaos network".to_string())
}

/// Removes what runs that no longer exist left behind (a run killed with SIGKILL cannot clean
/// up after itself).
fn remove_abandoned() {
    let Ok(list) = ip_output(&["netns", "list"]) else {
        return;
    };
    let owners = |name: &str| -> Option<u32> {
        let rest = name.strip_prefix(PREFIX)?;
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    };
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        if let Some(pid) = owners(name).filter(|pid| !alive(*pid)) {
            let _ = ip(&["netns", "del", name]);
            let _ = ip(&["link", "del", &format!("{PREFIX}{pid}b")]);
        }
    }
    if let Ok(links) = ip_output(&["-o", "link", "show"]) {
        for name in links.lines().filter_map(|l| l.split(':').nth(1)) {
            let name = name.trim().split('@').next().unwrap_or("");
            if owners(name).is_some_and(|pid| !alive(pid)) {
                let _ = ip(&["link", "del", name]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Skips (with the reason) where namespaces cannot be made.
    fn fabric(nodes: u64) -> Option<Fabric> {
        match Fabric::create(nodes) {
            Ok(f) => Some(f),
            Err(e) => {
                eprintln!("skipped: {e}");
                None
            }
        }
    }

    /// Whether a TCP connection attempt from `from_ns` (the host: `None`) to port 9 of `to`
    /// gets an answer: nothing listens there, so "refused" means the packets went there and
    /// back, while a cut shows as a timeout or an unreachable network.
    fn reaches(from_ns: Option<&str>, to: Ipv4Addr) -> bool {
        let Some(ns) = from_ns else {
            let target = std::net::SocketAddr::from((to, 9));
            let timeout = std::time::Duration::from_millis(500);
            return match std::net::TcpStream::connect_timeout(&target, timeout) {
                Ok(_) => true,
                Err(e) => e.kind() == std::io::ErrorKind::ConnectionRefused,
            };
        };
        let script = format!("timeout 1 bash -c 'exec 3<>/dev/tcp/{to}/9' 2>&1 | grep -q refused");
        Command::new("ip")
            .args(["netns", "exec", ns, "sh", "-c", &script])
            .status()
            .is_ok_and(|s| s.success())
    }

    #[test]
    fn nodes_reach_each_other_until_cut_and_again_once_healed_and_nothing_is_left_behind() {
        let Some(mut fabric) = fabric(3) else {
            return;
        };
        let (a1, a2, a3) = (fabric.addr(1), fabric.addr(2), fabric.addr(3));
        let n1 = fabric.netns(1);
        assert!(reaches(None, a1), "the host reaches node 1");
        assert!(reaches(Some(&n1), a2), "node 1 reaches node 2");

        fabric.isolate(2).unwrap();
        assert!(!reaches(Some(&n1), a2), "node 2 is isolated");
        assert!(!reaches(None, a2));
        assert!(reaches(Some(&n1), a3), "node 3 is not");

        fabric.drop_to(1, a3).unwrap();
        assert!(!reaches(Some(&n1), a3), "node 1 → node 3 is cut");
        assert_eq!(fabric.cuts().len(), 2);

        fabric.heal().unwrap();
        assert!(reaches(Some(&n1), a2) && reaches(Some(&n1), a3) && reaches(None, a2));

        let ns = fabric.netns(1);
        drop(fabric);
        let left = ip_output(&["netns", "list"]).unwrap();
        assert!(!left.contains(&ns), "{left}");
    }
}
