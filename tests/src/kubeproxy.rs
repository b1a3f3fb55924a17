//! kube-proxy's layout, in network namespaces the test makes itself: a "node" namespace
//! and "pod" namespaces joined to it by veth pairs (the node routes between them), and
//! Service addresses that iptables DNAT in the node sends to a pod: in
//! PREROUTING for pod clients, in OUTPUT for the node's own (host-network) clients.
//! Everything is removed on drop, whatever the test did.
use std::{
    io,
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    process::Command,
    time::Duration,
};

use crate::netns::{enter, nodad, run};

/// A node namespace and its pods.
pub struct Cluster {
    pub node: String,
    pods: Vec<String>,
}

/// One pod: its namespace and its address.
#[derive(Clone, Debug)]
pub struct Pod {
    pub netns: String,
    pub addr: IpAddr,
}

impl Cluster {
    /// An empty node namespace `cwk<tag><pid>` that forwards IPv4 and IPv6.
    pub fn new(tag: &str) -> Self {
        let node = format!("cwk{tag}{}", std::process::id() % 100_000);
        remove_netns(&node);
        run(&format!("ip netns add {node}"));
        let c = Self { node, pods: Vec::new() };
        run(&format!("ip -n {} link set lo up", c.node));
        c.sysctl("net.ipv4.ip_forward=1");
        c.sysctl("net.ipv6.conf.all.forwarding=1");
        c
    }

    fn sysctl(&self, setting: &str) {
        run(&format!("ip netns exec {} sysctl -qw {setting}", self.node));
    }

    /// A pod namespace at `addr`, joined to the node by a veth pair whose node end is
    /// `gateway`; the pod routes everything through the node.
    pub fn pod(&mut self, name: &str, addr: IpAddr, gateway: IpAddr) -> Pod {
        let netns = format!("{}{name}", self.node);
        remove_netns(&netns);
        run(&format!("ip netns add {netns}"));
        self.pods.push(netns.clone());
        let (n, p) = (&self.node, &netns);
        let host_if = format!("v{name}");
        run(&format!("ip -n {n} link add {host_if} type veth peer name eth0 netns {p}"));
        run(&format!("ip -n {p} link set lo up"));
        run(&format!("ip -n {n} addr add {gateway} peer {addr} dev {host_if}{}", nodad(gateway)));
        run(&format!("ip -n {p} addr add {addr} peer {gateway} dev eth0{}", nodad(addr)));
        run(&format!("ip -n {n} link set {host_if} up"));
        run(&format!("ip -n {p} link set eth0 up"));
        if addr.is_ipv6() {
            // IPv6 makes no route to a point-to-point peer by itself.
            run(&format!("ip -n {p} -6 route replace {gateway} dev eth0"));
            run(&format!("ip -n {n} -6 route replace {addr} dev {host_if}"));
            run(&format!("ip -n {p} -6 route add default via {gateway} dev eth0"));
        } else {
            run(&format!("ip -n {p} route add default via {gateway} dev eth0"));
        }
        Pod { netns, addr }
    }

    /// The node's default routes (IPv4 and IPv6) go to `pod`'s link, as a node's go to
    /// its network: a Service address then has a route before any DNAT, which the node's
    /// own connects need (their route is chosen before OUTPUT rewrites them).
    pub fn default_route(&self, pod: &str) {
        run(&format!("ip -n {} route add default dev v{pod}", self.node));
        run(&format!("ip -n {} -6 route add default dev v{pod}", self.node));
    }

    /// An address of the node itself (a host-network client's), on its loopback.
    pub fn node_addr(&self, addr: IpAddr) {
        let len = if addr.is_ipv6() { 128 } else { 32 };
        run(&format!("ip -n {} addr add {addr}/{len} dev lo{}", self.node, nodad(addr)));
    }

    /// A Service: `service_addr` sent to `backend` by DNAT in the node, in PREROUTING (pod
    /// clients) and OUTPUT (the node's own), as kube-proxy's iptables mode does.
    pub fn service(&self, service_addr: SocketAddr, backend: SocketAddr) {
        let tables = if service_addr.is_ipv6() { "ip6tables" } else { "iptables" };
        for chain in ["PREROUTING", "OUTPUT"] {
            run(&format!(
                "ip netns exec {} {tables} -w -t nat -A {chain} -d {} -p tcp --dport {} -j DNAT --to-destination {backend}",
                self.node,
                service_addr.ip(),
                service_addr.port()
            ));
        }
    }

    /// A Service as kube-proxy's IPVS mode makes it: the service address on the node, a
    /// virtual server for it and `backend` as its real server (masquerading), with
    /// `net.ipv4.vs.conntrack=1`. Needs a kernel with IPVS (and fails, saying so, on one
    /// without).
    pub fn ipvs_service(&self, service_addr: SocketAddr, backend: SocketAddr) {
        let n = &self.node;
        self.sysctl("net.ipv4.vs.conntrack=1");
        run(&format!("ip -n {n} addr add {}/32 dev lo", service_addr.ip()));
        run(&format!("ip netns exec {n} ipvsadm -A -t {service_addr} -s rr"));
        run(&format!("ip netns exec {n} ipvsadm -a -t {service_addr} -r {backend} -m"));
    }

    /// A Service with no endpoints: its connects are refused, as kube-proxy's REJECT
    /// rule does.
    pub fn service_without_endpoints(&self, service_addr: SocketAddr) {
        let tables = if service_addr.is_ipv6() { "ip6tables" } else { "iptables" };
        for chain in ["FORWARD", "OUTPUT"] {
            run(&format!(
                "ip netns exec {} {tables} -w -A {chain} -d {} -p tcp --dport {} -j REJECT --reject-with tcp-reset",
                self.node,
                service_addr.ip(),
                service_addr.port()
            ));
        }
    }

    /// A listener in `pod` on `port`.
    pub fn listen(&self, pod: &Pod, port: u16) -> TcpListener {
        enter(&pod.netns, || TcpListener::bind(SocketAddr::new(pod.addr, port)))
            .unwrap_or_else(|e| panic!("listen in {}: {e}", pod.netns))
    }

    /// A connection from `pod` to `to`.
    pub fn connect(&self, pod: &Pod, to: SocketAddr) -> io::Result<TcpStream> {
        enter(&pod.netns, || crate::connect_from(pod.addr, to))
    }

    /// A connection from the node itself, from `from`, to `to`.
    pub fn connect_from_node(&self, from: IpAddr, to: SocketAddr) -> io::Result<TcpStream> {
        enter(&self.node, || crate::connect_from(from, to))
    }
}

fn remove_netns(name: &str) {
    let _ = Command::new("ip")
        .args(["netns", "del", name])
        .stderr(std::process::Stdio::null())
        .status();
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Removing a namespace removes its end of each veth pair, and so the pair.
        for p in self.pods.drain(..) {
            remove_netns(&p);
        }
        remove_netns(&self.node);
        // The kernel frees a namespace's devices in the background; give it a moment so
        // a test that follows does not meet them.
        std::thread::sleep(Duration::from_millis(50));
    }
}
