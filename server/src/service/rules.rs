//! Rules and their immutable versions. An edit never changes a version; it adds one.

use picket_proto::Severity;
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, DatabaseConnection, EntityTrait as _,
    QueryFilter as _, QueryOrder as _, Set, TransactionTrait as _,
};
use uuid::Uuid;

use crate::audit;
use crate::auth::CurrentUser;
use crate::db::entity::{rule, rule_version};
use crate::error::{ApiError, ApiResult};
use crate::service::scope::TenantScope;
use crate::service::validate;
use crate::time::unix_now;

/// Longest query accepted, in bytes.
pub const MAX_QUERY_BYTES: usize = 64 * 1024;

/// The content of a rule version.
#[derive(Debug, Clone)]
pub struct RuleContent {
    /// Title.
    pub title: String,
    /// Description.
    pub description: String,
    /// Severity.
    pub severity: Severity,
    /// The SPL query.
    pub query: String,
    /// Five-field cron schedule.
    pub cron: String,
    /// Window start (Splunk time modifier).
    pub earliest: String,
    /// Window end.
    pub latest: String,
}

impl RuleContent {
    fn validate(&self) -> ApiResult<()> {
        validate::text("title", &self.title, 200)?;
        validate::optional_text("description", &self.description, 4000)?;
        validate::text("query", &self.query, MAX_QUERY_BYTES)?;
        if self.query.len() > MAX_QUERY_BYTES {
            return Err(ApiError::bad_request(
                "invalid_field",
                format!("query must be at most {MAX_QUERY_BYTES} bytes"),
            ));
        }
        validate::cron(&self.cron)?;
        validate::time_modifier("earliest", &self.earliest)?;
        validate::time_modifier("latest", &self.latest)?;
        Ok(())
    }
}

fn severity_str(s: Severity) -> &'static str {
    s.as_str()
}

/// Parses a stored severity.
pub fn parse_severity(s: &str) -> Option<Severity> {
    serde_json::from_value(serde_json::Value::String(s.to_owned())).ok()
}

/// Creates a rule with its first version.
///
/// # Errors
/// 400 naming the invalid field.
pub async fn create(
    db: &DatabaseConnection,
    me: &CurrentUser,
    c: RuleContent,
) -> ApiResult<(rule::Model, rule_version::Model)> {
    let (tenant_id, author) = (me.tenant_id, me.id);
    c.validate()?;
    let txn = db.begin().await?;
    let now = unix_now();
    let r = rule::ActiveModel {
        id: Set(Uuid::now_v7()),
        tenant_id: Set(tenant_id),
        name: Set(c.title.clone()),
        siem_kind: Set("splunk".into()),
        created_by: Set(author),
        created_at: Set(now),
        latest_version: Set(1),
    }
    .insert(&txn)
    .await?;
    let v = insert_version(&txn, &r, 1, author, &c).await?;
    audit::record(
        &txn,
        me.event("rule.create", "rule", r.id)
            .details(serde_json::json!({ "version": 1 })),
    )
    .await?;
    txn.commit().await?;
    Ok((r, v))
}

async fn insert_version(
    txn: &sea_orm::DatabaseTransaction,
    r: &rule::Model,
    version: i32,
    author: Uuid,
    c: &RuleContent,
) -> ApiResult<rule_version::Model> {
    Ok(rule_version::ActiveModel {
        id: Set(Uuid::now_v7()),
        rule_id: Set(r.id),
        tenant_id: Set(r.tenant_id),
        version: Set(version),
        title: Set(c.title.clone()),
        description: Set(c.description.clone()),
        severity: Set(severity_str(c.severity).to_owned()),
        query: Set(c.query.clone()),
        cron: Set(c.cron.clone()),
        earliest: Set(c.earliest.clone()),
        latest: Set(c.latest.clone()),
        author_id: Set(author),
        created_at: Set(unix_now()),
    }
    .insert(txn)
    .await?)
}

/// Adds a new version to a rule.
///
/// # Errors
/// 404 if the rule is not in this tenant; 400 on invalid content.
pub async fn add_version(
    db: &DatabaseConnection,
    me: &CurrentUser,
    rule_id: Uuid,
    c: RuleContent,
) -> ApiResult<rule_version::Model> {
    let author = me.id;
    c.validate()?;
    let txn = db.begin().await?;
    let r = me
        .scope()
        .get::<rule::Entity>(&txn, rule_id, "rule")
        .await?;
    let next = r.latest_version + 1;
    let v = insert_version(&txn, &r, next, author, &c).await?;
    let mut am: rule::ActiveModel = r.clone().into();
    am.latest_version = Set(next);
    am.name = Set(c.title.clone());
    am.update(&txn).await?;
    audit::record(
        &txn,
        me.event("rule.version", "rule", r.id)
            .details(serde_json::json!({ "version": next })),
    )
    .await?;
    txn.commit().await?;
    Ok(v)
}

/// A rule with all its versions, newest first.
///
/// # Errors
/// 404 if the rule is not in this tenant.
pub async fn get(
    db: &DatabaseConnection,
    tenant_id: Uuid,
    rule_id: Uuid,
) -> ApiResult<(rule::Model, Vec<rule_version::Model>)> {
    let r = TenantScope::new(tenant_id)
        .find::<rule::Entity>()
        .filter(rule::Column::Id.eq(rule_id))
        .one(db)
        .await?
        .ok_or(ApiError::NotFound("rule"))?;
    let versions = rule_version::Entity::find()
        .filter(rule_version::Column::RuleId.eq(rule_id))
        .filter(rule_version::Column::TenantId.eq(tenant_id))
        .order_by_desc(rule_version::Column::Version)
        .all(db)
        .await?;
    Ok((r, versions))
}

/// Rules of a tenant, newest first.
///
/// # Errors
/// On storage failure.
pub async fn list(db: &DatabaseConnection, tenant_id: Uuid) -> ApiResult<Vec<rule::Model>> {
    Ok(TenantScope::new(tenant_id)
        .find::<rule::Entity>()
        .order_by_desc(rule::Column::CreatedAt)
        .all(db)
        .await?)
}
