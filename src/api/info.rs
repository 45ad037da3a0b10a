//! What the cluster is: its instances, their connections, this server's version.

use axum::{Json, extract::State};
use serde::Serialize;
use utoipa::ToSchema;

use super::{
    ApiState,
    error::{ApiError, ApiErrorBody},
};
use crate::cluster::bounded;

#[derive(Serialize, ToSchema)]
pub struct InstanceInfo {
    /// The instance's incarnation in shared state (`<instance id>#<run>`).
    id: String,
    /// Sessions registered by it.
    connections: usize,
}

#[derive(Serialize, ToSchema)]
pub struct InfoResult {
    /// This server's version.
    version: &'static str,
    /// The instance that answered.
    instance: String,
    /// Every live instance sharing state with it (just itself without Redis).
    instances: Vec<InstanceInfo>,
    /// Sessions across the instances.
    connections: usize,
}

/// The cluster's instances and connections.
#[utoipa::path(post, path = "/api/v1/info", tag = "cluster",
    responses(
        (status = 200, body = InfoResult),
        (status = 401, body = ApiErrorBody), (status = 503, body = ApiErrorBody),
    ))]
pub async fn info(State(api): State<ApiState>) -> Result<Json<InfoResult>, ApiError> {
    let node = &api.node;
    let instances = bounded(node.presence.instances())
        .await
        .map_err(|e| ApiError::unavailable("presence", &e))?;
    let instances: Vec<InstanceInfo> =
        instances.into_iter().map(|(id, connections)| InstanceInfo { id, connections }).collect();
    Ok(Json(InfoResult {
        version: env!("CARGO_PKG_VERSION"),
        instance: node.incarnation.clone(),
        connections: instances.iter().map(|i| i.connections).sum(),
        instances,
    }))
}
