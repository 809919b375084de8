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
