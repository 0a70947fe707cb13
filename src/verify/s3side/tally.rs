//! The S3 side's totals: what each object read contributed ([`Outcome`]) and their sum
//! ([`S3Tally`]), with a few examples of the objects that could not be attributed or read.

/// Examples kept of each kind of unusual object.
const EXAMPLES: usize = 20;

/// Totals of the S3 side.
#[derive(Debug, Clone, Default)]
pub struct S3Tally {
    /// Objects read (data and error objects of verified topics).
    pub objects: u64,
    /// Objects listed.
    pub listed: u64,
    /// Data lines read.
    pub lines: u64,
    /// Envelopes read.
    pub envelopes: u64,
    /// Objects without metadata, outside the error folder, with a key of another template.
    pub unattributed_objects: u64,
    /// Some of their keys.
    pub unattributed_keys: Vec<String>,
    /// Objects (or envelopes) of topics not verified.
    pub other_topic_objects: u64,
    /// Envelope lines of topics not verified.
    pub other_topic_envelopes: u64,
    /// Lines in the error folder that are not envelopes.
    pub bad_envelopes: u64,
    /// Objects that could not be decoded (key, error): their lines so far count.
    pub unreadable: Vec<(String, String)>,
    /// Objects listed but gone when read.
    pub vanished: u64,
}

/// What one object contributed.
#[derive(Debug, Default)]
pub(super) struct Outcome {
    pub(super) key: String,
    pub(super) kind: Kind,
    pub(super) lines: LineCounts,
    pub(super) unreadable: Option<String>,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub(super) enum Kind {
    #[default]
    Read,
    Vanished,
    Unattributed,
    OtherTopic,
}

#[derive(Debug, Default, Clone, Copy)]
pub(super) struct LineCounts {
    pub(super) data: u64,
    pub(super) envelopes: u64,
    pub(super) bad_envelopes: u64,
    pub(super) other_topic: u64,
}

impl Outcome {
    pub(super) fn add_to(self, t: &mut S3Tally) {
        match self.kind {
            Kind::Read => t.objects += 1,
            Kind::Vanished => t.vanished += 1,
            Kind::OtherTopic => t.other_topic_objects += 1,
            Kind::Unattributed => {
                t.unattributed_objects += 1;
                if t.unattributed_keys.len() < EXAMPLES {
                    t.unattributed_keys.push(self.key.clone());
                }
            }
        }
        t.lines += self.lines.data;
        t.envelopes += self.lines.envelopes;
        t.bad_envelopes += self.lines.bad_envelopes;
        t.other_topic_envelopes += self.lines.other_topic;
        if let Some(e) = self.unreadable {
            if t.unreadable.len() < EXAMPLES {
                t.unreadable.push((self.key, e));
            }
        }
    }
}
