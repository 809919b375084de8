//! A Rust client of Berth's gRPC API written against the generated stubs
//! alone (`berth-proto`, i.e. tonic code from `proto/`), the way a program
//! outside this workspace would (docs/api.md, "Worked example: Rust"): TLS
//! trusting the cluster CA, `authorization: Bearer TOKEN` on every call, a
//! task definition registered and its family listed, and an error code read.
//!
//! ```sh
//! BERTH_ENDPOINT=127.0.0.1:7400 BERTH_CA=.berth/pki/ca.crt \
//! BERTH_TOKEN=$(cat .berth/pki/admin.token) cargo run -p berth-client --example grpc_hello
//! ```
//! `tests/tests/grpc_api.rs` runs it against a real server.

use berth_proto::pb;
use berth_proto::pb::task_definition_service_client::TaskDefinitionServiceClient;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

type Error = Box<dyn std::error::Error>;

fn var(name: &str) -> Result<String, Error> {
    std::env::var(name).map_err(|_| format!("set {name}").into())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let endpoint = var("BERTH_ENDPOINT")?;
    let ca_pem = std::fs::read_to_string(var("BERTH_CA")?)?;
    let bearer: MetadataValue<_> = format!("Bearer {}", var("BERTH_TOKEN")?).parse()?;

    // The server's certificate names its IP addresses and DNS names; the
    // cluster CA is the only root trusted.
    let channel = Channel::from_shared(format!("https://{endpoint}"))?
        .tls_config(berth_proto::tls::client_tls(&ca_pem, None))?
        .connect()
        .await?;
    let mut taskdefs = TaskDefinitionServiceClient::with_interceptor(
        channel,
        move |mut request: tonic::Request<()>| {
            request
                .metadata_mut()
                .insert("authorization", bearer.clone());
            Ok(request)
        },
    );

    let spec = pb::TaskDefinitionSpec {
        family: "hello-rust".into(),
        container_definitions: vec![pb::ContainerDefinition {
            name: "web".into(),
            image: "nginx:1.27".into(),
            memory: Some(64),
            essential: true,
            ..Default::default()
        }],
        ..Default::default()
    };
    let registered = taskdefs
        .register_task_definition(pb::RegisterTaskDefinitionRequest { spec: Some(spec) })
        .await?
        .into_inner()
        .task_definition
        .ok_or("the server answered without the task definition")?;
    println!("registered {}:{}", registered.family, registered.revision);

    let families = taskdefs
        .list_task_definition_families(pb::ListTaskDefinitionFamiliesRequest::default())
        .await?
        .into_inner();
    let names: Vec<&str> = families
        .families
        .iter()
        .map(|f| f.family.as_str())
        .collect();
    println!("families: {}", names.join(","));

    // Errors are gRPC status codes with a message naming the field.
    let bad = pb::TaskDefinitionSpec {
        family: "hello-rust".into(),
        ..Default::default()
    };
    match taskdefs
        .register_task_definition(pb::RegisterTaskDefinitionRequest { spec: Some(bad) })
        .await
    {
        Err(status) => println!("refused: {:?}: {}", status.code(), status.message()),
        Ok(_) => return Err("a task definition without containers was accepted".into()),
    }
    Ok(())
}
