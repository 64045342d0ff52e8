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
        description = "Rules, approvals, deployments, the agent fleet and the tamper-evident audit log. Authenticate with `Authorization: Bearer <token>` from /v1/auth/login (browsers use the session cookie), or with an API key `Authorization: Bearer pk_...`."
    ),
    paths(
        super::accounts::claim,
        super::accounts::signup,
        super::accounts::login,
        super::accounts::logout,
        super::accounts::accept_invitation,
        super::accounts::me,
        super::accounts::change_password,
        super::accounts::my_sessions,
        super::accounts::revoke_my_session,
        super::accounts::create_user,
        super::accounts::list_users,
        super::accounts::set_role,
        super::accounts::end_user_sessions,
        super::invitations::create,
        super::invitations::list,
        super::invitations::revoke,
        super::api_keys::create,
        super::api_keys::list,
        super::api_keys::revoke,
        super::enrollment::create_token,
        super::enrollment::list_tokens,
        super::enrollment::revoke_token,
        super::enrollment::enroll,
        super::agents::list,
        super::agents::show,
        super::agents::revoke,
        super::agents::rotate_keys,
        super::connections::create,
        super::connections::list,
        super::connections::show,
        super::connections::update_credential,
        super::connections::set_hec,
        super::rules::create,
        super::rules::list,
        super::rules::show,
        super::rules::add_version,
        super::rules::diff,
        super::rules::export,
        super::rules::import,
        super::rules::start_test_run,
        super::rules::test_runs,
        super::deployments::request,
        super::deployments::list,
        super::deployments::show,
        super::deployments::approve,
        super::deployments::update,
        super::deployments::reject,
        super::deployments::request_changes,
        super::deployments::breakglass,
        super::deployments::rollback,
        super::deployments::sign_off,
        super::deployments::withdraw,
        super::deployments::preview,
        super::deployments::list_reviews,
        super::deployments::list_notifications,
        super::deployments::show_policy,
        super::deployments::set_policy,
        super::deployments::list_drift,
        super::deployments::resolve_drift,
        super::deployments::drift_check,
        super::rule_health::show,
        super::rule_health::check_now,
        super::audit::latest_checkpoint,
        super::audit::checkpoint_now,
        super::audit::list_events,
        super::audit::inclusion_proof,
        super::audit::consistency_proof,
        super::audit::export_events,
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
