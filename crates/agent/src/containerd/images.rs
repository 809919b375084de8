//! Images: pull (containerd's Transfer service where the daemon has it,
//! else client-side through Content, Images, Snapshots, Diff and Leases, as
//! containerd 1.6 needs), import of tarballs, and unpacking into snapshots.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use containerd_client::services::v1::snapshots::{
    CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
};
use containerd_client::services::v1::{
    ApplyRequest, CreateImageRequest, GetImageRequest, Image, TransferRequest, UpdateImageRequest,
};
use containerd_client::types::transfer::{
    ImageStore, OciRegistry, RegistryResolver, UnpackConfiguration,
};
use containerd_client::types::{Descriptor, Platform};
use futures::StreamExt;
use oci_client::Reference;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use tonic::Code;
use tracing::{debug, info, info_span, warn, Instrument};

use super::content::{sha256_digest, Lease};
use super::Inner;
use crate::error::{Result, RuntimeError};
use crate::registry::{map_error, parse_reference};
use crate::runtime::{ImageInfo, PullPolicy};
use crate::spec::ImageRunConfig;

pub const MT_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MT_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MT_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const MT_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MT_DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const MT_DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
pub const MT_DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

const ACCEPT: &[&str] = &[
    MT_OCI_INDEX,
    MT_OCI_MANIFEST,
    MT_DOCKER_LIST,
    MT_DOCKER_MANIFEST,
];

/// An image ready to run: what containerd stores plus the run config.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    pub info: ImageInfo,
    pub run: ImageRunConfig,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedImage {
    pub name: String,
    pub digest: String,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OciDescriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    pub size: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<OciPlatform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<HashMap<String, String>>,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct OciPlatform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<OciDescriptor>,
    #[serde(default)]
    layers: Option<Vec<OciDescriptor>>,
    #[serde(default)]
    manifests: Option<Vec<OciDescriptor>>,
}

#[derive(Debug, Clone, Deserialize)]
struct ImageConfigFile {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(default)]
    config: Option<ImageRunConfig>,
    rootfs: RootFs,
}

#[derive(Debug, Clone, Deserialize)]
struct RootFs {
    diff_ids: Vec<String>,
}

/// This host's platform in OCI terms.
pub fn host_platform() -> (String, String) {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    };
    ("linux".to_string(), arch.to_string())
}

fn platform_str(p: &OciPlatform) -> String {
    match &p.variant {
        Some(v) => format!("{}/{}/{}", p.os, p.architecture, v),
        None => format!("{}/{}", p.os, p.architecture),
    }
}

/// Pick this host's manifest from an index.
fn select_platform(reference: &str, manifests: &[OciDescriptor]) -> Result<OciDescriptor> {
    let (os, arch) = host_platform();
    manifests
        .iter()
        .find(|m| {
            m.platform
                .as_ref()
                .is_some_and(|p| p.os == os && p.architecture == arch)
        })
        .cloned()
        .ok_or_else(|| RuntimeError::PlatformMismatch {
            reference: reference.to_string(),
            wanted: format!("{os}/{arch}"),
            available: manifests
                .iter()
                .map(|m| {
                    m.platform
                        .as_ref()
                        .map(platform_str)
                        .unwrap_or_else(|| "?".into())
                })
                .collect::<Vec<_>>()
                .join(", "),
        })
}

fn is_index(media_type: &str, m: &Manifest) -> bool {
    media_type == MT_OCI_INDEX || media_type == MT_DOCKER_LIST || m.manifests.is_some()
}

fn parse_manifest(reference: &str, bytes: &[u8]) -> Result<Manifest> {
    serde_json::from_slice(bytes).map_err(|e| RuntimeError::InvalidImage {
        reference: reference.to_string(),
        reason: format!("manifest is not valid JSON: {e}"),
    })
}

fn parse_config(reference: &str, bytes: &[u8]) -> Result<ImageConfigFile> {
    serde_json::from_slice(bytes).map_err(|e| RuntimeError::InvalidImage {
        reference: reference.to_string(),
        reason: format!("image config is not valid: {e}"),
    })
}

fn check_config_platform(reference: &str, cfg: &ImageConfigFile) -> Result<()> {
    let (os, arch) = host_platform();
    if (!cfg.os.is_empty() && cfg.os != os)
        || (!cfg.architecture.is_empty() && cfg.architecture != arch)
    {
        return Err(RuntimeError::PlatformMismatch {
            reference: reference.to_string(),
            wanted: format!("{os}/{arch}"),
            available: format!("{}/{}", cfg.os, cfg.architecture),
        });
    }
    Ok(())
}

pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(parent) => format!(
                "sha256:{}",
                hex::encode(Sha256::digest(format!("{parent} {d}").as_bytes()))
            ),
        };
        out.push(next);
    }
    out
}

fn verify(what: &str, expected: &str, data: &[u8]) -> Result<()> {
    let actual = sha256_digest(data);
    if actual != expected {
        return Err(RuntimeError::DigestMismatch {
            what: what.to_string(),
            expected: expected.to_string(),
            actual,
        });
    }
    Ok(())
}

/// Labels that keep a manifest's layers and config alive in containerd's
/// garbage collector for as long as the manifest is.
fn manifest_gc_labels<'a>(
    layer_digests: impl IntoIterator<Item = &'a String>,
    config_digest: &str,
) -> HashMap<String, String> {
    let layers: Vec<String> = layer_digests.into_iter().cloned().collect();
    let mut labels = gc_labels("l", &layers);
    labels.insert(
        "containerd.io/gc.ref.content.config".into(),
        config_digest.to_string(),
    );
    labels
}

fn gc_labels(prefix: &str, digests: &[String]) -> HashMap<String, String> {
    digests
        .iter()
        .enumerate()
        .map(|(i, d)| {
            (
                format!("containerd.io/gc.ref.content.{prefix}.{i}"),
                d.clone(),
            )
        })
        .collect()
}

/// `ensure_image`: the cached answer, the local image, or a pull.
pub(super) async fn ensure(
    inner: &Arc<Inner>,
    reference: &str,
    policy: PullPolicy,
) -> Result<Arc<ResolvedImage>> {
    let parsed = parse_reference(reference)?;
    let name = parsed.whole();
    if policy == PullPolicy::IfNotPresent {
        if let Some(img) = inner
            .images
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&name)
        {
            return Ok(img.clone());
        }
    }
    // One pull per name at a time; the waiters then find it local.
    let lock = inner
        .pull_locks
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(name.clone())
        .or_default()
        .clone();
    let _guard = lock.lock().await;
    if policy == PullPolicy::IfNotPresent {
        if let Some(img) = inner
            .images
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&name)
        {
            return Ok(img.clone());
        }
        if let Some(img) = resolve_local(inner, &name).await? {
            return Ok(remember(inner, img));
        }
    }
    let span = info_span!("pull", image = %name);
    let img = pull(inner, &parsed, &name).instrument(span).await?;
    Ok(remember(inner, img))
}

fn remember(inner: &Inner, img: ResolvedImage) -> Arc<ResolvedImage> {
    let img = Arc::new(img);
    inner
        .images
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(img.info.name.clone(), img.clone());
    img
}

/// The image as containerd has it, unpacked; `None` when it is not there.
async fn resolve_local(inner: &Inner, name: &str) -> Result<Option<ResolvedImage>> {
    let image = match inner
        .client
        .images()
        .get(inner.request(GetImageRequest {
            name: name.to_string(),
        }))
        .await
    {
        Ok(r) => r.into_inner().image,
        Err(s) if s.code() == Code::NotFound => return Ok(None),
        Err(s) => return Err(RuntimeError::containerd("get image", s)),
    };
    let Some(target) = image.and_then(|i| i.target) else {
        return Ok(None);
    };
    let top = inner.read_content(&target.digest).await?;
    let top_m = parse_manifest(name, &top)?;
    let manifest_digest = if is_index(&target.media_type, &top_m) {
        select_platform(name, top_m.manifests.as_deref().unwrap_or_default())?.digest
    } else {
        target.digest.clone()
    };
    let manifest = if manifest_digest == target.digest {
        top_m
    } else {
        parse_manifest(name, &inner.read_content(&manifest_digest).await?)?
    };
    let (config_desc, layers) = manifest_parts(name, &manifest)?;
    let config_bytes = inner.read_content(&config_desc.digest).await?;
    let config = parse_config(name, &config_bytes)?;
    let chain_id = unpack(inner, None, name, &config, &layers, &config_desc.digest).await?;
    Ok(Some(ResolvedImage {
        info: ImageInfo {
            name: name.to_string(),
            digest: target.digest,
            manifest_digest,
            config_digest: config_desc.digest,
            chain_id,
        },
        run: config.config.unwrap_or_default(),
    }))
}

fn manifest_parts(name: &str, m: &Manifest) -> Result<(OciDescriptor, Vec<OciDescriptor>)> {
    let config = m.config.clone().ok_or_else(|| RuntimeError::InvalidImage {
        reference: name.to_string(),
        reason: "manifest has no config".into(),
    })?;
    Ok((config, m.layers.clone().unwrap_or_default()))
}

async fn pull(inner: &Arc<Inner>, reference: &Reference, name: &str) -> Result<ResolvedImage> {
    let started = std::time::Instant::now();
    let fetched = Arc::new(AtomicU64::new(0));
    let pulled = pull_from_registry(inner, reference, name, &fetched).await;
    let bytes = fetched.load(Ordering::Relaxed);
    debug!(bytes, ok = pulled.is_ok(), "blob bytes fetched by the pull");
    crate::exporter::metrics().image_pulled(pulled.is_ok(), started.elapsed().as_secs_f64(), bytes);
    pulled
}

/// `fetched` counts the bytes of the blobs (config, layers) the pull takes
/// from the registry itself; a pull containerd does through Transfer
/// fetches out of our sight and adds nothing.
async fn pull_from_registry(
    inner: &Arc<Inner>,
    reference: &Reference,
    name: &str,
    fetched: &Arc<AtomicU64>,
) -> Result<ResolvedImage> {
    let registry = reference.resolve_registry().to_string();
    // containerd's Transfer pull cannot be given credentials here: a pull
    // that has some goes client-side.
    let has_credentials = crate::registry::task_credentials().is_some()
        || inner
            .registries
            .config()
            .credentials
            .contains_key(&registry);
    if !has_credentials && !inner.transfer_unsupported.load(Ordering::Relaxed) {
        match pull_with_transfer(inner, reference, name).await {
            Ok(()) => {
                if let Some(img) = resolve_local(inner, name).await? {
                    return Ok(img);
                }
            }
            Err(TransferOutcome::Unsupported) => {
                info!("containerd has no Transfer service (containerd < 1.7): pulling client-side");
                inner.transfer_unsupported.store(true, Ordering::Relaxed);
            }
            Err(TransferOutcome::Failed(s)) => {
                debug!(error = %s.message(), "transfer pull failed; pulling client-side for a precise error");
            }
        }
    }
    pull_client_side(inner, reference, name, fetched).await
}

pub(crate) enum TransferOutcome {
    Unsupported,
    Failed(tonic::Status),
}

/// containerd 1.7+ pulls and unpacks by itself through Transfer.
pub(crate) async fn pull_with_transfer(
    inner: &Inner,
    reference: &Reference,
    name: &str,
) -> std::result::Result<(), TransferOutcome> {
    let (os, arch) = host_platform();
    let platform = Platform {
        os,
        architecture: arch,
        ..Default::default()
    };
    let insecure = inner
        .registries
        .config()
        .is_insecure(reference.resolve_registry());
    let source = OciRegistry {
        reference: reference.whole(),
        resolver: Some(RegistryResolver {
            default_scheme: if insecure {
                "http".into()
            } else {
                String::new()
            },
            ..Default::default()
        }),
    };
    let dest = ImageStore {
        name: name.to_string(),
        platforms: vec![platform.clone()],
        unpacks: vec![UnpackConfiguration {
            platform: Some(platform),
            snapshotter: inner.cfg.snapshotter.clone(),
        }],
        ..Default::default()
    };
    let req = TransferRequest {
        source: Some(containerd_client::to_any(&source)),
        destination: Some(containerd_client::to_any(&dest)),
        options: None,
    };
    match inner.client.transfer().transfer(inner.request(req)).await {
        Ok(_) => Ok(()),
        Err(s) if s.code() == Code::Unimplemented => Err(TransferOutcome::Unsupported),
        Err(s) => Err(TransferOutcome::Failed(s)),
    }
}

async fn pull_client_side(
    inner: &Arc<Inner>,
    reference: &Reference,
    name: &str,
    fetched: &Arc<AtomicU64>,
) -> Result<ResolvedImage> {
    let registry = reference.resolve_registry().to_string();
    let (client, auth) = match crate::registry::task_credentials() {
        Some((user, password)) => (
            inner.registries.unshared_client(&registry),
            oci_client::secrets::RegistryAuth::Basic(user, password),
        ),
        None => (
            inner.registries.client(&registry),
            inner.registries.config().auth_for(&registry),
        ),
    };
    let (top_bytes, top_digest) = client
        .pull_manifest_raw(reference, &auth, ACCEPT)
        .await
        .map_err(|e| map_error(reference, e))?;
    verify(&format!("manifest of {name}"), &top_digest, &top_bytes)?;
    if let Some(d) = reference.digest() {
        verify(&format!("manifest of {name}"), d, &top_bytes)?;
    }
    let top = parse_manifest(name, &top_bytes)?;
    let top_media = top.media_type.clone().unwrap_or_else(|| {
        if top.manifests.is_some() {
            MT_OCI_INDEX.into()
        } else {
            MT_OCI_MANIFEST.into()
        }
    });

    let (manifest_bytes, manifest_digest, manifest_media, index) = if is_index(&top_media, &top) {
        let chosen = select_platform(name, top.manifests.as_deref().unwrap_or_default())?;
        let by_digest = reference.clone_with_digest(chosen.digest.clone());
        let (bytes, digest) = client
            .pull_manifest_raw(&by_digest, &auth, ACCEPT)
            .await
            .map_err(|e| map_error(reference, e))?;
        verify(&format!("manifest of {name}"), &chosen.digest, &bytes)?;
        let _ = digest;
        let media = if chosen.media_type.is_empty() {
            MT_OCI_MANIFEST.to_string()
        } else {
            chosen.media_type.clone()
        };
        (bytes, chosen.digest, media, Some(top.clone()))
    } else {
        (
            top_bytes.clone(),
            top_digest.clone(),
            top_media.clone(),
            None,
        )
    };
    let manifest = parse_manifest(name, &manifest_bytes)?;
    let (config_desc, layers) = manifest_parts(name, &manifest)?;

    let lease = inner.create_lease("pull").await?;
    let result = async {
        let mut config_bytes = Vec::new();
        client
            .pull_blob(reference, config_desc.digest.as_str(), &mut config_bytes)
            .await
            .map_err(|e| map_error(reference, e))?;
        fetched.fetch_add(config_bytes.len() as u64, Ordering::Relaxed);
        verify(
            &format!("config of {name}"),
            &config_desc.digest,
            &config_bytes,
        )?;
        let config = parse_config(name, &config_bytes)?;
        check_config_platform(name, &config)?;
        if config.rootfs.diff_ids.len() != layers.len() {
            return Err(RuntimeError::InvalidImage {
                reference: name.to_string(),
                reason: format!(
                    "{} layers but {} diff_ids in the config",
                    layers.len(),
                    config.rootfs.diff_ids.len()
                ),
            });
        }
        inner
            .write_blob(
                Some(&lease),
                &config_desc.digest,
                config_bytes,
                HashMap::new(),
            )
            .await?;
        for layer in &layers {
            if inner.content_info(&layer.digest).await?.is_some() {
                continue;
            }
            debug!(layer = %layer.digest, size = layer.size, "fetching layer");
            let stream = client
                .pull_blob_stream(reference, layer.digest.as_str())
                .await
                .map_err(|e| map_error(reference, e))?;
            let counter = fetched.clone();
            let mapped = stream.stream.map(move |r| {
                r.map(|b| {
                    counter.fetch_add(b.len() as u64, Ordering::Relaxed);
                    b.to_vec()
                })
                .map_err(|e| RuntimeError::RegistryUnreachable {
                    registry: String::new(),
                    reference: String::new(),
                    reason: e.to_string(),
                })
            });
            inner
                .write_stream(
                    Some(&lease),
                    &layer.digest,
                    layer.size,
                    mapped,
                    HashMap::new(),
                )
                .await?;
        }
        let mlabels = manifest_gc_labels(layers.iter().map(|l| &l.digest), &config_desc.digest);
        inner
            .write_blob(
                Some(&lease),
                &manifest_digest,
                manifest_bytes.to_vec(),
                mlabels.clone(),
            )
            .await?;
        inner.label_content(&manifest_digest, mlabels).await?;
        let target = if let Some(index) = &index {
            let children: Vec<String> = index
                .manifests
                .as_deref()
                .unwrap_or_default()
                .iter()
                .filter(|m| m.digest == manifest_digest)
                .map(|m| m.digest.clone())
                .collect();
            let ilabels = gc_labels("m", &children);
            inner
                .write_blob(
                    Some(&lease),
                    &top_digest,
                    top_bytes.to_vec(),
                    ilabels.clone(),
                )
                .await?;
            inner.label_content(&top_digest, ilabels).await?;
            Descriptor {
                media_type: top_media.clone(),
                digest: top_digest.clone(),
                size: top_bytes.len() as i64,
                annotations: HashMap::new(),
            }
        } else {
            Descriptor {
                media_type: manifest_media.clone(),
                digest: manifest_digest.clone(),
                size: manifest_bytes.len() as i64,
                annotations: HashMap::new(),
            }
        };
        let chain_id = unpack(
            inner,
            Some(&lease),
            name,
            &config,
            &layers,
            &config_desc.digest,
        )
        .await?;
        put_image(inner, name, target.clone()).await?;
        info!(digest = %target.digest, chain_id = %chain_id, "image pulled");
        Ok(ResolvedImage {
            info: ImageInfo {
                name: name.to_string(),
                digest: target.digest,
                manifest_digest: manifest_digest.clone(),
                config_digest: config_desc.digest.clone(),
                chain_id,
            },
            run: config.config.clone().unwrap_or_default(),
        })
    }
    .await;
    inner.release_lease(lease).await;
    result
}

async fn put_image(inner: &Inner, name: &str, target: Descriptor) -> Result<()> {
    let image = Image {
        name: name.to_string(),
        target: Some(target),
        ..Default::default()
    };
    match inner
        .client
        .images()
        .create(inner.request(CreateImageRequest {
            image: Some(image.clone()),
            source_date_epoch: None,
        }))
        .await
    {
        Ok(_) => Ok(()),
        Err(s) if s.code() == Code::AlreadyExists => {
            inner
                .client
                .images()
                .update(inner.request(UpdateImageRequest {
                    image: Some(image),
                    update_mask: None,
                    source_date_epoch: None,
                }))
                .await
                .map_err(|s| RuntimeError::containerd("update image", s))?;
            Ok(())
        }
        Err(s) => Err(RuntimeError::containerd("create image", s)),
    }
}

/// Apply the layers into snapshots named by chain ID; returns the top one.
/// Layers already unpacked are skipped, so this is also the check that an
/// image is complete.
async fn unpack(
    inner: &Inner,
    lease: Option<&Lease>,
    name: &str,
    config: &ImageConfigFile,
    layers: &[OciDescriptor],
    config_digest: &str,
) -> Result<String> {
    let chain = chain_ids(&config.rootfs.diff_ids);
    let snapshotter = inner.cfg.snapshotter.clone();
    let snapshots = inner.client.snapshots();
    let mut parent = String::new();
    let mut created_lease: Option<Lease> = None;
    for (i, chain_id) in chain.iter().enumerate() {
        let exists = match snapshots
            .clone()
            .stat(inner.request(StatSnapshotRequest {
                snapshotter: snapshotter.clone(),
                key: chain_id.clone(),
            }))
            .await
        {
            Ok(_) => true,
            Err(s) if s.code() == Code::NotFound => false,
            Err(s) => return Err(RuntimeError::containerd("stat snapshot", s)),
        };
        if !exists {
            let layer = layers.get(i).ok_or_else(|| RuntimeError::InvalidImage {
                reference: name.to_string(),
                reason: "fewer layers than diff_ids".into(),
            })?;
            if lease.is_none() && created_lease.is_none() {
                created_lease = Some(inner.create_lease("unpack").await?);
            }
            let l = lease.or(created_lease.as_ref());
            let r = apply_layer(
                inner,
                l,
                &snapshotter,
                &parent,
                chain_id,
                layer,
                &config.rootfs.diff_ids[i],
            )
            .await;
            if let Err(e) = r {
                if let Some(cl) = created_lease.take() {
                    inner.release_lease(cl).await;
                }
                return Err(e);
            }
        }
        parent = chain_id.clone();
    }
    // The config names the top snapshot, so GC keeps the whole chain while
    // the image exists.
    if !parent.is_empty() {
        let mut labels = HashMap::new();
        labels.insert(
            format!("containerd.io/gc.ref.snapshot.{snapshotter}"),
            parent.clone(),
        );
        inner.label_content(config_digest, labels).await?;
    }
    if let Some(cl) = created_lease {
        inner.release_lease(cl).await;
    }
    Ok(parent)
}

async fn apply_layer(
    inner: &Inner,
    lease: Option<&Lease>,
    snapshotter: &str,
    parent: &str,
    chain_id: &str,
    layer: &OciDescriptor,
    diff_id: &str,
) -> Result<()> {
    let key = format!("extract-{:016x}-{chain_id}", rand::random::<u64>());
    let mut snapshots = inner.client.snapshots();
    let mounts = snapshots
        .prepare(inner.leased(
            lease,
            PrepareSnapshotRequest {
                snapshotter: snapshotter.to_string(),
                key: key.clone(),
                parent: parent.to_string(),
                labels: HashMap::new(),
            },
        ))
        .await
        .map_err(|s| RuntimeError::containerd("prepare snapshot", s))?
        .into_inner()
        .mounts;
    let applied = inner
        .client
        .diff()
        .apply(inner.leased(
            lease,
            ApplyRequest {
                diff: Some(Descriptor {
                    media_type: layer.media_type.clone(),
                    digest: layer.digest.clone(),
                    size: layer.size,
                    annotations: HashMap::new(),
                }),
                mounts,
                payloads: HashMap::new(),
                sync_fs: false,
            },
        ))
        .await;
    let cleanup = |snapshots: &mut containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient<tonic::transport::Channel>| {
        let req = inner.request(RemoveSnapshotRequest {
            snapshotter: snapshotter.to_string(),
            key: key.clone(),
        });
        let mut s = snapshots.clone();
        async move {
            let _ = s.remove(req).await;
        }
    };
    let applied = match applied {
        Ok(r) => r.into_inner().applied,
        Err(s) => {
            cleanup(&mut snapshots).await;
            return Err(RuntimeError::containerd("apply layer", s));
        }
    };
    let applied_digest = applied.map(|d| d.digest).unwrap_or_default();
    if applied_digest != diff_id {
        cleanup(&mut snapshots).await;
        return Err(RuntimeError::DigestMismatch {
            what: format!("uncompressed layer {}", layer.digest),
            expected: diff_id.to_string(),
            actual: applied_digest,
        });
    }
    match snapshots
        .commit(inner.leased(
            lease,
            CommitSnapshotRequest {
                snapshotter: snapshotter.to_string(),
                name: chain_id.to_string(),
                key: key.clone(),
                labels: HashMap::new(),
            },
        ))
        .await
    {
        Ok(_) => Ok(()),
        // Another unpack of the same layer won; ours is redundant.
        Err(s) if s.code() == Code::AlreadyExists => {
            cleanup(&mut snapshots).await;
            Ok(())
        }
        Err(s) => {
            cleanup(&mut snapshots).await;
            Err(RuntimeError::containerd("commit snapshot", s))
        }
    }
}

/// Import an OCI-layout or docker-archive tarball.
pub(super) async fn import(inner: &Arc<Inner>, path: &Path) -> Result<Vec<ImportedImage>> {
    let span = info_span!("import", file = %path.display());
    async {
        let import_err = |reason: String| RuntimeError::Import {
            path: path.to_path_buf(),
            reason,
        };
        let dir = inner
            .cfg
            .state_dir
            .join("tmp")
            .join(format!("import-{:016x}", rand::random::<u64>()));
        let src = path.to_path_buf();
        let dir2 = dir.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            std::fs::create_dir_all(&dir2)?;
            let f = std::fs::File::open(&src)?;
            tar::Archive::new(f).unpack(&dir2)
        })
        .await
        .map_err(|e| import_err(e.to_string()))?
        .map_err(|e| import_err(format!("cannot unpack the tarball: {e}")))?;
        let result = if dir.join("index.json").exists() {
            import_oci_layout(inner, path, &dir).await
        } else if dir.join("manifest.json").exists() {
            import_docker_archive(inner, path, &dir).await
        } else {
            Err(import_err(
                "neither an OCI layout (index.json) nor a docker archive (manifest.json)".into(),
            ))
        };
        let _ = std::fs::remove_dir_all(&dir);
        result
    }
    .instrument(span)
    .await
}

fn blob_path(dir: &Path, digest: &str) -> Result<PathBuf> {
    let (alg, hex) = digest
        .split_once(':')
        .ok_or_else(|| RuntimeError::InvalidImage {
            reference: digest.to_string(),
            reason: "digest without algorithm".into(),
        })?;
    if alg != "sha256" || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(RuntimeError::InvalidImage {
            reference: digest.to_string(),
            reason: "only sha256 digests are supported".into(),
        });
    }
    Ok(dir.join("blobs").join(alg).join(hex))
}

async fn write_file_blob(
    inner: &Inner,
    lease: &Lease,
    file: &Path,
    digest: &str,
    labels: HashMap<String, String>,
) -> Result<()> {
    let f = tokio::fs::File::open(file)
        .await
        .map_err(|e| RuntimeError::io(format!("open {}", file.display()), e))?;
    let size = f
        .metadata()
        .await
        .map_err(|e| RuntimeError::io(format!("stat {}", file.display()), e))?
        .len() as i64;
    let stream =
        tokio_util_like::read_chunks(f).map(|r| r.map_err(|e| RuntimeError::io("read blob", e)));
    inner
        .write_stream(Some(lease), digest, size, stream, labels)
        .await?;
    inner.label_content(digest, HashMap::new()).await
}

mod tokio_util_like {
    use futures::Stream;
    use tokio::io::AsyncReadExt;

    pub fn read_chunks(
        mut f: tokio::fs::File,
    ) -> impl Stream<Item = std::io::Result<Vec<u8>>> + Send + 'static {
        async_stream_lite(move |tx| async move {
            loop {
                let mut buf = vec![0u8; 1 << 20];
                match f.read(&mut buf).await {
                    Ok(0) => return,
                    Ok(n) => {
                        buf.truncate(n);
                        if tx.send(Ok(buf)).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                }
            }
        })
    }

    fn async_stream_lite<T, F, Fut>(f: F) -> impl Stream<Item = T> + Send + 'static
    where
        T: Send + 'static,
        F: FnOnce(tokio::sync::mpsc::Sender<T>) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        tokio::spawn(f(tx));
        tokio_stream::wrappers::ReceiverStream::new(rx)
    }
}

/// Write a manifest's blobs (config, layers) from an OCI layout, verified.
async fn import_manifest_blobs(
    inner: &Inner,
    lease: &Lease,
    dir: &Path,
    name: &str,
    digest: &str,
) -> Result<(Manifest, Vec<u8>)> {
    let bytes = std::fs::read(blob_path(dir, digest)?)
        .map_err(|e| RuntimeError::io(format!("read manifest {digest}"), e))?;
    verify(&format!("manifest {digest}"), digest, &bytes)?;
    let m = parse_manifest(name, &bytes)?;
    let (config, layers) = manifest_parts(name, &m)?;
    write_file_blob(
        inner,
        lease,
        &blob_path(dir, &config.digest)?,
        &config.digest,
        HashMap::new(),
    )
    .await?;
    for l in &layers {
        write_file_blob(
            inner,
            lease,
            &blob_path(dir, &l.digest)?,
            &l.digest,
            HashMap::new(),
        )
        .await?;
    }
    let labels = manifest_gc_labels(layers.iter().map(|l| &l.digest), &config.digest);
    inner
        .write_blob(Some(lease), digest, bytes.clone(), labels.clone())
        .await?;
    inner.label_content(digest, labels).await?;
    Ok((m, bytes))
}

async fn import_oci_layout(
    inner: &Arc<Inner>,
    path: &Path,
    dir: &Path,
) -> Result<Vec<ImportedImage>> {
    let import_err = |reason: String| RuntimeError::Import {
        path: path.to_path_buf(),
        reason,
    };
    let index_bytes =
        std::fs::read(dir.join("index.json")).map_err(|e| import_err(e.to_string()))?;
    let index = parse_manifest("index.json", &index_bytes)?;
    let lease = inner.create_lease("import").await?;
    let result = async {
        let mut out = Vec::new();
        for desc in index.manifests.as_deref().unwrap_or_default() {
            let ann = desc.annotations.clone().unwrap_or_default();
            let raw_name = ann
                .get("io.containerd.image.name")
                .or_else(|| ann.get("org.opencontainers.image.ref.name"))
                .cloned()
                .ok_or_else(|| {
                    import_err(format!(
                        "manifest {} has no image name annotation (io.containerd.image.name or org.opencontainers.image.ref.name)",
                        desc.digest
                    ))
                })?;
            let name = parse_reference(&raw_name)?.whole();
            let (manifest_digest, manifest) = if desc.media_type == MT_OCI_INDEX || desc.media_type == MT_DOCKER_LIST {
                let bytes = std::fs::read(blob_path(dir, &desc.digest)?)
                    .map_err(|e| import_err(e.to_string()))?;
                verify("index", &desc.digest, &bytes)?;
                let sub = parse_manifest(&name, &bytes)?;
                let chosen = select_platform(&name, sub.manifests.as_deref().unwrap_or_default())?;
                let (m, _) = import_manifest_blobs(inner, &lease, dir, &name, &chosen.digest).await?;
                let labels = gc_labels("m", std::slice::from_ref(&chosen.digest));
                inner.write_blob(Some(&lease), &desc.digest, bytes, labels.clone()).await?;
                inner.label_content(&desc.digest, labels).await?;
                (chosen.digest, m)
            } else {
                let (m, _) = import_manifest_blobs(inner, &lease, dir, &name, &desc.digest).await?;
                (desc.digest.clone(), m)
            };
            let (config_desc, layers) = manifest_parts(&name, &manifest)?;
            let config = parse_config(&name, &inner.read_content(&config_desc.digest).await?)?;
            check_config_platform(&name, &config)?;
            unpack(inner, Some(&lease), &name, &config, &layers, &config_desc.digest).await?;
            put_image(
                inner,
                &name,
                Descriptor {
                    media_type: if desc.media_type.is_empty() { MT_OCI_MANIFEST.into() } else { desc.media_type.clone() },
                    digest: desc.digest.clone(),
                    size: desc.size,
                    annotations: HashMap::new(),
                },
            )
            .await?;
            let _ = manifest_digest;
            inner.images.lock().unwrap_or_else(|p| p.into_inner()).remove(&name);
            info!(image = %name, digest = %desc.digest, "image imported");
            out.push(ImportedImage {
                name,
                digest: desc.digest.clone(),
            });
        }
        Ok(out)
    }
    .await;
    inner.release_lease(lease).await;
    result
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerArchiveEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

fn sha256_file(path: &Path) -> Result<(String, i64, bool)> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)
        .map_err(|e| RuntimeError::io(format!("open {}", path.display()), e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0i64;
    let mut gzip = None;
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| RuntimeError::io("read layer", e))?;
        if n == 0 {
            break;
        }
        if gzip.is_none() {
            gzip = Some(n >= 2 && buf[0] == 0x1f && buf[1] == 0x8b);
        }
        h.update(&buf[..n]);
        size += n as i64;
    }
    Ok((
        format!("sha256:{}", hex::encode(h.finalize())),
        size,
        gzip.unwrap_or(false),
    ))
}

async fn import_docker_archive(
    inner: &Arc<Inner>,
    path: &Path,
    dir: &Path,
) -> Result<Vec<ImportedImage>> {
    let import_err = |reason: String| RuntimeError::Import {
        path: path.to_path_buf(),
        reason,
    };
    let entries: Vec<DockerArchiveEntry> = serde_json::from_slice(
        &std::fs::read(dir.join("manifest.json")).map_err(|e| import_err(e.to_string()))?,
    )
    .map_err(|e| import_err(format!("manifest.json: {e}")))?;
    let lease = inner.create_lease("import").await?;
    let result = async {
        let mut out = Vec::new();
        for entry in entries {
            let safe = |rel: &str| -> Result<PathBuf> {
                if rel.split('/').any(|c| c == "..") || rel.starts_with('/') {
                    return Err(import_err(format!("path {rel:?} escapes the archive")));
                }
                Ok(dir.join(rel))
            };
            let config_path = safe(&entry.config)?;
            let (config_digest, config_size, _) = sha256_file(&config_path)?;
            let config_bytes = std::fs::read(&config_path).map_err(|e| import_err(e.to_string()))?;
            let config = parse_config(&entry.config, &config_bytes)?;
            check_config_platform(&entry.config, &config)?;
            write_file_blob(inner, &lease, &config_path, &config_digest, HashMap::new()).await?;
            let mut layers = Vec::new();
            for l in &entry.layers {
                let lp = safe(l)?;
                let (digest, size, gz) = sha256_file(&lp)?;
                write_file_blob(inner, &lease, &lp, &digest, HashMap::new()).await?;
                layers.push(OciDescriptor {
                    media_type: if gz { MT_DOCKER_LAYER_GZIP } else { MT_DOCKER_LAYER }.to_string(),
                    digest,
                    size,
                    platform: None,
                    annotations: None,
                });
            }
            // Docker archives carry no manifest blob: make the schema 2
            // manifest docker load would.
            let manifest = serde_json::json!({
                "schemaVersion": 2,
                "mediaType": MT_DOCKER_MANIFEST,
                "config": {"mediaType": MT_DOCKER_CONFIG, "digest": config_digest, "size": config_size},
                "layers": layers,
            });
            let manifest_bytes = serde_json::to_vec(&manifest).map_err(|e| import_err(e.to_string()))?;
            let manifest_digest = sha256_digest(&manifest_bytes);
            let labels = manifest_gc_labels(layers.iter().map(|l| &l.digest), &config_digest);
            let msize = manifest_bytes.len() as i64;
            inner.write_blob(Some(&lease), &manifest_digest, manifest_bytes, labels.clone()).await?;
            inner.label_content(&manifest_digest, labels).await?;
            unpack(inner, Some(&lease), &entry.config, &config, &layers, &config_digest).await?;
            let tags = entry.repo_tags.clone().unwrap_or_default();
            if tags.is_empty() {
                warn!(config = %entry.config, "image in archive has no RepoTags; skipped");
            }
            for tag in tags {
                let name = parse_reference(&tag)?.whole();
                put_image(
                    inner,
                    &name,
                    Descriptor {
                        media_type: MT_DOCKER_MANIFEST.into(),
                        digest: manifest_digest.clone(),
                        size: msize,
                        annotations: HashMap::new(),
                    },
                )
                .await?;
                inner.images.lock().unwrap_or_else(|p| p.into_inner()).remove(&name);
                info!(image = %name, digest = %manifest_digest, "image imported");
                out.push(ImportedImage {
                    name,
                    digest: manifest_digest.clone(),
                });
            }
        }
        Ok(out)
    }
    .await;
    inner.release_lease(lease).await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_oci_definition() {
        let d = vec!["sha256:a".to_string(), "sha256:b".to_string()];
        let c = chain_ids(&d);
        assert_eq!(c[0], "sha256:a");
        assert_eq!(
            c[1],
            format!(
                "sha256:{}",
                hex::encode(Sha256::digest(b"sha256:a sha256:b"))
            )
        );
    }

    #[test]
    fn platform_selection_explains_what_is_offered() {
        let m = |arch: &str| OciDescriptor {
            media_type: MT_OCI_MANIFEST.into(),
            digest: format!("sha256:{arch}"),
            size: 1,
            platform: Some(OciPlatform {
                architecture: arch.into(),
                os: "linux".into(),
                variant: None,
            }),
            annotations: None,
        };
        let (_, arch) = host_platform();
        assert_eq!(
            select_platform("x", &[m("s390x"), m(&arch)])
                .map(|d| d.digest)
                .ok(),
            Some(format!("sha256:{arch}"))
        );
        let err = select_platform("x", &[m("s390x")])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("linux/s390x"), "{err}");
    }
}
