//! The planner and executor against real `metastore-node` processes on loopback, no Kubernetes:
//! each process plays the pod with that ordinal, started with the same flags the StatefulSet
//! gives (its own name in `--initial-cluster`, discovery through a peer URL). Drives 1→3→5→3→1
//! step by step and checks the members' lease status after every step.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use metastore_operator::executor::{self, ClusterView, Dial, ExecError, Outcome, Target};
use metastore_operator::planner::{plan, Observed, Step};
use metastore_testkit::{member_args, node_bin};

/// These members serve plain http.
static PLAIN: Dial = Dial {
    tls: None,
    credentials: None,
};

struct Pods {
    net: String,
    dir: tempfile::TempDir,
    running: BTreeMap<i32, Child>,
    /// How the executor reaches them.
    dial: Dial,
}

impl Pods {
    /// No pods yet, on the network 127.x.`third + pid % 50` of this test (x from the pid too).
    fn new(third: u32) -> Pods {
        let pid = std::process::id();
        Pods {
            net: format!("127.{}.{}", 10 + pid % 200, third + pid % 50),
            dir: tempfile::tempdir().unwrap(),
            running: BTreeMap::new(),
            dial: PLAIN.clone(),
        }
    }

    fn ip(&self, ordinal: i32) -> String {
        format!("{}.{}", self.net, ordinal + 1)
    }
    fn peer_url(&self, ordinal: i32) -> String {
        format!("http://{}:2380", self.ip(ordinal))
    }
    fn client_url(&self, ordinal: i32) -> String {
        format!("http://{}:2379", self.ip(ordinal))
    }

    /// Starts pod `ordinal` as the StatefulSet would (bootstrapped: join instead of bootstrap).
    fn start(&mut self, ordinal: i32, bootstrapped: bool) {
        let ip = self.ip(ordinal);
        let name = format!("ms-{ordinal}");
        let data = self.dir.path().join(&name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data.with_extension("log"))
            .unwrap();
        let child = Command::new(node_bin())
            .args([
                format!("--name={name}"),
                format!("--data-dir={}", data.display()),
                format!("--listen-client-urls=http://{ip}:2379"),
                format!("--advertise-client-urls=http://{ip}:2379"),
                format!("--listen-peer-urls=http://{ip}:2380"),
                format!("--initial-advertise-peer-urls=http://{ip}:2380"),
                format!("--listen-metrics-urls=http://{ip}:2381"),
                format!("--initial-cluster={name}=http://{ip}:2380"),
                format!(
                    "--initial-cluster-state={}",
                    if bootstrapped { "existing" } else { "new" }
                ),
                format!("--discovery-peer-urls={}", self.peer_url(0)),
                "--heartbeat-interval=50".into(),
                "--election-timeout=500".into(),
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.running.insert(ordinal, child);
    }

    /// Scales "the StatefulSet": pods above `replicas` go (SIGKILL if still running).
    fn scale(&mut self, replicas: i32) {
        let have: Vec<i32> = self.running.keys().copied().collect();
        for o in have.iter().filter(|o| **o >= replicas) {
            if let Some(c) = self.running.remove(o) {
                kill(c);
            }
        }
        for o in 0..replicas {
            if !self.running.contains_key(&o) {
                self.start(o, true);
            }
        }
    }

    fn endpoints(&self) -> Vec<String> {
        self.running.keys().map(|o| self.client_url(*o)).collect()
    }

    /// Runs `step` through the executor against the running pods, as observed in `v`.
    async fn execute(
        &self,
        step: &Step,
        v: &ClusterView,
        generation: &mut u64,
    ) -> Result<Outcome, ExecError> {
        let eps = self.endpoints();
        let t = Target {
            dial: &self.dial,
            endpoints: &eps,
            view: v,
            peer_url: &|o| self.peer_url(o),
        };
        executor::execute(step, &t, generation).await
    }

    fn log(&self, ordinal: i32) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("ms-{ordinal}.log")))
            .unwrap_or_default()
    }
}

impl Drop for Pods {
    fn drop(&mut self) {
        for (_, c) in std::mem::take(&mut self.running) {
            kill(c);
        }
    }
}

/// SIGKILLs a pod's process and reaps it.
fn kill(mut c: Child) {
    let _ = c.kill();
    let _ = c.wait();
}

/// What the planner sees: the view `v`, `spec_replicas` wanted, `sts_replicas` in the StatefulSet.
fn observed(v: &ClusterView, spec_replicas: i32, sts_replicas: i32) -> Observed {
    Observed {
        spec_replicas,
        sts_replicas,
        members: v
            .members
            .as_ref()
            .map(|ms| ms.iter().map(|m| m.member.clone()).collect()),
        leader: v.leader,
        bootstrapped: true,
        ..Default::default()
    }
}

fn ordinal_of(net: &str, url: &str) -> Option<i32> {
    let host = url.strip_prefix("http://")?.split(':').next()?;
    let last: i32 = host.strip_prefix(&format!("{net}."))?.parse().ok()?;
    Some(last - 1)
}

async fn view(pods: &Pods) -> ClusterView {
    let net = pods.net.clone();
    executor::observe(&pods.dial, &pods.endpoints(), move |u| ordinal_of(&net, u)).await
}

/// After a step: every member agrees on the applied voters, and the hint never claims more
/// voters than will exist after the step in flight.
async fn check_lease_status(pods: &Pods, v: &ClusterView) {
    let mut voter_counts = Vec::new();
    for m in v.members.iter().flatten() {
        let Some(u) = &m.client_url else { continue };
        if let Ok(s) = executor::lease_status(&pods.dial, u).await {
            voter_counts.push(s.voters.len());
            if m.member.is_learner {
                assert!(!s.valid, "a learner never holds a lease");
            }
        }
    }
    assert!(!voter_counts.is_empty(), "{}", pods.log(0));
}

/// Plans and executes steps until the cluster has each of `targets` voters in turn, checking
/// every member at each steady state; returns the steps taken.
async fn walk(pods: &mut Pods, targets: &[i32]) -> Vec<String> {
    let mut generation = 0u64;
    let mut sts = 1;
    let mut log = Vec::new();
    for &target in targets {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            assert!(
                Instant::now() < deadline,
                "stuck scaling to {target}: {log:#?}"
            );
            let v = view(pods).await;
            let step = plan(&observed(&v, target, sts));
            log.push(format!("{target}: {step:?}"));
            match &step {
                Step::Steady { voters } => {
                    pods.execute(&step, &v, &mut generation).await.unwrap();
                    // Every member: the applied voters, the pushed hint, lease reads allowed.
                    for m in v.members.iter().flatten() {
                        let s = executor::lease_status(&pods.dial, m.client_url.as_ref().unwrap())
                            .await
                            .unwrap();
                        assert_eq!(s.voters.len(), *voters, "{s:?}");
                        assert_eq!(s.expected_voters as usize, *voters, "{s:?}");
                        assert!(s.enabled, "{}", s.reason);
                    }
                    assert_eq!(*voters, target as usize);
                    break;
                }
                Step::ScaleStatefulSet { replicas, .. } => {
                    sts = *replicas;
                    pods.scale(sts);
                }
                // Refusals are transient here (a member still electing); the controller reports
                // them as Degraded and looks again.
                Step::Wait(_) | Step::Refuse(_) => {
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
                Step::Bootstrap => panic!("unexpected {step:?}: {log:#?}"),
                _ => {
                    match pods.execute(&step, &v, &mut generation).await {
                        Ok(Outcome::Done(what)) => log.push(format!("  done: {what}")),
                        Ok(Outcome::NotYet(why)) => {
                            log.push(format!("  not yet: {why}"));
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        Err(e) => {
                            log.push(format!("  error: {e}"));
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                    let v = view(pods).await;
                    check_lease_status(pods, &v).await;
                }
            }
        }
    }
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planner_and_executor_scale_real_members_1_3_5_3_1() {
    let mut pods = Pods::new(200);
    pods.start(0, false);
    let log = walk(&mut pods, &[3, 5, 3, 1]).await;
    // The whole walk used each kind of step.
    let all = log.join("\n");
    for kind in ["AddLearner", "Promote", "RemoveMember", "ScaleStatefulSet"] {
        assert!(all.contains(kind), "{kind} never happened:\n{all}");
    }
    eprintln!("{all}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn move_leader_and_policy_pushes_on_real_members() {
    let mut pods = Pods::new(150);
    pods.start(0, false);
    let mut generation = 0;
    // Grow to 3 with the planner, as above but compactly.
    let mut sts = 1;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline);
        let v = view(&pods).await;
        match plan(&observed(&v, 3, sts)) {
            Step::Steady { .. } => break,
            Step::ScaleStatefulSet { replicas, .. } => {
                sts = replicas;
                pods.scale(sts);
            }
            Step::Wait(_) | Step::Refuse(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            step => {
                if !matches!(
                    pods.execute(&step, &v, &mut generation).await,
                    Ok(Outcome::Done(_))
                ) {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
    let v = view(&pods).await;
    let leader = v.leader.unwrap();
    let to = v
        .members
        .iter()
        .flatten()
        .map(|m| m.member.id)
        .find(|id| *id != leader)
        .unwrap();
    let out = pods
        .execute(&Step::MoveLeader { from: leader, to }, &v, &mut generation)
        .await
        .unwrap();
    assert!(matches!(out, Outcome::Done(_)));
    assert_eq!(view(&pods).await.leader, Some(to));

    // A push of a different count pauses lease reads everywhere; an older generation is ignored.
    let urls = pods.endpoints();
    assert_eq!(
        executor::push_policy(&PLAIN, &urls, 5, generation + 10).await,
        3
    );
    for u in &urls {
        let s = executor::lease_status(&PLAIN, u).await.unwrap();
        assert!(!s.enabled && !s.valid, "{}", s.reason);
        assert_eq!((s.expected_voters, s.generation), (5, generation + 10));
    }
    assert_eq!(
        executor::push_policy(&PLAIN, &urls, 3, generation + 9).await,
        3
    );
    let s = executor::lease_status(&PLAIN, &urls[0]).await.unwrap();
    assert_eq!(s.expected_voters, 5, "older generation ignored");
    executor::push_policy(&PLAIN, &urls, 3, generation + 11).await;
    for u in &urls {
        let s = executor::lease_status(&PLAIN, u).await.unwrap();
        assert!(s.enabled, "{}", s.reason);
    }
}

/// The operator's TLS path for real: one member serving client mTLS with certificates made by
/// the operator's own `certs` module (as in Managed mode), admin calls limited to the operator's
/// common name. The operator observes it and pushes the policy with its certificate; the
/// application certificate may not push; plain http sees nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_certificates_reach_a_member_over_mutual_tls() {
    use metastore_operator::certs::{self, Usage, OPERATOR_COMMON_NAME};
    let pods = Pods::new(40);
    let ip = pods.ip(0);
    let now = time::OffsetDateTime::now_utc();
    let ca = certs::new_ca("test/tls", now).unwrap();
    let server = certs::issue(
        &ca,
        "tls",
        std::slice::from_ref(&ip),
        Usage::ServerAndClient,
        now,
    )
    .unwrap();
    let operator = certs::issue(&ca, OPERATOR_COMMON_NAME, &[], Usage::Client, now).unwrap();
    let app = certs::issue(&ca, "tls-client", &[], Usage::Client, now).unwrap();
    let d = pods.dir.path();
    for (f, text) in [
        ("ca.crt", &ca.cert),
        ("tls.crt", &server.cert),
        ("tls.key", &server.key),
    ] {
        std::fs::write(d.join(f), text).unwrap();
    }
    let url = format!("https://{ip}:2379");
    let plain_args = member_args("m0", &ip, &d.join("m0"), &format!("m0=http://{ip}:2380"));
    let mut child = Command::new(node_bin())
        .args(
            plain_args
                .iter()
                .map(|a| a.replace(&format!("http://{ip}:2379"), &url)),
        )
        .args([
            &format!("--cert-file={}", d.join("tls.crt").display()),
            &format!("--key-file={}", d.join("tls.key").display()),
            &format!("--trusted-ca-file={}", d.join("ca.crt").display()),
            "--client-cert-auth",
            &format!("--admin-cert-allowed-cn={OPERATOR_COMMON_NAME}"),
        ])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let dial = |leaf: &certs::Pem| Dial {
        tls: Some((
            ca.cert.clone().into_bytes(),
            leaf.cert.clone().into_bytes(),
            leaf.key.clone().into_bytes(),
        )),
        credentials: None,
    };
    let (op, application) = (dial(&operator), dial(&app));
    let urls = vec![url.clone()];
    let deadline = Instant::now() + Duration::from_secs(30);
    let view = loop {
        let v = executor::observe(&op, &urls, |_| Some(0)).await;
        if v.leader.is_some() {
            break v;
        }
        assert!(Instant::now() < deadline, "member not seen over TLS");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(view.members.as_ref().unwrap()[0].member.healthy);
    assert_eq!(executor::push_policy(&op, &urls, 1, 7).await, 1);
    assert_eq!(
        executor::lease_status(&op, &url).await.unwrap().generation,
        7
    );
    assert_eq!(executor::push_policy(&application, &urls, 1, 8).await, 0);
    assert!(executor::observe(&PLAIN, &urls, |_| Some(0))
        .await
        .members
        .is_none());
    let _ = child.kill();
    let _ = child.wait();
}

/// `spec.auth` as the executor carries it out: root made and auth enabled on a fresh member,
/// anonymous clients refused, membership scaled 1→3→1 by the executor as root (Cluster calls
/// and the admin API's policy pushes both authenticated), then auth turned off again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_auth_on_the_executor_scales_as_root() {
    let mut pods = Pods::new(150);
    pods.dial = Dial {
        tls: None,
        credentials: Some(("root".into(), "s3cret-root".into())),
    };
    pods.start(0, false);
    let eps = pods.endpoints();
    // A fresh member writes auth entries once its cluster version is set.
    let deadline = Instant::now() + Duration::from_secs(30);
    let first = loop {
        match executor::sync_auth(&pods.dial, &eps, true).await {
            Ok(s) => break s,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "auth never enabled: {e}\n{}",
                    pods.log(0)
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    assert_eq!(first, executor::AuthSync::Enabled { changed: true });
    assert_eq!(
        executor::sync_auth(&pods.dial, &eps, true).await.unwrap(),
        executor::AuthSync::Enabled { changed: false }
    );
    let mut anon = etcd_client::Client::connect(&eps, None).await.unwrap();
    let refused = anon.put("k", "v", None).await.unwrap_err().to_string();
    assert!(refused.contains("user name is empty"), "{refused}");
    // Without credentials the executor's calls are refused too.
    assert!(executor::lease_status(&PLAIN, &eps[0]).await.is_ok());
    assert_eq!(
        executor::push_policy(&PLAIN, &eps, 1, 1).await,
        0,
        "an anonymous policy push must be refused once auth is on"
    );
    // The walk's steady states check that the executor's own (authenticated) pushes landed.

    let log = walk(&mut pods, &[3, 1]).await;
    let all = log.join("\n");
    for kind in ["AddLearner", "Promote", "RemoveMember"] {
        assert!(all.contains(kind), "{kind} never happened:\n{all}");
    }

    let eps = pods.endpoints();
    assert_eq!(
        executor::sync_auth(&pods.dial, &eps, false).await.unwrap(),
        executor::AuthSync::Disabled { changed: true }
    );
    let mut anon = etcd_client::Client::connect(&eps, None).await.unwrap();
    anon.put("k", "v", None).await.unwrap();
}
