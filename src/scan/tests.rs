use super::*;

fn p(s: &str) -> Vec<String> {
    s.split('.').map(str::to_string).collect()
}

fn scan<'a>(doc: &'a str, paths: &[Vec<String>]) -> Result<Vec<Option<Scalar<'a>>>, ScanError> {
    let mut out = vec![None; paths.len()];
    scan_fields_into(doc, paths, &mut out)?;
    Ok(out)
}

#[test]
fn finds_top_level_and_nested_fields() {
    let doc = r#"{"type":"track","context":{"sent_at":"2026-11-01T00:00:00Z","n":1},"timestamp":1700000000}"#;
    let got = scan(
        doc,
        &[p("timestamp"), p("context.sent_at"), p("type"), p("nope.x")],
    )
    .unwrap();
    assert_eq!(got[0], Some(Scalar::Int(1_700_000_000)));
    assert_eq!(got[1], Some(Scalar::Str("2026-11-01T00:00:00Z".into())));
    assert!(matches!(got[1], Some(Scalar::Str(Cow::Borrowed(_)))));
    assert_eq!(got[2], Some(Scalar::Str("track".into())));
    assert_eq!(got[3], None);
}

#[test]
fn a_path_and_longer_paths_through_it_are_all_found() {
    let doc = r#"{"properties":{"position":12,"sound":{"on":true}},"t":"x"}"#;
    let paths = [
        p("properties"),
        p("properties.position"),
        p("t"),
        p("t"),
        p("properties.sound"),
    ];
    let mut out = vec![None; paths.len()];
    let mut spans = vec![None; paths.len()];
    scan_fields_with_spans(doc, &paths, &mut out, &mut spans).unwrap();
    assert_eq!(out[0], Some(Scalar::Other));
    assert_eq!(out[1], Some(Scalar::Int(12)));
    assert_eq!(out[2], Some(Scalar::Str("x".into())));
    assert_eq!(out[3], out[2], "equal paths each get the value");
    let text = |i: usize| &doc[spans[i].clone().unwrap()];
    assert_eq!(
        text(0),
        r#"{"position":12,"sound":{"on":true}}"#,
        "the whole object's text"
    );
    assert_eq!(text(1), "12");
    assert_eq!(text(4), r#"{"on":true}"#);
}

#[test]
fn escaped_keys_and_values_match() {
    let doc = r#"{"ty\u0070e":"a\"b","x":[1,{"y":2}]}"#;
    let got = scan(doc, &[p("type")]).unwrap();
    assert_eq!(got[0], Some(Scalar::Str("a\"b".into())));
}

#[test]
fn non_scalars_are_other() {
    let got = scan(
        r#"{"t":{"a":1},"u":null,"v":[1]}"#,
        &[p("t"), p("u"), p("v")],
    )
    .unwrap();
    assert_eq!(got, vec![Some(Scalar::Other); 3]);
}

#[test]
fn numbers_read_as_serde_json_reads_them() {
    let got = scan(
        r#"{"a":-0,"b":1.5e3,"c":18446744073709551615,"d":-9223372036854775808}"#,
        &[p("a"), p("b"), p("c"), p("d")],
    )
    .unwrap();
    assert_eq!(
        got[0],
        Some(Scalar::Float(-0.0)),
        "serde_json reads -0 as a float"
    );
    assert_eq!(got[1], Some(Scalar::Float(1500.0)));
    assert_eq!(got[2], Some(Scalar::Float(18446744073709551615.0)));
    assert_eq!(got[3], Some(Scalar::Int(i64::MIN)));
}

#[test]
fn rejects_bad_json_and_non_objects() {
    for bad in [
        "{\"a\":",
        "{} x",
        "{\"a\":1,}",
        "[1,]",
        "{\"a\":01}",
        "{\"a\":1.}",
        "{\"a\":.5}",
        "{\"a\":+1}",
        "{\"a\":1e}",
        "{\"a\":-}",
        "{\"a\":tru}",
        "{\"a\":\"\\x\"}",
        "{\"a\":\"\\u12g4\"}",
        "{\"a\":\"tab\there\"}",
        "{\"a\" 1}",
        "{a:1}",
        "{\"a\":1 \"b\":2}",
        "",
        "   ",
    ] {
        assert!(
            matches!(scan(bad, &[]), Err(ScanError::Json { .. })),
            "{bad:?}"
        );
    }
    for not_object in ["[1,2]", "\"s\"", " 3 ", "null"] {
        assert!(
            matches!(scan(not_object, &[]), Err(ScanError::NotObject)),
            "{not_object:?}"
        );
    }
    let deep = format!("{{\"a\":{}{}}}", "[".repeat(200), "]".repeat(200));
    assert!(matches!(scan(&deep, &[]), Err(ScanError::TooDeep)));
    // 64 levels pass, 65 do not; brackets inside strings do not count.
    let nest = |n: usize| format!("{}{}", "{\"a\":".repeat(n) + "1", "}".repeat(n));
    assert!(scan(&nest(MAX_DEPTH), &[]).is_ok());
    assert!(matches!(
        scan(&nest(MAX_DEPTH + 1), &[]),
        Err(ScanError::TooDeep)
    ));
    let ok = format!(
        "{{\"a\":{}{}, \"s\":\"[[[[\\\"{}\"}}",
        "[".repeat(60),
        "]".repeat(60),
        "[".repeat(100)
    );
    assert!(scan(&ok, &[]).is_ok(), "{ok}");
}

#[test]
fn line_breaks_are_seen_only_between_tokens() {
    let shape = |doc: &str| scan_fields_into(doc, &[], &mut []).unwrap();
    assert!(!shape(r#"{"a":"x\ny\r"}"#).line_breaks, "escaped, not raw");
    assert!(shape("{\"a\":1,\n\"b\":2}").line_breaks);
    assert!(shape("{\"a\":1}\r").line_breaks);
    assert!(!shape("{ \"a\" :\t1 }").line_breaks);
}

/// Documents like the ones the connector reads, with every kind of token in them.
const SEEDS: &[&str] = &[
    r#"{"type":"track","event":"Order Completed","messageId":"m-1","timestamp":"2026-11-01T07:30:00.123Z","context":{"sent_at":"2026-11-01T07:30:01Z","ip":"10.0.0.1","library":{"name":"analytics.js","version":"4.1.0"},"screen":[1920,1080]},"properties":{"revenue":-12.5e-1,"items":[{"sku":"A\"1","qty":2},{"sku":"B\\2","qty":0}],"note":"caf\u00e9 ✓ \ud83d\ude00","ok":true,"none":null}}"#,
    "{\r\n  \"timestamp\": 1761980400123,\n  \"type\": \"identify\",\n  \"traits\": {\"a\": [ ], \"b\": { }, \"c\": \"\\/\\b\\f\\n\\r\\t\"}\n}\n",
    r#"{"ty\u0070e":"page","context":{"sent_at":17619804e2},"timestamp":"x","properties":{"n":0.0}}"#,
    r#"{"a":[[[[[[[[[[{"b":[{"c":{}}]}]]]]]]]]]],"type":"t","timestamp":-0}"#,
];

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(doc: &str, rng: &mut Rng) -> Vec<u8> {
    const BYTES: &[u8] = b"\"\\{}[],:0123456789-+.eEtrufalsn \t\n\r\x01\x1fux/";
    let mut b = doc.as_bytes().to_vec();
    for _ in 0..1 + rng.below(3) {
        let at = rng.below(b.len() + 1);
        let byte = BYTES[rng.below(BYTES.len())];
        match rng.below(6) {
            0 | 1 if at < b.len() => b[at] = byte,
            2 => b.insert(at, byte),
            3 if at < b.len() => {
                b.remove(at);
            }
            4 => {
                let end = (at + rng.below(12)).min(b.len());
                let piece = b[at..end].to_vec();
                b.splice(at..at, piece);
            }
            _ => b.truncate(at),
        }
    }
    b
}

/// The scanner accepts exactly what the old serde_json walk accepts, finds the same values, and
/// sees line breaks exactly when a raw CR or LF is in an accepted document.
#[test]
fn agrees_with_serde_json_on_mutated_documents() {
    let paths = [
        p("timestamp"),
        p("context.sent_at"),
        p("type"),
        p("properties.items"),
        p("traits.c"),
        p("properties.revenue"),
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut accepted, mut cases) = (0, 0);
    for seed in SEEDS {
        for _ in 0..12_000 {
            let bytes = mutate(seed, &mut rng);
            let Ok(doc) = std::str::from_utf8(&bytes) else {
                continue;
            };
            cases += 1;
            let mut out = vec![None; paths.len()];
            let ours = scan_fields_into(doc, &paths, &mut out);
            let theirs = oracle::scan_fields(doc, &paths);
            match (ours, theirs) {
                (Ok(shape), Ok(want)) => {
                    accepted += 1;
                    assert_eq!(out, want, "{doc:?}");
                    let raw_break = memchr::memchr2(b'\n', b'\r', doc.as_bytes()).is_some();
                    assert_eq!(shape.line_breaks, raw_break, "{doc:?}");
                }
                (Err(a), Err(b)) => {
                    let a_no = matches!(a, ScanError::NotObject);
                    let b_no = matches!(b, ScanError::NotObject);
                    assert_eq!(a_no, b_no, "{doc:?}: {a} vs {b}");
                    if matches!(a, ScanError::TooDeep) {
                        assert!(matches!(b, ScanError::TooDeep), "{doc:?}: {a} vs {b}");
                    }
                }
                (a, b) => panic!("{doc:?}: ours {a:?}, serde_json {b:?}"),
            }
        }
    }
    // The mutations must exercise both sides.
    assert!(
        cases > 40_000 && accepted > 2_000,
        "{cases} cases, {accepted} accepted"
    );
}

/// Where serde_json reads a value rather than skipping it (a key of an object on the way to a
/// path, a scalar where a path expected an object), its own checks apply: a lone surrogate
/// escape or a number out of range is refused there, and only there, by both walks.
#[test]
fn values_on_the_way_to_a_path_get_serde_json_checks() {
    let paths = [p("context.sent_at")];
    for (doc, refused) in [
        (r#"{"context":1e400}"#, true),
        (r#"{"context":"\ud800"}"#, true),
        (r#"{"\ud800":1}"#, true),
        (r#"{"context":{"\ud800":1}}"#, true),
        (r#"{"other":1e400,"x":"\ud800","y":{"\ud800":1}}"#, false),
        (r#"{"context":[1e400,"\ud800"]}"#, false),
    ] {
        let mut out = vec![None; paths.len()];
        let ours = scan_fields_into(doc, &paths, &mut out);
        let theirs = oracle::scan_fields(doc, &paths);
        assert_eq!(ours.is_err(), refused, "{doc}: {ours:?}");
        assert_eq!(theirs.is_err(), refused, "{doc}: oracle {theirs:?}");
    }
}

/// The word-at-a-time string skip finds what a byte-by-byte search finds, at every offset and
/// length (its word loop and its tail), with non-ASCII and control bytes about.
#[test]
fn string_skip_matches_a_plain_search() {
    let mut rng = Rng(42);
    for _ in 0..20_000 {
        let len = rng.below(70);
        let b: Vec<u8> = (0..len)
            .map(|_| match rng.below(40) {
                0 => b'"',
                1 => b'\\',
                2 => rng.below(0x20) as u8,
                3 => 0x80 + rng.below(0x80) as u8,
                _ => b'a' + rng.below(26) as u8,
            })
            .collect();
        let start = rng.below(len + 1);
        let want = (start..len)
            .find(|&j| b[j] == b'"' || b[j] == b'\\' || b[j] < 0x20)
            .unwrap_or(len);
        assert_eq!(skip_plain(&b, start), want, "{b:?} from {start}");
    }
}
