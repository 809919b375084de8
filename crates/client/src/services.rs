//! Services and their deployments.

use berth_proto::pb;
use berth_proto::pb::service_service_client::ServiceServiceClient;
use berth_types::service::{
    CreateServiceInput, DeploymentView, SchedulingStrategy, ServiceDescription, UpdateServiceInput,
};

use crate::{read, read_all, required, BerthClient, ClientError, Conn, Kind};

fn service_service(conn: Conn) -> ServiceServiceClient<Conn> {
    ServiceServiceClient::new(conn)
}

/// Names a DescribeServices call asked for that do not exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    pub name: String,
    pub reason: String,
}

fn missing(failures: Vec<pb::Failure>) -> Vec<Missing> {
    failures
        .into_iter()
        .map(|f| Missing {
            name: f.name,
            reason: f.reason,
        })
        .collect()
}

impl BerthClient {
    /// Not retried after a lost reply: a second try would find the service
    /// already created.
    pub async fn create_service(
        &self,
        input: &CreateServiceInput,
    ) -> Result<ServiceDescription, ClientError> {
        let req = pb::CreateServiceRequest::from(input);
        let resp = self
            .call(Kind::Write, |conn| {
                let req = req.clone();
                async move { service_service(conn).create_service(req).await }
            })
            .await?;
        read("service", required(resp.service, "service")?)
    }

    pub async fn update_service(
        &self,
        input: &UpdateServiceInput,
    ) -> Result<ServiceDescription, ClientError> {
        let req = pb::UpdateServiceRequest::from(input);
        let resp = self
            .call(Kind::Write, |conn| {
                let req = req.clone();
                async move { service_service(conn).update_service(req).await }
            })
            .await?;
        read("service", required(resp.service, "service")?)
    }

    /// Deleting twice is harmless (the second finds it deleting), so a
    /// lost reply is retried.
    pub async fn delete_service(
        &self,
        cluster: &str,
        name: &str,
        force: bool,
    ) -> Result<ServiceDescription, ClientError> {
        let req = pb::DeleteServiceRequest {
            cluster: cluster.to_string(),
            service: name.to_string(),
            force,
        };
        let resp = self
            .call(Kind::Idempotent, |conn| {
                let req = req.clone();
                async move { service_service(conn).delete_service(req).await }
            })
            .await?;
        read("service", required(resp.service, "service")?)
    }

    /// Not retried after a lost reply: a second rollback would act on
    /// whatever the first left in progress.
    pub async fn rollback_service(
        &self,
        cluster: &str,
        name: &str,
    ) -> Result<ServiceDescription, ClientError> {
        let req = pb::RollbackServiceRequest {
            cluster: cluster.to_string(),
            service: name.to_string(),
        };
        let resp = self
            .call(Kind::Write, |conn| {
                let req = req.clone();
                async move { service_service(conn).rollback_service(req).await }
            })
            .await?;
        read("service", required(resp.service, "service")?)
    }

    pub async fn describe_services(
        &self,
        cluster: &str,
        names: &[String],
    ) -> Result<(Vec<ServiceDescription>, Vec<Missing>), ClientError> {
        let req = pb::DescribeServicesRequest {
            cluster: cluster.to_string(),
            services: names.to_vec(),
        };
        let resp = self
            .call(Kind::Read, |conn| {
                let req = req.clone();
                async move { service_service(conn).describe_services(req).await }
            })
            .await?;
        Ok((read_all("service", resp.services)?, missing(resp.failures)))
    }

    /// One service; a missing one is `NotFound`.
    pub async fn describe_service(
        &self,
        cluster: &str,
        name: &str,
    ) -> Result<ServiceDescription, ClientError> {
        let (mut found, _) = self.describe_services(cluster, &[name.to_string()]).await?;
        found.pop().ok_or_else(|| ClientError::Api {
            code: tonic::Code::NotFound,
            message: format!("service {name:?} not found; `berth service list` shows the services"),
        })
    }

    /// The services of a cluster (without their events).
    pub async fn list_services(
        &self,
        cluster: &str,
        strategy: Option<SchedulingStrategy>,
        include_inactive: bool,
    ) -> Result<Vec<ServiceDescription>, ClientError> {
        let req = pb::ListServicesRequest {
            cluster: cluster.to_string(),
            scheduling_strategy: strategy.map(|s| s.as_str().to_string()).unwrap_or_default(),
            include_inactive,
        };
        let resp = self
            .call(Kind::Read, |conn| {
                let req = req.clone();
                async move { service_service(conn).list_services(req).await }
            })
            .await?;
        read_all("service", resp.services)
    }

    pub async fn list_service_deployments(
        &self,
        cluster: &str,
        name: &str,
    ) -> Result<Vec<DeploymentView>, ClientError> {
        let req = pb::ListServiceDeploymentsRequest {
            cluster: cluster.to_string(),
            service: name.to_string(),
        };
        let resp = self
            .call(Kind::Read, |conn| {
                let req = req.clone();
                async move { service_service(conn).list_service_deployments(req).await }
            })
            .await?;
        read_all("deployment", resp.deployments)
    }
}

/// A service's endpoints as they change: [`EndpointWatch::next`] returns
/// the whole current set each time it changes. A broken stream is opened
/// again, on any server, with the revision already seen, so a server going
/// away costs no set and repeats none.
pub struct EndpointWatch {
    client: BerthClient,
    request: pb::WatchEndpointsRequest,
    stream: Option<tonic::Streaming<pb::EndpointSet>>,
}

/// One set of endpoints; equal sets have equal revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSet {
    pub revision: u64,
    pub endpoints: Vec<berth_types::endpoints::Endpoint>,
}

impl BerthClient {
    /// Watches service `name`'s endpoints (readonly). The first
    /// [`EndpointWatch::next`] returns the current set.
    pub fn watch_endpoints(&self, cluster: &str, name: &str) -> EndpointWatch {
        EndpointWatch {
            client: self.clone(),
            request: pb::WatchEndpointsRequest {
                cluster: cluster.to_string(),
                service: name.to_string(),
                known_revision: 0,
            },
            stream: None,
        }
    }
}

impl EndpointWatch {
    /// The next set: the current one first, then each change. Fails when
    /// the service is not there (NotFound) or no server can be reached.
    pub async fn next(&mut self) -> Result<EndpointSet, ClientError> {
        let mut backoff = crate::backoff::Backoff::new(
            std::time::Duration::from_millis(100),
            std::time::Duration::from_secs(2),
            0.5..=1.0,
        );
        loop {
            let stream = match self.stream.as_mut() {
                Some(stream) => stream,
                None => {
                    let request = self.request.clone();
                    let (stream, _) = self
                        .client
                        .call_indexed(Kind::Read, |conn| {
                            let request = request.clone();
                            async move { service_service(conn).watch_endpoints(request).await }
                        })
                        .await?;
                    self.stream.insert(stream)
                }
            };
            let broken = match stream.message().await {
                Ok(Some(set)) => {
                    self.request.known_revision = set.revision;
                    return Ok(EndpointSet {
                        revision: set.revision,
                        endpoints: read_all("endpoint", set.endpoints)?,
                    });
                }
                Ok(None) => "the server ended the stream".to_string(),
                Err(status) => match crate::error::classify(status) {
                    crate::error::Failure::Server(status) => {
                        return Err(ClientError::from_status(&status))
                    }
                    crate::error::Failure::NotSent(reason)
                    | crate::error::Failure::Lost(reason) => reason,
                },
            };
            tracing::debug!(reason = %broken, "endpoint stream broken; opening it again");
            self.stream = None;
            let delay = backoff.next(&mut rand::thread_rng());
            tokio::time::sleep(delay).await;
        }
    }
}
