//! The repository's deterministic event generator: Segment-spec-like analytics events, one JSON
//! object per event, as the tests, the benchmarks, the end-to-end scripts and `demo` feed them to
//! Kafka (`kafka-s3-sink gen-events` prints them as NDJSON).
//!
//! Invariants: the same [`GenOptions`] give byte-identical events on every machine (ChaCha8,
//! whose output the `rand_chacha` crate fixes, seeded from `seed`); every event has a unique
//! `messageId` (a version-4 UUID drawn from the seeded generator) and an RFC 3339 `timestamp` in
//! UTC with milliseconds. Events arrive in time order spread over `days` from `start`; about
//! `late_pct` percent are 1–12 hours older than their place in the stream (they land in an older
//! hour folder); the others are up to 2 s older.
//!
//! Shape (about 300–600 bytes): `type` (track 62 %, page 18 %, screen 9 %, identify 8 %,
//! group 3 %), `messageId`, `userId`, `anonymousId` (stable per user), `timestamp`, then `event`
//! and `properties` (track), `name` and `properties` (page, screen), `traits` (identify, group,
//! with `groupId`), and a `context` with library, ip and locale, plus userAgent and page (web)
//! or device, os and app (mobile), sometimes a campaign.

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use rand::distr::weighted::WeightedIndex;
use rand::distr::Distribution;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::io::Write;

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct GenOptions {
    /// Events.
    pub count: u64,
    /// Seed: the same seed and options give the same bytes.
    pub seed: u64,
    /// Start of the time span (UTC).
    pub start: DateTime<Utc>,
    /// Length of the time span in days (0: every event at `start`, give or take 2 s).
    pub days: f64,
    /// Percent of events 1–12 h older than their place in the stream.
    pub late_pct: f64,
    /// Distinct users (1 or more).
    pub users: u32,
}

impl GenOptions {
    /// `count` events with the defaults: seed 42, three days from 2026-11-01T00:00:00Z, 2 % late,
    /// 50,000 users.
    pub fn new(count: u64) -> Self {
        Self {
            count,
            seed: 42,
            start: Utc
                .with_ymd_and_hms(2026, 11, 1, 0, 0, 0)
                .single()
                .expect("invariant: a valid fixed date"),
            days: 3.0,
            late_pct: 2.0,
            users: 50_000,
        }
    }

    /// Checks the ranges; the message names the option and its valid range.
    pub fn validate(&self) -> Result<(), GenError> {
        if !(self.days.is_finite() && (0.0..=36_500.0).contains(&self.days)) {
            return Err(GenError::Option("days", "0 to 36500"));
        }
        if !(self.late_pct.is_finite() && (0.0..=100.0).contains(&self.late_pct)) {
            return Err(GenError::Option("late-pct", "0 to 100"));
        }
        if self.users == 0 {
            return Err(GenError::Option("users", "1 or more"));
        }
        Ok(())
    }
}

/// Why generation failed.
#[derive(Debug, thiserror::Error)]
pub enum GenError {
    /// An option is out of range.
    #[error("--{0} must be {1}")]
    Option(&'static str, &'static str),
    /// Writing the output.
    #[error("writing events: {0}")]
    Io(#[from] std::io::Error),
}

/// One generated event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The JSON object, no trailing newline.
    pub value: Vec<u8>,
    /// `userId`, a natural Kafka key.
    pub user_id: String,
    /// When the event reached the stream (its place in the time span), in ms since the epoch:
    /// a natural Kafka timestamp. `timestamp` in the value is at most this.
    pub arrival_ms: i64,
}

const TYPES: [(&str, u32); 5] = [
    ("track", 62),
    ("page", 18),
    ("screen", 9),
    ("identify", 8),
    ("group", 3),
];
const EVENTS: [(&str, u32); 16] = [
    ("Product Viewed", 18),
    ("Product Clicked", 10),
    ("Product Added", 7),
    ("Cart Viewed", 6),
    ("Checkout Started", 4),
    ("Order Completed", 3),
    ("Products Searched", 8),
    ("Signed In", 5),
    ("Signed Out", 2),
    ("Video Playback Started", 4),
    ("Video Playback Completed", 2),
    ("Email Link Clicked", 3),
    ("Promotion Viewed", 5),
    ("Coupon Applied", 1),
    ("Experiment Viewed", 4),
    ("Application Opened", 6),
];
const PAGES: [(&str, &str); 10] = [
    ("/", "Home"),
    ("/pricing", "Pricing"),
    ("/docs/getting-started", "Getting Started"),
    ("/blog/2026/11/release-notes", "Release Notes"),
    ("/products/widget-pro", "Widget Pro"),
    ("/cart", "Cart"),
    ("/checkout", "Checkout"),
    ("/account/settings", "Settings"),
    ("/search", "Search"),
    ("/integrations/s3", "S3 Integration"),
];
const SCREENS: [&str; 8] = [
    "Home",
    "Feed",
    "Product Detail",
    "Cart",
    "Checkout",
    "Profile",
    "Settings",
    "Search",
];
const CATEGORIES: [&str; 7] = [
    "Games",
    "Electronics",
    "Books",
    "Apparel",
    "Home & Garden",
    "Toys",
    "Sports",
];
const REFERRERS: [&str; 7] = [
    "https://www.google.com/",
    "https://news.ycombinator.com/",
    "https://t.co/",
    "https://www.bing.com/",
    "",
    "https://duckduckgo.com/",
    "https://www.reddit.com/",
];
const USER_AGENTS: [&str; 6] = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
    "Mozilla/5.0 (Linux; Android 14) Chrome/131.0.6778.81 Mobile",
    "Shop/7.3.0 CFNetwork/1568.100.1 Darwin/24.0.0",
];
const LOCALES: [&str; 7] = [
    "en-US", "en-GB", "de-DE", "fr-FR", "es-ES", "ja-JP", "pt-BR",
];
const PLANS: [&str; 4] = ["free", "starter", "team", "enterprise"];
const DEVICES: [(&str, &str, &str, &str); 4] = [
    ("iPhone15,2", "Apple", "iOS", "18.1"),
    ("Pixel 8", "Google", "Android", "15"),
    ("SM-S918B", "samsung", "Android", "14"),
    ("iPad13,4", "Apple", "iPadOS", "18.0"),
];
const SEARCHES: [&str; 5] = [
    "usb c cable",
    "gift ideas",
    "s3 etl",
    "running shoes",
    "lamp",
];

/// The generator: an iterator over [`Event`]s.
pub struct EventGen {
    rng: ChaCha8Rng,
    next: u64,
    count: u64,
    start_ms: f64,
    span_ms: f64,
    late_p: f64,
    users: u32,
    types: WeightedIndex<u32>,
    events: WeightedIndex<u32>,
    anonymous: HashMap<u32, String>,
}

impl EventGen {
    /// A generator of `opts.count` events (call [`GenOptions::validate`] first for user input;
    /// out-of-range values are clamped here).
    pub fn new(opts: &GenOptions) -> Self {
        let weights = |t: &[(&str, u32)]| {
            WeightedIndex::new(t.iter().map(|(_, w)| *w))
                .expect("invariant: fixed positive weights")
        };
        Self {
            rng: ChaCha8Rng::seed_from_u64(opts.seed),
            next: 0,
            count: opts.count,
            start_ms: opts.start.timestamp_millis() as f64,
            span_ms: opts.days.clamp(0.0, 36_500.0) * 86_400_000.0,
            late_p: opts.late_pct.clamp(0.0, 100.0) / 100.0,
            users: opts.users.max(1),
            types: weights(&TYPES),
            events: weights(&EVENTS),
            anonymous: HashMap::new(),
        }
    }

    fn uuid4(&mut self) -> String {
        uuid::Builder::from_random_bytes(self.rng.random())
            .into_uuid()
            .to_string()
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.rng.random_range(0..items.len())]
    }

    /// Cents rounded to 2 decimals, as a JSON number.
    fn money(&mut self) -> f64 {
        (self.rng.random::<f64>() * 20_000.0 + 100.0).round() / 100.0
    }

    fn event(&mut self, i: u64) -> Event {
        let arrival = self.start_ms
            + self.span_ms * (i as f64 + self.rng.random::<f64>()) / self.count.max(1) as f64;
        let lag_ms = if self.rng.random::<f64>() < self.late_p {
            3_600_000.0 * (1.0 + 11.0 * self.rng.random::<f64>())
        } else {
            2_000.0 * self.rng.random::<f64>()
        };
        let u = self.rng.random_range(1..=self.users);
        let user_id = format!("user_{u:07}");
        let anonymous_id = match self.anonymous.get(&u) {
            Some(a) => a.clone(),
            None => {
                let a = self.uuid4();
                self.anonymous.insert(u, a.clone());
                a
            }
        };
        let typ = TYPES[self.types.sample(&mut self.rng)].0;
        let context = self.context(i, u, typ != "screen");
        let mut ev = Map::new();
        ev.insert("type".into(), typ.into());
        ev.insert("messageId".into(), self.uuid4().into());
        ev.insert("userId".into(), user_id.clone().into());
        ev.insert("anonymousId".into(), anonymous_id.into());
        ev.insert("timestamp".into(), iso_ms((arrival - lag_ms) as i64).into());
        match typ {
            "track" => {
                let name = EVENTS[self.events.sample(&mut self.rng)].0;
                ev.insert("event".into(), name.into());
                ev.insert("properties".into(), self.track_properties(name));
            }
            "page" => {
                let (path, title) = PAGES[self.rng.random_range(0..PAGES.len())];
                ev.insert("name".into(), title.into());
                ev.insert(
                    "properties".into(),
                    json!({"title": title, "url": format!("https://shop.example.com{path}")}),
                );
            }
            "screen" => {
                let name = self.pick(&SCREENS);
                ev.insert("name".into(), name.into());
                let variation = self.pick(&["a", "b"]);
                let load_ms = self.rng.random_range(40..=900u32);
                ev.insert(
                    "properties".into(),
                    json!({"variation": variation, "load_ms": load_ms}),
                );
            }
            "identify" => {
                let created = self.start_ms as i64 - 86_400_000 * i64::from(u % 700);
                let logins = self.rng.random_range(1..=500u32);
                ev.insert(
                    "traits".into(),
                    json!({"email": format!("user{u:07}@example.com"), "plan": PLANS[(u % 4) as usize],
                           "createdAt": iso_ms(created), "logins": logins}),
                );
            }
            _ => {
                ev.insert("groupId".into(), format!("grp_{:05}", u % 3000).into());
                let industry = self.pick(&CATEGORIES);
                let employees = self.rng.random_range(1..=5000u32);
                ev.insert(
                    "traits".into(),
                    json!({"name": format!("Acme {}", u % 3000), "industry": industry,
                           "employees": employees, "plan": PLANS[(u % 4) as usize]}),
                );
            }
        }
        ev.insert("context".into(), context);
        Event {
            value: serde_json::to_vec(&Value::Object(ev)).expect("invariant: a JSON value"),
            user_id,
            arrival_ms: arrival as i64,
        }
    }

    fn context(&mut self, i: u64, u: u32, web: bool) -> Value {
        let mut ctx = Map::new();
        let library = if web { "analytics.js" } else { "analytics-ios" };
        ctx.insert(
            "library".into(),
            json!({"name": library, "version": format!("5.2.{}", u % 7)}),
        );
        ctx.insert(
            "ip".into(),
            format!(
                "{}.{}.{}.{}",
                10 + u % 200,
                (u >> 3) % 256,
                (u >> 7) % 256,
                u % 251 + 1
            )
            .into(),
        );
        ctx.insert("locale".into(), LOCALES[u as usize % LOCALES.len()].into());
        if web {
            let (path, _) = PAGES[self.rng.random_range(0..PAGES.len())];
            ctx.insert(
                "userAgent".into(),
                USER_AGENTS[u as usize % USER_AGENTS.len()].into(),
            );
            let referrer = self.pick(&REFERRERS);
            let page = if referrer.is_empty() {
                json!({"path": path})
            } else {
                json!({"path": path, "referrer": referrer})
            };
            ctx.insert("page".into(), page);
        } else {
            let (model, maker, os, version) = DEVICES[u as usize % DEVICES.len()];
            ctx.insert(
                "device".into(),
                json!({"model": model, "manufacturer": maker, "type": os.to_lowercase()}),
            );
            ctx.insert("os".into(), json!({"name": os, "version": version}));
            ctx.insert(
                "app".into(),
                json!({"name": "Shop", "version": format!("7.{}.0", u % 12),
                       "build": (7000 + u % 300).to_string()}),
            );
        }
        // Every fifth event of a cycle may carry one of two campaigns, 30 % of those do.
        let campaign = match i % 5 {
            3 => Some(json!({"name": "black-friday", "source": "newsletter", "medium": "email"})),
            4 => Some(
                json!({"name": "brand", "source": "google", "medium": "cpc", "term": "etl tool"}),
            ),
            _ => None,
        };
        if let Some(c) = campaign {
            if self.rng.random::<f64>() < 0.3 {
                ctx.insert("campaign".into(), c);
            }
        }
        Value::Object(ctx)
    }

    fn track_properties(&mut self, name: &str) -> Value {
        match name {
            "Products Searched" => json!({"query": self.pick(&SEARCHES)}),
            n if n.starts_with("Video") => {
                let session = self.rng.random_range(1..=999_999u32);
                let position = self.rng.random_range(0..=3600u32);
                let sound = self.rng.random_range(0..=100u32);
                let full_screen = self.rng.random::<f64>() < 0.2;
                json!({"session_id": format!("vs-{session:06}"), "position": position,
                       "total_length": 3600, "sound": sound, "full_screen": full_screen})
            }
            _ => {
                let sku = self.rng.random_range(1..=20_000u32);
                let category = self.pick(&CATEGORIES);
                let price = self.money();
                let quantity = self.rng.random_range(1..=4u32);
                let mut p = json!({"product_id": format!("sku-{sku:05}"), "category": category,
                                   "price": price, "currency": "USD", "quantity": quantity});
                if name == "Order Completed" {
                    let order = self.rng.random_range(1..=99_999_999u32);
                    p["order_id"] = format!("ord-{order:08}").into();
                    p["revenue"] = ((price * f64::from(quantity) * 100.0).round() / 100.0).into();
                }
                p
            }
        }
    }
}

impl Iterator for EventGen {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        if self.next >= self.count {
            return None;
        }
        let i = self.next;
        self.next += 1;
        Some(self.event(i))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = usize::try_from(self.count - self.next).unwrap_or(usize::MAX);
        (left, Some(left))
    }
}

/// `2026-11-01T00:00:01.234Z`.
fn iso_ms(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Every event's value (the JSON object, no newline), in stream order.
pub fn generate(opts: &GenOptions) -> Vec<Vec<u8>> {
    EventGen::new(opts).map(|e| e.value).collect()
}

/// Writes the events as NDJSON (one object and `\n` per event); returns the bytes written.
pub fn write_ndjson(opts: &GenOptions, out: &mut impl Write) -> Result<u64, GenError> {
    opts.validate()?;
    let mut written = 0u64;
    for e in EventGen::new(opts) {
        out.write_all(&e.value)?;
        out.write_all(b"\n")?;
        written += e.value.len() as u64 + 1;
    }
    out.flush()?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_options_same_bytes() {
        let opts = GenOptions::new(500);
        assert_eq!(generate(&opts), generate(&opts));
        let mut other = opts.clone();
        other.seed = 7;
        assert_ne!(generate(&opts), generate(&other));
    }

    /// Pins the output: a change to the generator (or to the ChaCha8 stream under it) changes
    /// every test's and benchmark's input, so it must be deliberate.
    #[test]
    fn output_is_pinned() {
        let all = generate(&GenOptions::new(10_000));
        let bytes: usize = all.iter().map(|v| v.len() + 1).sum();
        let hash = xxhash_rust::xxh3::xxh3_64(&all.concat());
        assert_eq!(
            (bytes, hash),
            (5_723_608, 13_940_576_613_026_022_486),
            "{}",
            String::from_utf8_lossy(&all[0])
        );
    }

    #[test]
    fn events_have_the_shape_and_the_spread() {
        let opts = GenOptions::new(20_000);
        let events: Vec<Event> = EventGen::new(&opts).collect();
        let mut ids = std::collections::HashSet::new();
        let mut late = 0;
        let mut types: HashMap<String, usize> = HashMap::new();
        let mut prev_arrival = 0;
        for e in &events {
            let v: Value = serde_json::from_slice(&e.value).expect("JSON");
            assert!(ids.insert(v["messageId"].as_str().expect("id").to_owned()));
            assert_eq!(v["userId"].as_str(), Some(e.user_id.as_str()));
            let ts = DateTime::parse_from_rfc3339(v["timestamp"].as_str().expect("ts"))
                .expect("RFC 3339")
                .timestamp_millis();
            assert!(ts <= e.arrival_ms, "an event is never from the future");
            if e.arrival_ms - ts >= 3_600_000 {
                late += 1;
            }
            assert!(e.arrival_ms >= prev_arrival, "stream order");
            prev_arrival = e.arrival_ms;
            assert!(v["context"]["library"]["name"].is_string());
            *types
                .entry(v["type"].as_str().expect("type").into())
                .or_default() += 1;
            assert!((150..1_000).contains(&e.value.len()), "{}", e.value.len());
        }
        // 2 % late, give or take; every type appears in about its share.
        assert!((300..500).contains(&late), "{late} late");
        assert!((11_800..13_000).contains(&types["track"]), "{types:?}");
        assert!(types["group"] > 400, "{types:?}");
        let first = opts.start.timestamp_millis();
        let span = 3 * 86_400_000;
        assert!(events[0].arrival_ms - first < 60_000);
        assert!(first + span - events.last().expect("events").arrival_ms < 60_000);
    }

    #[test]
    fn options_out_of_range_name_the_option() {
        let mut o = GenOptions::new(1);
        o.late_pct = 101.0;
        assert_eq!(
            o.validate().unwrap_err().to_string(),
            "--late-pct must be 0 to 100"
        );
        let mut o = GenOptions::new(1);
        o.days = f64::NAN;
        assert!(o.validate().unwrap_err().to_string().contains("--days"));
        let mut o = GenOptions::new(1);
        o.users = 0;
        assert!(o.validate().is_err());
    }

    #[test]
    fn ndjson_is_one_line_per_event() {
        let mut out = Vec::new();
        let n = write_ndjson(&GenOptions::new(50), &mut out).expect("written");
        assert_eq!(n as usize, out.len());
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 50);
    }
}
