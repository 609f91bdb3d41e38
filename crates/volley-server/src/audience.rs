//! Who a campaign reaches: contacts imported from CSV (created or updated by their
//! external id, which is also the user id of signed identities), and segments by tag
//! and attribute.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use volley_flow::Contact;
use volley_store::ContactUpsert;

use crate::App;
use crate::auth::{Scoped, scope};
use crate::error::{ApiError, ErrorBody};
use crate::ids::new_sorted_id;

/// Largest CSV accepted (bytes).
pub const MAX_CSV_BYTES: usize = 20 * 1024 * 1024;
/// Most rows in one CSV.
pub const MAX_CSV_ROWS: usize = 200_000;
/// Longest value in a CSV cell (characters).
const MAX_CELL_CHARS: usize = 1_000;
/// Most contacts a campaign may target.
pub const MAX_AUDIENCE: usize = 1_000_000;
/// Errors reported per refused CSV (the rest are counted).
const MAX_REPORTED_ERRORS: usize = 50;

/// Columns with a meaning of their own; every other column is a custom attribute.
const KNOWN: &[&str] = &[
    "external_id",
    "name",
    "email",
    "phone",
    "timezone",
    "locale",
    "country",
    "tags",
];

/// One CSV row, parsed.
pub struct Imported {
    pub external_id: String,
    pub profile: Contact,
}

/// A row that cannot be imported.
#[derive(Debug, Serialize, ToSchema)]
pub struct RowError {
    /// 1-based line number in the file (the header is line 1).
    pub line: u64,
    pub message: String,
}

/// Parses a contacts CSV. A header row names the columns: `external_id` (required),
/// `name`, `email`, `phone`, `timezone` (IANA), `locale`, `country`, `tags`
/// (separated by `;`), and any other column becomes a custom attribute. All rows are
/// checked; any error refuses the whole file (nothing is imported).
pub fn parse_csv(text: &str) -> Result<Vec<Imported>, (String, Vec<RowError>)> {
    if text.len() > MAX_CSV_BYTES {
        return Err((
            format!("CSV files are limited to {MAX_CSV_BYTES} bytes"),
            vec![],
        ));
    }
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(false)
        .from_reader(text.as_bytes());
    let headers: Vec<String> = match reader.headers() {
        Ok(h) => h.iter().map(|c| c.to_ascii_lowercase()).collect(),
        Err(e) => return Err((format!("cannot read the header row: {e}"), vec![])),
    };
    let Some(ext_col) = headers.iter().position(|h| h == "external_id") else {
        return Err((
            "the header row needs an `external_id` column".into(),
            vec![],
        ));
    };
    if let Some(dup) = headers
        .iter()
        .enumerate()
        .find(|(i, h)| headers[..*i].contains(h))
    {
        return Err((format!("column `{}` appears twice", dup.1), vec![]));
    }
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, record) in reader.records().enumerate() {
        let line = i as u64 + 2;
        if rows.len() + errors.len() >= MAX_CSV_ROWS {
            return Err((
                format!("CSV files are limited to {MAX_CSV_ROWS} rows"),
                vec![],
            ));
        }
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                errors.push(RowError {
                    line,
                    message: e.to_string(),
                });
                continue;
            }
        };
        match parse_row(&headers, ext_col, &record) {
            Ok(row) if !seen.insert(row.external_id.clone()) => errors.push(RowError {
                line,
                message: format!("external_id `{}` appears twice", row.external_id),
            }),
            Ok(row) => rows.push(row),
            Err(message) => errors.push(RowError { line, message }),
        }
    }
    if errors.is_empty() {
        Ok(rows)
    } else {
        let n = errors.len();
        errors.truncate(MAX_REPORTED_ERRORS);
        Err((
            format!("{n} row(s) cannot be imported; nothing was imported"),
            errors,
        ))
    }
}

fn parse_row(
    headers: &[String],
    ext_col: usize,
    record: &csv::StringRecord,
) -> Result<Imported, String> {
    let external_id = record.get(ext_col).unwrap_or("").to_string();
    if external_id.is_empty() || external_id.len() > 256 {
        return Err("external_id must have 1 to 256 characters".into());
    }
    let mut p = Contact::default();
    for (h, value) in headers.iter().zip(record.iter()) {
        if value.is_empty() || h == "external_id" {
            continue;
        }
        if value.chars().count() > MAX_CELL_CHARS {
            return Err(format!("`{h}` is longer than {MAX_CELL_CHARS} characters"));
        }
        let v = Some(value.to_string());
        match h.as_str() {
            "name" => p.name = v,
            "email" => {
                if !value.contains('@') {
                    return Err(format!("`{value}` is not an email address"));
                }
                p.email = v;
            }
            "phone" => p.phone = v,
            "timezone" => {
                if volley_flow::zone(value).is_none() {
                    return Err(format!(
                        "`{value}` is not an IANA time zone (e.g. Europe/Berlin)"
                    ));
                }
                p.timezone = v;
            }
            "locale" => p.locale = v,
            "country" => p.country = v,
            "tags" => {
                p.tags = value
                    .split(';')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(String::from)
                    .collect();
            }
            other => {
                debug_assert!(!KNOWN.contains(&other));
                p.attributes
                    .insert(other.to_string(), Value::String(value.to_string()));
            }
        }
    }
    Ok(Imported {
        external_id,
        profile: p,
    })
}

/// Writes imported contacts (create or update by external id). An update replaces
/// the fields the file has and keeps the others (a time zone the widget reported, say).
pub async fn import(app: &App, rows: Vec<Imported>) -> Result<ImportResult, ApiError> {
    let mut upserts = Vec::with_capacity(rows.len());
    let now = app.clock.now_ms();
    for row in rows {
        upserts.push(ContactUpsert {
            id: new_sorted_id("ct", now),
            external_id: row.external_id,
            profile: serde_json::to_string(&row.profile)
                .map_err(|e| ApiError::internal("profile", e))?,
        });
    }
    let total = upserts.len() as i64;
    let created = app
        .store
        .upsert_contacts(upserts, app.clock.now_ms())
        .await?;
    Ok(ImportResult {
        created,
        updated: total - created,
    })
}

#[derive(Serialize, ToSchema)]
pub struct ImportResult {
    pub created: i64,
    pub updated: i64,
}

/// `POST /api/contacts/import`: a CSV of contacts (admin).
#[utoipa::path(
    post,
    path = "/api/contacts/import",
    tag = "campaigns",
    request_body(content = String, content_type = "text/csv", description = "Header row, then one contact per row"),
    responses(
        (status = 200, body = ImportResult),
        (status = 401, body = ErrorBody),
        (status = 422, body = ErrorBody, description = "Rows with errors (listed in `details`); nothing imported"),
    ),
    security(("admin_key" = []), ("console_session" = []))
)]
pub async fn import_csv(
    State(app): State<Arc<App>>,
    _: Scoped<scope::ContactsWrite>,
    body: String,
) -> Result<(StatusCode, axum::Json<ImportResult>), ApiError> {
    let rows = parse_csv(&body).map_err(csv_error)?;
    Ok((StatusCode::OK, axum::Json(import(&app, rows).await?)))
}

/// The error for a refused CSV, with its row errors as details.
pub fn csv_error((message, rows): (String, Vec<RowError>)) -> ApiError {
    ApiError::unprocessable("invalid-csv", message)
        .with_details(serde_json::json!({ "rows": rows }))
}

/// Which contacts a campaign targets. Conditions combine with AND; with none, every
/// contact is targeted only if `all` is true.
#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Segment {
    /// Every contact.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all: bool,
    /// Contacts with every one of these tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Contacts whose profile has these values (`name`, `email`, `timezone`, `locale`,
    /// `country` or a custom attribute), compared as text.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schema(value_type = Object)]
    pub attributes: BTreeMap<String, Value>,
    /// Contacts with these external ids.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub external_ids: Vec<String>,
}

impl Segment {
    pub fn is_empty(&self) -> bool {
        !self.all
            && self.tags.is_empty()
            && self.attributes.is_empty()
            && self.external_ids.is_empty()
    }

    /// Whether a contact is in the segment; `ids` is `external_ids` as a set.
    fn matches(&self, ids: &HashSet<&str>, external_id: Option<&str>, c: &Contact) -> bool {
        let text = |v: &Value| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let field = |name: &str| -> Option<String> {
            match name {
                "name" => c.name.clone(),
                "email" => c.email.clone(),
                "phone" => c.phone.clone(),
                "timezone" => c.timezone.clone(),
                "locale" => c.locale.clone(),
                "country" => c.country.clone(),
                other => c.attributes.get(other).map(text),
            }
        };
        self.tags.iter().all(|t| c.tags.contains(t))
            && self
                .attributes
                .iter()
                .all(|(k, v)| field(k).is_some_and(|have| have == text(v)))
            && (ids.is_empty() || external_id.is_some_and(|e| ids.contains(e)))
    }
}

/// A targeted contact: what planning its sends needs (kept small: an audience may
/// have a million members).
pub struct Member {
    pub id: String,
    pub timezone: Option<String>,
}

/// Every contact in the segment, in id order (at most [`MAX_AUDIENCE`]).
pub async fn members(app: &App, segment: &Segment) -> Result<Vec<Member>, ApiError> {
    const PAGE: i64 = 5_000;
    let mut out = Vec::new();
    let mut after = String::new();
    let ids: HashSet<&str> = segment.external_ids.iter().map(String::as_str).collect();
    loop {
        let page = app.store.contacts_after(&after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.id.clone();
        for row in &page {
            let mut profile: Contact = serde_json::from_str(&row.profile).unwrap_or_default();
            profile.id = row.id.clone();
            if segment.matches(&ids, row.external_id.as_deref(), &profile) {
                if out.len() >= MAX_AUDIENCE {
                    return Err(ApiError::unprocessable(
                        "audience-too-large",
                        format!("a campaign may target at most {MAX_AUDIENCE} contacts"),
                    ));
                }
                out.push(Member {
                    id: row.id.clone(),
                    timezone: profile.timezone,
                });
            }
        }
        if (page.len() as i64) < PAGE {
            break;
        }
    }
    Ok(out)
}

/// The external ids of imported rows (a campaign that brings its own list).
pub fn external_ids(rows: &[Imported]) -> Vec<String> {
    rows.iter().map(|r| r.external_id.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_rows_become_profiles_and_any_bad_row_refuses_the_file() {
        let ok = parse_csv(
            "external_id,name,email,timezone,tags,plan\n\
             u1,Ana,ana@example.com,Europe/Lisbon,vip; trial,pro\n\
             u2,Bo,,,,\n",
        )
        .unwrap();
        assert_eq!(ok.len(), 2);
        assert_eq!(ok[0].profile.tags, ["vip", "trial"]);
        assert_eq!(ok[0].profile.attributes["plan"], "pro");
        assert_eq!(ok[1].profile.email, None);
        let (message, rows) = parse_csv(
            "external_id,timezone,email\nu1,Mars/Olympus,\n,UTC,\nu3,UTC,nope\nu4,UTC,a@b\n",
        )
        .err()
        .unwrap();
        assert!(message.contains("3 row(s)"), "{message}");
        let lines: Vec<u64> = rows.iter().map(|r| r.line).collect();
        assert_eq!(lines, [2, 3, 4]);
        assert!(parse_csv("name\nAna\n").is_err(), "external_id is required");
        assert!(
            parse_csv("external_id\nu1\nu1\n").is_err(),
            "duplicates refused"
        );
        assert!(
            parse_csv("external_id,name\nu1\n").is_err(),
            "ragged rows refused"
        );
    }

    #[test]
    fn segments_combine_tags_and_attributes() {
        let mut c = Contact {
            tags: vec!["vip".into()],
            timezone: Some("UTC".into()),
            ..Default::default()
        };
        c.attributes
            .insert("plan".into(), Value::String("pro".into()));
        c.attributes.insert("seats".into(), Value::from(5));
        let check = |json: Value, ext: Option<&str>| {
            let s = serde_json::from_value::<Segment>(json).unwrap();
            let ids: HashSet<&str> = s.external_ids.iter().map(String::as_str).collect();
            s.matches(&ids, ext, &c)
        };
        let pro = serde_json::json!({"tags": ["vip"], "attributes": {"plan": "pro", "seats": 5}});
        assert!(check(pro, None));
        assert!(!check(serde_json::json!({"tags": ["vip", "new"]}), None));
        assert!(!check(
            serde_json::json!({"attributes": {"plan": "free"}}),
            None
        ));
        assert!(check(serde_json::json!({"external_ids": ["x"]}), Some("x")));
        assert!(!check(serde_json::json!({"external_ids": ["x"]}), None));
    }
}
