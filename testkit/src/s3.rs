//! A real S3-compatible server for tests: SeaweedFS (`weed server` with S3) on loopback, from the
//! binary `scripts/seaweedfs.sh` builds (its path in `METASTORE_WEED`, set by the Makefile), with
//! static credentials; buckets and objects reached with curl's own SigV4 signing. Stopped (and
//! its files removed) when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The access key the server accepts.
pub const ACCESS_KEY: &str = "metastore-test";
/// Its secret key.
pub const SECRET_KEY: &str = "metastore-test-secret";

/// A running SeaweedFS.
pub struct SeaweedFs {
    child: Child,
    dir: tempfile::TempDir,
    ports: [u16; 5],
    /// The S3 endpoint, `http://<ip>:<port>`.
    pub endpoint: String,
}

/// The `weed` binary: `METASTORE_WEED`, else what `scripts/seaweedfs.sh` prints (building it
/// once if needed).
pub fn weed_bin() -> PathBuf {
    if let Ok(p) = std::env::var("METASTORE_WEED") {
        return PathBuf::from(p);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/seaweedfs.sh");
    let out = Command::new("bash")
        .arg(script)
        .stderr(Stdio::inherit())
        .output()
        .expect("scripts/seaweedfs.sh");
    let text = String::from_utf8_lossy(&out.stdout);
    PathBuf::from(text.lines().last().expect("weed path").trim())
}

impl SeaweedFs {
    /// Starts `weed mini` (master, volume, filer, S3, admin in one process) on 127.0.0.1 at
    /// `base` … `base + 4`; each also takes port + 10000 for gRPC, which must stay below the
    /// ephemeral range (32768), so `base` must be below 22760. Waits until a signed request is
    /// answered (an anonymous 403 comes before the credentials are loaded).
    pub fn start(base: u16) -> SeaweedFs {
        SeaweedFs::start_on("127.0.0.1", base)
    }

    /// As [`SeaweedFs::start`], on address `ip` (one pods can reach, in the e2e).
    pub fn start_on(ip: &str, base: u16) -> SeaweedFs {
        assert!(
            base < 22760,
            "SeaweedFS gRPC ports would reach the ephemeral range"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let conf = dir.path().join("conf");
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        std::fs::create_dir_all(&conf).unwrap();
        std::fs::write(
            conf.join("s3.json"),
            format!(
                r#"{{"identities":[{{"name":"metastore","credentials":[{{"accessKey":"{ACCESS_KEY}","secretKey":"{SECRET_KEY}"}}],"actions":["Admin","Read","Write","List","Tagging"]}}]}}"#
            ),
        )
        .unwrap();
        let ports = [base, base + 1, base + 2, base + 3, base + 4];
        let log = std::fs::File::create(dir.path().join("weed.log")).unwrap();
        let p = |d: &Path| d.display().to_string();
        let child = Command::new(weed_bin())
            .args([
                "-logtostderr".to_string(),
                format!("-config_dir={}", p(&conf)),
                "mini".into(),
                format!("-dir={}", p(&dir.path().join("data"))),
                format!("-ip={ip}"),
                format!("-ip.bind={ip}"),
                format!("-master.port={}", ports[0]),
                format!("-volume.port={}", ports[1]),
                format!("-filer.port={}", ports[2]),
                format!("-s3.port={}", ports[3]),
                format!("-admin.port={}", ports[4]),
                "-admin.port.legacy=0".into(),
                "-admin.ui=false".into(),
                "-webdav=false".into(),
                "-s3.port.iceberg=0".into(),
                "-s3.port.lance=0".into(),
                format!("-s3.config={}", p(&conf.join("s3.json"))),
                "-master.telemetry=false".into(),
                "-master.volumeSizeLimitMB=64".into(),
                "-volume.max=100".into(),
                format!("-filer.localSocket={}", p(&dir.path().join("filer.sock"))),
                format!("-s3.localSocket={}", p(&dir.path().join("s3.sock"))),
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start weed");
        let endpoint = format!("http://{ip}:{}", ports[3]);
        let mut s = SeaweedFs {
            child,
            dir,
            ports,
            endpoint,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !s.request("GET", "/", None).0 {
            if let Ok(Some(st)) = s.child.try_wait() {
                panic!("weed exited ({st}):\n{}", s.log());
            }
            assert!(Instant::now() < deadline, "S3 did not answer:\n{}", s.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        s
    }

    /// The server's log.
    pub fn log(&self) -> String {
        let t = std::fs::read_to_string(self.dir.path().join("weed.log")).unwrap_or_default();
        crate::tail(&t)
    }

    /// A signed S3 request with curl: `method` on `path` (`/bucket/key?query`); returns
    /// (success, body).
    pub fn request(&self, method: &str, path: &str, out: Option<&Path>) -> (bool, Vec<u8>) {
        let mut c = Command::new("curl");
        c.args([
            "-fsS",
            "--aws-sigv4",
            "aws:amz:us-east-1:s3",
            "--user",
            &format!("{ACCESS_KEY}:{SECRET_KEY}"),
            "-X",
            method,
            &format!("{}{path}", self.endpoint),
        ]);
        if let Some(o) = out {
            c.arg("-o").arg(o);
        }
        let o = c.output().expect("curl");
        (o.status.success(), o.stdout)
    }

    /// Uploads the file `from` as `/bucket/key`.
    pub fn put_file(&self, bucket: &str, key: &str, from: &Path) {
        let o = Command::new("curl")
            .args([
                "-fsS",
                "--aws-sigv4",
                "aws:amz:us-east-1:s3",
                "--user",
                &format!("{ACCESS_KEY}:{SECRET_KEY}"),
                "-T",
            ])
            .arg(from)
            .arg(format!("{}/{bucket}/{key}", self.endpoint))
            .output()
            .expect("curl");
        assert!(
            o.status.success(),
            "upload: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    /// Creates `bucket`.
    pub fn create_bucket(&self, bucket: &str) {
        let (ok, body) = self.request("PUT", &format!("/{bucket}"), None);
        assert!(ok, "create bucket: {}", String::from_utf8_lossy(&body));
    }

    /// The keys in `bucket` (ListObjectsV2).
    pub fn keys(&self, bucket: &str) -> Vec<String> {
        let (ok, body) = self.request("GET", &format!("/{bucket}?list-type=2"), None);
        assert!(ok, "list: {}", String::from_utf8_lossy(&body));
        let text = String::from_utf8_lossy(&body);
        text.split("<Key>")
            .skip(1)
            .filter_map(|s| s.split("</Key>").next().map(String::from))
            .collect()
    }
}

impl Drop for SeaweedFs {
    fn drop(&mut self) {
        // A graceful stop takes ~15 s (the filer waits on a stopped volume server); a test's
        // data is thrown away, so kill it.
        let _ = self.child.kill();
        let _ = self.child.wait();
        // gRPC sockets at fixed paths, keyed by port.
        for p in self.ports {
            let port = p as u32 + 10000;
            if let Ok(rd) = std::fs::read_dir("/tmp") {
                for e in rd.flatten() {
                    let n = e.file_name().to_string_lossy().to_string();
                    if n.starts_with("seaweedfs-") && n.ends_with(&format!("-grpc-{port}.sock")) {
                        let _ = std::fs::remove_file(e.path());
                    }
                }
            }
        }
    }
}
