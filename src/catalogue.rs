//! What the connector exports and calls, as data: every metric (name, type, labels, help) and
//! every S3 API call with the IAM actions that authorise it. The hidden `catalogue --json`
//! subcommand prints it, so the deployment checks (scripts/validate_deploy.py) hold the
//! dashboard, the alert rules, docs/operations.md and the IAM policies to the binary itself.
//!
//! Invariant: the metrics are those `Metrics::new` registers ([`crate::metrics::catalogue`]);
//! the calls are those of the S3 sink ([`crate::sink::s3::S3_CALLS`], held to its code by a test).

use serde::Serialize;

use crate::metrics::MetricInfo;

/// One S3 API call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct S3Call {
    /// aws-sdk-s3's operation name (`put_object`).
    pub call: &'static str,
    /// The IAM actions it needs (`s3:PutObject`).
    pub iam_actions: Vec<&'static str>,
}

/// The whole catalogue.
#[derive(Debug, Clone, Serialize)]
pub struct Catalogue {
    /// Every metric, in registration order.
    pub metrics: Vec<MetricInfo>,
    /// Every S3 call.
    pub s3_calls: Vec<S3Call>,
}

/// The connector's catalogue.
pub fn catalogue() -> prometheus::Result<Catalogue> {
    Ok(Catalogue {
        metrics: crate::metrics::catalogue()?,
        s3_calls: crate::sink::s3::S3_CALLS
            .iter()
            .map(|(call, actions)| S3Call {
                call,
                iam_actions: actions.to_vec(),
            })
            .collect(),
    })
}

impl Catalogue {
    /// One JSON object: `{"metrics": [{"name", "type", "labels", "help"}], "s3_calls": [{"call",
    /// "iam_actions"}]}`.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// One line per metric (`type name{labels}`) and per S3 call (`s3 call: actions`).
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for m in &self.metrics {
            out.push_str(&format!(
                "{} {}{{{}}}\n",
                m.kind,
                m.name,
                m.labels.join(",")
            ));
        }
        for c in &self.s3_calls {
            out.push_str(&format!("s3 {}: {}\n", c.call, c.iam_actions.join(", ")));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalogue_lists_every_registered_metric_with_its_type_and_labels() {
        let c = catalogue().unwrap();
        let registry = prometheus::Registry::new();
        let m = crate::metrics::Metrics::new(&registry).unwrap();
        m.init_destination("d");
        // Every family the registry exports is in the catalogue, with the same type.
        for f in registry.gather() {
            let info = c.metrics.iter().find(|i| i.name == f.name());
            let info = info.unwrap_or_else(|| panic!("{} missing", f.name()));
            let kind = match f.get_field_type() {
                prometheus::proto::MetricType::COUNTER => "counter",
                prometheus::proto::MetricType::HISTOGRAM => "histogram",
                _ => "gauge",
            };
            assert_eq!(info.kind, kind, "{}", info.name);
        }
        let commits = c
            .metrics
            .iter()
            .find(|i| i.name == "kafka_s3_sink_commits_total");
        assert_eq!(commits.unwrap().kind, "counter");
        let consumed = c
            .metrics
            .iter()
            .find(|i| i.name == "kafka_s3_sink_records_consumed_total")
            .unwrap();
        assert_eq!(consumed.labels, ["topic", "partition"]);
        assert!(c.metrics.iter().any(|i| i.kind == "histogram"));
        let names: std::collections::BTreeSet<_> = c.metrics.iter().map(|i| &i.name).collect();
        assert_eq!(names.len(), c.metrics.len(), "each metric once");
    }

    #[test]
    fn the_json_names_metrics_and_calls() {
        let v: serde_json::Value = serde_json::from_str(&catalogue().unwrap().to_json()).unwrap();
        assert!(v["metrics"][0]["name"]
            .as_str()
            .unwrap()
            .starts_with("kafka_s3_sink_"));
        assert!(v["metrics"][0]["type"].is_string());
        assert!(v["metrics"][0]["labels"].is_array());
        let calls = v["s3_calls"].as_array().unwrap();
        assert!(calls
            .iter()
            .any(|c| c["call"] == "put_object" && c["iam_actions"][0] == "s3:PutObject"));
    }
}
