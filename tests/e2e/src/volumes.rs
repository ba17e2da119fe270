//! A volume provisioner and resizer for the test kubelet's StorageClass [`EXPANDABLE_CLASS`]
//! (`allowVolumeExpansion: true`): it binds each claim of that class to a PersistentVolume of
//! its size made for it (as a dynamic provisioner and the binder do), and when a bound claim asks
//! for more, grows the volume and reports the new capacity on the claim (as the external
//! resizer and the kubelet's filesystem resize do). The data stays in the kubelet's claim
//! directory; claims of other classes (or none) stay unbound, as before.

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use serde_json::json;

/// The StorageClass whose claims this provisioner serves.
pub const EXPANDABLE_CLASS: &str = "test-expandable";
/// Its provisioner name.
pub const PROVISIONER: &str = "metastore.io/test-hostpath";

/// Creates the StorageClass (once).
pub async fn ensure_class(client: &kube::Client) -> anyhow::Result<()> {
    let classes: Api<StorageClass> = Api::all(client.clone());
    if classes.get_opt(EXPANDABLE_CLASS).await?.is_none() {
        let sc: StorageClass = serde_json::from_value(json!({
            "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": EXPANDABLE_CLASS},
            "provisioner": PROVISIONER,
            "allowVolumeExpansion": true,
            "volumeBindingMode": "Immediate",
        }))?;
        classes.create(&PostParams::default(), &sc).await?;
    }
    Ok(())
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

/// One pass over `claims`: binds new claims of the class, grows those that ask for more.
pub async fn sync(client: &kube::Client, claims: &[PersistentVolumeClaim]) -> anyhow::Result<()> {
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    for c in claims {
        let spec = c.spec.as_ref();
        if spec.and_then(|s| s.storage_class_name.as_deref()) != Some(EXPANDABLE_CLASS)
            || c.metadata.deletion_timestamp.is_some()
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
                let pv: PersistentVolume = serde_json::from_value(json!({
                    "apiVersion": "v1", "kind": "PersistentVolume",
                    "metadata": {"name": pv_name,
                        "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER}},
                    "spec": {
                        "capacity": {"storage": size},
                        "accessModes": ["ReadWriteOnce"],
                        "persistentVolumeReclaimPolicy": "Delete",
                        "storageClassName": EXPANDABLE_CLASS,
                        "hostPath": {"path": format!("/var/lib/test-volumes/{uid}")},
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
                    &Patch::Merge(&json!({"spec": {"volumeName": pv_name}})),
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
