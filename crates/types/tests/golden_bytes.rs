//! The Raft log and snapshots store commands and the state with bincode,
//! which is positional: adding, removing or reordering a field or a variant
//! of any stored type changes what old bytes mean. This test pins the bytes
//! of a representative command of every kind and of a state that holds
//! every kind of record. If it fails after an intended change, bump
//! `DATA_FORMAT` in `berth-store` (data dirs of the old format are then
//! refused with a clear error) and re-bless the golden file:
//! `BERTH_BLESS=1 cargo test -p berth-types --test golden_bytes`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use berth_types::journal::{Actor, Principal, Retention};
use berth_types::resources::Resources;
use berth_types::scheduled;
use berth_types::service::{self, DeploymentConfiguration, ServiceSpec, ServiceUpdate};
use berth_types::task::{ContainerState, ContainerStatus, Health};
use berth_types::*;

fn definition() -> TaskDefinitionSpec {
    let mut c = ContainerDefinition::new("app", "registry.local/app:1");
    c.memory = Some(128);
    c.cpu = 256;
    c.environment = vec![KeyValuePair {
        name: "K".into(),
        value: "V".into(),
    }];
    c.secrets = vec![berth_types::secrets::SecretRef {
        name: "DB_PASSWORD".into(),
        value_from: "db-password".into(),
    }];
    c.repository_credentials = Some("registry-creds".into());
    c.port_mappings = vec![PortMapping {
        container_port: 80,
        host_port: Some(80),
        protocol: Protocol::Tcp,
    }];
    c.health_check = Some(HealthCheck {
        command: vec!["CMD".into(), "true".into()],
        interval: 5,
        timeout: 2,
        retries: 3,
        start_period: 1,
    });
    TaskDefinitionSpec {
        family: "web".into(),
        container_definitions: vec![c],
        cpu: None,
        memory: None,
        network_mode: Default::default(),
        volumes: vec![],
        tags: vec![],
    }
}

fn commands() -> Vec<Command> {
    let mut deployment_configuration =
        DeploymentConfiguration::defaults_for(SchedulingStrategy::Replica);
    deployment_configuration.controller =
        service::DeploymentController::BlueGreen(service::BlueGreen {
            traffic: service::TrafficShift::Canary {
                percent: 10,
                interval_secs: 60,
            },
            bake_time_secs: 30,
        });
    let service = ServiceSpec {
        load_balancers: vec![service::LoadBalancer {
            name: "public".into(),
            container_name: "app".into(),
            container_port: 80,
            deregistration_delay_secs: 10,
        }],
        cluster: "default".into(),
        name: "web".into(),
        task_definition: "web".into(),
        desired_count: 2,
        scheduling_strategy: SchedulingStrategy::Replica,
        placement_strategies: vec!["spread:instanceId".into()],
        placement_constraints: vec![],
        deployment_configuration,
        health_check_grace_period_secs: 10,
        tags: BTreeMap::from([("team".to_string(), "a".to_string())]),
    };
    vec![
        Command::RegisterTaskDefinition {
            spec: definition(),
            at_ms: 1,
        },
        Command::CreateActivation {
            id: "act".into(),
            cluster: "default".into(),
            description: "d".into(),
            secret_hash: "h".into(),
            expires_at_ms: 99,
            max_registrations: 3,
            attributes: BTreeMap::from([("zone".to_string(), "a".to_string())]),
            at_ms: 2,
        },
        Command::RegisterInstance(Registration {
            activation_id: "act".into(),
            secret_hash: "h".into(),
            new_instance_id: "i-1".into(),
            previous_instance_id: None,
            expected_cluster: None,
            hostname: "h1".into(),
            attributes: BTreeMap::new(),
            certificate_expires_at_ms: 100,
            at_ms: 3,
            public_key_sha256: "key-1".into(),
        }),
        Command::InstanceConnected {
            host_ports: Vec::new(),
            instance_id: "i-1".into(),
            agent_version: "v".into(),
            resources: Resources::new(1024, 2048),
            attributes: BTreeMap::new(),
            at_ms: 4,
        },
        Command::CreateService {
            spec: service,
            deployment_id: "ecs-svc/1".into(),
            at_ms: 5,
        },
        Command::StartServiceTasks(StartServiceTasks {
            cluster: "default".into(),
            service: "web".into(),
            deployment_id: "ecs-svc/1".into(),
            task_ids: vec!["t-1".into()],
            instance_ids: vec![],
            at_ms: 6,
        }),
        Command::PlaceTasks {
            placements: vec![TaskPlacement {
                task_id: "t-1".into(),
                instance_id: "i-1".into(),
            }],
            unplaced: vec![],
            at_ms: 7,
        },
        Command::ReportTaskStatus {
            instance_id: "i-1".into(),
            reports: vec![TaskReport {
                task_id: "t-1".into(),
                last_status: TaskStatus::Running,
                containers: vec![ContainerState {
                    name: "app".into(),
                    status: ContainerStatus::Running,
                    exit_code: None,
                    reason: String::new(),
                    health: Health::Healthy,
                    restart_count: 0,
                }],
                reason: String::new(),
                stop_code: None,
                ip: Some("198.18.0.7".into()),
            }],
            at_ms: 8,
        },
        Command::UpdateService {
            cluster: "default".into(),
            name: "web".into(),
            update: ServiceUpdate {
                desired_count: Some(3),
                force_new_deployment: true,
                ..Default::default()
            },
            deployment_id: "ecs-svc/2".into(),
            at_ms: 9,
        },
        Command::StopServiceTasks {
            cluster: "default".into(),
            service: "web".into(),
            stops: vec![ServiceTaskStop {
                task_id: "t-1".into(),
                cause: StopCause::Replaced,
            }],
            at_ms: 10,
        },
        Command::ServiceProgress {
            cluster: "default".into(),
            service: "web".into(),
            progress: ServiceProgress::Note {
                message: "m".into(),
            },
            at_ms: 11,
        },
        Command::DeleteService {
            cluster: "default".into(),
            name: "web".into(),
            force: true,
            at_ms: 12,
        },
        Command::RevokeCertificate {
            fingerprint: "ab".repeat(32),
            description: "stolen laptop".into(),
            at_ms: 13,
        },
        Command::EndDeactivation {
            task_ids: vec!["t-1".into()],
            at_ms: 14,
        },
        Command::PutSchedule {
            spec: scheduled::ScheduleSpec {
                cluster: "default".into(),
                name: "nightly".into(),
                expression: "cron(0 3 * * ? *)".into(),
                timezone: "Asia/Seoul".into(),
                task_definition: "web".into(),
                count: 1,
                overrides: vec![("app".into(), "MODE".into(), "full".into())],
                placement_strategies: vec![],
                placement_constraints: vec![],
                concurrency: scheduled::ConcurrencyPolicy::Replace,
                catch_up: false,
            },
            create: true,
            at_ms: 20,
        },
        Command::FireSchedule(FireSchedule {
            cluster: "default".into(),
            name: "nightly".into(),
            slot_ms: 60_000,
            run: None,
            stop_task_ids: vec!["t-9".into()],
            skipped: Some("forbid".into()),
            at_ms: 61_000,
        }),
        Command::SetSchedulePaused {
            cluster: "default".into(),
            name: "nightly".into(),
            paused: true,
            at_ms: 62_000,
        },
        Command::PutSecret {
            secret: berth_types::secrets::Secret {
                name: "db-password".into(),
                description: "the app's database".into(),
                nonce: vec![7; 12],
                ciphertext: vec![9; 23],
                version: 0,
                created_at_ms: 0,
                updated_at_ms: 0,
            },
            create: true,
            at_ms: 63_000,
        },
        Command::TagResource {
            target: TagTarget::Cluster {
                name: "default".into(),
            },
            tags: BTreeMap::from([("env".into(), "prod".into())]),
        },
        Command::TagResource {
            target: TagTarget::Task { id: "t-1".into() },
            tags: BTreeMap::from([("team".into(), "core".into())]),
        },
        Command::TagResource {
            target: TagTarget::Instance { id: "i-1".into() },
            tags: BTreeMap::from([("rack".into(), "a".into()), ("tmp".into(), "x".into())]),
        },
        Command::UntagResource {
            target: TagTarget::Instance { id: "i-1".into() },
            keys: vec!["tmp".into()],
        },
        Command::PutAccountSetting {
            principal: String::new(),
            name: "containerInsights".into(),
            value: "enabled".into(),
        },
        Command::PutAccountSetting {
            principal: "arn:aws:iam::123456789012:user/ops".into(),
            name: "serviceLongArnFormat".into(),
            value: "enabled".into(),
        },
        Command::CreateAwsAccessKey {
            id: "BKIA0123456789ABCDEF".into(),
            role: Role::Admin,
            description: "boto3".into(),
            sealed: SealedKey {
                nonce: vec![7; 12],
                ciphertext: vec![8; 56],
            },
            expires_at_ms: Some(99_000),
            at_ms: 64_000,
        },
    ]
}

/// Commands whose bytes are pinned without applying them (they need a
/// state the sequence above does not reach).
fn unapplied() -> Vec<Command> {
    vec![
        Command::RollbackService {
            cluster: "default".into(),
            name: "web".into(),
            deployment_id: "ecs-svc/3".into(),
            at_ms: 15,
        },
        Command::ServiceProgress {
            cluster: "default".into(),
            service: "web".into(),
            progress: ServiceProgress::TrafficShifted {
                deployment_id: "ecs-svc/2".into(),
                percent: 10,
            },
            at_ms: 16,
        },
        Command::ServiceProgress {
            cluster: "default".into(),
            service: "web".into(),
            progress: ServiceProgress::BlueGreenRolledBack {
                deployment_id: "ecs-svc/2".into(),
                reason: "r".into(),
            },
            at_ms: 17,
        },
        Command::DeleteSchedule {
            cluster: "default".into(),
            name: "nightly".into(),
            at_ms: 63_000,
        },
        Command::DeleteSecret {
            name: "db-password".into(),
            at_ms: 64_000,
        },
        Command::SetJournalRetention {
            retention: Retention {
                max_records: 5,
                max_age_ms: 3_600_000,
            },
        },
        Command::ResealSecrets {
            secrets: vec![berth_types::secrets::ResealedSecret {
                name: "db-password".into(),
                version: 1,
                nonce: vec![5; 12],
                ciphertext: vec![6; 23],
            }],
        },
        Command::TagResource {
            target: TagTarget::TaskDefinition {
                family: "web".into(),
                revision: 1,
            },
            tags: BTreeMap::from([("k".into(), "v".into())]),
        },
        Command::UntagResource {
            target: TagTarget::Service {
                cluster: "default".into(),
                name: "web".into(),
            },
            keys: vec!["k".into()],
        },
        Command::DeleteAccountSetting {
            principal: String::new(),
            name: "containerInsights".into(),
        },
        Command::CreateTaggedCluster {
            name: "tagged".into(),
            settings: ClusterSettings::default(),
            tags: BTreeMap::from([("env".into(), "test".into())]),
            at_ms: 65_000,
        },
        Command::DeleteTaskDefinition {
            family: "web".into(),
            revision: 1,
            at_ms: 66_000,
        },
        Command::ResealAwsAccessKeys {
            keys: vec![ResealedKey {
                id: "BKIA0123456789ABCDEF".into(),
                sealed: SealedKey {
                    nonce: vec![9; 12],
                    ciphertext: vec![10; 56],
                },
            }],
        },
    ]
}

fn encoded() -> String {
    let mut state = State::new();
    let mut lines = Vec::new();
    // Half the commands come from calls (audited), half from a server's
    // controllers, so the journal's records are pinned too.
    let caller = Actor {
        principal: Principal::Token {
            id: "tok".into(),
            role: Role::Admin,
        },
        operation: "Op".into(),
        peer: "127.0.0.1:1".into(),
    };
    for (index, command) in (1..).zip(commands()) {
        let bytes = bincode::serialize(&command).unwrap();
        lines.push(format!("{} {}", command.kind(), hex(&bytes)));
        let actor = if index % 2 == 0 {
            caller.clone()
        } else {
            Actor::server(1)
        };
        state.begin_entry(index, 1_000 + index as i64);
        state
            .apply_by(command.clone(), &actor)
            .unwrap_or_else(|e| panic!("{}: {e}", command.kind()));
    }
    assert!(
        !state.journal().events().is_empty() && !state.journal().audit().is_empty(),
        "the sequence journals events and calls"
    );
    for command in unapplied() {
        let bytes = bincode::serialize(&command).unwrap();
        lines.push(format!("{} {}", command.kind(), hex(&bytes)));
    }
    let bytes = bincode::serialize(&state).unwrap();
    // What is written must read back: bincode cannot decode some serde
    // shapes (internally tagged enums) that it encodes without complaint.
    let decoded: State = bincode::deserialize(&bytes).expect("the state decodes");
    assert_eq!(decoded, state);
    lines.push(format!("state {}", hex(&bytes)));
    lines.join("\n") + "\n"
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn stored_types_keep_their_bytes() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/data-format-7.txt");
    let now = encoded();
    if std::env::var_os("BERTH_BLESS").is_some() {
        std::fs::write(&path, &now).unwrap();
        return;
    }
    let golden = std::fs::read_to_string(&path).unwrap_or_default();
    for (line, (want, got)) in golden.lines().zip(now.lines()).enumerate() {
        let kind = got.split(' ').next().unwrap_or("?");
        assert_eq!(
            want, got,
            "line {line} ({kind}): the stored bytes changed; see this file's header for what to do"
        );
    }
    assert_eq!(
        golden.lines().count(),
        now.lines().count(),
        "golden file {path:?} is incomplete; see this file's header"
    );
}
