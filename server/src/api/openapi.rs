//! The OpenAPI document, generated from the handlers' annotations, served at `/v1/openapi.json`.

use axum::routing::get;
use axum::{Json, Router};
use utoipa::OpenApi;

use crate::AppState;

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Picket control plane API",
        description = "Rules, approvals, deployments and the agent fleet. Authenticate with `Authorization: Bearer <token>` from /v1/auth/login (browsers use the session cookie)."
    ),
    paths(
        super::accounts::claim,
        super::accounts::login,
        super::accounts::logout,
        super::accounts::me,
        super::accounts::create_user,
        super::accounts::list_users,
        super::enrollment::create_token,
        super::enrollment::list_tokens,
        super::enrollment::revoke_token,
        super::enrollment::enroll,
        super::agents::list,
        super::agents::show,
        super::agents::revoke,
        super::connections::create,
        super::connections::list,
        super::connections::show,
        super::rules::create,
        super::rules::list,
        super::rules::show,
        super::rules::add_version,
        super::deployments::request,
        super::deployments::list,
        super::deployments::show,
        super::deployments::approve,
    ),
    components(schemas(crate::error::ErrorBody))
)]
pub struct ApiDoc;

pub(crate) fn router() -> Router<AppState> {
    Router::new().route(
        "/v1/openapi.json",
        get(|| async { Json(ApiDoc::openapi()) }),
    )
}
