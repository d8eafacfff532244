//! The link rules, as the writer applies them to one command: an alias is
//! claimed only if nobody holds it, a generated code skips codes that are
//! taken or spell a route, an Idempotency-Key replays its first answer, a
//! patch merges field by field, a change from another node wins by version.
//! Each check sees the state plus the changes earlier in the same batch.

use std::sync::atomic::Ordering;

use compact_str::CompactString;

use super::{now_ms, Effect, Writer};
use crate::code::CODE_SPACE;
use crate::journal::record::{self, Body, Put, Record};
use crate::store::types::{
    ApplyMode, Change, Created, Idem, Link, Lookup, NewLink, Patch, Version, WriteError, ALIAS_ID, IDEMPOTENCY_WINDOW_MS,
};

impl Writer {
    pub(super) fn create(&mut self, new: NewLink) -> Result<Created, WriteError> {
        if let Some(e) = self.refusal() {
            return Err(e);
        }
        if let Some((ikey, hash)) = &new.idempotency {
            let earlier = self.pending_idem.get(ikey.as_str()).cloned().or_else(|| {
                let i = self.shared.idem.get(ikey.as_str())?;
                (i.at_ms + IDEMPOTENCY_WINDOW_MS > now_ms()).then(|| (i.code.clone(), i.body_hash))
            });
            if let Some((code, earlier_hash)) = earlier {
                if earlier_hash != *hash {
                    return Err(WriteError::IdempotencyMismatch);
                }
                return match self.state(&code)? {
                    Lookup::Live(mut link) => {
                        link.clicks = self.shared.clicks_of(&code);
                        Ok(Created { link, replayed: true })
                    }
                    Lookup::Deleted => Err(WriteError::Gone),
                    Lookup::Missing | Lookup::Unavailable => Err(WriteError::NotFound),
                };
            }
        }
        let (code, id) = match &new.alias {
            Some(alias) => {
                if !matches!(self.state(alias)?, Lookup::Missing) {
                    return Err(WriteError::Taken);
                }
                (CompactString::from(alias.as_str()), ALIAS_ID)
            }
            None => loop {
                let id = self.next_id;
                if id >= CODE_SPACE {
                    return Err(WriteError::Exhausted);
                }
                self.next_id += 1;
                let code = self.shared.key.encode(id).expect("id is inside the code space");
                let code = CompactString::from_utf8_lossy(&code);
                // A code that spells a route (`healthz`, `metrics`) could never redirect.
                if crate::code::validate_alias(&code).is_ok() && matches!(self.state(&code)?, Lookup::Missing) {
                    break (code, id);
                }
            },
        };
        let link = Link {
            code: code.clone(),
            url: new.url,
            id,
            created_ms: now_ms(),
            expires_ms: new.expires_ms,
            max_clicks: new.max_clicks,
            redirect: new.redirect,
            disabled: new.disabled,
            clicks: 0,
        };
        if let Some((ikey, _)) = &new.idempotency {
            // The link and its idempotency record must land together: make
            // room for both first, so no roll can fail between them.
            let both = record::padded(record::HEADER_LEN + 40 + code.len() + link.url.len())
                + record::padded(record::HEADER_LEN + 10 + ikey.len() + code.len());
            self.log.ensure_room(both as u64)?;
        }
        self.put(&link, Version { ms: link.created_ms, origin: self.opts.origin }, true)?;
        self.effects.push(Effect::LiveLinks(1));
        if let Some((ikey, hash)) = new.idempotency {
            let at = now_ms();
            let rec = Record {
                lsn: 0,
                time_ms: at,
                origin: 0,
                body: Body::Idempotency { key: ikey.as_bytes(), body_hash: hash, code: code.as_bytes() },
            };
            self.append(rec)?;
            let key = CompactString::from(ikey);
            self.pending_idem.insert(key.clone(), (code.clone(), hash));
            self.effects.push(Effect::Idem { key, idem: Idem { code, body_hash: hash, at_ms: at } });
        }
        Ok(Created { link, replayed: false })
    }

    /// The version of a key's newest record, this batch included.
    fn version_of(&self, code: &str) -> Option<Version> {
        if let Some(v) = self.pending_ver.get(code) {
            return Some(*v);
        }
        let loc = self.shared.loc_of(code).ok()??;
        self.shared.version_at(code, loc)
    }

    /// A version for a local change that orders after the key's current one
    /// even if the clock stepped back.
    fn next_version(&self, code: &str) -> Version {
        let now = now_ms();
        Version { ms: self.version_of(code).map_or(now, |v| now.max(v.ms.saturating_add(1))), origin: self.opts.origin }
    }

    /// A change made on another node: `Create` claims a free key, `Newer`
    /// applies it only over an older version (last writer wins). Click
    /// totals only grow. Returns whether the record was written.
    pub(super) fn apply_change(&mut self, change: Change, mode: ApplyMode) -> Result<bool, WriteError> {
        if let Some(e) = self.refusal() {
            return Err(e);
        }
        let before = self.state(&change.code)?;
        let current = self.version_of(&change.code);
        match mode {
            ApplyMode::Create if current.is_some() => {
                // A retried create that already landed here (its answer was
                // lost to a timeout) is the same change, not a conflict.
                let same =
                    current == Some(change.version) && matches!((&before, &change.link), (Lookup::Live(l), Some(c)) if l.url == c.url);
                return if same { Ok(false) } else { Err(WriteError::Taken) };
            }
            ApplyMode::Newer if current.is_some_and(|v| v >= change.version) => {
                self.raise_clicks(&change);
                return Ok(false);
            }
            _ => {}
        }
        let was_live = matches!(before, Lookup::Live(_));
        match &change.link {
            Some(link) => {
                self.put(link, change.version, false)?;
                if !was_live {
                    self.effects.push(Effect::LiveLinks(1));
                }
            }
            None => {
                self.tombstone(&change.code, change.version)?;
                if was_live {
                    self.effects.push(Effect::LiveLinks(-1));
                }
            }
        }
        self.raise_clicks(&change);
        Ok(true)
    }

    fn raise_clicks(&self, change: &Change) {
        let Some(n) = change.link.as_ref().map(|l| l.clicks).filter(|&n| n > 0) else { return };
        let before = self.shared.click_entry(&change.code).fetch_max(n, Ordering::Relaxed);
        if before < n {
            self.shared.dirty_clicks.lock().insert(change.code.clone());
        }
    }

    /// Logs `link`; `new_key` when `state` found no record of its code.
    fn put(&mut self, link: &Link, version: Version, new_key: bool) -> Result<(), WriteError> {
        let flags = if link.disabled { record::FLAG_DISABLED } else { 0 };
        let body = Body::Put(Put {
            key: link.code.as_bytes(),
            url: link.url.as_bytes(),
            id: link.id,
            created_ms: link.created_ms,
            expires_ms: link.expires_ms,
            max_clicks: link.max_clicks,
            redirect: link.redirect,
            flags,
        });
        let (loc, len) = self.append(Record { lsn: 0, time_ms: version.ms, origin: version.origin, body })?;
        self.pending.insert(link.code.clone(), Some(link.clone()));
        self.pending_ver.insert(link.code.clone(), version);
        self.effects.push(Effect::SetLoc { key: link.code.clone(), loc, len, new_key });
        Ok(())
    }

    pub(super) fn update(&mut self, code: CompactString, patch: Patch) -> Result<Link, WriteError> {
        if let Some(e) = self.refusal() {
            return Err(e);
        }
        let mut link = match self.state(&code)? {
            Lookup::Live(link) => link,
            Lookup::Deleted => return Err(WriteError::Gone),
            Lookup::Missing | Lookup::Unavailable => return Err(WriteError::NotFound),
        };
        if patch.is_empty() {
            return Ok(link);
        }
        if let Some(url) = patch.url {
            link.url = url;
        }
        if let Some(e) = patch.expires_ms {
            link.expires_ms = e;
        }
        if let Some(m) = patch.max_clicks {
            link.max_clicks = m;
        }
        if let Some(r) = patch.redirect {
            link.redirect = r;
        }
        if let Some(d) = patch.disabled {
            link.disabled = d;
        }
        self.put(&link, self.next_version(&code), false)?;
        link.clicks = self.shared.clicks_of(&code);
        Ok(link)
    }

    pub(super) fn delete(&mut self, code: CompactString) -> Result<(), WriteError> {
        if let Some(e) = self.refusal() {
            return Err(e);
        }
        match self.state(&code)? {
            Lookup::Missing | Lookup::Unavailable => return Err(WriteError::NotFound),
            Lookup::Deleted => return Ok(()),
            Lookup::Live(_) => {}
        }
        self.tombstone(&code, self.next_version(&code))?;
        self.effects.push(Effect::LiveLinks(-1));
        Ok(())
    }

    fn tombstone(&mut self, code: &CompactString, version: Version) -> Result<(), WriteError> {
        let rec = Record { lsn: 0, time_ms: version.ms, origin: version.origin, body: Body::Delete { key: code.as_bytes() } };
        let (loc, len) = self.append(rec)?;
        self.pending.insert(code.clone(), None);
        self.pending_ver.insert(code.clone(), version);
        self.effects.push(Effect::SetLoc { key: code.clone(), loc, len, new_key: false });
        Ok(())
    }
}
