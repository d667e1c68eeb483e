//! Headless Chromium (Debian's, driven by playwright-core) opens the box's page, presses
//! play as a person would, and reads the test strip and the sound of what it plays.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;

fn script_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

#[test]
fn chromium_plays_the_page_with_sound_and_an_advancing_picture() {
    require("node");
    assert!(
        std::path::Path::new("/usr/bin/chromium").exists(),
        "Debian's chromium is not installed; run scripts/test (it installs what the tests need)"
    );
    assert!(
        script_dir().join("node_modules/playwright-core").exists(),
        "playwright-core is missing; run scripts/test or `npm ci --prefix {}`",
        script_dir().display()
    );
    let _serial = serial();
    let b = BoxProc::start(&["--live", "--source", "testsrc", "--name", "foyer"]);
    b.wait_live(true);
    let out = Command::new("node")
        .arg(script_dir().join("play.mjs"))
        .arg(&b.base)
        .arg("foyer")
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stdout.lines().last().unwrap_or_default();
    assert!(
        out.status.success(),
        "browser check failed: {stderr}\n{stdout}\nbox log:\n{}",
        b.logs()
    );
    let result = json(line);
    eprintln!("chromium: {result}");
    assert!(result["advanced"].as_u64().unwrap() >= 50, "{result}");
    assert!(result["maxRms"].as_f64().unwrap() > 0.01, "{result}");
    assert!(
        result["mime"].as_str().unwrap().contains("opus"),
        "{result}"
    );
}
