//! Click stats and QR codes: `GET /api/v1/links/{code}/stats`,
//! `GET /api/v1/stats` (every link, plus the top links) and
//! `GET /api/v1/links/{code}/qr`, and the hot keys (`GET /api/v1/stats/hot`).
//!
//! Stats read the hourly rollups (`analytics::rollup`) of this node; each
//! breakdown is sorted by clicks, highest first, and counts human clicks
//! only, as does the series. Bots appear in `bots` alone.

use std::collections::HashMap;

use bytes::Bytes;
use compact_str::CompactString;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::{json, Value};

use super::json::json;
use super::problem::{Body, Problem};
use super::App;
use crate::analytics::rollup::{hour_of, Hour, DIMS, DIM_NAMES, MS_PER_HOUR};
use crate::analytics::{qr as draw, rollup};
use crate::clock::rfc3339;
use crate::store::Lookup;

/// Most points a series may have.
const MAX_POINTS: i64 = 10_000;
const DEFAULT_SPAN_MS: i64 = 24 * MS_PER_HOUR;
const DEFAULT_TOP_LINKS: usize = 10;
const MAX_TOP_LINKS: usize = 1000;
const QR_CACHE: HeaderValue = HeaderValue::from_static("private, max-age=86400");

#[derive(Clone, Copy, PartialEq, Eq)]
enum Interval {
    Hour,
    Day,
}

impl Interval {
    fn ms(self) -> i64 {
        match self {
            Interval::Hour => MS_PER_HOUR,
            Interval::Day => 24 * MS_PER_HOUR,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Interval::Hour => "hour",
            Interval::Day => "day",
        }
    }
}

/// A query's time range, aligned to its interval: `[from, to)`.
struct Range {
    from_ms: i64,
    to_ms: i64,
    interval: Interval,
    limit: usize,
}

fn parse_time(field: &str, v: &str) -> Result<i64, Problem> {
    let t = time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339)
        .map_err(|_| Problem::invalid(field, "must be an RFC 3339 time such as 2026-01-31T00:00:00Z"))?;
    Ok((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

fn parse_range(query: Option<&str>, all_links: bool) -> Result<Range, Problem> {
    let (mut from, mut to, mut interval, mut limit) = (None, None, Interval::Hour, DEFAULT_TOP_LINKS);
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "from" => from = Some(parse_time("from", &v)?),
            "to" => to = Some(parse_time("to", &v)?),
            "interval" => {
                interval = match v.as_ref() {
                    "hour" => Interval::Hour,
                    "day" => Interval::Day,
                    _ => return Err(Problem::invalid("interval", "must be hour or day")),
                }
            }
            "limit" if all_links => {
                limit = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_TOP_LINKS).contains(n))
                    .ok_or_else(|| Problem::invalid("limit", format!("must be an integer from 1 to {MAX_TOP_LINKS}")))?
            }
            _ => {}
        }
    }
    let step = interval.ms();
    // `to` is exclusive and rounded up to a whole interval, so the interval
    // holding the given time is in.
    let to_ms = to.unwrap_or_else(crate::clock::now_ms);
    let from_ms = from.unwrap_or(to_ms - DEFAULT_SPAN_MS);
    if to_ms <= from_ms {
        return Err(Problem::invalid("to", "must be later than from"));
    }
    let (from_ms, to_ms) = (from_ms.div_euclid(step) * step, (to_ms + step - 1).div_euclid(step) * step);
    if (to_ms - from_ms) / step > MAX_POINTS {
        return Err(Problem::invalid(
            "from",
            format!("the range holds more than {MAX_POINTS} {}s; narrow it or use a longer interval", interval.name()),
        ));
    }
    Ok(Range { from_ms, to_ms, interval, limit })
}

/// The rollups of a range, folded into what the answer shows.
struct Summary {
    clicks: u64,
    bots: u64,
    series: Vec<(u64, u64)>,
    dims: [HashMap<CompactString, u64>; DIMS],
    links: HashMap<CompactString, (u64, u64)>,
}

impl Summary {
    fn of(app: &App, code: Option<&str>, r: &Range) -> Summary {
        let points = ((r.to_ms - r.from_ms) / r.interval.ms()) as usize;
        let mut s = Summary { clicks: 0, bots: 0, series: vec![(0, 0); points], dims: Default::default(), links: HashMap::new() };
        let (from, to) = (hour_of(r.from_ms), hour_of(r.to_ms));
        app.store.rollups().each(code, from, to, |code, hour, h: &Hour| {
            let (c, b) = (h.clicks as u64, h.bots as u64);
            s.clicks += c;
            s.bots += b;
            let i = ((hour as i64 * MS_PER_HOUR - r.from_ms) / r.interval.ms()) as usize;
            if let Some(p) = s.series.get_mut(i) {
                p.0 += c;
                p.1 += b;
            }
            for (d, vals) in h.values.iter().enumerate() {
                for (v, n) in vals {
                    *s.dims[d].entry(v.clone()).or_default() += *n as u64;
                }
            }
            let l = s.links.entry(code.into()).or_default();
            l.0 += c;
            l.1 += b;
        });
        s
    }

    fn to_json(&self, r: &Range, code: Option<&str>) -> Value {
        let series: Vec<Value> = self
            .series
            .iter()
            .enumerate()
            .map(|(i, (c, b))| json!({"t": rfc3339(r.from_ms + i as i64 * r.interval.ms()), "clicks": c, "bots": b}))
            .collect();
        let mut out = json!({
            "from": rfc3339(r.from_ms),
            "to": rfc3339(r.to_ms),
            "interval": r.interval.name(),
            "clicks": self.clicks,
            "bots": self.bots,
            "series": series,
        });
        for (d, name) in DIM_NAMES.iter().enumerate() {
            out[*name] = Value::Array(sorted(&self.dims[d]).into_iter().map(|(v, n)| json!({"value": v.as_str(), "clicks": n})).collect());
        }
        match code {
            Some(c) => out["code"] = c.into(),
            None => {
                let mut top: Vec<_> = self.links.iter().collect();
                top.sort_by(|a, b| b.1 .0.cmp(&a.1 .0).then_with(|| b.1 .1.cmp(&a.1 .1)).then_with(|| a.0.cmp(b.0)));
                top.truncate(r.limit);
                out["links"] = top.into_iter().map(|(c, (n, b))| json!({"code": c.as_str(), "clicks": n, "bots": b})).collect();
            }
        }
        out
    }
}

/// Highest count first; ties by value, so answers are stable.
fn sorted(counts: &HashMap<CompactString, u64>) -> Vec<(&CompactString, u64)> {
    let mut v: Vec<_> = counts.iter().filter(|(_, n)| **n > 0).map(|(k, n)| (k, *n)).collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| (a.0 == rollup::OTHER).cmp(&(b.0 == rollup::OTHER))).then_with(|| a.0.cmp(b.0)));
    v
}

/// The link, or the problem that says why there is none.
async fn existing(app: &App, code: &str) -> Result<crate::store::Link, Problem> {
    match app.links.get(code).await? {
        Lookup::Live(link) => Ok(link),
        Lookup::Deleted => Err(Problem::gone(code)),
        Lookup::Missing => Err(Problem::not_found(&format!("link {code}"))),
        Lookup::Unavailable => {
            Err(crate::store::WriteError::Unavailable("the index is being rebuilt after damage; retry shortly".into()).into())
        }
    }
}

pub async fn link(app: &App, code: &str, query: Option<&str>) -> Result<Response<Body>, Problem> {
    let range = parse_range(query, false)?;
    existing(app, code).await?;
    Ok(json(StatusCode::OK, &Summary::of(app, Some(code), &range).to_json(&range, Some(code))))
}

pub fn all(app: &App, query: Option<&str>) -> Result<Response<Body>, Problem> {
    let range = parse_range(query, true)?;
    Ok(json(StatusCode::OK, &Summary::of(app, None, &range).to_json(&range, None)))
}

pub async fn qr(app: &App, code: &str, req: &Request<Incoming>) -> Result<Response<Body>, Problem> {
    let (mut png, mut size) = (true, draw::DEFAULT_SIZE);
    for (k, v) in url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "format" => {
                png = match v.as_ref() {
                    "png" => true,
                    "svg" => false,
                    _ => return Err(Problem::invalid("format", "must be png or svg")),
                }
            }
            "size" => {
                size = v.parse().ok().filter(|n| (draw::MIN_SIZE..=draw::MAX_SIZE).contains(n)).ok_or_else(|| {
                    Problem::invalid("size", format!("must be an integer from {} to {} (pixels)", draw::MIN_SIZE, draw::MAX_SIZE))
                })?
            }
            _ => {}
        }
    }
    existing(app, code).await?;
    let short_url = format!("{}{}", app.public_base, code);
    let tag = xxhash_rust::xxh3::xxh3_64(format!("{png} {size} {short_url}").as_bytes());
    let etag = HeaderValue::from_str(&format!("\"{tag:016x}\"")).map_err(|_| Problem::invalid("code", "cannot be drawn"))?;
    let fresh = req.headers().get_all(header::IF_NONE_MATCH).iter().any(|v| {
        v.to_str().is_ok_and(|s| s.split(',').any(|t| t.trim() == "*" || t.trim().trim_start_matches("W/") == etag.to_str().unwrap_or("")))
    });
    let mut resp = if fresh {
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        let (body, kind) = if png {
            (draw::png(&short_url, size).map(Bytes::from), "image/png")
        } else {
            (draw::svg(&short_url, size).map(Bytes::from), "image/svg+xml")
        };
        let body = body.map_err(|e| Problem::invalid("code", format!("its short URL does not fit in a QR code: {e}")))?;
        let mut r = Response::new(Full::new(body));
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
        r
    };
    let h = resp.headers_mut();
    h.insert(header::ETAG, etag);
    h.insert(header::CACHE_CONTROL, QR_CACHE);
    h.insert(header::VARY, HeaderValue::from_static("Authorization"));
    Ok(resp)
}

/// The heavy hitters of the last window (`/api/v1/stats/hot`).
pub(super) fn hot(app: &App, req: &Request<Incoming>) -> Result<Response<Body>, Problem> {
    let mut limit = 10;
    for (k, v) in url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()) {
        if k == "limit" {
            limit = v
                .parse()
                .ok()
                .filter(|n| (1..=100).contains(n))
                .ok_or_else(|| Problem::invalid("limit", "must be an integer from 1 to 100"))?;
        }
    }
    let window = app.hot.window();
    let top: Vec<_> = app
        .hot
        .top(limit)
        .into_iter()
        .map(|(code, count)| serde_json::json!({"code": code.as_str(), "requests": count, "per_second": count as f64 / window.as_secs_f64()}))
        .collect();
    Ok(json(StatusCode::OK, &serde_json::json!({"window_seconds": window.as_secs(), "codes": top})))
}
