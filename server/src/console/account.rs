//! Sign-in, instance claiming, sign-out, invitation acceptance, password
//! change and one's own sessions.

use askama::Template;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{
    Chrome, Page, PageForm, PagePath, PageQuery, PageResult, ok, render, safe_next, see_other,
};
use crate::AppState;
use crate::auth::{self, ClientIp, perm};
use crate::config::Mode;
use crate::error::ApiError;
use crate::service::{accounts, invitations, sessions};
use crate::time::unix_now;

/// `?next=` of the sign-in page.
#[derive(Deserialize, Default)]
pub struct NextQuery {
    next: Option<String>,
}

#[derive(Template)]
#[template(path = "console/login.html")]
struct LoginPage {
    chrome: Chrome,
    next: String,
    email: String,
    error: Option<String>,
    saas: bool,
}

/// A response that sets the session cookie and goes to `to`.
fn signed_in(state: &AppState, secret: &str, to: &str) -> Response {
    let mut res = see_other(to);
    if let Some(c) =
        crate::api::accounts::session_cookie(state, secret, state.config.session_absolute_secs)
    {
        res.headers_mut().insert(header::SET_COOKIE, c);
    }
    res
}

async fn must_claim(state: &AppState) -> Result<bool, ApiError> {
    Ok(state.config.mode == Mode::SelfHosted && !accounts::is_claimed(&state.db).await?)
}

/// `GET /login`: the sign-in form (a fresh self-hosted install goes to `/claim`).
pub async fn login_form(
    State(state): State<AppState>,
    PageQuery(q): PageQuery<NextQuery>,
) -> PageResult {
    if must_claim(&state).await? {
        return Ok(see_other("/claim"));
    }
    ok(&LoginPage {
        chrome: Chrome::anonymous("Sign in"),
        next: safe_next(q.next.as_deref()),
        email: String::new(),
        error: None,
        saas: state.config.mode == Mode::Saas,
    })
}

/// The sign-in form's fields.
#[derive(Deserialize)]
pub struct LoginForm {
    email: String,
    password: String,
    next: Option<String>,
}

/// `POST /login`.
pub async fn login_submit(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    PageForm(f): PageForm<LoginForm>,
) -> PageResult {
    let next = safe_next(f.next.as_deref());
    let previous = auth::session_cookie(&headers);
    match accounts::login(&state, &f.email, f.password, ip.text(), previous).await {
        Ok((_, secret)) => Ok(signed_in(&state, &secret, &next)),
        Err(e @ (ApiError::Unauthorized | ApiError::RateLimited { .. })) => {
            let (status, error) = match e {
                ApiError::RateLimited { retry_after_secs } => (
                    StatusCode::TOO_MANY_REQUESTS,
                    format!("Too many failed attempts. Try again in {retry_after_secs} s."),
                ),
                _ => (
                    StatusCode::UNAUTHORIZED,
                    "Wrong email or password.".to_owned(),
                ),
            };
            Ok(render(
                status,
                &LoginPage {
                    chrome: Chrome::anonymous("Sign in"),
                    next,
                    email: f.email.chars().take(254).collect(),
                    error: Some(error),
                    saas: state.config.mode == Mode::Saas,
                },
            ))
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Template)]
#[template(path = "console/claim.html")]
struct ClaimPage {
    chrome: Chrome,
    tenant_name: String,
    email: String,
    error: Option<String>,
    min_password: usize,
}

/// `GET /claim`: claiming a fresh self-hosted instance (or SaaS sign-up).
pub async fn claim_form(State(state): State<AppState>) -> PageResult {
    if state.config.mode == Mode::SelfHosted && accounts::is_claimed(&state.db).await? {
        return Ok(see_other("/login"));
    }
    ok(&ClaimPage {
        chrome: Chrome::anonymous("Set up Picket"),
        tenant_name: String::new(),
        email: String::new(),
        error: None,
        min_password: auth::MIN_PASSWORD_LEN,
    })
}

/// The claim form's fields.
#[derive(Deserialize)]
pub struct ClaimForm {
    tenant_name: String,
    email: String,
    password: String,
}

/// `POST /claim`: creates the tenant and its first admin, and signs them in.
pub async fn claim_submit(
    State(state): State<AppState>,
    ip: ClientIp,
    PageForm(f): PageForm<ClaimForm>,
) -> PageResult {
    let res = accounts::register(
        &state,
        &f.tenant_name,
        &f.email,
        f.password.clone(),
        ip.text(),
    )
    .await;
    match res {
        Ok(u) => {
            let (_, secret) =
                accounts::login(&state, &u.email, f.password, ip.text(), None).await?;
            Ok(signed_in(&state, &secret, "/"))
        }
        Err(ApiError::BadRequest { message, .. }) => Ok(render(
            StatusCode::BAD_REQUEST,
            &ClaimPage {
                chrome: Chrome::anonymous("Set up Picket"),
                tenant_name: f.tenant_name.chars().take(200).collect(),
                email: f.email.chars().take(254).collect(),
                error: Some(message),
                min_password: auth::MIN_PASSWORD_LEN,
            },
        )),
        Err(e) => Err(e.into()),
    }
}

/// `POST /logout`.
pub async fn logout(State(state): State<AppState>, user: Page<perm::Account>) -> PageResult {
    accounts::logout(&state.db, &user).await?;
    let mut res = see_other("/login");
    if let Some(c) = crate::api::accounts::session_cookie(&state, "", 0) {
        res.headers_mut().insert(header::SET_COOKIE, c);
    }
    Ok(res)
}

#[derive(Template)]
#[template(path = "console/invitation.html")]
struct InvitationPage {
    chrome: Chrome,
    token: String,
    error: Option<String>,
    min_password: usize,
}

/// `?token=` of an invitation link.
#[derive(Deserialize)]
pub struct TokenQuery {
    token: Option<String>,
}

/// `GET /invitation?token=…`: choose a password to accept an invitation.
pub async fn invitation_form(PageQuery(q): PageQuery<TokenQuery>) -> PageResult {
    ok(&InvitationPage {
        chrome: Chrome::anonymous("Accept your invitation"),
        token: q.token.unwrap_or_default().chars().take(200).collect(),
        error: None,
        min_password: auth::MIN_PASSWORD_LEN,
    })
}

/// The invitation form's fields.
#[derive(Deserialize)]
pub struct InvitationForm {
    token: String,
    password: String,
}

/// `POST /invitation`: creates the account and signs in.
pub async fn invitation_submit(
    State(state): State<AppState>,
    ip: ClientIp,
    PageForm(f): PageForm<InvitationForm>,
) -> PageResult {
    if f.token.len() > 200 {
        return Err(ApiError::bad_request("invalid_form", "token: at most 200 characters").into());
    }
    match invitations::accept(&state, &f.token, f.password, ip.text()).await {
        Ok((_, secret)) => Ok(signed_in(&state, &secret, "/")),
        Err(ApiError::BadRequest { message, .. }) => Ok(render(
            StatusCode::BAD_REQUEST,
            &InvitationPage {
                chrome: Chrome::anonymous("Accept your invitation"),
                token: f.token,
                error: Some(message),
                min_password: auth::MIN_PASSWORD_LEN,
            },
        )),
        Err(e) => Err(e.into()),
    }
}

struct SessionRow {
    id: String,
    current: bool,
    created: String,
    last_seen: String,
}

#[derive(Template)]
#[template(path = "console/account.html")]
struct AccountPage {
    chrome: Chrome,
    sessions: Vec<SessionRow>,
    notice: Option<&'static str>,
    error: Option<String>,
    min_password: usize,
}

/// `?done=` after an account action.
#[derive(Deserialize, Default)]
pub struct DoneQuery {
    done: Option<String>,
}

async fn account_page(
    state: &AppState,
    user: &crate::auth::CurrentUser,
    notice: Option<&'static str>,
    error: Option<String>,
) -> Result<AccountPage, ApiError> {
    let idle = state.config.session_idle_secs;
    let abs = state.config.session_absolute_secs;
    let now = unix_now();
    let rows = sessions::list_mine(&state.db, user, idle, abs).await?;
    Ok(AccountPage {
        chrome: Chrome::of(user, "Your account", "account"),
        sessions: rows
            .into_iter()
            .map(|s| SessionRow {
                current: user.session_id.as_deref() == Some(s.id.as_str()),
                created: super::views::when(s.created_at),
                last_seen: super::views::ago(now, s.last_seen_at),
                id: s.id,
            })
            .collect(),
        notice,
        error,
        min_password: auth::MIN_PASSWORD_LEN,
    })
}

/// `GET /account`: password change and own sessions.
pub async fn account(
    State(state): State<AppState>,
    user: Page<perm::Account>,
    PageQuery(q): PageQuery<DoneQuery>,
) -> PageResult {
    let notice = match q.done.as_deref() {
        Some("password") => Some("Password changed. Your other sessions were signed out."),
        Some("session") => Some("Session ended."),
        _ => None,
    };
    ok(&account_page(&state, &user, notice, None).await?)
}

/// The password form's fields.
#[derive(Deserialize)]
pub struct PasswordForm {
    current_password: String,
    new_password: String,
}

/// `POST /account/password`.
pub async fn change_password(
    State(state): State<AppState>,
    user: Page<perm::Account>,
    ip: ClientIp,
    PageForm(f): PageForm<PasswordForm>,
) -> PageResult {
    match accounts::change_password(&state, &user, f.current_password, f.new_password, ip.text())
        .await
    {
        Ok(()) => Ok(see_other("/account?done=password")),
        Err(ApiError::BadRequest { message, .. } | ApiError::Refused { message, .. }) => {
            let page = account_page(&state, &user, None, Some(message)).await?;
            Ok(render(StatusCode::BAD_REQUEST, &page))
        }
        Err(ApiError::Forbidden(message)) => {
            let page = account_page(&state, &user, None, Some(message)).await?;
            Ok(render(StatusCode::FORBIDDEN, &page))
        }
        Err(e) => Err(e.into()),
    }
}

/// `POST /account/sessions/{id}/revoke`.
pub async fn revoke_session(
    State(state): State<AppState>,
    user: Page<perm::Account>,
    PagePath(id): PagePath<String>,
) -> PageResult {
    sessions::revoke_mine(&state.db, &user, &id).await?;
    if user.session_id.as_deref() == Some(id.as_str()) {
        return Ok(see_other("/login").into_response());
    }
    Ok(see_other("/account?done=session"))
}
