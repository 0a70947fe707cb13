//! What a template or a prefix may hold, checked at start-up so no template can hide or move
//! data: strftime items from an allow-list of date and time fields that always render
//! something, and no text that leaves the destination's tree or hides in it — a `.` or `..`
//! segment, an empty segment (`//`), a leading `/`, NUL or any other control character.
//!
//! Invariant: a folder rendered from a template that passes has no such segment, whatever the
//! record's time (field values are sanitised separately, see [`super::sanitize_field_value`]).

/// The strftime fields a folder may use: numbers and names of dates and times, each never empty.
pub const FOLDER_FIELDS: &str = "YCyGgmbBhdjaAuwUWVHIpPMSFRTs";

/// Why a strftime item is refused, and what to use instead.
fn refusal(spec: char, folder: bool) -> &'static str {
    match spec {
        'z' | 'Z' | '+' => {
            "it is a time zone or offset (empty or constant here: folders are rendered in routing.timezone, file names in UTC); write the zone as text"
        }
        'n' | 't' => "it writes a newline or a tab; use '-' or '_' as text",
        'e' | 'k' | 'l' => "it pads with a space; use %d, %H or %I (or %-d, %-H, %-I)",
        'f' if folder => "folder times are cut to the second; use %S at most",
        'D' | 'x' | 'X' | 'c' | 'r' | 'v' => {
            "it is a composite with slashes or spaces; write its fields, e.g. %Y-%m-%d or %H:%M:%S"
        }
        _ => "it is not a date or time field",
    }
}

/// Checks every `%` item of a strftime pattern against the allow-list ([`FOLDER_FIELDS`]; file
/// names' `{upload_time:…}` may also use the fraction of a second: `%f`, `%3f`, `%.3f`…, but
/// not `%.f`, which renders nothing at a whole second). Padding modifiers `-` and `0` are
/// allowed, `_` (space) is not. `%%` is a literal `%`.
pub fn check_strftime_items(fmt: &str, folder: bool) -> Result<(), String> {
    let mut chars = fmt.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        if c != '%' {
            continue;
        }
        let mut mods = String::new();
        let mut spec = None;
        for (_, m) in chars.by_ref() {
            if matches!(m, '-' | '_' | '0' | '.' | ':' | '#') || m.is_ascii_digit() {
                mods.push(m);
            } else {
                spec = Some(m);
                break;
            }
        }
        let Some(spec) = spec else {
            return Err(format!(
                "{:?} ends with an unfinished % item; write %% for a literal %",
                &fmt[start..]
            ));
        };
        let item = format!("%{mods}{spec}");
        let allowed = match spec {
            '%' => mods.is_empty(),
            'f' if !folder => {
                let digits = mods.trim_start_matches('.');
                matches!(digits, "" | "3" | "6" | "9") && !(mods == "." && digits.is_empty())
            }
            s if FOLDER_FIELDS.contains(s) => matches!(mods.as_str(), "" | "-" | "0"),
            _ => false,
        };
        if !allowed {
            let why = if mods.contains('_') {
                "it pads with spaces; use %-… or the item alone"
            } else if spec == 'f' && mods == "." {
                "it renders nothing when the fraction is zero; use %.3f, %.6f or %.9f"
            } else if spec == 'f' && !folder {
                "use %f, %3f, %6f, %9f or %.3f, %.6f, %.9f"
            } else {
                refusal(spec, folder)
            };
            return Err(format!(
                "strftime item {item} is not allowed: {why} (allowed: {}, %% for a literal %)",
                FOLDER_FIELDS
                    .chars()
                    .map(|c| format!("%{c}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ));
        }
    }
    Ok(())
}

/// Checks a key path (a prefix, a template as written, or a rendered sample of one): no NUL or
/// control character, no leading `/`, no `.`, `..` or empty segment. `what` names the text in
/// the error.
pub fn check_path(what: &str, text: &str) -> Result<(), String> {
    if let Some(c) = text.chars().find(|c| c.is_control()) {
        return Err(format!(
            "{what} holds the control character {c:?}; remove it"
        ));
    }
    if text.starts_with('/') {
        return Err(format!(
            "{what} starts with '/', which puts an empty folder at the bucket root; remove the leading '/'"
        ));
    }
    let body = text.strip_suffix('/').unwrap_or(text);
    if body.is_empty() {
        return Ok(());
    }
    for segment in body.split('/') {
        match segment {
            "" => {
                return Err(format!(
                    "{what} has an empty segment ('//'), a folder most tools do not show; remove the extra '/'"
                ))
            }
            "." | ".." => {
                return Err(format!(
                    "{what} has a {segment:?} segment, which tools resolve to another folder; remove it"
                ))
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_fields_pass_and_the_rest_is_refused_by_name() {
        for ok in [
            "%Y/%m/%d/%H/",
            "dt=%F/hour=%-H",
            "%G-W%V",
            "%s",
            "100%%",
            "%a %b",
            "%0d",
        ] {
            assert!(check_strftime_items(ok, true).is_ok(), "{ok}");
        }
        for (bad, item) in [
            ("%Y/%z/%H/", "%z"),
            ("%Z", "%Z"),
            ("%:z", "%:z"),
            ("%Y%n", "%n"),
            ("%t", "%t"),
            ("%e", "%e"),
            ("%_d", "%_d"),
            ("%D", "%D"),
            ("%c", "%c"),
            ("%+", "%+"),
            ("%S%.f", "%.f"),
            ("%f", "%f"),
            ("%Y%", "unfinished"),
        ] {
            let e = check_strftime_items(bad, true).unwrap_err();
            assert!(e.contains(item), "{bad}: {e}");
        }
        for ok in ["%Y%m%d%H%M%S%6f", "%s%3f", "%H%M%S%.9f", "%f"] {
            assert!(check_strftime_items(ok, false).is_ok(), "{ok}");
        }
        for bad in ["%S%.f", "%Z", "%z", "%n", "%5f"] {
            assert!(check_strftime_items(bad, false).is_err(), "{bad}");
        }
    }

    #[test]
    fn paths_that_leave_or_hide_are_refused() {
        for ok in [
            "",
            "data/",
            "data",
            "a/b.c/d",
            "a..b/",
            "dt=%Y/{topic}/",
            "...x",
        ] {
            assert!(check_path("t", ok).is_ok(), "{ok}");
        }
        for (bad, says) in [
            ("../x/", "\"..\""),
            ("a/../b", "\"..\""),
            ("a/./b", "\".\""),
            ("..", "\"..\""),
            ("/data/", "starts with '/'"),
            ("a//b", "empty segment"),
            ("a\0b", "control"),
            ("a\nb", "control"),
            ("a\tb", "control"),
        ] {
            let e = check_path("prefix", bad).unwrap_err();
            assert!(e.contains(says) && e.starts_with("prefix"), "{bad:?}: {e}");
        }
    }
}
