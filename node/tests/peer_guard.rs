//! Forged messages on the peer port of a real member (plain http, no peer TLS): a heartbeat that
//! would commit far past the end of the log (it used to panic raft-rs and leave a zombie), a
//! forwarded proposal carrying a membership change, messages from a non-member and local-only
//! kinds are dropped before Raft sees them and counted by reason; the member keeps serving and
//! the cluster keeps its members. (Messages forged under a member's id that are consistent with
//! the log can only be refused by peer TLS identity.)

mod support;

use std::time::Duration;

use metastore_node::admin_proto::admin_client::AdminClient;
use metastore_node::admin_proto::{LeaseStatusRequest, LeaseStatusResponse};
use metastore_node::peer_proto::peer_client::PeerClient;
use metastore_node::peer_proto::{MembersRequest, RaftBatch};
use metastore_testkit::{client, Cluster, FAST};
use protobuf::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeType, Entry, EntryType, Message, MessageType};
use support::BIN;

/// Sends `msgs` to the peer port at `url` as one batch of cluster `cluster_id`.
async fn forge(url: &str, cluster_id: u64, msgs: Vec<Message>) {
    let mut peer = PeerClient::connect(url.to_string()).await.unwrap();
    let batch = RaftBatch {
        messages: msgs.iter().map(|m| m.write_to_bytes().unwrap()).collect(),
        cluster_id,
    };
    // The stream ends after the batch; whatever the member answers, it must keep serving.
    let _ = peer.stream(futures::stream::iter(vec![batch])).await;
}

fn msg(t: MessageType, from: u64, to: u64, term: u64) -> Message {
    let mut m = Message::default();
    m.set_msg_type(t);
    m.from = from;
    m.to = to;
    m.term = term;
    m
}

/// The admin API's LeaseStatus of the member at `url` (its id, the leader, the term).
async fn lease_status(url: &str) -> LeaseStatusResponse {
    AdminClient::connect(url.to_string())
        .await
        .unwrap()
        .lease_status(LeaseStatusRequest {})
        .await
        .unwrap()
        .into_inner()
}

fn rejected(c: &Cluster, i: usize, reason: &str) -> f64 {
    c.members[i]
        .metric(&format!(
            "metastore_peer_messages_rejected_total{{reason=\"{reason}\"}}"
        ))
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_peer_messages_are_dropped_and_counted_and_the_member_keeps_serving() {
    let c = Cluster::start(BIN, 3, FAST);
    let leader = c.wait_ready(Duration::from_secs(30));
    let follower = (leader + 1) % 3;
    let mut kv = client(&c.members[leader].client_url()).await;
    kv.put("k", "before", None).await.unwrap();

    // What an attacker on the network learns from the peer port itself.
    let mut peer = PeerClient::connect(c.members[follower].peer_url())
        .await
        .unwrap();
    let info = peer.members(MembersRequest {}).await.unwrap().into_inner();
    let status = lease_status(&c.members[leader].client_url()).await;
    let (leader_id, term) = (status.leader, status.term);
    // The follower's own id: the one its admin API reports.
    let follower_id = lease_status(&c.members[follower].client_url())
        .await
        .member_id;

    // 1. A heartbeat "from the leader" committing far past the follower's log.
    let mut hb = msg(MessageType::MsgHeartbeat, leader_id, follower_id, term);
    hb.commit = 1_000_000_000_000;
    forge(&c.members[follower].peer_url(), info.cluster_id, vec![hb]).await;
    // 2. The same from an id that is no member, and a local-only kind from a member.
    let mut stranger = msg(MessageType::MsgHeartbeat, 0x5eed, follower_id, term);
    stranger.commit = 1;
    let hup = msg(MessageType::MsgHup, leader_id, follower_id, term);
    forge(
        &c.members[follower].peer_url(),
        info.cluster_id,
        vec![stranger, hup],
    )
    .await;
    // 3. A "forwarded" proposal to the leader that would add a voter at the attacker's URL.
    let mut cc = ConfChange::default();
    cc.set_change_type(ConfChangeType::AddNode);
    cc.node_id = 0xbad;
    let mut e = Entry::default();
    e.set_entry_type(EntryType::EntryConfChange);
    e.data = cc.write_to_bytes().unwrap().into();
    let mut prop = msg(MessageType::MsgPropose, follower_id, leader_id, 0);
    prop.set_entries(vec![e].into());
    forge(&c.members[leader].peer_url(), info.cluster_id, vec![prop]).await;

    let f = follower;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while rejected(&c, f, "inconsistent_with_log") < 1.0
        || rejected(&c, f, "unknown_sender") < 1.0
        || rejected(&c, f, "local_kind") < 1.0
        || rejected(&c, leader, "forwarded_conf_change") < 1.0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "drops not counted: follower {} {} {}, leader {}",
            rejected(&c, f, "inconsistent_with_log"),
            rejected(&c, f, "unknown_sender"),
            rejected(&c, f, "local_kind"),
            rejected(&c, leader, "forwarded_conf_change"),
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Everyone keeps serving: the follower is alive and replicates the next write; the cluster
    // still has its three members.
    assert_eq!(c.members[f].http_get("/livez").map(|r| r.0), Some(200));
    kv.put("k", "after", None).await.unwrap();
    let mut fk = client(&c.members[f].client_url()).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = fk
            .get(
                "k",
                Some(etcd_client::GetOptions::new().with_serializable()),
            )
            .await
            .unwrap();
        if r.kvs().first().map(|kv| kv.value()) == Some(b"after".as_slice()) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "follower stopped applying"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let members = kv.member_list().await.unwrap();
    assert_eq!(members.members().len(), 3);
}
