//! A container image built on the spot, since no image registry is reachable: an OCI archive
//! with one uncompressed layer holding the static busybox and links for its applets. Its default
//! command sleeps, so it also serves as the pod sandbox ("pause") image.

use std::{
    io::Write as _,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::Command,
};

use sha2::{Digest as _, Sha256};

/// Bump when the image's content or layout changes: cached archives of other versions are
/// then ignored.
pub const IMAGE_VERSION: &str = "1";

/// The name the image is imported under (a full reference: containerd's CRI resolves short
/// names to docker.io/library/...).
pub fn image_name() -> String {
    format!("docker.io/kernsight/test-busybox:{IMAGE_VERSION}")
}

const CACHE: &str = "/tmp/kernsight-test-images";
const BUSYBOX: &str = "/bin/busybox";
const APPLETS: &[&str] = &["sh", "sleep", "cat", "echo", "ls", "true"];

/// The OCI archive of the image, built once and cached under /tmp/kernsight-test-images.
pub fn busybox_archive() -> PathBuf {
    let archive =
        Path::new(CACHE).join(format!("busybox-v{IMAGE_VERSION}-{}.oci.tar", std::env::consts::ARCH));
    if archive.exists() {
        return archive;
    }
    assert!(Path::new(BUSYBOX).exists(), "{BUSYBOX} is missing: apt-get install busybox-static");
    std::fs::create_dir_all(CACHE).unwrap();
    // Built beside the cache and renamed into place: concurrent builders never see half a file.
    let work = tempfile::Builder::new().prefix("build-").tempdir_in(CACHE).unwrap();
    let built = build(work.path());
    std::fs::rename(&built, &archive).unwrap();
    archive
}

fn build(work: &Path) -> PathBuf {
    let rootfs = work.join("rootfs");
    for dir in ["bin", "etc", "tmp", "proc", "sys", "dev"] {
        std::fs::create_dir_all(rootfs.join(dir)).unwrap();
    }
    std::fs::copy(BUSYBOX, rootfs.join("bin/busybox")).unwrap();
    for applet in APPLETS {
        symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
    let layer_tar = work.join("layer.tar");
    run(Command::new("tar")
        .args(["--numeric-owner", "--owner=0", "--group=0", "--sort=name"])
        .args(["--mtime=@0", "-C"])
        .arg(&rootfs)
        .arg("-cf")
        .arg(&layer_tar)
        .arg("."));

    let layout = work.join("oci");
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let layer = blob(&blobs, &std::fs::read(&layer_tar).unwrap());
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let config = serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "config": {
            "Cmd": ["/bin/sleep", "3600"],
            "Env": ["PATH=/bin"],
        },
        "rootfs": { "type": "layers", "diff_ids": [layer.digest] },
    });
    let config = blob(&blobs, config.to_string().as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config.digest,
            "size": config.size,
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": layer.digest,
            "size": layer.size,
        }],
    });
    let manifest = blob(&blobs, manifest.to_string().as_bytes());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest.digest,
            "size": manifest.size,
            "platform": { "architecture": arch, "os": "linux" },
            "annotations": {
                // containerd names the imported image after this annotation.
                "io.containerd.image.name": image_name(),
                "org.opencontainers.image.ref.name": IMAGE_VERSION,
            },
        }],
    });
    std::fs::write(layout.join("index.json"), index.to_string()).unwrap();
    std::fs::write(layout.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();

    let archive = work.join("image.tar");
    run(Command::new("tar").arg("-C").arg(&layout).arg("-cf").arg(&archive).args([
        "oci-layout",
        "index.json",
        "blobs",
    ]));
    archive
}

struct Blob {
    digest: String,
    size: usize,
}

/// Stores `content` under its digest.
fn blob(blobs: &Path, content: &[u8]) -> Blob {
    let hex = sha256_hex(content);
    let mut file = std::fs::File::create(blobs.join(&hex)).unwrap();
    file.write_all(content).unwrap();
    Blob { digest: format!("sha256:{hex}"), size: content.len() }
}

pub fn sha256_hex(content: &[u8]) -> String {
    Sha256::digest(content).iter().map(|byte| format!("{byte:02x}")).collect()
}

fn run(command: &mut Command) {
    let output = command.output().unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(output.status.success(), "{command:?} failed: {}", String::from_utf8_lossy(&output.stderr));
}
