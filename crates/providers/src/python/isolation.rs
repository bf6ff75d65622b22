//! Keeps files a Python task has no business reading — the store's database,
//! the config file, saved credentials — out of its reach, although workers
//! run as the same user: each worker starts in its own user and mount
//! namespace (Linux, unprivileged) where an unreadable empty file is mounted
//! over each of them. The rest of the filesystem, the network and the process
//! limits are as before.
//!
//! Where namespaces are not allowed (some containers' seccomp filters, other
//! systems), `auto` runs workers without them and says so once;
//! `namespaces` refuses to start them instead.

use gleitzeit_core::{ErrorCode, GzError};
use serde::{Deserialize, Serialize};
use std::ffi::CString;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Isolation {
    /// Namespaces where the system allows them, a warning where not.
    #[default]
    Auto,
    /// Namespaces or no workers at all.
    Namespaces,
    /// Workers see every file their user can read.
    None,
}

impl Isolation {
    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::Auto => "auto",
            Isolation::Namespaces => "namespaces",
            Isolation::None => "none",
        }
    }
}

/// `providers.python.network`: whether workers share the machine's network.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Network {
    /// The machine's network, like any process of this user.
    #[default]
    Host,
    /// A network namespace of their own with only loopback up: nothing on
    /// this machine (the server, Redis, a database) or beyond is reachable.
    /// Needs namespaces; where they are not allowed no worker starts.
    None,
}

impl Network {
    pub fn as_str(self) -> &'static str {
        match self {
            Network::Host => "host",
            Network::None => "none",
        }
    }
}

/// A worker could not be started in its own namespaces.
pub(super) fn unavailable(reason: &str) -> GzError {
    GzError::new(
        ErrorCode::ProviderUnavailable,
        format!("cannot start a python worker in its own namespaces: {reason}"),
    )
    .with_hint(
        "Allow unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1, or the container's seccomp profile), or set `providers.python.isolation: auto` (runs without them, with a warning) or `none`; `providers.python.network: none` always needs them (set `network: host` to give tasks the machine's network).",
    )
    .with_details(serde_json::json!({"isolation": true}))
}

/// What a worker's namespace hides, prepared before `fork` so the child only
/// makes system calls.
pub(super) struct Plan {
    veil: CString,
    targets: Vec<CString>,
    /// A network namespace of its own, with loopback up.
    own_network: bool,
    uid_map: CString,
    gid_map: CString,
}

impl Plan {
    /// `None` when nothing that exists needs hiding and the worker keeps the
    /// host's network. `veil` is `None` when no file is to be hidden.
    pub(super) fn new(hidden: &[PathBuf], veil: Option<&Path>, network: Network) -> Option<Plan> {
        use std::os::unix::ffi::OsStrExt;
        let targets: Vec<CString> = match veil {
            Some(_) => hidden
                .iter()
                .filter(|p| p.is_file())
                .filter_map(|p| std::fs::canonicalize(p).ok())
                .filter_map(|p| CString::new(p.as_os_str().as_bytes()).ok())
                .collect(),
            None => Vec::new(),
        };
        let own_network = network == Network::None;
        if targets.is_empty() && !own_network {
            return None;
        }
        // SAFETY: getuid/getgid cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let veil = veil.map(|v| v.as_os_str().as_bytes()).unwrap_or_default();
        Some(Plan {
            veil: CString::new(veil).ok()?,
            targets,
            own_network,
            uid_map: CString::new(format!("{uid} {uid} 1\n")).ok()?,
            gid_map: CString::new(format!("{gid} {gid} 1\n")).ok()?,
        })
    }

    /// In the child between `fork` and `exec`: a new user and mount
    /// namespace, then the veil over every target.
    ///
    /// # Safety
    /// Only async-signal-safe calls: this runs in a forked child of a
    /// multi-threaded process.
    #[cfg(target_os = "linux")]
    pub(super) unsafe fn enter(&self) -> std::io::Result<()> {
        let check = |rc: libc::c_int| {
            if rc == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        };
        // SAFETY (for the block): plain system calls on C strings prepared
        // before the fork; none allocates.
        unsafe {
            let network = if self.own_network {
                libc::CLONE_NEWNET
            } else {
                0
            };
            check(libc::unshare(
                libc::CLONE_NEWUSER | libc::CLONE_NEWNS | network,
            ))?;
            // Same user inside as outside: files keep their owners.
            write_proc(c"/proc/self/setgroups", c"deny")?;
            write_proc(c"/proc/self/uid_map", &self.uid_map)?;
            write_proc(c"/proc/self/gid_map", &self.gid_map)?;
            // Our mounts stay ours and never reach the host's namespace.
            check(libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            for target in self.targets.iter() {
                let mounted = check(libc::mount(
                    self.veil.as_ptr(),
                    target.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND,
                    std::ptr::null(),
                ));
                // A file removed since the plan was made has nothing to hide.
                if let Err(e) = mounted {
                    if e.raw_os_error() != Some(libc::ENOENT) {
                        return Err(e);
                    }
                }
            }
            if self.own_network {
                loopback_up()?;
            }
            // Whoever runs inside (root too) keeps no capability that could
            // unmount the veil: empty the bounding set before exec.
            for cap in 0..64 {
                libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0);
            }
            check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))?;
        }
        Ok(())
    }
}

/// Brings up `lo` in a fresh network namespace (it starts down), so tasks
/// can still talk to themselves over 127.0.0.1.
///
/// # Safety
/// Only system calls; runs in a forked child.
#[cfg(target_os = "linux")]
unsafe fn loopback_up() -> std::io::Result<()> {
    // SAFETY (for the block): an ifreq we own, zeroed, naming `lo`; ioctls on
    // a socket we close before returning.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut request: libc::ifreq = std::mem::zeroed();
        for (slot, byte) in request.ifr_name.iter_mut().zip(b"lo\0") {
            *slot = *byte as libc::c_char;
        }
        let mut rc = libc::ioctl(fd, libc::SIOCGIFFLAGS as _, &mut request);
        if rc == 0 {
            request.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            rc = libc::ioctl(fd, libc::SIOCSIFFLAGS as _, &request);
        }
        let error = std::io::Error::last_os_error();
        libc::close(fd);
        if rc != 0 {
            return Err(error);
        }
    }
    Ok(())
}

#[cfg(target_os = "linux")]
unsafe fn write_proc(path: &std::ffi::CStr, text: &std::ffi::CStr) -> std::io::Result<()> {
    // SAFETY: open/write/close on a C string path and buffer we own.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let bytes = text.to_bytes();
        let written = libc::write(fd, bytes.as_ptr().cast(), bytes.len());
        libc::close(fd);
        if written != bytes.len() as isize {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The empty, unreadable file mounted over hidden ones; removed on drop.
pub(super) struct Veil(PathBuf);

impl Veil {
    pub(super) fn create() -> std::io::Result<Veil> {
        use std::os::unix::fs::OpenOptionsExt;
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("gleitzeit-veil-{}-{n}", std::process::id()));
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o000)
            .open(&path)?;
        Ok(Veil(path))
    }

    pub(super) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Veil {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
