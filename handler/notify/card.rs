//! Teams: the Adaptive Card (1.4, in the Workflows `message` envelope of CONTRACT §5.1) and
//! the structural check that refuses a card Workflows would accept with 202 and then fail.

use serde_json::{Value, json};

use super::message::{Message, Tone};

/// The attachment content type Workflows requires.
pub const ADAPTIVE_CARD: &str = "application/vnd.microsoft.card.adaptive";
/// The newest card version Workflows renders.
pub const CARD_VERSION: &str = "1.4";
/// Teams refuses messages over about 28 KB.
pub const MAX_CARD_BYTES: usize = 28 * 1024;

const ELEMENTS: &[&str] = &[
    "TextBlock",
    "Container",
    "FactSet",
    "ColumnSet",
    "Column",
    "Image",
    "ActionSet",
    "RichTextBlock",
    "TextRun",
];
/// `Action.Submit` and `Action.Execute` are not supported by Workflows.
const ACTIONS: &[&str] = &[
    "Action.OpenUrl",
    "Action.ShowCard",
    "Action.ToggleVisibility",
];

fn colour(tone: Tone) -> &'static str {
    match tone {
        Tone::Attention => "Attention",
        Tone::Warning => "Warning",
        Tone::Good => "Good",
        Tone::Accent => "Accent",
    }
}

/// Escapes text for a TextBlock or a FactSet, which Teams renders as Markdown: a device
/// name, an incident title or Defender's message is data, never formatting or a link.
/// Emphasis, code, link and table characters are backslash-escaped anywhere; list, heading
/// and quote markers at the start; line breaks become spaces (a name can't fake a line).
#[must_use]
pub fn escape_markdown(text: &str) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let mut out = String::with_capacity(flat.len() + 8);
    let start = flat.len() - flat.trim_start().len();
    out.push_str(&flat[..start]);
    let rest = &flat[start..];
    // An ordered-list marker: digits then '.' or ')'.
    let digits = rest.chars().take_while(char::is_ascii_digit).count();
    for (i, c) in rest.chars().enumerate() {
        let at_start = i == 0 && matches!(c, '-' | '+' | '>' | '=');
        let list_number = digits > 0 && i == digits && matches!(c, '.' | ')');
        if at_start
            || list_number
            || matches!(c, '\\' | '`' | '*' | '_' | '~' | '[' | ']' | '#' | '|')
        {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn fact_set(facts: impl IntoIterator<Item = (String, String)>) -> Value {
    let facts: Vec<Value> = facts
        .into_iter()
        .map(|(title, value)| {
            json!({ "title": escape_markdown(&title), "value": escape_markdown(&value) })
        })
        .collect();
    json!({ "type": "FactSet", "facts": facts })
}

/// The Workflows request body for `m`.
#[must_use]
pub fn render(m: &Message) -> Value {
    let mut body = vec![
        json!({
            "type": "Container",
            "style": m.tone.as_str(),
            "bleed": true,
            "items": [{
                "type": "TextBlock",
                "text": escape_markdown(&m.title),
                "weight": "Bolder",
                "size": "Medium",
                "color": colour(m.tone),
                "wrap": true
            }]
        }),
        json!({ "type": "TextBlock", "text": escape_markdown(&m.summary), "isSubtle": true, "wrap": true }),
        fact_set(m.facts.iter().cloned()),
    ];
    if !m.devices.is_empty() {
        body.push(json!({
            "type": "TextBlock",
            "text": "Devices",
            "weight": "Bolder",
            "spacing": "Medium",
            "wrap": true
        }));
        body.push(fact_set(
            m.devices
                .iter()
                .map(|d| (d.label.clone(), d.machine_id.clone())),
        ));
        if m.more_devices > 0 {
            body.push(json!({
                "type": "TextBlock",
                "text": format!("… and {} more", m.more_devices),
                "isSubtle": true,
                "wrap": true
            }));
        }
    }
    let mut card = json!({
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": CARD_VERSION,
        "msteams": { "width": "Full" },
        "body": body,
    });
    if let Some(link) = &m.link {
        card["actions"] =
            json!([{ "type": "Action.OpenUrl", "title": link.title, "url": link.url }]);
    }
    json!({
        "type": "message",
        "attachments": [{ "contentType": ADAPTIVE_CARD, "contentUrl": null, "content": card }]
    })
}

fn version_ok(v: &str) -> bool {
    let mut parts = v.split('.');
    let major = parts.next().and_then(|p| p.parse::<u32>().ok());
    let minor = parts.next().map_or(Some(0), |p| p.parse::<u32>().ok());
    matches!((major, minor), (Some(ma), Some(mi)) if (ma, mi) <= (1, 4) && ma >= 1)
}

/// Every `type` found under a card, with where it was found.
fn check_node(v: &Value, path: &str, problems: &mut Vec<String>) {
    match v {
        Value::Object(o) => {
            if let Some(t) = o.get("type").and_then(Value::as_str) {
                let known = ELEMENTS.contains(&t) || ACTIONS.contains(&t) || t == "AdaptiveCard";
                if !known {
                    problems.push(format!("{path}: unsupported type '{t}'"));
                }
                if t == "Action.OpenUrl" {
                    let https = o
                        .get("url")
                        .and_then(Value::as_str)
                        .and_then(|u| url::Url::parse(u).ok())
                        .is_some_and(|u| u.scheme() == "https");
                    if !https {
                        problems.push(format!("{path}: Action.OpenUrl needs an https url"));
                    }
                }
                if t == "TextBlock" && !o.get("text").is_some_and(Value::is_string) {
                    problems.push(format!("{path}: TextBlock without text"));
                }
            }
            for (k, child) in o {
                // `msteams` holds host options, not elements.
                if k != "msteams" {
                    check_node(child, &format!("{path}/{k}"), problems);
                }
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                check_node(child, &format!("{path}/{i}"), problems);
            }
        }
        _ => {}
    }
}

/// The cheap production check: the Workflows envelope, version ≤ 1.4, known element and
/// action types only (no `Action.Submit`), https links, and the size limit.
///
/// # Errors
/// Every problem found, joined.
pub fn check(body: &Value) -> Result<(), String> {
    let mut problems = Vec::new();
    let size = body.to_string().len();
    if size > MAX_CARD_BYTES {
        problems.push(format!("the message is {size} bytes, over Teams' ~28 KB"));
    }
    if body.get("type").and_then(Value::as_str) != Some("message") {
        problems.push("type must be 'message'".into());
    }
    match body.get("attachments").and_then(Value::as_array) {
        Some(list) if !list.is_empty() => {
            for (i, a) in list.iter().enumerate() {
                if a.get("contentType").and_then(Value::as_str) != Some(ADAPTIVE_CARD) {
                    problems.push(format!(
                        "attachments/{i}: contentType must be {ADAPTIVE_CARD}"
                    ));
                }
                let Some(card) = a.get("content") else {
                    problems.push(format!("attachments/{i}: no content"));
                    continue;
                };
                if card.get("type").and_then(Value::as_str) != Some("AdaptiveCard") {
                    problems.push(format!(
                        "attachments/{i}: content.type must be AdaptiveCard"
                    ));
                }
                let version = card.get("version").and_then(Value::as_str).unwrap_or("");
                if !version_ok(version) {
                    problems.push(format!(
                        "attachments/{i}: version '{version}' (Workflows render 1.4 or lower)"
                    ));
                }
                if !card.get("body").is_some_and(Value::is_array) {
                    problems.push(format!("attachments/{i}: body must be an array"));
                }
                check_node(card, &format!("attachments/{i}/content"), &mut problems);
            }
        }
        _ => problems.push("attachments must be a non-empty array".into()),
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::notify::message::{self, tests::every_kind};
    use crate::notify::schema::Schema;

    fn schema() -> Schema {
        Schema::parse(include_str!("../../tests/data/adaptive-card.schema.json")).unwrap()
    }

    #[test]
    fn every_kind_of_note_renders_a_card_that_passes_the_check_and_the_vendored_schema() {
        let schema = schema();
        for note in every_kind() {
            let card = render(&message::render(&note, Some("Contoso")));
            check(&card).unwrap_or_else(|e| panic!("{}: {e}", note.id));
            let errors = schema.validate(&card);
            assert!(errors.is_empty(), "{:?}: {errors:?}\n{card:#}", note.event);
            let content = &card["attachments"][0]["content"];
            assert_eq!(content["version"], "1.4");
            assert_eq!(content["body"][2]["type"], "FactSet");
        }
    }

    #[test]
    fn an_incident_card_has_a_coloured_title_facts_and_a_link_to_the_incident() {
        let notes = every_kind();
        let card = render(&message::render(&notes[1], None));
        let content = &card["attachments"][0]["content"];
        assert_eq!(content["body"][0]["style"], "attention");
        assert_eq!(content["body"][0]["items"][0]["color"], "Attention");
        assert_eq!(
            content["body"][0]["items"][0]["text"],
            "New high incident: Suspicious <PowerShell>"
        );
        assert_eq!(content["actions"][0]["type"], "Action.OpenUrl");
        assert_eq!(
            content["actions"][0]["url"],
            "https://security.microsoft.com/incidents/48213?tid=x"
        );
    }

    #[test]
    fn markdown_in_names_titles_and_messages_is_shown_as_text() {
        for (hostile, escaped) in [
            (
                "**URGENT** [click](https://evil.example)",
                "\\*\\*URGENT\\*\\* \\[click\\](https://evil.example)",
            ),
            ("pc_01_`rm -rf`", "pc\\_01\\_\\`rm -rf\\`"),
            ("# Offboarding Succeeded", "\\# Offboarding Succeeded"),
            ("- item", "\\- item"),
            ("1. first", "1\\. first"),
            ("> quoted", "\\> quoted"),
            ("a\nStatus: Succeeded", "a Status: Succeeded"),
            ("~~gone~~ | table |", "\\~\\~gone\\~\\~ \\| table \\|"),
            ("back\\slash", "back\\\\slash"),
            ("pc-01.contoso.com", "pc-01.contoso.com"),
            ("Contoso <Europe>", "Contoso <Europe>"),
        ] {
            assert_eq!(escape_markdown(hostile), escaped, "{hostile}");
        }
    }

    #[test]
    fn a_card_for_a_hostile_device_name_carries_it_escaped_everywhere() {
        let mut m = message::render(&every_kind()[0], Some("Contoso"));
        let hostile = "**pwned** [x](https://evil.example)";
        m.title = format!("Offboarding Rejected: {hostile}");
        m.summary = hostile.into();
        m.facts.push(("Device".into(), hostile.into()));
        let card = render(&m);
        let text = card.to_string();
        assert!(!text.contains("**pwned**"), "{text}");
        assert!(!text.contains("[x]("), "{text}");
        check(&card).unwrap();
        assert!(schema().validate(&card).is_empty());
    }

    #[test]
    fn the_fixture_passes_and_broken_cards_are_refused() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/contracts/defender-api/teams-webhook.request.json"
        );
        let text = std::fs::read_to_string(path).expect("the contract fixture is in the tree");
        let fixture: Value = serde_json::from_str(&text).unwrap();
        check(&fixture).unwrap();
        assert!(schema().validate(&fixture).is_empty());

        let mut v15 = fixture.clone();
        v15["attachments"][0]["content"]["version"] = "1.5".into();
        assert!(check(&v15).unwrap_err().contains("1.5"));
        assert!(!schema().validate(&v15).is_empty());

        let mut submit = fixture.clone();
        submit["attachments"][0]["content"]["actions"][0]["type"] = "Action.Submit".into();
        assert!(check(&submit).unwrap_err().contains("Action.Submit"));
        assert!(!schema().validate(&submit).is_empty());

        let mut no_attachments = fixture.clone();
        no_attachments
            .as_object_mut()
            .unwrap()
            .remove("attachments");
        assert!(check(&no_attachments).is_err());

        let mut typo = fixture;
        typo["attachments"][0]["content"]["body"][0]["type"] = "Textblock".into();
        assert!(check(&typo).is_err());
        assert!(!schema().validate(&typo).is_empty());
    }
}
