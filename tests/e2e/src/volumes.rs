//! A hostPath volume provisioner and resizer: it binds each claim it serves to a
//! PersistentVolume of its size made for it (as a dynamic provisioner and the binder do), and
//! when a bound claim asks for more, grows the volume and reports the new capacity on the claim
//! (as the external resizer and the kubelet's filesystem resize do).
//!
//! For the real kubelet it serves every claim of the default StorageClass [`DEFAULT_CLASS`] (or
//! [`EXPANDABLE_CLASS`]): each volume is a directory of its own, owned by the pods' user (65532)
//! as a provisioner for non-root pods makes it, and deleted with its volume once the claim is
//! gone (reclaim policy Delete). For the test kubelet it serves [`EXPANDABLE_CLASS`] only; the
//! data stays in the test kubelet's claim directory, and claims of other classes stay unbound.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use serde_json::json;

/// The StorageClass whose claims this provisioner serves.
pub const EXPANDABLE_CLASS: &str = "test-expandable";
/// The default StorageClass (real kubelet).
pub const DEFAULT_CLASS: &str = "standard";
/// The user the volumes belong to: the one MetaStore's pods run as.
const POD_USER: u32 = 65532;
/// Its provisioner name.
pub const PROVISIONER: &str = "metastore.io/test-hostpath";

/// Creates the StorageClass [`EXPANDABLE_CLASS`] (once).
pub async fn ensure_class(client: &kube::Client) -> anyhow::Result<()> {
    create_class(client, EXPANDABLE_CLASS, false, "Immediate").await
}

async fn create_class(
    client: &kube::Client,
    name: &str,
    default: bool,
    binding: &str,
) -> anyhow::Result<()> {
    let classes: Api<StorageClass> = Api::all(client.clone());
    if classes.get_opt(name).await?.is_none() {
        let sc: StorageClass = serde_json::from_value(json!({
            "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": name, "annotations": {
                "storageclass.kubernetes.io/is-default-class": default.to_string()}},
            "provisioner": PROVISIONER,
            "allowVolumeExpansion": true,
            "volumeBindingMode": binding,
        }))?;
        classes.create(&PostParams::default(), &sc).await?;
    }
    Ok(())
}

/// Provisions volumes as directories under a root, for the real kubelet, until dropped.
pub struct Provisioner {
    task: tokio::task::JoinHandle<()>,
}

impl Provisioner {
    /// Creates both StorageClasses ([`DEFAULT_CLASS`] the default) and serves their claims
    /// (every 300 ms) with directories under `root`. Volumes are bound when the first pod that
    /// uses the claim is scheduled (`WaitForFirstConsumer`, as node-local provisioners do): the
    /// scheduler marks the claim with its node and waits until it is bound.
    pub async fn start(client: kube::Client, root: PathBuf) -> anyhow::Result<Provisioner> {
        create_class(&client, DEFAULT_CLASS, true, "WaitForFirstConsumer").await?;
        create_class(&client, EXPANDABLE_CLASS, false, "WaitForFirstConsumer").await?;
        std::fs::create_dir_all(&root)?;
        let task = tokio::spawn(async move {
            let claims: Api<PersistentVolumeClaim> = Api::all(client.clone());
            loop {
                match claims.list(&ListParams::default()).await {
                    Ok(list) => {
                        if let Err(e) = sync(&client, &list.items, Some(&root)).await {
                            tracing::debug!("volumes: {e}");
                        }
                        if let Err(e) = reclaim(&client, &list.items, &root).await {
                            tracing::debug!("volumes: {e}");
                        }
                    }
                    Err(e) => tracing::debug!("volumes: {e}"),
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        });
        Ok(Provisioner { task })
    }
}

impl Drop for Provisioner {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Deletes the volumes (and their directories under `root`) this provisioner made for claims
/// that are gone.
async fn reclaim(
    client: &kube::Client,
    claims: &[PersistentVolumeClaim],
    root: &Path,
) -> anyhow::Result<()> {
    let live: HashSet<String> = claims.iter().filter_map(|c| c.uid()).collect();
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    for pv in pvs.list(&ListParams::default()).await?.items {
        let ours = pv
            .annotations()
            .get("pv.kubernetes.io/provisioned-by")
            .is_some_and(|p| p == PROVISIONER);
        let claim_uid = pv
            .spec
            .as_ref()
            .and_then(|s| s.claim_ref.as_ref()?.uid.clone());
        if ours && claim_uid.as_ref().is_some_and(|u| !live.contains(u)) {
            pvs.delete(&pv.name_any(), &DeleteParams::default()).await?;
            if let Some(uid) = claim_uid {
                let _ = std::fs::remove_dir_all(root.join(uid));
            }
        }
    }
    Ok(())
}

/// Whether this provisioner serves claims of `class` (`None`: no class named).
fn serves(class: Option<&str>, real: bool) -> bool {
    match class {
        Some(EXPANDABLE_CLASS) => true,
        Some(DEFAULT_CLASS) | None => real,
        Some(_) => false,
    }
}

/// A new volume's directory under `root`, owned by the pods' user.
fn make_dir(root: &Path, uid: &str) -> anyhow::Result<PathBuf> {
    let dir = root.join(uid);
    std::fs::create_dir_all(&dir)?;
    std::os::unix::fs::chown(&dir, Some(POD_USER), Some(POD_USER))?;
    Ok(dir)
}

fn requested(c: &PersistentVolumeClaim) -> Option<String> {
    c.spec
        .as_ref()?
        .resources
        .as_ref()?
        .requests
        .as_ref()?
        .get("storage")
        .map(|q| q.0.clone())
}

/// One pass over `claims`: binds new claims it serves, grows those that ask for more. With
/// `root` (the real kubelet), volumes are directories under it.
pub async fn sync(
    client: &kube::Client,
    claims: &[PersistentVolumeClaim],
    root: Option<&Path>,
) -> anyhow::Result<()> {
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    for c in claims {
        let spec = c.spec.as_ref();
        let class = spec.and_then(|s| s.storage_class_name.as_deref());
        let node_selected = c
            .annotations()
            .contains_key("volume.kubernetes.io/selected-node");
        if !serves(class, root.is_some())
            || c.metadata.deletion_timestamp.is_some()
            || (root.is_some() && !node_selected)
        {
            continue;
        }
        let (ns, name, uid) = (
            c.namespace().unwrap_or_default(),
            c.name_any(),
            c.uid().unwrap_or_default(),
        );
        let Some(size) = requested(c) else { continue };
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
        let bound = c.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
        let pv_name = format!("pv-{uid}");
        if !bound {
            if pvs.get_opt(&pv_name).await?.is_none() {
                let path = match root {
                    Some(r) => make_dir(r, &uid)?,
                    None => PathBuf::from(format!("/var/lib/test-volumes/{uid}")),
                };
                let pv: PersistentVolume = serde_json::from_value(json!({
                    "apiVersion": "v1", "kind": "PersistentVolume",
                    "metadata": {"name": pv_name,
                        "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER}},
                    "spec": {
                        "capacity": {"storage": size},
                        "accessModes": ["ReadWriteOnce"],
                        "persistentVolumeReclaimPolicy": "Delete",
                        "storageClassName": class.unwrap_or(DEFAULT_CLASS),
                        "hostPath": {"path": path, "type": "Directory"},
                        "claimRef": {"namespace": ns, "name": name, "uid": uid},
                    },
                }))?;
                pvs.create(&PostParams::default(), &pv).await?;
            }
            let pv_bound = json!({"status": {"phase": "Bound"}});
            pvs.patch_status(&pv_name, &PatchParams::default(), &Patch::Merge(&pv_bound))
                .await?;
            claims
                .patch(
                    &name,
                    &PatchParams::default(),
                    // As the binder marks a claim it bound: the scheduler waits for both.
                    &Patch::Merge(&json!({
                        "metadata": {"annotations": {
                            "pv.kubernetes.io/bind-completed": "yes",
                            "pv.kubernetes.io/bound-by-controller": "yes"}},
                        "spec": {"volumeName": pv_name},
                    })),
                )
                .await?;
            let status = json!({"status": {"phase": "Bound", "accessModes": ["ReadWriteOnce"],
                "capacity": {"storage": size}}});
            claims
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                .await?;
            continue;
        }
        let capacity = c
            .status
            .as_ref()
            .and_then(|s| s.capacity.as_ref()?.get("storage"))
            .map(|q| q.0.clone());
        if capacity.as_deref() != Some(size.as_str()) {
            // Grown online: the volume, then the claim's reported capacity.
            let grow = json!({"spec": {"capacity": {"storage": size}}});
            pvs.patch(&pv_name, &PatchParams::default(), &Patch::Merge(&grow))
                .await?;
            let status = json!({"status": {"capacity": {"storage": size}}});
            claims
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                .await?;
        }
    }
    Ok(())
}
