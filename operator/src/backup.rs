//! Streams a member's snapshot (the Maintenance Snapshot call, as `etcdctl snapshot save` gets
//! it) into an S3-compatible bucket as a multipart upload: a bounded number of parts in flight,
//! never the whole snapshot in memory. The snapshot's own SHA-256 trailer is checked as it
//! passes, so a stream damaged in transit never becomes a backup.

use etcd_client::Client;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};
use sha2::{Digest, Sha256};

use crate::backup_crd::S3Target;
use crate::executor::{connect, Dial, ExecError};

/// Bytes per uploaded part (S3's minimum is 5 MiB, except the last).
const PART_BYTES: usize = 8 << 20;
/// Parts uploading at once: with [`PART_BYTES`], at most 32 MiB of a snapshot in memory.
const PARTS_IN_FLIGHT: usize = 4;

/// A backup that could not be made.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// No member could be reached or the snapshot call failed.
    #[error("snapshot: {0}")]
    Snapshot(String),
    /// The bucket refused or failed.
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    /// The snapshot stream was damaged or cut.
    #[error("snapshot stream: {0}")]
    Integrity(String),
}

impl From<ExecError> for BackupError {
    fn from(e: ExecError) -> Self {
        BackupError::Snapshot(e.to_string())
    }
}

impl From<etcd_client::Error> for BackupError {
    fn from(e: etcd_client::Error) -> Self {
        BackupError::Snapshot(e.to_string())
    }
}

/// Access keys for a bucket.
#[derive(Clone)]
pub struct S3Credentials {
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
}

/// The bucket of `target`.
pub fn bucket(target: &S3Target, creds: &S3Credentials) -> Result<AmazonS3, BackupError> {
    let mut b = AmazonS3Builder::new()
        .with_bucket_name(&target.bucket)
        .with_region(target.region.as_deref().unwrap_or("us-east-1"))
        .with_access_key_id(&creds.access_key_id)
        .with_secret_access_key(&creds.secret_access_key)
        .with_virtual_hosted_style_request(false);
    if let Some(e) = &target.endpoint {
        b = b.with_endpoint(e).with_allow_http(e.starts_with("http://"));
    }
    Ok(b.build()?)
}

/// A finished backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    /// `s3://bucket/key`.
    pub object_url: String,
    /// The store's revision in the snapshot.
    pub revision: i64,
    /// Bytes stored.
    pub size: u64,
    /// SHA-256 of the object, hex.
    pub sha256: String,
}

/// Checks the snapshot file's trailer: the SHA-256 of everything before its last 32 bytes.
struct TrailerCheck {
    hasher: Sha256,
    tail: Vec<u8>,
}

impl TrailerCheck {
    fn new() -> Self {
        TrailerCheck {
            hasher: Sha256::new(),
            tail: Vec::with_capacity(64),
        }
    }

    fn update(&mut self, data: &[u8]) {
        self.tail.extend_from_slice(data);
        if self.tail.len() > 32 {
            let cut = self.tail.len() - 32;
            self.hasher.update(&self.tail[..cut]);
            self.tail.drain(..cut);
        }
    }

    fn holds(self) -> bool {
        self.tail.len() == 32 && self.hasher.finalize()[..] == self.tail[..]
    }
}

/// Streams a snapshot from any of `endpoints` into `store` at `key`; `url` names the object in
/// the result. A failed upload is aborted (no partial object is left).
pub async fn upload_snapshot(
    dial: &Dial,
    endpoints: &[String],
    store: &dyn ObjectStore,
    key: &str,
    url: String,
) -> Result<Uploaded, BackupError> {
    let mut client: Client = connect(dial, endpoints).await?;
    let mut stream = client.snapshot().await?;
    let upload = store.put_multipart(&ObjectPath::from(key)).await?;
    let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
    let streamed: Result<(i64, u64, String, bool), BackupError> = async {
        let mut revision = 0;
        let mut size = 0u64;
        let mut whole = Sha256::new();
        let mut check = TrailerCheck::new();
        let mut last_remaining = None;
        while let Some(m) = stream.message().await? {
            if revision == 0 {
                revision = m.header().map_or(0, |h| h.revision());
            }
            let blob = m.blob();
            whole.update(blob);
            check.update(blob);
            size += blob.len() as u64;
            last_remaining = Some(m.remaining_bytes());
            writer.wait_for_capacity(PARTS_IN_FLIGHT).await?;
            writer.write(blob);
        }
        if last_remaining != Some(0) {
            return Err(BackupError::Integrity(format!(
                "cut short after {size} bytes"
            )));
        }
        let sha = whole
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok((revision, size, sha, check.holds()))
    }
    .await;
    match streamed {
        Ok((revision, size, sha256, true)) => {
            writer.finish().await?;
            Ok(Uploaded {
                object_url: url,
                revision,
                size,
                sha256,
            })
        }
        Ok((_, size, _, false)) => {
            let _ = writer.abort().await;
            Err(BackupError::Integrity(format!(
                "the SHA-256 trailer does not match the {size} bytes received"
            )))
        }
        Err(e) => {
            let _ = writer.abort().await;
            Err(e)
        }
    }
}

/// Deletes the object at `key` (a pruned scheduled backup).
pub async fn delete_object(store: &dyn ObjectStore, key: &str) -> Result<(), BackupError> {
    match store.delete(&ObjectPath::from(key)).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trailer_check_finds_damage_anywhere() {
        let body: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let mut file = body.clone();
        file.extend_from_slice(&Sha256::digest(&body));
        for chunk in [1usize, 7, 31, 32, 33, 4096] {
            let mut c = TrailerCheck::new();
            file.chunks(chunk).for_each(|p| c.update(p));
            assert!(c.holds(), "chunk {chunk}");
        }
        let mut bad = file.clone();
        bad[5000] ^= 1;
        let mut c = TrailerCheck::new();
        c.update(&bad);
        assert!(!c.holds());
        let mut c = TrailerCheck::new();
        c.update(&file[..20]);
        assert!(!c.holds(), "shorter than a trailer");
    }
}
