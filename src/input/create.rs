//! The fast path of `POST /api/v1/links`: a create body in its common
//! shape, read without building a JSON map, held by a test to the same
//! answers as the full `new_link`.

use std::borrow::Cow;

use super::fields::{plain_limits, url_text, Rules};
use crate::code::validate_alias;
use crate::store::NewLink;

/// A create request in its common shape (`url`, and perhaps `alias`,
/// `max_clicks` and `redirect`), read without building a JSON map; `None`
/// sends it to `new_link`, which decides with its exact error. What this
/// accepts, `new_link` with `Source::Api` accepts the same way.
pub fn plain_create(body: &[u8], rules: &Rules<'_>) -> Option<NewLink> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Create<'a> {
        #[serde(borrow)]
        url: Cow<'a, str>,
        #[serde(borrow, default)]
        alias: Option<Cow<'a, str>>,
        #[serde(default)]
        max_clicks: Option<u64>,
        #[serde(default)]
        redirect: Option<u64>,
    }
    let c: Create<'_> = serde_json::from_slice(body).ok()?;
    if let Some(a) = &c.alias {
        validate_alias(a).ok()?;
    }
    let (max_clicks, redirect) = plain_limits(c.max_clicks, c.redirect)?;
    let url = url_text(rules, &c.url).ok()?.into_owned();
    Some(NewLink { url, alias: c.alias.map(Cow::into_owned), expires_ms: 0, max_clicks, redirect, disabled: false, idempotency: None })
}

#[cfg(test)]
mod tests {
    use serde_json::{Map, Value};

    use super::*;
    use crate::input::fields::tests::rules;
    use crate::input::fields::{new_link, Source};

    #[test]
    fn the_common_create_shape_is_read_as_new_link_reads_it() {
        let now = 1_700_000_000_000;
        let common = [
            r#"{"url":"https://a.example/x"}"#,
            r#"{"url":"https://a.example/x","alias":"my-link","max_clicks":5,"redirect":301}"#,
            r#"{"url":"https:\/\/a.example\/escaped","max_clicks":null}"#,
        ];
        let others = [
            r#"{"url":"https://a.example/","ttl_seconds":60}"#,
            r#"{"url":"https://a.example/","alias":"api"}"#,
            r#"{"url":"https://a.example/","alias":null}"#,
            r#"{"url":"https://evil.example/"}"#,
            r#"{"url":"https://sho.rt/loop"}"#,
            r#"{"url":"https://a.example/","redirect":303}"#,
            r#"{"url":"https://a.example/","max_clicks":0}"#,
            r#"{"url":"https://a.example/","code":"abc1234"}"#,
            r#"{"url":"https://a.example/","disabled":true}"#,
            r#"{"url":7}"#,
            r#"{"url":"https://a.example/","url":"https://b.example/"}"#,
            r#"{"url":"https://a.example/0123456789012345678901234567890123456789012345678901234567890123"}"#,
        ];
        for body in common.iter().chain(&others) {
            let full = serde_json::from_str::<Map<String, Value>>(body)
                .map_err(|_| ())
                .and_then(|o| new_link(&o, &rules(64), now, Source::Api).map_err(|_| ()));
            match plain_create(body.as_bytes(), &rules(64)) {
                Some(fast) => assert_eq!(full.as_ref().ok(), Some(&fast), "{body}"),
                None => assert!(!common.contains(body), "the common shape went the long way: {body}"),
            }
        }
    }
}
