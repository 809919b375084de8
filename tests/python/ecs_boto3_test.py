#!/usr/bin/env python3
"""Drives berthd's ECS-compatible API with boto3, as ECS users' SDK code
would: only endpoint_url and the credentials differ from AWS.

    ecs_boto3_test.py ENDPOINT_URL CLUSTER IMAGE

with AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (an admin key from
`berth auth token create --format aws`), AWS_DEFAULT_REGION and
AWS_CA_BUNDLE (the cluster CA) in the environment. CLUSTER has a running
agent. Run by tests/tests/ecs_clients.rs in CI; prints one `ok:` line per
check and exits non-zero on the first failure.
"""

import os
import sys

import boto3
import botocore.exceptions


def check(condition, message):
    if not condition:
        print(f"FAILED: {message}", file=sys.stderr)
        sys.exit(1)
    print(f"ok: {message}")


def main():
    endpoint, cluster, image = sys.argv[1:4]
    region = os.environ["AWS_DEFAULT_REGION"]
    ecs = boto3.client("ecs", endpoint_url=endpoint, region_name=region)

    described = ecs.describe_clusters(clusters=[cluster], include=["STATISTICS"])
    arn = described["clusters"][0]["clusterArn"]
    check(
        arn.startswith(f"arn:aws:ecs:{region}:") and arn.endswith(f":cluster/{cluster}"),
        f"describe_clusters: {arn} (the region from the request's signature)",
    )
    check(
        described["clusters"][0]["registeredContainerInstancesCount"] >= 1,
        "the cluster counts its registered instance",
    )

    instances = ecs.list_container_instances(cluster=cluster)["containerInstanceArns"]
    check(len(instances) >= 1, f"list_container_instances: {instances}")
    ci = ecs.describe_container_instances(cluster=cluster, containerInstances=instances)
    check(
        ci["containerInstances"][0]["status"] == "ACTIVE"
        and ci["containerInstances"][0]["agentConnected"],
        "describe_container_instances: ACTIVE and connected",
    )

    for revision in range(3):
        ecs.register_task_definition(
            family="boto-job",
            containerDefinitions=[
                {
                    "name": "app",
                    "image": image,
                    "memory": 32,
                    "command": ["sleep"],
                    "environment": [{"name": "REVISION", "value": str(revision)}],
                }
            ],
        )
    pages = ecs.get_paginator("list_task_definitions").paginate(
        familyPrefix="boto-job", PaginationConfig={"PageSize": 1}
    )
    arns = [arn for page in pages for arn in page["taskDefinitionArns"]]
    check(
        len(arns) == 3 and all(":task-definition/boto-job:" in a for a in arns),
        f"list_task_definitions paginated one at a time: {len(arns)} ARNs",
    )

    run = ecs.run_task(cluster=cluster, taskDefinition="boto-job", startedBy="boto3")
    check(not run["failures"], f"run_task: no failures ({run['failures']})")
    task_arn = run["tasks"][0]["taskArn"]
    ecs.get_waiter("tasks_running").wait(
        cluster=cluster, tasks=[task_arn], WaiterConfig={"Delay": 2, "MaxAttempts": 60}
    )
    task = ecs.describe_tasks(cluster=cluster, tasks=[task_arn])["tasks"][0]
    check(task["lastStatus"] == "RUNNING", f"tasks_running waiter, then {task['lastStatus']}")
    check(
        task["taskDefinitionArn"].endswith(":task-definition/boto-job:3"),
        f"the latest revision ran: {task['taskDefinitionArn']}",
    )
    check(task["startedBy"] == "boto3", "startedBy kept")
    listed = ecs.list_tasks(cluster=cluster, startedBy="boto3")["taskArns"]
    check(task_arn in listed, "list_tasks(startedBy=boto3) lists it")

    ecs.stop_task(cluster=cluster, task=task_arn, reason="boto3 test")
    ecs.get_waiter("tasks_stopped").wait(
        cluster=cluster, tasks=[task_arn], WaiterConfig={"Delay": 2, "MaxAttempts": 60}
    )
    task = ecs.describe_tasks(cluster=cluster, tasks=[task_arn])["tasks"][0]
    check(
        task["lastStatus"] == "STOPPED" and task["stoppedReason"] == "boto3 test",
        f"stop_task, tasks_stopped waiter: {task['lastStatus']}, {task['stoppedReason']!r}",
    )

    instance = instances[0]
    ecs.put_attributes(
        cluster=cluster,
        attributes=[{"name": "rack", "value": "r7", "targetId": instance}],
    )
    attributes = ecs.list_attributes(
        cluster=cluster, targetType="container-instance", attributeName="rack"
    )["attributes"]
    check(
        any(a["value"] == "r7" for a in attributes),
        f"put_attributes, list_attributes: {attributes}",
    )
    drained = ecs.update_container_instances_state(
        cluster=cluster, containerInstances=[instance], status="DRAINING"
    )["containerInstances"][0]["status"]
    back = ecs.update_container_instances_state(
        cluster=cluster, containerInstances=[instance], status="ACTIVE"
    )["containerInstances"][0]["status"]
    check(
        (drained, back) == ("DRAINING", "ACTIVE"),
        f"update_container_instances_state: {drained}, then {back}",
    )

    ecs.put_account_setting_default(name="containerInsights", value="enhanced")
    settings = ecs.list_account_settings(name="containerInsights", effectiveSettings=True)[
        "settings"
    ]
    check(
        [s["value"] for s in settings] == ["enhanced"],
        f"put_account_setting_default, list_account_settings: {settings}",
    )
    arns = [
        arn
        for page in ecs.get_paginator("list_clusters").paginate(PaginationConfig={"PageSize": 1})
        for arn in page["clusterArns"]
    ]
    check(
        any(a.endswith(f":cluster/{cluster}") for a in arns) and len(arns) == len(set(arns)),
        f"list_clusters paginated one at a time: {len(arns)} clusters",
    )

    missing = ecs.describe_tasks(cluster=cluster, tasks=["0123456789abcdef0123456789abcdef"])
    check(
        missing["failures"] and missing["failures"][0]["reason"] == "MISSING",
        f"a missing task is a failure: {missing['failures']}",
    )
    try:
        ecs.describe_services(cluster="no-such-cluster", services=["x"])
        check(False, "describe_services on a missing cluster raised")
    except ecs.exceptions.ClusterNotFoundException as e:
        check(True, f"ClusterNotFoundException as a modeled exception: {e}")
    try:
        ecs.create_cluster(clusterName="x", capacityProviders=["FARGATE"])
        check(False, "create_cluster with capacity providers raised")
    except botocore.exceptions.ClientError as e:
        code = e.response["Error"]["Code"]
        check(code == "UnsupportedFeatureException", f"capacity providers: {code}")

    bad = boto3.client(
        "ecs",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key="wrong" + os.environ["AWS_SECRET_ACCESS_KEY"][5:],
    )
    try:
        bad.list_clusters()
        check(False, "a wrong secret raised")
    except botocore.exceptions.ClientError as e:
        code = e.response["Error"]["Code"]
        status = e.response["ResponseMetadata"]["HTTPStatusCode"]
        check(
            code == "InvalidSignatureException" and status == 403,
            f"a wrong secret: {code} ({status})",
        )
    print("boto3: all checks passed")


if __name__ == "__main__":
    main()
