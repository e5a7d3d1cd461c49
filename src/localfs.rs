//! Local trust (issue 11, issue 14 point 10): the data directory and the files the
//! bridge keeps or writes (database, certificates, control socket, backups,
//! exports). What the bridge creates is 0700 (directories) or 0600 (files); an
//! existing file of ours that is looser is tightened and reported (installs made
//! under a 002 umask have 0664 files), never refused. Refused: a directory or file
//! that a user other than the trusted owner owns, that others can write (or a group
//! other than the owner's own), and a symbolic link where a file of ours must be.
//! The trusted owner is the process's user or, when the process is root (the
//! Debian package's admin), the data directory's owner, to whom whatever root
//! creates there is handed. Knows nothing of what the files hold; depends on
//! nothing of ours.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// What the bridge keeps in its data directory (relative paths): the database, the
/// generated certificate, the ACME account and certificate, the control socket.
pub(crate) const DATA_ENTRIES: &[&str] = &["scimbridge.redb", "tls", "acme", "control.sock"];

/// Why a local path is not trusted; each message says what to do.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TrustError {
    /// The data directory belongs to another user than the one running scimbridge.
    #[error(
        "the data directory {path} belongs to {owner}, not to {me}, the user running scimbridge; \
         give it to {me} (as root: `chown -R {me}: {path}`){}",
        run_as_owner(owner)
    )]
    ForeignDirectory {
        path: PathBuf,
        owner: String,
        me: String,
    },
    /// A file in the data directory belongs to another user than the directory (a
    /// backup restored or a file copied by root keeps root as its owner).
    #[error(
        "{path} belongs to {owner}, but the files in the data directory {dir} must belong to \
         its owner {trusted}, whom scimbridge runs as (a file restored or copied as another \
         user keeps that owner); as root: `chown -R {trusted}: {dir}` (restore with \
         `install -o {trusted} -g {trusted} -m 0600 BACKUP {dir}/scimbridge.redb`)"
    )]
    ForeignFile {
        path: PathBuf,
        owner: String,
        trusted: String,
        dir: PathBuf,
    },
    #[error(
        "{path} can be written by {who} (mode {mode:o}); only its owner may write the bridge's files: \
         `chmod go-w {path}` after checking nobody changed it"
    )]
    Writable {
        path: PathBuf,
        who: &'static str,
        mode: u32,
    },
    #[error("{path} is a symbolic link; the bridge's {what} must be a plain {kind}, not a link")]
    Symlink {
        path: PathBuf,
        what: &'static str,
        kind: &'static str,
    },
    #[error("{path} is not a {kind}")]
    NotKind { path: PathBuf, kind: &'static str },
    /// An IO error, with (`hint`) who owns the directory that refused the access.
    /// Not a `source`: the message says it once (printed with its source chain, it
    /// read "Permission denied (os error 13): Permission denied (os error 13)").
    #[error("{what} {path}: {error}{hint}")]
    Io {
        what: &'static str,
        path: PathBuf,
        error: std::io::Error,
        hint: String,
    },
}

/// The other remedy for a data directory of another user: running as that user,
/// unless it is root (a service should not run as root to read its own files).
fn run_as_owner(owner: &str) -> String {
    if owner == "root" {
        String::new()
    } else {
        format!(", or run scimbridge as {owner} (`runuser -u {owner} -- scimbridge …`)")
    }
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> TrustError {
    let path = path.to_owned();
    move |error| {
        let hint = match error.kind() {
            std::io::ErrorKind::PermissionDenied => denied_by(&path),
            _ => String::new(),
        };
        TrustError::Io {
            what,
            path,
            error,
            hint,
        }
    }
}

/// Who refused access to `path`: its nearest existing ancestor (the directory this
/// user may not enter or write), its owner and mode, and the two remedies.
fn denied_by(path: &Path) -> String {
    let Some((dir, meta)) = path
        .ancestors()
        .skip(1)
        .filter(|p| !p.as_os_str().is_empty())
        .find_map(|p| Some((p, std::fs::metadata(p).ok()?)))
    else {
        return String::new();
    };
    let (me, owner) = (user_name(effective_uid()), user_name(meta.uid()));
    format!(
        " ({} belongs to {owner} with mode {:o}, and {me}, the user running scimbridge, may \
         not enter or write it: run this as {owner}, or choose a directory {me} may write)",
        dir.display(),
        meta.mode() & 0o7777
    )
}

/// Makes everything this process creates private (files 0600, directories 0700,
/// the control socket 0600): the one place that covers files written by libraries
/// (redb, the socket bind) as well as ours. Called first thing by `main`.
pub fn private_umask() {
    // SAFETY: umask(2) only sets the process's file mode creation mask.
    unsafe {
        libc::umask(0o077);
    }
}

/// The effective user id of this process.
pub(crate) fn effective_uid() -> u32 {
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    unsafe { libc::geteuid() }
}

/// A user's name for messages (the number when it has none).
pub(crate) fn user_name(uid: u32) -> String {
    passwd(uid)
        .map(|(name, _)| name)
        .unwrap_or_else(|| format!("uid {uid}"))
}

/// (name, primary group) of a user, from the password database.
fn passwd(uid: u32) -> Option<(String, u32)> {
    let mut buf = vec![0u8; 4096];
    // SAFETY: getpwuid_r writes into `pwd` and `buf` (of the length given) only,
    // and `result` points at `pwd` or is null; the strings are read before `buf` goes.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwuid_r(
            uid,
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        );
        if rc != 0 || result.is_null() || pwd.pw_name.is_null() {
            return None;
        }
        let name = std::ffi::CStr::from_ptr(pwd.pw_name)
            .to_string_lossy()
            .into_owned();
        Some((name, pwd.pw_gid))
    }
}

/// Who may own the bridge's files in one data directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Trust {
    /// The user the files must belong to.
    pub(crate) uid: u32,
    /// Its group, for files root creates and hands over.
    pub(crate) gid: u32,
    /// This process runs as root on another user's directory: whatever it creates
    /// there is handed to `uid`.
    pub(crate) hand_over: bool,
}

impl Trust {
    /// The trust for `data_dir` (which must exist): this process's user, or when it
    /// is root, the directory's owner.
    pub(crate) fn of(data_dir: &Path) -> Result<Trust, TrustError> {
        let meta = std::fs::metadata(data_dir).map_err(io("cannot read", data_dir))?;
        let me = effective_uid();
        if me == 0 {
            return Ok(Trust {
                uid: meta.uid(),
                gid: meta.gid(),
                hand_over: meta.uid() != 0,
            });
        }
        if meta.uid() != me {
            return Err(TrustError::ForeignDirectory {
                path: data_dir.to_owned(),
                owner: user_name(meta.uid()),
                me: user_name(me),
            });
        }
        Ok(Trust {
            uid: me,
            gid: meta.gid(),
            hand_over: false,
        })
    }

    /// Checks one existing path in `data_dir` (or the directory itself): owned by the
    /// trusted user, writable by nobody else, and (`mode`) tightened to `mode` if
    /// looser. Returns a sentence for the log when it tightened something.
    fn check(
        &self,
        data_dir: &Path,
        path: &Path,
        meta: &std::fs::Metadata,
        mode: u32,
    ) -> Result<Option<String>, TrustError> {
        if meta.uid() != self.uid {
            return Err(TrustError::ForeignFile {
                path: path.to_owned(),
                owner: user_name(meta.uid()),
                trusted: user_name(self.uid),
                dir: data_dir.to_owned(),
            });
        }
        let m = meta.mode() & 0o7777;
        if m & 0o002 != 0 {
            return Err(TrustError::Writable {
                path: path.to_owned(),
                who: "every user",
                mode: m,
            });
        }
        // Group-writable is what a 002 umask leaves with a user's private group;
        // any other group could have changed the file.
        if m & 0o020 != 0 && passwd(self.uid).map(|(_, g)| g) != Some(meta.gid()) {
            return Err(TrustError::Writable {
                path: path.to_owned(),
                who: "its group",
                mode: m,
            });
        }
        if m & !mode == 0 {
            return Ok(None);
        }
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(io("cannot tighten the mode of", path))?;
        Ok(Some(format!(
            "tightened {} from mode {m:o} to {mode:o}",
            path.display()
        )))
    }

    /// Gives `path` (created by root) to the trusted user; nothing when not needed.
    pub(crate) fn adopt(&self, path: &Path) -> Result<(), TrustError> {
        if !self.hand_over {
            return Ok(());
        }
        std::os::unix::fs::lchown(path, Some(self.uid), Some(self.gid))
            .map_err(io("cannot give to the data directory's owner", path))
    }
}

/// What `prepare_data_dir` found and did.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub(crate) trust: Trust,
    /// One sentence per file whose mode was tightened, for the log.
    pub(crate) tightened: Vec<String>,
}

/// Creates `dir` (0700) when `create` and it is missing, then checks it and every
/// entry the bridge keeps in it (`entries`, relative paths; subdirectories are
/// checked with their files): the trusted owner, nobody else able to write, no
/// symbolic links. Looser modes of our own files are tightened and reported.
pub(crate) fn prepare_data_dir(
    dir: &Path,
    create: bool,
    entries: &[&str],
) -> Result<Prepared, TrustError> {
    if create && std::fs::symlink_metadata(dir).is_err() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io("cannot create the data directory", dir))?;
    }
    // The data directory itself may be reached through a link (another disk);
    // what counts is the directory it leads to.
    let meta = std::fs::metadata(dir).map_err(io("cannot open the data directory", dir))?;
    if !meta.is_dir() {
        return Err(TrustError::NotKind {
            path: dir.to_owned(),
            kind: "directory",
        });
    }
    let trust = Trust::of(dir)?;
    let mut tightened = Vec::new();
    tightened.extend(trust.check(dir, dir, &meta, 0o700)?);
    for entry in entries {
        check_tree(&trust, dir, &dir.join(entry), &mut tightened)?;
    }
    Ok(Prepared { trust, tightened })
}

fn check_tree(
    trust: &Trust,
    data_dir: &Path,
    path: &Path,
    out: &mut Vec<String>,
) -> Result<(), TrustError> {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if meta.file_type().is_symlink() {
        return Err(TrustError::Symlink {
            path: path.to_owned(),
            what: "data",
            kind: "file or directory",
        });
    }
    if meta.is_dir() {
        out.extend(trust.check(data_dir, path, &meta, 0o700)?);
        for e in std::fs::read_dir(path).map_err(io("cannot read", path))? {
            let e = e.map_err(io("cannot read", path))?;
            check_tree(trust, data_dir, &e.path(), out)?;
        }
    } else {
        out.extend(trust.check(data_dir, path, &meta, 0o600)?);
    }
    Ok(())
}

/// Hands every root-owned entry below `dir` to the trusted user (after a command
/// run as root created files there). Returns the paths it could not hand over.
pub(crate) fn hand_over_tree(trust: &Trust, dir: &Path) -> Vec<(PathBuf, String)> {
    let mut failed = Vec::new();
    if !trust.hand_over {
        return failed;
    }
    let mut stack = vec![dir.to_owned()];
    while let Some(p) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.uid() == 0 {
            if let Err(e) = trust.adopt(&p) {
                failed.push((p.clone(), e.to_string()));
            }
        }
        if meta.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        }
    }
    failed
}

/// Creates (or truncates) a private file (0600) for writing, refusing to follow a
/// symbolic link at `path`: backups, exports and their partial files.
pub(crate) fn create_private(path: &Path) -> std::io::Result<File> {
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(std::io::Error::other(format!(
            "{} is a symbolic link; refusing to write through it",
            path.display()
        )));
    }
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    // An existing file keeps its mode through open(2): make it private too.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(f)
}

/// A path to bind or connect the socket `name` in `dir` through, short enough for
/// `sun_path` (108 bytes) whatever the directory's length: `/proc/self/fd/N/name`
/// through a descriptor of the directory, kept open by the returned guard. The
/// plain path when it is short enough or /proc is missing.
pub(crate) fn short_socket_path(
    dir: &Path,
    name: &str,
) -> std::io::Result<(PathBuf, Option<File>)> {
    let plain = dir.join(name);
    if plain.as_os_str().len() < 100 || !Path::new("/proc/self/fd").is_dir() {
        return Ok((plain, None));
    }
    let fd = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
        .open(dir)?;
    use std::os::fd::AsRawFd;
    let short = PathBuf::from(format!("/proc/self/fd/{}/{name}", fd.as_raw_fd()));
    Ok((short, Some(fd)))
}

/// The user id of the process at the other end of a connected Unix socket
/// (SO_PEERCRED): the CLI checks it before it sends a secret to the server.
pub(crate) fn peer_uid(sock: &impl std::os::fd::AsRawFd) -> std::io::Result<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cred`, a ucred.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(cred.uid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn creates_the_directory_private() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("a/b");
        let p = prepare_data_dir(&d, true, &[]).unwrap();
        assert_eq!(mode(&d), 0o700);
        assert_eq!(p.trust.uid, effective_uid());
    }

    #[test]
    fn tightens_our_own_loose_files_and_says_so() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("data");
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        let db = d.join("scimbridge.redb");
        std::fs::write(&db, b"x").unwrap();
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::create_dir(d.join("tls")).unwrap();
        std::fs::write(d.join("tls/key.pem"), b"k").unwrap();
        std::fs::set_permissions(
            d.join("tls/key.pem"),
            std::fs::Permissions::from_mode(0o640),
        )
        .unwrap();
        let p = prepare_data_dir(&d, false, &["scimbridge.redb", "tls"]).unwrap();
        assert_eq!(
            (mode(&d), mode(&db), mode(&d.join("tls/key.pem"))),
            (0o700, 0o600, 0o600)
        );
        assert_eq!(p.tightened.len(), 4, "{:?}", p.tightened);
        // Nothing to do the second time.
        let p = prepare_data_dir(&d, false, &["scimbridge.redb", "tls"]).unwrap();
        assert!(p.tightened.is_empty());
    }

    #[test]
    fn refuses_world_writable_and_symlinks() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("data");
        std::fs::create_dir(&d).unwrap();
        let db = d.join("scimbridge.redb");
        std::fs::write(&db, b"x").unwrap();
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o666)).unwrap();
        let e = prepare_data_dir(&d, false, &["scimbridge.redb"]).unwrap_err();
        assert!(matches!(e, TrustError::Writable { .. }), "{e}");
        assert_eq!(mode(&db), 0o666, "a refused file is left as it was");
        std::fs::remove_file(&db).unwrap();
        std::os::unix::fs::symlink(t.path().join("elsewhere"), &db).unwrap();
        let e = prepare_data_dir(&d, false, &["scimbridge.redb"]).unwrap_err();
        assert!(matches!(e, TrustError::Symlink { .. }), "{e}");
        std::fs::remove_file(&db).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = prepare_data_dir(&d, false, &[]).unwrap_err();
        assert!(e.to_string().contains("chmod go-w"), "{e}");
    }

    #[test]
    fn private_files_do_not_follow_links() {
        let t = tempfile::tempdir().unwrap();
        let target = t.path().join("target");
        std::fs::write(&target, b"keep").unwrap();
        let link = t.path().join("backup.redb");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(create_private(&link).is_err());
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
        let f = t.path().join("out");
        std::fs::write(&f, b"old").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        drop(create_private(&f).unwrap());
        assert_eq!(mode(&f), 0o600);
    }

    #[test]
    fn long_socket_directories_get_a_short_path() {
        let t = tempfile::tempdir().unwrap();
        let mut d = t.path().to_owned();
        while d.as_os_str().len() < 150 {
            d = d.join("a-rather-long-directory-name");
        }
        std::fs::create_dir_all(&d).unwrap();
        let (short, guard) = short_socket_path(&d, "control.sock").unwrap();
        assert!(short.as_os_str().len() < 108 && guard.is_some());
        let listener = std::os::unix::net::UnixListener::bind(&short).unwrap();
        assert!(d.join("control.sock").exists());
        let client = std::os::unix::net::UnixStream::connect(&short).unwrap();
        let (server, _) = listener.accept().unwrap();
        assert_eq!(peer_uid(&client).unwrap(), effective_uid());
        assert_eq!(peer_uid(&server).unwrap(), effective_uid());
    }
}
