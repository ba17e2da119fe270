//! A test kubelet: registers one Node, binds pending pods to it, and runs each pod whose image it
//! knows as a local process on its own loopback address. Container args and env are expanded as
//! a kubelet would (downward API: pod name, namespace, pod IP; Secret keys); init containers run
//! first, in order, each to success; PVC mounts map to directories that outlive the pod and are
//! removed with the PVC; Secret volumes are projected into files and kept current. Pod phase,
//! podIP and Ready (from the readiness probe's HTTP endpoint) are reported back; deleted pods get
//! SIGTERM, then SIGKILL after the grace period. Stable DNS names (`<pod>.<service>.<ns>.svc`) are
//! written to a hosts file, which `make e2e` bind-mounts over /etc/hosts in a private mount
//! namespace, so members and the operator resolve each other without touching the machine's
//! resolver.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Node, PersistentVolumeClaim, Pod, PodSpec};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use serde_json::json;

/// Name of the Node this kubelet registers.
pub const NODE: &str = "e2e-node";

/// How to run pods.
pub struct KubeletConfig {
    /// Image name prefix → local binary.
    pub images: Vec<(String, PathBuf)>,
    /// Where PVC directories and pod logs live.
    pub root: PathBuf,
    /// Hosts file to maintain (the bind-mounted /etc/hosts), if any.
    pub hosts_file: Option<PathBuf>,
    /// First three octets of the pod addresses (e.g. "127.0.77").
    pub net: String,
    /// API server URL and CA file: pods with a service account get a kubeconfig holding a
    /// token for it (TokenRequest), in `KUBECONFIG`, as in-cluster config would give them.
    pub api: Option<(String, PathBuf)>,
}

struct RunningPod {
    uid: String,
    ip: String,
    child: Option<Child>,
    /// Init containers that have succeeded.
    inits_done: usize,
    /// A container of this pod has been started (until then the pod is Pending).
    started: bool,
    restarts: i32,
    /// How the container last failed: exit code and termination message (with
    /// `FallbackToLogsOnError`, the tail of its log, as the kubelet reports it).
    last_failure: Option<(i32, String)>,
    /// A pod that does not restart (`restartPolicy: Never`) whose container has stopped: exit
    /// code and termination message.
    finished: Option<(i32, String)>,
    next_start: Instant,
    ready: bool,
    terminating_since: Option<Instant>,
    reported: Option<serde_json::Value>,
    hosts: Vec<String>,
}

/// The pods this kubelet runs, by `namespace/name`.
type Pods = Arc<Mutex<HashMap<String, RunningPod>>>;

/// Pod addresses: `<net>.2` upwards, one per pod key for the kubelet's lifetime (a StatefulSet
/// pod re-created under its name keeps its address).
struct Addresses {
    next: u32,
    by_pod: HashMap<String, String>,
}

impl Addresses {
    /// The address of the pod with key `k` on network `net`, allocated on first use.
    fn of(&mut self, k: &str, net: &str) -> String {
        if let Some(ip) = self.by_pod.get(k) {
            return ip.clone();
        }
        let ip = format!("{net}.{}", self.next);
        self.next += 1;
        self.by_pod.insert(k.to_string(), ip.clone());
        ip
    }
}

/// A running kubelet; stops (killing its pods) on drop.
pub struct Kubelet {
    task: tokio::task::JoinHandle<()>,
    pods: Pods,
    logs: PathBuf,
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.task.abort();
        for (_, p) in self.pods.lock().unwrap().iter_mut() {
            kill_pod(p);
        }
    }
}

impl Kubelet {
    /// Registers the node and starts the sync loop.
    pub async fn start(client: kube::Client, cfg: KubeletConfig) -> anyhow::Result<Kubelet> {
        std::fs::create_dir_all(cfg.root.join("logs"))?;
        register_node(&client).await?;
        crate::volumes::ensure_class(&client).await?;
        let pods: Pods = Arc::default();
        let state = pods.clone();
        let logs = cfg.root.join("logs");
        let task = tokio::spawn(async move {
            let mut addresses = Addresses {
                next: 2,
                by_pod: HashMap::new(),
            };
            let mut last_heartbeat = Instant::now();
            loop {
                if let Err(e) = sync(&client, &cfg, &state, &mut addresses).await {
                    tracing::debug!("kubelet sync: {e}");
                }
                if last_heartbeat.elapsed() > Duration::from_secs(10) {
                    let _ = node_ready(&client).await;
                    last_heartbeat = Instant::now();
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        Ok(Kubelet { task, pods, logs })
    }

    /// Sends `signal` (`STOP`, `CONT`, …) to a running pod's process, as a fault: a stopped
    /// member answers nothing while its pod stays. False when the pod has no process.
    pub fn signal(&self, namespace: &str, name: &str, signal: &str) -> bool {
        let pods = self.pods.lock().unwrap();
        let Some(pid) = pods
            .get(&format!("{namespace}/{name}"))
            .and_then(|p| p.child.as_ref())
            .map(|c| c.id())
        else {
            return false;
        };
        std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .is_ok_and(|s| s.success())
    }

    /// The command line a running pod's process was started with (what the member runs).
    pub fn command_line(&self, namespace: &str, name: &str) -> Option<Vec<String>> {
        let pid = self
            .pods
            .lock()
            .unwrap()
            .get(&format!("{namespace}/{name}"))?
            .child
            .as_ref()?
            .id();
        crate::command_line_of(pid)
    }

    /// Where pod logs are kept (`<ns>_<pod>.log`).
    pub fn logs_dir(&self) -> PathBuf {
        self.logs.clone()
    }

    /// True when the pod runs and its readiness probe passes (what a Service routes to).
    pub fn ready(&self, namespace: &str, name: &str) -> bool {
        self.pods
            .lock()
            .unwrap()
            .get(&format!("{namespace}/{name}"))
            .is_some_and(|p| p.ready && p.terminating_since.is_none())
    }

    /// Address of a running pod.
    pub fn pod_ip(&self, namespace: &str, name: &str) -> Option<String> {
        self.pods
            .lock()
            .unwrap()
            .get(&format!("{namespace}/{name}"))
            .map(|p| p.ip.clone())
    }
}

async fn register_node(client: &kube::Client) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    if nodes.get_opt(NODE).await?.is_none() {
        let node: Node = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": NODE, "labels": {"kubernetes.io/hostname": NODE}},
        }))?;
        nodes.create(&PostParams::default(), &node).await?;
    }
    node_ready(client).await
}

async fn node_ready(client: &kube::Client) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let status = json!({"status": {
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
            "message": "test kubelet", "lastHeartbeatTime": now, "lastTransitionTime": now}],
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": NODE}],
        "capacity": {"cpu": "8", "memory": "32Gi", "pods": "110"},
        "allocatable": {"cpu": "8", "memory": "32Gi", "pods": "110"},
    }});
    nodes
        .patch_status(NODE, &PatchParams::default(), &Patch::Merge(&status))
        .await?;
    Ok(())
}

fn key(p: &Pod) -> String {
    format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any())
}

/// Live claims, `namespace/name` → uid; claims being deleted are left out (a pod cannot start
/// on one).
type Claims = HashMap<String, String>;

/// A claim's volume: named by the claim's uid, so a claim deleted and made again under the same
/// name gets a new, empty volume, as a real provisioner gives it.
fn pvc_dir(root: &Path, ns: &str, claim: &str, uid: &str) -> PathBuf {
    root.join("pvc").join(ns).join(format!("{claim}-{uid}"))
}

/// The live claims among `pvcs`.
fn live_claims(pvcs: &[PersistentVolumeClaim]) -> Claims {
    pvcs.iter()
        .filter(|c| c.metadata.deletion_timestamp.is_none())
        .map(|c| {
            (
                format!("{}/{}", c.namespace().unwrap_or_default(), c.name_any()),
                c.uid().unwrap_or_default(),
            )
        })
        .collect()
}

/// Where a pod's Secret volume is projected.
fn secret_dir(root: &Path, ns: &str, pod: &str, volume: &str) -> PathBuf {
    root.join("secrets").join(ns).join(pod).join(volume)
}

/// Projects the Secret volumes of pods bound here into files, as the kubelet does, and keeps
/// them current when a Secret changes (each file replaced by a rename, so a reader sees the old
/// or the new content). A missing Secret leaves its volume absent: the pod waits to start.
async fn project_secrets(client: &kube::Client, cfg: &KubeletConfig, items: &[Pod]) {
    for pod in items {
        let Some(spec) = &pod.spec else { continue };
        if spec.node_name.as_deref() != Some(NODE) || pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let ns = pod.namespace().unwrap_or_default();
        let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), &ns);
        let volumes = spec.volumes.iter().flatten().filter_map(|v| {
            let name = v.secret.as_ref()?.secret_name.clone()?;
            Some((v.name.clone(), name))
        });
        // Secrets env vars refer to, projected like volumes (`env-<secret>`).
        let env_secrets = spec
            .init_containers
            .iter()
            .flatten()
            .chain(&spec.containers)
            .flat_map(|c| c.env.iter().flatten())
            .filter_map(|e| e.value_from.as_ref()?.secret_key_ref.as_ref())
            .map(|r| (format!("env-{}", r.name), r.name.clone()));
        let wanted: Vec<(String, String)> = volumes.chain(env_secrets).collect();
        for (volume, name) in wanted {
            let Ok(Some(secret)) = secrets.get_opt(&name).await else {
                continue;
            };
            let dir = secret_dir(&cfg.root, &ns, &pod.name_any(), &volume);
            if std::fs::create_dir_all(&dir).is_err() {
                continue;
            }
            for (k, value) in secret.data.iter().flatten() {
                let path = dir.join(k);
                if std::fs::read(&path).ok().as_deref() == Some(value.0.as_slice()) {
                    continue;
                }
                let tmp = dir.join(format!(".{k}.tmp"));
                if std::fs::write(&tmp, &value.0).is_ok() {
                    let _ = std::fs::rename(&tmp, &path);
                }
            }
        }
    }
}

/// `arg` with paths under the container path `mount` moved to the host directory `dir`: `mount`
/// itself, or followed by `/` (so `/tls` maps `/tls/tls.crt`, not the `/tls` of `tls.crt`).
fn mounted(arg: &str, mount: &str, dir: &Path) -> String {
    let host = dir.display().to_string();
    let under = arg.replace(&format!("{mount}/"), &format!("{host}/"));
    match under.strip_suffix(mount) {
        Some(head) if head.is_empty() || head.ends_with('=') || head.ends_with(',') => {
            format!("{head}{host}")
        }
        _ => under,
    }
}

/// Expands `$(VAR)` references as the kubelet does.
pub fn expand(s: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = s.to_string();
    for (k, v) in env {
        out = out.replace(&format!("$({k})"), v);
    }
    out
}

/// The container the pod runs next: its init containers in order until each has succeeded,
/// then its first container; `None` once nothing is left to run.
fn next_container(pod: &Pod, inits_done: usize) -> Option<&Container> {
    let spec = pod.spec.as_ref()?;
    let inits = spec.init_containers.as_deref().unwrap_or_default();
    inits.get(inits_done).or_else(|| spec.containers.first())
}

/// True while the pod still has init containers to run.
fn initializing(pod: &Pod, inits_done: usize) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.init_containers.as_ref())
        .is_some_and(|i| inits_done < i.len())
}

/// The process container `c` of `pod` becomes: binary, args (env and mounts substituted), env.
/// `None` while a Secret it needs is not projected yet.
fn command_for(
    pod: &Pod,
    c: &Container,
    ip: &str,
    cfg: &KubeletConfig,
    claims: &Claims,
) -> Option<(PathBuf, Vec<String>, BTreeMap<String, String>)> {
    let spec = pod.spec.as_ref()?;
    let image = c.image.clone().unwrap_or_default();
    let bin = cfg
        .images
        .iter()
        .find(|(prefix, _)| image.starts_with(prefix.as_str()))
        .map(|(_, b)| b.clone())?;
    let ns = pod.namespace().unwrap_or_default();
    let mut env = BTreeMap::new();
    for e in c.env.iter().flatten() {
        let v = if let Some(v) = &e.value {
            v.clone()
        } else if let Some(r) = e
            .value_from
            .as_ref()
            .and_then(|v| v.secret_key_ref.as_ref())
        {
            let dir = secret_dir(&cfg.root, &ns, &pod.name_any(), &format!("env-{}", r.name));
            std::fs::read_to_string(dir.join(&r.key)).ok()?
        } else if let Some(f) = e.value_from.as_ref().and_then(|v| v.field_ref.as_ref()) {
            match f.field_path.as_str() {
                "metadata.name" => pod.name_any(),
                "metadata.namespace" => ns.clone(),
                "status.podIP" => ip.to_string(),
                "spec.nodeName" => NODE.to_string(),
                _ => String::new(),
            }
        } else {
            String::new()
        };
        env.insert(e.name.clone(), v);
    }
    let mut args: Vec<String> = c
        .command
        .iter()
        .flatten()
        .skip(1)
        .chain(c.args.iter().flatten())
        .map(|a| expand(a, &env))
        .collect();
    // The termination message file: empty when the container starts.
    let term = termination_file(cfg, &key(pod), &c.name);
    if let Some(dir) = term.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = std::fs::write(&term, b"");
    let term_path = c
        .termination_message_path
        .clone()
        .unwrap_or_else(|| "/dev/termination-log".into());
    for a in &mut args {
        *a = a.replace(&term_path, &term.display().to_string());
    }
    for m in c.volume_mounts.iter().flatten() {
        let claim = spec
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == m.name)
            .and_then(|v| v.persistent_volume_claim.as_ref())
            .map(|p| p.claim_name.clone());
        if let Some(claim) = claim {
            // No such claim (yet), or it is being deleted: the pod waits.
            let uid = claims.get(&format!("{ns}/{claim}"))?;
            let dir = pvc_dir(&cfg.root, &ns, &claim, uid);
            let _ = std::fs::create_dir_all(&dir);
            for a in &mut args {
                *a = mounted(a, &m.mount_path, &dir);
            }
        }
        let secret = spec
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == m.name && v.secret.is_some());
        if secret.is_some() {
            let dir = secret_dir(&cfg.root, &ns, &pod.name_any(), &m.name);
            // Not projected yet (its Secret is missing): the container cannot start.
            if !dir.exists() {
                return None;
            }
            for a in &mut args {
                *a = mounted(a, &m.mount_path, &dir);
            }
        }
    }
    Some((bin, args, env))
}

fn readiness_url(pod: &Pod, ip: &str) -> Option<String> {
    let c = pod.spec.as_ref()?.containers.first()?;
    let h = c.readiness_probe.as_ref()?.http_get.as_ref()?;
    let port = match &h.port {
        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(p) => *p,
        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(name) => {
            c.ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))?
                .container_port
        }
    };
    Some(format!(
        "{ip}:{port}{}",
        h.path.clone().unwrap_or_else(|| "/".into())
    ))
}

fn http_ok(target: &str) -> bool {
    use std::io::{Read, Write};
    let (addr, path) = match target.find('/') {
        Some(i) => (&target[..i], &target[i..]),
        None => (target, "/"),
    };
    let Ok(sa) = addr.parse() else { return false };
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&sa, Duration::from_millis(300)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    let n = s.read(&mut buf).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).contains(" 200")
}

fn write_hosts(path: &Path, pods: &HashMap<String, RunningPod>) {
    let records: Vec<(String, Vec<String>)> = pods
        .values()
        .filter(|p| p.terminating_since.is_none())
        .map(|p| (p.ip.clone(), p.hosts.clone()))
        .collect();
    crate::dns::write_hosts(path, &records);
}

/// Writes a kubeconfig with a fresh token of the pod's service account.
async fn service_account_kubeconfig(
    client: &kube::Client,
    cfg: &KubeletConfig,
    ns: &str,
    sa: &str,
    pod: &str,
) -> anyhow::Result<PathBuf> {
    let (server, ca) = cfg
        .api
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("no API server configured"))?;
    let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(client.clone(), ns);
    let req = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"expirationSeconds": 7200}});
    let resp: serde_json::Value = sas
        .create_subresource("token", sa, &PostParams::default(), &req)
        .await?;
    let token = resp["status"]["token"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("no token in {resp}"))?;
    let path = cfg
        .root
        .join("kubeconfigs")
        .join(format!("{ns}_{pod}.yaml"));
    std::fs::create_dir_all(path.parent().unwrap_or(&cfg.root))?;
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n    certificate-authority: {}\n\
             users:\n- name: u\n  user:\n    token: {token}\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\n    namespace: {ns}\ncurrent-context: c\n",
            ca.display()
        ),
    )?;
    Ok(path)
}

/// One pass: reconciles every pod bound here with its process, then tells the API server what
/// changed and drops the volumes of deleted claims.
async fn sync(
    client: &kube::Client,
    cfg: &KubeletConfig,
    state: &Pods,
    addresses: &mut Addresses,
) -> anyhow::Result<()> {
    let all: Api<Pod> = Api::all(client.clone());
    let list = all.list(&ListParams::default()).await?;
    let kubeconfigs = issue_kubeconfigs(client, cfg, state, &list.items).await;
    project_secrets(client, cfg, &list.items).await;
    // One list serves both: a volume directory is only ever made for a claim in a list.
    let pvcs: Api<PersistentVolumeClaim> = Api::all(client.clone());
    let pvcs = pvcs.list(&ListParams::default()).await?.items;
    if let Err(e) = crate::volumes::sync(client, &pvcs, None).await {
        tracing::debug!("volumes: {e}");
    }
    let updates = reconcile(
        cfg,
        state,
        &list.items,
        &kubeconfigs,
        addresses,
        &live_claims(&pvcs),
    );
    send_updates(client, state, updates).await;
    remove_deleted_volumes(cfg, &pvcs);
    Ok(())
}

/// Service-account kubeconfigs for pods bound here that are about to start (not yet in the
/// table), by pod key.
async fn issue_kubeconfigs(
    client: &kube::Client,
    cfg: &KubeletConfig,
    state: &Pods,
    items: &[Pod],
) -> HashMap<String, PathBuf> {
    let mut kubeconfigs = HashMap::new();
    if cfg.api.is_none() {
        return kubeconfigs;
    }
    let known: Vec<String> = state.lock().unwrap().keys().cloned().collect();
    for pod in items {
        let Some(spec) = &pod.spec else { continue };
        let sa = spec.service_account_name.clone().unwrap_or_default();
        if spec.node_name.as_deref() == Some(NODE)
            && !sa.is_empty()
            && sa != "default"
            && !known.contains(&key(pod))
        {
            let ns = pod.namespace().unwrap_or_default();
            match service_account_kubeconfig(client, cfg, &ns, &sa, &pod.name_any()).await {
                Ok(p) => {
                    kubeconfigs.insert(key(pod), p);
                }
                Err(e) => tracing::warn!("token for {ns}/{sa}: {e}"),
            }
        }
    }
    kubeconfigs
}

/// What one pass has to tell the API server, sent once the pod table is unlocked.
#[derive(Default)]
struct Updates {
    /// Pending pods to bind to this node (namespace, name).
    bind: Vec<(String, String)>,
    /// Pods whose status changed (namespace, name, status).
    statuses: Vec<(String, String, serde_json::Value)>,
    /// Deleted pods whose process is gone, to delete for good (namespace, name).
    finalize: Vec<(String, String)>,
}

fn ns_name(pod: &Pod) -> (String, String) {
    (pod.namespace().unwrap_or_default(), pod.name_any())
}

/// Brings the pod table in line with the API server's pods: admits new pods, stops deleted
/// ones, (re)starts containers, probes readiness, kills processes of pods that are gone, and
/// rewrites the hosts file.
fn reconcile(
    cfg: &KubeletConfig,
    state: &Pods,
    items: &[Pod],
    kubeconfigs: &HashMap<String, PathBuf>,
    addresses: &mut Addresses,
    claims: &Claims,
) -> Updates {
    let mut updates = Updates::default();
    let mut seen = Vec::new();
    let mut pods = state.lock().unwrap();
    for pod in items {
        let Some(spec) = &pod.spec else { continue };
        if spec.node_name.is_none() {
            if pod.metadata.deletion_timestamp.is_none() {
                updates.bind.push(ns_name(pod));
            }
            continue;
        }
        if spec.node_name.as_deref() != Some(NODE) {
            continue;
        }
        let k = key(pod);
        seen.push(k.clone());
        let Some(p) = admit(&mut pods, pod, &k, &cfg.net, addresses) else {
            // Deleted before it ever ran here.
            updates.finalize.push(ns_name(pod));
            continue;
        };
        if pod.metadata.deletion_timestamp.is_some() {
            let grace = spec.termination_grace_period_seconds.unwrap_or(30) as u64;
            if terminate(p, Duration::from_secs(grace)) {
                updates.finalize.push(ns_name(pod));
            }
            continue;
        }
        let has_token = kubeconfigs.contains_key(&k);
        run_container(p, pod, &k, cfg, has_token, claims);
        let init = initializing(pod, p.inits_done);
        p.ready =
            !init && p.child.is_some() && readiness_url(pod, &p.ip).is_none_or(|u| http_ok(&u));
        if let Some(status) = status_update(p, spec, init) {
            let (ns, name) = ns_name(pod);
            updates.statuses.push((ns, name, status));
        }
    }
    // Pods deleted from the API while running here.
    let gone: Vec<String> = pods.keys().filter(|k| !seen.contains(k)).cloned().collect();
    for k in gone {
        if let Some(mut p) = pods.remove(&k) {
            kill_pod(&mut p);
        }
    }
    if let Some(h) = &cfg.hosts_file {
        write_hosts(h, &pods);
    }
    updates
}

/// The table entry of `pod` (key `k`): an entry left by an earlier pod of the same name is
/// replaced, a new pod gets one with its address. `None` for a pod deleted before it ever ran
/// here.
fn admit<'a>(
    pods: &'a mut HashMap<String, RunningPod>,
    pod: &Pod,
    k: &str,
    net: &str,
    addresses: &mut Addresses,
) -> Option<&'a mut RunningPod> {
    let uid = pod.uid().unwrap_or_default();
    if pods.get(k).is_some_and(|p| p.uid != uid) {
        // Same name, new pod: the old one is gone.
        if let Some(mut old) = pods.remove(k) {
            kill_pod(&mut old);
        }
    }
    if !pods.contains_key(k) {
        if pod.metadata.deletion_timestamp.is_some() {
            return None;
        }
        pods.insert(
            k.to_string(),
            RunningPod {
                uid,
                ip: addresses.of(k, net),
                child: None,
                inits_done: 0,
                started: false,
                restarts: 0,
                last_failure: None,
                finished: None,
                next_start: Instant::now(),
                ready: false,
                terminating_since: None,
                reported: None,
                hosts: crate::dns::host_names(pod),
            },
        );
    }
    pods.get_mut(k)
}

/// Whether the pod's process is not running (never started, or exited).
fn exited(p: &mut RunningPod) -> bool {
    match p.child.as_mut() {
        Some(c) => matches!(c.try_wait(), Ok(Some(_))),
        None => true,
    }
}

/// SIGKILLs the pod's process (if any) and reaps it.
fn kill_pod(p: &mut RunningPod) {
    if let Some(mut c) = p.child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// Stops a deleted pod: SIGTERM on the first call, SIGKILL once it has exited or `grace` has
/// passed. True once its process is gone (the pod can be finalized).
fn terminate(p: &mut RunningPod, grace: Duration) -> bool {
    let since = *p.terminating_since.get_or_insert_with(|| {
        if let Some(c) = &p.child {
            crate::signal(c.id(), libc::SIGTERM);
        }
        Instant::now()
    });
    if exited(p) || since.elapsed() > grace {
        kill_pod(p);
        return true;
    }
    false
}

/// Starts the pod's next container unless one is running: init containers one after another
/// (each must exit 0; a failed one is retried), then the first container. Starts at once the
/// first time, after a back-off (2, 4, 8, 8… s) once a container has failed. `has_token`: a
/// service-account kubeconfig was just issued.
fn run_container(
    p: &mut RunningPod,
    pod: &Pod,
    k: &str,
    cfg: &KubeletConfig,
    has_token: bool,
    claims: &Claims,
) {
    if !exited(p) {
        return;
    }
    if p.finished.is_some() {
        return;
    }
    if let Some(mut c) = p.child.take() {
        let exit = c.wait();
        let succeeded = exit.as_ref().is_ok_and(|s| s.success());
        let code = exit.ok().and_then(|s| s.code()).unwrap_or(137);
        let never = pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()) == Some("Never");
        if initializing(pod, p.inits_done) && succeeded {
            p.inits_done += 1;
        } else if never && !initializing(pod, p.inits_done) {
            let message = termination_message(pod, p.inits_done, cfg, k, succeeded);
            p.finished = Some((code, message));
            p.ready = false;
            return;
        } else {
            let message = termination_message(pod, p.inits_done, cfg, k, succeeded);
            p.last_failure = Some((code, message));
            p.restarts += 1;
            let backoff = Duration::from_secs(1 << p.restarts.min(3));
            p.next_start = Instant::now() + backoff;
        }
        p.ready = false;
    }
    if Instant::now() < p.next_start {
        return;
    }
    let Some(container) = next_container(pod, p.inits_done) else {
        return;
    };
    let Some((bin, args, mut env)) = command_for(pod, container, &p.ip, cfg, claims) else {
        return;
    };
    let kc = cfg
        .root
        .join("kubeconfigs")
        .join(format!("{}.yaml", k.replace('/', "_")));
    if has_token || kc.exists() {
        env.insert("KUBECONFIG".into(), kc.display().to_string());
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(cfg.root.join("logs").join(k.replace('/', "_") + ".log"));
    let Ok(log) = log else { return };
    let child = Command::new(&bin)
        .args(&args)
        .envs(&env)
        .stdout(
            log.try_clone()
                .map(Stdio::from)
                .unwrap_or_else(|_| Stdio::null()),
        )
        .stderr(log)
        .spawn();
    match child {
        Ok(c) => {
            p.child = Some(c);
            p.started = true;
        }
        Err(e) => tracing::warn!("cannot start {k}: {e}"),
    }
}

/// The host file that stands for a container's `terminationMessagePath`.
fn termination_file(cfg: &KubeletConfig, k: &str, container: &str) -> PathBuf {
    cfg.root
        .join("termination")
        .join(format!("{}_{container}", k.replace('/', "_")))
}

/// The termination message of the container that just stopped: what it wrote to its
/// `terminationMessagePath`, or, with `terminationMessagePolicy: FallbackToLogsOnError` when it
/// failed and wrote nothing, the last 2 KiB of its log (the kubelet's limit).
fn termination_message(
    pod: &Pod,
    inits_done: usize,
    cfg: &KubeletConfig,
    k: &str,
    succeeded: bool,
) -> String {
    let Some(c) = next_container(pod, inits_done) else {
        return String::new();
    };
    let written = std::fs::read_to_string(termination_file(cfg, k, &c.name)).unwrap_or_default();
    if !written.is_empty() {
        return written;
    }
    if succeeded || c.termination_message_policy.as_deref() != Some("FallbackToLogsOnError") {
        return String::new();
    }
    let log =
        std::fs::read(cfg.root.join("logs").join(k.replace('/', "_") + ".log")).unwrap_or_default();
    String::from_utf8_lossy(&log[log.len().saturating_sub(2048)..]).into_owned()
}

/// The pod's status as a kubelet reports it, with a start time: `Some` only when it differs from
/// what was last reported.
fn status_update(p: &mut RunningPod, spec: &PodSpec, init: bool) -> Option<serde_json::Value> {
    let running = !init && p.child.is_some();
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let cname = spec
        .containers
        .first()
        .map(|c| c.name.clone())
        .unwrap_or_default();
    let ready = if p.ready { "True" } else { "False" };
    if let Some((code, message)) = &p.finished {
        let phase = if *code == 0 { "Succeeded" } else { "Failed" };
        let status = json!({
            "phase": phase,
            "hostIP": "127.0.0.1",
            "podIP": p.ip,
            "podIPs": [{"ip": p.ip}],
            "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Initialized", "status": "True"},
                {"type": "ContainersReady", "status": "False"},
                {"type": "Ready", "status": "False"},
            ],
            "containerStatuses": [{
                "name": cname,
                "image": spec.containers.first().and_then(|c| c.image.clone()).unwrap_or_default(),
                "imageID": "",
                "ready": false,
                "started": false,
                "restartCount": p.restarts,
                "state": {"terminated": {"exitCode": code, "reason": if *code == 0 { "Completed" } else { "Error" }, "message": message}},
            }],
        });
        if p.reported.as_ref() == Some(&status) {
            return None;
        }
        p.reported = Some(status.clone());
        return Some(status);
    }
    let state = if running {
        json!({"running": {}})
    } else if init {
        json!({"waiting": {"reason": "PodInitializing"}})
    } else {
        json!({"waiting": {"reason": "CrashLoopBackOff"}})
    };
    let status = json!({
        // Pending until a container has started (e.g. its claim is missing: the StatefulSet
        // controller makes missing claims of pending pods).
        "phase": if init || !p.started { "Pending" } else { "Running" },
        "hostIP": "127.0.0.1",
        "podIP": p.ip,
        "podIPs": [{"ip": p.ip}],
        "conditions": [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Initialized", "status": if init { "False" } else { "True" }},
            {"type": "ContainersReady", "status": ready},
            {"type": "Ready", "status": ready},
        ],
        "containerStatuses": [{
            "name": cname,
            "image": spec.containers.first().and_then(|c| c.image.clone()).unwrap_or_default(),
            "imageID": "",
            "ready": p.ready,
            "started": running,
            "restartCount": p.restarts,
            "state": state,
            "lastState": p.last_failure.as_ref().map_or(json!({}), |(code, message)| json!({
                "terminated": {"exitCode": code, "reason": "Error", "message": message},
            })),
        }],
    });
    if p.reported.as_ref() == Some(&status) {
        return None;
    }
    p.reported = Some(status.clone());
    let mut with_time = status;
    with_time["startTime"] = json!(now);
    Some(with_time)
}

/// Sends one pass's bindings, status patches and final deletions, in that order.
async fn send_updates(client: &kube::Client, state: &Pods, updates: Updates) {
    for (ns, name) in updates.bind {
        bind(client, &ns, &name).await;
    }
    for (ns, name, status) in updates.statuses {
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let _ = pods
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(&json!({ "status": status })),
            )
            .await;
    }
    for (ns, name) in updates.finalize {
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let _ = pods
            .delete(
                &name,
                &DeleteParams {
                    grace_period_seconds: Some(0),
                    ..Default::default()
                },
            )
            .await;
        state.lock().unwrap().remove(&format!("{ns}/{name}"));
    }
}

/// Binds a pending pod to this node (as the scheduler would).
async fn bind(client: &kube::Client, ns: &str, name: &str) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let binding = json!({
        "apiVersion": "v1", "kind": "Binding",
        "metadata": {"name": name},
        "target": {"apiVersion": "v1", "kind": "Node", "name": NODE},
    });
    let r: Result<serde_json::Value, _> = pods
        .create_subresource("binding", name, &PostParams::default(), &binding)
        .await;
    if let Err(e) = r {
        tracing::debug!("bind {ns}/{name}: {e}");
    }
}

/// Volumes of deleted PVCs go with them.
fn remove_deleted_volumes(cfg: &KubeletConfig, pvcs: &[PersistentVolumeClaim]) {
    let live: Vec<String> = pvcs
        .iter()
        .map(|c| {
            format!(
                "{}/{}-{}",
                c.namespace().unwrap_or_default(),
                c.name_any(),
                c.uid().unwrap_or_default()
            )
        })
        .collect();
    if let Ok(nss) = std::fs::read_dir(cfg.root.join("pvc")) {
        for ns in nss.flatten() {
            if let Ok(claims) = std::fs::read_dir(ns.path()) {
                for c in claims.flatten() {
                    let k = format!(
                        "{}/{}",
                        ns.file_name().to_string_lossy(),
                        c.file_name().to_string_lossy()
                    );
                    if !live.contains(&k) {
                        let _ = std::fs::remove_dir_all(c.path());
                    }
                }
            }
        }
    }
}
