//! Defender for Endpoint API client (CONTRACT §2-§3): machines as a stream of pages,
//! offboard, machine actions. Every request takes a permit from the tenant's shared
//! [`Budget`] first (when one is configured), is counted, and is retried per
//! [`RetryPolicy`]; a POST offboard that may have reached Defender is never repeated
//! blindly: it ends in [`DefenderError::Uncertain`] and [`DefenderClient::find_open_offboard`]
//! tells what happened.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use futures::Stream;
use reqwest::header::ACCEPT;
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use url::Url;

use super::budget::{Budget, BudgetError};
use super::credentials::{AuthError, CredentialProvider, Scope, TenantAuth};
use super::http::{
    Answer, NoAnswer, PageLimit, RetryPolicy, body_limit, is_retryable_status, nullable,
    read_answer, rebase_link, retry_after, send_with_retry, string_enum,
};
use crate::domain::MachineId;

/// The largest `$top` MDE accepts on `/api/machines` and `/api/machineactions`.
pub const MAX_PAGE_SIZE: u32 = 10_000;

/// The most pages one listing reads (10 million machines at 10,000 a page): a server that
/// keeps sending `@odata.nextLink`s ends the listing with [`DefenderError::Protocol`].
pub const MAX_PAGES: u32 = 1_000;

/// Where and how to call MDE.
#[derive(Debug, Clone)]
pub struct DefenderSettings {
    /// `DEFENDER_API_BASE` (or the tenant's `DefenderApiBase`), e.g.
    /// `https://api.securitycenter.microsoft.com`.
    pub base_url: Url,
    /// `$top` of machine pages (≤ 10,000).
    pub page_size: u32,
    /// Retries of 429 / 5xx / timeouts.
    pub retry: RetryPolicy,
}

impl DefenderSettings {
    /// Settings with the defaults: pages of 10,000 and the default retry policy.
    pub fn new(base_url: Url) -> Self {
        Self {
            base_url,
            page_size: MAX_PAGE_SIZE,
            retry: RetryPolicy::default(),
        }
    }
}

/// Why a Defender call failed. Branch on the variant, never on the message.
#[derive(Debug, thiserror::Error)]
pub enum DefenderError {
    /// 429 still answered after the allowed retries (or with a `Retry-After` over the cap),
    /// or the tenant's shared budget is used up: retry after `retry_after`.
    #[error("Defender API throttled{}", retry_after.map(|d| format!("; retry in {}s", d.as_secs())).unwrap_or_default())]
    Throttled {
        /// When to try again, if known.
        retry_after: Option<Duration>,
    },
    /// 400 `ActiveRequestAlreadyExists`: an action is already pending or running.
    #[error("an action is already in progress on the machine: {message}")]
    ActiveRequestAlreadyExists {
        /// Defender's message, verbatim.
        message: String,
    },
    /// 404 (`ResourceNotFound`): unknown machine or action.
    #[error("not found: {message}")]
    NotFound {
        /// Defender's message, verbatim.
        message: String,
    },
    /// 403: the app lacks a role (named in `missing` when Defender says which), a wrong token
    /// audience, or a disabled tenant feature.
    #[error("forbidden{}: {message}", missing.as_ref().map(|m| format!(" (missing {m})")).unwrap_or_default())]
    Forbidden {
        /// The permission(s) Defender says are required, e.g. `Machine.Offboard`.
        missing: Option<String>,
        /// Defender's message, verbatim.
        message: String,
    },
    /// 401 even with a fresh token.
    #[error("Defender refused the token (401): {message}")]
    Unauthorized {
        /// Defender's message.
        message: String,
    },
    /// Any other 400 (`MissingRequiredParameter`, `InvalidRequestBody`,
    /// `OsPlatformNotSupported`, `ClientVersionNotSupported`, ...).
    #[error("{message}")]
    BadRequest {
        /// Defender's code.
        code: String,
        /// Defender's message, VERBATIM: users read it in the device's Result column.
        message: String,
    },
    /// Server errors or no answer, after the retries: try again later.
    #[error("Defender API unavailable{}: {message}", status.map(|s| format!(" ({s})")).unwrap_or_default())]
    Transient {
        /// The last status, if an answer came.
        status: Option<u16>,
        /// What happened (never a token).
        message: String,
    },
    /// An offboard POST may or may not have reached Defender (timeout, reset or 5xx after
    /// sending). Do not repeat it blindly: call [`DefenderClient::find_open_offboard`] first.
    #[error(
        "the offboard request for machine {machine_id} may or may not have been accepted: {message}"
    )]
    Uncertain {
        /// The machine.
        machine_id: MachineId,
        /// What happened.
        message: String,
    },
    /// No token for the tenant.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The shared rate budget failed (table unreachable, contention).
    #[error(transparent)]
    Budget(BudgetError),
    /// An answer this client does not understand (bad JSON, unexpected status).
    #[error("unexpected answer from Defender: {message}")]
    Protocol {
        /// What was wrong.
        message: String,
    },
}

impl From<BudgetError> for DefenderError {
    fn from(error: BudgetError) -> Self {
        match error {
            BudgetError::Exhausted { retry_after, .. } => Self::Throttled {
                retry_after: Some(retry_after),
            },
            other => Self::Budget(other),
        }
    }
}

impl DefenderError {
    /// True when the same call may succeed later without any change.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Throttled { .. } | Self::Transient { .. } | Self::Budget(_) => true,
            Self::Auth(error) => error.is_transient(),
            _ => false,
        }
    }
}

string_enum! {
    /// `healthStatus` of a machine.
    pub enum HealthStatus {
        /// Reporting.
        Active = "Active",
        /// Not reporting for 7 days.
        Inactive = "Inactive",
        /// Impaired communication.
        ImpairedCommunication = "ImpairedCommunication",
        /// No sensor data.
        NoSensorData = "NoSensorData",
        /// Both of the above.
        NoSensorDataImpairedCommunication = "NoSensorDataImpairedCommunication",
        /// Unknown.
        UnknownStatus = "Unknown",
    }
}

string_enum! {
    /// `onboardingStatus` of a machine.
    pub enum OnboardingStatus {
        /// Onboarded.
        Onboarded = "Onboarded",
        /// Discovered, can be onboarded.
        CanBeOnboarded = "CanBeOnboarded",
        /// Not supported.
        Unsupported = "Unsupported",
        /// Not enough information.
        InsufficientInfo = "InsufficientInfo",
        /// Offboarded (existence unconfirmed).
        Offboarded = "Offboarded",
    }
}

string_enum! {
    /// `riskScore` of a machine.
    pub enum RiskScore {
        /// None.
        NoRisk = "None",
        /// Informational.
        Informational = "Informational",
        /// Low.
        Low = "Low",
        /// Medium.
        Medium = "Medium",
        /// High.
        High = "High",
    }
}

string_enum! {
    /// `exposureLevel` of a machine.
    pub enum ExposureLevel {
        /// None.
        NoExposure = "None",
        /// Low.
        Low = "Low",
        /// Medium.
        Medium = "Medium",
        /// High.
        High = "High",
    }
}

string_enum! {
    /// `deviceValue` of a machine.
    pub enum DeviceValue {
        /// Normal.
        Normal = "Normal",
        /// Low.
        Low = "Low",
        /// High.
        High = "High",
    }
}

string_enum! {
    /// `type` of a machine action.
    pub enum ActionType {
        /// Offboard.
        Offboard = "Offboard",
        /// Antivirus scan.
        RunAntiVirusScan = "RunAntiVirusScan",
        /// Live response.
        LiveResponse = "LiveResponse",
        /// Investigation package.
        CollectInvestigationPackage = "CollectInvestigationPackage",
        /// Isolate.
        Isolate = "Isolate",
        /// Release from isolation.
        Unisolate = "Unisolate",
        /// Stop and quarantine a file.
        StopAndQuarantineFile = "StopAndQuarantineFile",
        /// Restrict app execution.
        RestrictCodeExecution = "RestrictCodeExecution",
        /// Remove the restriction.
        UnrestrictCodeExecution = "UnrestrictCodeExecution",
    }
}

string_enum! {
    /// `status` of a machine action.
    pub enum ActionStatus {
        /// Waiting for the device.
        Pending = "Pending",
        /// Running.
        InProgress = "InProgress",
        /// Done.
        Succeeded = "Succeeded",
        /// Failed.
        Failed = "Failed",
        /// The device never picked it up.
        TimeOut = "TimeOut",
        /// Cancelled.
        Cancelled = "Cancelled",
    }
}

impl ActionStatus {
    /// Pending or in progress: the action may still change.
    pub fn is_open(&self) -> bool {
        matches!(self, Self::Pending | Self::InProgress)
    }
}

/// One network interface of a machine.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct IpAddress {
    /// Address.
    pub ip_address: Option<String>,
    /// MAC address (null for loopback).
    pub mac_address: Option<String>,
    /// `Ethernet`, `SoftwareLoopback`, `Wireless80211`...
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// `Up`, `Down`.
    pub operational_status: Option<String>,
}

/// `vmMetadata` (shape unconfirmed for MDE).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct VmMetadata {
    /// VM id.
    pub vm_id: Option<String>,
    /// `Azure`...
    pub cloud_provider: Option<String>,
    /// ARM resource id.
    pub resource_id: Option<String>,
    /// Subscription.
    pub subscription_id: Option<String>,
}

/// A Defender machine, every field of CONTRACT §2.5; unknown fields are ignored, nulls
/// accepted everywhere.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Machine {
    /// 40 hex characters (validate with [`MachineId::parse`]).
    pub id: String,
    /// FQDN or short name.
    pub computer_dns_name: Option<String>,
    /// First seen.
    #[serde(with = "lenient_time")]
    pub first_seen: Option<OffsetDateTime>,
    /// Last *full device report* (about every 24 h), not the portal's "last seen".
    #[serde(with = "lenient_time")]
    pub last_seen: Option<OffsetDateTime>,
    /// `Windows10`, `Windows11`, `WindowsServer2022`, `Linux`, `macOS`...
    pub os_platform: Option<String>,
    /// Usually null.
    pub os_version: Option<String>,
    /// Deprecated.
    pub os_processor: Option<String>,
    /// OS version (`22H2`...).
    pub version: Option<String>,
    /// OS build.
    #[serde(with = "flexible_int")]
    pub os_build: Option<i64>,
    /// Last local IP.
    pub last_ip_address: Option<String>,
    /// Last external IP.
    pub last_external_ip_address: Option<String>,
    /// Sensor version.
    pub agent_version: Option<String>,
    /// Health.
    pub health_status: Option<HealthStatus>,
    /// Onboarding state.
    pub onboarding_status: Option<OnboardingStatus>,
    /// Device value.
    pub device_value: Option<DeviceValue>,
    /// Device group id (a number on the wire; `0` = unassigned).
    #[serde(with = "flexible_int")]
    pub rbac_group_id: Option<i64>,
    /// Device group name.
    pub rbac_group_name: Option<String>,
    /// Risk score.
    pub risk_score: Option<RiskScore>,
    /// Exposure level.
    pub exposure_level: Option<ExposureLevel>,
    /// Entra joined.
    pub is_aad_joined: Option<bool>,
    /// Entra device id.
    pub aad_device_id: Option<String>,
    /// Tags.
    #[serde(deserialize_with = "nullable::or_default")]
    pub machine_tags: Vec<String>,
    /// Interfaces.
    #[serde(deserialize_with = "nullable::or_default")]
    pub ip_addresses: Vec<IpAddress>,
    /// `32-bit`, `64-bit`.
    pub os_architecture: Option<String>,
    /// `Updated`, `NotUpdated`...
    pub defender_av_status: Option<String>,
    /// `Intune`, `MDE`, `Unknown`...
    pub managed_by: Option<String>,
    /// `Success`, `Unknown`...
    pub managed_by_status: Option<String>,
    /// The machine this one was merged into.
    pub merged_into_machine_id: Option<String>,
    /// Defender suspects a duplicate.
    #[serde(deserialize_with = "nullable::or_default")]
    pub is_potential_duplication: bool,
    /// Excluded from the inventory.
    #[serde(deserialize_with = "nullable::or_default")]
    pub is_excluded: bool,
    /// Why excluded.
    pub exclusion_reason: Option<String>,
    /// VM details.
    pub vm_metadata: Option<VmMetadata>,
}

impl Machine {
    /// The validated id.
    ///
    /// # Errors
    /// When Defender sent an id that is not 40 hex characters.
    pub fn machine_id(&self) -> Result<MachineId, crate::domain::IdError> {
        MachineId::parse(&self.id)
    }
}

/// The fields of a machine the device sync stores; everything else in Defender's answer is
/// skipped while decoding (a page of 10,000 decodes to half the memory of [`Machine`]s).
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MachineSummary {
    /// 40 hex characters (validate with [`MachineId::parse`]).
    pub id: String,
    pub computer_dns_name: Option<String>,
    #[serde(with = "lenient_time")]
    pub first_seen: Option<OffsetDateTime>,
    #[serde(with = "lenient_time")]
    pub last_seen: Option<OffsetDateTime>,
    pub os_platform: Option<String>,
    pub os_version: Option<String>,
    /// OS version (`22H2`...), used when `osVersion` is null.
    pub version: Option<String>,
    pub last_ip_address: Option<String>,
    pub health_status: Option<HealthStatus>,
    pub onboarding_status: Option<OnboardingStatus>,
    pub risk_score: Option<RiskScore>,
    pub exposure_level: Option<ExposureLevel>,
    pub aad_device_id: Option<String>,
    #[serde(deserialize_with = "nullable::or_default")]
    pub machine_tags: Vec<String>,
    pub merged_into_machine_id: Option<String>,
    #[serde(deserialize_with = "nullable::or_default")]
    pub is_potential_duplication: bool,
}

impl From<Machine> for MachineSummary {
    fn from(m: Machine) -> Self {
        Self {
            id: m.id,
            computer_dns_name: m.computer_dns_name,
            first_seen: m.first_seen,
            last_seen: m.last_seen,
            os_platform: m.os_platform,
            os_version: m.os_version,
            version: m.version,
            last_ip_address: m.last_ip_address,
            health_status: m.health_status,
            onboarding_status: m.onboarding_status,
            risk_score: m.risk_score,
            exposure_level: m.exposure_level,
            aad_device_id: m.aad_device_id,
            machine_tags: m.machine_tags,
            merged_into_machine_id: m.merged_into_machine_id,
            is_potential_duplication: m.is_potential_duplication,
        }
    }
}

/// `relatedFileInfo` of file actions.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RelatedFileInfo {
    /// Hash or path.
    pub file_identifier: Option<String>,
    /// `Sha1`, `Sha256`...
    pub file_identifier_type: Option<String>,
}

/// Defender's success answer to an offboard POST: the new action and the status it came
/// with (201 Created in the older docs and the seed's flow, 200 OK in the current ones).
#[derive(Debug, Clone, PartialEq)]
pub struct SubmittedOffboard {
    /// 200 or 201, as Defender answered.
    pub http_status: u16,
    /// The new (usually Pending) action.
    pub action: MachineAction,
}

/// A machine action (CONTRACT §3.3).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MachineAction {
    /// Action id (a GUID).
    pub id: String,
    /// `Offboard`...
    #[serde(rename = "type")]
    pub kind: Option<ActionType>,
    /// Usually null.
    pub title: Option<String>,
    /// Who asked (an app name, a GUID or a UPN).
    pub requestor: Option<String>,
    /// The `Comment` sent.
    pub requestor_comment: Option<String>,
    /// Status.
    pub status: Option<ActionStatus>,
    /// The machine (null in some POST answers).
    pub machine_id: Option<String>,
    /// The machine's name.
    pub computer_dns_name: Option<String>,
    /// Created.
    #[serde(with = "lenient_time")]
    pub creation_date_time_utc: Option<OffsetDateTime>,
    /// Last change (the docs' `lastUpdateTimeUtc` is accepted too).
    #[serde(with = "lenient_time", alias = "lastUpdateTimeUtc")]
    pub last_update_date_time_utc: Option<OffsetDateTime>,
    /// Who cancelled.
    pub cancellation_requestor: Option<String>,
    /// Why cancelled.
    pub cancellation_comment: Option<String>,
    /// When cancelled.
    #[serde(with = "lenient_time")]
    pub cancellation_date_time_utc: Option<OffsetDateTime>,
    /// Error code.
    #[serde(with = "flexible_int")]
    pub error_h_result: Option<i64>,
    /// `Full`, `Selective`, `Quick`...
    pub scope: Option<String>,
    /// External id.
    pub external_id: Option<String>,
    /// `PublicApi`...
    pub request_source: Option<String>,
    /// File actions only.
    pub related_file_info: Option<RelatedFileInfo>,
}

#[derive(Debug, Deserialize)]
#[serde(bound(deserialize = "T: Deserialize<'de>"))]
struct ODataPage<T> {
    #[serde(default = "Vec::new", deserialize_with = "nullable::or_default")]
    value: Vec<T>,
    #[serde(rename = "@odata.nextLink", default)]
    next_link: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct MdeErrorBody {
    error: Option<MdeError>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct MdeError {
    code: Option<String>,
    message: Option<String>,
}

/// A `$filter` and page size for [`DefenderClient::machines`].
#[derive(Debug, Clone, Default)]
pub struct MachineQuery {
    /// An OData `$filter` (e.g. `healthStatus ne 'Active'`).
    pub filter: Option<String>,
    /// `$top` override (≤ 10,000).
    pub page_size: Option<u32>,
}

/// A Defender for Endpoint client for one tenant. Cheap to build per invocation.
#[derive(Debug, Clone)]
pub struct DefenderClient {
    http: reqwest::Client,
    settings: DefenderSettings,
    credentials: Arc<CredentialProvider>,
    tenant: TenantAuth,
    budget: Option<Arc<Budget>>,
    calls: Arc<AtomicU64>,
}

enum Cursor {
    Next(Url, u64),
    Done,
}

impl DefenderClient {
    /// A client for `tenant`. Without a `budget`, requests are not rate-budgeted (the
    /// simulator's self-tests); production always passes the shared one.
    pub fn new(
        http: reqwest::Client,
        settings: DefenderSettings,
        credentials: Arc<CredentialProvider>,
        tenant: TenantAuth,
        budget: Option<Arc<Budget>>,
    ) -> Self {
        Self {
            http,
            settings,
            credentials,
            tenant,
            budget,
            calls: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The tenant this client acts for.
    pub fn tenant(&self) -> &TenantAuth {
        &self.tenant
    }

    /// HTTP requests sent so far by this client (retries included): the audit's "API calls".
    pub fn api_calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Every machine (matching `query.filter`), page by page: `$top` up to 10,000,
    /// following `@odata.nextLink` (kept on the configured host), and continuing with
    /// `$skip` when a full page comes without one. A 404 with Defender's error body on the
    /// first page ("no recent machines") ends the stream empty.
    ///
    /// Each item is one page or the error that ended the stream.
    pub fn machines(
        &self,
        query: MachineQuery,
    ) -> impl Stream<Item = Result<Vec<Machine>, DefenderError>> + Send + '_ {
        self.machine_pages::<Machine>(query)
    }

    /// [`DefenderClient::machines`], decoding each machine as `T` (e.g. [`MachineSummary`]:
    /// a sync reads pages of 10,000 and keeps only what it stores).
    pub fn machine_pages<T>(
        &self,
        query: MachineQuery,
    ) -> impl Stream<Item = Result<Vec<T>, DefenderError>> + Send + '_
    where
        T: serde::de::DeserializeOwned + Send + 'static,
    {
        let top = query
            .page_size
            .unwrap_or(self.settings.page_size)
            .clamp(1, MAX_PAGE_SIZE);
        let filter = query.filter;
        let page_url = move |skip: u64| {
            let mut url = self.url("api/machines");
            {
                let mut pairs = url.query_pairs_mut();
                pairs.append_pair("$top", &top.to_string());
                if skip > 0 {
                    pairs.append_pair("$skip", &skip.to_string());
                }
                if let Some(filter) = &filter {
                    pairs.append_pair("$filter", filter);
                }
            }
            url
        };
        let first = page_url(0);
        let pages = PageLimit::new(MAX_PAGES);
        futures::stream::try_unfold(
            (Cursor::Next(first, 0), pages),
            move |(cursor, mut pages)| {
                let page_url = page_url.clone();
                async move {
                    let Cursor::Next(url, seen) = cursor else {
                        return Ok(None);
                    };
                    pages
                        .next(&url)
                        .map_err(|message| DefenderError::Protocol { message })?;
                    let answer = self.send(Method::GET, url, None, None).await?;
                    if answer.status == StatusCode::NOT_FOUND
                        && seen == 0
                        && parse_mde_error(&answer.body).is_some()
                    {
                        tracing::info!(tenant.id = %self.tenant.tenant_id(), "Defender reports no machines");
                        return Ok(None);
                    }
                    let page: ODataPage<T> = self.decode_page(answer).await?;
                    let count = page.value.len() as u64;
                    let seen = seen + count;
                    let next = match page.next_link {
                        _ if count == 0 => Cursor::Done,
                        Some(link) => match rebase_link(&self.settings.base_url, &link) {
                            Some(url) => Cursor::Next(url, seen),
                            None => {
                                return Err(DefenderError::Protocol {
                                    message: "unusable @odata.nextLink".into(),
                                });
                            }
                        },
                        None if count >= u64::from(top) => Cursor::Next(page_url(seen), seen),
                        None => Cursor::Done,
                    };
                    tracing::debug!(tenant.id = %self.tenant.tenant_id(), machines = count, "read a page of machines");
                    Ok(Some((page.value, (next, pages))))
                }
            },
        )
    }

    /// One machine.
    ///
    /// # Errors
    /// [`DefenderError::NotFound`] for an unknown id; see [`DefenderError`].
    pub async fn machine(&self, id: &MachineId) -> Result<Machine, DefenderError> {
        let url = self.url(&format!("api/machines/{}", id.as_str()));
        let answer = self.send(Method::GET, url, None, None).await?;
        self.decode(answer)
    }

    /// Adds or removes one machine tag (`POST /api/machines/{id}/tags`
    /// `{"Value": tag, "Action": "Add"|"Remove"}`, "Add or Remove Tag for a machine"), within
    /// the rate budget; 200 → the updated machine. Needs `Machine.ReadWrite.All`. Safe to
    /// repeat: adding a tag twice or removing a missing one changes nothing.
    ///
    /// # Errors
    /// [`DefenderError::NotFound`], [`DefenderError::Forbidden`] (the permission is named),
    /// [`DefenderError::BadRequest`], ...
    pub async fn tag_machine(
        &self,
        id: &MachineId,
        tag: &str,
        add: bool,
    ) -> Result<Machine, DefenderError> {
        let url = self.url(&format!("api/machines/{}/tags", id.as_str()));
        let body = serde_json::json!({
            "Value": tag,
            "Action": if add { "Add" } else { "Remove" },
        });
        let answer = self.send(Method::POST, url, Some(body), None).await?;
        let machine: Machine = self.decode(answer)?;
        tracing::info!(
            tenant.id = %self.tenant.tenant_id(),
            device.id = %id,
            add,
            "machine tag changed"
        );
        Ok(machine)
    }

    /// Offboards a machine (`POST /api/machines/{id}/offboard` `{"Comment": comment}`);
    /// 200 or 201 → the new (Pending) action with the status Defender answered (the docs
    /// have said both). Sent once unless certainly not received (429, connection refused).
    ///
    /// # Errors
    /// [`DefenderError::Uncertain`] after a timeout / reset / 5xx: look up
    /// [`DefenderClient::find_open_offboard`] before trying again;
    /// [`DefenderError::ActiveRequestAlreadyExists`], [`DefenderError::BadRequest`] (message
    /// verbatim), [`DefenderError::NotFound`], [`DefenderError::Forbidden`], ...
    pub async fn offboard(
        &self,
        id: &MachineId,
        comment: &str,
    ) -> Result<SubmittedOffboard, DefenderError> {
        let url = self.url(&format!("api/machines/{}/offboard", id.as_str()));
        let body = serde_json::json!({ "Comment": comment });
        let answer = self.send(Method::POST, url, Some(body), Some(id)).await?;
        if answer.status.is_server_error() || answer.status == StatusCode::REQUEST_TIMEOUT {
            return Err(DefenderError::Uncertain {
                machine_id: id.clone(),
                message: format!("Defender answered {}", answer.status.as_u16()),
            });
        }
        let http_status = answer.status.as_u16();
        let action: MachineAction = self.decode(answer)?;
        tracing::info!(
            tenant.id = %self.tenant.tenant_id(),
            device.id = %id,
            action.id = %action.id,
            http.status = http_status,
            "offboard submitted"
        );
        Ok(SubmittedOffboard {
            http_status,
            action,
        })
    }

    /// One machine action.
    ///
    /// # Errors
    /// [`DefenderError::NotFound`] for an unknown id; see [`DefenderError`].
    pub async fn machine_action(&self, action_id: &str) -> Result<MachineAction, DefenderError> {
        let valid = !action_id.is_empty()
            && action_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !valid {
            return Err(DefenderError::NotFound {
                message: format!("Machine action {action_id:?} is not a valid id"),
            });
        }
        let url = self.url(&format!("api/machineactions/{action_id}"));
        let answer = self.send(Method::GET, url, None, None).await?;
        self.decode(answer)
    }

    /// The machine's actions (`$filter=machineId eq '…'`, and `type eq '…'` when given),
    /// newest first, up to 10,000.
    ///
    /// # Errors
    /// See [`DefenderError`].
    pub async fn machine_actions(
        &self,
        id: &MachineId,
        kind: Option<&ActionType>,
    ) -> Result<Vec<MachineAction>, DefenderError> {
        let mut filter = format!("machineId eq '{}'", id.as_str());
        if let Some(kind) = kind {
            filter.push_str(&format!(
                " and type eq '{}'",
                kind.as_str().replace('\'', "''")
            ));
        }
        let mut url = self.url("api/machineactions");
        url.query_pairs_mut()
            .append_pair("$filter", &filter)
            .append_pair("$top", &MAX_PAGE_SIZE.to_string());
        let answer = self.send(Method::GET, url, None, None).await?;
        let page: ODataPage<MachineAction> = self.decode(answer)?;
        let mut actions = page.value;
        actions.sort_by_key(|a| std::cmp::Reverse(a.creation_date_time_utc));
        Ok(actions)
    }

    /// Every Offboard action of the tenant created at or after `since`, newest first, in as
    /// few calls as paging allows: one list instead of one call per tracked request
    /// (CONTRACT §3.5 "prefer one list call filtered by type and a creation time").
    ///
    /// # Errors
    /// See [`DefenderError`].
    pub async fn offboard_actions_since(
        &self,
        since: OffsetDateTime,
    ) -> Result<Vec<MachineAction>, DefenderError> {
        let stamp = since
            .to_offset(time::UtcOffset::UTC)
            .replace_nanosecond(0)
            .unwrap_or(since)
            .format(&time::format_description::well_known::Rfc3339)
            .map_err(|e| DefenderError::Protocol {
                message: e.to_string(),
            })?;
        let mut url = self.url("api/machineactions");
        url.query_pairs_mut()
            .append_pair(
                "$filter",
                &format!("type eq 'Offboard' and creationDateTimeUtc ge {stamp}"),
            )
            .append_pair("$top", &MAX_PAGE_SIZE.to_string());
        let mut actions = Vec::new();
        let mut next = Some(url);
        let mut pages = PageLimit::new(MAX_PAGES);
        while let Some(url) = next.take() {
            pages
                .next(&url)
                .map_err(|message| DefenderError::Protocol { message })?;
            let answer = self.send(Method::GET, url, None, None).await?;
            let page: ODataPage<MachineAction> = self.decode(answer)?;
            let empty = page.value.is_empty();
            actions.extend(page.value);
            next = match page.next_link {
                Some(link) if !empty => {
                    Some(rebase_link(&self.settings.base_url, &link).ok_or_else(|| {
                        DefenderError::Protocol {
                            message: "unusable @odata.nextLink".into(),
                        }
                    })?)
                }
                _ => None,
            };
        }
        actions.sort_by_key(|a| std::cmp::Reverse(a.creation_date_time_utc));
        Ok(actions)
    }

    /// The newest Pending or InProgress Offboard action of the machine, if any: what to
    /// check after [`DefenderError::Uncertain`] (or before offboarding at all).
    ///
    /// # Errors
    /// See [`DefenderError`].
    pub async fn find_open_offboard(
        &self,
        id: &MachineId,
    ) -> Result<Option<MachineAction>, DefenderError> {
        let actions = self
            .machine_actions(id, Some(&ActionType::Offboard))
            .await?;
        Ok(actions.into_iter().find(|action| {
            action.kind == Some(ActionType::Offboard)
                && action.status.as_ref().is_some_and(ActionStatus::is_open)
        }))
    }

    fn url(&self, path: &str) -> Url {
        let mut url = self.settings.base_url.clone();
        let base_path = url.path().trim_end_matches('/').to_owned();
        url.set_path(&format!("{base_path}/{path}"));
        url
    }

    fn decode<T: serde::de::DeserializeOwned>(&self, answer: Answer) -> Result<T, DefenderError> {
        if !answer.status.is_success() {
            return Err(map_status(&answer));
        }
        serde_json::from_slice(&answer.body).map_err(|error| DefenderError::Protocol {
            message: format!("undecodable body ({}): {error}", answer.status.as_u16()),
        })
    }

    /// [`Self::decode`] for a page of machines. A full page is about 10 MiB of JSON and takes
    /// tens of milliseconds to decode: on the blocking pool, so that the runtime's worker (one
    /// by default, see main.rs) keeps serving the instance's other invocations meanwhile.
    async fn decode_page<T>(&self, answer: Answer) -> Result<ODataPage<T>, DefenderError>
    where
        T: serde::de::DeserializeOwned + Send + 'static,
    {
        const LARGE: usize = 256 * 1024;
        if !answer.status.is_success() || answer.body.len() < LARGE {
            return self.decode(answer);
        }
        let (status, body) = (answer.status, answer.body);
        tokio::task::spawn_blocking(move || serde_json::from_slice::<ODataPage<T>>(&body))
            .await
            .map_err(|e| DefenderError::Protocol {
                message: format!("decoding a page of machines stopped: {e}"),
            })?
            .map_err(|error| DefenderError::Protocol {
                message: format!("undecodable body ({}): {error}", status.as_u16()),
            })
    }

    /// Sends with token, budget, count and retries; one more try with a fresh token on 401.
    /// `offboard` marks the non-idempotent POST (whose lost answers become `Uncertain`).
    async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<serde_json::Value>,
        offboard: Option<&MachineId>,
    ) -> Result<Answer, DefenderError> {
        let mut refreshed = false;
        loop {
            let answer = self
                .send_once(&method, &url, body.as_ref(), offboard)
                .await?;
            if answer.status == StatusCode::UNAUTHORIZED && !refreshed {
                tracing::warn!(tenant.id = %self.tenant.tenant_id(), "Defender refused the token; renewing it");
                self.credentials.forget(&self.tenant);
                refreshed = true;
                continue;
            }
            return Ok(answer);
        }
    }

    async fn send_once(
        &self,
        method: &Method,
        url: &Url,
        body: Option<&serde_json::Value>,
        offboard: Option<&MachineId>,
    ) -> Result<Answer, DefenderError> {
        let idempotent = offboard.is_none();
        let result = send_with_retry(&self.settings.retry, idempotent, || async {
            let token = self
                .credentials
                .token(&self.tenant, Scope::Defender)
                .await?;
            if let Some(budget) = &self.budget {
                budget.acquire(self.tenant.tenant_id()).await?;
            }
            self.calls.fetch_add(1, Ordering::Relaxed);
            let mut request = self
                .http
                .request(method.clone(), url.clone())
                .bearer_auth(token.token.secret())
                .header(ACCEPT, "application/json");
            if let Some(body) = body {
                request = request.json(body);
            }
            Ok::<_, DefenderError>(request.send().await)
        })
        .await;
        read_answer(result, body_limit::DEFENDER)
            .await
            .map_err(|lost| match lost {
                NoAnswer::Before(error) => error,
                // Defender received the POST; what it answered is unknown.
                NoAnswer::TooLarge { status, limit } => match offboard {
                    Some(id) => DefenderError::Uncertain {
                        machine_id: id.clone(),
                        message: NoAnswer::<()>::too_large_message(status, limit),
                    },
                    None => DefenderError::Protocol {
                        message: NoAnswer::<()>::too_large_message(status, limit),
                    },
                },
                // A POST that may have reached Defender: the caller looks before posting again.
                NoAnswer::Lost {
                    message,
                    maybe_sent,
                    status,
                } => match offboard {
                    Some(id)
                        if maybe_sent
                            && status.is_none_or(|s| s.is_success() || is_retryable_status(s)) =>
                    {
                        DefenderError::Uncertain {
                            machine_id: id.clone(),
                            message,
                        }
                    }
                    _ => DefenderError::Transient {
                        status: status.map(|s| s.as_u16()),
                        message,
                    },
                },
            })
    }
}

fn parse_mde_error(body: &[u8]) -> Option<(String, String)> {
    let parsed: MdeErrorBody = serde_json::from_slice(body).ok()?;
    let error = parsed.error?;
    Some((
        error.code.unwrap_or_default(),
        error.message.unwrap_or_default(),
    ))
}

fn map_status(answer: &Answer) -> DefenderError {
    let (code, message) = parse_mde_error(&answer.body).unwrap_or_else(|| {
        let text = String::from_utf8_lossy(&answer.body);
        (String::new(), text.chars().take(500).collect())
    });
    match answer.status {
        StatusCode::BAD_REQUEST if code == "ActiveRequestAlreadyExists" => {
            DefenderError::ActiveRequestAlreadyExists { message }
        }
        StatusCode::BAD_REQUEST => DefenderError::BadRequest { code, message },
        StatusCode::UNAUTHORIZED => DefenderError::Unauthorized { message },
        StatusCode::FORBIDDEN => DefenderError::Forbidden {
            missing: missing_permission(&message),
            message,
        },
        StatusCode::NOT_FOUND => DefenderError::NotFound { message },
        StatusCode::TOO_MANY_REQUESTS => DefenderError::Throttled {
            retry_after: retry_after(&answer.headers, SystemTime::now()),
        },
        status if status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT => {
            DefenderError::Transient {
                status: Some(status.as_u16()),
                message: if message.is_empty() { code } else { message },
            }
        }
        status => DefenderError::Protocol {
            message: format!("status {}: {message}", status.as_u16()),
        },
    }
}

/// `Machine.Offboard` out of "...required application permissions (Machine.Offboard) to...".
fn missing_permission(message: &str) -> Option<String> {
    let start = message.find("permissions (")? + "permissions (".len();
    let end = message[start..].find(')')? + start;
    let inner = message[start..end].trim();
    (!inner.is_empty()).then(|| inner.to_owned())
}

/// Timestamps as Defender and Graph send them (RFC 3339 with up to 7 fractional digits,
/// sometimes without an offset, meaning UTC); null or unreadable → `None`.
pub(crate) mod lenient_time {
    use serde::{Deserialize, Deserializer, Serializer};
    use time::OffsetDateTime;
    use time::format_description::well_known::Rfc3339;

    /// Parses one timestamp.
    pub fn parse(text: &str) -> Option<OffsetDateTime> {
        OffsetDateTime::parse(text, &Rfc3339)
            .or_else(|_| OffsetDateTime::parse(&format!("{text}Z"), &Rfc3339))
            .ok()
    }

    /// Serde `deserialize_with`.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<OffsetDateTime>, D::Error> {
        let text = Option::<std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Ok(text.as_deref().and_then(|t| {
            let parsed = parse(t);
            if parsed.is_none() {
                tracing::warn!(value = t, "ignored an unreadable timestamp");
            }
            parsed
        }))
    }

    /// Serde `serialize_with` (RFC 3339).
    pub fn serialize<S: Serializer>(
        value: &Option<OffsetDateTime>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value.and_then(|v| v.format(&Rfc3339).ok()) {
            Some(text) => serializer.serialize_str(&text),
            None => serializer.serialize_none(),
        }
    }
}

/// Integers that may come as numbers or numeric strings (`rbacGroupId`, `osBuild`).
pub(crate) mod flexible_int {
    use serde::{Deserialize, Deserializer, Serializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Int(i64),
        Float(f64),
        Text(String),
    }

    /// Serde `deserialize_with`.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<i64>, D::Error> {
        Ok(match Option::<Raw>::deserialize(deserializer)? {
            None => None,
            Some(Raw::Int(n)) => Some(n),
            #[expect(
                clippy::cast_possible_truncation,
                reason = "integral values sent as floats"
            )]
            Some(Raw::Float(f)) if f.fract() == 0.0 && f.is_finite() => Some(f as i64),
            Some(Raw::Float(_)) => None,
            Some(Raw::Text(t)) => t.trim().parse().ok(),
        })
    }

    /// Serde `serialize_with` (a number).
    pub fn serialize<S: Serializer>(value: &Option<i64>, serializer: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(n) => serializer.serialize_i64(*n),
            None => serializer.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use reqwest::header::HeaderMap;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/contracts/defender-api");

    /// A contract fixture; a missing one fails the test (it is part of the repository).
    fn fixture(name: &str) -> String {
        let path = format!("{FIXTURES}/{name}");
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("fixture {path}: {e}"))
    }

    #[test]
    fn machines_parse_with_every_contract_field_and_numeric_rbac_group_ids() {
        let body = fixture("machines.page1.json");
        let page: ODataPage<Machine> = serde_json::from_str(&body).expect("page");
        let first = &page.value[0];
        assert_eq!(first.rbac_group_id, Some(412));
        assert_eq!(first.health_status, Some(HealthStatus::Active));
        assert!(first.last_seen.is_some());
        assert!(first.machine_id().is_ok());
        assert!(page.next_link.is_some());
    }

    #[test]
    fn unknown_enum_values_and_nulls_are_kept_or_defaulted() {
        let machine: Machine = serde_json::from_str(
            r#"{"id":"x","healthStatus":"Sleeping","onboardingStatus":null,"machineTags":null,
               "isExcluded":null,"rbacGroupId":null,"firstSeen":"2026-11-06T04:00:21"}"#,
        )
        .expect("machine");
        assert_eq!(
            machine.health_status,
            Some(HealthStatus::Unknown("Sleeping".into()))
        );
        assert_eq!(machine.onboarding_status, None);
        assert!(machine.machine_tags.is_empty());
        assert!(!machine.is_excluded);
        assert_eq!(machine.rbac_group_id, None);
        assert!(machine.first_seen.is_some());
    }

    #[test]
    fn machine_actions_accept_the_documented_misspelt_update_field() {
        let action: MachineAction = serde_json::from_str(
            r#"{"id":"9c3b1e52-6f0d-4a87-b2e4-71d5c8a9f036","type":"Offboard","status":"Pending",
               "lastUpdateTimeUtc":"2026-11-06T04:00:12.4418281Z","machineId":null,"errorHResult":0}"#,
        )
        .expect("action");
        assert_eq!(action.kind, Some(ActionType::Offboard));
        assert!(action.status.as_ref().is_some_and(ActionStatus::is_open));
        assert!(action.last_update_date_time_utc.is_some());
    }

    #[test]
    fn the_missing_permission_is_read_from_the_403_message() {
        assert_eq!(
            missing_permission("The application does not have any of the required application permissions (Machine.Read.All, Machine.ReadWrite.All) to access the resource.").as_deref(),
            Some("Machine.Read.All, Machine.ReadWrite.All")
        );
        assert_eq!(missing_permission("Tenant feature isn't enabled."), None);
    }

    fn answer(status: u16, body: &'static str) -> Answer {
        Answer {
            status: StatusCode::from_u16(status).expect("status"),
            headers: HeaderMap::new(),
            body: Bytes::from_static(body.as_bytes()),
        }
    }

    #[test]
    fn each_documented_error_body_maps_to_its_variant() {
        // Bodies of contracts/defender-api/error.*.json.
        let cases: [(u16, &str, &str); 8] = [
            (
                400,
                "ActiveRequestAlreadyExists",
                "Action is already in progress",
            ),
            (
                400,
                "MissingRequiredParameter",
                "Parameter Comment is missing",
            ),
            (400, "InvalidRequestBody", "Request body is incorrect"),
            (
                400,
                "OsPlatformNotSupported",
                "OS Platform Linux isn't supported for this action",
            ),
            (401, "Unauthorized", "Unauthorized"),
            (
                403,
                "Forbidden",
                "The application does not have any of the required application permissions (Machine.Offboard) to access the resource.",
            ),
            (
                404,
                "ResourceNotFound",
                "Machine ffffffffffffffffffffffffffffffffffffffff was not found",
            ),
            (
                429,
                "TooManyRequests",
                "Rate limit is exceeded. Try again in 37 seconds.",
            ),
        ];
        for (status, code, message) in cases {
            let body = format!(
                r#"{{"error":{{"code":"{code}","message":"{message}","target":"43a1f0e9"}}}}"#
            );
            let error = map_status(&Answer {
                status: StatusCode::from_u16(status).expect("status"),
                headers: HeaderMap::new(),
                body: Bytes::from(body),
            });
            let expected = match (&error, code) {
                (
                    DefenderError::ActiveRequestAlreadyExists { message: m },
                    "ActiveRequestAlreadyExists",
                ) => m == message,
                (
                    DefenderError::BadRequest {
                        code: c,
                        message: m,
                    },
                    _,
                ) => c == code && m == message,
                (DefenderError::Unauthorized { .. }, "Unauthorized") => true,
                (
                    DefenderError::Forbidden {
                        missing,
                        message: m,
                    },
                    "Forbidden",
                ) => missing.as_deref() == Some("Machine.Offboard") && m == message,
                (DefenderError::NotFound { message: m }, "ResourceNotFound") => m == message,
                (DefenderError::Throttled { .. }, "TooManyRequests") => true,
                _ => false,
            };
            assert!(expected, "{status} {code} became {error:?}");
        }
        let server = map_status(&answer(500, ""));
        assert!(matches!(
            server,
            DefenderError::Transient {
                status: Some(500),
                ..
            }
        ));
    }

    #[test]
    fn a_400_keeps_defenders_message_verbatim() {
        let answer = Answer {
            status: StatusCode::BAD_REQUEST,
            headers: HeaderMap::new(),
            body: Bytes::from_static(br#"{"error":{"code":"OsPlatformNotSupported","message":"OS Platform Linux isn't supported for this action","target":"x"}}"#),
        };
        let error = map_status(&answer);
        assert!(matches!(&error, DefenderError::BadRequest { code, message }
            if code == "OsPlatformNotSupported" && message == "OS Platform Linux isn't supported for this action"));
        assert_eq!(
            error.to_string(),
            "OS Platform Linux isn't supported for this action"
        );
    }
}
