//! Email: subject, HTML and plain-text bodies of a note. Everything interpolated into the
//! HTML is escaped; links are https only (checked when the message was built).

use std::fmt::Write as _;

use super::message::{Message, Tone};

/// A rendered mail: sent as `multipart/alternative` with both bodies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    pub subject: String,
    pub html: String,
    pub text: String,
    /// The note's id when known ([`Mail::for_note`]): every send of the note then carries
    /// the same `Message-ID`.
    pub note_id: Option<String>,
}

impl Mail {
    /// Ties the mail to note `id`, so a resend is recognisably the same mail.
    #[must_use]
    pub fn for_note(mut self, id: &str) -> Self {
        self.note_id = Some(id.to_owned());
        self
    }
}

/// Escapes text for HTML element content and attribute values.
#[must_use]
pub fn escape_html(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn accent(tone: Tone) -> &'static str {
    // The Teams palette, so both channels read alike.
    match tone {
        Tone::Attention => "#c4314b",
        Tone::Warning => "#c19c00",
        Tone::Good => "#237b4b",
        Tone::Accent => "#0f6cbd",
    }
}

/// One line, no control characters: a subject must not carry a header break.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Renders `m` as a mail.
#[must_use]
pub fn render(m: &Message) -> Mail {
    let e = escape_html;
    let mut html = String::new();
    // `write!` into a String cannot fail.
    let _ = write!(
        html,
        "<div style=\"font-family:Segoe UI,Arial,sans-serif;font-size:14px\">\
         <h2 style=\"margin:0 0 8px 0;padding:6px 10px;border-left:6px solid {};\">{}</h2>\
         <p>{}</p><table style=\"border-collapse:collapse\">",
        accent(m.tone),
        e(&m.title),
        e(&m.summary)
    );
    for (k, v) in &m.facts {
        let _ = write!(
            html,
            "<tr><th style=\"text-align:left;padding:2px 12px 2px 0\">{}</th><td>{}</td></tr>",
            e(k),
            e(v)
        );
    }
    html.push_str("</table>");
    let mut text = format!("{}\n\n{}\n\n", m.title, m.summary);
    for (k, v) in &m.facts {
        let _ = writeln!(text, "{k}: {v}");
    }
    if !m.devices.is_empty() {
        html.push_str("<p><b>Devices</b></p><ul>");
        text.push_str("\nDevices:\n");
        for d in &m.devices {
            match &d.url {
                Some(url) => {
                    let _ = write!(
                        html,
                        "<li><a href=\"{}\">{}</a> ({})</li>",
                        e(url),
                        e(&d.label),
                        e(&d.machine_id)
                    );
                    let _ = writeln!(text, "- {} ({}): {url}", d.label, d.machine_id);
                }
                None => {
                    let _ = write!(html, "<li>{} ({})</li>", e(&d.label), e(&d.machine_id));
                    let _ = writeln!(text, "- {} ({})", d.label, d.machine_id);
                }
            }
        }
        if m.more_devices > 0 {
            let _ = write!(html, "<li>… and {} more</li>", m.more_devices);
            let _ = writeln!(text, "- … and {} more", m.more_devices);
        }
        html.push_str("</ul>");
    }
    if let Some(link) = &m.link {
        let _ = write!(
            html,
            "<p><a href=\"{}\">{}</a></p>",
            e(&link.url),
            e(&link.title)
        );
        let _ = writeln!(text, "\n{}: {}", link.title, link.url);
    }
    html.push_str("<p style=\"color:#616161;font-size:12px\">Sent by defender-ops.</p></div>");
    text.push_str("\n-- \nSent by defender-ops.\n");
    Mail {
        subject: one_line(&format!("[Defender] {}", m.title)),
        html,
        text,
        note_id: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::message::{self, tests::every_kind};

    #[test]
    fn every_interpolated_value_is_escaped_in_the_html() {
        assert_eq!(
            escape_html(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        for note in every_kind() {
            let mail = render(&message::render(&note, Some("Con<toso>")));
            assert!(!mail.html.contains("<script"), "{}", mail.html);
            assert!(!mail.html.contains("<PowerShell>"), "{}", mail.html);
            assert!(!mail.html.contains("pc-<01>"), "{}", mail.html);
            assert!(!mail.html.contains("Con<toso>"), "{}", mail.html);
            assert!(!mail.html.contains("javascript:"), "{}", mail.html);
            assert!(!mail.subject.contains('\n'));
            assert!(mail.text.contains(&note.tenant_id.to_string()));
        }
        let offboard = render(&message::render(&every_kind()[0], None));
        assert!(
            offboard
                .html
                .contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; more")
        );
        assert!(
            offboard.text.contains("<script>alert('x')</script> & more"),
            "text is verbatim"
        );
        assert!(
            offboard
                .subject
                .starts_with("[Defender] Offboarding Rejected: pc-01")
        );
    }
}
