//! What nodes send each other: records as JSON, with their versions.

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

use crate::store::{Link, Stored, Version};

/// A key's newest record: a link, or a tombstone (`deleted`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WireRecord {
    pub code: String,
    #[serde(default)]
    pub deleted: bool,
    #[serde(default)]
    pub url: String,
    #[serde(default)]
    pub id: u64,
    #[serde(default)]
    pub created_ms: i64,
    #[serde(default)]
    pub expires_ms: i64,
    #[serde(default)]
    pub max_clicks: u64,
    #[serde(default)]
    pub redirect: u16,
    #[serde(default)]
    pub disabled: bool,
    #[serde(default)]
    pub clicks: u64,
    pub version_ms: i64,
    pub origin: u32,
}

impl From<&Stored> for WireRecord {
    fn from(s: &Stored) -> WireRecord {
        let (deleted, l) = match &s.link {
            Some(l) => (false, l.clone()),
            None => (
                true,
                Link {
                    code: s.code.clone(),
                    url: String::new(),
                    id: 0,
                    created_ms: 0,
                    expires_ms: 0,
                    max_clicks: 0,
                    redirect: 0,
                    disabled: false,
                    clicks: 0,
                },
            ),
        };
        WireRecord {
            code: s.code.to_string(),
            deleted,
            url: l.url,
            id: l.id,
            created_ms: l.created_ms,
            expires_ms: l.expires_ms,
            max_clicks: l.max_clicks,
            redirect: l.redirect,
            disabled: l.disabled,
            clicks: l.clicks,
            version_ms: s.version.ms,
            origin: s.version.origin,
        }
    }
}

impl WireRecord {
    /// The record as the store takes it, or `None` if it could not have
    /// come from a shortd node (bad code, status or URL).
    pub fn into_stored(self) -> Option<Stored> {
        let code = CompactString::from(self.code.as_str());
        if crate::code::validate_alias(&code).is_err() {
            return None;
        }
        let version = Version { ms: self.version_ms, origin: self.origin };
        if self.deleted {
            return Some(Stored { code, link: None, version });
        }
        if !crate::store::REDIRECT_STATUSES.contains(&self.redirect)
            || self.url.is_empty()
            || self.url.bytes().any(|b| b < 0x20 || b == 0x7f)
        {
            return None;
        }
        let link = Link {
            code: code.clone(),
            url: self.url,
            id: self.id,
            created_ms: self.created_ms,
            expires_ms: self.expires_ms,
            max_clicks: self.max_clicks,
            redirect: self.redirect,
            disabled: self.disabled,
            clicks: self.clicks,
        };
        Some(Stored { code, link: Some(link), version })
    }
}
