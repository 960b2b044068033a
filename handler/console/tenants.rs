//! The Tenants page (admin role): list, register, edit, disable and check customer tenants.
//!
//! Registration goes through the same validation and store code as the `Tenants` API
//! (`functions::tenants::validate` / `save` / `disable_tenant`), so a form can't accept what
//! the API refuses. Every change writes an Audit row with the actor `user:<upn>`. The check
//! obtains a Defender and a Graph token for the tenant, compares the tokens' `roles` with the
//! permissions the product needs and makes one test call; the result is shown and stored
//! (`store::tenants::record_health`) for the overview.

use askama::Template;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::auth::Admin;
use super::page::Page;
use super::refusal::Refusal;
use super::views::{Layout, render};
use super::{Console, PREFIX};
use crate::clients::credentials::{AuthMode, Scope};
use crate::domain::TenantId;
use crate::error::ApiError;
use crate::functions::tenants::{self as api, TenantFields};
use crate::store::audit::{self, AuditEntry};
use crate::store::tenants::{self, Tenant, TenantHealth};
use crate::store::{self, names};

/// Permissions the product needs: (permission, token, satisfied also by).
const REQUIRED: &[(&str, Scope, Option<&str>)] = &[
    (
        "Machine.Read.All",
        Scope::Defender,
        Some("Machine.ReadWrite.All"),
    ),
    ("Machine.Offboard", Scope::Defender, None),
    ("SecurityIncident.Read.All", Scope::Graph, None),
];

/// One row of the list.
struct Row {
    id: String,
    name: String,
    mode: &'static str,
    enabled: bool,
    health: Option<TenantHealth>,
}

#[derive(Template)]
#[template(path = "tenants.html")]
struct TenantsPage {
    layout: Layout,
    csrf: String,
    rows: Vec<Row>,
    form: FormView,
    error: Option<String>,
}

#[derive(Template)]
#[template(path = "tenant.html")]
struct TenantPage {
    layout: Layout,
    csrf: String,
    id: String,
    enabled: bool,
    form: FormView,
    error: Option<String>,
    notice: Option<String>,
    consent_url: Option<String>,
    health: Option<TenantHealth>,
}

/// The registration form's values (as typed, for re-display after an error).
#[derive(Default)]
struct FormView {
    tenant_id: String,
    display_name: String,
    client_id: String,
    federated: bool,
    secret_name: String,
    defender_api_base: String,
    teams: bool,
    email: bool,
    webhook: bool,
    enabled: bool,
}

impl FormView {
    fn of(t: &Tenant) -> Self {
        let has = |name: &str| {
            t.notify_channels
                .channels()
                .iter()
                .any(|c| c.as_str() == name)
        };
        Self {
            tenant_id: t.id().to_string(),
            display_name: t.display_name.clone(),
            client_id: t.auth.client_id().to_owned(),
            federated: t.auth.mode() == AuthMode::Federated,
            secret_name: t
                .auth
                .secret_name()
                .map(|s| s.as_str().to_owned())
                .unwrap_or_default(),
            defender_api_base: t
                .defender_api_base
                .as_ref()
                .map(|u| u.to_string())
                .unwrap_or_default(),
            teams: has("teams"),
            email: has("email"),
            webhook: has("webhook"),
            enabled: t.enabled,
        }
    }

    fn from_form(cx: &Console<'_>) -> Self {
        let f = &cx.form;
        Self {
            tenant_id: f.get("tenantId").unwrap_or_default().to_owned(),
            display_name: f.get("displayName").unwrap_or_default().to_owned(),
            client_id: f.get("clientId").unwrap_or_default().to_owned(),
            federated: f.get("authMode") == Some("federated"),
            secret_name: f.get("secretName").unwrap_or_default().to_owned(),
            defender_api_base: f.get("defenderApiBase").unwrap_or_default().to_owned(),
            teams: f.all("notifyChannels").any(|c| c == "teams"),
            email: f.all("notifyChannels").any(|c| c == "email"),
            webhook: f.all("notifyChannels").any(|c| c == "webhook"),
            enabled: f.checked("enabled"),
        }
    }

    fn fields(&self) -> TenantFields {
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        let channels: Vec<String> = [
            ("teams", self.teams),
            ("email", self.email),
            ("webhook", self.webhook),
        ]
        .into_iter()
        .filter(|(_, on)| *on)
        .map(|(c, _)| c.to_owned())
        .collect();
        TenantFields {
            display_name: self.display_name.clone(),
            client_id: self.client_id.clone(),
            auth_mode: if self.federated {
                "federated"
            } else {
                "secret"
            }
            .into(),
            // The secret name only counts for the secret mode.
            secret_name: if self.federated {
                None
            } else {
                opt(&self.secret_name)
            },
            enabled: Some(self.enabled),
            defender_api_base: opt(&self.defender_api_base),
            notify_channels: Some(channels),
            // The form has no approval fields: the stored policy stays.
            approval: None,
        }
    }
}

fn refused(e: ApiError) -> Result<String, Refusal> {
    if e.status() >= 500 {
        Err(match e {
            ApiError::Unavailable(m) => Refusal::Unavailable(m),
            other => Refusal::Internal(anyhow::anyhow!("{other}")),
        })
    } else {
        Ok(e.to_string())
    }
}

fn storage(e: crate::clients::tables::TableError) -> Refusal {
    Refusal::Internal(anyhow::Error::new(e).context("Table Storage"))
}

fn tenant_id(raw: &str) -> Result<TenantId, Refusal> {
    TenantId::parse(raw).map_err(|_| Refusal::NotFound)
}

async fn audit(cx: &Console<'_>, id: &TenantId, kind: &str, what: &str) -> Result<(), Refusal> {
    let table = store::open(cx.state.tables(), names::AUDIT)
        .await
        .map_err(storage)?;
    let actor = cx.user.actor();
    let entry = AuditEntry::new(
        kind,
        id.as_str(),
        format!(
            "{what} by {} ({}) in the console",
            actor.label(),
            cx.user.object_id()
        ),
        cx.now,
    )
    .by(&actor);
    audit::append(
        &table,
        id,
        &entry,
        &uuid::Uuid::new_v4().simple().to_string(),
    )
    .await
    .map_err(storage)
}

async fn list_page(
    cx: &Console<'_>,
    form: FormView,
    error: Option<String>,
) -> Result<Page, Refusal> {
    let table = store::open(cx.state.tables(), names::TENANTS)
        .await
        .map_err(storage)?;
    let health_table = store::open(cx.state.tables(), names::TENANT_HEALTH)
        .await
        .map_err(storage)?;
    let health = tenants::all_health(&health_table).await.map_err(storage)?;
    let mut all = tenants::list(&table, false).await.map_err(storage)?;
    all.sort_by(|a, b| {
        a.display_name
            .to_lowercase()
            .cmp(&b.display_name.to_lowercase())
    });
    let rows = all
        .iter()
        .map(|t| Row {
            id: t.id().to_string(),
            name: t.display_name.clone(),
            mode: t.auth.mode().as_str(),
            enabled: t.enabled,
            health: health.iter().find(|h| &h.tenant_id == t.id()).cloned(),
        })
        .collect();
    let status = if error.is_some() { 400 } else { 200 };
    Ok(render(
        status,
        &TenantsPage {
            layout: cx.layout("Tenants", "tenants"),
            csrf: cx.csrf().to_owned(),
            rows,
            form,
            error,
        },
    ))
}

/// `GET /api/console/tenants`.
///
/// # Errors
/// Storage.
pub async fn list(cx: &Console<'_>, _: Admin) -> Result<Page, Refusal> {
    list_page(
        cx,
        FormView {
            enabled: true,
            ..FormView::default()
        },
        None,
    )
    .await
}

/// `POST /api/console/tenants`: registers (or replaces) a tenant.
///
/// # Errors
/// Storage; invalid input is shown on the page.
pub async fn register(cx: &Console<'_>, admin: Admin) -> Result<Page, Refusal> {
    let form = FormView::from_form(cx);
    let Ok(id) = TenantId::parse(&form.tenant_id) else {
        return list_page(
            cx,
            form,
            Some("The tenant id must be a GUID (the customer's Entra tenant id).".into()),
        )
        .await;
    };
    save(cx, admin, id, form, true).await
}

async fn save(
    cx: &Console<'_>,
    _: Admin,
    id: TenantId,
    form: FormView,
    from_list: bool,
) -> Result<Page, Refusal> {
    let result = match api::validate(
        id.clone(),
        form.fields(),
        &cx.state.config().defender_api_base,
    ) {
        Ok(reg) => {
            let table = store::open(cx.state.tables(), names::TENANTS)
                .await
                .map_err(storage)?;
            api::save(cx.state, &table, reg, &cx.user.actor()).await
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(saved) => {
            let page = Page::redirect(format!("{PREFIX}/tenants/{id}?saved=1"));
            Ok(match saved.first_sync {
                Some(job) => page.with_queue("jobs", vec![job]),
                None => page,
            })
        }
        Err(e) => {
            let message = refused(e)?;
            if from_list {
                list_page(cx, form, Some(message)).await
            } else {
                tenant_page(cx, &id, Some(form), Some(message), None).await
            }
        }
    }
}

async fn tenant_page(
    cx: &Console<'_>,
    id: &TenantId,
    form: Option<FormView>,
    error: Option<String>,
    health: Option<TenantHealth>,
) -> Result<Page, Refusal> {
    let table = store::open(cx.state.tables(), names::TENANTS)
        .await
        .map_err(storage)?;
    let Some(v) = tenants::get(&table, id).await.map_err(storage)? else {
        return Err(Refusal::NotFound);
    };
    let health = match health {
        Some(h) => Some(h),
        None => {
            let t = store::open(cx.state.tables(), names::TENANT_HEALTH)
                .await
                .map_err(storage)?;
            tenants::all_health(&t)
                .await
                .map_err(storage)?
                .into_iter()
                .find(|h| &h.tenant_id == id)
        }
    };
    let consent_url = (v.tenant.auth.mode() == AuthMode::Federated).then(|| {
        let authority = cx
            .state
            .config()
            .authority_host
            .as_str()
            .trim_end_matches('/');
        let back = super::signin::redirect_uri(cx.state, cx.req)
            .map(|cb| cb.replace("/auth/callback", "/tenants"))
            .unwrap_or_default();
        let query = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("client_id", v.tenant.auth.client_id())
            .append_pair("redirect_uri", &back)
            .finish();
        format!("{authority}/{id}/adminconsent?{query}")
    });
    let notice = cx.req.query("saved").map(|_| "Saved.".to_owned());
    let status = if error.is_some() { 400 } else { 200 };
    Ok(render(
        status,
        &TenantPage {
            layout: cx.layout(v.tenant.display_name.clone(), "tenants"),
            csrf: cx.csrf().to_owned(),
            id: id.to_string(),
            enabled: v.tenant.enabled,
            form: form.unwrap_or_else(|| FormView::of(&v.tenant)),
            error,
            notice,
            consent_url,
            health,
        },
    ))
}

/// `GET /api/console/tenants/{id}`.
///
/// # Errors
/// 404 for an unknown tenant; storage.
pub async fn show(cx: &Console<'_>, _: Admin, raw: &str) -> Result<Page, Refusal> {
    tenant_page(cx, &tenant_id(raw)?, None, None, None).await
}

/// `POST /api/console/tenants/{id}`: saves the edit form.
///
/// # Errors
/// Storage; invalid input is shown on the page.
pub async fn update(cx: &Console<'_>, admin: Admin, raw: &str) -> Result<Page, Refusal> {
    let id = tenant_id(raw)?;
    let mut form = FormView::from_form(cx);
    form.tenant_id = id.to_string();
    save(cx, admin, id, form, false).await
}

/// `POST /api/console/tenants/{id}/disable`.
///
/// # Errors
/// 404 for an unknown tenant; storage.
pub async fn disable(cx: &Console<'_>, _: Admin, raw: &str) -> Result<Page, Refusal> {
    let id = tenant_id(raw)?;
    let table = store::open(cx.state.tables(), names::TENANTS)
        .await
        .map_err(storage)?;
    match api::disable_tenant(cx.state, &table, &id, &cx.user.actor()).await {
        Ok(_) => Ok(Page::redirect(format!("{PREFIX}/tenants/{id}?saved=1"))),
        Err(ApiError::NotFound { .. }) => Err(Refusal::NotFound),
        Err(e) => {
            let message = refused(e)?;
            tenant_page(cx, &id, None, Some(message), None).await
        }
    }
}

/// `POST /api/console/tenants/{id}/check`: tokens, permissions, one test call; shown and stored.
///
/// # Errors
/// 404 for an unknown tenant; storage.
pub async fn check(cx: &Console<'_>, _: Admin, raw: &str) -> Result<Page, Refusal> {
    let id = tenant_id(raw)?;
    let table = store::open(cx.state.tables(), names::TENANTS)
        .await
        .map_err(storage)?;
    let Some(v) = tenants::get(&table, &id).await.map_err(storage)? else {
        return Err(Refusal::NotFound);
    };
    let health = run_check(cx, &v.tenant).await;
    let health_table = store::open(cx.state.tables(), names::TENANT_HEALTH)
        .await
        .map_err(storage)?;
    tenants::record_health(&health_table, &health)
        .await
        .map_err(storage)?;
    audit(
        cx,
        &id,
        "TenantChecked",
        &format!(
            "checked ({})",
            if health.is_healthy() {
                "healthy"
            } else {
                "problems found"
            }
        ),
    )
    .await?;
    tenant_page(cx, &id, None, None, Some(health)).await
}

async fn run_check(cx: &Console<'_>, tenant: &Tenant) -> TenantHealth {
    let credentials = &cx.state.services().credentials;
    let mut granted: Vec<String> = Vec::new();
    let mut error = None;
    let mut token_ok = false;
    for scope in [Scope::Defender, Scope::Graph] {
        match credentials.token(&tenant.auth, scope).await {
            Ok(token) => {
                token_ok |= scope == Scope::Defender;
                granted.extend(roles_of(token.token.secret()));
            }
            Err(e) => {
                error.get_or_insert_with(|| format!("no token for {}: {e}", scope.as_str()));
            }
        }
    }
    granted.sort();
    granted.dedup();
    let missing: Vec<String> = REQUIRED
        .iter()
        .filter(|(p, _, alt)| !granted.iter().any(|g| g == p || Some(g.as_str()) == *alt))
        .map(|(p, _, _)| (*p).to_owned())
        .collect();
    let test_call = if token_ok {
        match cx.state.defender(tenant).await {
            Ok(client) => match client.offboard_actions_since(cx.now).await {
                Ok(_) => "GET /api/machineactions (Offboard actions since now): OK".to_owned(),
                Err(e) => {
                    let text = format!("GET /api/machineactions: {e}");
                    error.get_or_insert_with(|| text.clone());
                    text
                }
            },
            Err(e) => format!("not made: {e}"),
        }
    } else {
        "not made (no Defender token)".to_owned()
    };
    TenantHealth {
        tenant_id: tenant.id().clone(),
        checked_at: cx.now,
        token_ok,
        granted,
        missing,
        test_call,
        error,
    }
}

/// The `roles` claim of an access token (read for display only: the token came straight from
/// Entra to us, and the API calls check it).
fn roles_of(token: &str) -> Vec<String> {
    let Some(payload) = token.split('.').nth(1) else {
        return Vec::new();
    };
    URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .and_then(|v| {
            v["roles"].as_array().map(|roles| {
                roles
                    .iter()
                    .filter_map(|r| r.as_str().map(str::to_owned))
                    .collect()
            })
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_read_from_the_token_payload() {
        let payload =
            URL_SAFE_NO_PAD.encode(r#"{"roles":["Machine.Read.All","Machine.Offboard"]}"#);
        assert_eq!(
            roles_of(&format!("h.{payload}.s")),
            ["Machine.Read.All", "Machine.Offboard"]
        );
        assert!(roles_of("garbage").is_empty());
        assert!(roles_of("a.!!!.c").is_empty());
    }
}
