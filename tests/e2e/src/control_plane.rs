//! A real Kubernetes control plane on loopback: its store, kube-apiserver and
//! kube-controller-manager (StatefulSet, garbage-collector, PVC-protection, Deployment/ReplicaSet
//! and disruption controllers) with freshly generated certificates, service-account keys and a
//! kubeconfig. The store is a three-member MetaStore cluster (so every run is also a test of
//! MetaStore under the most demanding etcd client), or etcd with `METASTORE_E2E_STORE=etcd`.
//! Binaries come from `scripts/k8s-binaries.sh` (built once from the pinned Kubernetes release,
//! cached by version).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// What the API server stores its objects in.
#[derive(Debug, Clone)]
pub enum Store {
    /// Three members of this `metastore-node` binary.
    MetaStore(PathBuf),
    /// The etcd of the Kubernetes binaries directory.
    Etcd,
}

impl Store {
    /// MetaStore from `node_bin`, unless `METASTORE_E2E_STORE=etcd` asks for etcd.
    pub fn from_env(node_bin: PathBuf) -> Store {
        match std::env::var("METASTORE_E2E_STORE").as_deref() {
            Ok("etcd") => Store::Etcd,
            _ => Store::MetaStore(node_bin),
        }
    }
}

/// Who runs the pods, which decides what the control plane must do for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kubelet {
    /// The real kubelet: the scheduler places pods, and pods get service-account tokens
    /// (admission) and the cluster's CA (`kube-root-ca.crt`, from the controller manager).
    Real,
    /// The test kubelet: it binds pods itself and hands out kubeconfigs of its own.
    Test,
}

impl Kubelet {
    /// `METASTORE_E2E_KUBELET` (`real` unless it says `test`).
    pub fn from_env() -> Kubelet {
        match std::env::var("METASTORE_E2E_KUBELET").as_deref() {
            Ok("test") => Kubelet::Test,
            _ => Kubelet::Real,
        }
    }
}

/// Members of the MetaStore cluster the control plane stores itself in.
const STORE_MEMBERS: u16 = 3;

/// Ports a control plane takes from its base port upwards.
pub const PORTS: u16 = 20;

/// A running control plane; stopped (by PID) on drop.
pub struct ControlPlane {
    /// Working directory (certificates, etcd data, logs).
    pub dir: tempfile::TempDir,
    /// Admin kubeconfig.
    pub kubeconfig: PathBuf,
    /// https URL of the API server.
    pub server: String,
    /// What it stores its objects in.
    pub store: Store,
    /// The store's client URLs.
    pub store_endpoints: Vec<String>,
    procs: Vec<(String, Child)>,
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

fn openssl(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    run(Command::new("openssl").current_dir(dir).args(args))
}

/// `{name}.key` and `{name}.crt` for `subject`, signed by the CA with the extensions in `ext`.
fn signed_cert(dir: &Path, name: &str, subject: &str, ext: &str) -> anyhow::Result<()> {
    let (key, csr, crt) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.crt"),
    );
    openssl(dir, &["genrsa", "-out", &key, "2048"])?;
    openssl(
        dir,
        &["req", "-new", "-key", &key, "-subj", subject, "-out", &csr],
    )?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            ext,
            "-out",
            &crt,
        ],
    )
}

/// CA, API server serving cert (127.0.0.1/localhost), admin client cert, service-account keys.
fn certificates(dir: &Path) -> anyhow::Result<()> {
    openssl(dir, &["genrsa", "-out", "ca.key", "2048"])?;
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-new",
            "-nodes",
            "-key",
            "ca.key",
            "-subj",
            "/CN=metastore-e2e-ca",
            "-days",
            "2",
            "-out",
            "ca.crt",
        ],
    )?;
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,\
         DNS:kubernetes.default.svc\n\
         extendedKeyUsage=serverAuth\n",
    )?;
    signed_cert(dir, "server", "/CN=kube-apiserver", "server.ext")?;
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n")?;
    signed_cert(dir, "admin", "/CN=admin/O=system:masters", "client.ext")?;
    openssl(dir, &["genrsa", "-out", "sa.key", "2048"])?;
    openssl(dir, &["rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub"])?;
    Ok(())
}

/// The controllers the controller manager runs: what the suite's objects need (StatefulSets,
/// Jobs, Deployments, PodDisruptionBudgets, garbage collection, namespaces), and for real pods the
/// default service accounts, the root CA ConfigMaps, the EndpointSlices of Services and the
/// Node lifecycle.
fn controllers(kubelet: Kubelet) -> String {
    let mut c = vec![
        "statefulset-controller",
        "job-controller",
        "garbage-collector-controller",
        "persistentvolumeclaim-protection-controller",
        "deployment-controller",
        "replicaset-controller",
        "disruption-controller",
        "namespace-controller",
    ];
    if kubelet == Kubelet::Real {
        c.extend([
            "serviceaccount-controller",
            "root-ca-certificate-publisher-controller",
            "endpointslice-controller",
            // Lifts the not-ready taint the kubelet registers its Node with, once it is Ready.
            "node-lifecycle-controller",
        ]);
    }
    c.join(",")
}

fn kubeconfig(dir: &Path, server: &str) -> String {
    let p = |f: &str| dir.join(f).display().to_string();
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: e2e\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\n\
         users:\n- name: admin\n  user:\n    client-certificate: {crt}\n    client-key: {key}\n\
         contexts:\n- name: e2e\n  context:\n    cluster: e2e\n    user: admin\n    namespace: default\ncurrent-context: e2e\n",
        ca = p("ca.crt"),
        crt = p("admin.crt"),
        key = p("admin.key"),
    )
}

impl ControlPlane {
    /// Starts the store, the API server and the controller manager from `bin`, on [`PORTS`]
    /// ports from `base_port` upwards, and waits until the API server is ready.
    pub fn start(
        bin: &Path,
        base_port: u16,
        store: Store,
        kubelet: Kubelet,
    ) -> anyhow::Result<ControlPlane> {
        let dir = tempfile::tempdir()?;
        let d = dir.path().to_path_buf();
        certificates(&d)?;
        let (etcd_client, etcd_peer, api, cm) =
            (base_port, base_port + 1, base_port + 2, base_port + 3);
        let server = format!("https://127.0.0.1:{api}");
        let kc = d.join("kubeconfig");
        std::fs::write(&kc, kubeconfig(&d, &server))?;
        let mut cp = ControlPlane {
            dir,
            kubeconfig: kc.clone(),
            server: server.clone(),
            store: store.clone(),
            store_endpoints: Vec::new(),
            procs: Vec::new(),
        };
        match &store {
            Store::Etcd => {
                let etcd_url = format!("http://127.0.0.1:{etcd_client}");
                cp.spawn(
                    "etcd",
                    bin.join("etcd"),
                    vec![
                        "--name=e2e".into(),
                        format!("--data-dir={}", d.join("etcd").display()),
                        format!("--listen-client-urls={etcd_url}"),
                        format!("--advertise-client-urls={etcd_url}"),
                        format!("--listen-peer-urls=http://127.0.0.1:{etcd_peer}"),
                        format!("--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}"),
                        format!("--initial-cluster=e2e=http://127.0.0.1:{etcd_peer}"),
                        "--unsafe-no-fsync".into(),
                    ],
                )?;
                cp.store_endpoints.push(etcd_url);
            }
            Store::MetaStore(node) => cp.start_metastore(node, base_port + 8)?,
        }
        let p = |f: &str| d.join(f).display().to_string();
        cp.spawn(
            "kube-apiserver",
            bin.join("kube-apiserver"),
            vec![
                format!("--etcd-servers={}", cp.store_endpoints.join(",")),
                "--bind-address=127.0.0.1".into(),
                "--advertise-address=127.0.0.1".into(),
                // A loopback advertise address is only allowed without the endpoint reconciler.
                "--endpoint-reconciler-type=none".into(),
                format!("--secure-port={api}"),
                format!("--tls-cert-file={}", p("server.crt")),
                format!("--tls-private-key-file={}", p("server.key")),
                format!("--client-ca-file={}", p("ca.crt")),
                format!("--service-account-key-file={}", p("sa.pub")),
                format!("--service-account-signing-key-file={}", p("sa.key")),
                "--service-account-issuer=https://kubernetes.default.svc".into(),
                "--service-cluster-ip-range=10.0.0.0/24".into(),
                "--authorization-mode=RBAC".into(),
                "--allow-privileged=true".into(),
                format!("--cert-dir={}", p("apiserver-certs")),
            ]
            .into_iter()
            .chain(match kubelet {
                // Pods get a projected service-account token, as every cluster gives them; the
                // kubelet (logs, exec) is reached at its node's address, not a DNS name.
                Kubelet::Real => vec!["--kubelet-preferred-address-types=InternalIP".into()],
                // The test kubelet has no use for tokens in pods (it writes kubeconfigs).
                Kubelet::Test => vec!["--disable-admission-plugins=ServiceAccount".into()],
            })
            .collect(),
        )?;
        cp.wait_ready(Duration::from_secs(90))?;
        cp.spawn(
            "kube-controller-manager",
            bin.join("kube-controller-manager"),
            vec![
                format!("--kubeconfig={}", kc.display()),
                format!("--authentication-kubeconfig={}", kc.display()),
                format!("--authorization-kubeconfig={}", kc.display()),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={cm}"),
                "--leader-elect=false".into(),
                format!("--controllers={}", controllers(kubelet)),
                "--concurrent-statefulset-syncs=5".into(),
                // Published to every namespace as kube-root-ca.crt, which pods' projected
                // service-account volumes carry as their ca.crt.
                format!("--root-ca-file={}", p("ca.crt")),
            ],
        )?;
        if kubelet == Kubelet::Real {
            cp.spawn(
                "kube-scheduler",
                bin.join("kube-scheduler"),
                vec![
                    format!("--kubeconfig={}", kc.display()),
                    format!("--authentication-kubeconfig={}", kc.display()),
                    format!("--authorization-kubeconfig={}", kc.display()),
                    "--bind-address=127.0.0.1".into(),
                    format!("--secure-port={}", base_port + 4),
                    "--leader-elect=false".into(),
                ],
            )?;
        }
        Ok(cp)
    }

    /// Starts the store's MetaStore members (client, peer and metrics ports from `port` up,
    /// three per member); the API server waits for them as it waits for etcd.
    fn start_metastore(&mut self, node: &Path, port: u16) -> anyhow::Result<()> {
        let url = |i: u16, k: u16| format!("http://127.0.0.1:{}", port + 3 * i + k);
        let cluster = (0..STORE_MEMBERS)
            .map(|i| format!("store-{i}={}", url(i, 1)))
            .collect::<Vec<_>>()
            .join(",");
        for i in 0..STORE_MEMBERS {
            let data = self.dir.path().join(format!("store-{i}"));
            self.spawn(
                &format!("store-{i}"),
                node.to_path_buf(),
                vec![
                    format!("--name=store-{i}"),
                    format!("--data-dir={}", data.display()),
                    format!("--listen-client-urls={}", url(i, 0)),
                    format!("--advertise-client-urls={}", url(i, 0)),
                    format!("--listen-peer-urls={}", url(i, 1)),
                    format!("--initial-advertise-peer-urls={}", url(i, 1)),
                    format!("--listen-metrics-urls={}", url(i, 2)),
                    format!("--initial-cluster={cluster}"),
                    "--log-level=warn".into(),
                ],
            )?;
            self.store_endpoints.push(url(i, 0));
        }
        Ok(())
    }

    /// The whole log of a component (`kube-apiserver`, `store-0`, …).
    pub fn full_log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }

    fn spawn(&mut self, name: &str, bin: PathBuf, args: Vec<String>) -> anyhow::Result<()> {
        let log = std::fs::File::create(self.dir.path().join(format!("{name}.log")))?;
        let child = Command::new(&bin)
            .args(&args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        self.procs.push((name.to_string(), child));
        Ok(())
    }

    fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let d = self.dir.path();
        loop {
            let out = Command::new("curl")
                .args(["-sf", "--cacert"])
                .arg(d.join("ca.crt"))
                .arg("--cert")
                .arg(d.join("admin.crt"))
                .arg("--key")
                .arg(d.join("admin.key"))
                .arg(format!("{}/readyz", self.server))
                .output();
            if out.is_ok_and(|o| o.status.success()) {
                return Ok(());
            }
            let mut dead = None;
            for (name, c) in &mut self.procs {
                if let Ok(Some(st)) = c.try_wait() {
                    dead = Some(format!("{name} exited ({st})"));
                    break;
                }
            }
            if let Some(d) = dead {
                let name = d.split(' ').next().unwrap_or_default().to_string();
                bail!("{d}:\n{}", self.log(&name));
            }
            if Instant::now() > deadline {
                bail!(
                    "API server not ready in {timeout:?}:\n{}",
                    self.log("kube-apiserver")
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The last lines of a component's log.
    pub fn log(&self, name: &str) -> String {
        let text = std::fs::read_to_string(self.dir.path().join(format!("{name}.log")))
            .unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// A kube client with admin rights.
    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        let kc = kube::config::Kubeconfig::read_from(&self.kubeconfig)?;
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
        Ok(kube::Client::try_from(cfg)?)
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        // Stop in reverse order: controller manager, API server, the store.
        for (_, mut c) in self.procs.drain(..).rev() {
            crate::signal(c.id(), libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
