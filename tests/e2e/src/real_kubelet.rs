//! The real kubelet (built from the pinned Kubernetes module) on the e2e's node: it registers
//! the Node with the API server and runs the pods the scheduler places there as containers,
//! through containerd and runc (started by `scripts/e2e-node.sh`, in the suite's own network
//! namespace). Faults are dealt to the containers through containerd, as a node's own tools
//! would: a signal to a container's process, a kubelet restart.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::Api;

/// Name of the Node the kubelet registers.
pub const NODE: &str = "e2e-node";

/// Where the kubelet runs and what it talks to.
pub struct RealKubeletConfig {
    /// The kubelet binary.
    pub bin: PathBuf,
    /// Kubeconfig it reaches the API server with.
    pub kubeconfig: PathBuf,
    /// containerd's socket.
    pub containerd: PathBuf,
    /// The node's address (also the pods' cluster DNS server).
    pub node_ip: String,
    /// Its state: root dir, pod logs (`logs/<ns>_<pod>_<uid>/<container>/N.log`), its own log.
    pub root: PathBuf,
    /// First of the two ports it listens on (API, healthz).
    pub port: u16,
}

/// A running kubelet; stopped (by PID) on drop. The containers it started stay with containerd,
/// which `scripts/e2e-node.sh` stops.
pub struct RealKubelet {
    cfg: RealKubeletConfig,
    child: Option<Child>,
    client: kube::Client,
}

impl RealKubelet {
    /// Writes its configuration, starts it and waits (60 s at most) until its Node is Ready.
    pub async fn start(client: kube::Client, cfg: RealKubeletConfig) -> anyhow::Result<Self> {
        std::fs::create_dir_all(cfg.root.join("logs"))?;
        let config = format!(
            "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
             # This machine runs cgroup v1; containerd 1.6 predates the CRI RuntimeConfig call.\n\
             failCgroupV1: false\ncgroupDriver: cgroupfs\n\
             containerRuntimeEndpoint: unix://{sock}\n\
             authentication: {{anonymous: {{enabled: true}}, webhook: {{enabled: false}}}}\n\
             authorization: {{mode: AlwaysAllow}}\n\
             failSwapOn: false\nreadOnlyPort: 0\n\
             address: {ip}\nport: {port}\nhealthzBindAddress: 127.0.0.1\nhealthzPort: {hport}\n\
             clusterDNS: [{ip}]\nclusterDomain: cluster.local\n\
             podLogsDir: {logs}\n\
             enforceNodeAllocatable: []\n\
             # A shared CI disk may be fuller than a node's defaults allow (10% free): evict\n\
             # only when it is truly full, and never collect the imported images (no registry\n\
             # to pull them back from).\n\
             evictionHard: {{nodefs.available: 1%, imagefs.available: 1%, memory.available: 100Mi}}\n\
             imageGCHighThresholdPercent: 100\nimageGCLowThresholdPercent: 99\n\
             # hostPath volumes only: nothing to attach.\n\
             enableControllerAttachDetach: false\n\
             # Status and probes promptly, as the suite's waits expect of a healthy node.\n\
             nodeStatusUpdateFrequency: 5s\nsyncFrequency: 10s\n\
             # Secrets and ConfigMaps re-read from the API server as the operator rotates them.\n\
             configMapAndSecretChangeDetectionStrategy: Watch\n",
            sock = cfg.containerd.display(),
            port = cfg.port,
            hport = cfg.port + 1,
            ip = cfg.node_ip,
            logs = cfg.root.join("logs").display(),
        );
        std::fs::write(cfg.root.join("kubelet.yaml"), config)?;
        let mut k = RealKubelet {
            cfg,
            child: None,
            client,
        };
        k.spawn()?;
        k.wait_node_ready(Duration::from_secs(60)).await?;
        Ok(k)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let c = &self.cfg;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(c.root.join("kubelet.log"))?;
        let child = Command::new(&c.bin)
            .arg(format!(
                "--config={}",
                c.root.join("kubelet.yaml").display()
            ))
            .arg(format!("--kubeconfig={}", c.kubeconfig.display()))
            .arg(format!("--root-dir={}", c.root.join("state").display()))
            .arg(format!("--cert-dir={}", c.root.join("pki").display()))
            .arg(format!("--hostname-override={NODE}"))
            .arg(format!("--node-ip={}", c.node_ip))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", c.bin.display()))?;
        self.child = Some(child);
        Ok(())
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            crate::signal(c.id(), libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the kubelet and starts it again, as a node-level restart does (the containers keep
    /// running); returns once its Node is Ready again.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.spawn()?;
        self.wait_node_ready(Duration::from_secs(60)).await
    }

    async fn wait_node_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(n) = nodes.get_opt(NODE).await.ok().flatten() {
                let ready = n
                    .status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True");
                if ready {
                    return Ok(());
                }
            }
            if let Some(Ok(Some(st))) = self.child.as_mut().map(Child::try_wait) {
                bail!("the kubelet exited ({st}):\n{}", self.log_tail());
            }
            if Instant::now() > deadline {
                bail!("node not Ready in {timeout:?}:\n{}", self.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// The last error lines of the kubelet's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.cfg.root.join("kubelet.log")).unwrap_or_default();
        let errors: Vec<&str> = text.lines().filter(|l| l.starts_with('E')).collect();
        errors[errors.len().saturating_sub(30)..].join("\n")
    }

    /// Where pod logs are kept.
    pub fn logs_dir(&self) -> PathBuf {
        self.cfg.root.join("logs")
    }

    fn ctr(&self) -> Command {
        let mut c = Command::new("ctr");
        c.arg("--address")
            .arg(&self.cfg.containerd)
            .args(["-n", "k8s.io"]);
        c
    }

    /// The containerd ID of the pod's first container, as its status reports it.
    async fn container_id(&self, namespace: &str, name: &str) -> Option<String> {
        let pod = self.pod(namespace, name).await?;
        let status = pod.status?.container_statuses?;
        let id = status.first()?.container_id.clone()?;
        id.strip_prefix("containerd://").map(str::to_string)
    }

    /// The containerd IDs of the pod's containers (`None` when it has none yet): the same IDs
    /// after a kubelet restart mean the containers were adopted, not replaced.
    pub async fn container_ids(&self, namespace: &str, name: &str) -> Option<Vec<String>> {
        let status = self
            .pod(namespace, name)
            .await?
            .status?
            .container_statuses?;
        Some(status.into_iter().filter_map(|c| c.container_id).collect())
    }

    /// The host PID of the pod's first container's process, from containerd.
    async fn container_pid(&self, namespace: &str, name: &str) -> Option<u32> {
        let id = self.container_id(namespace, name).await?;
        let out = self.ctr().args(["tasks", "ls"]).output().ok()?;
        String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
            let mut f = l.split_whitespace();
            (f.next()? == id).then(|| f.next()?.parse().ok())?
        })
    }

    /// Sends `signal` (`KILL`, `STOP`, `CONT`, …) to the pod's container process through
    /// containerd. False when the pod has no running container.
    pub async fn signal(&self, namespace: &str, name: &str, signal: &str) -> bool {
        let Some(id) = self.container_id(namespace, name).await else {
            return false;
        };
        self.ctr()
            .args(["tasks", "kill", "--signal", &format!("SIG{signal}"), &id])
            .status()
            .is_ok_and(|s| s.success())
    }

    async fn pod(&self, namespace: &str, name: &str) -> Option<Pod> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        pods.get_opt(name).await.ok().flatten()
    }

    /// True when the pod's Ready condition is True and it is not being deleted (what a Service
    /// routes to).
    pub async fn ready(&self, namespace: &str, name: &str) -> bool {
        self.pod(namespace, name).await.is_some_and(|p| {
            p.metadata.deletion_timestamp.is_none()
                && p.status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
        })
    }

    /// The pod's address, as its status reports it.
    pub async fn pod_ip(&self, namespace: &str, name: &str) -> Option<String> {
        self.pod(namespace, name).await?.status?.pod_ip
    }

    /// The command line the pod's container process runs (from /proc, through containerd's PID).
    pub async fn command_line(&self, namespace: &str, name: &str) -> Option<Vec<String>> {
        let pid = self.container_pid(namespace, name).await?;
        crate::command_line_of(pid)
    }
}

impl Drop for RealKubelet {
    fn drop(&mut self) {
        self.stop();
    }
}
