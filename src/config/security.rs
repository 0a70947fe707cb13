//! `[kafka.security]`: typed TLS and SASL settings, mapped onto librdkafka's properties
//! (`security.protocol`, `ssl.ca.location`, `ssl.certificate.location`, `ssl.key.location`,
//! `ssl.key.password`, `sasl.mechanism`, `sasl.username`, `sasl.password`), with the mismatches
//! librdkafka would only report at connection time caught at start-up. `AWS_MSK_IAM` is SASL
//! OAUTHBEARER with a token the consumer builds itself from AWS credentials
//! ([`crate::source::msk_iam`]).
//!
//! Invariants: every file named must be readable at start-up (the error names the key and the
//! path); a property set here cannot also be set in `[kafka.properties]`; SASL credentials sent
//! without TLS give a warning; secrets are [`Secret`]s and never print.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{ConfigError, MskIamConfig, Secret};

/// `[kafka.security]` as written.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSecurity {
    /// plaintext | ssl | sasl_plaintext | sasl_ssl (default: sasl_ssl with a SASL mechanism,
    /// ssl with TLS files, else librdkafka's own).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// CA certificates (PEM) to verify the brokers with (default: the system's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// Client certificate (PEM), for mutual TLS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<String>,
    /// Client private key (PEM), for mutual TLS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
    /// Password of the client key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_password: Option<Secret>,
    /// PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512 | AWS_MSK_IAM.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sasl_mechanism: Option<String>,
    /// SASL user name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<Secret>,
    /// SASL password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// AWS_MSK_IAM: the cluster's region (default: `AWS_REGION`, then `AWS_DEFAULT_REGION`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aws_region: Option<String>,
    /// AWS_MSK_IAM: a role to assume for the token's credentials (default: the AWS default
    /// chain's own credentials).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aws_role_arn: Option<String>,
}

impl RawSecurity {
    /// True when no key is set (the table is then left out of `check-config`'s output).
    pub fn is_unset(&self) -> bool {
        self.protocol.is_none()
            && self.ca_file.is_none()
            && self.cert_file.is_none()
            && self.key_file.is_none()
            && self.key_password.is_none()
            && self.sasl_mechanism.is_none()
            && self.username.is_none()
            && self.password.is_none()
            && self.aws_region.is_none()
            && self.aws_role_arn.is_none()
    }
}

const KEY: &str = "kafka.security";

fn err(k: &str, msg: impl Into<String>) -> ConfigError {
    ConfigError::new(format!("{KEY}.{k}"), msg)
}

/// A readable file, or an error naming the key and the path.
fn readable(k: &str, path: &str) -> Result<String, ConfigError> {
    std::fs::File::open(path)
        .map(|_| path.to_string())
        .map_err(|e| {
            err(
                k,
                format!("cannot read {path}: {e}; mount the file there or fix the path"),
            )
        })
}

/// Maps the typed settings onto librdkafka properties in `props` (which already holds
/// `[kafka.properties]`, each of them given in `user`), adding warnings for `check-config` and
/// the start-up log. Returns the settings of the MSK IAM token when that is the mechanism.
pub(super) fn apply(
    s: &RawSecurity,
    user: &BTreeMap<String, toml::Value>,
    props: &mut BTreeMap<String, String>,
    warnings: &mut Vec<String>,
) -> Result<Option<MskIamConfig>, ConfigError> {
    let tls_files = s.ca_file.is_some() || s.cert_file.is_some() || s.key_file.is_some();
    let mechanism = match s.sasl_mechanism.as_deref() {
        None => None,
        Some(m) => match m.to_ascii_uppercase().as_str() {
            "PLAIN" => Some("PLAIN"),
            "SCRAM-SHA-256" => Some("SCRAM-SHA-256"),
            "SCRAM-SHA-512" => Some("SCRAM-SHA-512"),
            "AWS_MSK_IAM" => Some(MSK_IAM),
            _ => {
                return Err(err(
                    "sasl_mechanism",
                    format!(
                    "unknown value {m:?}; use PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or AWS_MSK_IAM"
                ),
                ))
            }
        },
    };
    let protocol = match s.protocol.as_deref() {
        Some(p) => match p.to_ascii_lowercase().as_str() {
            "plaintext" => Some("PLAINTEXT"),
            "ssl" => Some("SSL"),
            "sasl_plaintext" => Some("SASL_PLAINTEXT"),
            "sasl_ssl" => Some("SASL_SSL"),
            _ => {
                return Err(err(
                    "protocol",
                    format!("unknown value {p:?}; use plaintext, ssl, sasl_plaintext or sasl_ssl"),
                ))
            }
        },
        None if mechanism.is_some() => Some("SASL_SSL"),
        None if tls_files => Some("SSL"),
        None => None,
    };
    let tls = matches!(protocol, Some("SSL" | "SASL_SSL"));
    let sasl = matches!(protocol, Some("SASL_PLAINTEXT" | "SASL_SSL"));
    if tls_files && !tls {
        return Err(err(
            "protocol",
            "ca_file, cert_file and key_file need protocol ssl or sasl_ssl",
        ));
    }
    if s.cert_file.is_some() != s.key_file.is_some() {
        return Err(err(
            "cert_file",
            "mutual TLS needs both cert_file and key_file",
        ));
    }
    if s.key_password.is_some() && s.key_file.is_none() {
        return Err(err("key_password", "is only used with key_file"));
    }
    if mechanism.is_some() && !sasl {
        return Err(err(
            "sasl_mechanism",
            "needs protocol sasl_ssl (or sasl_plaintext)",
        ));
    }
    let msk_iam = msk_iam(s, mechanism)?;
    if mechanism == Some(MSK_IAM) {
        if s.username.is_some() || s.password.is_some() {
            return Err(err(
                "username",
                "AWS_MSK_IAM takes no username or password: the token is signed with AWS credentials",
            ));
        }
    } else if mechanism.is_some() && (s.username.is_none() || s.password.is_none()) {
        return Err(err("username", "SASL needs both username and password"));
    }
    if mechanism.is_none() && (s.username.is_some() || s.password.is_some()) {
        return Err(err(
            "sasl_mechanism",
            "username and password need a mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512",
        ));
    }
    if protocol == Some("SASL_PLAINTEXT") && mechanism.is_some() {
        warnings.push(format!(
            "{KEY}.protocol: sasl_plaintext sends the SASL credentials ({}) without TLS; use sasl_ssl unless the network is trusted",
            mechanism.unwrap_or("")
        ));
    }
    let mut set = |k: &str, property: &str, v: Option<String>| -> Result<(), ConfigError> {
        let Some(v) = v else { return Ok(()) };
        if user.contains_key(property) {
            return Err(err(
                k,
                format!("is also set as kafka.properties.\"{property}\"; keep one of the two"),
            ));
        }
        props.insert(property.to_string(), v);
        Ok(())
    };
    set(
        "protocol",
        "security.protocol",
        protocol.map(str::to_string),
    )?;
    let ca = s
        .ca_file
        .as_deref()
        .map(|p| readable("ca_file", p))
        .transpose()?;
    set("ca_file", "ssl.ca.location", ca)?;
    let cert = s
        .cert_file
        .as_deref()
        .map(|p| readable("cert_file", p))
        .transpose()?;
    set("cert_file", "ssl.certificate.location", cert)?;
    let key = s
        .key_file
        .as_deref()
        .map(|p| readable("key_file", p))
        .transpose()?;
    set("key_file", "ssl.key.location", key)?;
    set(
        "key_password",
        "ssl.key.password",
        s.key_password.as_ref().map(|p| p.expose().to_string()),
    )?;
    set(
        "sasl_mechanism",
        "sasl.mechanism",
        mechanism.map(|m| if m == MSK_IAM { "OAUTHBEARER" } else { m }.to_string()),
    )?;
    set(
        "username",
        "sasl.username",
        s.username.as_ref().map(|u| u.expose().to_string()),
    )?;
    set(
        "password",
        "sasl.password",
        s.password.as_ref().map(|p| p.expose().to_string()),
    )?;
    if props
        .get("security.protocol")
        .is_some_and(|p| p == "SASL_PLAINTEXT")
        && protocol.is_none()
        && props.contains_key("sasl.password")
    {
        warnings.push(
            "kafka.properties.\"security.protocol\": SASL_PLAINTEXT sends the SASL password without TLS; use SASL_SSL unless the network is trusted"
                .into(),
        );
    }
    Ok(msk_iam)
}

const MSK_IAM: &str = "AWS_MSK_IAM";

/// The token settings of `AWS_MSK_IAM`; its keys are refused with any other mechanism.
fn msk_iam(s: &RawSecurity, mechanism: Option<&str>) -> Result<Option<MskIamConfig>, ConfigError> {
    if mechanism != Some(MSK_IAM) {
        if s.aws_region.is_some() || s.aws_role_arn.is_some() {
            let k = if s.aws_region.is_some() {
                "aws_region"
            } else {
                "aws_role_arn"
            };
            return Err(err(k, "is only used with sasl_mechanism = \"AWS_MSK_IAM\""));
        }
        return Ok(None);
    }
    let from_env = || {
        ["AWS_REGION", "AWS_DEFAULT_REGION"]
            .iter()
            .find_map(|v| std::env::var(v).ok().filter(|r| !r.is_empty()))
    };
    let Some(region) = s.aws_region.clone().or_else(from_env) else {
        return Err(err(
            "aws_region",
            "AWS_MSK_IAM needs the cluster's region: set aws_region (or AWS_REGION)",
        ));
    };
    let valid = |r: &str| {
        !r.is_empty()
            && r.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    if !valid(&region) {
        return Err(err(
            "aws_region",
            format!("{region:?} is not an AWS region name (e.g. us-east-1)"),
        ));
    }
    if let Some(arn) = &s.aws_role_arn {
        if !arn.starts_with("arn:") {
            return Err(err(
                "aws_role_arn",
                "is not a role ARN (arn:aws:iam::<account>:role/<name>)",
            ));
        }
    }
    Ok(Some(MskIamConfig {
        region,
        role_arn: s.aws_role_arn.clone(),
        session_name: super::destination::default_session_name(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(
        toml_text: &str,
    ) -> (
        Result<(), ConfigError>,
        BTreeMap<String, String>,
        Vec<String>,
    ) {
        let s: RawSecurity = toml::from_str(toml_text).unwrap();
        let mut props = BTreeMap::new();
        let mut w = Vec::new();
        let r = apply(&s, &BTreeMap::new(), &mut props, &mut w).map(|_| ());
        (r, props, w)
    }

    #[test]
    fn typed_keys_map_onto_librdkafka_properties() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "pem").unwrap();
        let (r, p, w) = run(&format!(
            "ca_file = {:?}\nsasl_mechanism = \"scram-sha-512\"\nusername = \"u\"\npassword = \"p\"\n",
            ca.display().to_string()
        ));
        r.unwrap();
        assert_eq!(p["security.protocol"], "SASL_SSL");
        assert_eq!(p["sasl.mechanism"], "SCRAM-SHA-512");
        assert_eq!(p["ssl.ca.location"], ca.display().to_string());
        assert_eq!(
            (p["sasl.username"].as_str(), p["sasl.password"].as_str()),
            ("u", "p")
        );
        assert!(w.is_empty());
        let (r, _, w) = run("protocol = \"sasl_plaintext\"\nsasl_mechanism = \"PLAIN\"\nusername = \"u\"\npassword = \"p\"\n");
        r.unwrap();
        assert!(w[0].contains("without TLS"), "{w:?}");
    }

    #[test]
    fn mismatches_fail_naming_the_key() {
        let e = run("ca_file = \"/nonexistent/ca.pem\"\n").0.unwrap_err();
        assert_eq!(e.key, "kafka.security.ca_file");
        assert!(e.message.contains("/nonexistent/ca.pem"), "{e}");
        let e = run("protocol = \"plaintext\"\nca_file = \"/x\"\n")
            .0
            .unwrap_err();
        assert_eq!(e.key, "kafka.security.protocol");
        let e = run(
            "protocol = \"ssl\"\nsasl_mechanism = \"PLAIN\"\nusername = \"u\"\npassword = \"p\"\n",
        )
        .0
        .unwrap_err();
        assert_eq!(e.key, "kafka.security.sasl_mechanism");
        let e = run("sasl_mechanism = \"PLAIN\"\nusername = \"u\"\n")
            .0
            .unwrap_err();
        assert_eq!(e.key, "kafka.security.username");
        let e = run("username = \"u\"\npassword = \"p\"\n").0.unwrap_err();
        assert_eq!(e.key, "kafka.security.sasl_mechanism");
        let e = run("sasl_mechanism = \"GSSAPI\"\n").0.unwrap_err();
        assert!(e.message.contains("unknown value"), "{e}");
        let s: RawSecurity = toml::from_str("protocol = \"ssl\"\n").unwrap();
        let user = BTreeMap::from([("security.protocol".to_string(), toml::Value::from("SSL"))]);
        let e = apply(&s, &user, &mut BTreeMap::new(), &mut Vec::new()).unwrap_err();
        assert!(e.message.contains("also set"), "{e}");
    }

    #[test]
    fn msk_iam_is_oauthbearer_over_tls_with_a_region() {
        let s: RawSecurity =
            toml::from_str("sasl_mechanism = \"aws_msk_iam\"\naws_region = \"eu-west-1\"\naws_role_arn = \"arn:aws:iam::123456789012:role/sink\"").unwrap();
        let mut p = BTreeMap::new();
        let mut w = Vec::new();
        let m = apply(&s, &BTreeMap::new(), &mut p, &mut w)
            .unwrap()
            .unwrap();
        assert_eq!(p["security.protocol"], "SASL_SSL");
        assert_eq!(p["sasl.mechanism"], "OAUTHBEARER");
        assert!(!p.contains_key("sasl.username"));
        assert_eq!(m.region, "eu-west-1");
        assert_eq!(
            m.role_arn.as_deref(),
            Some("arn:aws:iam::123456789012:role/sink")
        );
        assert!(m.session_name.starts_with("kafka-s3-sink"));

        let (r, _, _) =
            run("sasl_mechanism = \"AWS_MSK_IAM\"\naws_region = \"us-east-1\"\nusername = \"u\"");
        assert_eq!(r.unwrap_err().key, "kafka.security.username");
        let (r, _, _) = run("sasl_mechanism = \"AWS_MSK_IAM\"\naws_region = \"US East\"");
        assert_eq!(r.unwrap_err().key, "kafka.security.aws_region");
        let (r, _, _) = run("sasl_mechanism = \"PLAIN\"\nusername = \"u\"\npassword = \"p\"\naws_region = \"us-east-1\"");
        assert_eq!(r.unwrap_err().key, "kafka.security.aws_region");
        let (r, _, _) = run(
            "sasl_mechanism = \"AWS_MSK_IAM\"\naws_region = \"us-east-1\"\naws_role_arn = \"sink\"",
        );
        assert_eq!(r.unwrap_err().key, "kafka.security.aws_role_arn");
    }
}
