//! The standard flannel lab in one call: N nodes, etcd, flanneld everywhere, converged routes,
//! and pods on every node attached through the stock flannel conflist.

use crate::backend::Backend;
use crate::error::Result;
use crate::flannel::FLANNEL_BINS;
use crate::lab::Lab;

/// Shape of a flannel lab.
#[derive(Debug, Clone, Copy)]
pub struct FlannelSpec {
    pub nodes: usize,
    pub pods_per_node: usize,
    /// 1, or 3 for a cluster.
    pub etcd_members: usize,
}

impl Default for FlannelSpec {
    fn default() -> Self {
        FlannelSpec { nodes: 3, pods_per_node: 2, etcd_members: 1 }
    }
}

impl Lab {
    /// Builds a flannel lab: checks the weft binaries exist (a clear error naming the missing
    /// ones otherwise), adds the nodes, starts etcd and writes the network config, starts
    /// flanneld on every node, waits for every subnet.env and for routes between all nodes,
    /// then attaches `pods_per_node` pods per node.
    pub fn flannel(prefix: &str, spec: FlannelSpec) -> Result<Lab> {
        Lab::flannel_with_args(prefix, spec, &[])
    }

    /// [`Lab::flannel`] with extra flanneld flags (e.g. `--reconcile-interval=2`).
    pub fn flannel_with_args(prefix: &str, spec: FlannelSpec, flanneld_args: &[&str]) -> Result<Lab> {
        Lab::flannel_backend(prefix, spec, Backend::Vxlan, flanneld_args)
    }

    /// [`Lab::flannel_with_args`] with the cluster on `backend`.
    pub fn flannel_backend(
        prefix: &str,
        spec: FlannelSpec,
        backend: Backend,
        flanneld_args: &[&str],
    ) -> Result<Lab> {
        Lab::flannel_lab(prefix, spec, backend, false, flanneld_args)
    }

    /// A dual-stack VXLAN flannel lab (`crate::dual`): as [`Lab::flannel_with_args`], and every
    /// node also routes every other node's IPv6 subnet before the pods are attached (each pod
    /// then has an IPv4 and an IPv6 address).
    pub fn flannel_dual_stack(prefix: &str, spec: FlannelSpec, flanneld_args: &[&str]) -> Result<Lab> {
        Lab::flannel_dual_stack_backend(prefix, spec, Backend::Vxlan, flanneld_args)
    }

    /// [`Lab::flannel_dual_stack`] with the cluster on `backend` (host-gw: both families'
    /// routes via the nodes' addresses on `eth0`).
    pub fn flannel_dual_stack_backend(
        prefix: &str,
        spec: FlannelSpec,
        backend: Backend,
        flanneld_args: &[&str],
    ) -> Result<Lab> {
        Lab::flannel_lab(prefix, spec, backend, true, flanneld_args)
    }

    /// A VXLAN flannel lab with no masquerade anywhere: flanneld without `--ip-masq` and the
    /// conflist's delegate with `"ipMasq": false` (a cluster whose pod addresses are routed
    /// outside), so no nat rule loads conntrack on the pods' path.
    pub fn flannel_without_masquerade(prefix: &str, spec: FlannelSpec) -> Result<Lab> {
        Lab::flannel_lab_with(prefix, spec, Backend::Vxlan, false, &["--ip-masq=false"], Some(false))
    }

    fn flannel_lab(
        prefix: &str,
        spec: FlannelSpec,
        backend: Backend,
        dual_stack: bool,
        flanneld_args: &[&str],
    ) -> Result<Lab> {
        Lab::flannel_lab_with(prefix, spec, backend, dual_stack, flanneld_args, None)
    }

    fn flannel_lab_with(
        prefix: &str,
        spec: FlannelSpec,
        backend: Backend,
        dual_stack: bool,
        flanneld_args: &[&str],
        delegate_ip_masq: Option<bool>,
    ) -> Result<Lab> {
        crate::bins::require(FLANNEL_BINS)?;
        let mut lab = Lab::new(prefix)?;
        lab.delegate_ip_masq = delegate_ip_masq;
        lab.set_backend(backend);
        lab.set_dual_stack(dual_stack);
        lab.set_flanneld_args(flanneld_args);
        for _ in 0..spec.nodes {
            lab.add_node()?;
        }
        lab.start_etcd(spec.etcd_members)?;
        lab.put_network_config()?;
        for i in 0..spec.nodes {
            lab.start_flanneld(i)?;
        }
        lab.wait_converged()?;
        if dual_stack {
            lab.wait_converged6()?;
        }
        for i in 0..spec.nodes {
            lab.use_flannel_cni(i)?;
            for _ in 0..spec.pods_per_node {
                lab.add_pod(i)?;
            }
        }
        Ok(lab)
    }
}
