//! The ECS operations through `EcsApi::call` over a one-server cluster
//! (in process, no network): each answer has ECS's shape and comes from
//! the application layer, missing resources are `failures`, and what
//! Berth does not do is refused by name.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cluster;

use berth_ecs::arn::Scope;
use berth_server::ecs::EcsApi;
use berth_server::ops::Ops;
use berth_types::resources::Resources;
use berth_types::{Command, Registration};
use cluster::TestCluster;
use serde_json::{json, Value};

/// The principal ARN calls are made as.
const CALLER: &str = "arn:aws:iam::000000000000:user/BKIA0000000000000001";
use std::collections::BTreeMap;

const ARN: &str = "arn:aws:ecs:eu-west-1:000000000000";

struct Api {
    api: EcsApi,
    scope: Scope,
    cluster: TestCluster,
}

impl Api {
    async fn start() -> Self {
        let cluster = TestCluster::start(1).await;
        let leader = cluster.leader().await;
        let api = EcsApi {
            ops: Ops::new(cluster.node(leader).clone()),
            account_id: "000000000000".into(),
            pki: None,
        };
        Self {
            api,
            scope: Scope {
                region: "eu-west-1".into(),
                account: "000000000000".into(),
            },
            cluster,
        }
    }

    /// Registers instance `id` in the default cluster and connects its
    /// agent, as an activation and the agent's hello would.
    async fn instance(&self, id: &str) {
        let node = self.cluster.node(self.cluster.leader().await);
        let at_ms = 1_000;
        if node.state().read().state.instances().next().is_none() {
            node.write(Command::CreateActivation {
                id: "act".into(),
                cluster: "default".into(),
                description: String::new(),
                secret_hash: "h".into(),
                expires_at_ms: i64::MAX,
                max_registrations: 100,
                attributes: BTreeMap::new(),
                at_ms,
            })
            .await
            .unwrap();
        }
        node.write(Command::RegisterInstance(Registration {
            activation_id: "act".into(),
            secret_hash: "h".into(),
            new_instance_id: id.into(),
            previous_instance_id: None,
            expected_cluster: None,
            hostname: id.into(),
            attributes: BTreeMap::new(),
            certificate_expires_at_ms: i64::MAX,
            at_ms,
            public_key_sha256: format!("key-{id}"),
        }))
        .await
        .unwrap();
        node.write(Command::InstanceConnected {
            host_ports: Vec::new(),
            instance_id: id.into(),
            agent_version: "test".into(),
            resources: Resources::new(2048, 2048),
            attributes: BTreeMap::new(),
            at_ms,
        })
        .await
        .unwrap();
    }

    async fn call(&self, operation: &str, body: Value) -> Value {
        match self
            .api
            .call(&self.scope, CALLER, operation, body.to_string().as_bytes())
            .await
        {
            Ok(answer) => answer,
            Err(e) => panic!("{operation}: {e}"),
        }
    }

    async fn refused(&self, operation: &str, body: Value) -> berth_ecs::error::EcsError {
        match self
            .api
            .call(&self.scope, CALLER, operation, body.to_string().as_bytes())
            .await
        {
            Ok(answer) => panic!("{operation} answered {answer}"),
            Err(e) => e,
        }
    }
}

fn task_definition() -> Value {
    json!({
        "family": "web",
        "networkMode": "bridge",
        "containerDefinitions": [{
            "name": "app", "image": "registry.local/app:1", "memory": 128, "essential": true,
            "portMappings": [{"containerPort": 8080}]
        }],
        "tags": [{"key": "team", "value": "a"}]
    })
}

#[tokio::test(start_paused = true)]
async fn task_definitions_and_tasks() {
    let api = Api::start().await;
    let registered = api.call("RegisterTaskDefinition", task_definition()).await;
    assert_eq!(
        registered["taskDefinition"]["taskDefinitionArn"],
        format!("{ARN}:task-definition/web:1")
    );
    assert_eq!(registered["tags"][0]["key"], "team");
    api.call("RegisterTaskDefinition", task_definition()).await;

    let described = api
        .call(
            "DescribeTaskDefinition",
            json!({"taskDefinition": format!("{ARN}:task-definition/web:1")}),
        )
        .await;
    assert_eq!(described["taskDefinition"]["revision"], 1);
    assert!(described.get("tags").is_none(), "tags only when included");
    let latest = api
        .call(
            "DescribeTaskDefinition",
            json!({"taskDefinition": "web", "include": ["TAGS"]}),
        )
        .await;
    assert_eq!(latest["taskDefinition"]["revision"], 2);
    assert_eq!(latest["tags"][0]["value"], "a");

    api.call(
        "DeregisterTaskDefinition",
        json!({"taskDefinition": "web:1"}),
    )
    .await;
    let active = api.call("ListTaskDefinitions", json!({})).await;
    assert_eq!(
        active["taskDefinitionArns"],
        json!([format!("{ARN}:task-definition/web:2")])
    );
    let inactive = api
        .call("ListTaskDefinitions", json!({"status": "INACTIVE"}))
        .await;
    assert_eq!(
        inactive["taskDefinitionArns"],
        json!([format!("{ARN}:task-definition/web:1")])
    );
    let of_web = api
        .call(
            "ListTaskDefinitions",
            json!({"familyPrefix": "web", "sort": "DESC"}),
        )
        .await;
    assert_eq!(of_web["taskDefinitionArns"], active["taskDefinitionArns"]);
    let not_a_prefix = api
        .call("ListTaskDefinitions", json!({"familyPrefix": "we"}))
        .await;
    assert_eq!(not_a_prefix["taskDefinitionArns"], json!([]));
    let families = api
        .call("ListTaskDefinitionFamilies", json!({"familyPrefix": "w"}))
        .await;
    assert_eq!(families["families"], json!(["web"]));
    // Only an INACTIVE revision is deleted; each refusal is a failure.
    let deleted = api
        .call(
            "DeleteTaskDefinitions",
            json!({"taskDefinitions": ["web:1", format!("{ARN}:task-definition/web:2")]}),
        )
        .await;
    assert_eq!(
        deleted["taskDefinitions"][0]["status"],
        "DELETE_IN_PROGRESS"
    );
    assert_eq!(
        deleted["taskDefinitions"][0]["taskDefinitionArn"],
        format!("{ARN}:task-definition/web:1")
    );
    assert_eq!(
        deleted["failures"][0]["arn"],
        format!("{ARN}:task-definition/web:2")
    );
    assert!(
        deleted["failures"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("deregister it first"),
        "{deleted}"
    );

    // No instance is registered: the task waits PROVISIONING, as Berth's
    // RunTask leaves a task it cannot place yet.
    let run = api
        .call(
            "RunTask",
            json!({"taskDefinition": "web", "startedBy": "ci", "launchType": "EXTERNAL"}),
        )
        .await;
    assert_eq!(run["failures"], json!([]));
    let task = &run["tasks"][0];
    let task_arn = task["taskArn"].as_str().unwrap().to_string();
    assert!(
        task_arn.starts_with(&format!("{ARN}:task/default/")),
        "{task_arn}"
    );
    assert_eq!(task["desiredStatus"], "RUNNING");
    assert_eq!(task["containers"][0]["image"], "registry.local/app:1");
    assert!(task["createdAt"].is_f64());

    let listed = api.call("ListTasks", json!({"startedBy": "ci"})).await;
    assert_eq!(listed["taskArns"], json!([task_arn]));
    let none = api.call("ListTasks", json!({"startedBy": "someone"})).await;
    assert_eq!(none["taskArns"], json!([]));

    let missing = format!("{ARN}:task/default/0000");
    let described = api
        .call("DescribeTasks", json!({"tasks": [task_arn, "0000"]}))
        .await;
    assert_eq!(described["tasks"][0]["taskArn"], task_arn);
    assert_eq!(
        described["failures"],
        json!([{"arn": missing, "reason": "MISSING"}])
    );

    let stopped = api
        .call("StopTask", json!({"task": task_arn, "reason": "done"}))
        .await;
    assert_eq!(stopped["task"]["desiredStatus"], "STOPPED");
    let still_running = api.call("ListTasks", json!({})).await;
    assert_eq!(still_running["taskArns"], json!([]));
    let by_stopped = api
        .call("ListTasks", json!({"desiredStatus": "STOPPED"}))
        .await;
    assert_eq!(by_stopped["taskArns"], json!([task_arn]));

    let e = api
        .refused(
            "RunTask",
            json!({"taskDefinition": "web", "launchType": "FARGATE"}),
        )
        .await;
    assert_eq!(e.kind, berth_ecs::error::ErrorType::UnsupportedFeature);
    let e = api
        .refused("ListTasks", json!({"cluster": "nowhere"}))
        .await;
    assert_eq!(e.kind, berth_ecs::error::ErrorType::ClusterNotFound);
}

#[tokio::test(start_paused = true)]
async fn services_and_their_deployments() {
    let api = Api::start().await;
    api.call("RegisterTaskDefinition", task_definition()).await;
    api.call("RegisterTaskDefinition", task_definition()).await;
    let created = api
        .call(
            "CreateService",
            json!({
                "serviceName": "web",
                "taskDefinition": format!("{ARN}:task-definition/web:1"),
                "desiredCount": 2,
                "launchType": "EC2",
                "clientToken": "t-1",
                "tags": [{"key": "team", "value": "a"}]
            }),
        )
        .await;
    let service_arn = format!("{ARN}:service/default/web");
    assert_eq!(created["service"]["serviceArn"], service_arn);
    assert_eq!(created["service"]["desiredCount"], 2);
    assert_eq!(created["service"]["launchType"], "EXTERNAL");
    assert_eq!(created["service"]["tags"][0]["value"], "a");

    let e = api
        .refused(
            "CreateService",
            json!({"serviceName": "api", "taskDefinition": "web:1", "serviceRegistries": [{"registryArn": "x"}]}),
        )
        .await;
    assert_eq!(e.kind, berth_ecs::error::ErrorType::UnsupportedFeature);
    assert!(e.message.contains("serviceRegistries"), "{e}");

    let updated = api
        .call(
            "UpdateService",
            json!({"service": service_arn, "taskDefinition": "web:2", "desiredCount": 3}),
        )
        .await;
    assert_eq!(updated["service"]["desiredCount"], 3);
    assert_eq!(
        updated["service"]["taskDefinition"],
        format!("{ARN}:task-definition/web:2")
    );
    let e = api
        .refused(
            "UpdateService",
            json!({"service": "web", "loadBalancers": [{"name": "x", "containerName": "app", "containerPort": 8080}]}),
        )
        .await;
    assert_eq!(e.kind, berth_ecs::error::ErrorType::UnsupportedFeature);

    let described = api
        .call(
            "DescribeServices",
            json!({"services": ["web", "nothing"], "include": ["TAGS"]}),
        )
        .await;
    assert_eq!(described["services"][0]["tags"][0]["key"], "team");
    assert_eq!(
        described["failures"],
        json!([{"arn": format!("{ARN}:service/default/nothing"), "reason": "MISSING"}])
    );

    let listed = api.call("ListServices", json!({})).await;
    assert_eq!(listed["serviceArns"], json!([service_arn]));
    let daemons = api
        .call("ListServices", json!({"schedulingStrategy": "DAEMON"}))
        .await;
    assert_eq!(daemons["serviceArns"], json!([]));
    let by_namespace = api
        .call(
            "ListServicesByNamespace",
            json!({"namespace": "default.berth"}),
        )
        .await;
    assert_eq!(by_namespace["serviceArns"], json!([service_arn]));
    let e = api
        .refused(
            "ListServicesByNamespace",
            json!({"namespace": "elsewhere.berth"}),
        )
        .await;
    assert_eq!(e.kind, berth_ecs::error::ErrorType::NamespaceNotFound);

    let deployments = api
        .call("ListServiceDeployments", json!({"service": "web"}))
        .await;
    let briefs = deployments["serviceDeployments"].as_array().unwrap();
    assert_eq!(briefs.len(), 2, "{deployments}");
    let newest = briefs[0]["serviceDeploymentArn"].as_str().unwrap();
    assert!(
        newest.starts_with(&format!("{ARN}:service-deployment/default/web/")),
        "{newest}"
    );
    let full = api
        .call(
            "DescribeServiceDeployments",
            json!({"serviceDeploymentArns": [newest, format!("{ARN}:service-deployment/default/web/9")]}),
        )
        .await;
    assert_eq!(full["serviceDeployments"][0]["serviceArn"], service_arn);
    assert_eq!(
        full["serviceDeployments"][0]["targetServiceRevision"]["requestedTaskCount"],
        3
    );
    assert_eq!(full["failures"][0]["reason"], "MISSING");

    let deleted = api
        .call("DeleteService", json!({"service": "web", "force": true}))
        .await;
    assert_eq!(deleted["service"]["serviceName"], "web");
}

#[tokio::test(start_paused = true)]
async fn container_instances_without_any_registered() {
    let api = Api::start().await;
    let listed = api.call("ListContainerInstances", json!({})).await;
    assert_eq!(listed["containerInstanceArns"], json!([]));
    let filtered = api
        .call(
            "ListContainerInstances",
            json!({"filter": "attribute:zone == a", "status": "ACTIVE"}),
        )
        .await;
    assert_eq!(filtered["containerInstanceArns"], json!([]));
    let e = api
        .refused(
            "ListContainerInstances",
            json!({"filter": "attribute:zone =="}),
        )
        .await;
    assert_eq!(e.kind, berth_ecs::error::ErrorType::InvalidParameter);
    let described = api
        .call(
            "DescribeContainerInstances",
            json!({"containerInstances": ["i-1"]}),
        )
        .await;
    assert_eq!(
        described["failures"],
        json!([{"arn": format!("{ARN}:container-instance/default/i-1"), "reason": "MISSING"}])
    );
    let updated = api
        .call(
            "UpdateContainerInstancesState",
            json!({"containerInstances": ["i-1"], "status": "DRAINING"}),
        )
        .await;
    assert_eq!(updated["failures"][0]["reason"], "MISSING");
    let attributes = api
        .call(
            "ListAttributes",
            json!({"targetType": "container-instance"}),
        )
        .await;
    assert_eq!(attributes["attributes"], json!([]));
    let e = api
        .refused(
            "PutAttributes",
            json!({"attributes": [{"name": "zone", "value": "a", "targetId": "i-1"}]}),
        )
        .await;
    assert_eq!(e.kind, berth_ecs::error::ErrorType::InvalidParameter);
    assert!(e.message.contains("i-1"), "{e}");
}

#[tokio::test(start_paused = true)]
async fn container_instances_drain_carry_attributes_and_deregister() {
    let api = Api::start().await;
    api.instance("i-1").await;
    api.instance("i-2").await;
    let i1 = format!("{ARN}:container-instance/default/i-1");
    let i2 = format!("{ARN}:container-instance/default/i-2");
    let put = api
        .call(
            "PutAttributes",
            json!({"attributes": [
                {"name": "zone", "value": "a", "targetType": "container-instance", "targetId": i1},
                {"name": "zone", "value": "b", "targetId": "i-2"}
            ]}),
        )
        .await;
    assert_eq!(put["attributes"][0]["targetId"], i1);

    let in_a = api
        .call(
            "ListContainerInstances",
            json!({"filter": "attribute:zone == a"}),
        )
        .await;
    assert_eq!(in_a["containerInstanceArns"], json!([i1]));
    let zoned = api
        .call(
            "ListContainerInstances",
            json!({"filter": "attribute:zone exists", "maxResults": 1}),
        )
        .await;
    assert_eq!(zoned["containerInstanceArns"], json!([i1]));
    let rest = api
        .call(
            "ListContainerInstances",
            json!({"filter": "attribute:zone exists", "nextToken": zoned["nextToken"]}),
        )
        .await;
    assert_eq!(rest["containerInstanceArns"], json!([i2]));

    let listed = api
        .call(
            "ListAttributes",
            json!({"targetType": "container-instance", "attributeName": "zone", "attributeValue": "b"}),
        )
        .await;
    assert_eq!(
        listed["attributes"],
        json!([{"name": "zone", "value": "b", "targetType": "container-instance", "targetId": i2}])
    );

    let drained = api
        .call(
            "UpdateContainerInstancesState",
            json!({"containerInstances": [i1, "i-9"], "status": "DRAINING"}),
        )
        .await;
    assert_eq!(drained["containerInstances"][0]["status"], "DRAINING");
    assert_eq!(
        drained["failures"][0]["arn"],
        format!("{ARN}:container-instance/default/i-9"),
        "failures name ARNs, as ECS's do"
    );
    // Every target is checked before any changes: a name the agents report
    // on the second instance leaves the first one's attributes alone.
    let spoofed = api
        .refused(
            "PutAttributes",
            json!({"attributes": [
                {"name": "rack", "value": "r1", "targetId": i1},
                {"name": "agent.os", "value": "x", "targetId": i2}
            ]}),
        )
        .await;
    assert_eq!(
        spoofed.kind,
        berth_ecs::error::ErrorType::InvalidParameter,
        "{spoofed}"
    );
    let racks = api
        .call(
            "ListAttributes",
            json!({"targetType": "container-instance", "attributeName": "rack"}),
        )
        .await;
    assert_eq!(racks["attributes"], json!([]), "nothing was half applied");
    let draining = api
        .call("ListContainerInstances", json!({"status": "DRAINING"}))
        .await;
    assert_eq!(draining["containerInstanceArns"], json!([i1]));

    api.call(
        "DeleteAttributes",
        json!({"attributes": [{"name": "zone", "targetId": "i-1"}]}),
    )
    .await;
    let described = api
        .call(
            "DescribeContainerInstances",
            json!({"containerInstances": ["i-1", i2]}),
        )
        .await;
    let attributes = |i: usize| -> Vec<String> {
        described["containerInstances"][i]["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(!attributes(0).contains(&"zone".to_string()));
    assert!(attributes(1).contains(&"zone".to_string()));
    assert_eq!(described["failures"], json!([]));

    let deregistered = api
        .call(
            "DeregisterContainerInstance",
            json!({"containerInstance": "i-2"}),
        )
        .await;
    assert_eq!(deregistered["containerInstance"]["status"], "INACTIVE");
    let active = api.call("ListContainerInstances", json!({})).await;
    assert_eq!(
        active["containerInstanceArns"],
        json!([i1]),
        "INACTIVE only when asked"
    );
    let e = api
        .refused(
            "DeregisterContainerInstance",
            json!({"cluster": "default", "containerInstance": "arn:aws:ecs:r:1:container-instance/other/i-1"}),
        )
        .await;
    assert_eq!(e.kind, berth_ecs::error::ErrorType::InvalidParameter);
}

#[tokio::test(start_paused = true)]
async fn an_instance_with_tasks_is_deregistered_only_when_forced() {
    let api = Api::start().await;
    api.instance("i-1").await;
    api.call("RegisterTaskDefinition", task_definition()).await;
    let started = api
        .call(
            "StartTask",
            json!({"taskDefinition": "web:1", "containerInstances": [format!("{ARN}:container-instance/default/i-1")]}),
        )
        .await;
    let task = &started["tasks"][0];
    assert_eq!(
        task["containerInstanceArn"],
        format!("{ARN}:container-instance/default/i-1")
    );
    let on_instance = api
        .call("ListTasks", json!({"containerInstance": "i-1"}))
        .await;
    assert_eq!(on_instance["taskArns"], json!([task["taskArn"]]));

    let e = api
        .refused(
            "DeregisterContainerInstance",
            json!({"containerInstance": "i-1"}),
        )
        .await;
    assert_eq!(e.kind, berth_ecs::error::ErrorType::InvalidParameter);
    assert!(e.message.contains("force"), "{e}");
    let forced = api
        .call(
            "DeregisterContainerInstance",
            json!({"containerInstance": "i-1", "force": true}),
        )
        .await;
    assert_eq!(forced["containerInstance"]["status"], "INACTIVE");
    let described = api
        .call("DescribeTasks", json!({"tasks": [task["taskArn"]]}))
        .await;
    assert_eq!(described["tasks"][0]["desiredStatus"], "STOPPED");
}
