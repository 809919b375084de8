//! Build a single-layer OCI image from files on disk, with no base image,
//! and ship it: push to a registry, or write an OCI-layout or docker-archive
//! tarball. The tests and the benchmark make their image this way.

use std::collections::BTreeMap;
use std::path::Path;

use berth_types::time::rfc3339_nanos;
use oci_client::client::{Client, ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::RegistryOperation;
use serde_json::json;

use crate::error::{Result, RuntimeError};
use crate::registry::{map_error, parse_reference};

pub const MT_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MT_OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const MT_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MT_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

pub enum Entry {
    Dir {
        path: String,
        mode: u32,
    },
    File {
        path: String,
        mode: u32,
        data: Vec<u8>,
    },
    /// A symbolic link to `target`, stored as is (the tests make images
    /// whose links point where they should not).
    Symlink {
        path: String,
        target: String,
    },
}

pub struct ImageSpec {
    pub entries: Vec<Entry>,
    pub env: Vec<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub working_dir: String,
    pub user: String,
    pub architecture: String,
    pub os: String,
}

/// The blobs of a built image.
pub struct BuiltImage {
    pub layer: Vec<u8>,
    pub layer_digest: String,
    pub config: Vec<u8>,
    pub config_digest: String,
    pub manifest: Vec<u8>,
    pub manifest_digest: String,
}

fn digest(data: &[u8]) -> String {
    crate::containerd_sha256(data)
}

pub fn build(spec: &ImageSpec) -> Result<BuiltImage> {
    let io = |e: std::io::Error| RuntimeError::io("build image layer", e);
    let mut builder = tar::Builder::new(Vec::new());
    for e in &spec.entries {
        let mut h = tar::Header::new_gnu();
        // Fixed times and owners keep the layer digest reproducible.
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        match e {
            Entry::Dir { path, mode } => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(*mode);
                h.set_size(0);
                builder
                    .append_data(
                        &mut h,
                        format!("{}/", path.trim_end_matches('/')),
                        std::io::empty(),
                    )
                    .map_err(io)?;
            }
            Entry::Symlink { path, target } => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                builder.append_link(&mut h, path, target).map_err(io)?;
            }
            Entry::File { path, mode, data } => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_size(data.len() as u64);
                builder
                    .append_data(&mut h, path, data.as_slice())
                    .map_err(io)?;
            }
        }
    }
    let layer = builder.into_inner().map_err(io)?;
    let layer_digest = digest(&layer);
    let config = serde_json::to_vec(&json!({
        "created": rfc3339_nanos(std::time::UNIX_EPOCH),
        "architecture": spec.architecture,
        "os": spec.os,
        "config": {
            "Env": spec.env,
            "Entrypoint": spec.entrypoint,
            "Cmd": spec.cmd,
            "WorkingDir": spec.working_dir,
            "User": spec.user,
        },
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        "history": [{"created_by": "berth-agent ocibuild"}],
    }))
    .map_err(|e| RuntimeError::io("encode config", std::io::Error::other(e)))?;
    let config_digest = digest(&config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MT_OCI_MANIFEST,
        "config": {"mediaType": MT_OCI_CONFIG, "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": MT_OCI_LAYER, "digest": layer_digest, "size": layer.len()}],
    }))
    .map_err(|e| RuntimeError::io("encode manifest", std::io::Error::other(e)))?;
    let manifest_digest = digest(&manifest);
    Ok(BuiltImage {
        layer,
        layer_digest,
        config,
        config_digest,
        manifest,
        manifest_digest,
    })
}

impl BuiltImage {
    /// Push to a registry reached over plain HTTP (a local test registry).
    pub async fn push_insecure(&self, reference: &str) -> Result<()> {
        self.push_insecure_as(reference, None).await
    }

    /// Push over plain HTTP with basic credentials, when given.
    pub async fn push_insecure_as(
        &self,
        reference: &str,
        basic: Option<(&str, &str)>,
    ) -> Result<()> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let r = parse_reference(reference)?;
        let client = Client::new(ClientConfig {
            protocol: ClientProtocol::Http,
            ..Default::default()
        });
        let auth = match basic {
            Some((u, p)) => RegistryAuth::Basic(u.to_string(), p.to_string()),
            None => RegistryAuth::Anonymous,
        };
        client
            .auth(&r, &auth, RegistryOperation::Push)
            .await
            .map_err(|e| map_error(&r, e))?;
        client
            .push_blob(&r, self.layer.clone(), &self.layer_digest)
            .await
            .map_err(|e| map_error(&r, e))?;
        client
            .push_blob(&r, self.config.clone(), &self.config_digest)
            .await
            .map_err(|e| map_error(&r, e))?;
        let ct = http_header(MT_OCI_MANIFEST);
        client
            .push_manifest_raw(&r, self.manifest.clone(), ct)
            .await
            .map_err(|e| map_error(&r, e))?;
        Ok(())
    }

    /// Push an index naming this manifest under a platform of choice (for
    /// platform-selection tests).
    pub async fn push_index_insecure(
        &self,
        reference: &str,
        os: &str,
        arch: &str,
    ) -> Result<String> {
        self.push_insecure(&format!("{}@{}", repo_of(reference), self.manifest_digest))
            .await?;
        let r = parse_reference(reference)?;
        let index = serde_json::to_vec(&self.index_json(os, arch, None))
            .map_err(|e| RuntimeError::io("encode index", std::io::Error::other(e)))?;
        let client = Client::new(ClientConfig {
            protocol: ClientProtocol::Http,
            ..Default::default()
        });
        client
            .push_manifest_raw(&r, index.clone(), http_header(MT_OCI_INDEX))
            .await
            .map_err(|e| map_error(&r, e))?;
        Ok(digest(&index))
    }

    fn index_json(&self, os: &str, arch: &str, name: Option<&str>) -> serde_json::Value {
        let mut desc = json!({
            "mediaType": MT_OCI_MANIFEST,
            "digest": self.manifest_digest,
            "size": self.manifest.len(),
            "platform": {"os": os, "architecture": arch},
        });
        if let Some(n) = name {
            desc["annotations"] = json!({
                "io.containerd.image.name": n,
                "org.opencontainers.image.ref.name": n,
            });
        }
        json!({"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": [desc]})
    }

    /// An OCI image layout tarball naming the image `name`.
    pub fn write_oci_layout(&self, name: &str, out: &Path) -> Result<()> {
        let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        files.insert(
            "oci-layout".into(),
            br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
        );
        let index = serde_json::to_vec(&self.index_json("linux", &crate::host_arch(), Some(name)))
            .map_err(|e| RuntimeError::io("encode index", std::io::Error::other(e)))?;
        files.insert("index.json".into(), index);
        for (d, data) in [
            (&self.layer_digest, &self.layer),
            (&self.config_digest, &self.config),
            (&self.manifest_digest, &self.manifest),
        ] {
            files.insert(
                format!("blobs/sha256/{}", d.trim_start_matches("sha256:")),
                data.clone(),
            );
        }
        write_tar(out, &files, &["blobs", "blobs/sha256"])
    }

    /// A `docker save` style archive tagged `tag`.
    pub fn write_docker_archive(&self, tag: &str, out: &Path) -> Result<()> {
        let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let config_name = format!("{}.json", self.config_digest.trim_start_matches("sha256:"));
        let layer_name = format!(
            "{}/layer.tar",
            self.layer_digest.trim_start_matches("sha256:")
        );
        let manifest = serde_json::to_vec(&json!([{
            "Config": config_name,
            "RepoTags": [tag],
            "Layers": [layer_name],
        }]))
        .map_err(|e| RuntimeError::io("encode manifest.json", std::io::Error::other(e)))?;
        files.insert("manifest.json".into(), manifest);
        files.insert(config_name, self.config.clone());
        files.insert(layer_name.clone(), self.layer.clone());
        let dir = layer_name.trim_end_matches("/layer.tar").to_string();
        write_tar(out, &files, &[dir.as_str()])
    }
}

fn repo_of(reference: &str) -> String {
    match reference.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => repo.to_string(),
        _ => reference.to_string(),
    }
}

fn http_header(v: &'static str) -> http::HeaderValue {
    http::HeaderValue::from_static(v)
}

fn write_tar(out: &Path, files: &BTreeMap<String, Vec<u8>>, dirs: &[&str]) -> Result<()> {
    let io = |e: std::io::Error| RuntimeError::io(format!("write {}", out.display()), e);
    let f = std::fs::File::create(out).map_err(io)?;
    let mut b = tar::Builder::new(f);
    for d in dirs {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        h.set_mtime(0);
        b.append_data(&mut h, format!("{d}/"), std::io::empty())
            .map_err(io)?;
    }
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_mtime(0);
        b.append_data(&mut h, name, data.as_slice()).map_err(io)?;
    }
    b.into_inner().map_err(io)?;
    Ok(())
}

/// A one-binary image: `binary` at `/NAME` as the entrypoint, `cmd` as its
/// default arguments. For static programs on hosts with no registry (and
/// for the dev cluster's example).
pub fn single_binary_image(name: &str, binary: &[u8], cmd: &[String]) -> Result<BuiltImage> {
    build(&ImageSpec {
        entries: vec![
            Entry::Dir {
                path: "tmp".into(),
                mode: 0o1777,
            },
            Entry::File {
                path: name.to_string(),
                mode: 0o755,
                data: binary.to_vec(),
            },
        ],
        env: vec!["PATH=/".into()],
        entrypoint: vec![format!("/{name}")],
        cmd: cmd.to_vec(),
        working_dir: "/".into(),
        user: String::new(),
        architecture: crate::host_arch(),
        os: "linux".into(),
    })
}

/// Builds `berth-testapp` statically (it runs in an image with nothing else
/// in it) with the cargo that runs the tests, into its own target dir so it
/// never invalidates the workspace build; returns the binary.
pub fn static_testapp_binary(workspace_root: &Path) -> Result<Vec<u8>> {
    let io = |e: std::io::Error| RuntimeError::io("build the static berth-testapp", e);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let target_dir = workspace_root.join("target/testapp-static");
    let triple = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    let status = std::process::Command::new(cargo)
        .current_dir(workspace_root)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .args([
            "build",
            "--release",
            "-p",
            "berth-testapp",
            "--target",
            &triple,
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        .status()
        .map_err(io)?;
    if !status.success() {
        return Err(io(std::io::Error::other(
            "building the static berth-testapp failed",
        )));
    }
    std::fs::read(target_dir.join(&triple).join("release/berth-testapp")).map_err(io)
}

/// The test image: berth-testapp at /berth-testapp, with /tmp, /work and a
/// minimal /etc/passwd so user names resolve.
pub fn testapp_image(binary: &[u8]) -> Result<BuiltImage> {
    build(&ImageSpec {
        entries: vec![
            Entry::Dir { path: "etc".into(), mode: 0o755 },
            Entry::File {
                path: "etc/passwd".into(),
                mode: 0o644,
                data: b"root:x:0:0:root:/root:/berth-testapp\napp:x:1000:1000:app:/work:/berth-testapp\n".to_vec(),
            },
            Entry::File {
                path: "etc/group".into(),
                mode: 0o644,
                data: b"root:x:0:\napp:x:1000:\n".to_vec(),
            },
            Entry::Dir { path: "tmp".into(), mode: 0o1777 },
            Entry::Dir { path: "work".into(), mode: 0o777 },
            Entry::File {
                path: "berth-testapp".into(),
                mode: 0o755,
                data: binary.to_vec(),
            },
        ],
        env: vec![
            "PATH=/usr/local/bin:/usr/bin:/bin".into(),
            "TESTAPP_IMAGE_ENV=from-image".into(),
        ],
        entrypoint: vec!["/berth-testapp".into()],
        cmd: vec!["serve".into()],
        working_dir: "/".into(),
        user: String::new(),
        architecture: crate::host_arch(),
        os: "linux".into(),
    })
}
