//! `${VAR}` interpolation of string values in a parsed TOML table (so a secret's characters can
//! never change the TOML structure). `$${` writes a literal `${`.
//!
//! Invariants: a missing variable is a start-up error naming the key and the variable; a
//! `${file:}` reads a regular file of at most [`MAX_SECRET_FILE_BYTES`], and its errors name
//! the key and the path, never content. Every value put in is reported ([`Interpolated`]) so
//! the config can scrub secrets from all output.

/// A `${…}` reference that cannot be resolved: the key it is in and what to do about it
/// (`config` turns it into its one-line start-up error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{key}`: {message}")]
pub struct InterpolateError {
    /// Dotted path of the key whose value holds the reference.
    pub key: String,
    /// What is wrong and how to fix it, on one line.
    pub message: String,
}

impl InterpolateError {
    fn new(key: &str, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Largest secret file `${file:}` reads, in bytes.
pub const MAX_SECRET_FILE_BYTES: u64 = 1024 * 1024;

/// A value `${…}` put into the config: where it came from and what it was.
#[derive(Clone, PartialEq, Eq)]
pub struct Interpolated {
    /// The environment variable's name; `None` for a `${file:}`.
    pub variable: Option<String>,
    /// The value put in.
    pub value: String,
}

impl std::fmt::Debug for Interpolated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Interpolated({:?}, <redacted>)", self.variable)
    }
}

/// Replaces `${VAR}` in every string of `table`, recursing into tables and arrays; every value
/// put in is appended to `found`.
pub fn interpolate_table(
    table: &mut toml::Table,
    at: &str,
    env: &dyn Fn(&str) -> Option<String>,
    found: &mut Vec<Interpolated>,
) -> Result<(), InterpolateError> {
    for (k, v) in table.iter_mut() {
        let key = if at.is_empty() {
            k.clone()
        } else {
            format!("{at}.{k}")
        };
        interpolate_value(v, &key, env, found)?;
    }
    Ok(())
}

fn interpolate_value(
    v: &mut toml::Value,
    key: &str,
    env: &dyn Fn(&str) -> Option<String>,
    found: &mut Vec<Interpolated>,
) -> Result<(), InterpolateError> {
    match v {
        toml::Value::String(s) if s.contains('$') => {
            *s = interpolate_str_into(s, key, env, found)?;
        }
        toml::Value::Table(t) => interpolate_table(t, key, env, found)?,
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                interpolate_value(item, &format!("{key}[{i}]"), env, found)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// The content of a secret file (`${file:/path}`), without one trailing newline (as
/// `echo` and many editors add). The error names the key and the path, never content.
fn read_secret_file(path: &str, key: &str) -> Result<String, InterpolateError> {
    if path.is_empty() {
        return Err(InterpolateError::new(
            key,
            "${file:} needs a path, e.g. ${file:/run/secrets/kafka-password}",
        ));
    }
    use std::io::Read as _;
    let cannot = |e: &dyn std::fmt::Display| {
        InterpolateError::new(
            key,
            format!("cannot read secret file {path}: {e}; mount it there or fix the path"),
        )
    };
    // Checked before opening too: opening a FIFO would wait for a writer.
    let before = std::fs::metadata(path).map_err(|e| cannot(&e))?;
    let file = std::fs::File::open(path).map_err(|e| cannot(&e))?;
    let meta = file.metadata().map_err(|e| cannot(&e))?;
    if !before.is_file() || !meta.is_file() {
        return Err(InterpolateError::new(
            key,
            format!("secret file {path} is not a regular file; point ${{file:}} at a file"),
        ));
    }
    let mut bytes = Vec::new();
    file.take(MAX_SECRET_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| cannot(&e))?;
    if bytes.len() as u64 > MAX_SECRET_FILE_BYTES {
        return Err(InterpolateError::new(
            key,
            format!(
                "secret file {path} is larger than 1 MiB; point ${{file:}} at the secret alone"
            ),
        ));
    }
    let mut s = String::from_utf8(bytes).map_err(|_| {
        InterpolateError::new(
            key,
            format!("secret file {path} is not UTF-8 text; store the secret as text"),
        )
    })?;
    if s.ends_with('\n') {
        s.pop();
        if s.ends_with('\r') {
            s.pop();
        }
    }
    Ok(s)
}

/// Interpolates one string: `${VAR}` from the environment, `${file:/path}` from a file (for
/// Kubernetes secret mounts), `$${` as a literal `${`.
pub fn interpolate_str(
    s: &str,
    key: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, InterpolateError> {
    interpolate_str_into(s, key, env, &mut Vec::new())
}

fn interpolate_str_into(
    s: &str,
    key: &str,
    env: &dyn Fn(&str) -> Option<String>,
    found: &mut Vec<Interpolated>,
) -> Result<String, InterpolateError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            let end = tail.find('}').ok_or_else(|| {
                InterpolateError::new(
                    key,
                    "unterminated ${ in value; close it with } or write $${ for a literal",
                )
            })?;
            let name = &tail[..end];
            if let Some(path) = name.strip_prefix("file:") {
                let value = read_secret_file(path, key)?;
                out.push_str(&value);
                found.push(Interpolated {
                    variable: None,
                    value,
                });
                rest = &tail[end + 1..];
                continue;
            }
            let valid =
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(InterpolateError::new(
                    key,
                    format!("invalid variable name ${{{name}}}; use letters, digits and _"),
                ));
            }
            let value = env(name).ok_or_else(|| {
                InterpolateError::new(
                    key,
                    format!(
                        "environment variable {name} is not set; export it or remove ${{{name}}}"
                    ),
                )
            })?;
            out.push_str(&value);
            found.push(Interpolated {
                variable: Some(name.to_string()),
                value,
            });
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "SECRET" => Some("s3cr\"et".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn replaces_variables_and_escapes() {
        assert_eq!(
            interpolate_str("a${SECRET}b", "k", &env).unwrap(),
            "as3cr\"etb"
        );
        assert_eq!(
            interpolate_str("$${SECRET}", "k", &env).unwrap(),
            "${SECRET}"
        );
        assert_eq!(interpolate_str("cost $5", "k", &env).unwrap(), "cost $5");
        assert_eq!(interpolate_str("${EMPTY}", "k", &env).unwrap(), "");
    }

    #[test]
    fn missing_variable_names_key_and_variable() {
        let e = interpolate_str("${NOPE}", "destinations[0].bucket", &env).unwrap_err();
        assert_eq!(e.key, "destinations[0].bucket");
        assert!(e.message.contains("NOPE"), "{e}");
        assert!(interpolate_str("${BAD-NAME}", "k", &env).is_err());
        assert!(interpolate_str("${OPEN", "k", &env).is_err());
    }

    #[test]
    fn secret_files_are_read_without_their_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("password");
        std::fs::write(&path, "s3cr3t\n").unwrap();
        let v = format!("pw=${{file:{}}}!", path.display());
        assert_eq!(interpolate_str(&v, "k", &env).unwrap(), "pw=s3cr3t!");
        std::fs::write(&path, "a\nb\r\n").unwrap();
        let v = format!("${{file:{}}}", path.display());
        assert_eq!(interpolate_str(&v, "k", &env).unwrap(), "a\nb");
        let e = interpolate_str(
            "${file:/nonexistent/x}",
            "kafka.properties.\"sasl.password\"",
            &env,
        )
        .unwrap_err();
        assert_eq!(e.key, "kafka.properties.\"sasl.password\"");
        assert!(e.message.contains("/nonexistent/x"), "{e}");
        assert!(interpolate_str("${file:}", "k", &env).is_err());
    }

    /// `${file:/dev/zero}` used to grow until memory ran out; a directory or a device is
    /// refused, and so is a file over 1 MiB, naming the key and the path and never content.
    #[test]
    fn secret_files_are_regular_and_small() {
        let dir = tempfile::tempdir().unwrap();
        for path in ["/dev/zero".to_string(), dir.path().display().to_string()] {
            let e = interpolate_str(&format!("${{file:{path}}}"), "kafka.x", &env).unwrap_err();
            assert_eq!(e.key, "kafka.x");
            assert!(
                e.message.contains(&path) && e.message.contains("regular file"),
                "{e}"
            );
        }
        let big = dir.path().join("big");
        std::fs::write(&big, "s".repeat(MAX_SECRET_FILE_BYTES as usize + 1)).unwrap();
        let e = interpolate_str(&format!("${{file:{}}}", big.display()), "k", &env).unwrap_err();
        assert!(e.message.contains("larger than 1 MiB"), "{e}");
        assert!(!e.message.contains("sss"), "{e}");
        let ok = dir.path().join("ok");
        std::fs::write(&ok, "s".repeat(MAX_SECRET_FILE_BYTES as usize)).unwrap();
        assert!(interpolate_str(&format!("${{file:{}}}", ok.display()), "k", &env).is_ok());
    }

    #[test]
    fn walks_nested_tables_and_arrays() {
        let mut t: toml::Table = "a = [\"${SECRET}\"]\n[b]\nc = \"${SECRET}\""
            .parse()
            .unwrap();
        let mut found = Vec::new();
        interpolate_table(&mut t, "", &env, &mut found).unwrap();
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].variable.as_deref(), Some("SECRET"));
        assert_eq!(t["a"][0].as_str(), Some("s3cr\"et"));
        assert_eq!(t["b"]["c"].as_str(), Some("s3cr\"et"));
    }
}
