//! The CSV export of a filtered grid: every matching device of the chosen tenants, in table
//! order, as one string (payload mode returns a body as one string).
//!
//! Built compactly: rows are read a storage page (1,000) at a time and written straight into
//! the output, so memory is the CSV itself plus one page. RFC 4180: comma-separated, CRLF
//! line ends, a field quoted (quotes doubled) when it holds a comma, a quote or a line break.
//! A spreadsheet runs a cell starting with `=`, `+`, `-`, `@`, a tab or a carriage return as
//! a formula, and device names and Defender's messages are other people's text: such a cell
//! gets a leading `'` (OWASP's advice for CSV injection).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use futures::TryStreamExt;
use time::format_description::well_known::Rfc3339;

use super::grid::DeviceFilter;
use crate::clients::tables::{TableClient, TableError};
use crate::domain::TenantId;
use crate::store::devices::{DeviceRow, col};

/// An export stops (and is refused) past this many devices: the body is one string.
pub const MAX_EXPORT_ROWS: u64 = 50_000;

/// The CSV header; the names of `GET /api/devices`, in its order, after the tenant's.
pub const HEADER: &[&str] = &[
    "tenantId",
    "tenantName",
    "machineId",
    "computerDnsName",
    "osPlatform",
    "osVersion",
    "healthStatus",
    "onboardingStatus",
    "lastSeen",
    "firstSeen",
    "lastIpAddress",
    "aadDeviceId",
    "machineTags",
    "riskScore",
    "exposureLevel",
    "mergedIntoMachineId",
    "stale",
    "duplicateOf",
    "gone",
    "offboard",
    "result",
    "resultAt",
    "lastRequestId",
];

const COLUMNS: &[&str] = &[
    col::NAME,
    col::OS,
    col::OS_VERSION,
    col::HEALTH,
    col::ONBOARDING,
    col::LAST_SEEN,
    col::FIRST_SEEN,
    col::LAST_IP,
    col::AAD,
    col::TAGS,
    col::RISK,
    col::EXPOSURE,
    col::MERGED_INTO,
    col::STALE,
    col::DUPLICATE_OF,
    col::GONE,
    col::OFFBOARD,
    col::RESULT,
    col::RESULT_AT,
    col::LAST_REQUEST,
];

/// Why there is no export.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Table(#[from] TableError),
    #[error("more than {limit} devices match: export one tenant at a time or narrow the filter")]
    TooMany { limit: u64 },
}

/// The CSV of every device of `tenants` (id → display name; the filter's tenant narrows
/// them) that `filter` matches.
///
/// # Errors
/// Storage failures; more than [`MAX_EXPORT_ROWS`] matches.
pub async fn csv(
    devices: &TableClient,
    tenants: &BTreeMap<TenantId, String>,
    filter: &DeviceFilter,
) -> Result<String, ExportError> {
    let mut out = String::with_capacity(64 * 1024);
    write_row(&mut out, HEADER.iter().copied());
    let mut rows = 0u64;
    for (tenant, name) in tenants
        .iter()
        .filter(|(t, _)| filter.tenant.as_ref().is_none_or(|only| only == *t))
    {
        let f = filter.server_filter_for_export(tenant);
        let mut pages = std::pin::pin!(devices.query_pages(Some(&f), Some(COLUMNS)));
        while let Some(page) = pages.try_next().await? {
            for entity in page {
                let row = DeviceRow { entity };
                if !filter.matches(&row) {
                    continue;
                }
                rows += 1;
                if rows > MAX_EXPORT_ROWS {
                    return Err(ExportError::TooMany {
                        limit: MAX_EXPORT_ROWS,
                    });
                }
                write_device(&mut out, name, &row);
            }
        }
    }
    out.shrink_to_fit();
    Ok(out)
}

fn write_device(out: &mut String, tenant_name: &str, row: &DeviceRow) {
    let e = &row.entity;
    let text = |c: &str| e.get_str(c).unwrap_or_default();
    let flag = |c: &str| if row.flag(c) { "true" } else { "false" };
    let mut time_buf = [String::new(), String::new(), String::new()];
    for (slot, c) in time_buf
        .iter_mut()
        .zip([col::LAST_SEEN, col::FIRST_SEEN, col::RESULT_AT])
    {
        if let Some(t) = e.get_datetime(c).and_then(|t| t.format(&Rfc3339).ok()) {
            *slot = t;
        }
    }
    // Tags as the API lists them, `;`-joined for a cell.
    let tags = row.tags().join(";");
    let [last_seen, first_seen, result_at] = &time_buf;
    write_row(
        out,
        [
            e.partition_key.as_str(),
            tenant_name,
            e.row_key.as_str(),
            text(col::NAME),
            text(col::OS),
            text(col::OS_VERSION),
            text(col::HEALTH),
            text(col::ONBOARDING),
            last_seen,
            first_seen,
            text(col::LAST_IP),
            text(col::AAD),
            &tags,
            text(col::RISK),
            text(col::EXPOSURE),
            text(col::MERGED_INTO),
            flag(col::STALE),
            text(col::DUPLICATE_OF),
            flag(col::GONE),
            flag(col::OFFBOARD),
            text(col::RESULT),
            result_at,
            text(col::LAST_REQUEST),
        ],
    );
}

/// One CSV record, CRLF-terminated.
pub fn write_row<'a>(out: &mut String, fields: impl IntoIterator<Item = &'a str>) {
    for (i, f) in fields.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_field(out, f);
    }
    out.push_str("\r\n");
}

/// One field: formula-guarded, then quoted when RFC 4180 needs it.
pub fn write_field(out: &mut String, value: &str) {
    let guard = value.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let quote = value.contains([',', '"', '\r', '\n']);
    if quote {
        out.push('"');
    }
    if guard {
        out.push('\'');
    }
    if quote {
        for c in value.chars() {
            if c == '"' {
                out.push('"');
            }
            out.push(c);
        }
        out.push('"');
    } else {
        let _ = write!(out, "{value}");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn field(v: &str) -> String {
        let mut s = String::new();
        write_field(&mut s, v);
        s
    }

    #[test]
    fn fields_are_quoted_as_rfc_4180_says_and_formulas_are_defused() {
        assert_eq!(field("pc-01"), "pc-01");
        assert_eq!(field(""), "");
        assert_eq!(field("a,b"), "\"a,b\"");
        assert_eq!(field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(field("two\r\nlines"), "\"two\r\nlines\"");
        assert_eq!(field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(field("+1"), "'+1");
        assert_eq!(field("-2"), "'-2");
        assert_eq!(field("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(field("\tx"), "'\tx");
        assert_eq!(field("a=b"), "a=b");
        let mut row = String::new();
        write_row(&mut row, ["a", "b,c"]);
        assert_eq!(row, "a,\"b,c\"\r\n");
    }

    /// A minimal RFC 4180 reader, to check what the writer makes reads back.
    fn read(csv: &str) -> Vec<Vec<String>> {
        let mut rows = vec![];
        let mut row = vec![];
        let mut cur = String::new();
        let mut chars = csv.chars().peekable();
        let mut quoted = false;
        while let Some(c) = chars.next() {
            match (quoted, c) {
                (true, '"') if chars.peek() == Some(&'"') => {
                    chars.next();
                    cur.push('"');
                }
                (true, '"') => quoted = false,
                (true, c) => cur.push(c),
                (false, '"') => quoted = true,
                (false, ',') => row.push(std::mem::take(&mut cur)),
                (false, '\r') if chars.peek() == Some(&'\n') => {
                    chars.next();
                    row.push(std::mem::take(&mut cur));
                    rows.push(std::mem::take(&mut row));
                }
                (false, c) => cur.push(c),
            }
        }
        rows
    }

    proptest! {
        #[test]
        fn any_fields_read_back_with_only_the_guard_added(
            fields in proptest::collection::vec("[a-z=+@,\"\r\n -]{0,8}", 1..6)
        ) {
            let mut csv = String::new();
            write_row(&mut csv, fields.iter().map(String::as_str));
            let back = read(&csv);
            prop_assert_eq!(back.len(), 1);
            for (got, want) in back[0].iter().zip(&fields) {
                let guarded = want.starts_with(['=', '+', '-', '@', '\t', '\r']);
                let expected = if guarded { format!("'{want}") } else { want.clone() };
                prop_assert_eq!(got, &expected);
            }
        }
    }
}
