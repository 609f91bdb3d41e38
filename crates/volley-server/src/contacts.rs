//! Who is talking: anonymous contacts (a token the client keeps, stored hashed) and
//! identified contacts (a user id signed by the embedding site with HMAC-SHA256).
//!
//! Unsigned profile data personalises conversations but never decides identity: only
//! a token the server issued, or a valid signature, maps a client to a contact.

use serde::{Deserialize, Serialize};
use volley_store::{ContactRow, NewContact};

use crate::App;
use crate::error::ApiError;
use crate::ids::{constant_time_eq, hash_secret, hmac_hex, new_id, new_sorted_id, new_token};

/// A signed identity passed by the embedding site.
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
pub struct Identity {
    /// The site's user id.
    pub user_id: String,
    /// hex(HMAC-SHA256(site secret, user_id)).
    pub signature: String,
    /// Profile fields for personalisation (name, email, timezone, locale, attributes).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub profile: Option<serde_json::Value>,
}

/// Profile hints a client reports (its time zone and language).
#[derive(Debug, Clone, Default)]
pub struct Hints {
    pub timezone: Option<String>,
    pub locale: Option<String>,
}

/// The contact behind a request.
pub struct Resolved {
    pub row: ContactRow,
    pub profile: volley_flow::Contact,
    /// A newly issued anonymous token (only when a contact was just created).
    pub new_token: Option<String>,
}

const MAX_USER_ID: usize = 256;

fn profile_of(row: &ContactRow) -> volley_flow::Contact {
    let mut c: volley_flow::Contact = serde_json::from_str(&row.profile).unwrap_or_default();
    c.id = row.id.clone();
    c
}

/// Applies reported hints and unsigned profile data; returns whether anything changed.
fn merge(
    profile: &mut volley_flow::Contact,
    hints: &Hints,
    extra: Option<&serde_json::Value>,
) -> bool {
    let mut changed = false;
    if let Some(tz) = hints
        .timezone
        .as_ref()
        .filter(|tz| volley_flow::zone(tz).is_some())
        && profile.timezone.is_none()
    {
        profile.timezone = Some(tz.clone());
        changed = true;
    }
    if let Some(l) = hints.locale.as_ref().filter(|l| l.len() <= 35)
        && profile.locale.is_none()
    {
        profile.locale = Some(l.clone());
        changed = true;
    }
    if let Some(serde_json::Value::Object(map)) = extra {
        for (k, v) in map {
            let text = v.as_str().map(|s| s.chars().take(200).collect::<String>());
            let slot = match k.as_str() {
                "name" => &mut profile.name,
                "email" => &mut profile.email,
                "phone" => &mut profile.phone,
                "locale" => &mut profile.locale,
                "country" => &mut profile.country,
                "timezone"
                    if text
                        .as_deref()
                        .is_some_and(|t| volley_flow::zone(t).is_some()) =>
                {
                    &mut profile.timezone
                }
                "id" | "timezone" => continue,
                _ => {
                    if profile.attributes.len() < 50
                        && k.len() <= 64
                        && profile.attributes.get(k) != Some(v)
                    {
                        profile.attributes.insert(k.clone(), v.clone());
                        changed = true;
                    }
                    continue;
                }
            };
            if text.is_some() && *slot != text {
                *slot = text;
                changed = true;
            }
        }
    }
    changed
}

fn profile_json(p: &volley_flow::Contact) -> String {
    let mut p = p.clone();
    p.id = String::new();
    serde_json::to_string(&p).unwrap_or_else(|_| "{}".into())
}

/// Resolves (or creates) the contact for a token or a signed identity.
pub async fn resolve(
    app: &App,
    token: Option<&str>,
    identity: Option<&Identity>,
    hints: &Hints,
) -> Result<Resolved, ApiError> {
    let now = app.clock.now_ms();
    if let Some(id) = identity {
        let secret = app.config.identity_secret.as_deref().ok_or_else(|| {
            ApiError::new(
                axum::http::StatusCode::UNAUTHORIZED,
                "invalid-identity",
                "this server does not accept signed identities",
            )
        })?;
        // A user id no signature can make valid is the same permanent refusal as a bad
        // signature (`bad-json` would make clients retry it forever).
        if id.user_id.is_empty() || id.user_id.len() > MAX_USER_ID {
            return Err(ApiError::new(
                axum::http::StatusCode::UNAUTHORIZED,
                "invalid-identity",
                format!("identity.user_id must be 1 to {MAX_USER_ID} bytes"),
            ));
        }
        let expected = hmac_hex(secret.as_bytes(), id.user_id.as_bytes());
        if !constant_time_eq(&expected, &id.signature.to_ascii_lowercase()) {
            return Err(ApiError::new(
                axum::http::StatusCode::UNAUTHORIZED,
                "invalid-identity",
                "the identity signature does not match",
            ));
        }
        if let Some(row) = app.store.contact_by_external_id(&id.user_id).await? {
            let mut profile = profile_of(&row);
            if merge(&mut profile, hints, id.profile.as_ref()) {
                app.store
                    .update_contact_profile(&row.id, &profile_json(&profile), now)
                    .await?;
            }
            return Ok(Resolved {
                row,
                profile,
                new_token: None,
            });
        }
        let mut profile = volley_flow::Contact::default();
        merge(&mut profile, hints, id.profile.as_ref());
        return create(app, None, Some(id.user_id.clone()), profile, now).await;
    }
    if let Some(token) = token.filter(|t| !t.is_empty() && t.len() <= 128)
        && let Some(row) = app.store.contact_by_token(&hash_secret(token)).await?
    {
        let mut profile = profile_of(&row);
        if merge(&mut profile, hints, None) {
            app.store
                .update_contact_profile(&row.id, &profile_json(&profile), now)
                .await?;
        }
        return Ok(Resolved {
            row,
            profile,
            new_token: None,
        });
    }
    // No (known) token: a new anonymous contact with a fresh token.
    let mut profile = volley_flow::Contact::default();
    merge(&mut profile, hints, None);
    let token = new_token("vt_");
    let mut r = create(app, Some(hash_secret(&token)), None, profile, now).await?;
    r.new_token = Some(token);
    Ok(r)
}

async fn create(
    app: &App,
    token_hash: Option<String>,
    external_id: Option<String>,
    mut profile: volley_flow::Contact,
    now: i64,
) -> Result<Resolved, ApiError> {
    let id = new_sorted_id("ct", now);
    let json = profile_json(&profile);
    app.store
        .create_contact(NewContact {
            id: id.clone(),
            token_hash,
            external_id: external_id.clone(),
            profile: json.clone(),
            at: now,
        })
        .await?;
    profile.id = id.clone();
    let row = ContactRow {
        id,
        external_id,
        profile: json,
        created_at: now,
        updated_at: now,
    };
    Ok(Resolved {
        row,
        profile,
        new_token: None,
    })
}

/// The bearer token of a request, if any.
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// Makes sure an admin key exists: the configured one, or a new one printed once.
pub async fn bootstrap_admin_key(app: &App) -> Result<Option<String>, ApiError> {
    let now = app.clock.now_ms();
    if let Some(key) = &app.config.admin_key {
        let hash = hash_secret(key);
        if app.store.api_key_by_hash(&hash).await?.is_none() {
            app.store
                .insert_api_key(&new_id("key"), &hash, "configured admin key", "admin", now)
                .await?;
        }
        return Ok(None);
    }
    if app.store.api_key_count().await? > 0 {
        return Ok(None);
    }
    let key = new_token("vk_");
    app.store
        .insert_api_key(
            &new_id("key"),
            &hash_secret(&key),
            "first-start admin key",
            "admin",
            now,
        )
        .await?;
    Ok(Some(key))
}
