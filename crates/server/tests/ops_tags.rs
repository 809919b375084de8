//! Tags and account settings through the application layer (`Ops`), as the
//! gRPC TagService and the ECS front end call it. One server: this
//! harness's servers cannot tell each other their command levels, and
//! these are level-5 commands (the e2e test `cli.rs` reads tags written
//! through the leader back on a follower).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cluster;

use std::collections::BTreeMap;

use berth_server::error::ServerError;
use berth_server::ops::Ops;
use berth_types::{StateError, TagTarget};
use cluster::TestCluster;

fn pairs(list: &[(&str, &str)]) -> BTreeMap<String, String> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_and_account_settings_are_written_and_read_back() {
    let cluster = TestCluster::start(1).await;
    let leader = cluster.leader().await;
    let writer = Ops::new(cluster.node(leader).clone());
    let reader = writer.clone();

    let created = writer
        .create_cluster("prod".into(), None, None, pairs(&[("env", "prod")]))
        .await
        .unwrap();
    assert_eq!(created.tags, pairs(&[("env", "prod")]));
    // A refused create tags nothing, not even the cluster of that name.
    let err = writer
        .create_cluster("prod".into(), None, None, pairs(&[("env", "other")]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ServerError::State(StateError::AlreadyExists { .. })),
        "{err}"
    );
    let err = writer
        .create_cluster("dev".into(), None, None, pairs(&[("aws:x", "y")]))
        .await
        .unwrap_err();
    assert!(matches!(err, ServerError::Invalid(_)), "{err}");

    let prod = TagTarget::Cluster {
        name: "prod".into(),
    };
    let after = writer
        .tag_resource(prod.clone(), pairs(&[("team", "core")]))
        .await
        .unwrap();
    assert_eq!(after, pairs(&[("env", "prod"), ("team", "core")]));
    // Setting the same again changes nothing and still answers the tags.
    let again = writer
        .tag_resource(prod.clone(), pairs(&[("team", "core")]))
        .await
        .unwrap();
    assert_eq!(again, after);
    let left = writer
        .untag_resource(prod.clone(), vec!["env".into()])
        .await
        .unwrap();
    assert_eq!(left, pairs(&[("team", "core")]));
    assert_eq!(reader.list_tags(&prod).await.unwrap(), left);
    assert_eq!(
        reader.describe_cluster("prod").await.unwrap().tags,
        pairs(&[("team", "core")])
    );
    let missing = reader
        .list_tags(&TagTarget::Task { id: "t-9".into() })
        .await
        .unwrap_err();
    assert!(
        matches!(missing, ServerError::State(StateError::NotFound { .. })),
        "{missing}"
    );

    let alice = "arn:aws:iam::000000000000:user/alice";
    writer
        .put_account_setting(String::new(), "containerInsights".into(), "enabled".into())
        .await
        .unwrap();
    writer
        .put_account_setting(alice.into(), "containerInsights".into(), "disabled".into())
        .await
        .unwrap();
    let listed = reader.list_account_settings().await.unwrap();
    assert_eq!(listed[""], pairs(&[("containerInsights", "enabled")]));
    assert_eq!(listed[alice], pairs(&[("containerInsights", "disabled")]));
    writer
        .delete_account_setting(alice.into(), "containerInsights".into())
        .await
        .unwrap();
    // Deleting again is fine (a retried delete).
    writer
        .delete_account_setting(alice.into(), "containerInsights".into())
        .await
        .unwrap();
    let listed = reader.list_account_settings().await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
}
