//! `cambox release`: a release key, a bundle packed from a root file system and boot files,
//! and `inspect` checking every chunk and the signer; a box that is no image with two
//! slots says so when sent a bundle.

mod common;

use common::*;

fn cambox(args: &[&str]) -> (bool, String) {
    cambox_says(args)
}

#[test]
fn a_bundle_is_packed_signed_and_checked_chunk_by_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let d = |p: &str| dir.path().join(p).to_str().unwrap().to_string();
    let (ok, said) = cambox(&["release", "init", "--dir", &d("key")]);
    assert!(ok, "{said}");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(d("key/release.key"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "the release key is its owner's only");
    let (ok, said) = cambox(&["release", "init", "--dir", &d("key")]);
    assert!(
        !ok && said.contains("holds a release key already"),
        "{said}"
    );
    cambox(&["release", "init", "--dir", &d("stranger")]);

    std::fs::create_dir_all(d("boot/overlays")).unwrap();
    std::fs::write(d("boot/cmdline.txt"), "root=/dev/mmcblk0p2 ro\n").unwrap();
    std::fs::write(d("boot/overlays/cam.dtbo"), [7u8; 3000]).unwrap();
    let rootfs: Vec<u8> = (0..700_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(d("rootfs.ext4"), &rootfs).unwrap();
    let pack = |version: &str, out: &str| {
        cambox(&[
            "release",
            "pack",
            "--key",
            &d("key/release.key"),
            "--board",
            "rpi4_64",
            "--version",
            version,
            "--rootfs",
            &d("rootfs.ext4"),
            "--boot-dir",
            &d("boot"),
            "-o",
            &d(out),
        ])
    };
    let (ok, said) = pack("2026.12.1", "b.cbx");
    assert!(ok, "{said}");
    assert!(said.contains("3 images"), "{said}");
    println!("{said}");
    let (ok, said) = cambox(&[
        "release",
        "inspect",
        &d("b.cbx"),
        "--trust",
        &d("key/release.pub"),
    ]);
    assert!(ok, "{said}");
    for line in [
        "board rpi4_64, version 2026.12.1",
        "boot/overlays/cam.dtbo",
        "all 3 chunks and 3 images check",
        "signed by release key",
    ] {
        assert!(said.contains(line), "{line:?} not in {said}");
    }
    let (ok, said) = cambox(&[
        "release",
        "inspect",
        &d("b.cbx"),
        "--trust",
        &d("stranger/release.pub"),
    ]);
    assert!(!ok && said.contains("is not signed by a key in"), "{said}");
    // One byte changed in the rootfs: the chunk that holds it no longer checks.
    let mut bytes = std::fs::read(d("b.cbx")).unwrap();
    let at = bytes.len() - 100;
    bytes[at] ^= 0xff;
    std::fs::write(d("bad.cbx"), &bytes).unwrap();
    let (ok, said) = cambox(&["release", "inspect", &d("bad.cbx")]);
    assert!(
        !ok && said.contains("chunk 2 does not match its hash"),
        "{said}"
    );
    let (ok, said) = pack("2026.12-rc1", "c.cbx");
    assert!(
        !ok && said.contains("is not dot-separated whole numbers"),
        "{said}"
    );
    assert!(!dir.path().join("c.cbx").exists() && !dir.path().join("c.partial").exists());

    // A box that is no image with two slots says so, and keeps nothing.
    let b = BoxProc::start(&["--name", "dev"]);
    let body = String::from_utf8_lossy(&std::fs::read(d("b.cbx")).unwrap()[..64]).to_string();
    let (status, _, answer) = http_full(
        &b.addr(),
        "POST",
        "/api/v1/update",
        "application/octet-stream",
        &body,
    );
    assert_eq!(status, 409, "{answer}");
    assert!(answer.contains("this box cannot update itself"), "{answer}");
    let (status, answer) = http(&b.addr(), "GET", "/api/v1/update", "");
    assert_eq!(
        (status, json(&answer)["update"].is_null()),
        (200, true),
        "{answer}"
    );
    assert!(!b.state_dir().join("upload.cbx").exists());
}
