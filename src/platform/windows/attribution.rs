//! Who holds a socket on Windows. The socket tables name the owning pid;
//! this module turns a pid into an owner: the process is opened with
//! `PROCESS_QUERY_LIMITED_INFORMATION` (what Task Manager needs, granted to
//! administrators for every process but a few protected ones), its image
//! path read with `QueryFullProcessImageNameW` (the name is the path's last
//! part, `CtxGfx.exe`), its token's user SID read and named `DOMAIN\user`
//! with `LookupAccountSidW`. Pid 4 is `System` (http.sys, SMB, the kernel's
//! own listeners): held by the kernel, judged like Linux's kernel-held
//! sockets. Pid 0 (which Wine reports for every socket) and a process that
//! cannot be opened are unknown. Owners are cached by pid and creation
//! time, so a reused pid is never mistaken for the old process, and a
//! process created after the sample cannot be taken for an owner. Account
//! names may need a domain controller: they are looked up on a thread of
//! their own and waited for only until the deadline; until then an owner
//! carries its SID alone.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use windows_sys::Win32::Foundation::{
    CloseHandle, ERROR_ACCESS_DENIED, ERROR_INSUFFICIENT_BUFFER, ERROR_NONE_MAPPED, FILETIME,
    GetLastError, HANDLE, HLOCAL, LocalFree,
};
use windows_sys::Win32::Security::Authorization::{ConvertSidToStringSidW, ConvertStringSidToSidW};
use windows_sys::Win32::Security::{
    GetTokenInformation, LookupAccountSidW, PSID, SID_NAME_USE, TOKEN_ELEVATION, TOKEN_QUERY,
    TOKEN_USER, TokenElevation, TokenUser,
};
use windows_sys::Win32::System::SystemInformation::GetSystemTimeAsFileTime;
use windows_sys::Win32::System::Threading::{
    GetCurrentProcess, GetProcessTimes, OpenProcess, OpenProcessToken, PROCESS_NAME_WIN32,
    PROCESS_QUERY_LIMITED_INFORMATION, QueryFullProcessImageNameW,
};

use super::wide::{from_wide, from_wide_ptr, to_wide};
use crate::platform::{Attribution, Holder, Owner, PassStats, Socket};

/// The `System` process: sockets it holds belong to the kernel.
pub const SYSTEM_PID: u32 = 4;
/// The idle process; the socket tables also give 0 when they do not know.
pub const IDLE_PID: u32 = 0;

/// How long an account name is kept, and a "no such account".
const NAME_TTL: Duration = Duration::from_secs(600);
const NO_NAME_TTL: Duration = Duration::from_secs(60);

/// Why a process could not be read.
#[derive(Debug, PartialEq, Eq)]
pub enum OpenError {
    /// Access denied: a privilege is missing (or the process is protected).
    Denied,
    /// The process is gone, or the call failed otherwise (the code).
    Other(u32),
}

/// An owned Win32 handle, closed on drop.
struct Handle(HANDLE);

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: the handle was returned open by OpenProcess or
        // OpenProcessToken and is closed exactly once, here.
        unsafe { CloseHandle(self.0) };
    }
}

fn last_error() -> u32 {
    // SAFETY: GetLastError only reads the calling thread's error value.
    unsafe { GetLastError() }
}

fn open_process(pid: u32) -> Result<Handle, OpenError> {
    // SAFETY: OpenProcess takes plain values; a null result is an error.
    let h = unsafe { OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid) };
    if h.is_null() {
        return Err(match last_error() {
            ERROR_ACCESS_DENIED => OpenError::Denied,
            code => OpenError::Other(code),
        });
    }
    Ok(Handle(h))
}

fn filetime(ft: FILETIME) -> u64 {
    (u64::from(ft.dwHighDateTime) << 32) | u64::from(ft.dwLowDateTime)
}

/// The current time as a FILETIME (100 ns units since 1601).
pub fn now_filetime() -> u64 {
    let mut ft = FILETIME {
        dwLowDateTime: 0,
        dwHighDateTime: 0,
    };
    // SAFETY: `ft` is a valid, writable FILETIME.
    unsafe { GetSystemTimeAsFileTime(&mut ft) };
    filetime(ft)
}

/// The process's creation time (FILETIME).
fn creation_time(h: &Handle) -> Result<u64, u32> {
    let zero = FILETIME {
        dwLowDateTime: 0,
        dwHighDateTime: 0,
    };
    let (mut created, mut exited, mut kernel, mut user) = (zero, zero, zero, zero);
    // SAFETY: the handle is open with PROCESS_QUERY_LIMITED_INFORMATION,
    // which GetProcessTimes needs; the four FILETIMEs are writable.
    let ok = unsafe { GetProcessTimes(h.0, &mut created, &mut exited, &mut kernel, &mut user) };
    if ok == 0 {
        return Err(last_error());
    }
    Ok(filetime(created))
}

/// The full Win32 path of the process's image.
fn image_path(h: &Handle) -> Result<String, u32> {
    let mut buf = vec![0u16; 1024];
    loop {
        let mut len = buf.len() as u32;
        // SAFETY: `buf` holds `len` writable units; the call writes at most
        // that many and sets `len` to the length written.
        let ok = unsafe {
            QueryFullProcessImageNameW(h.0, PROCESS_NAME_WIN32, buf.as_mut_ptr(), &mut len)
        };
        if ok != 0 {
            return Ok(from_wide(&buf, len as usize));
        }
        let e = last_error();
        if e == ERROR_INSUFFICIENT_BUFFER && buf.len() < 32_768 {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        return Err(e);
    }
}

/// Reads a variable-size token information class into a buffer aligned
/// for the structure it holds.
fn token_information(token: &Handle, class: i32) -> Result<Vec<u64>, u32> {
    let mut needed = 0u32;
    // SAFETY: a size query: no buffer, the needed size goes to `needed`.
    unsafe { GetTokenInformation(token.0, class, std::ptr::null_mut(), 0, &mut needed) };
    if needed == 0 {
        return Err(last_error());
    }
    let mut buf = vec![0u64; (needed as usize).div_ceil(8)];
    // SAFETY: `buf` has room for `needed` bytes, 8-byte aligned.
    let ok = unsafe {
        GetTokenInformation(
            token.0,
            class,
            buf.as_mut_ptr().cast(),
            (buf.len() * 8) as u32,
            &mut needed,
        )
    };
    if ok == 0 {
        return Err(last_error());
    }
    Ok(buf)
}

fn open_token(process: &Handle) -> Result<Handle, u32> {
    let mut token: HANDLE = std::ptr::null_mut();
    // SAFETY: the process handle is open; `token` receives a new handle.
    let ok = unsafe { OpenProcessToken(process.0, TOKEN_QUERY, &mut token) };
    if ok == 0 {
        return Err(last_error());
    }
    Ok(Handle(token))
}

/// The SID of the process's token user, as a string (`S-1-5-18`).
fn token_user_sid(process: &Handle) -> Result<String, u32> {
    let token = open_token(process)?;
    let buf = token_information(&token, TokenUser)?;
    // SAFETY: GetTokenInformation(TokenUser) filled `buf` with a TOKEN_USER
    // (buffer aligned for it) whose SID points into the same buffer.
    let sid = unsafe { (*buf.as_ptr().cast::<TOKEN_USER>()).User.Sid };
    sid_string(sid)
}

fn sid_string(sid: PSID) -> Result<String, u32> {
    let mut s: *mut u16 = std::ptr::null_mut();
    // SAFETY: `sid` is a valid SID; on success `s` is a LocalAlloc'd,
    // NUL-terminated string that we free below.
    let ok = unsafe { ConvertSidToStringSidW(sid, &mut s) };
    if ok == 0 {
        return Err(last_error());
    }
    // SAFETY: `s` is the NUL-terminated string just returned.
    let text = unsafe { from_wide_ptr(s) };
    // SAFETY: `s` was allocated by ConvertSidToStringSidW with LocalAlloc.
    unsafe { LocalFree(s as HLOCAL) };
    Ok(text)
}

/// Names the account of a SID string: `Ok(Some("DOMAIN\\name"))`,
/// `Ok(None)` when no account maps to it (a deleted user), `Err` when the
/// lookup failed (retried later).
pub fn account_name(sid: &str) -> Result<Option<String>, String> {
    let wide = to_wide(sid);
    let mut psid: PSID = std::ptr::null_mut();
    // SAFETY: `wide` is NUL-terminated; on success `psid` is LocalAlloc'd.
    let ok = unsafe { ConvertStringSidToSidW(wide.as_ptr(), &mut psid) };
    if ok == 0 {
        return Err(format!("{sid} is not a SID (error {})", last_error()));
    }
    let mut name = vec![0u16; 256];
    let mut domain = vec![0u16; 256];
    let result = loop {
        let (mut n, mut d) = (name.len() as u32, domain.len() as u32);
        let mut kind: SID_NAME_USE = 0;
        // SAFETY: both buffers hold the counts given; the call writes at
        // most that many units, or sets the counts it needs and fails.
        let ok = unsafe {
            LookupAccountSidW(
                std::ptr::null(),
                psid,
                name.as_mut_ptr(),
                &mut n,
                domain.as_mut_ptr(),
                &mut d,
                &mut kind,
            )
        };
        if ok != 0 {
            let name = from_wide(&name, n as usize);
            let domain = from_wide(&domain, d as usize);
            break Ok(Some(if domain.is_empty() {
                name
            } else {
                format!("{domain}\\{name}")
            }));
        }
        match last_error() {
            ERROR_INSUFFICIENT_BUFFER if name.len() < 65_536 => {
                name.resize((n as usize).max(name.len() * 2), 0);
                domain.resize((d as usize).max(domain.len() * 2), 0);
            }
            ERROR_NONE_MAPPED => break Ok(None),
            code => break Err(format!("LookupAccountSidW({sid}): error {code}")),
        }
    };
    // SAFETY: `psid` was allocated by ConvertStringSidToSidW.
    unsafe { LocalFree(psid as HLOCAL) };
    result
}

/// What attribution lacks: an elevated (administrator) token. Without it
/// only the exporter's own user's processes can be opened.
pub fn missing_privileges() -> Vec<&'static str> {
    let mut token: HANDLE = std::ptr::null_mut();
    // SAFETY: the pseudo-handle of the current process needs no closing;
    // `token` receives a new handle, closed by `Handle`.
    let ok = unsafe { OpenProcessToken(GetCurrentProcess(), TOKEN_QUERY, &mut token) };
    if ok == 0 {
        return vec!["an elevated administrator token"];
    }
    let token = Handle(token);
    let elevated = token_information(&token, TokenElevation)
        .map(|buf| {
            // SAFETY: TokenElevation fills a TOKEN_ELEVATION.
            unsafe { (*buf.as_ptr().cast::<TOKEN_ELEVATION>()).TokenIsElevated != 0 }
        })
        .unwrap_or(false);
    if elevated {
        Vec::new()
    } else {
        vec!["an elevated administrator token"]
    }
}

/// One process, as read: its owner (account name not yet filled in).
#[derive(Debug)]
pub struct ProcessInfo {
    pub created: u64,
    pub owner: Owner,
}

/// Reads a process: image path and name, token SID. The user name is left
/// to [`account_name`]. A token that cannot be read leaves the SID out.
pub fn read_process(pid: u32) -> Result<ProcessInfo, OpenError> {
    let h = open_process(pid)?;
    let created = creation_time(&h).map_err(OpenError::Other)?;
    let path = image_path(&h).map_err(|e| match e {
        ERROR_ACCESS_DENIED => OpenError::Denied,
        e => OpenError::Other(e),
    })?;
    let name = path.rsplit(['\\', '/']).next().unwrap_or(&path).to_string();
    // An image whose file is no longer at its path (deleted, renamed away,
    // or never there: process ghosting) proves nothing: marked gone, as
    // Linux marks a deleted exe. Checked once per process (the cache).
    let path = if image_gone(&path) {
        format!("{path} (deleted)")
    } else {
        path
    };
    let sid = token_user_sid(&h).ok();
    Ok(ProcessInfo {
        created,
        owner: Owner {
            pid,
            comm: name.into_bytes(),
            exe: Some(path.into_bytes()),
            user: None,
            user_id: sid,
            name_via_link: false,
        },
    })
}

/// Whether the image file is gone from `path`: only a definite "not
/// found" says so (access denied is not gone).
fn image_gone(path: &str) -> bool {
    matches!(
        std::fs::symlink_metadata(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound
    )
}

struct Cached {
    created: u64,
    owner: Arc<Owner>,
}

/// The owner cache and the account names.
pub struct Attributor {
    cache: HashMap<u32, Cached>,
    accounts: Accounts,
}

impl Default for Attributor {
    fn default() -> Self {
        Self::new()
    }
}

impl Attributor {
    pub fn new() -> Attributor {
        Attributor {
            cache: HashMap::new(),
            accounts: Accounts::new(Arc::new(account_name)),
        }
    }

    /// Finds the holder of each socket (by its pid), reading each owning
    /// process once. `sampled_at` is when the sample was taken: a process
    /// created later cannot hold one of its sockets.
    pub fn attribute(
        &mut self,
        sockets: &[Socket],
        sampled_at: u64,
        deadline: Instant,
    ) -> Attribution {
        let mut stats = PassStats::default();
        let pids: BTreeSet<u32> = sockets
            .iter()
            .filter(|s| s.can_be_held())
            .filter_map(|s| s.pid_hint)
            .collect();
        let mut found: HashMap<u32, Holder> = HashMap::new();
        let mut seen = HashSet::new();
        for &pid in &pids {
            match pid {
                IDLE_PID => continue,
                SYSTEM_PID => {
                    found.insert(pid, Holder::Kernel { device: None });
                    continue;
                }
                _ => {}
            }
            match read_process(pid) {
                Ok(info) if sampled_at != 0 && info.created > sampled_at => {
                    // The pid was reused after the sample.
                    log::debug!(
                        "pid {pid} was created after the sample; its socket's owner is unknown"
                    );
                }
                Ok(info) => {
                    seen.insert(pid);
                    let owner = match self.cache.get(&pid) {
                        Some(c) if c.created == info.created => {
                            stats.confirmed += 1;
                            c.owner.clone()
                        }
                        _ => {
                            stats.processes_scanned += 1;
                            let owner = Arc::new(info.owner);
                            self.cache.insert(
                                pid,
                                Cached {
                                    created: info.created,
                                    owner: owner.clone(),
                                },
                            );
                            owner
                        }
                    };
                    found.insert(pid, Holder::Process(owner));
                }
                Err(OpenError::Denied) => stats.permission_denied += 1,
                Err(OpenError::Other(code)) => {
                    log::debug!(
                        "cannot read process {pid} (error {code}); its sockets' owner is unknown"
                    );
                }
            }
        }
        self.cache.retain(|pid, _| seen.contains(pid));
        self.name_accounts(&mut found, deadline);
        stats.searched = sockets
            .iter()
            .filter(|s| s.can_be_held() && s.pid_hint.is_some_and(|p| p != IDLE_PID))
            .count();
        let holders: Vec<Option<Holder>> = sockets
            .iter()
            .map(|s| {
                if !s.can_be_held() {
                    return None;
                }
                s.pid_hint.and_then(|p| found.get(&p).cloned())
            })
            .collect();
        stats.kernel = holders
            .iter()
            .filter(|h| matches!(h, Some(Holder::Kernel { .. })))
            .count();
        Attribution {
            holders,
            stats,
            ..Attribution::default()
        }
    }

    /// Fills in the account names of the owners found, as far as the
    /// lookups answer by `deadline`; an owner whose SID maps to no account
    /// is shown by its SID.
    fn name_accounts(&mut self, found: &mut HashMap<u32, Holder>, deadline: Instant) {
        let sids: HashSet<String> = found
            .values()
            .filter_map(|h| match h {
                Holder::Process(o) if o.user.is_none() => o.user_id.clone(),
                _ => None,
            })
            .collect();
        if sids.is_empty() {
            return;
        }
        self.accounts.resolve(&sids, deadline);
        for (pid, holder) in found.iter_mut() {
            let Holder::Process(o) = holder else { continue };
            let Some(sid) = o.user.is_none().then_some(o.user_id.as_ref()).flatten() else {
                continue;
            };
            let name = match self.accounts.get(sid) {
                Some(Some(name)) => name,
                Some(None) => sid.clone(),
                None => continue,
            };
            let named = Arc::new(Owner {
                user: Some(name),
                ..(**o).clone()
            });
            if let Some(c) = self.cache.get_mut(pid) {
                c.owner = named.clone();
            }
            *o = named;
        }
    }
}

type Lookup = Arc<dyn Fn(&str) -> Result<Option<String>, String> + Send + Sync>;
type Answer = (String, Result<Option<String>, String>);

/// Account names by SID, looked up on a thread of their own (a domain
/// controller may be slow or gone) and waited for only until a deadline.
/// A failed lookup is logged once and asked again on the next collection.
pub struct Accounts {
    lookup: Lookup,
    cache: HashMap<String, (Option<String>, Instant)>,
    inflight: Option<(mpsc::Receiver<Answer>, HashSet<String>)>,
    failing: HashSet<String>,
}

impl Accounts {
    pub fn new(lookup: Lookup) -> Accounts {
        Accounts {
            lookup,
            cache: HashMap::new(),
            inflight: None,
            failing: HashSet::new(),
        }
    }

    /// `Some(Some(name))`, `Some(None)` for no such account, `None` when
    /// not known (yet).
    pub fn get(&self, sid: &str) -> Option<Option<String>> {
        self.cache.get(sid).map(|(n, _)| n.clone())
    }

    /// Looks up the SIDs not cached, waiting until `deadline` at most.
    pub fn resolve(&mut self, sids: &HashSet<String>, deadline: Instant) {
        let now = Instant::now();
        self.drain(None);
        let needed: Vec<String> = sids
            .iter()
            .filter(|s| self.cache.get(*s).is_none_or(|(_, exp)| *exp <= now))
            .cloned()
            .collect();
        if needed.is_empty() {
            return;
        }
        if self.inflight.is_none() {
            if self.cache.len() > 4096 {
                self.cache.clear();
            }
            let (tx, rx) = mpsc::channel();
            let lookup = self.lookup.clone();
            let batch = needed.clone();
            let spawned = std::thread::Builder::new()
                .name("account-lookup".into())
                .spawn(move || {
                    for sid in batch {
                        let answer = lookup(&sid);
                        if tx.send((sid, answer)).is_err() {
                            return;
                        }
                    }
                });
            match spawned {
                Ok(_) => self.inflight = Some((rx, needed.iter().cloned().collect())),
                Err(e) => log::warn!("cannot start an account lookup thread: {e}"),
            }
        }
        let mut waiting: HashSet<String> = needed.into_iter().collect();
        self.drain(Some((&mut waiting, deadline)));
    }

    fn drain(&mut self, mut wait: Option<(&mut HashSet<String>, Instant)>) {
        let Some((rx, mut pending)) = self.inflight.take() else {
            return;
        };
        loop {
            if pending.is_empty() {
                return;
            }
            let got = match &wait {
                Some((set, deadline)) if !set.is_empty() => {
                    rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
                }
                _ => rx.try_recv().map_err(|e| match e {
                    mpsc::TryRecvError::Empty => mpsc::RecvTimeoutError::Timeout,
                    mpsc::TryRecvError::Disconnected => mpsc::RecvTimeoutError::Disconnected,
                }),
            };
            match got {
                Ok((sid, answer)) => {
                    pending.remove(&sid);
                    if let Some((set, _)) = wait.as_mut() {
                        set.remove(&sid);
                    }
                    let now = Instant::now();
                    match answer {
                        Ok(name) => {
                            self.failing.remove(&sid);
                            let ttl = if name.is_some() {
                                NAME_TTL
                            } else {
                                NO_NAME_TTL
                            };
                            self.cache.insert(sid, (name, now + ttl));
                        }
                        Err(e) => {
                            if self.failing.insert(sid.clone()) {
                                log::warn!(
                                    "account lookup for {sid} failed, retrying on the next scrape: {e}"
                                );
                            }
                        }
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.inflight = Some((rx, pending));
                    return;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! These run under Wine (deploy/windows/build --tests, then
    //! tests/windows.rs) and on Windows: the exporter's own process is the
    //! one whose name, path and user are known for sure.

    use super::*;
    use crate::platform::Protocol;
    use crate::platform::TCP_CLOSE;
    use std::net::{IpAddr, Ipv4Addr};

    fn socket(pid: Option<u32>) -> Socket {
        Socket {
            protocol: Protocol::Udp,
            state: TCP_CLOSE,
            local: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port: 3224,
            remote: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            remote_port: 0,
            uid: crate::platform::NO_UID,
            inode: 0,
            pid_hint: pid,
            netns: 0,
        }
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(10)
    }

    #[test]
    fn own_process_name_path_and_user() {
        let me = std::process::id();
        let info = read_process(me).expect("the exporter can read itself");
        let exe = std::env::current_exe().unwrap();
        let path = String::from_utf8(info.owner.exe.clone().unwrap()).unwrap();
        assert!(
            path.eq_ignore_ascii_case(&exe.to_string_lossy()),
            "{path} vs {}",
            exe.display()
        );
        let image = String::from_utf8(info.owner.comm.clone()).unwrap();
        assert_eq!(
            image,
            exe.file_name().unwrap().to_string_lossy(),
            "the image name is the path's last part"
        );
        assert!(image.to_ascii_lowercase().ends_with(".exe"), "{image}");
        assert!(info.created > 0 && info.created <= now_filetime());
        let sid = info
            .owner
            .user_id
            .clone()
            .expect("our own token is readable");
        assert!(sid.starts_with("S-1-"), "{sid}");
        let account = account_name(&sid)
            .unwrap()
            .expect("our own SID has an account");
        let user = std::env::var("USERNAME").unwrap();
        let (domain, name) = account.split_once('\\').expect("DOMAIN\\user");
        assert!(!domain.is_empty(), "{account}");
        assert!(
            name.eq_ignore_ascii_case(&user),
            "{account} vs USERNAME={user}"
        );
        println!("own process: pid {me} name {image:?} path {path:?} user {account:?} sid {sid}");
    }

    #[test]
    fn attribution_of_own_socket_pid_kernel_and_unknown() {
        let me = std::process::id();
        let mut a = Attributor::new();
        let sockets = vec![
            socket(Some(me)),
            socket(Some(SYSTEM_PID)),
            socket(Some(IDLE_PID)),
            socket(None),
            socket(Some(0xFFFF_FFF0)),
        ];
        let sampled = now_filetime();
        let got = a.attribute(&sockets, sampled, soon());
        let Some(Holder::Process(o)) = &got.holders[0] else {
            panic!("own pid: {:?}", got.holders[0]);
        };
        assert_eq!(o.pid, me);
        let user = o
            .user
            .clone()
            .expect("the account is named within the deadline");
        assert!(user.contains('\\'), "{user}");
        assert_eq!(got.holders[1], Some(Holder::Kernel { device: None }));
        assert_eq!(got.holders[2], None, "pid 0 is unknown");
        assert_eq!(got.holders[3], None);
        assert_eq!(got.holders[4], None, "no such process");
        assert_eq!(got.stats.kernel, 1);
        assert_eq!(got.stats.processes_scanned, 1);
        // Again: the cached owner is confirmed by its creation time.
        let again = a.attribute(&sockets, now_filetime(), soon());
        assert_eq!(again.stats.confirmed, 1);
        assert_eq!(again.stats.processes_scanned, 0);
        assert_eq!(again.holders[0], got.holders[0]);
        // A sample older than the process cannot name it.
        let stale = a.attribute(&sockets[..1], 1, soon());
        assert_eq!(stale.holders[0], None, "created after the sample");
    }

    #[test]
    fn own_process_judged_by_the_windows_rules() {
        use crate::allowlist::{self, Expected, Matcher, NameMatch, UserMatch, UserName};
        let me = std::process::id();
        let mut a = Attributor::new();
        let got = a.attribute(&[socket(Some(me))], now_filetime(), soon());
        let holder = got.holders[0].clone().unwrap();
        let Holder::Process(o) = &holder else {
            panic!()
        };
        let exe = std::env::current_exe().unwrap();
        let stem = exe.file_stem().unwrap().to_string_lossy().to_uppercase();
        let user = UserName::Known(o.user.clone().unwrap());
        let dir = exe
            .parent()
            .unwrap()
            .to_string_lossy()
            .to_lowercase()
            .replace('\\', "/");
        for m in [
            Matcher {
                process: Some(NameMatch::Exact(stem.as_bytes().to_vec())),
                ..Default::default()
            },
            Matcher {
                exe: Some(
                    allowlist::compile_exe_glob(&format!("{dir}/*"), &crate::names::HOST).unwrap(),
                ),
                ..Default::default()
            },
            Matcher {
                user: Some(UserMatch::Name(o.user_id.clone().unwrap())),
                ..Default::default()
            },
        ] {
            assert_eq!(
                allowlist::judge(
                    std::slice::from_ref(&m),
                    Some(&holder),
                    crate::platform::NO_UID,
                    &user
                ),
                Expected::True,
                "{m:?} for {o:?}"
            );
        }
    }

    #[test]
    fn well_known_sids_have_names() {
        let system = account_name("S-1-5-18").unwrap().unwrap();
        assert!(
            system.to_ascii_uppercase().ends_with("\\SYSTEM"),
            "{system}"
        );
        assert!(account_name("not a sid").is_err());
    }

    #[test]
    fn a_hanging_account_lookup_never_holds_past_the_deadline() {
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let release_rx = std::sync::Mutex::new(release_rx);
        let mut acc = Accounts::new(Arc::new(move |sid: &str| {
            let _ = release_rx.lock().unwrap().recv();
            Ok(Some(format!("D\\{sid}")))
        }));
        let sids: HashSet<String> = ["S-1-5-21-9".to_string()].into();
        let started = Instant::now();
        acc.resolve(&sids, Instant::now() + Duration::from_millis(50));
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(acc.get("S-1-5-21-9"), None);
        release_tx.send(()).unwrap();
        let until = Instant::now() + Duration::from_secs(5);
        while acc.get("S-1-5-21-9").is_none() && Instant::now() < until {
            acc.resolve(&sids, Instant::now() + Duration::from_millis(100));
        }
        assert_eq!(acc.get("S-1-5-21-9"), Some(Some("D\\S-1-5-21-9".into())));
    }
}
