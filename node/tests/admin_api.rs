//! The operator's admin API on a real member: LeaseStatus reports the lease, and a pushed
//! membership hint that disagrees with the applied configuration pauses lease reads (reads go
//! through ReadIndex, visible in metrics) until a newer generation agrees; older generations
//! are ignored.

mod support;

use std::time::Duration;

use metastore_node::admin_proto::admin_client::AdminClient;
use metastore_node::admin_proto::{
    LeaseStatusRequest, LeaseStatusResponse, SetMembershipPolicyRequest,
    SetMembershipPolicyResponse,
};
use metastore_testkit::{client, Cluster, FAST};
use support::BIN;

/// The admin API of one member.
struct Admin(AdminClient<tonic::transport::Channel>);

async fn admin(endpoint: &str) -> Admin {
    Admin(
        AdminClient::connect(endpoint.to_string())
            .await
            .expect("admin connect"),
    )
}

impl Admin {
    /// LeaseStatus (must succeed).
    async fn lease_status(&mut self) -> LeaseStatusResponse {
        self.0
            .lease_status(LeaseStatusRequest {})
            .await
            .unwrap()
            .into_inner()
    }

    /// SetMembershipPolicy: the operator's hint of `expected_voters` at `generation`.
    async fn set_membership_policy(
        &mut self,
        expected_voters: u32,
        generation: u64,
    ) -> Result<SetMembershipPolicyResponse, tonic::Status> {
        self.0
            .set_membership_policy(SetMembershipPolicyRequest {
                expected_voters,
                generation,
            })
            .await
            .map(tonic::Response::into_inner)
    }
}

fn reads(c: &Cluster, i: usize, path: &str) -> f64 {
    let body = c.members[i].http_get("/metrics").unwrap().1;
    let prefix = format!("metastore_read_total{{path=\"{path}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&prefix).and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_status_and_membership_hints() {
    let c = Cluster::start(BIN, 3, FAST);
    let leader = c.wait_ready(Duration::from_secs(30));
    let ep = c.members[leader].client_url();
    let mut kv = client(&ep).await;
    kv.put("k", "v", None).await.unwrap();
    let mut a = admin(&ep).await;

    // Reads keep the lease warm; it becomes valid.
    let mut valid = false;
    for _ in 0..100 {
        kv.get("k", None).await.unwrap();
        let s = a.lease_status().await;
        assert!(s.enabled, "{}", s.reason);
        assert_eq!(s.voters.len(), 3);
        assert_eq!(s.leader, s.member_id);
        if s.valid {
            assert!(s.remaining_ms > 0 && s.remaining_ms <= s.lease_duration_ms);
            valid = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(valid, "lease never became valid");
    // The read that saw it become valid went through ReadIndex; the next ones use the lease.
    for _ in 0..50 {
        kv.get("k", None).await.unwrap();
        if reads(&c, leader, "lease") > 0.0 {
            break;
        }
    }
    let lease_before = reads(&c, leader, "lease");
    assert!(
        lease_before > 0.0,
        "no lease read while the lease was valid"
    );

    // The operator expects 5 voters: the member becomes more careful.
    let r = a.set_membership_policy(5, 7).await.unwrap();
    assert_eq!(r.outcome, "applied");
    assert!(!r.enabled);
    assert!(r.reason.contains("expects 5"), "{}", r.reason);
    let ri_before = reads(&c, leader, "read_index");
    for _ in 0..20 {
        kv.get("k", None).await.unwrap();
    }
    assert_eq!(
        reads(&c, leader, "lease"),
        lease_before,
        "no lease read while paused"
    );
    assert!(reads(&c, leader, "read_index") >= ri_before + 20.0);
    let s = a.lease_status().await;
    assert!(!s.valid && !s.enabled);
    assert_eq!((s.expected_voters, s.generation), (5, 7));

    // Older generation: ignored. Same again: idempotent. Newer and agreeing: resumes.
    let stale = a.set_membership_policy(3, 6).await.unwrap();
    assert_eq!(stale.outcome, "stale");
    assert!(!stale.enabled);
    let same = a.set_membership_policy(5, 7).await.unwrap();
    assert_eq!(same.outcome, "unchanged");
    let ok = a.set_membership_policy(3, 8).await.unwrap();
    assert_eq!(ok.outcome, "applied");
    assert!(ok.enabled, "{}", ok.reason);
    let mut resumed = false;
    for _ in 0..100 {
        kv.get("k", None).await.unwrap();
        if reads(&c, leader, "lease") > lease_before {
            resumed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(resumed, "lease reads did not resume");

    // Bad input: a clear error.
    let err = a.set_membership_policy(0, 9).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    // A generation pushed far ahead is refused, so the operator's next push still applies.
    let err = a.set_membership_policy(3, u64::MAX).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("ahead"), "{}", err.message());
    assert_eq!(
        a.set_membership_policy(3, 9).await.unwrap().outcome,
        "applied"
    );

    // A follower reports the same configuration and is never lease-valid itself.
    let f = (leader + 1) % 3;
    let mut af = admin(&c.members[f].client_url()).await;
    let s = af.lease_status().await;
    assert!(!s.valid);
    assert_eq!(s.voters.len(), 3);
    let metrics = c.members[leader].http_get("/metrics").unwrap().1;
    for m in [
        "metastore_lease_valid",
        "metastore_lease_policy_enabled",
        "metastore_lease_renewals_total",
        "metastore_lease_expirations_total{reason=\"policy\"}",
        "metastore_read_index_duration_seconds_bucket",
    ] {
        assert!(metrics.contains(m), "missing {m}");
    }
}

#[tokio::test]
async fn single_member_serves_lease_reads_without_rounds() {
    let c = Cluster::start(BIN, 1, &[]);
    c.wait_ready(Duration::from_secs(20));
    let ep = c.members[0].client_url();
    let mut kv = client(&ep).await;
    kv.put("k", "v", None).await.unwrap();
    for _ in 0..10 {
        assert_eq!(kv.get("k", None).await.unwrap().kvs()[0].value(), b"v");
    }
    assert!(reads(&c, 0, "lease") >= 10.0);
    assert_eq!(reads(&c, 0, "read_index"), 0.0);
    let s = admin(&ep).await.lease_status().await;
    assert!(s.valid && s.enabled, "{}", s.reason);
    assert!(s.reason.contains("quorum of one"));
}
