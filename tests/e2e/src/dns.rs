//! Pod DNS names, as a cluster's DNS serves them for a headless Service: `<hostname>.<subdomain>.
//! <namespace>.svc` (and `.svc.cluster.local`) for each pod with a subdomain, and
//! `<subdomain>.<namespace>.svc` for all of them. They are written as hosts-file records: to the
//! scratch /etc/hosts the suite runs with, and (with the real kubelet) to the file dnsmasq serves
//! as the pods' cluster DNS.

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::ResourceExt;

const HOSTS_BEGIN: &str = "# BEGIN metastore-e2e pods";
const HOSTS_END: &str = "# END metastore-e2e pods";

/// The DNS names of `pod` (none without a subdomain).
pub fn host_names(pod: &Pod) -> Vec<String> {
    let ns = pod.namespace().unwrap_or_default();
    let Some(spec) = pod.spec.as_ref() else {
        return vec![];
    };
    let hostname = spec.hostname.clone().unwrap_or_else(|| pod.name_any());
    match &spec.subdomain {
        Some(sub) => vec![
            format!("{hostname}.{sub}.{ns}.svc"),
            format!("{hostname}.{sub}.{ns}.svc.cluster.local"),
            format!("{sub}.{ns}.svc"),
            format!("{sub}.{ns}.svc.cluster.local"),
        ],
        None => vec![],
    }
}

/// Hosts-file lines (`<ip> <names…>`) for `records`, sorted so equal sets give equal text.
fn lines(records: &[(String, Vec<String>)]) -> String {
    let mut sorted: Vec<&(String, Vec<String>)> =
        records.iter().filter(|(_, n)| !n.is_empty()).collect();
    sorted.sort();
    sorted
        .iter()
        .map(|(ip, names)| format!("{ip} {}\n", names.join(" ")))
        .collect()
}

/// Replaces this suite's block of `path` (a hosts file) with `records`, keeping the rest.
pub fn write_hosts(path: &Path, records: &[(String, Vec<String>)]) {
    let current = std::fs::read_to_string(path).unwrap_or_default();
    let before = match current.find(HOSTS_BEGIN) {
        Some(i) => current[..i].to_string(),
        None => current.clone(),
    };
    let text = format!(
        "{}\n{HOSTS_BEGIN}\n{}{HOSTS_END}\n",
        before.trim_end_matches('\n'),
        lines(records)
    );
    if text != current {
        // In place: the file is a bind mount, a rename would detach it.
        let _ = std::fs::write(path, text);
    }
}

/// Writes `records` as the whole of `path` (by rename) and has dnsmasq (`server`) reread it
/// with SIGHUP, which also clears its cache: a re-created pod's old address is gone at once.
fn write_served(path: &Path, server: u32, records: &[(String, Vec<String>)]) {
    let text = lines(records);
    if std::fs::read_to_string(path).ok().as_deref() == Some(text.as_str()) {
        return;
    }
    let tmp = path.with_extension("tmp");
    if std::fs::write(&tmp, text).is_ok() && std::fs::rename(&tmp, path).is_ok() {
        crate::signal(server, libc::SIGHUP);
    }
}

/// The records of the pods that have an address and are not being deleted.
fn records(pods: &[Pod]) -> Vec<(String, Vec<String>)> {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| {
            let ip = p.status.as_ref()?.pod_ip.clone()?;
            Some((ip, host_names(p)))
        })
        .collect()
}

/// Keeps the pods' records current (every 200 ms) in `hosts` and in `served_dir/pods`, which
/// the DNS server with PID `server` (dnsmasq, started by `scripts/e2e-node.sh`) answers from,
/// until dropped.
pub struct PodDns {
    task: tokio::task::JoinHandle<()>,
}

impl PodDns {
    /// Starts keeping the records of every pod the API server has.
    pub fn start(client: kube::Client, hosts: PathBuf, served_dir: PathBuf, server: u32) -> PodDns {
        let task = tokio::spawn(async move {
            let pods: Api<Pod> = Api::all(client);
            let served = served_dir.join("pods");
            loop {
                match pods.list(&ListParams::default()).await {
                    Ok(list) => {
                        let r = records(&list.items);
                        write_hosts(&hosts, &r);
                        write_served(&served, server, &r);
                    }
                    Err(e) => tracing::debug!("pod dns: {e}"),
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        PodDns { task }
    }
}

impl Drop for PodDns {
    fn drop(&mut self) {
        self.task.abort();
    }
}
