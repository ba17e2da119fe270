//! The users' path on a real Kubernetes API server: `kubectl apply` the CRD and a 1-member
//! MetaStore, wait until it is Available, use it with etcdctl, then — under continuous client
//! load — `kubectl patch` it 1→3→5→3→1 and `kubectl scale` it once. After every step the resource
//! must report Available with the right members and the members must serve lease reads; the whole
//! history is checked for linearizability and every acknowledged write must survive. The
//! MetaStore runs with operator-managed TLS (`tls: {mode: Managed}`): clients use the
//! application certificate Secret the operator makes, plain http is refused, and admin calls
//! are the operator's alone. Under the load, an on-demand `MetaStoreBackup` streams a snapshot
//! into a real SeaweedFS and reaches Succeeded; a schedule keeps exactly its retention. Then the
//! MetaStore and its volume are deleted and a new one restored from that backup
//! (`spec.bootstrap.restore`) grows to three members that all serve exactly the backed-up keys
//! and HashKV. Later steps: self-healing of a lost volume and a SIGKILLed leader container
//! restarted by the kubelet, disaster recovery, a version upgrade, settings, auth. The control
//! plane itself stores its objects in a three-member MetaStore cluster
//! (`METASTORE_E2E_STORE=etcd` for etcd instead), and must serve consistent lists from its
//! watch cache, which it does only with etcd ≥ 3.5.13's progress notifications.
//!
//! Run with `make e2e` (it builds the control plane once and sets up the hosts file).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kube::api::Api;
use metastore_e2e::control_plane::Kubelet as Mode;
use metastore_e2e::control_plane::{self, ControlPlane};
use metastore_e2e::kubelet::{Kubelet, KubeletConfig};
use metastore_e2e::real_kubelet::{RealKubelet, RealKubeletConfig};
use metastore_e2e::runner::Runner;
use metastore_operator::crd::MetaStore;
use metastore_testkit::checkers::register;
use metastore_testkit::load;

const NS: &str = "default";
const NAME: &str = "demo";

fn repo() -> PathBuf {
    // At run time: a binary reused from another checkout must use this one.
    Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
        .join("../..")
}

fn kubectl(cp: &ControlPlane, args: &[&str], stdin: Option<&str>) -> (bool, String) {
    use std::io::Write;
    let mut c = Command::new("kubectl")
        .arg(format!("--kubeconfig={}", cp.kubeconfig.display()))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl");
    if let Some(s) = stdin {
        let _ = c.stdin.take().unwrap().write_all(s.as_bytes());
    }
    let out = c.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn client_url(ordinal: i32) -> String {
    format!("https://{NAME}-{ordinal}.{NAME}-peer.{NS}.svc:2379")
}

/// The application certificate the operator made (`<name>-tls-client`), written to `dir` as
/// `ca.crt`, `tls.crt` and `tls.key`; returns etcd-client TLS options for it.
async fn client_certificate(client: &kube::Client, dir: &Path) -> etcd_client::TlsOptions {
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), NS);
    let s = secrets
        .get(&format!("{NAME}-tls-client"))
        .await
        .expect("the application certificate Secret");
    let data = s.data.expect("Secret data");
    for k in ["ca.crt", "tls.crt", "tls.key"] {
        std::fs::write(dir.join(k), &data[k].0).unwrap();
    }
    etcd_client::TlsOptions::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(&data["ca.crt"].0))
        .identity(tonic::transport::Identity::from_pem(
            &data["tls.crt"].0,
            &data["tls.key"].0,
        ))
}

/// TLS options for the certificate in Secret `name` (`ca.crt`, `tls.crt`, `tls.key`).
async fn certificate_options(client: &kube::Client, name: &str) -> etcd_client::ConnectOptions {
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), NS);
    let data = secrets
        .get(name)
        .await
        .expect("certificate Secret")
        .data
        .unwrap();
    etcd_client::ConnectOptions::new().with_tls(
        etcd_client::TlsOptions::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&data["ca.crt"].0))
            .identity(tonic::transport::Identity::from_pem(
                &data["tls.crt"].0,
                &data["tls.key"].0,
            )),
    )
}

/// Every key at `rev` (`None`: now) with value, versions and revisions.
async fn kvs_at(
    c: &mut etcd_client::Client,
    rev: Option<i64>,
) -> Vec<(Vec<u8>, Vec<u8>, i64, i64, i64)> {
    let mut o = etcd_client::GetOptions::new().with_all_keys();
    if let Some(r) = rev {
        o = o.with_revision(r);
    }
    c.get("", Some(o))
        .await
        .unwrap()
        .kvs()
        .iter()
        .map(|kv| {
            (
                kv.key().to_vec(),
                kv.value().to_vec(),
                kv.create_revision(),
                kv.mod_revision(),
                kv.version(),
            )
        })
        .collect()
}

/// `kubectl apply`s a 3-member MetaStore under managed TLS that starts from backup `backup`.
fn apply_restoring(cp: &ControlPlane, backup: &str) {
    let (ok, out) = kubectl(
        cp,
        &["apply", "-f", "-"],
        Some(&format!(
            "apiVersion: metastore.io/v1alpha1\nkind: MetaStore\nmetadata: {{name: {NAME}}}\n\
             spec: {{replicas: 3, heartbeatIntervalMs: 50, electionTimeoutMs: 500, tls: {{mode: Managed}},\n\
             bootstrap: {{restore: {{backup: {backup}}}}}}}\n"
        )),
    );
    assert!(ok, "{out}");
}

/// What the pods, claims and member logs look like, for a failure message. The pods' whole logs
/// are kept in `/tmp/metastore-e2e-logs` (the control plane's directory goes with the test).
fn diagnose(cp: &ControlPlane, logs: &Path) -> String {
    keep_logs(logs);
    let (_, objects) = kubectl(cp, &["get", "pods,pvc,sts", "-o", "wide"], None);
    let (_, events) = kubectl(cp, &["get", "events", "--sort-by=.lastTimestamp"], None);
    let events: Vec<&str> = events.lines().collect();
    let mut out = format!(
        "--- objects\n{objects}\n--- events\n{}\n",
        events[events.len().saturating_sub(25)..].join("\n")
    );
    // What the operator did, from its events on the MetaStore (the steps it took and refused).
    let (_, ms_events) = kubectl(
        cp,
        &[
            "get",
            "events",
            "--sort-by=.lastTimestamp",
            "--field-selector=involvedObject.kind=MetaStore",
        ],
        None,
    );
    let ms_events: Vec<&str> = ms_events.lines().collect();
    out.push_str(&format!(
        "--- MetaStore events\n{}\n",
        ms_events[ms_events.len().saturating_sub(20)..].join("\n")
    ));
    for k in 0..3 {
        out.push_str(&last_lines(logs, &format!("{NS}_{NAME}-{k}"), 15));
        // Through the API server as well: the kubelet's view of the current container.
        let (_, current) = kubectl(cp, &["logs", "--tail=15", &format!("{NAME}-{k}")], None);
        out.push_str(&format!("--- kubectl logs {NAME}-{k}\n{current}\n"));
    }
    out
}

/// Copies the pods' logs to `/tmp/metastore-e2e-logs`, replacing an earlier run's.
fn keep_logs(logs: &Path) {
    let keep = Path::new("/tmp/metastore-e2e-logs");
    let _ = std::fs::remove_dir_all(keep);
    let _ = Command::new("cp").arg("-r").arg(logs).arg(keep).status();
}

/// Waits until backup `name` succeeds; its status.
async fn wait_backup(
    backups: &Api<metastore_operator::backup_crd::MetaStoreBackup>,
    name: &str,
    op_log: &Path,
) -> metastore_operator::backup_crd::MetaStoreBackupStatus {
    use metastore_operator::backup_crd::BackupPhase;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let st = backups.get(name).await.unwrap().status.unwrap_or_default();
        match st.phase {
            Some(BackupPhase::Succeeded) => return st,
            Some(BackupPhase::Failed) => panic!("backup {name} failed: {:?}", st.message),
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "backup {name} not done: {st:?}\n{}",
            tail(op_log)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Waits until the MetaStore is Degraded for `reason`; the condition's message.
async fn wait_degraded(
    api: &Api<MetaStore>,
    reason: &str,
    cp: &ControlPlane,
    op_log: &Path,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(150);
    loop {
        let st = api.get(NAME).await.unwrap().status.unwrap_or_default();
        let found = st
            .conditions
            .iter()
            .find(|c| c.type_ == "Degraded" && c.status == "True" && c.reason == reason);
        if let Some(c) = found {
            return c.message.clone();
        }
        assert!(
            Instant::now() < deadline,
            "not Degraded/{reason}: {st:#?}\n{}\n{}",
            tail(op_log),
            diagnose(cp, op_log)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Waits until `kubectl get <what> -o name` lists nothing starting with `prefix`.
async fn wait_gone(cp: &ControlPlane, what: &str, prefix: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (ok, out) = kubectl(cp, &["get", what, "-o", "name"], None);
        if ok && !out.lines().any(|l| l.starts_with(prefix)) {
            return;
        }
        assert!(Instant::now() < deadline, "{what} left: {out}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Waits until the resource is Running with `n` voters, all healthy, and Available.
async fn wait_running(api: &Api<MetaStore>, n: i32, cp: &ControlPlane, op_log: &Path) -> MetaStore {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if let Ok(ms) = api.get(NAME).await {
            if let Some(s) = &ms.status {
                let available = s
                    .conditions
                    .iter()
                    .any(|c| c.type_ == "Available" && c.status == "True");
                if s.phase.as_deref() == Some("Running")
                    && available
                    && s.replicas == n
                    && s.ready_replicas == n
                    && s.members.len() == n as usize
                    && s.observed_generation == ms.metadata.generation
                {
                    return ms;
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "not Running with {n} members: {:#?}\n--- operator\n{}\n--- controller-manager\n{}\n{}",
                    ms.status,
                    tail(op_log),
                    cp.log("kube-controller-manager"),
                    diagnose(cp, op_log)
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The log files under `logs` of the pods whose names start with `prefix` (`<ns>_<pod>`): the
/// test kubelet keeps `<ns>_<pod>.log`, the real one `<ns>_<pod>_<uid>/<container>/<n>.log`.
fn log_files(logs: &Path, prefix: &str) -> Vec<PathBuf> {
    fn entries(dir: &Path) -> Vec<PathBuf> {
        let mut e: Vec<PathBuf> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect();
        e.sort();
        e
    }
    fn walk(p: &Path, out: &mut Vec<PathBuf>) {
        if p.is_dir() {
            for e in entries(p) {
                walk(&e, out);
            }
        } else {
            out.push(p.to_path_buf());
        }
    }
    let mut out = Vec::new();
    for e in entries(logs) {
        let name = e
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        if name == format!("{prefix}.log") || name.starts_with(&format!("{prefix}_")) {
            walk(&e, &mut out);
        }
    }
    out
}

/// The last `n` lines of the logs of the pods whose names start with `prefix`.
fn last_lines(logs: &Path, prefix: &str, n: usize) -> String {
    let mut out = String::new();
    for f in log_files(logs, prefix) {
        let t = std::fs::read_to_string(&f).unwrap_or_default();
        let l: Vec<&str> = t.lines().collect();
        out.push_str(&format!(
            "--- {}\n{}\n",
            f.strip_prefix(logs).unwrap_or(&f).display(),
            l[l.len().saturating_sub(n)..].join("\n")
        ));
    }
    out
}

/// The last lines of the operator pods' logs.
fn tail(logs: &Path) -> String {
    let mut out = String::new();
    for e in std::fs::read_dir(logs).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if let Some(pod) = name.strip_prefix("metastore-system_") {
            let pod = pod
                .trim_end_matches(".log")
                .split('_')
                .next()
                .unwrap_or_default();
            out.push_str(&last_lines(logs, &format!("metastore-system_{pod}"), 40));
        }
    }
    out
}

/// Every line of the operator pods' logs that contains `what`.
fn operator_lines(logs: &Path, what: &str) -> String {
    let mut out = String::new();
    for f in log_files(logs, "metastore-system") {
        let t = std::fs::read_to_string(&f).unwrap_or_default();
        for l in t.lines().filter(|l| l.contains(what)) {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

fn metric(ip: &str, name: &str) -> Option<f64> {
    let out = Command::new("curl")
        .args(["-sf", &format!("http://{ip}:2381/metrics")])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// The leader (from status) serves lease reads and has the lease policy enabled.
async fn assert_lease_reads(api: &Api<MetaStore>, kubelet: &Runner) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ms = api.get(NAME).await.unwrap();
        let leader = ms.status.and_then(|s| s.leader).unwrap_or_default();
        if let Some(ip) = kubelet.pod_ip(NS, &leader).await {
            let key = "metastore_read_total{path=\"lease\"}";
            let before = metric(&ip, key).unwrap_or(0.0);
            tokio::time::sleep(Duration::from_millis(700)).await;
            let after = metric(&ip, key).unwrap_or(0.0);
            if after > before && metric(&ip, "metastore_lease_policy_enabled") == Some(1.0) {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "leader {leader} serves no lease reads"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// A real Prometheus with Kubernetes service discovery (built from its Go module by
/// `scripts/prometheus.sh`; Debian's build leaves discovery out) scraping what the chart's
/// ServiceMonitor selects, found through the API server, and evaluating the chart's alerting
/// rules.
struct Prometheus {
    child: std::process::Child,
    url: String,
    dir: PathBuf,
    /// For diagnostics: what the API server holds.
    kubeconfig: PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The chart's ServiceMonitor, rendered by helm as users enable it.
fn chart_service_monitor() -> serde_json::Value {
    let tools = std::env::var("METASTORE_K8S_TOOLS").expect("make e2e sets METASTORE_K8S_TOOLS");
    let out = Command::new(format!("{tools}/helm"))
        .args(["template", "metastore-operator"])
        .arg(repo().join("charts/metastore-operator"))
        .args([
            "--namespace",
            "metastore-system",
            "--set",
            "metrics.serviceMonitor.enabled=true",
            "--show-only",
            "templates/servicemonitor.yaml",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_saphyr::from_str(&String::from_utf8_lossy(&out.stdout)).unwrap()
}

/// A Prometheus label name for Kubernetes label `k` (as its Kubernetes discovery makes them).
fn sanitized(k: &str) -> String {
    k.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// The scrape configs a ServiceMonitor stands for, with one difference from what the Prometheus
/// Operator generates: the Operator discovers the endpoint slices of the Services the selector
/// matches, and the API server refuses endpoint slices of the test kubelet's loopback pod
/// addresses; so the selector is applied to the pods' own labels (the chart's Services select
/// their pods by the same labels) and the endpoint's port to the pods' container port names.
/// As the Operator does: the namespaces it names, one job per endpoint, and namespace, service
/// and pod labels. Intervals are the test's 1 s.
fn scrape_configs(sm: &serde_json::Value, cp: &ControlPlane) -> Vec<serde_json::Value> {
    use serde_json::json;
    let spec = &sm["spec"];
    let d = cp.dir.path();
    let mut sd = json!({
        "role": "pod",
        "api_server": cp.server,
        "tls_config": {
            "ca_file": d.join("ca.crt"),
            "cert_file": d.join("admin.crt"),
            "key_file": d.join("admin.key"),
        },
    });
    if spec["namespaceSelector"]["any"] != json!(true) {
        let names = spec["namespaceSelector"]["matchNames"].clone();
        let names = if names.is_null() {
            json!([sm["metadata"]["namespace"]])
        } else {
            names
        };
        sd["namespaces"] = json!({ "names": names });
    }
    let label = |k: &str| {
        let k = sanitized(k);
        json!([
            format!("__meta_kubernetes_pod_label_{k}"),
            format!("__meta_kubernetes_pod_labelpresent_{k}")
        ])
    };
    let mut selectors = Vec::new();
    if let Some(m) = spec["selector"]["matchLabels"].as_object() {
        for (k, v) in m {
            let v = v.as_str().unwrap_or_default();
            selectors.push(json!({"action": "keep", "source_labels": label(k), "regex": format!("({v});true")}));
        }
    }
    for e in spec["selector"]["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let k = e["key"].as_str().unwrap_or_default();
        let values: Vec<&str> = e["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str())
            .collect();
        let any = format!("({});true", values.join("|"));
        let present = json!([format!(
            "__meta_kubernetes_pod_labelpresent_{}",
            sanitized(k)
        )]);
        selectors.push(match e["operator"].as_str().unwrap_or_default() {
            "In" => json!({"action": "keep", "source_labels": label(k), "regex": any}),
            "NotIn" => json!({"action": "drop", "source_labels": label(k), "regex": any}),
            "Exists" => json!({"action": "keep", "source_labels": present, "regex": "true"}),
            "DoesNotExist" => json!({"action": "drop", "source_labels": present, "regex": "true"}),
            other => panic!("ServiceMonitor selector operator {other:?}"),
        });
    }
    let name = sm["metadata"]["name"].as_str().unwrap_or_default();
    let ns = sm["metadata"]["namespace"].as_str().unwrap_or_default();
    spec["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, ep)| {
            let mut relabel = selectors.clone();
            relabel.extend([
                json!({"action": "keep", "source_labels": ["__meta_kubernetes_pod_container_port_name"], "regex": ep["port"]}),
                json!({"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"}),
                json!({"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"}),
                json!({"source_labels": ["__meta_kubernetes_pod_label_app_kubernetes_io_instance"], "target_label": "service"}),
            ]);
            json!({
                "job_name": format!("serviceMonitor/{ns}/{name}/{i}"),
                "kubernetes_sd_configs": [sd.clone()],
                "relabel_configs": relabel,
            })
        })
        .collect()
}

impl Prometheus {
    fn start(cp: &ControlPlane, port: u16) -> Prometheus {
        let dir = cp.dir.path().join("prometheus");
        std::fs::create_dir_all(&dir).unwrap();
        let alerts =
            std::fs::read_to_string(repo().join("charts/metastore-operator/files/alerts.yaml"))
                .unwrap();
        let rules: String = alerts.lines().map(|l| format!("  {l}\n")).collect();
        std::fs::write(dir.join("rules.yaml"), format!("groups:\n{rules}")).unwrap();
        // JSON is YAML: the configuration is written as JSON.
        let config = serde_json::json!({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [dir.join("rules.yaml")],
            "scrape_configs": scrape_configs(&chart_service_monitor(), cp),
        });
        std::fs::write(
            dir.join("prometheus.yml"),
            serde_json::to_string_pretty(&config).unwrap(),
        )
        .unwrap();
        let bin =
            std::env::var("METASTORE_PROMETHEUS").expect("make e2e sets METASTORE_PROMETHEUS");
        let child = Command::new(bin)
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
            .spawn()
            .expect("prometheus");
        Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            dir,
            kubeconfig: cp.kubeconfig.clone(),
        }
    }

    /// Runs an instant query; returns the first sample's value.
    fn query(&self, q: &str) -> Option<f64> {
        let out = Command::new("curl")
            .args(["-sf", "--data-urlencode", &format!("query={q}")])
            .arg(format!("{}/api/v1/query", self.url))
            .output()
            .ok()?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }

    async fn wait_for(&self, q: &str, ok: impl Fn(f64) -> bool) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(v) = self.query(q) {
                if ok(v) {
                    return v;
                }
            }
            if Instant::now() > deadline {
                let targets = Command::new("curl")
                    .args(["-s", &format!("{}/api/v1/targets", self.url)])
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
                    .unwrap_or_default();
                let log =
                    std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default();
                // Warnings and errors (service discovery's among them), then the last lines.
                let l: Vec<&str> = log
                    .lines()
                    .filter(|l| l.contains("level=WARN") || l.contains("level=ERROR"))
                    .chain(log.lines().rev().take(5))
                    .collect();
                // What discovery saw, and what it could have found.
                let sd = Command::new("curl")
                    .args(["-s", &format!("{}/metrics", self.url)])
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
                    .unwrap_or_default();
                let sd: Vec<&str> = sd
                    .lines()
                    .filter(|l| l.starts_with("prometheus_sd_") && !l.ends_with(" 0"))
                    .collect();
                let slices = Command::new("kubectl")
                    .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
                    .args(["get", "pods", "-A", "-o", "wide", "--show-labels"])
                    .output()
                    .map(|o| {
                        String::from_utf8_lossy(&o.stdout).to_string()
                            + &String::from_utf8_lossy(&o.stderr)
                    })
                    .unwrap_or_default();
                panic!(
                    "prometheus: {q} never matched (last: {:?})\ntargets: {targets}\nlog:\n{}\n\
                     discovery metrics:\n{}\npods:\n{slices}",
                    self.query(q),
                    l[l.len().saturating_sub(30)..].join("\n"),
                    sd.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// The API server on MetaStore: it found MetaStore's watch progress notifications trustworthy
/// (etcd ≥ 3.5.13 semantics) and served consistent lists from its watch cache, which it does
/// only after a progress notification confirmed the cache is fresh.
fn assert_store_serves_the_control_plane(cp: &ControlPlane) {
    let control_plane::Store::MetaStore(_) = cp.store else {
        eprintln!("control plane on etcd (METASTORE_E2E_STORE=etcd): store checks skipped");
        return;
    };
    let log = cp.full_log("kube-apiserver");
    assert!(
        !log.contains("RequestWatchProgress feature is not supported"),
        "the API server does not trust MetaStore's progress notifications:\n{}",
        cp.log("kube-apiserver")
    );
    let (ok, metrics) = kubectl(cp, &["get", "--raw", "/metrics"], None);
    assert!(ok, "{metrics}");
    let series = "apiserver_watch_cache_consistent_read_total";
    let from_cache = metric_sum(
        &metrics,
        series,
        &["fallback=\"false\"", "success=\"true\""],
    );
    let fallbacks = metric_sum(&metrics, series, &["fallback=\"true\""]);
    eprintln!(
        "control plane on MetaStore: {from_cache} consistent lists served from the watch cache, \
         {fallbacks} fell back to the store"
    );
    assert!(
        from_cache > 0.0,
        "no consistent list was served from the watch cache"
    );
}

/// The sum of the samples of `name` in Prometheus text `metrics` whose labels include `labels`.
fn metric_sum(metrics: &str, name: &str, labels: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .fold(0.0, |a, b| a + b)
}

fn endpoints(n: i32) -> Vec<String> {
    (0..n).map(client_url).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubectl_apply_patch_and_scale_1_3_5_3_1_under_load() {
    let (Some(k8s), Some(hosts)) = (metastore_e2e::k8s_bin_dir(), metastore_e2e::hosts_file())
    else {
        panic!("run this suite with `make e2e` (it provides the control plane and the hosts file)");
    };
    let base_port = 21000 + (std::process::id() % 400) as u16 * control_plane::PORTS;
    let bins = metastore_e2e::target_bin_dir();
    let store = control_plane::Store::from_env(bins.join("metastore-node"));
    eprintln!("control plane store: {store:?}");
    let mode = Mode::from_env();
    eprintln!("pods run by: {mode:?} kubelet (METASTORE_E2E_KUBELET)");
    let cp = ControlPlane::start(&k8s, base_port, store, mode).expect("control plane");
    let client = cp.client().await.expect("client");
    let work = cp.dir.path().join("kubelet");
    // What a cluster's node and add-ons give pods besides the kubelet, for the real one: the
    // `kubernetes` Service's address, DNS names, volumes.
    let mut _node_services = None;
    let mut kubelet = match mode {
        Mode::Real => {
            let env = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("make e2e sets {k}"));
            let api_addr = cp.server.trim_start_matches("https://").parse().unwrap();
            let proxy = metastore_e2e::api_proxy::ApiProxy::start(
                metastore_e2e::api_proxy::SERVICE,
                api_addr,
            )
            .await
            .expect("kubernetes Service address");
            let dns = metastore_e2e::dns::PodDns::start(
                client.clone(),
                hosts.clone(),
                env("METASTORE_E2E_DNS_DIR").into(),
                env("METASTORE_E2E_DNS_PID").parse().expect("a PID"),
            );
            let volumes =
                metastore_e2e::volumes::Provisioner::start(client.clone(), work.join("volumes"))
                    .await
                    .expect("volume provisioner");
            _node_services = Some((proxy, dns, volumes));
            Runner::Real(Box::new(
                RealKubelet::start(
                    client.clone(),
                    RealKubeletConfig {
                        bin: k8s.join("kubelet"),
                        kubeconfig: cp.kubeconfig.clone(),
                        containerd: env("METASTORE_E2E_CONTAINERD").into(),
                        node_ip: env("METASTORE_E2E_NODE_IP"),
                        root: work.clone(),
                        // Ports 17 and 18 of the control plane's range are free.
                        port: base_port + 17,
                    },
                )
                .await
                .expect("kubelet"),
            ))
        }
        Mode::Test => Runner::Test(
            Kubelet::start(
                client.clone(),
                KubeletConfig {
                    images: vec![
                        // The previous minor version, for the upgrade (scripts/node-previous.sh).
                        (
                            format!("metastore-node:{PREVIOUS}"),
                            std::env::var("METASTORE_NODE_PREVIOUS")
                                .expect("make e2e sets METASTORE_NODE_PREVIOUS")
                                .into(),
                        ),
                        ("metastore-node".into(), bins.join("metastore-node")),
                        ("metastore-operator".into(), bins.join("metastore-operator")),
                    ],
                    root: work.clone(),
                    hosts_file: Some(hosts),
                    net: format!("127.0.{}", 100 + std::process::id() % 100),
                    api: Some((cp.server.clone(), cp.dir.path().join("ca.crt"))),
                },
            )
            .await
            .expect("kubelet"),
        ),
    };

    // helm install, as users do: CRD, RBAC, the operator Deployment (2 replicas, leader
    // election). Its pods run here as processes with their service account's token.
    let tools = std::env::var("METASTORE_K8S_TOOLS").expect("make e2e sets METASTORE_K8S_TOOLS");
    let helm = Command::new(format!("{tools}/helm"))
        .args([
            "install",
            "metastore-operator",
            &repo()
                .join("charts/metastore-operator")
                .display()
                .to_string(),
            "--namespace",
            "metastore-system",
            "--create-namespace",
            "--set",
            "logLevel=info\\,metastore_operator=debug",
            "--set",
            &format!("watchNamespace={NS}"),
            "--wait",
            "--timeout",
            "180s",
            "--kubeconfig",
            &cp.kubeconfig.display().to_string(),
        ])
        .output()
        .unwrap();
    assert!(
        helm.status.success(),
        "helm install: {}{}",
        String::from_utf8_lossy(&helm.stdout),
        String::from_utf8_lossy(&helm.stderr)
    );
    let (ok, out) = kubectl(
        &cp,
        &[
            "wait",
            "--for=condition=Established",
            "crd/metastores.metastore.io",
            "--timeout=60s",
        ],
        None,
    );
    assert!(ok, "{out}");
    let op_log = kubelet.logs_dir();

    // A bad spec is refused by the API server with the field named.
    let (ok, out) = kubectl(
        &cp,
        &["apply", "-f", "-"],
        Some("apiVersion: metastore.io/v1alpha1\nkind: MetaStore\nmetadata: {name: bad}\nspec: {replicas: 0}\n"),
    );
    assert!(!ok && out.contains("spec.replicas"), "{out}");
    let (ok, out) = kubectl(
        &cp,
        &["apply", "-f", "-"],
        Some("apiVersion: metastore.io/v1alpha1\nkind: MetaStore\nmetadata: {name: bad}\nspec: {replicas: 3, heartbeatIntervalMs: 200, electionTimeoutMs: 500}\n"),
    );
    assert!(!ok && out.contains("electionTimeoutMs"), "{out}");

    // A 1-member MetaStore with fast timers.
    let manifest = format!(
        "apiVersion: metastore.io/v1alpha1\nkind: MetaStore\nmetadata: {{name: {NAME}}}\n\
         spec: {{replicas: 1, heartbeatIntervalMs: 50, electionTimeoutMs: 500, tls: {{mode: Managed}}}}\n"
    );
    let (ok, out) = kubectl(&cp, &["apply", "-f", "-"], Some(&manifest));
    assert!(ok, "{out}");
    let api: Api<MetaStore> = Api::namespaced(client.clone(), NS);
    wait_running(&api, 1, &cp, &op_log).await;

    // etcdctl through the member's DNS name, with the application certificate.
    let certs = tempfile::tempdir().unwrap();
    let tls = client_certificate(&client, certs.path()).await;
    let cert_flags: Vec<String> = ["cacert", "cert", "key"]
        .iter()
        .zip(["ca.crt", "tls.crt", "tls.key"])
        .map(|(flag, f)| format!("--{flag}={}", certs.path().join(f).display()))
        .collect();
    let etcdctl = |args: &[&str]| {
        let mut all: Vec<&str> = cert_flags.iter().map(String::as_str).collect();
        all.extend_from_slice(args);
        metastore_testkit::etcdctl(&client_url(0), &all)
    };
    let (ok, out) = etcdctl(&["put", "greeting", "hello"]);
    assert!(ok, "{out}");
    // Plain http and no certificate are refused; admin calls are the operator's.
    let plain = client_url(0).replace("https://", "http://");
    let (ok, out) =
        metastore_testkit::etcdctl(&plain, &["--command-timeout=3s", "get", "greeting"]);
    assert!(!ok, "plain http served: {out}");
    let (ok, out) = metastore_testkit::etcdctl(
        &client_url(0),
        &[&cert_flags[0], "--command-timeout=3s", "get", "greeting"],
    );
    assert!(!ok, "served without a client certificate: {out}");
    let (ok, out) = etcdctl(&["endpoint", "hashkv"]);
    assert!(!ok && out.contains("permission denied"), "{out}");
    assert_eq!(
        etcdctl(&["get", "greeting", "--print-value-only"]).1.trim(),
        "hello"
    );
    let (ok, out) = kubectl(&cp, &["get", "ms", NAME], None);
    assert!(ok && out.contains("Running"), "{out}");

    // Continuous load while the membership changes.
    let with_tls = etcd_client::ConnectOptions::new().with_tls(tls.clone());
    let mut c0 = etcd_client::Client::connect([client_url(0)], Some(with_tls.clone()))
        .await
        .unwrap();
    c0.put(load::REGISTER, "init", None).await.unwrap();
    let load = load::Load::start_with(
        endpoints(1),
        2,
        2,
        load::LoadOptions {
            tls: Some(tls.clone()),
            reconnect_every: 0,
            ..Default::default()
        },
    );
    assert_lease_reads(&api, &kubelet).await;

    // Prometheus finds the members through the API server and sees lease reads.
    let prom = Prometheus::start(&cp, base_port + 6);
    prom.wait_for("sum(metastore_read_total{path=\"lease\"})", |v| v > 0.0)
        .await;
    prom.wait_for(
        "count(ALERTS{alertname=\"MetaStoreNoLeader\",alertstate=\"firing\"}) or vector(0)",
        |v| v == 0.0,
    )
    .await;

    let steps: [(&str, i32); 5] = [
        ("patch", 3),
        ("scale", 5),
        ("patch", 3),
        ("patch", 1),
        ("patch", 1),
    ];
    let mut current = 1;
    for (how, n) in steps {
        if n == current {
            continue;
        }
        if n < current {
            load.set_endpoints(endpoints(n));
        }
        let (ok, out) = if how == "scale" {
            kubectl(
                &cp,
                &["scale", &format!("ms/{NAME}"), &format!("--replicas={n}")],
                None,
            )
        } else {
            let p = format!("{{\"spec\":{{\"replicas\":{n}}}}}");
            kubectl(&cp, &["patch", "ms", NAME, "--type=merge", "-p", &p], None)
        };
        assert!(ok, "{out}");
        let ms = wait_running(&api, n, &cp, &op_log).await;
        current = n;
        load.set_endpoints(endpoints(n));
        let st = ms.status.unwrap();
        assert_eq!(st.members.iter().filter(|m| m.role == "leader").count(), 1);
        assert!(st.members.iter().all(|m| m.healthy && m.role != "learner"));
        assert_lease_reads(&api, &kubelet).await;
        eprintln!("{how} to {n}: Running, leader {:?}", st.leader);
    }
    // Prometheus watched the whole walk: it saw five voters at one point, one now, and lease
    // reads on the leader throughout.
    prom.wait_for(
        "max_over_time(max(metastore_cluster_voters)[10m:1s])",
        |v| v == 5.0,
    )
    .await;
    prom.wait_for("max(metastore_cluster_voters)", |v| v == 1.0)
        .await;
    prom.wait_for(
        "sum(metastore_lease_policy_enabled * metastore_raft_is_leader)",
        |v| v == 1.0,
    )
    .await;
    assert_store_serves_the_control_plane(&cp);
    // An on-demand backup under the write load, into a real S3-compatible store.
    // Reached by the backup Jobs' pods: on the node's address with the real kubelet.
    let s3_ip = std::env::var("METASTORE_E2E_NODE_IP").unwrap_or_else(|_| "127.0.0.1".into());
    let s3 = metastore_testkit::s3::SeaweedFs::start_on(
        &s3_ip,
        17000 + (std::process::id() % 400) as u16 * 10,
    );
    s3.create_bucket("backups");
    let (ok, out) = kubectl(
        &cp,
        &["apply", "-f", "-"],
        Some(&format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: s3-creds}}\n\
             stringData: {{accessKeyId: {}, secretAccessKey: {}}}\n---\n\
             apiVersion: metastore.io/v1alpha1\nkind: MetaStoreBackup\nmetadata: {{name: first}}\n\
             spec: {{metaStore: {NAME}, s3: {{bucket: backups, prefix: e2e/, endpoint: '{}', credentialsSecret: s3-creds}}}}\n",
            metastore_testkit::s3::ACCESS_KEY,
            metastore_testkit::s3::SECRET_KEY,
            s3.endpoint
        )),
    );
    assert!(ok, "{out}");
    let backups: Api<metastore_operator::backup_crd::MetaStoreBackup> =
        Api::namespaced(client.clone(), NS);
    let status = wait_backup(&backups, "first", &op_log).await;
    let key = format!("e2e/{NS}/{NAME}/first.db");
    assert_eq!(
        status.object_url.as_deref(),
        Some(&*format!("s3://backups/{key}"))
    );
    assert!(status.revision.unwrap_or(0) > 0 && status.size.unwrap_or(0) > 0);
    assert_eq!(s3.keys("backups"), vec![key]);
    let (ok, out) = kubectl(&cp, &["get", "msb", "first"], None);
    assert!(ok && out.contains("Succeeded"), "{out}");
    eprintln!("backup: {status:?}");
    // A schedule (every 5 s here) keeps exactly the newest 2 successful backups in the bucket.
    let p = format!(
        "{{\"spec\":{{\"backup\":{{\"schedule\":\"*/5 * * * * *\",\"retention\":2,\"s3\":{{\"bucket\":\"backups\",\"prefix\":\"e2e/\",\"endpoint\":\"{}\",\"credentialsSecret\":\"s3-creds\"}}}}}}}}",
        s3.endpoint
    );
    let (ok, out) = kubectl(&cp, &["patch", "ms", NAME, "--type=merge", "-p", &p], None);
    assert!(ok, "{out}");
    let scheduled_prefix = format!("e2e/{NS}/{NAME}/{NAME}-");
    let mut seen = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        for b in backups.list(&Default::default()).await.unwrap().items {
            if b.metadata.name.as_deref() != Some("first") {
                seen.insert(b.metadata.name.clone().unwrap_or_default());
            }
        }
        let objects: Vec<String> = s3
            .keys("backups")
            .into_iter()
            .filter(|k| k.starts_with(&scheduled_prefix))
            .collect();
        if seen.len() >= 4 && objects.len() == 2 {
            eprintln!(
                "schedule: {} backups taken, objects kept {objects:?}",
                seen.len()
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "schedule: taken {seen:?}, objects {objects:?}\n{}",
            tail(&op_log)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (ok, out) = kubectl(
        &cp,
        &[
            "patch",
            "ms",
            NAME,
            "--type=merge",
            "-p",
            "{\"spec\":{\"backup\":null}}",
        ],
        None,
    );
    assert!(ok, "{out}");

    tokio::time::sleep(Duration::from_millis(500)).await;
    let rec = load.stop().await;
    let acked = rec.acked_writes();
    eprintln!(
        "history: {} register ops, {acked} acknowledged writes, {} acknowledged log writes",
        rec.history.len(),
        rec.acked_logs.len()
    );
    assert!(acked > 20, "the load ran");
    register::assert_linearizable(&rec.history, "init");
    let mut c0 = etcd_client::Client::connect([client_url(0)], Some(with_tls))
        .await
        .unwrap();
    let lost = rec.lost_writes_via(&mut c0).await;
    assert!(lost.is_empty(), "lost acknowledged writes: {lost:?}");
    // The removed members' volumes went with them (retentionOnScaleDown: Delete).
    let (ok, out) = kubectl(&cp, &["get", "pvc", "-o", "name"], None);
    assert!(
        ok && out.trim() == format!("persistentvolumeclaim/data-{NAME}-0"),
        "{out}"
    );

    // Restore: the backup taken under load becomes a new cluster. What it must serve: the
    // old cluster's keys and HashKV at the backup's revision.
    let rev = status.revision.unwrap();
    let admin = certificate_options(&client, &format!("{NAME}-tls-operator")).await;
    let mut old_admin = etcd_client::Client::connect([client_url(0)], Some(admin))
        .await
        .unwrap();
    let old_hash = old_admin.hash_kv(rev).await.unwrap().hash();
    let old_kvs = kvs_at(&mut c0, Some(rev)).await;
    let old_cluster = c0
        .member_list()
        .await
        .unwrap()
        .header()
        .unwrap()
        .cluster_id();
    drop((c0, old_admin));
    // Delete the MetaStore (and with it the StatefulSet, pods and certificates), then its volume.
    let (ok, out) = kubectl(
        &cp,
        &[
            "delete",
            "ms",
            NAME,
            "--cascade=foreground",
            "--timeout=120s",
        ],
        None,
    );
    assert!(ok, "{out}");
    wait_gone(&cp, "pods", &format!("pod/{NAME}-")).await;
    let (ok, out) = kubectl(
        &cp,
        &["delete", "pvc", &format!("data-{NAME}-0"), "--timeout=60s"],
        None,
    );
    assert!(ok, "{out}");
    wait_gone(&cp, "secrets", &format!("secret/{NAME}-tls-")).await;
    // A backup that does not exist holds the new cluster back with a clear status.
    apply_restoring(&cp, "nonexistent");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st = api.get(NAME).await.unwrap().status.unwrap_or_default();
        let degraded = st
            .conditions
            .iter()
            .find(|c| c.type_ == "Degraded" && c.status == "True");
        if let Some(c) = degraded {
            assert!(c.message.contains("nonexistent"), "{c:?}");
            break;
        }
        assert!(Instant::now() < deadline, "no Degraded status: {st:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (ok, out) = kubectl(&cp, &["get", "statefulset", NAME], None);
    assert!(!ok, "created before its backup exists: {out}");
    let (ok, out) = kubectl(&cp, &["delete", "ms", NAME, "--timeout=60s"], None);
    assert!(ok, "{out}");
    wait_gone(&cp, "metastores", &format!("metastore.metastore.io/{NAME}")).await;
    wait_gone(&cp, "secrets", &format!("secret/{NAME}-tls-")).await;
    // Now from the real backup, with three members: member 0 restores, then two learners join.
    apply_restoring(&cp, "first");
    let ms = wait_running(&api, 3, &cp, &op_log).await;
    let new_tls = certificate_options(&client, &format!("{NAME}-tls-client")).await;
    let admin = certificate_options(&client, &format!("{NAME}-tls-operator")).await;
    for k in 0..3 {
        let mut c = etcd_client::Client::connect([client_url(k)], Some(new_tls.clone()))
            .await
            .unwrap();
        let mut a = etcd_client::Client::connect([client_url(k)], Some(admin.clone()))
            .await
            .unwrap();
        assert_eq!(a.hash_kv(rev).await.unwrap().hash(), old_hash, "member {k}");
        assert_eq!(kvs_at(&mut c, Some(rev)).await, old_kvs, "member {k}");
        let id = c
            .member_list()
            .await
            .unwrap()
            .header()
            .unwrap()
            .cluster_id();
        assert_ne!(id, old_cluster, "a restored cluster is a new cluster");
    }
    eprintln!(
        "restored {} keys at revision {rev} (HashKV {old_hash:x}) into {:?}",
        old_kvs.len(),
        ms.status.map(|s| s.members.len())
    );
    // Self-healing under load: one member's volume (and pod) is lost while the others keep a
    // quorum. Its new pod is refused as already started; the operator removes the member and
    // adds ordinal 1 back as a learner on a new volume — no etcdctl.
    let heal_tls = client_certificate(&client, certs.path()).await;
    let mut c0 = etcd_client::Client::connect([client_url(0)], Some(new_tls.clone()))
        .await
        .unwrap();
    c0.put(load::REGISTER, "init", None).await.unwrap();
    let load = load::Load::start_with(
        endpoints(3),
        2,
        2,
        load::LoadOptions {
            tls: Some(heal_tls),
            reconnect_every: 0,
            ..Default::default()
        },
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let member_id = |ms: &MetaStore, name: &str| {
        ms.status
            .iter()
            .flat_map(|s| &s.members)
            .find(|m| m.name == name)
            .map(|m| m.id.clone())
    };
    let lost_id = member_id(&api.get(NAME).await.unwrap(), &format!("{NAME}-1"));
    assert!(lost_id.is_some());
    let (ok, out) = kubectl(
        &cp,
        &["delete", "pvc", &format!("data-{NAME}-1"), "--wait=false"],
        None,
    );
    assert!(ok, "{out}");
    let (ok, out) = kubectl(
        &cp,
        &["delete", "pod", &format!("{NAME}-1"), "--wait=false"],
        None,
    );
    assert!(ok, "{out}");
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let ms = api.get(NAME).await.unwrap();
        let id = member_id(&ms, &format!("{NAME}-1"));
        if id.is_some() && id != lost_id {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "member 1 not replaced: {:#?}\n{}\n{}",
            ms.status,
            tail(&op_log),
            diagnose(&cp, &op_log)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    wait_running(&api, 3, &cp, &op_log).await;
    let (_, events) = kubectl(
        &cp,
        &[
            "get",
            "events",
            "--field-selector=reason=LostMemberRemoved",
            "-o",
            "jsonpath={.items[*].message}",
        ],
        None,
    );
    assert!(events.contains("reports its data dir empty"), "{events}");
    // The leader's container killed outright (SIGKILL, as the OOM killer would): the kubelet
    // restarts it on its volume, and it serves again with its data, with no operator action.
    let victim = api
        .get(NAME)
        .await
        .unwrap()
        .status
        .and_then(|s| s.leader)
        .expect("a leader");
    let restarts = |pod: &str| {
        let (_, out) = kubectl(
            &cp,
            &[
                "get",
                "pod",
                pod,
                "-o",
                "jsonpath={.status.containerStatuses[0].restartCount}",
            ],
            None,
        );
        out.trim().parse::<i32>().unwrap_or(-1)
    };
    let before = restarts(&victim);
    assert!(
        kubelet.signal(NS, &victim, "KILL").await,
        "{victim} has no process"
    );
    let deadline = Instant::now() + Duration::from_secs(90);
    while !(restarts(&victim) > before && kubelet.ready(NS, &victim).await) {
        assert!(
            Instant::now() < deadline,
            "{victim} was not restarted and ready again"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let ms = wait_running(&api, 3, &cp, &op_log).await;
    assert!(ms.status.unwrap().members.iter().all(|m| m.healthy));
    assert_lease_reads(&api, &kubelet).await;
    eprintln!("container kill: {victim} (the leader) restarted by the kubelet; 3/3 healthy");
    // A node-level restart of the kubelet, still under load: the containers keep running, the
    // new kubelet adopts them, and the cluster stays Available.
    if let Runner::Real(k) = &mut kubelet {
        let pods_before: Vec<Option<Vec<String>>> = {
            let mut v = Vec::new();
            for i in 0..3 {
                v.push(k.container_ids(NS, &format!("{NAME}-{i}")).await);
            }
            v
        };
        k.restart().await.expect("kubelet restarted");
        let ms = wait_running(&api, 3, &cp, &op_log).await;
        assert!(ms.status.unwrap().members.iter().all(|m| m.healthy));
        for (i, before) in pods_before.iter().enumerate() {
            assert_eq!(
                &k.container_ids(NS, &format!("{NAME}-{i}")).await,
                before,
                "{NAME}-{i}'s container was replaced by the restarted kubelet"
            );
        }
        eprintln!("kubelet restart: the containers were adopted; 3/3 healthy");
    }
    let rec = load.stop().await;
    eprintln!(
        "self-healing: {} register ops, {} acknowledged writes",
        rec.history.len(),
        rec.acked_writes()
    );
    assert!(rec.acked_writes() > 20, "the load ran");
    register::assert_linearizable(&rec.history, "init");
    let lost = rec.lost_writes_via(&mut c0).await;
    assert!(lost.is_empty(), "lost acknowledged writes: {lost:?}");
    drop(c0);

    // Disaster recovery from a survivor: two of three volumes, and their pods, are lost for good.
    let mut c0 = etcd_client::Client::connect([client_url(0)], Some(new_tls.clone()))
        .await
        .unwrap();
    for i in 0..50 {
        c0.put(format!("dr/{i:02}"), format!("v{i}"), None)
            .await
            .unwrap();
    }
    let before = kvs_at(&mut c0, None).await;
    drop(c0);
    let claims = [format!("data-{NAME}-1"), format!("data-{NAME}-2")];
    let pods = [format!("{NAME}-1"), format!("{NAME}-2")];
    let (ok, out) = kubectl(
        &cp,
        &["delete", "pvc", &claims[0], &claims[1], "--wait=false"],
        None,
    );
    assert!(ok, "{out}");
    let (ok, out) = kubectl(
        &cp,
        &["delete", "pod", &pods[0], &pods[1], "--wait=false"],
        None,
    );
    assert!(ok, "{out}");
    // The operator says what it would do, and does nothing without the opt-in.
    let plan = wait_degraded(&api, "QuorumLost", &cp, &op_log).await;
    eprintln!("quorum lost: {plan}");
    assert!(plan.contains("1 of 3 voters answer"), "{plan}");
    assert!(plan.contains(&format!("restarts {NAME}-0")), "{plan}");
    assert!(plan.contains("metastore.io/recover=true"), "{plan}");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let st = api.get(NAME).await.unwrap().status.unwrap_or_default();
    assert!(
        st.conditions
            .iter()
            .any(|c| c.type_ == "Degraded" && c.status == "True" && c.reason == "QuorumLost"),
        "recovered without the opt-in: {st:#?}"
    );
    let (_, events) = kubectl(
        &cp,
        &[
            "get",
            "events",
            "-o",
            "name",
            "--field-selector=reason=RecoveryStarted",
        ],
        None,
    );
    assert!(
        events.trim().is_empty(),
        "recovery without the opt-in: {events}"
    );
    let (ok, out) = kubectl(
        &cp,
        &["annotate", "ms", NAME, "metastore.io/recover=true"],
        None,
    );
    assert!(ok, "{out}");
    wait_running(&api, 3, &cp, &op_log).await;
    let ms = api.get(NAME).await.unwrap();
    assert!(
        !ms.metadata
            .annotations
            .iter()
            .flatten()
            .any(|(k, _)| k == "metastore.io/recover"),
        "the opt-in is consumed: {:?}",
        ms.metadata.annotations
    );
    let (_, events) = kubectl(
        &cp,
        &[
            "get",
            "events",
            "--field-selector=reason=RecoveryStarted",
            "-o",
            "jsonpath={.items[*].message}",
        ],
        None,
    );
    assert!(events.contains("one-member cluster"), "{events}");
    for k in 0..3 {
        let mut c = etcd_client::Client::connect([client_url(k)], Some(new_tls.clone()))
            .await
            .unwrap();
        let after = kvs_at(&mut c, None).await;
        assert_eq!(after, before, "member {k} after recovery");
    }
    eprintln!("recovered from {NAME}-0 with {} keys", before.len());
    keep_logs(&op_log);
    // A backup to a PersistentVolumeClaim: a Job mounts the claim and writes the file.
    let (ok, out) = kubectl(
        &cp,
        &["apply", "-f", "-"],
        Some(&format!(
            "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: backups}}\n\
             spec: {{accessModes: [ReadWriteOnce], resources: {{requests: {{storage: 1Gi}}}}}}\n---\n\
             apiVersion: metastore.io/v1alpha1\nkind: MetaStoreBackup\nmetadata: {{name: second}}\n\
             spec: {{metaStore: {NAME}, pvc: {{claimName: backups, prefix: e2e/}}}}\n"
        )),
    );
    assert!(ok, "{out}");
    let second = wait_backup(&backups, "second", &op_log).await;
    let backup_rev = second.revision.unwrap();
    let path = format!("e2e/{NS}/{NAME}/second.db");
    assert_eq!(
        second.object_url.as_deref(),
        Some(&*format!("pvc://backups/{path}"))
    );
    let (ok, uid) = kubectl(
        &cp,
        &["get", "pvc", "backups", "-o", "jsonpath={.metadata.uid}"],
        None,
    );
    assert!(ok, "{uid}");
    // The claim's directory on the node: the provisioner's volume (real kubelet), or the test
    // kubelet's claim directory.
    let claim_dir = match mode {
        Mode::Real => work.join("volumes").join(uid.trim()),
        Mode::Test => work
            .join("pvc")
            .join(NS)
            .join(format!("backups-{}", uid.trim())),
    };
    let file = claim_dir.join(&path);
    let meta = std::fs::metadata(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    assert_eq!(Some(meta.len() as i64), second.size);
    let out = Command::new(bins.join("metastore-node"))
        .args([
            "snapshot",
            "status",
            &file.display().to_string(),
            "-w",
            "json",
        ])
        .output()
        .unwrap();
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert_eq!(st["revision"].as_i64(), Some(backup_rev), "{st}");
    eprintln!("backup on a claim: {second:?}");

    // Disaster recovery with no survivor: every volume is lost; the latest backup (the one on
    // the claim) comes back.
    let mut c0 = etcd_client::Client::connect([client_url(0)], Some(new_tls.clone()))
        .await
        .unwrap();
    let backed_up = kvs_at(&mut c0, Some(backup_rev)).await;
    // Written after the backup: these are what a restore from it loses.
    c0.put("after-backup", "lost", None).await.unwrap();
    drop(c0);
    let lost_cluster = ms.status.as_ref().and_then(|s| s.cluster_id.clone());
    let claims: Vec<String> = (0..3).map(|k| format!("data-{NAME}-{k}")).collect();
    let pods: Vec<String> = (0..3).map(|k| format!("{NAME}-{k}")).collect();
    let mut args = vec!["delete", "pvc", "--wait=false"];
    args.extend(claims.iter().map(String::as_str));
    let (ok, out) = kubectl(&cp, &args, None);
    assert!(ok, "{out}");
    let mut args = vec!["delete", "pod", "--wait=false"];
    args.extend(pods.iter().map(String::as_str));
    let (ok, out) = kubectl(&cp, &args, None);
    assert!(ok, "{out}");
    let plan = wait_degraded(&api, "NoMemberAnswers", &cp, &op_log).await;
    eprintln!("no member answers: {plan}");
    assert!(plan.contains("restores MetaStoreBackup second"), "{plan}");
    assert!(plan.contains("metastore.io/recover=true"), "{plan}");
    let (ok, out) = kubectl(
        &cp,
        &["annotate", "ms", NAME, "metastore.io/recover=true"],
        None,
    );
    assert!(ok, "{out}");
    let ms = wait_running(&api, 3, &cp, &op_log).await;
    let st = ms.status.clone().unwrap_or_default();
    assert!(st.recovery.is_none(), "{:?}", st.recovery);
    assert!(
        st.cluster_id.is_some() && st.cluster_id != lost_cluster,
        "a restored cluster is a new cluster: {:?} after {lost_cluster:?}",
        st.cluster_id
    );
    for k in 0..3 {
        let mut c = etcd_client::Client::connect([client_url(k)], Some(new_tls.clone()))
            .await
            .unwrap();
        assert_eq!(
            kvs_at(&mut c, None).await,
            backed_up,
            "member {k} serves exactly the backup"
        );
    }
    eprintln!(
        "restored MetaStoreBackup second ({} keys at revision {backup_rev}) after losing every volume",
        backed_up.len()
    );
    keep_logs(&op_log);

    upgrade_from_the_previous_version(&cp, &client, &api, &kubelet, &op_log, certs.path()).await;
    auth_on_and_off(&cp, &client, &api, &op_log, certs.path()).await;

    // The chart's role lets the operator do everything it did.
    let refused = operator_lines(&op_log, "forbidden");
    assert!(refused.is_empty(), "RBAC refused the operator:\n{refused}");
}

/// The previous minor version's image tag (the build `scripts/node-previous.sh` makes).
const PREVIOUS: &str = "0.1.0";
/// This build's version.
const CURRENT: &str = env!("CARGO_PKG_VERSION");

/// The pods' names and their status versions, once `ms` reports every member.
fn member_versions(ms: &MetaStore) -> Vec<(String, Option<String>)> {
    ms.status
        .iter()
        .flat_map(|s| &s.members)
        .map(|m| (m.name.clone(), m.version.clone()))
        .collect()
}

/// Version rules and a quorum-aware upgrade of a 3-member cluster under a linearizable load:
/// a downgrade is refused (and the template keeps its version); a cluster of the previous
/// version is upgraded — refused while a member is down, then member by member, followers
/// first, the leader last after handing over — with no failed or lost write, at most one
/// leader change, and lease reads on at the end.
async fn upgrade_from_the_previous_version(
    cp: &ControlPlane,
    client: &kube::Client,
    api: &Api<MetaStore>,
    kubelet: &Runner,
    op_log: &Path,
    certs: &Path,
) {
    let image = || {
        kubectl(
            cp,
            &[
                "get",
                "statefulset",
                NAME,
                "-o",
                "jsonpath={.spec.template.spec.containers[0].image}",
            ],
            None,
        )
        .1
    };
    let patch_version = |v: &str| {
        let (ok, out) = kubectl(
            cp,
            &[
                "patch",
                "ms",
                NAME,
                "--type=merge",
                "-p",
                &format!("{{\"spec\":{{\"version\":{v}}}}}"),
            ],
            None,
        );
        assert!(ok, "{out}");
    };
    patch_version(&format!("\"{PREVIOUS}\""));
    let why = wait_degraded(api, "UnsafeChangeRefused", cp, op_log).await;
    assert!(why.contains("downgrade"), "{why}");
    assert_eq!(image(), format!("metastore-node:{CURRENT}"));
    patch_version("null");
    wait_running(api, 3, cp, op_log).await;

    // A new cluster of the previous version, on new volumes.
    let (ok, out) = kubectl(
        cp,
        &[
            "delete",
            "ms",
            NAME,
            "--cascade=foreground",
            "--timeout=120s",
        ],
        None,
    );
    assert!(ok, "{out}");
    wait_gone(cp, "pods", &format!("pod/{NAME}-")).await;
    wait_gone(cp, "secrets", &format!("secret/{NAME}-tls-")).await;
    // Re-created while the old volumes are still there (retentionOnDelete: Retain), it is held
    // back with the claims named, and goes on once they are deleted.
    let manifest = format!(
        "apiVersion: metastore.io/v1alpha1\nkind: MetaStore\nmetadata: {{name: {NAME}}}\n\
         spec: {{replicas: 3, version: \"{PREVIOUS}\", heartbeatIntervalMs: 50, electionTimeoutMs: 500, tls: {{mode: Managed}}, \
         storage: {{storageClassName: {}}}}}\n",
        metastore_e2e::volumes::EXPANDABLE_CLASS
    );
    let (ok, out) = kubectl(cp, &["apply", "-f", "-"], Some(&manifest));
    assert!(ok, "{out}");
    let why = wait_degraded(api, "RetainedVolumes", cp, op_log).await;
    assert!(
        why.contains(&format!(
            "kubectl delete pvc data-{NAME}-0 data-{NAME}-1 data-{NAME}-2"
        )),
        "{why}"
    );
    let (ok, out) = kubectl(cp, &["get", "statefulset", NAME], None);
    assert!(!ok, "created over retained volumes: {out}");
    let claims: Vec<String> = (0..3).map(|k| format!("data-{NAME}-{k}")).collect();
    let mut args = vec!["delete", "pvc", "--timeout=60s"];
    args.extend(claims.iter().map(String::as_str));
    let (ok, out) = kubectl(cp, &args, None);
    assert!(ok, "{out}");
    let ms = wait_running(api, 3, cp, op_log).await;
    assert_eq!(
        ms.status
            .as_ref()
            .and_then(|s| s.version.clone())
            .as_deref(),
        Some(PREVIOUS)
    );
    assert!(
        member_versions(&ms)
            .iter()
            .all(|(_, v)| v.as_deref() == Some(PREVIOUS)),
        "{:?}",
        member_versions(&ms)
    );
    let (ok, out) = kubectl(cp, &["get", "ms", NAME], None);
    assert!(
        ok && out.contains("VERSION") && out.contains(PREVIOUS),
        "{out}"
    );

    let tls = client_certificate(client, certs).await;
    let with_tls = etcd_client::ConnectOptions::new().with_tls(tls.clone());
    let mut c0 = etcd_client::Client::connect(
        endpoints(3),
        Some(with_tls.clone().with_timeout(Duration::from_secs(10))),
    )
    .await
    .unwrap();
    c0.put(load::REGISTER, "init", None).await.unwrap();
    let load = load::Load::start_with(
        endpoints(3),
        2,
        2,
        load::LoadOptions {
            tls: Some(tls.clone()),
            reconnect_every: 0,
            // Longer than a member's own request timeout (7 s): a write counts as failed only
            // when the cluster failed it.
            op_timeout: Some(Duration::from_secs(10)),
        },
    );
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Started with a member down (its process stopped), the upgrade is refused: no pod restarts.
    let ms = api.get(NAME).await.unwrap();
    let restarts = || {
        kubectl(
            cp,
            &[
                "get",
                "events",
                "-o",
                "name",
                "--field-selector=reason=MemberRestarted",
            ],
            None,
        )
        .1
    };
    let restarted_before = restarts();
    let pod_uids = || -> std::collections::BTreeMap<String, String> {
        let (_, out) = kubectl(
            cp,
            &[
                "get",
                "pods",
                "-o",
                r#"jsonpath={range .items[*]}{.metadata.name}={.metadata.uid}{"\n"}{end}"#,
            ],
            None,
        );
        out.lines()
            .filter_map(|l| l.split_once('='))
            .filter(|(name, _)| name.starts_with(&format!("{NAME}-")))
            .map(|(name, uid)| (name.to_string(), uid.to_string()))
            .collect()
    };
    let uids_before = pod_uids();
    assert_eq!(uids_before.len(), 3, "{uids_before:?}");
    let down = ms
        .status
        .iter()
        .flat_map(|s| &s.members)
        .filter(|m| m.role == "follower")
        .map(|m| m.name.clone())
        .max()
        .expect("a follower");
    // The Raft term, from the leader alone (a balanced client could ask the stopped member).
    let term = |ms: MetaStore| {
        let tls = with_tls.clone().with_timeout(Duration::from_secs(10));
        async move {
            let leader = ms.status.and_then(|s| s.leader).expect("a leader");
            let url = format!("https://{leader}.{NAME}-peer.{NS}.svc:2379");
            let mut c = etcd_client::Client::connect([url], Some(tls))
                .await
                .unwrap();
            c.status().await.unwrap().raft_term()
        }
    };
    let term_before = term(api.get(NAME).await.unwrap()).await;
    // The operator's planned leadership moves, as its LeaderMoved events tell them.
    let moves = || {
        let (ok, out) = kubectl(
            cp,
            &[
                "get",
                "events",
                "--field-selector=reason=LeaderMoved",
                "-o",
                r#"jsonpath={range .items[*]}{.message}{"\n"}{end}"#,
            ],
            None,
        );
        assert!(ok, "{out}");
        out.lines().map(str::to_string).collect::<Vec<_>>()
    };
    let moves_before = moves().len();
    // Clients leave the member before it stops answering (as the Service does once its
    // readiness fails): a stopped member's requests would only time out.
    load.set_endpoints(
        (0..3)
            .filter(|k| format!("{NAME}-{k}") != down)
            .map(client_url)
            .collect(),
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(kubelet.signal(NS, &down, "STOP").await);
    patch_version(&format!("\"{CURRENT}\""));
    let why = wait_degraded(api, "UnsafeChangeRefused", cp, op_log).await;
    assert!(why.contains(&format!("{down} is unhealthy")), "{why}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(restarts(), restarted_before, "restarted with a member down");
    let ms = api.get(NAME).await.unwrap();
    assert!(member_versions(&ms)
        .iter()
        .all(|(_, v)| v.as_deref() != Some(CURRENT)));
    assert!(kubelet.signal(NS, &down, "CONT").await);

    // The roll: every member restarts on the current version, one at a time.
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut leaders = Vec::new();
    loop {
        // Clients reach the members through the client Service, which routes to Ready pods only.
        let mut ready = Vec::new();
        for k in 0..3 {
            if kubelet.ready(NS, &format!("{NAME}-{k}")).await {
                ready.push(client_url(k));
            }
        }
        if !ready.is_empty() {
            load.set_endpoints(ready);
        }
        let ms = api.get(NAME).await.unwrap();
        let st = ms.status.clone().unwrap_or_default();
        if let Some(l) = &st.leader {
            if leaders.last() != Some(l) {
                leaders.push(l.clone());
            }
        }
        let upgraded = st.conditions.iter().any(|c| {
            c.type_ == "MetaStoreUpgrading"
                && c.status == "False"
                && c.observed_generation == ms.metadata.generation
        });
        if upgraded
            && st.phase.as_deref() == Some("Running")
            && st.version.as_deref() == Some(CURRENT)
            && member_versions(&ms).len() == 3
            && member_versions(&ms)
                .iter()
                .all(|(_, v)| v.as_deref() == Some(CURRENT))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "upgrade did not finish: {st:#?}\n{}\n{}",
            tail(op_log),
            diagnose(cp, op_log)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let term_after = term(api.get(NAME).await.unwrap()).await;
    assert_eq!(image(), format!("metastore-node:{CURRENT}"));
    let planned = moves().split_off(moves_before);
    eprintln!(
        "upgraded {PREVIOUS} → {CURRENT}: leaders seen {leaders:?}, term {term_before} → \
         {term_after}, moved by the operator: {planned:?}"
    );
    // The roll moves leadership once at most: off the old leader, to a member already upgraded.
    // Elections besides it are reported, not failed: on this loaded 2-core machine (the control
    // plane's own store runs here too) with 50 ms heartbeats a leader can miss a quorum for a
    // moment and another member be elected.
    assert!(
        planned.len() <= 1,
        "the operator moved leadership more than once: {planned:?} (leaders seen {leaders:?})"
    );
    assert!(term_after > term_before, "leadership was never moved");
    // Every member pod was replaced.
    let uids_after = pod_uids();
    for (pod, uid) in &uids_before {
        assert_ne!(uids_after.get(pod), Some(uid), "{pod} was not restarted");
    }
    assert_lease_reads(api, kubelet).await;
    // The PodDisruptionBudget counts the pods the operator labelled as voters.
    let (ok, out) = kubectl(
        cp,
        &["get", "pods", "-l", "metastore.io/voter=true", "-o", "name"],
        None,
    );
    assert!(ok && out.lines().count() == 3, "{out}");
    let rec = load.stop().await;
    eprintln!(
        "upgrade: {} register ops, {} acknowledged writes, {} failed ({} writes), {} attempts to a restarting member not sent",
        rec.history.len(),
        rec.acked_writes(),
        rec.failed,
        rec.failed_writes,
        rec.unreachable
    );
    assert_eq!(
        rec.failed_writes, 0,
        "writes failed during the upgrade: {:#?}",
        rec.errors
    );
    assert!(rec.acked_writes() > 20, "the load ran");
    register::assert_linearizable(&rec.history, "init");
    // Every member was restarted: a client made now, not the one connected before.
    let mut c0 = etcd_client::Client::connect(
        endpoints(3),
        Some(with_tls.clone().with_timeout(Duration::from_secs(10))),
    )
    .await
    .unwrap();
    let lost = rec.lost_writes_via(&mut c0).await;
    assert!(lost.is_empty(), "lost acknowledged writes: {lost:?}");
    keep_logs(op_log);

    // Settings reach what the members run: compaction and an extra flag roll out member by
    // member; a larger volume is asked of each claim (their StorageClass allows expansion), and
    // once the volumes grew the members' quota is a quarter of the new size.
    let (ok, out) = kubectl(
        cp,
        &[
            "patch",
            "ms",
            NAME,
            "--type=merge",
            "-p",
            r#"{"spec":{"storage":{"size":"2Gi"},"autoCompaction":{"retention":"10m"},"extraArgs":["--snapshot-count=20000"]}}"#,
        ],
        None,
    );
    assert!(ok, "{out}");
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let ms = api.get(NAME).await.unwrap();
        let st = ms.status.clone().unwrap_or_default();
        let cond = |t: &str| st.conditions.iter().find(|c| c.type_ == t).cloned();
        let rolled = cond("MetaStoreUpgrading").is_some_and(|c| {
            c.status == "False" && c.observed_generation == ms.metadata.generation
        });
        let storage = cond("StorageResized");
        let resized = storage
            .as_ref()
            .is_some_and(|c| c.status == "True" && c.reason == "AsRequested");
        let mut runs: Vec<Vec<String>> = Vec::new();
        for k in 0..3 {
            runs.extend(kubelet.command_line(NS, &format!("{NAME}-{k}")).await);
        }
        let applied = runs.len() == 3
            && runs.iter().all(|a| {
                a.iter().any(|x| x == "--auto-compaction-retention=10m")
                    && a.iter().any(|x| x == "--snapshot-count=20000")
                    && a.iter().any(|x| x == "--quota-backend-bytes=536870912")
            });
        if rolled && resized && applied && st.phase.as_deref() == Some("Running") {
            eprintln!("settings: {:?}", storage.map(|c| c.message));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "settings not applied: {st:#?}\n{runs:?}\n{}",
            tail(op_log)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // A shrink and another storage class are refused by the API server.
    for (patch, field) in [
        (
            r#"{"spec":{"storage":{"size":"1Gi"}}}"#,
            "spec.storage.size cannot shrink",
        ),
        (
            r#"{"spec":{"storage":{"storageClassName":"fast"}}}"#,
            "storageClassName",
        ),
        (
            r#"{"spec":{"quotaBackendBytes":1073741824}}"#,
            "quotaBackendBytes",
        ),
        (r#"{"spec":{"extraArgs":["snapshot-count"]}}"#, "extraArgs"),
    ] {
        let (ok, out) = kubectl(
            cp,
            &["patch", "ms", NAME, "--type=merge", "-p", patch],
            None,
        );
        assert!(!ok && out.contains(field), "{patch}: {out}");
    }
}

/// Waits until the `AuthEnabled` condition reads `status`; returns its reason.
async fn wait_auth_condition(api: &Api<MetaStore>, status: &str, op_log: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let ms = api.get(NAME).await.unwrap();
        let c = ms
            .status
            .iter()
            .flat_map(|s| &s.conditions)
            .find(|c| c.type_ == "AuthEnabled")
            .cloned();
        if let Some(c) = &c {
            if c.status == status {
                return c.reason.clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "AuthEnabled never {status}: {c:?}\n{}",
            tail(op_log)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `spec.auth` on a running 3-member cluster under client TLS: the operator creates root with
/// the password in `<name>-root` and enables auth; a client with only its certificate (a user
/// nobody created) is refused, root is served, and the operator keeps reconciling as root; then
/// `enabled: false` opens the cluster again.
async fn auth_on_and_off(
    cp: &ControlPlane,
    client: &kube::Client,
    api: &Api<MetaStore>,
    op_log: &Path,
    certs: &Path,
) {
    let patch = |p: &str| {
        let (ok, out) = kubectl(cp, &["patch", "ms", NAME, "--type=merge", "-p", p], None);
        assert!(ok, "{p}: {out}");
    };
    patch(r#"{"spec":{"auth":{}}}"#);
    let reason = wait_auth_condition(api, "True", op_log).await;
    assert_eq!(reason, "Enabled");
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), NS);
    let data = secrets
        .get(&format!("{NAME}-root"))
        .await
        .expect("the root Secret the operator made")
        .data
        .unwrap();
    let password = String::from_utf8(data["password"].0.clone()).unwrap();
    assert!(password.len() >= 32, "a generated password");
    let tls = client_certificate(client, certs).await;
    let base = etcd_client::ConnectOptions::new()
        .with_tls(tls)
        .with_timeout(Duration::from_secs(10));
    let mut cert_only = etcd_client::Client::connect(endpoints(3), Some(base.clone()))
        .await
        .unwrap();
    let refused = cert_only
        .put("auth/k", "v", None)
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("permission denied"), "{refused}");
    let mut root = etcd_client::Client::connect(
        endpoints(3),
        Some(base.clone().with_user("root", password.as_str())),
    )
    .await
    .unwrap();
    root.put("auth/k", "v", None).await.unwrap();
    // The operator still sees and steers every member (its calls now go as root).
    let ms = wait_running(api, 3, cp, op_log).await;
    assert!(
        member_versions(&ms).iter().all(|(_, v)| v.is_some()),
        "{:?}",
        member_versions(&ms)
    );
    patch(r#"{"spec":{"auth":{"enabled":false}}}"#);
    let reason = wait_auth_condition(api, "False", op_log).await;
    assert_eq!(reason, "Disabled");
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Err(e) = cert_only.put("auth/k", "open", None).await {
        assert!(
            Instant::now() < deadline,
            "still refused after disabling: {e}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    eprintln!(
        "auth: enabled by the operator as root, refused a certificate-only client, disabled again"
    );
}
