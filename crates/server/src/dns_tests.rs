use std::collections::BTreeMap;
use std::str::FromStr;

use berth_types::command::StartServiceTasks;
use berth_types::resources::Resources;
use berth_types::service::ServiceSpec;
use berth_types::{
    Command, ContainerDefinition, DeploymentConfiguration, NetworkMode, PortMapping, Registration,
    SchedulingStrategy, TaskDefinitionSpec, TaskPlacement, TaskReport, TaskStatus,
};
use hickory_proto::op::Query;

use super::*;

/// Service `api` of cluster `default`: tasks a1 and a2 RUNNING on i-1
/// (10.0.0.1), container port 8080/tcp in bridge mode on dynamic ports.
fn state() -> State {
    let mut s = State::new();
    let mut apply = |c: Command| {
        s.apply(c).unwrap();
    };
    apply(Command::CreateActivation {
        id: "act".into(),
        cluster: "default".into(),
        description: String::new(),
        secret_hash: "h".into(),
        expires_at_ms: i64::MAX,
        max_registrations: 10,
        attributes: BTreeMap::new(),
        at_ms: 0,
    });
    apply(Command::RegisterInstance(Registration {
        activation_id: "act".into(),
        secret_hash: "h".into(),
        new_instance_id: "i-1".into(),
        previous_instance_id: None,
        expected_cluster: None,
        hostname: "host-1".into(),
        attributes: BTreeMap::new(),
        certificate_expires_at_ms: i64::MAX,
        at_ms: 1,
        public_key_sha256: "k".into(),
    }));
    apply(Command::InstanceConnected {
        host_ports: Vec::new(),
        instance_id: "i-1".into(),
        agent_version: "t".into(),
        resources: Resources::new(4096, 4096),
        attributes: BTreeMap::from([(
            berth_types::endpoints::ADDRESS_ATTRIBUTE.to_string(),
            "10.0.0.1".to_string(),
        )]),
        at_ms: 2,
    });
    let mut c = ContainerDefinition::new("api", "registry.local/api:1");
    c.memory = Some(64);
    c.port_mappings = vec![PortMapping {
        container_port: 8080,
        host_port: None,
        protocol: Protocol::Tcp,
    }];
    apply(Command::RegisterTaskDefinition {
        spec: TaskDefinitionSpec {
            family: "api".into(),
            container_definitions: vec![c],
            cpu: None,
            memory: None,
            network_mode: NetworkMode::Bridge,
            volumes: vec![],
            tags: vec![],
        },
        at_ms: 3,
    });
    apply(Command::CreateService {
        spec: ServiceSpec {
            load_balancers: Vec::new(),
            cluster: "default".into(),
            name: "api".into(),
            task_definition: "api".into(),
            desired_count: 2,
            scheduling_strategy: SchedulingStrategy::Replica,
            placement_strategies: vec![],
            placement_constraints: vec![],
            deployment_configuration: DeploymentConfiguration::defaults_for(
                SchedulingStrategy::Replica,
            ),
            health_check_grace_period_secs: 0,
            tags: BTreeMap::new(),
        },
        deployment_id: "ecs-svc/1".into(),
        at_ms: 4,
    });
    apply(Command::StartServiceTasks(StartServiceTasks {
        cluster: "default".into(),
        service: "api".into(),
        deployment_id: "ecs-svc/1".into(),
        task_ids: vec!["a1".into(), "a2".into()],
        instance_ids: vec![],
        at_ms: 5,
    }));
    apply(Command::PlaceTasks {
        placements: ["a1", "a2"]
            .iter()
            .map(|t| TaskPlacement {
                task_id: t.to_string(),
                instance_id: "i-1".into(),
            })
            .collect(),
        unplaced: vec![],
        at_ms: 6,
    });
    apply(Command::ReportTaskStatus {
        instance_id: "i-1".into(),
        reports: ["a1", "a2"]
            .iter()
            .map(|t| TaskReport {
                task_id: t.to_string(),
                last_status: TaskStatus::Running,
                containers: vec![],
                reason: String::new(),
                stop_code: None,
                ip: None,
            })
            .collect(),
        at_ms: 7,
    });
    s
}

fn query(name: &str, record_type: RecordType) -> Message {
    let mut m = Message::new();
    m.set_id(7)
        .set_recursion_desired(true)
        .add_query(Query::query(Name::from_str(name).unwrap(), record_type));
    m
}

fn answered(state: &State, name: &str, record_type: RecordType) -> Message {
    match answer(state, &query(name, record_type)) {
        Outcome::Answer(m) => m,
        Outcome::Forward => panic!("{name} was forwarded"),
    }
}

fn rdata(m: &Message) -> Vec<String> {
    m.answers().iter().map(|r| r.data().to_string()).collect()
}

#[test]
fn a_service_name_answers_its_endpoints_addresses() {
    let s = state();
    let m = answered(&s, "api.default.berth.", RecordType::A);
    assert_eq!(m.id(), 7);
    assert_eq!(m.response_code(), ResponseCode::NoError);
    assert!(m.header().authoritative());
    assert_eq!(rdata(&m), vec!["10.0.0.1"], "one address for both tasks");
    assert!(m.answers().iter().all(|r| r.ttl() == TTL_SECS));
    // Names are case-insensitive.
    let m = answered(&s, "API.Default.BERTH.", RecordType::A);
    assert_eq!(rdata(&m), vec!["10.0.0.1"]);
    // No IPv6 address: no records, but the name exists.
    let m = answered(&s, "api.default.berth.", RecordType::AAAA);
    assert_eq!(m.response_code(), ResponseCode::NoError);
    assert!(m.answers().is_empty());
}

#[test]
fn srv_records_give_each_tasks_host_port_and_an_address_for_it() {
    let s = state();
    let m = answered(&s, "_8080._tcp.api.default.berth.", RecordType::SRV);
    let mut srv = rdata(&m);
    srv.sort();
    assert_eq!(
        srv,
        vec![
            "0 10 49153 a1.api.default.berth.",
            "0 10 49154 a2.api.default.berth."
        ]
    );
    let additional: Vec<String> = m
        .additionals()
        .iter()
        .map(|r| format!("{} {}", r.name(), r.data()))
        .collect();
    assert!(
        additional.contains(&"a1.api.default.berth. 10.0.0.1".to_string()),
        "{additional:?}"
    );
    let m = answered(&s, "a2.api.default.berth.", RecordType::A);
    assert_eq!(rdata(&m), vec!["10.0.0.1"]);
    // Another port or protocol: the service exists, nothing publishes it.
    let m = answered(&s, "_9090._tcp.api.default.berth.", RecordType::SRV);
    assert_eq!(m.response_code(), ResponseCode::NoError);
    assert!(m.answers().is_empty());
}

#[test]
fn unknown_names_in_the_zone_do_not_exist_and_others_are_forwarded() {
    let mut s = state();
    for name in [
        "web.default.berth.",
        "api.other.berth.",
        "a9.api.default.berth.",
        "x.y.z.api.default.berth.",
        "berth.",
    ] {
        let m = answered(&s, name, RecordType::A);
        assert_eq!(m.response_code(), ResponseCode::NXDomain, "{name}");
        assert!(m.header().authoritative(), "{name}");
    }
    assert!(matches!(
        answer(&s, &query("example.com.", RecordType::A)),
        Outcome::Forward
    ));
    // A task asked to stop leaves at once.
    s.apply(Command::StopTask {
        task_id: "a1".into(),
        reason: "scale in".into(),
        at_ms: 8,
    })
    .unwrap();
    let m = answered(&s, "_8080._tcp.api.default.berth.", RecordType::SRV);
    assert_eq!(rdata(&m), vec!["0 10 49154 a2.api.default.berth."]);
}

#[tokio::test]
async fn served_over_udp_and_tcp_with_forwarding() {
    // An upstream that answers every query with the same canned reply.
    let upstream = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let upstream_addr = upstream.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 512];
        while let Ok((n, peer)) = upstream.recv_from(&mut buf).await {
            let request = Message::from_vec(&buf[..n]).unwrap();
            let mut reply = response_to(&request);
            reply.add_answer(Record::from_rdata(
                request.queries()[0].name().clone(),
                60,
                RData::A(A([192, 0, 2, 1].into())),
            ));
            upstream
                .send_to(&reply.to_vec().unwrap(), peer)
                .await
                .unwrap();
        }
    });
    let bound = serve(
        "127.0.0.1:0".parse().unwrap(),
        std::sync::RwLock::new(state()),
        Some(upstream_addr),
    )
    .await
    .unwrap();

    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let ask = |name: &str, record_type| {
        let bytes = query(name, record_type).to_vec().unwrap();
        let client = &client;
        async move {
            client.send_to(&bytes, bound).await.unwrap();
            let mut buf = [0u8; 4096];
            let (n, _) = tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buf))
                .await
                .unwrap()
                .unwrap();
            Message::from_vec(&buf[..n]).unwrap()
        }
    };
    assert_eq!(
        rdata(&ask("api.default.berth.", RecordType::A).await),
        vec!["10.0.0.1"]
    );
    assert_eq!(
        rdata(&ask("example.com.", RecordType::A).await),
        vec!["192.0.2.1"],
        "forwarded to the upstream"
    );

    let mut tcp = tokio::net::TcpStream::connect(bound).await.unwrap();
    let bytes = query("_8080._tcp.api.default.berth.", RecordType::SRV)
        .to_vec()
        .unwrap();
    tcp.write_u16(bytes.len() as u16).await.unwrap();
    tcp.write_all(&bytes).await.unwrap();
    let len = tcp.read_u16().await.unwrap();
    let mut reply = vec![0u8; usize::from(len)];
    tcp.read_exact(&mut reply).await.unwrap();
    assert_eq!(Message::from_vec(&reply).unwrap().answers().len(), 2);

    // Without an upstream, other names are refused.
    let alone = serve(
        "127.0.0.1:0".parse().unwrap(),
        std::sync::RwLock::new(state()),
        None,
    )
    .await
    .unwrap();
    client
        .send_to(
            &query("example.com.", RecordType::A).to_vec().unwrap(),
            alone,
        )
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let (n, _) = client.recv_from(&mut buf).await.unwrap();
    assert_eq!(
        Message::from_vec(&buf[..n]).unwrap().response_code(),
        ResponseCode::Refused
    );
}

#[test]
fn the_upstream_is_the_first_nameserver_of_resolv_conf() {
    let text = "# generated\nsearch lan\nnameserver 192.0.2.53\nnameserver 192.0.2.54\n";
    assert_eq!(
        upstream_from_resolv_conf(text),
        Some("192.0.2.53:53".parse().unwrap())
    );
    assert_eq!(upstream_from_resolv_conf("search lan\n"), None);
}

#[tokio::test]
async fn udp_and_tcp_share_a_fresh_port_even_when_tcp_holds_many_numbers() {
    // Hold TCP on ~1.4% of the ephemeral range: over 800 bindings on port
    // 0 the OS then hands out a UDP port whose TCP twin is taken (odds of
    // never doing so are about 1 in 100,000), and each must still succeed.
    // 400 held sockets stay well under a default limit of 1,024 files.
    let mut held = Vec::new();
    for _ in 0..400 {
        held.push(std::net::TcpListener::bind("127.0.0.1:0").unwrap());
    }
    for _ in 0..800 {
        let (udp, tcp) = bind_udp_and_tcp("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        assert_eq!(udp.local_addr().unwrap(), tcp.local_addr().unwrap());
    }
    drop(held);
}

#[tokio::test]
async fn a_named_port_taken_for_tcp_is_an_error_not_another_port() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let err = bind_udp_and_tcp(taken.local_addr().unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
}
