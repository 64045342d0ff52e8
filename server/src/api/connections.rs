//! SIEM connections. Credentials are write-only: no response ever carries them.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{ApiJson, ApiPath};
use crate::AppState;
use crate::auth::{Auth, perm};
use crate::db::entity::siem_connection;
use crate::error::{ApiError, ApiResult};
use crate::service::connections::{
    self, ElasticStored, IngestionStored, NewConnection, NewKind, SentinelStored, SplunkHecStored,
};
use crate::time::rfc3339;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/connections", get(list).post(create))
        .route("/v1/connections/{id}", get(show))
        .route("/v1/connections/{id}/credential", put(update_credential))
        .route("/v1/connections/{id}/hec", put(set_hec))
}

/// A new SIEM connection. Which fields apply depends on `kind`; a field of
/// another kind is refused (`field_not_allowed`), a missing one named
/// (`missing_field`).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateConnectionRequest {
    /// Unique name in the tenant, 1-64 of `[A-Za-z0-9_.-]`.
    pub name: String,
    /// `splunk`, `sentinel` or `elastic`.
    pub kind: String,
    /// The agent that serves this SIEM.
    pub agent_id: Uuid,
    /// Splunk: management API URL (`https://splunk.corp:8089`). Sentinel: the
    /// ARM URL (default `https://management.azure.com`). Elastic: the Kibana URL.
    #[serde(default)]
    pub base_url: Option<String>,
    /// Splunk: app namespace (default `search`).
    #[serde(default)]
    pub app: Option<String>,
    /// Splunk: owner namespace (default `nobody`).
    #[serde(default)]
    pub owner: Option<String>,
    /// Splunk: authentication token, sent as `Authorization: Bearer`.
    /// Write-only. Give either this or `username` and `password`.
    #[serde(default)]
    pub token: Option<String>,
    /// Splunk: user for session-key authentication (`/services/auth/login`),
    /// instead of a token; needs `password`.
    #[serde(default)]
    pub username: Option<String>,
    /// Splunk: that user's password. Write-only: sealed like a token, never returned.
    #[serde(default)]
    pub password: Option<String>,
    /// Sentinel: Azure subscription id.
    #[serde(default)]
    pub subscription_id: Option<String>,
    /// Sentinel: resource group of the workspace.
    #[serde(default)]
    pub resource_group: Option<String>,
    /// Sentinel: Log Analytics workspace name.
    #[serde(default)]
    pub workspace_name: Option<String>,
    /// Sentinel: Log Analytics workspace id (GUID).
    #[serde(default)]
    pub workspace_id: Option<String>,
    /// Sentinel: Entra tenant id.
    #[serde(default)]
    pub tenant_id: Option<String>,
    /// Sentinel: Entra application (client) id.
    #[serde(default)]
    pub client_id: Option<String>,
    /// Sentinel: the application's client secret. Write-only.
    #[serde(default)]
    pub client_secret: Option<String>,
    /// Sentinel: Entra authority (default `https://login.microsoftonline.com`).
    #[serde(default)]
    pub login_url: Option<String>,
    /// Sentinel: Log Analytics query API (default `https://api.loganalytics.io`).
    #[serde(default)]
    pub log_analytics_url: Option<String>,
    /// Sentinel: Logs Ingestion target for test events (optional).
    #[serde(default)]
    pub ingestion: Option<IngestionRequest>,
    /// Elastic: Elasticsearch URL (test events and counts).
    #[serde(default)]
    pub elasticsearch_url: Option<String>,
    /// Elastic: Kibana space id (optional; the default space otherwise).
    #[serde(default)]
    pub space: Option<String>,
    /// Elastic: API key (base64 `id:key`). Write-only.
    #[serde(default)]
    pub api_key: Option<String>,
    /// Elastic: index for test events (default `picket-test`).
    #[serde(default)]
    pub test_index: Option<String>,
}

/// The Logs Ingestion target of a Sentinel connection.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IngestionRequest {
    /// Data collection endpoint URL.
    pub endpoint: String,
    /// Data collection rule immutable id (`dcr-...`).
    pub dcr_immutable_id: String,
    /// Stream name, `Custom-...`.
    pub stream: String,
    /// Table the stream lands in (count queries read it).
    pub table: String,
}

/// Refuses the fields that do not belong to `kind`.
fn only(kind: &str, fields: &[(&str, bool)]) -> ApiResult<()> {
    match fields.iter().find(|(_, present)| *present) {
        Some((name, _)) => Err(ApiError::bad_request(
            "field_not_allowed",
            format!("{name} does not apply to a {kind} connection"),
        )),
        None => Ok(()),
    }
}

/// The value of a field `kind` requires.
fn required(field: &str, value: Option<String>) -> ApiResult<String> {
    value.ok_or_else(|| {
        ApiError::bad_request(
            "missing_field",
            format!("{field} is required for this kind"),
        )
    })
}

impl CreateConnectionRequest {
    /// Splits the request into the service's input, per kind.
    fn into_new(self) -> ApiResult<NewConnection> {
        let splunk_fields = [
            ("app", self.app.is_some()),
            ("owner", self.owner.is_some()),
            ("token", self.token.is_some()),
            ("username", self.username.is_some()),
            ("password", self.password.is_some()),
        ];
        let sentinel_fields = [
            ("subscription_id", self.subscription_id.is_some()),
            ("resource_group", self.resource_group.is_some()),
            ("workspace_name", self.workspace_name.is_some()),
            ("workspace_id", self.workspace_id.is_some()),
            ("tenant_id", self.tenant_id.is_some()),
            ("client_id", self.client_id.is_some()),
            ("client_secret", self.client_secret.is_some()),
            ("login_url", self.login_url.is_some()),
            ("log_analytics_url", self.log_analytics_url.is_some()),
            ("ingestion", self.ingestion.is_some()),
        ];
        let elastic_fields = [
            ("elasticsearch_url", self.elasticsearch_url.is_some()),
            ("space", self.space.is_some()),
            ("api_key", self.api_key.is_some()),
            ("test_index", self.test_index.is_some()),
        ];
        let (kind, secret) = match self.kind.as_str() {
            "splunk" => {
                only("splunk", &sentinel_fields)?;
                only("splunk", &elastic_fields)?;
                let (username, secret) = match (self.token, self.username, self.password) {
                    (Some(token), None, None) => (None, token),
                    (None, Some(user), Some(password)) => (Some(user), password),
                    (Some(_), _, _) => {
                        return Err(ApiError::bad_request(
                            "field_not_allowed",
                            "username and password do not apply with a token: give one form",
                        ));
                    }
                    (None, Some(_), None) => {
                        return Err(ApiError::bad_request(
                            "missing_field",
                            "password is required with username",
                        ));
                    }
                    (None, None, Some(_)) => {
                        return Err(ApiError::bad_request(
                            "missing_field",
                            "username is required with password",
                        ));
                    }
                    (None, None, None) => {
                        return Err(ApiError::bad_request(
                            "missing_field",
                            "token (or username and password) is required for this kind",
                        ));
                    }
                };
                let kind = NewKind::Splunk {
                    app: self.app.unwrap_or_else(|| "search".into()),
                    owner: self.owner.unwrap_or_else(|| "nobody".into()),
                    username,
                };
                (kind, secret)
            }
            "sentinel" => {
                only("sentinel", &splunk_fields)?;
                only("sentinel", &elastic_fields)?;
                let kind = NewKind::Sentinel(Box::new(SentinelStored {
                    subscription_id: required("subscription_id", self.subscription_id)?,
                    resource_group: required("resource_group", self.resource_group)?,
                    workspace_name: required("workspace_name", self.workspace_name)?,
                    workspace_id: required("workspace_id", self.workspace_id)?,
                    tenant_id: required("tenant_id", self.tenant_id)?,
                    client_id: required("client_id", self.client_id)?,
                    login_url: self
                        .login_url
                        .unwrap_or_else(|| "https://login.microsoftonline.com".into()),
                    log_analytics_url: self
                        .log_analytics_url
                        .unwrap_or_else(|| "https://api.loganalytics.io".into()),
                    ingestion: self.ingestion.map(|i| IngestionStored {
                        endpoint: i.endpoint,
                        dcr_immutable_id: i.dcr_immutable_id,
                        stream: i.stream,
                        table: i.table,
                    }),
                }));
                (kind, required("client_secret", self.client_secret)?)
            }
            "elastic" => {
                only("elastic", &splunk_fields)?;
                only("elastic", &sentinel_fields)?;
                let kind = NewKind::Elastic(ElasticStored {
                    elasticsearch_url: required("elasticsearch_url", self.elasticsearch_url)?,
                    space: self.space,
                    test_index: self.test_index.unwrap_or_else(|| "picket-test".into()),
                });
                (kind, required("api_key", self.api_key)?)
            }
            _ => {
                return Err(ApiError::bad_request(
                    "unsupported_kind",
                    "kind must be \"splunk\", \"sentinel\" or \"elastic\"",
                ));
            }
        };
        let base_url = match (&kind, self.base_url) {
            (_, Some(url)) => url,
            (NewKind::Sentinel(_), None) => "https://management.azure.com".into(),
            (_, None) => {
                return Err(ApiError::bad_request(
                    "missing_field",
                    "base_url is required for this kind",
                ));
            }
        };
        Ok(NewConnection {
            name: self.name,
            agent_id: self.agent_id,
            base_url,
            kind,
            secret: zeroize::Zeroizing::new(secret),
        })
    }
}

/// A connection as shown by the API; the credential only as a mask.
#[derive(Serialize, ToSchema)]
pub struct ConnectionView {
    /// Id.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// SIEM kind.
    pub kind: String,
    /// Serving agent.
    pub agent_id: Uuid,
    /// Base URL.
    pub base_url: String,
    /// Splunk app.
    pub app: String,
    /// Splunk owner.
    pub owner: String,
    /// Non-secret settings of Sentinel and Elastic connections (workspace,
    /// endpoints, space, test index); `null` for Splunk.
    #[schema(value_type = Object)]
    pub settings: Option<serde_json::Value>,
    /// Splunk: the user the agent logs in as (session-key authentication);
    /// `null` when the connection uses a token, and for other kinds.
    pub username: Option<String>,
    /// Always `********`: credentials are write-only.
    pub credential: String,
    /// When the credential was last set (RFC 3339).
    pub credential_updated_at: String,
}

impl From<siem_connection::Model> for ConnectionView {
    fn from(c: siem_connection::Model) -> Self {
        ConnectionView {
            id: c.id,
            name: c.name,
            kind: c.kind,
            agent_id: c.agent_id,
            base_url: c.base_url,
            app: c.app,
            owner: c.owner,
            settings: c
                .settings
                .as_deref()
                .and_then(|t| serde_json::from_str(t).ok()),
            username: c.splunk_username,
            credential: "********".into(),
            credential_updated_at: rfc3339(c.updated_at),
        }
    }
}

/// Registers a SIEM connection (admin only).
#[utoipa::path(post, path = "/v1/connections", request_body = CreateConnectionRequest,
    responses((status = 201, body = ConnectionView), (status = 400), (status = 403), (status = 409)))]
pub async fn create(
    State(state): State<AppState>,
    admin: Auth<perm::Administer>,
    ApiJson(req): ApiJson<CreateConnectionRequest>,
) -> ApiResult<(StatusCode, Json<ConnectionView>)> {
    let input = req.into_new()?;
    let row = connections::create(&state, admin.tenant_id, admin.id, input).await?;
    Ok((StatusCode::CREATED, Json(row.into())))
}

/// Connections of the tenant.
#[utoipa::path(get, path = "/v1/connections", responses((status = 200, body = [ConnectionView])))]
pub async fn list(
    State(state): State<AppState>,
    user: Auth<perm::View>,
) -> ApiResult<Json<Vec<ConnectionView>>> {
    Ok(Json(
        connections::list(&state.db, user.tenant_id)
            .await?
            .into_iter()
            .map(Into::into)
            .collect(),
    ))
}

/// One connection.
#[utoipa::path(get, path = "/v1/connections/{id}", params(("id" = Uuid, Path)), responses((status = 200, body = ConnectionView), (status = 404)))]
pub async fn show(
    State(state): State<AppState>,
    user: Auth<perm::View>,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<ConnectionView>> {
    Ok(Json(
        connections::get(&state.db, user.tenant_id, id)
            .await?
            .into(),
    ))
}

/// A replacement credential.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateCredentialRequest {
    /// The new secret: Splunk token (or password, for a connection with a
    /// `username`), Sentinel client secret or Elastic API key (`token` is
    /// accepted as an alias). Write-only: never returned.
    #[serde(alias = "token")]
    pub secret: String,
}

/// Replaces a connection's credential (admin only). Write-only: the answer
/// shows the mask and the new `credential_updated_at`, never the secret.
#[utoipa::path(put, path = "/v1/connections/{id}/credential", params(("id" = Uuid, Path)), request_body = UpdateCredentialRequest,
    responses((status = 200, body = ConnectionView), (status = 400), (status = 403), (status = 404)))]
pub async fn update_credential(
    State(state): State<AppState>,
    admin: Auth<perm::Administer>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<UpdateCredentialRequest>,
) -> ApiResult<Json<ConnectionView>> {
    let row =
        connections::update_credential(&state, &admin, id, zeroize::Zeroizing::new(req.secret))
            .await?;
    Ok(Json(row.into()))
}

/// A Splunk connection's HTTP Event Collector, where rule tests inject events.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetHecRequest {
    /// HEC base URL, e.g. `https://splunk.corp:8088`.
    pub url: String,
    /// Index that receives test events (the token must allow it).
    pub test_index: String,
    /// HEC token. Write-only: never returned.
    pub token: String,
}

/// Sets a Splunk connection's HEC for rule tests (admin only). The token is
/// write-only; the URL and test index show in `settings`.
#[utoipa::path(put, path = "/v1/connections/{id}/hec", params(("id" = Uuid, Path)), request_body = SetHecRequest,
    responses((status = 200, body = ConnectionView), (status = 400), (status = 403), (status = 404), (status = 409)))]
pub async fn set_hec(
    State(state): State<AppState>,
    admin: Auth<perm::Administer>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<SetHecRequest>,
) -> ApiResult<Json<ConnectionView>> {
    let token = zeroize::Zeroizing::new(req.token);
    let row = connections::set_splunk_hec(
        &state,
        &admin,
        id,
        SplunkHecStored {
            hec_url: req.url,
            test_index: req.test_index,
        },
        token,
    )
    .await?;
    Ok(Json(row.into()))
}
