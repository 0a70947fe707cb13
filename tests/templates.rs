//! No template or prefix can hide or move data: what could put records at the bucket root,
//! outside the destination's prefix or in a folder tools do not show is refused at start-up in
//! one line naming the key (`check-config` and `run` alike), and `demo` cannot write outside
//! its folder.

// The in-process S3 server (tests/support) and `demo` are the test kit (Cargo.toml).
#![cfg(feature = "test-kit")]

use std::process::Command;

fn binary() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kafka-s3-sink"));
    cmd.env("NO_COLOR", "1").env_remove("KAFKA_S3_SINK_LOG");
    cmd
}

/// A config whose one destination has `extra` lines (keys of `[[destinations]]`).
fn config(dir: &std::path::Path, name: &str, extra: &str) -> std::path::PathBuf {
    let path = dir.join(format!("{name}.toml"));
    let text = format!(
        "[kafka]\nbrokers = \"127.0.0.1:1\"\ngroup_id = \"g\"\ntopics = [\"events\"]\n\n[http]\nenabled = false\n\n[[destinations]]\nbucket = \"b\"\nendpoint = \"http://127.0.0.1:1\"\n{extra}\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn templates_and_prefixes_that_hide_or_move_data_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let routing =
        |t: &str| format!("name = \"d\"\n[destinations.routing]\nfolder_template = {t:?}");
    let cases = [
        // `%z` renders nothing for a folder: every record went to the bucket root.
        (routing("%Y/%z/%H/"), "routing.folder_template", "%z"),
        (routing("%Y/%m/%d/%Z/"), "routing.folder_template", "%Z"),
        (routing("%Y%n%m/"), "routing.folder_template", "%n"),
        (routing("%Y/%t/"), "routing.folder_template", "%t"),
        (routing("../../escaped/%Y/"), "routing.folder_template", "\"..\""),
        (routing("/%Y/%m/"), "routing.folder_template", "starts with '/'"),
        (routing("%Y//%m/"), "routing.folder_template", "empty segment"),
        (
            "name = \"d\"\n[destinations.routing]\nfolder_template = \"%Y/\\u0000/\"".to_string(),
            "routing.folder_template",
            "control character",
        ),
        (
            "name = \"d\"\n[destinations.routing]\nfile_template = \"{start_offset}-{upload_time:%S%.f}\"".to_string(),
            "routing.file_template",
            "%.f",
        ),
        ("name = \"d\"\nprefix = \"../other-team/\"".to_string(), "prefix", "\"..\""),
        ("name = \"d\"\nprefix = \"/data/\"".to_string(), "prefix", "starts with '/'"),
        ("name = \"d\"\nprefix = \"data/./x/\"".to_string(), "prefix", "\".\""),
        ("name = \"d\"\nprefix = \"da\\u0000ta/\"".to_string(), "prefix", "control character"),
        ("name = \"d\"\nerror_prefix = \"../errors/\"".to_string(), "error_prefix", "\"..\""),
        // A name that renders as `..` through a placeholder.
        (
            "name = \"..\"\n[destinations.routing]\nfolder_template = \"{destination}/%Y/\"".to_string(),
            "routing.folder_template",
            "\"..\"",
        ),
        (
            "name = \"a/../../b\"\n[destinations.routing]\nfile_template = \"{destination}-{start_offset}\"".to_string(),
            "routing.file_template",
            "'/'",
        ),
    ];
    for (i, (extra, key, says)) in cases.iter().enumerate() {
        let path = config(dir.path(), &format!("case-{i}"), extra);
        for cmd in ["check-config", "run"] {
            let out = binary()
                .arg(cmd)
                .arg("--config")
                .arg(&path)
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{cmd} {extra}: {err}");
            assert_eq!(err.trim().lines().count(), 1, "{cmd}: one line: {err}");
            assert!(
                err.contains(&format!("destinations[0].{key}")) && err.contains(says),
                "{cmd} {extra}: {err}"
            );
        }
    }
    // Date fields, `-` padding and literal dots pass.
    let ok = config(
        dir.path(),
        "ok",
        &routing("dt=%Y-%m-%d/hour=%-H/v1.2/{topic}/"),
    );
    let out = binary()
        .arg("check-config")
        .arg("--config")
        .arg(&ok)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `demo --folder-template '../../escaped/%Y/'` wrote its objects two folders above `--dir`; it
/// is refused before anything starts, and nothing is written outside `--dir`.
#[test]
fn the_demo_cannot_write_outside_its_folder() {
    let dir = tempfile::tempdir().unwrap();
    let demo_dir = dir.path().join("a").join("demo");
    let out = binary()
        .args([
            "demo",
            "--records",
            "50",
            "--folder-template",
            "../../escaped/%Y/",
        ])
        .arg("--dir")
        .arg(&demo_dir)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("folder_template") && err.contains("\"..\""),
        "{err}"
    );
    let escaped: Vec<_> = walk(dir.path())
        .into_iter()
        .filter(|p| !p.starts_with(&demo_dir))
        .filter(|p| p.is_file())
        .collect();
    assert!(escaped.is_empty(), "written outside --dir: {escaped:?}");
}

fn walk(root: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out
}
