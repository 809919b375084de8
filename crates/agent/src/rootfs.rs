//! Reading a file of a container's image (its `/etc/passwd` and
//! `/etc/group`, to resolve `USER`) straight from the layer directories of
//! its snapshot, before the container runs.
//!
//! The layers are directories on the host, and the image decides what is in
//! them: an `etc/passwd` that is a symlink to `/dev/zero`, or an `etc` that
//! links to the host's `/etc`, would make a plain read follow the link on
//! the host. So the path is resolved here, one component at a time, the way
//! the kernel resolves it inside the container: symlinks are read (never
//! followed by the host) and resolved against the image's root, `..` stops
//! at that root, and the layers are searched top down with overlayfs's
//! whiteouts and opaque directories honoured. Only a regular file is read,
//! and at most `MAX_FILE_BYTES` of it. The calls block: run them off the
//! async workers.

use std::ffi::OsString;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

/// Far more than any real `/etc/passwd`; a bigger file is refused.
pub const MAX_FILE_BYTES: u64 = 1 << 20;
/// The kernel's limit on symlinks in one lookup.
const MAX_LINKS: usize = 40;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RootfsError {
    #[error("{path} is not a regular file")]
    NotRegular { path: String },
    #[error("{path} is larger than {max} bytes")]
    TooLarge { path: String, max: u64 },
    #[error("{path}: more than {MAX_LINKS} symbolic links")]
    TooManyLinks { path: String },
    #[error("{path}: {reason}")]
    Io { path: String, reason: String },
}

/// The layer directories of a snapshot's mounts, top layer first (overlay's
/// upperdir, then its lowerdirs in order; or a bind mount's source).
pub fn layer_dirs(mounts: &[containerd_client::types::Mount]) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for m in mounts {
        if m.r#type == "bind" {
            dirs.push(PathBuf::from(&m.source));
        }
        for o in &m.options {
            if let Some(u) = o.strip_prefix("upperdir=") {
                dirs.push(PathBuf::from(u));
            }
        }
        for o in &m.options {
            if let Some(l) = o.strip_prefix("lowerdir=") {
                dirs.extend(l.split(':').map(PathBuf::from));
            }
        }
    }
    dirs
}

/// The file at `path` (absolute, as seen inside the container) in the image
/// whose layers are `layers`, top first; `None` when there is no such file.
pub fn read_file(layers: &[PathBuf], path: &str) -> Result<Option<String>, RootfsError> {
    let io = |e: std::io::Error| RootfsError::Io {
        path: path.to_string(),
        reason: e.to_string(),
    };
    // Components still to resolve, the next one last.
    let mut pending: Vec<OsString> = components(Path::new(path));
    pending.reverse();
    // The directory reached so far, free of symlinks, relative to the root.
    let mut dir: Vec<OsString> = Vec::new();
    let mut links = 0;
    while let Some(name) = pending.pop() {
        if name == ".." {
            dir.pop();
            continue;
        }
        let mut candidate = dir.clone();
        candidate.push(name);
        let Some((real, meta)) = lookup(layers, &candidate).map_err(io)? else {
            return Ok(None);
        };
        if meta.file_type().is_symlink() {
            links += 1;
            if links > MAX_LINKS {
                return Err(RootfsError::TooManyLinks {
                    path: path.to_string(),
                });
            }
            let target = std::fs::read_link(&real).map_err(io)?;
            if target.is_absolute() {
                dir.clear();
            }
            let mut more = components(&target);
            more.reverse();
            pending.extend(more);
            continue;
        }
        if pending.is_empty() {
            if !meta.file_type().is_file() {
                return Err(RootfsError::NotRegular {
                    path: path.to_string(),
                });
            }
            return read_regular(&real, path).map(Some);
        }
        if !meta.is_dir() {
            return Ok(None);
        }
        dir = candidate;
    }
    // The path named a directory.
    Err(RootfsError::NotRegular {
        path: path.to_string(),
    })
}

/// `.` dropped, `..` kept (it is resolved against the directory reached).
fn components(path: &Path) -> Vec<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect()
}

/// The topmost layer's entry for `rel` (whose parent is known to be a
/// directory in the merged view), as overlayfs would find it. Each prefix
/// is checked in the layer itself, so a symlink a layer has where an upper
/// layer has a directory is never followed.
fn lookup(
    layers: &[PathBuf],
    rel: &[OsString],
) -> std::io::Result<Option<(PathBuf, std::fs::Metadata)>> {
    'layers: for layer in layers {
        let mut real = layer.clone();
        let mut opaque = false;
        for (i, name) in rel.iter().enumerate() {
            real.push(name);
            let meta = match std::fs::symlink_metadata(&real) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if opaque {
                        // An opaque directory hides what lower layers hold.
                        return Ok(None);
                    }
                    continue 'layers;
                }
                Err(e) => return Err(e),
            };
            if is_whiteout(&meta) {
                return Ok(None);
            }
            if i + 1 == rel.len() {
                return Ok(Some((real, meta)));
            }
            if !meta.is_dir() {
                // A non-directory here hides the lower layers' directory.
                return Ok(None);
            }
            opaque |= is_opaque(&real);
        }
    }
    Ok(None)
}

/// overlayfs marks a deleted file with a 0/0 character device.
fn is_whiteout(meta: &std::fs::Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

/// overlayfs marks a directory that replaces (not merges with) the lower
/// layers' with an xattr (`trusted.` as root, `user.` with userxattr).
fn is_opaque(dir: &Path) -> bool {
    ["trusted.overlay.opaque", "user.overlay.opaque"]
        .iter()
        .any(|name| {
            let mut value = [0u8; 1];
            matches!(rustix::fs::lgetxattr(dir, *name, &mut value), Ok(1) if value[0] == b'y')
        })
}

/// Opens without following a final symlink and without blocking on a FIFO
/// (either could have replaced the file since it was looked at), checks
/// the open file is regular, and reads at most `MAX_FILE_BYTES`.
fn read_regular(real: &Path, path: &str) -> Result<String, RootfsError> {
    let io = |e: std::io::Error| RootfsError::Io {
        path: path.to_string(),
        reason: e.to_string(),
    };
    let flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits() as i32)
        .open(real)
        .map_err(io)?;
    if !file.metadata().map_err(io)?.is_file() {
        return Err(RootfsError::NotRegular {
            path: path.to_string(),
        });
    }
    let mut data = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut data)
        .map_err(io)?;
    if data.len() as u64 > MAX_FILE_BYTES {
        return Err(RootfsError::TooLarge {
            path: path.to_string(),
            max: MAX_FILE_BYTES,
        });
    }
    Ok(String::from_utf8_lossy(&data).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    const PASSWD: &str = "root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/app:/bin/sh\n";

    struct Image {
        _dir: tempfile::TempDir,
        /// Top layer first.
        layers: Vec<PathBuf>,
        /// A directory outside every layer: the host.
        host: PathBuf,
    }

    fn image(n: usize) -> Image {
        let dir = tempfile::tempdir().expect("tempdir");
        let layers: Vec<PathBuf> = (0..n).map(|i| dir.path().join(format!("l{i}"))).collect();
        for l in &layers {
            std::fs::create_dir_all(l.join("etc")).expect("mkdir");
        }
        let host = dir.path().join("host");
        std::fs::create_dir_all(&host).expect("mkdir");
        Image {
            _dir: dir,
            layers,
            host,
        }
    }

    #[test]
    fn a_plain_file_and_the_topmost_layer_win() {
        let img = image(2);
        std::fs::write(img.layers[1].join("etc/passwd"), "lower\n").expect("write");
        assert_eq!(
            read_file(&img.layers, "/etc/passwd"),
            Ok(Some("lower\n".to_string()))
        );
        std::fs::write(img.layers[0].join("etc/passwd"), PASSWD).expect("write");
        assert_eq!(
            read_file(&img.layers, "/etc/passwd"),
            Ok(Some(PASSWD.to_string()))
        );
        assert_eq!(read_file(&img.layers, "/etc/group"), Ok(None));
    }

    #[test]
    fn a_link_to_dev_zero_is_resolved_in_the_image_not_on_the_host() {
        let img = image(1);
        symlink("/dev/zero", img.layers[0].join("etc/passwd")).expect("symlink");
        // The image has no /dev/zero: nothing to read, and nothing hangs.
        assert_eq!(read_file(&img.layers, "/etc/passwd"), Ok(None));
        // However many `..`, the walk stops at the image's root.
        std::fs::remove_file(img.layers[0].join("etc/passwd")).expect("rm");
        symlink(
            "../../../../../../../dev/zero",
            img.layers[0].join("etc/passwd"),
        )
        .expect("symlink");
        assert_eq!(read_file(&img.layers, "/etc/passwd"), Ok(None));
        // An image that has a /dev/zero of its own: it is not a regular
        // file, so it is refused, not read (mknod needs root, as every
        // test of this crate that talks to containerd does).
        std::fs::create_dir_all(img.layers[0].join("dev")).expect("mkdir");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            img.layers[0].join("dev/zero"),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0o666),
            rustix::fs::makedev(1, 5),
        )
        .expect("mknod /dev/zero in the image (run as root)");
        assert_eq!(
            read_file(&img.layers, "/etc/passwd"),
            Err(RootfsError::NotRegular {
                path: "/etc/passwd".into()
            })
        );
        // A directory is no file either.
        std::fs::remove_file(img.layers[0].join("etc/passwd")).expect("rm");
        symlink("/dev", img.layers[0].join("etc/passwd")).expect("symlink");
        assert_eq!(
            read_file(&img.layers, "/etc/passwd"),
            Err(RootfsError::NotRegular {
                path: "/etc/passwd".into()
            })
        );
    }

    #[test]
    fn a_link_to_a_host_file_reads_the_images_file_of_that_name() {
        let img = image(1);
        let secret = img.host.join("shadow");
        std::fs::write(&secret, "evil:x:4242:4242::/:/bin/sh\n").expect("write");
        symlink(&secret, img.layers[0].join("etc/passwd")).expect("symlink");
        assert_eq!(read_file(&img.layers, "/etc/passwd"), Ok(None));
        // The same path inside the image is what the container would see.
        let inside = img.layers[0].join(secret.strip_prefix("/").expect("absolute"));
        std::fs::create_dir_all(inside.parent().expect("parent")).expect("mkdir");
        std::fs::write(&inside, PASSWD).expect("write");
        assert_eq!(
            read_file(&img.layers, "/etc/passwd"),
            Ok(Some(PASSWD.to_string()))
        );
    }

    #[test]
    fn a_linked_directory_is_resolved_in_the_image() {
        let img = image(2);
        std::fs::write(img.host.join("passwd"), "evil:x:4242:4242::/:/bin/sh\n").expect("w");
        std::fs::remove_dir(img.layers[0].join("etc")).expect("rm");
        symlink(&img.host, img.layers[0].join("etc")).expect("symlink");
        assert_eq!(read_file(&img.layers, "/etc/passwd"), Ok(None));
        // A lower layer's link is hidden by an upper layer's directory
        // and never followed.
        std::fs::remove_file(img.layers[0].join("etc")).expect("rm");
        std::fs::create_dir(img.layers[0].join("etc")).expect("mkdir");
        std::fs::remove_dir(img.layers[1].join("etc")).expect("rm");
        symlink(&img.host, img.layers[1].join("etc")).expect("symlink");
        assert_eq!(read_file(&img.layers, "/etc/passwd"), Ok(None));
        // Links inside the image work, relative and absolute.
        std::fs::create_dir_all(img.layers[1].join("usr/lib")).expect("mkdir");
        std::fs::write(img.layers[1].join("usr/lib/passwd"), PASSWD).expect("write");
        symlink("../usr/lib/passwd", img.layers[0].join("etc/passwd")).expect("symlink");
        assert_eq!(
            read_file(&img.layers, "/etc/passwd"),
            Ok(Some(PASSWD.to_string()))
        );
        symlink("/usr/lib/passwd", img.layers[0].join("etc/group")).expect("symlink");
        assert_eq!(
            read_file(&img.layers, "/etc/group"),
            Ok(Some(PASSWD.to_string()))
        );
    }

    #[test]
    fn loops_fifos_and_big_files_are_refused() {
        let img = image(1);
        let etc = img.layers[0].join("etc");
        symlink("group", etc.join("passwd")).expect("symlink");
        symlink("passwd", etc.join("group")).expect("symlink");
        assert_eq!(
            read_file(&img.layers, "/etc/passwd"),
            Err(RootfsError::TooManyLinks {
                path: "/etc/passwd".into()
            })
        );
        std::fs::remove_file(etc.join("passwd")).expect("rm");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            etc.join("passwd"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
            0,
        )
        .expect("mkfifo");
        assert_eq!(
            read_file(&img.layers, "/etc/passwd"),
            Err(RootfsError::NotRegular {
                path: "/etc/passwd".into()
            })
        );
        std::fs::remove_file(etc.join("passwd")).expect("rm");
        let big = vec![b'x'; MAX_FILE_BYTES as usize + 1];
        std::fs::write(etc.join("passwd"), &big).expect("write");
        assert_eq!(
            read_file(&img.layers, "/etc/passwd"),
            Err(RootfsError::TooLarge {
                path: "/etc/passwd".into(),
                max: MAX_FILE_BYTES
            })
        );
        std::fs::write(etc.join("passwd"), &big[1..]).expect("write");
        assert!(
            matches!(read_file(&img.layers, "/etc/passwd"), Ok(Some(s)) if s.len() == big.len() - 1)
        );
    }

    #[test]
    fn whiteouts_and_opaque_directories_hide_lower_layers() {
        let img = image(2);
        std::fs::write(img.layers[1].join("etc/passwd"), PASSWD).expect("write");
        // A whiteout: a 0/0 character device.
        rustix::fs::mknodat(
            rustix::fs::CWD,
            img.layers[0].join("etc/passwd"),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0),
            0,
        )
        .expect("mknod a whiteout (run as root)");
        assert_eq!(read_file(&img.layers, "/etc/passwd"), Ok(None));
        std::fs::remove_file(img.layers[0].join("etc/passwd")).expect("rm");
        assert!(read_file(&img.layers, "/etc/passwd").is_ok_and(|f| f.is_some()));
        rustix::fs::setxattr(
            img.layers[0].join("etc"),
            "trusted.overlay.opaque",
            b"y",
            rustix::fs::XattrFlags::empty(),
        )
        .expect("set the opaque xattr (run as root)");
        assert_eq!(read_file(&img.layers, "/etc/passwd"), Ok(None));
    }
}
