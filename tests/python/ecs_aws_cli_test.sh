#!/usr/bin/env bash
# Drives berthd's ECS-compatible API with the aws CLI, as an ECS user's
# scripts would: only --endpoint-url and the credentials differ from AWS.
#
#   ecs_aws_cli_test.sh ENDPOINT_URL CLUSTER IMAGE
#
# with AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (an admin key from
# `berth auth token create --format aws`), AWS_DEFAULT_REGION and
# AWS_CA_BUNDLE (the cluster CA) in the environment. CLUSTER has a running
# agent; IMAGE is the test app's image. Run by tests/tests/ecs_clients.rs in
# CI. Prints one `ok:` line per check and exits non-zero on the first
# failure.
set -euo pipefail

endpoint=$1
cluster=$2
image=$3
export AWS_PAGER="" AWS_EC2_METADATA_DISABLED=true
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

ecs() { aws ecs --endpoint-url "$endpoint" --output json "$@"; }
# jq is not assumed: Python reads the JSON.
field() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1], {}, {'d': d}))" "$1"; }
fail() { echo "FAILED: $*" >&2; exit 1; }
ok() { echo "ok: $*"; }

arn=$(ecs create-cluster --cluster-name cli-scratch | field 'd["cluster"]["clusterArn"]')
[[ $arn == arn:aws:ecs:*:cluster/cli-scratch ]] || fail "create-cluster answered $arn"
ok "create-cluster cli-scratch: $arn"
ecs list-clusters | field 'd["clusterArns"]' | grep -q cli-scratch || fail "list-clusters lacks cli-scratch"
ok "list-clusters lists it"

cat > "$work/taskdef.json" <<EOF
{
  "family": "cli-web",
  "containerDefinitions": [
    {"name": "app", "image": "$image", "memory": 32, "cpu": 64,
     "command": ["ticker", "500"], "essential": true, "stopTimeout": 2}
  ],
  "tags": [{"key": "team", "value": "payments"}]
}
EOF
td=$(ecs register-task-definition --cli-input-json "file://$work/taskdef.json")
revision=$(echo "$td" | field 'd["taskDefinition"]["revision"]')
[[ $revision -ge 1 ]] || fail "register-task-definition answered revision $revision"
ok "register-task-definition from an ECS JSON file: cli-web:$revision"
tags=$(ecs describe-task-definition --task-definition "cli-web:$revision" --include TAGS | field 'd["tags"]')
[[ $tags == *payments* ]] || fail "describe-task-definition --include TAGS answered $tags"
ok "describe-task-definition --include TAGS: $tags"

task=$(ecs run-task --cluster "$cluster" --task-definition cli-web | field 'd["tasks"][0]["taskArn"]')
ok "run-task: $task"
ecs wait tasks-running --cluster "$cluster" --tasks "$task" || fail "wait tasks-running"
status=$(ecs describe-tasks --cluster "$cluster" --tasks "$task" | field 'd["tasks"][0]["lastStatus"]')
[[ $status == RUNNING ]] || fail "describe-tasks says $status"
ok "wait tasks-running, describe-tasks: $status"
ecs list-tasks --cluster "$cluster" --family cli-web | field 'd["taskArns"]' | grep -q "${task##*/}" || fail "list-tasks lacks the task"
ok "list-tasks --family cli-web lists it"
ecs tag-resource --resource-arn "$task" --tags key=stage,value=test >/dev/null
tags=$(ecs list-tags-for-resource --resource-arn "$task" | field 'd["tags"]')
[[ $tags == *stage* ]] || fail "list-tags-for-resource answered $tags"
tags=$(ecs describe-tasks --cluster "$cluster" --tasks "$task" --include TAGS | field 'd["tasks"][0]["tags"]')
[[ $tags == *stage* ]] || fail "describe-tasks --include TAGS answered $tags"
ok "tag-resource on the task, list-tags-for-resource, describe-tasks --include TAGS: $tags"

ecs create-service --cluster "$cluster" --service-name cli-svc --task-definition cli-web \
    --desired-count 1 --tags key=team,value=payments >/dev/null
ecs wait services-stable --cluster "$cluster" --services cli-svc || fail "wait services-stable (1)"
ok "create-service, wait services-stable"
ecs update-service --cluster "$cluster" --service cli-svc --desired-count 2 >/dev/null
ecs wait services-stable --cluster "$cluster" --services cli-svc || fail "wait services-stable (2)"
svc=$(ecs describe-services --cluster "$cluster" --services cli-svc --include TAGS)
running=$(echo "$svc" | field 'd["services"][0]["runningCount"]')
svc_tags=$(echo "$svc" | field 'd["services"][0]["tags"]')
[[ $running == 2 ]] || fail "runningCount $running after update-service --desired-count 2"
[[ $svc_tags == *payments* ]] || fail "describe-services --include TAGS answered $svc_tags"
ok "update-service --desired-count 2, wait services-stable, describe-services --include TAGS: running $running, tags $svc_tags"

stopped=$(ecs stop-task --cluster "$cluster" --task "$task" --reason "cli test" | field 'd["task"]["desiredStatus"]')
[[ $stopped == STOPPED ]] || fail "stop-task answered desiredStatus $stopped"
ecs wait tasks-stopped --cluster "$cluster" --tasks "$task" || fail "wait tasks-stopped"
ok "stop-task, wait tasks-stopped"
ecs delete-service --cluster "$cluster" --service cli-svc --force >/dev/null
ok "delete-service --force"
status=$(ecs deregister-task-definition --task-definition "cli-web:$revision" | field 'd["taskDefinition"]["status"]')
[[ $status == INACTIVE ]] || fail "deregister-task-definition answered $status"
ok "deregister-task-definition: $status"
status=$(ecs delete-cluster --cluster cli-scratch | field 'd["cluster"]["status"]')
[[ $status == INACTIVE ]] || fail "delete-cluster answered $status"
ok "delete-cluster: $status"

# Errors come back as the CLI shows AWS's: the type and the message.
if out=$(ecs describe-services --cluster no-such-cluster --services x 2>&1); then
    fail "describe-services on a missing cluster succeeded: $out"
fi
[[ $out == *ClusterNotFoundException* ]] || fail "missing cluster answered: $out"
ok "a missing cluster is ClusterNotFoundException: ${out//$'\n'/ }"
echo "aws CLI: all checks passed"
