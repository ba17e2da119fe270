//! Where a snapshot to restore comes from: a file, or an object in an S3-compatible bucket
//! (`s3://bucket/key`, as a `MetaStoreBackup` reports it), downloaded chunk by chunk into a file
//! next to the data dir (same volume), so memory stays bounded whatever the snapshot's size.

use std::io::Write;
use std::path::{Path, PathBuf};

use futures::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::ObjectStoreExt;

/// A snapshot source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A local file.
    File(PathBuf),
    /// An object: `s3://bucket/key`.
    S3 {
        /// Bucket name.
        bucket: String,
        /// Object key.
        key: String,
    },
}

/// How to reach the bucket of an `s3://` source. Credentials come from the environment
/// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, optionally `AWS_SESSION_TOKEN`), as every
/// S3 tool reads them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3Options {
    /// Endpoint URL of a non-AWS store (path-style addressing); `None` for AWS.
    pub endpoint: Option<String>,
    /// Region (default `us-east-1`).
    pub region: Option<String>,
}

/// A source that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The source is neither a path nor `s3://bucket/key`.
    #[error("snapshot source {0:?}: expected a file path or s3://bucket/key")]
    BadSource(String),
    /// The bucket refused or failed.
    #[error("downloading s3://{bucket}/{key}: {source}")]
    Store {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// Why.
        source: object_store::Error,
    },
    /// The download file failed.
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
}

impl Source {
    /// Parses a path or `s3://bucket/key`.
    pub fn parse(s: &str) -> Result<Source, FetchError> {
        match s.strip_prefix("s3://") {
            Some(rest) => match rest.split_once('/') {
                Some((bucket, key)) if !bucket.is_empty() && !key.is_empty() => Ok(Source::S3 {
                    bucket: bucket.into(),
                    key: key.into(),
                }),
                _ => Err(FetchError::BadSource(s.into())),
            },
            None if s.is_empty() || s.contains("://") => Err(FetchError::BadSource(s.into())),
            None => Ok(Source::File(PathBuf::from(s))),
        }
    }
}

/// Downloads `s3://bucket/key` into `dest` (replaced; fsynced). Returns the bytes written.
pub fn download(bucket: &str, key: &str, opts: &S3Options, dest: &Path) -> Result<u64, FetchError> {
    let store_err = |source| FetchError::Store {
        bucket: bucket.into(),
        key: key.into(),
        source,
    };
    let io = |e| FetchError::Io(dest.to_path_buf(), e);
    let mut b = AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_region(opts.region.as_deref().unwrap_or("us-east-1"))
        .with_virtual_hosted_style_request(false);
    if let Some(e) = &opts.endpoint {
        b = b.with_endpoint(e).with_allow_http(e.starts_with("http://"));
    }
    let store = b.build().map_err(store_err)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(io)?;
    let mut file = std::fs::File::create(dest).map_err(io)?;
    let written = runtime.block_on(async {
        let got = store.get(&ObjectPath::from(key)).await.map_err(store_err)?;
        let mut chunks = got.into_stream();
        let mut n = 0u64;
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(store_err)?;
            file.write_all(&chunk).map_err(io)?;
            n += chunk.len() as u64;
        }
        Ok::<_, FetchError>(n)
    })?;
    file.sync_all().map_err(io)?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_paths_or_s3_objects() {
        assert_eq!(
            Source::parse("/backups/a.db").unwrap(),
            Source::File("/backups/a.db".into())
        );
        assert_eq!(
            Source::parse("s3://b/ns/demo/x.db").unwrap(),
            Source::S3 {
                bucket: "b".into(),
                key: "ns/demo/x.db".into()
            }
        );
        for bad in ["s3://b", "s3:///k", "s3://b/", "", "gs://b/k"] {
            assert!(Source::parse(bad).is_err(), "{bad}");
        }
    }
}
