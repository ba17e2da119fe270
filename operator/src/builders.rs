//! Pure builders of the Kubernetes objects that run a MetaStore: the headless peer Service, the
//! client Service, the StatefulSet (members started with etcd-style flags from the downward API)
//! and the PodDisruptionBudget. No I/O: every object is a function of the resource and the
//! planner's decisions, so each is unit-tested.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
    StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction,
    ObjectFieldSelector, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PersistentVolumeClaimVolumeSource, PodAffinityTerm, PodAntiAffinity, PodSecurityContext,
    PodSpec, PodTemplateSpec, Probe, SeccompProfile, SecretKeySelector, SecurityContext, Service,
    ServicePort, ServiceSpec, Volume, VolumeMount, VolumeResourceRequirements,
    WeightedPodAffinityTerm,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};

use crate::bootstrap_restore::RestoreFrom;
use crate::constants::{
    APP_NAME, CLIENT_PORT, DATA_VOLUME, HOSTNAME_TOPOLOGY_KEY, LABEL_INSTANCE, LABEL_MANAGED_BY,
    LABEL_NAME, LABEL_VOTER, METRICS_PORT, OPERATOR_NAME, PEER_PORT,
};
use crate::crd::{
    CompactionMode, MetaStore, MetaStoreSpec, PvcRetention, DEFAULT_IMAGE, DEFAULT_VERSION,
};
pub use crate::names::{
    claim_ordinal, client_service_name, data_claim_name, peer_service_name, pod_host, pod_name,
};

/// Name of the init container that restores a backup into member 0's volume.
pub const RESTORE_CONTAINER: &str = "restore";
/// Volume (and where the restore init container mounts it, read-only) of a backup on a
/// PersistentVolumeClaim.
const RESTORE_SOURCE_VOLUME: &str = "restore-source";
const RESTORE_SOURCE_MOUNT: &str = "/restore-source";
use crate::tls_layout;

/// Where the data volume is mounted.
pub const DATA_MOUNT: &str = "/var/lib/metastore";
/// The node binary in the node image (its entrypoint).
pub const NODE_BINARY: &str = "/usr/local/bin/metastore-node";
/// Unprivileged user of the node image.
pub const RUN_AS_USER: i64 = 65532;

/// Peer URL of the member with `ordinal` (what MemberAdd is given).
pub fn peer_url(ms: &MetaStore, ordinal: i32) -> String {
    let scheme = tls_layout::scheme(tls_layout::peer_tls(ms));
    format!("{scheme}://{}:{PEER_PORT}", pod_host(ms, ordinal))
}

/// Client URL of the member with `ordinal`.
pub fn client_url(ms: &MetaStore, ordinal: i32) -> String {
    let scheme = tls_layout::scheme(tls_layout::client_tls(ms));
    format!("{scheme}://{}:{CLIENT_PORT}", pod_host(ms, ordinal))
}

/// Labels that select a cluster's pods.
pub fn selector_labels(ms: &MetaStore) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_NAME.to_string(), APP_NAME.to_string()),
        (LABEL_INSTANCE.to_string(), ms.name_any()),
    ])
}

/// Labels of the pods of this MetaStore's voters (the operator labels them as it sees the
/// members' roles).
pub fn voter_labels(ms: &MetaStore) -> BTreeMap<String, String> {
    let mut l = selector_labels(ms);
    l.insert(LABEL_VOTER.to_string(), "true".to_string());
    l
}

/// The selector as a string (status.selector, for the scale subresource).
pub fn selector_string(ms: &MetaStore) -> String {
    selector_labels(ms)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The labels of every object made for `ms` (its selector labels among them).
pub fn labels(ms: &MetaStore) -> BTreeMap<String, String> {
    let mut l = selector_labels(ms);
    l.insert(LABEL_MANAGED_BY.into(), OPERATOR_NAME.into());
    l
}

fn owner(ms: &MetaStore) -> Vec<OwnerReference> {
    ms.controller_owner_ref(&()).into_iter().collect()
}

/// Metadata of an object the operator owns for `ms`: its name, namespace, labels and owner.
pub fn meta(ms: &MetaStore, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: ms.namespace(),
        labels: Some(labels(ms)),
        owner_references: Some(owner(ms)),
        ..Default::default()
    }
}

fn port(name: &str, port: i32) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port,
        target_port: Some(IntOrString::Int(port)),
        ..Default::default()
    }
}

/// Headless Service: stable per-pod DNS names, published before pods are ready so members can
/// find each other while starting (as etcd's operators do).
pub fn peer_service(ms: &MetaStore) -> Service {
    Service {
        metadata: meta(ms, peer_service_name(ms)),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(selector_labels(ms)),
            ports: Some(vec![port("peer", PEER_PORT), port("client", CLIENT_PORT)]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The Service clients connect to (ready members only).
pub fn client_service(ms: &MetaStore) -> Service {
    Service {
        metadata: meta(ms, client_service_name(ms)),
        spec: Some(ServiceSpec {
            selector: Some(selector_labels(ms)),
            ports: Some(vec![
                port("client", CLIENT_PORT),
                port("metrics", METRICS_PORT),
            ]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Smallest number of members that must stay up: a quorum of `voters`.
pub fn quorum(voters: i32) -> i32 {
    voters.max(1) / 2 + 1
}

/// PodDisruptionBudget keeping a quorum of the current voters.
pub fn pod_disruption_budget(ms: &MetaStore, voters: i32) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: meta(ms, ms.name_any()),
        spec: Some(PodDisruptionBudgetSpec {
            min_available: Some(IntOrString::Int(quorum(voters))),
            // Voters' pods only: a learner's pod does not count towards the quorum it keeps.
            selector: Some(LabelSelector {
                match_labels: Some(voter_labels(ms)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn env_from_field(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The member's flags. Pod-specific values come from the downward API (`$(POD_NAME)`,
/// `$(POD_NAMESPACE)`, `$(POD_IP)`, expanded by the kubelet). `bootstrapped` switches new pods
/// from bootstrapping a cluster to joining it; `admin_cn` is the certificate common name allowed
/// to make admin calls under client TLS (the operator's).
pub fn member_args(ms: &MetaStore, bootstrapped: bool, admin_cn: Option<&str>) -> Vec<String> {
    let peer_svc = peer_service_name(ms);
    let host = format!("$(POD_NAME).{peer_svc}.$(POD_NAMESPACE).svc");
    let spec = &ms.spec;
    let c = tls_layout::scheme(tls_layout::client_tls(ms));
    let p = tls_layout::scheme(tls_layout::peer_tls(ms));
    // Metrics stay plain http: kubelet probes and Prometheus scrape them without certificates.
    let mut args = vec![
        "--name=$(POD_NAME)".to_string(),
        format!("--data-dir={DATA_MOUNT}/data"),
        format!("--listen-client-urls={c}://$(POD_IP):{CLIENT_PORT}"),
        format!("--advertise-client-urls={c}://{host}:{CLIENT_PORT}"),
        format!("--listen-peer-urls={p}://$(POD_IP):{PEER_PORT}"),
        format!("--initial-advertise-peer-urls={p}://{host}:{PEER_PORT}"),
        format!("--listen-metrics-urls=http://$(POD_IP):{METRICS_PORT}"),
        format!("--initial-cluster=$(POD_NAME)={p}://{host}:{PEER_PORT}"),
        format!(
            "--initial-cluster-state={}",
            if bootstrapped { "existing" } else { "new" }
        ),
        format!(
            "--initial-cluster-token={}",
            ms.uid().unwrap_or_else(|| ms.name_any())
        ),
        format!("--discovery-peer-urls={p}://{peer_svc}.$(POD_NAMESPACE).svc:{PEER_PORT}"),
        format!("--lease-read={}", spec.lease_read.enabled),
    ];
    if let Some(hb) = spec.heartbeat_interval_ms {
        args.push(format!("--heartbeat-interval={hb}"));
    }
    if let Some(et) = spec.election_timeout_ms {
        args.push(format!("--election-timeout={et}"));
    }
    if let Some(d) = spec.lease_read.max_clock_drift {
        args.push(format!("--max-clock-drift={d}"));
    }
    let mode = match spec.auto_compaction.mode {
        CompactionMode::Periodic => "periodic",
        CompactionMode::Revision => "revision",
    };
    args.push(format!("--auto-compaction-mode={mode}"));
    args.push(format!(
        "--auto-compaction-retention={}",
        spec.auto_compaction.retention
    ));
    let quota = match spec.quota_backend_bytes {
        Some(q) => Some(q.max(1) as u64),
        None => quantity_bytes(&volume_size(spec)).map(quota_for_volume),
    };
    if let Some(quota) = quota {
        args.push(format!("--quota-backend-bytes={quota}"));
    }
    args.extend(tls_layout::member_flags(ms, admin_cn));
    // Last: the validation refused any flag set above.
    args.extend(spec.extra_args.iter().cloned());
    args
}

/// The flags the operator sets for `spec` (without values), which `spec.extraArgs` may not.
pub fn managed_flags(spec: &MetaStoreSpec) -> Vec<String> {
    let ms = MetaStore::new(
        "x",
        MetaStoreSpec {
            extra_args: Vec::new(),
            ..spec.clone()
        },
    );
    let mut flags: Vec<String> = member_args(&ms, true, Some("x"))
        .into_iter()
        .chain(member_args(&ms, false, Some("x")))
        .map(|a| a.split('=').next().unwrap_or_default().to_string())
        .collect();
    // Set or not depending on other fields: refused all the same.
    flags.extend(
        [
            "--heartbeat-interval",
            "--election-timeout",
            "--max-clock-drift",
            "--quota-backend-bytes",
            "--client-cert-auth",
            "--cert-file",
            "--key-file",
            "--trusted-ca-file",
            "--peer-client-cert-auth",
            "--peer-cert-file",
            "--peer-key-file",
            "--peer-trusted-ca-file",
            "--admin-cert-allowed-cn",
        ]
        .map(String::from),
    );
    flags.sort();
    flags.dedup();
    flags
}

/// The volume size of each member (default 1Gi).
pub fn volume_size(spec: &MetaStoreSpec) -> Quantity {
    spec.storage
        .size
        .clone()
        .unwrap_or_else(|| Quantity("1Gi".into()))
}

/// The space quota a volume of `bytes` can hold (docs/operations.md, "Disk"): a member's data
/// dir peaks at about two snapshots of its state plus its log, so the quota is a quarter of
/// the volume (256 MiB on the default 1 GiB volume).
pub fn quota_for_volume(bytes: u64) -> u64 {
    bytes / 4
}

/// Bytes of a Kubernetes quantity (`1Gi`, `500M`, `1e9`, `1073741824`); `None` for a malformed
/// or fractional one.
pub fn quantity_bytes(q: &Quantity) -> Option<u64> {
    let s = q.0.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let mult: f64 = match suffix {
        "" => 1.0,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        e if e.starts_with(['e', 'E']) => 10f64.powi(e[1..].parse().ok()?),
        _ => return None,
    };
    let n: f64 = num.parse().ok()?;
    let bytes = n * mult;
    (bytes.is_finite() && bytes >= 1.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

fn http_probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(METRICS_PORT),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(2),
        ..Default::default()
    }
}

fn default_affinity(ms: &MetaStore) -> Affinity {
    Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                WeightedPodAffinityTerm {
                    weight: 100,
                    pod_affinity_term: PodAffinityTerm {
                        topology_key: HOSTNAME_TOPOLOGY_KEY.into(),
                        label_selector: Some(LabelSelector {
                            match_labels: Some(selector_labels(ms)),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                },
            ]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn retention(r: PvcRetention) -> String {
    match r {
        PvcRetention::Retain => "Retain".into(),
        PvcRetention::Delete => "Delete".into(),
    }
}

fn env_from_secret(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The downward-API variables member flags refer to.
fn pod_env() -> Vec<EnvVar> {
    vec![
        env_from_field("POD_NAME", "metadata.name"),
        env_from_field("POD_NAMESPACE", "metadata.namespace"),
        env_from_field("POD_IP", "status.podIP"),
    ]
}

/// `args` with `--initial-cluster-token` replaced by `token`, if given. The token makes the
/// founding member's id, so the restore and the member it restores must agree on it.
fn with_token(args: Vec<String>, token: Option<&str>) -> Vec<String> {
    const FLAG: &str = "--initial-cluster-token=";
    args.into_iter()
        .map(|a| match token {
            Some(t) if a.starts_with(FLAG) => format!("{FLAG}{t}"),
            _ => a,
        })
        .collect()
}

/// The init container that restores `from` into member 0's empty volume before the member first
/// starts (`snapshot restore … --skip-if-initialized`: a no-op once the volume holds a member).
/// It takes the member's own flags, so the restored member is exactly the one that then starts.
pub fn restore_init_container(
    ms: &MetaStore,
    from: &RestoreFrom,
    admin_cn: Option<&str>,
    image: &str,
    mounts: Vec<VolumeMount>,
    security: SecurityContext,
) -> Container {
    let source = match &from.pvc {
        Some(f) => format!("{RESTORE_SOURCE_MOUNT}/{}", f.path),
        None => from.url.clone(),
    };
    let mut args = vec![
        "snapshot".to_string(),
        "restore".into(),
        source,
        "--skip-if-initialized".into(),
    ];
    if let Some(e) = &from.endpoint {
        args.push(format!("--s3-endpoint={e}"));
    }
    if let Some(r) = &from.region {
        args.push(format!("--s3-region={r}"));
    }
    args.extend(with_token(
        member_args(ms, false, admin_cn),
        from.cluster_token.as_deref(),
    ));
    let mut env = pod_env();
    if let Some(secret) = &from.credentials_secret {
        env.push(env_from_secret("AWS_ACCESS_KEY_ID", secret, "accessKeyId"));
        env.push(env_from_secret(
            "AWS_SECRET_ACCESS_KEY",
            secret,
            "secretAccessKey",
        ));
    }
    let mut mounts = mounts;
    if from.pvc.is_some() {
        mounts.push(VolumeMount {
            name: RESTORE_SOURCE_VOLUME.into(),
            mount_path: RESTORE_SOURCE_MOUNT.into(),
            read_only: Some(true),
            ..Default::default()
        });
    }
    Container {
        name: RESTORE_CONTAINER.into(),
        image: Some(image.into()),
        command: Some(vec![NODE_BINARY.into()]),
        args: Some(args),
        env: Some(env),
        volume_mounts: Some(mounts),
        security_context: Some(security),
        ..Default::default()
    }
}

/// Client URLs of the members a backup asks for a snapshot: one per voter in status (the spec's
/// count before there is one).
pub fn member_client_urls(ms: &MetaStore) -> Vec<String> {
    let voters = ms
        .status
        .as_ref()
        .map_or(ms.spec.replicas, |s| s.replicas)
        .max(1);
    (0..voters).map(|k| client_url(ms, k)).collect()
}

/// The image members (and backup Jobs) run: `spec.image:spec.version`.
pub fn member_image(ms: &MetaStore) -> String {
    format!(
        "{}:{}",
        ms.spec.image.as_deref().unwrap_or(DEFAULT_IMAGE),
        ms.spec.version.as_deref().unwrap_or(DEFAULT_VERSION)
    )
}

/// A member's (or backup Job's) container security: non-root, read-only root, no privileges.
pub fn container_security() -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS_USER),
        run_as_group: Some(RUN_AS_USER),
        read_only_root_filesystem: Some(true),
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Default::default()
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The StatefulSet running `replicas` member pods (the planner decides how many). Until the
/// cluster exists (`bootstrapped` false), `restore` gives member 0 the backup to start from.
pub fn stateful_set(
    ms: &MetaStore,
    replicas: i32,
    bootstrapped: bool,
    admin_cn: Option<&str>,
    restore: Option<&RestoreFrom>,
) -> StatefulSet {
    let spec = &ms.spec;
    let image = member_image(ms);
    let (tls_volumes, tls_mounts) = tls_layout::volumes(ms);
    let mut pod_labels = spec.pod_template.labels.clone();
    pod_labels.extend(labels(ms));
    let mounts: Vec<VolumeMount> = std::iter::once(VolumeMount {
        name: DATA_VOLUME.into(),
        mount_path: DATA_MOUNT.into(),
        ..Default::default()
    })
    .chain(tls_mounts)
    .collect();
    let security = container_security();
    let mut volumes = tls_volumes;
    if let Some(f) = restore
        .filter(|_| !bootstrapped)
        .and_then(|r| r.pvc.as_ref())
    {
        volumes.push(Volume {
            name: RESTORE_SOURCE_VOLUME.into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: f.claim_name.clone(),
                read_only: Some(true),
            }),
            ..Default::default()
        });
    }
    let init_containers = restore.filter(|_| !bootstrapped).map(|from| {
        vec![restore_init_container(
            ms,
            from,
            admin_cn,
            &image,
            mounts.clone(),
            security.clone(),
        )]
    });
    let container = Container {
        name: "metastore".into(),
        // A member that cannot start says why in its last log lines; the operator reads them
        // there (see `lost_data`).
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        image: Some(image),
        args: Some(with_token(
            member_args(ms, bootstrapped, admin_cn),
            restore
                .filter(|_| !bootstrapped)
                .and_then(|r| r.cluster_token.as_deref()),
        )),
        env: Some(pod_env()),
        ports: Some(vec![
            ContainerPort {
                name: Some("client".into()),
                container_port: CLIENT_PORT,
                ..Default::default()
            },
            ContainerPort {
                name: Some("peer".into()),
                container_port: PEER_PORT,
                ..Default::default()
            },
            ContainerPort {
                name: Some("metrics".into()),
                container_port: METRICS_PORT,
                ..Default::default()
            },
        ]),
        readiness_probe: Some(http_probe("/readyz", 2, 3)),
        liveness_probe: Some(http_probe("/livez", 10, 3)),
        startup_probe: Some(http_probe("/livez", 2, 60)),
        resources: spec.resources.clone(),
        volume_mounts: Some(mounts),
        security_context: Some(security),
        ..Default::default()
    };
    let size = volume_size(spec);
    let pvc = PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(DATA_VOLUME.into()),
            labels: Some(selector_labels(ms)),
            ..Default::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: spec.storage.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".to_string(), size)])),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let annotations =
        (!spec.pod_template.annotations.is_empty()).then(|| spec.pod_template.annotations.clone());
    StatefulSet {
        metadata: meta(ms, ms.name_any()),
        spec: StatefulSetSpec {
            replicas: Some(replicas),
            service_name: Some(peer_service_name(ms)),
            // Members are added and removed one at a time by the operator; pods need not wait
            // for each other.
            pod_management_policy: Some("Parallel".into()),
            // The operator restarts members itself, one at a time, only while the others keep
            // a quorum, followers first and the leader last after handing leadership over
            // (`rollout`); the StatefulSet controller would roll by ordinal, gated on readiness.
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("OnDelete".into()),
                rolling_update: None,
            }),
            selector: LabelSelector {
                match_labels: Some(selector_labels(ms)),
                ..Default::default()
            },
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_scaled: Some(retention(spec.storage.retention_on_scale_down)),
                    when_deleted: Some(retention(spec.storage.retention_on_delete)),
                },
            ),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations,
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    init_containers,
                    containers: vec![container],
                    volumes: (!volumes.is_empty()).then_some(volumes),
                    affinity: Some(
                        spec.pod_template
                            .affinity
                            .clone()
                            .unwrap_or_else(|| default_affinity(ms)),
                    ),
                    tolerations: (!spec.pod_template.tolerations.is_empty())
                        .then(|| spec.pod_template.tolerations.clone()),
                    node_selector: (!spec.pod_template.node_selector.is_empty())
                        .then(|| spec.pod_template.node_selector.clone()),
                    priority_class_name: spec.pod_template.priority_class_name.clone(),
                    security_context: Some(PodSecurityContext {
                        fs_group: Some(RUN_AS_USER),
                        run_as_non_root: Some(true),
                        ..Default::default()
                    }),
                    termination_grace_period_seconds: Some(30),
                    ..Default::default()
                }),
            },
            volume_claim_templates: Some(vec![pvc]),
            ..Default::default()
        },
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::MetaStoreSpec;

    fn ms(json: serde_json::Value) -> MetaStore {
        let spec: MetaStoreSpec = serde_json::from_value(json).unwrap();
        let mut m = MetaStore::new("demo", spec);
        m.metadata.namespace = Some("prod".into());
        m.metadata.uid = Some("uid-1".into());
        m
    }

    fn pod(s: &StatefulSet) -> &PodSpec {
        s.spec.template.spec.as_ref().unwrap()
    }

    fn container(s: &StatefulSet) -> &Container {
        &pod(s).containers[0]
    }

    #[test]
    fn args_are_etcd_style_from_the_downward_api() {
        let m = ms(
            serde_json::json!({"replicas": 3, "heartbeatIntervalMs": 50, "electionTimeoutMs": 500,
            "leaseRead": {"enabled": false, "maxClockDrift": 0.2}}),
        );
        let args = member_args(&m, false, None);
        for want in [
            "--name=$(POD_NAME)",
            "--data-dir=/var/lib/metastore/data",
            "--listen-client-urls=http://$(POD_IP):2379",
            "--advertise-client-urls=http://$(POD_NAME).demo-peer.$(POD_NAMESPACE).svc:2379",
            "--initial-advertise-peer-urls=http://$(POD_NAME).demo-peer.$(POD_NAMESPACE).svc:2380",
            "--initial-cluster=$(POD_NAME)=http://$(POD_NAME).demo-peer.$(POD_NAMESPACE).svc:2380",
            "--initial-cluster-state=new",
            "--initial-cluster-token=uid-1",
            "--discovery-peer-urls=http://demo-peer.$(POD_NAMESPACE).svc:2380",
            "--heartbeat-interval=50",
            "--election-timeout=500",
            "--lease-read=false",
            "--max-clock-drift=0.2",
            // Defaults: history compacted, quota a quarter of the default 1Gi volume.
            "--auto-compaction-mode=periodic",
            "--auto-compaction-retention=5m",
            "--quota-backend-bytes=268435456",
        ] {
            assert!(args.iter().any(|a| a == want), "missing {want} in {args:?}");
        }
        let m = ms(
            serde_json::json!({"replicas": 1, "storage": {"size": "8Gi"},
            "autoCompaction": {"mode": "Revision", "retention": "10000"}}),
        );
        let args = member_args(&m, false, None);
        for want in [
            "--auto-compaction-mode=revision",
            "--auto-compaction-retention=10000",
            "--quota-backend-bytes=2147483648",
        ] {
            assert!(args.iter().any(|a| a == want), "missing {want} in {args:?}");
        }
        assert!(member_args(&m, true, None)
            .iter()
            .any(|a| a == "--initial-cluster-state=existing"));
        assert_eq!(peer_url(&m, 2), "http://demo-2.demo-peer.prod.svc:2380");
        assert_eq!(client_url(&m, 0), "http://demo-0.demo-peer.prod.svc:2379");
    }

    #[test]
    fn quantities_parse_to_bytes() {
        for (q, want) in [
            ("1Gi", Some(1u64 << 30)),
            ("512Mi", Some(512 << 20)),
            ("1.5Gi", Some(3 << 29)),
            ("500M", Some(500_000_000)),
            ("2G", Some(2_000_000_000)),
            ("1e9", Some(1_000_000_000)),
            ("1073741824", Some(1 << 30)),
            ("10Xi", None),
            ("", None),
            ("Gi", None),
        ] {
            assert_eq!(quantity_bytes(&Quantity(q.into())), want, "{q}");
        }
    }

    #[test]
    fn stateful_set_ports_probes_storage_security_and_owner() {
        let m = ms(
            serde_json::json!({"replicas": 3, "storage": {"size": "5Gi", "storageClassName": "fast",
            "retentionOnScaleDown": "Delete"}, "podTemplate": {"labels": {"team": "a"},
            "nodeSelector": {"disk": "ssd"}, "priorityClassName": "high"}}),
        );
        let s = stateful_set(&m, 2, true, None, None);
        assert!(pod(&s).init_containers.is_none());
        let spec = &s.spec;
        assert_eq!(spec.replicas, Some(2));
        assert_eq!(spec.service_name.as_deref(), Some("demo-peer"));
        let c = container(&s);
        assert_eq!(
            c.image.as_deref(),
            Some(format!("metastore-node:{}", env!("CARGO_PKG_VERSION")).as_str())
        );
        let ports: Vec<i32> = c
            .ports
            .as_ref()
            .unwrap()
            .iter()
            .map(|p| p.container_port)
            .collect();
        assert_eq!(ports, [2379, 2380, 2381]);
        let path = |p: &Option<Probe>| p.as_ref().unwrap().http_get.as_ref().unwrap().path.clone();
        assert_eq!(path(&c.readiness_probe).as_deref(), Some("/readyz"));
        assert_eq!(path(&c.liveness_probe).as_deref(), Some("/livez"));
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        let pvc = &spec.volume_claim_templates.as_ref().unwrap()[0];
        let pvc_spec = pvc.spec.as_ref().unwrap();
        assert_eq!(pvc_spec.storage_class_name.as_deref(), Some("fast"));
        assert_eq!(
            pvc_spec
                .resources
                .as_ref()
                .unwrap()
                .requests
                .as_ref()
                .unwrap()["storage"],
            Quantity("5Gi".into())
        );
        let ret = spec
            .persistent_volume_claim_retention_policy
            .as_ref()
            .unwrap();
        assert_eq!(ret.when_scaled.as_deref(), Some("Delete"));
        assert_eq!(ret.when_deleted.as_deref(), Some("Retain"));
        let pod = spec.template.spec.as_ref().unwrap();
        assert_eq!(pod.priority_class_name.as_deref(), Some("high"));
        assert_eq!(pod.node_selector.as_ref().unwrap()["disk"], "ssd");
        assert!(pod.affinity.as_ref().unwrap().pod_anti_affinity.is_some());
        let labels = spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .as_ref()
            .unwrap();
        assert_eq!(labels["team"], "a");
        assert_eq!(labels["app.kubernetes.io/instance"], "demo");
        // Owned by the MetaStore, so deleting it deletes everything.
        let owners = s.metadata.owner_references.as_ref().unwrap();
        assert_eq!(owners[0].kind, "MetaStore");
        assert_eq!(owners[0].controller, Some(true));
    }

    #[test]
    fn a_restoring_cluster_gives_member_0_an_init_container_until_it_exists() {
        let m = ms(serde_json::json!({"replicas": 3}));
        let from = RestoreFrom {
            url: "s3://b/prod/demo/nightly.db".into(),
            endpoint: Some("http://s3.storage:8333".into()),
            region: None,
            credentials_secret: Some("creds".into()),
            pvc: None,
            cluster_token: None,
        };
        let s = stateful_set(&m, 1, false, None, Some(&from));
        let spec = pod(&s);
        let init = &spec.init_containers.as_ref().unwrap()[0];
        let args = init.args.as_ref().unwrap();
        assert_eq!(
            args[..5],
            [
                "snapshot",
                "restore",
                "s3://b/prod/demo/nightly.db",
                "--skip-if-initialized",
                "--s3-endpoint=http://s3.storage:8333"
            ]
        );
        // The member's own flags, as a founding member: the restored member is the one that
        // then starts.
        assert_eq!(args[5..], member_args(&m, false, None));
        assert_eq!(init.volume_mounts, spec.containers[0].volume_mounts);
        assert_eq!(init.image, spec.containers[0].image);
        let secret_keys: Vec<(String, String, String)> = init
            .env
            .iter()
            .flatten()
            .filter_map(|e| {
                let r = e.value_from.as_ref()?.secret_key_ref.as_ref()?;
                Some((e.name.clone(), r.name.clone(), r.key.clone()))
            })
            .collect();
        assert_eq!(
            secret_keys,
            [
                (
                    "AWS_ACCESS_KEY_ID".into(),
                    "creds".into(),
                    "accessKeyId".into()
                ),
                (
                    "AWS_SECRET_ACCESS_KEY".into(),
                    "creds".into(),
                    "secretAccessKey".into()
                )
            ]
        );
        // Once the cluster exists, new pods join it: nothing to restore.
        let s = stateful_set(&m, 1, true, None, Some(&from));
        assert!(pod(&s).init_containers.is_none());
        // A recovery restores under a token of its own (a cluster id unlike the lost one's).
        let recovery = RestoreFrom {
            cluster_token: Some("uid-1-recovered-7".into()),
            ..from
        };
        let s = stateful_set(&m, 1, false, None, Some(&recovery));
        let args = pod(&s).init_containers.clone().unwrap()[0]
            .args
            .clone()
            .unwrap();
        let tokens: Vec<&String> = args
            .iter()
            .filter(|a| a.starts_with("--initial-cluster-token="))
            .collect();
        assert_eq!(tokens, ["--initial-cluster-token=uid-1-recovered-7"]);
        // The member it restores starts under the same token (it makes the member's id).
        let main = pod(&s).containers[0].args.clone().unwrap();
        assert!(main.contains(&"--initial-cluster-token=uid-1-recovered-7".to_string()));
    }

    #[test]
    fn services_and_pdb() {
        let m = ms(serde_json::json!({"replicas": 5}));
        let peer = peer_service(&m);
        let ps = peer.spec.as_ref().unwrap();
        assert_eq!(ps.cluster_ip.as_deref(), Some("None"));
        assert_eq!(ps.publish_not_ready_addresses, Some(true));
        let client = client_service(&m);
        assert_eq!(client.metadata.name.as_deref(), Some("demo-client"));
        assert_eq!(
            client.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].port,
            2379
        );
        for (voters, min) in [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3)] {
            let spec = pod_disruption_budget(&m, voters).spec.unwrap();
            assert_eq!(
                spec.min_available,
                Some(IntOrString::Int(min)),
                "{voters} voters"
            );
            let labels = spec.selector.unwrap().match_labels.unwrap();
            assert_eq!(
                labels.get("metastore.io/voter").map(String::as_str),
                Some("true")
            );
        }
        assert_eq!(
            selector_string(&m),
            "app.kubernetes.io/instance=demo,app.kubernetes.io/name=metastore"
        );
    }
}
