//! Entity-group transactions: the `multipart/mixed` request (one changeset inside the batch)
//! and the parsing of its multipart answer.

use std::fmt::Write as _;

use super::error::parse_error_body;
use super::http::ACCEPT_JSON;
use super::keys::{entity_path, validate_key};
use super::value::encode_entity;
use super::{ETag, Entity, IfMatch, KeyKind, TableError};

/// The service's limit of operations per batch.
pub const MAX_BATCH_OPERATIONS: usize = 100;

/// One operation of a [`super::TableClient::batch`].
#[derive(Debug, Clone)]
pub enum BatchOp {
    Insert(Entity),
    UpsertMerge(Entity),
    UpsertReplace(Entity),
    UpdateMerge(Entity, IfMatch),
    UpdateReplace(Entity, IfMatch),
    Delete {
        partition_key: String,
        row_key: String,
        if_match: IfMatch,
    },
}

impl BatchOp {
    /// The keys the operation targets.
    #[must_use]
    pub fn keys(&self) -> (&str, &str) {
        match self {
            Self::Insert(e)
            | Self::UpsertMerge(e)
            | Self::UpsertReplace(e)
            | Self::UpdateMerge(e, _)
            | Self::UpdateReplace(e, _) => (&e.partition_key, &e.row_key),
            Self::Delete {
                partition_key,
                row_key,
                ..
            } => (partition_key, row_key),
        }
    }
}

/// Checks size and partition, then builds the body; returns `(content type, body)`.
pub(crate) fn build(
    base: &str,
    table: &str,
    ops: &[BatchOp],
) -> Result<(String, Vec<u8>), TableError> {
    if ops.len() > MAX_BATCH_OPERATIONS {
        return Err(TableError::InvalidBatch(format!(
            "{} operations; at most {MAX_BATCH_OPERATIONS} are allowed",
            ops.len()
        )));
    }
    let partition = ops.first().map(|op| op.keys().0).unwrap_or_default();
    validate_key(KeyKind::PartitionKey, partition)?;
    if let Some(i) = ops.iter().position(|op| op.keys().0 != partition) {
        return Err(TableError::InvalidBatch(format!(
            "operation {i} has another PartitionKey than operation 0"
        )));
    }
    let id = uuid::Uuid::new_v4().simple();
    let (batch, changeset) = (format!("batch_{id}"), format!("changeset_{id}"));
    let mut out = String::with_capacity(ops.len() * 512);
    let _ = write!(
        out,
        "--{batch}\r\nContent-Type: multipart/mixed; boundary={changeset}\r\n\r\n"
    );
    for op in ops {
        let (pk, rk) = op.keys();
        let (method, path, entity, if_match) = match op {
            BatchOp::Insert(e) => ("POST", None, Some(e), None),
            BatchOp::UpsertMerge(e) => ("MERGE", Some(entity_path(table, pk, rk)?), Some(e), None),
            BatchOp::UpsertReplace(e) => ("PUT", Some(entity_path(table, pk, rk)?), Some(e), None),
            BatchOp::UpdateMerge(e, m) => {
                ("MERGE", Some(entity_path(table, pk, rk)?), Some(e), Some(m))
            }
            BatchOp::UpdateReplace(e, m) => {
                ("PUT", Some(entity_path(table, pk, rk)?), Some(e), Some(m))
            }
            BatchOp::Delete { if_match, .. } => (
                "DELETE",
                Some(entity_path(table, pk, rk)?),
                None,
                Some(if_match),
            ),
        };
        if path.is_none() {
            validate_key(KeyKind::RowKey, rk)?;
        }
        let _ = write!(
            out,
            "--{changeset}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n\
             {method} {base}/{} HTTP/1.1\r\nAccept: {ACCEPT_JSON}\r\nDataServiceVersion: 3.0;\r\n",
            path.as_deref().unwrap_or(table)
        );
        if let Some(m) = if_match {
            let _ = write!(out, "If-Match: {}\r\n", m.as_header());
        }
        match entity {
            Some(e) => {
                if matches!(op, BatchOp::Insert(_)) {
                    out.push_str("Prefer: return-no-content\r\n");
                }
                out.push_str("Content-Type: application/json\r\n\r\n");
                let json = encode_entity(e)?;
                out.push_str(
                    std::str::from_utf8(&json).map_err(|e| TableError::Decode(e.to_string()))?,
                );
                out.push_str("\r\n");
            }
            None => out.push_str("\r\n"),
        }
    }
    let _ = write!(out, "--{changeset}--\r\n--{batch}--\r\n");
    Ok((
        format!("multipart/mixed; boundary={batch}"),
        out.into_bytes(),
    ))
}

#[derive(Debug, Default)]
struct SubResponse {
    status: u16,
    content_id: Option<usize>,
    etag: Option<String>,
    body: String,
}

/// Reads the sub-responses of a batch answer: the ETags in operation order, or the failed
/// operation as [`TableError::BatchFailed`].
pub(crate) fn parse_response(
    body: &[u8],
    op_count: usize,
    after_retry: bool,
) -> Result<Vec<Option<ETag>>, TableError> {
    let text = String::from_utf8_lossy(body);
    let mut subs: Vec<SubResponse> = Vec::with_capacity(op_count);
    let mut in_headers = false;
    let mut in_body = false;
    for line in text.split('\n').map(|l| l.trim_end_matches('\r')) {
        if let Some(rest) = line
            .strip_prefix("HTTP/1.1 ")
            .or_else(|| line.strip_prefix("HTTP/1.0 "))
        {
            let status = rest
                .split(' ')
                .next()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            subs.push(SubResponse {
                status,
                ..SubResponse::default()
            });
            (in_headers, in_body) = (true, false);
        } else if line.starts_with("--") {
            (in_headers, in_body) = (false, false);
        } else if let Some(sub) = subs.last_mut() {
            if in_headers {
                if line.is_empty() {
                    (in_headers, in_body) = (false, true);
                } else if let Some((name, value)) = line.split_once(':') {
                    let value = value.trim();
                    if name.eq_ignore_ascii_case("Content-ID") {
                        sub.content_id = value.parse().ok();
                    } else if name.eq_ignore_ascii_case("ETag") {
                        sub.etag = Some(value.to_owned());
                    }
                }
            } else if in_body {
                sub.body.push_str(line);
            }
        }
    }
    if let Some((position, failed)) = subs
        .iter()
        .enumerate()
        .find(|(_, s)| !(200..300).contains(&s.status))
    {
        let e = parse_error_body(failed.body.as_bytes(), None);
        let (index, message) = split_index(&e.message);
        return Err(TableError::BatchFailed {
            index: index
                .or_else(|| failed.content_id.and_then(|c| c.checked_sub(1)))
                .unwrap_or(position),
            status: failed.status,
            code: e.code,
            message: message.to_owned(),
            after_retry,
        });
    }
    if subs.len() != op_count {
        return Err(TableError::Decode(format!(
            "batch answer has {} responses for {op_count} operations",
            subs.len()
        )));
    }
    Ok(subs.into_iter().map(|s| s.etag.map(ETag::new)).collect())
}

/// The service prefixes a failed operation's message with its index: `"3:The specified..."`.
pub(crate) fn split_index(message: &str) -> (Option<usize>, &str) {
    match message.split_once(':') {
        Some((n, rest)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
            (n.parse().ok(), rest)
        }
        _ => (None, message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "http://127.0.0.1:10002/devstoreaccount1";

    #[test]
    fn the_request_nests_a_changeset_with_crlf_lines() {
        let ops = vec![
            BatchOp::Insert(Entity::new("p", "a").with("N", 1)),
            BatchOp::Delete {
                partition_key: "p".into(),
                row_key: "o'b".into(),
                if_match: IfMatch::Any,
            },
        ];
        let (content_type, body) = build(BASE, "T", &ops).expect("valid batch");
        let body = String::from_utf8(body).expect("utf-8");
        let boundary = content_type
            .strip_prefix("multipart/mixed; boundary=")
            .expect("boundary");
        assert!(body.starts_with(&format!(
            "--{boundary}\r\nContent-Type: multipart/mixed; boundary=changeset_"
        )));
        assert!(body.ends_with(&format!("--\r\n--{boundary}--\r\n")));
        assert!(body.contains(&format!("POST {BASE}/T HTTP/1.1\r\n")));
        assert!(body.contains(&format!(
            "DELETE {BASE}/T(PartitionKey='p',RowKey='o%27%27b') HTTP/1.1\r\n"
        )));
        assert!(body.contains("If-Match: *\r\n"));
        assert!(body.contains("{\"PartitionKey\":\"p\",\"RowKey\":\"a\",\"N\":1}\r\n"));
        assert!(
            !body.replace("\r\n", "").contains('\n'),
            "every line ends with CRLF"
        );
    }

    #[test]
    fn oversized_or_mixed_batches_are_refused() {
        let many: Vec<_> = (0..101)
            .map(|i| BatchOp::Insert(Entity::new("p", i.to_string())))
            .collect();
        assert!(matches!(
            build(BASE, "T", &many),
            Err(TableError::InvalidBatch(_))
        ));
        let mixed = vec![
            BatchOp::Insert(Entity::new("p", "1")),
            BatchOp::UpsertMerge(Entity::new("q", "2")),
        ];
        assert!(matches!(
            build(BASE, "T", &mixed),
            Err(TableError::InvalidBatch(_))
        ));
        let bad_key = vec![BatchOp::Insert(Entity::new("p", "a/b"))];
        assert!(matches!(
            build(BASE, "T", &bad_key),
            Err(TableError::InvalidKey { .. })
        ));
    }

    #[test]
    fn a_failed_operation_is_reported_with_its_index() {
        let answer = "--batchresponse_1\r\nContent-Type: multipart/mixed; boundary=changesetresponse_1\r\n\r\n\
            --changesetresponse_1\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n\
            HTTP/1.1 409 Conflict\r\nContent-ID: 3\r\nContent-Type: application/json;odata=minimalmetadata;charset=utf-8\r\n\r\n\
            {\"odata.error\":{\"code\":\"EntityAlreadyExists\",\"message\":{\"lang\":\"en-US\",\"value\":\"2:The specified entity already exists.\"}}}\r\n\
            --changesetresponse_1--\r\n--batchresponse_1--\r\n";
        match parse_response(answer.as_bytes(), 5, false) {
            Err(TableError::BatchFailed {
                index,
                status,
                code,
                message,
                after_retry,
            }) => {
                assert_eq!(
                    (index, status, code.as_str()),
                    (2, 409, "EntityAlreadyExists")
                );
                assert_eq!(message, "The specified entity already exists.");
                assert!(!after_retry);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_successful_answer_gives_the_etags_in_order() {
        let sub = |etag: &str| {
            format!(
                "--changesetresponse_1\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n\
                 HTTP/1.1 204 No Content\r\nDataServiceVersion: 3.0;\r\nETag: {etag}\r\n\r\n"
            )
        };
        let answer = format!(
            "--batchresponse_1\r\nContent-Type: multipart/mixed; boundary=changesetresponse_1\r\n\r\n{}{}--changesetresponse_1--\r\n--batchresponse_1--\r\n",
            sub("W/\"a\""),
            sub("W/\"b\"")
        );
        let etags = parse_response(answer.as_bytes(), 2, false).expect("success");
        assert_eq!(
            etags,
            vec![Some(ETag::new("W/\"a\"")), Some(ETag::new("W/\"b\""))]
        );
        assert!(matches!(
            parse_response(answer.as_bytes(), 3, false),
            Err(TableError::Decode(_))
        ));
    }

    #[test]
    fn index_prefixes_are_split_only_when_numeric() {
        assert_eq!(split_index("12:boom"), (Some(12), "boom"));
        assert_eq!(split_index("Time:12"), (None, "Time:12"));
        assert_eq!(split_index(":x"), (None, ":x"));
    }
}
