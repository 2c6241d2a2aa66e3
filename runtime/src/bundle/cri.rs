//! Network namespaces and Kubernetes' CRI: which namespace a VM may take
//! over, and which container is a pod's sandbox (no VM).

use super::*;

/// CRI (Kubernetes) marks its containers with this annotation.
pub(super) const CRI_CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";

/// containerd's CRI names the pod's sandbox (its id) in every container.
pub(super) const CRI_SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";

/// A CRI pod sandbox (the pause container) only holds the pod's
/// namespaces: it runs under the lower runtime as it is, no VM. The
/// annotation alone is anybody's to write (an image's labels, `docker run
/// --annotation`), so it counts only as containerd's CRI writes it: on the
/// container whose id is the sandbox id it names. Anything else claiming
/// to be a sandbox is refused rather than run without a VM.
pub fn is_cri_sandbox(spec: &Spec, id: &str) -> Result<bool, BundleError> {
    if cri_container_type(spec) != Some("sandbox") {
        return Ok(false);
    }
    let sandbox_id = spec
        .annotations()
        .as_ref()
        .and_then(|a| a.get(CRI_SANDBOX_ID));
    if sandbox_id.map(String::as_str) == Some(id) {
        Ok(true)
    } else {
        Err(BundleError::NotACriSandbox(id.to_string()))
    }
}

pub(super) fn cri_container_type(spec: &Spec) -> Option<&str> {
    spec.annotations()
        .as_ref()?
        .get(CRI_CONTAINER_TYPE)
        .map(String::as_str)
}

/// The VM takes over the interfaces of the container's network namespace:
/// a new one (Docker, runc makes it), or one made for this container and
/// still empty of processes (podman's, an orchestrator's); never the
/// host's, nor one another container lives in (its VM has its links).
/// A CRI pod's container joins the pod's namespace, where the sandbox
/// (no VM) lives, while no other container of the pod runs: the first
/// VM holds the pod's interfaces. Only a sandbox the caller verified
/// (`HostFacts::cri_sandbox_pid`, living in that namespace) makes it a
/// pod's; an annotation alone gets the rule of any other container.
/// Returns whether the namespace outlives the container (given by path).
pub(super) fn check_network_namespace(spec: &Spec, host: &HostFacts) -> Result<bool, BundleError> {
    let namespaces = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default();
    let Some(netns) = namespaces
        .iter()
        .find(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::Network)
    else {
        return Err(BundleError::HostNetwork);
    };
    let Some(path) = netns.path() else {
        return Ok(false);
    };
    if (host.is_host_netns)(path) {
        return Err(BundleError::HostNetwork);
    }
    let pids = (host.netns_pids)(path).ok_or_else(|| BundleError::NetnsUnknown(path.clone()))?;
    let sandbox = host.cri_sandbox_pid.filter(|p| pids.contains(p));
    if cri_container_type(spec) == Some("container") && sandbox.is_some() {
        if pids.len() > 1 {
            let pod = spec
                .annotations()
                .as_ref()
                .and_then(|a| a.get(CRI_SANDBOX_ID))
                .cloned()
                .unwrap_or_default();
            return Err(BundleError::PodNetworkHeld(pod));
        }
        return Ok(true);
    }
    if !pids.is_empty() {
        return Err(BundleError::SharedNetwork);
    }
    Ok(true)
}

/// The pod sandbox a CRI container's annotation names (its id), when the
/// container says it is a CRI pod's app container.
pub fn cri_sandbox_of(spec: &Spec) -> Option<String> {
    if cri_container_type(spec) != Some("container") {
        return None;
    }
    spec.annotations().as_ref()?.get(CRI_SANDBOX_ID).cloned()
}
