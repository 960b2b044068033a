//! Notifications: a note rendered for each channel and delivered once per channel.
//!
//! - [`message`]: the channel-neutral view of a note (title, tone, facts, devices, link).
//! - [`card`]: the Teams Adaptive Card 1.4 and its pre-send structural check.
//! - [`email`]: subject, escaped HTML and plain text.
//! - [`event`]: the outbound webhook's JSON event and its HMAC signature.
//! - [`channels`]: the senders (Teams, webhook, Graph sendMail) and which are configured.
//! - [`deliver`]: claims in the `Outbox` row, so each channel sends once.
//! - [`schema`]: a JSON Schema subset validator (cards against the vendored schema in tests).

pub mod card;
pub mod channels;
pub mod deliver;
pub mod email;
pub mod event;
pub mod message;
pub mod schema;

use anyhow::Context;

use crate::app::AppState;
use crate::domain::notification::Note;
use crate::domain::{Channel, ChannelSet};
use crate::store::outbox::{self, NewOutbox};
use crate::store::{self, names, tenants};
use deliver::ChannelOutcome;

/// What one delivery did, per channel.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub sent: Vec<Channel>,
    pub already_sent: Vec<Channel>,
    pub busy: Vec<Channel>,
    pub failed: Vec<(Channel, String)>,
}

impl Report {
    /// True when every planned channel is sent (now or before).
    #[must_use]
    pub fn complete(&self) -> bool {
        self.busy.is_empty() && self.failed.is_empty()
    }

    /// One line for the invocation log and the failure.
    #[must_use]
    pub fn summary(&self) -> String {
        let names = |v: &[Channel]| v.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(",");
        let mut parts = Vec::new();
        if !self.sent.is_empty() {
            parts.push(format!("sent {}", names(&self.sent)));
        }
        if !self.already_sent.is_empty() {
            parts.push(format!("already sent {}", names(&self.already_sent)));
        }
        if !self.busy.is_empty() {
            parts.push(format!("being sent elsewhere {}", names(&self.busy)));
        }
        for (c, why) in &self.failed {
            parts.push(format!("{c} failed: {why}"));
        }
        if parts.is_empty() {
            "no channel".into()
        } else {
            parts.join("; ")
        }
    }
}

/// Records `note` in `Outbox` and sends it on every channel configured for the app and
/// allowed for its tenant that has not been sent yet.
///
/// # Errors
/// Storage failures. Channel failures are in the [`Report`], already recorded in the row.
pub async fn send_note(state: &AppState, note: &Note) -> anyhow::Result<Report> {
    let (channels, tenant_name) = route(state, note).await?;
    let table = store::open(state.tables(), names::OUTBOX)
        .await
        .context("opening Outbox")?;
    let day = outbox::day_of(note.at);
    let payload = note.to_message();
    let row = outbox::record(
        &table,
        &NewOutbox {
            day: day.clone(),
            note_id: &note.id,
            kind: message::kind(&note.event),
            tenant_id: note.tenant_id.as_str(),
            channels: &channels,
            payload: &payload,
        },
        state.now(),
    )
    .await
    .context("recording the note in Outbox")?;
    let mut report = Report::default();
    if row.sent_at.is_some() {
        report.already_sent = row.channels;
        return Ok(report);
    }
    let rendered = message::render(note, tenant_name.as_deref());
    let configured = channels::configured(state.config());
    // The plan recorded by the first delivery wins, so a retry routes as the first try did;
    // a channel switched off since is left alone.
    for channel in row
        .channels
        .iter()
        .copied()
        .filter(|c| configured.contains(c))
    {
        let outcome = deliver::channel(
            &table,
            &day,
            &note.id,
            channel,
            || state.now(),
            || async {
                let sent = match channel {
                    Channel::Teams => channels::send_teams(state, &card::render(&rendered)).await,
                    Channel::Email => {
                        channels::send_email(state, &email::render(&rendered).for_note(&note.id))
                            .await
                    }
                    Channel::Webhook => {
                        channels::send_webhook(state, &event::render(note, &rendered)).await
                    }
                };
                sent.map_err(|e| e.0)
            },
        )
        .await
        .with_context(|| format!("recording the {channel} delivery in Outbox"))?;
        match outcome {
            ChannelOutcome::Sent => {
                tracing::info!(notification.id = %note.id, channel = channel.as_str(), "notification sent");
                report.sent.push(channel);
            }
            ChannelOutcome::AlreadySent => report.already_sent.push(channel),
            ChannelOutcome::Busy => report.busy.push(channel),
            ChannelOutcome::Failed(why) => {
                tracing::warn!(notification.id = %note.id, channel = channel.as_str(), error = %why, "notification channel failed");
                report.failed.push((channel, why));
            }
        }
    }
    if report.complete() {
        outbox::mark_done(&table, &row, state.now())
            .await
            .context("marking the note delivered")?;
    }
    Ok(report)
}

/// The channels for this note: configured for the app, narrowed by the tenant's
/// `NotifyChannels`; and the tenant's display name for the rendering.
async fn route(state: &AppState, note: &Note) -> anyhow::Result<(Vec<Channel>, Option<String>)> {
    let table = store::open(state.tables(), names::TENANTS)
        .await
        .context("opening Tenants")?;
    let tenant = tenants::get(&table, &note.tenant_id)
        .await
        .context("reading the tenant")?
        .map(|v| v.tenant);
    let allowed = tenant
        .as_ref()
        .map(|t| t.notify_channels.clone())
        .unwrap_or_else(ChannelSet::default);
    let channels = channels::configured(state.config())
        .into_iter()
        .filter(|c| allowed.allows(*c))
        .collect();
    Ok((channels, tenant.map(|t| t.display_name)))
}
