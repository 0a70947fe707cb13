//! Secret scrubbing at the output layer: every secret value the config loaded is replaced by
//! `<redacted>` in every log line (a [`tracing_subscriber`] writer wraps the log output) and in
//! every error the binary prints, whoever worded the message — this crate, the AWS SDK or
//! librdkafka's log and error callbacks.
//!
//! Invariants: scrubbing is one leftmost-longest pass, so a longer secret wins over a shorter one
//! it contains and a replacement is never scrubbed again. A value shorter than
//! [`MIN_SECRET_CHARS`] is not scrubbed from free text (it would garble every line: a 1-character
//! password would turn each of its letters into `<redacted>`); it is still never printed by
//! [`crate::config::Secret`] or `check-config`. Each value is also scrubbed in the escaped forms
//! a JSON log line or a `{:?}` field gives it.

use std::borrow::Cow;
use std::io::Write;
use std::sync::Arc;

use aho_corasick::{AhoCorasick, MatchKind};
use tracing_subscriber::fmt::MakeWriter;

/// What a scrubbed secret becomes.
pub const REDACTED: &str = "<redacted>";

/// Shortest secret value scrubbed from free text, in characters.
pub const MIN_SECRET_CHARS: usize = 4;

/// Shortest tail of a multi-word secret (see [`Secrets::new`]) scrubbed on its own.
pub const MIN_TAIL_CHARS: usize = 8;

/// The secret values to scrub, compiled into one automaton. Cheap to clone.
#[derive(Clone, Default)]
pub struct Secrets {
    matcher: Option<Arc<AhoCorasick>>,
    patterns: usize,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secrets({} patterns)", self.patterns)
    }
}

/// The forms of `v` that can appear in output: as is, JSON-escaped and `Debug`-escaped.
fn forms(v: &str, out: &mut Vec<String>) {
    out.push(v.to_string());
    if let Ok(json) = serde_json::to_string(v) {
        out.push(json[1..json.len() - 1].to_string());
    }
    let debug = format!("{v:?}");
    out.push(debug[1..debug.len() - 1].to_string());
}

/// The parts of a secret value that are scrubbed: the whole value; for a value of several
/// words (a JAAS or `sasl.oauthbearer.config` line), every tail starting at a word (librdkafka
/// quotes "the config beginning at" a word) and the value of every `name=value` word.
fn parts(v: &str) -> Vec<&str> {
    let mut out = Vec::new();
    if v.chars().count() >= MIN_SECRET_CHARS {
        out.push(v);
    }
    let mut start = None;
    for (i, c) in v.char_indices() {
        if c.is_whitespace() {
            if let Some(s) = start.take() {
                word(&v[s..i], &mut out);
            }
        } else if start.is_none() {
            start = Some(i);
            if i > 0 && v[i..].chars().count() >= MIN_TAIL_CHARS {
                out.push(&v[i..]);
            }
        }
    }
    if let Some(s) = start {
        word(&v[s..], &mut out);
    }
    out
}

/// The value of a `name=value` word, quotes and a trailing `;` or `,` removed.
fn word<'a>(w: &'a str, out: &mut Vec<&'a str>) {
    if let Some((_, value)) = w.split_once('=') {
        let value = value.trim_end_matches([';', ',']).trim_matches(['"', '\'']);
        if value.chars().count() >= MIN_SECRET_CHARS {
            out.push(value);
        }
    }
}

impl Secrets {
    /// Compiles the values to scrub (see [`MIN_SECRET_CHARS`] and [`parts`] for which parts of
    /// each value are scrubbed).
    pub fn new<I, S>(values: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut pats = Vec::new();
        for v in values {
            for p in parts(v.as_ref()) {
                forms(p, &mut pats);
            }
        }
        pats.retain(|p| p.chars().count() >= MIN_SECRET_CHARS);
        pats.sort();
        pats.dedup();
        if pats.is_empty() {
            return Self::default();
        }
        let matcher = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&pats)
            .expect("invariant: a few literal patterns always compile");
        Self {
            patterns: pats.len(),
            matcher: Some(Arc::new(matcher)),
        }
    }

    /// Whether there is nothing to scrub.
    pub fn is_empty(&self) -> bool {
        self.matcher.is_none()
    }

    /// `text` with every secret replaced by [`REDACTED`].
    pub fn scrub<'a>(&self, text: &'a str) -> Cow<'a, str> {
        match &self.matcher {
            Some(m) if m.is_match(text) => {
                let mut out = String::with_capacity(text.len());
                m.replace_all_with(text, &mut out, |_, _, dst| {
                    dst.push_str(REDACTED);
                    true
                });
                Cow::Owned(out)
            }
            _ => Cow::Borrowed(text),
        }
    }

    /// A log writer that scrubs every line `inner` is given.
    pub fn writer<M>(&self, inner: M) -> ScrubbingWriter<M> {
        ScrubbingWriter {
            inner,
            secrets: self.clone(),
        }
    }
}

/// A [`MakeWriter`] whose writers scrub what they are given before passing it on (the fmt
/// layer formats each event completely, then writes it through one writer and drops it).
pub struct ScrubbingWriter<M> {
    inner: M,
    secrets: Secrets,
}

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for ScrubbingWriter<M> {
    type Writer = ScrubbingLine<'a, M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        ScrubbingLine {
            inner: self.inner.make_writer(),
            buf: Vec::new(),
            secrets: &self.secrets,
        }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        ScrubbingLine {
            inner: self.inner.make_writer_for(meta),
            buf: Vec::new(),
            secrets: &self.secrets,
        }
    }
}

/// One event's output, held until it is complete, then scrubbed and written.
pub struct ScrubbingLine<'a, W: Write> {
    inner: W,
    buf: Vec<u8>,
    secrets: &'a Secrets,
}

impl<W: Write> ScrubbingLine<'_, W> {
    fn emit(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&self.buf);
        let clean = self.secrets.scrub(&text);
        let r = self.inner.write_all(clean.as_bytes());
        self.buf.clear();
        r
    }
}

impl<W: Write> Write for ScrubbingLine<'_, W> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if self.secrets.is_empty() {
            return self.inner.write(b);
        }
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.emit()?;
        self.inner.flush()
    }
}

impl<W: Write> Drop for ScrubbingLine<'_, W> {
    fn drop(&mut self) {
        let _ = self.emit();
        let _ = self.inner.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn scrubs_exact_values_longest_first_and_leaves_the_rest() {
        let s = Secrets::new(["hunter2-long", "hunter2", "x", "abc"]);
        assert_eq!(
            s.scrub("pw hunter2-long and hunter2, x marks abc"),
            "pw <redacted> and <redacted>, x marks abc"
        );
        assert!(matches!(s.scrub("nothing here"), Cow::Borrowed(_)));
        assert!(Secrets::new(["", "ab"]).is_empty());
        // A replacement is not scrubbed again, even when a secret is part of it.
        let s = Secrets::new(["dacted", "red"]);
        assert_eq!(s.scrub("dacted"), "<redacted>");
    }

    #[test]
    fn scrubs_escaped_forms_and_tails_of_multi_word_values() {
        let s = Secrets::new(["pa\"ss\\word"]);
        assert_eq!(s.scrub(r#"{"v":"pa\"ss\\word"}"#), r#"{"v":"<redacted>"}"#);
        let jaas = "org.apache.kafka.common.security.plain.PlainLoginModule required username=\"alice\" password=\"s3cr3t-pw\";";
        let s = Secrets::new([jaas]);
        assert_eq!(s.scrub(jaas), "<redacted>");
        assert_eq!(s.scrub("user alice failed"), "user <redacted> failed");
        assert_eq!(s.scrub("pw s3cr3t-pw"), "pw <redacted>");
        assert_eq!(
            s.scrub("beginning at: password=\"s3cr3t-pw\";"),
            "beginning at: <redacted>"
        );
        assert_eq!(
            s.scrub("username and password required"),
            "username and password required"
        );
    }

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Whoever logs (this crate, librdkafka through `log`), the line is scrubbed on its way out,
    /// in plain and JSON formats.
    #[test]
    fn the_log_writer_scrubs_every_event() {
        let sink = Sink::default();
        let out = sink.clone();
        let secrets = Secrets::new(["0auth-93bb1e-not-for-logs"]);
        let writer = secrets.writer(move || out.clone());
        let subscriber = tracing_subscriber::fmt()
            .with_writer(writer)
            .with_ansi(false)
            .json()
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!(
                error =
                    "Unrecognized sasl.oauthbearer.config beginning at: 0auth-93bb1e-not-for-logs",
                "kafka client error"
            );
            tracing::info!(value = ?"0auth-93bb1e-not-for-logs", "debug field");
        });
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(!text.contains("not-for-logs"), "{text}");
        assert_eq!(text.matches(REDACTED).count(), 2, "{text}");
    }
}
