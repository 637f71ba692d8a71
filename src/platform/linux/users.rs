//! uid → user name through the C library's `getpwuid_r`, and name → uid
//! through `getpwnam_r` (for the allowlist's `user:` names), so NSS
//! sources such as LDAP or SSSD work. Blocking: called only from lookup
//! threads ([`crate::users`], [`crate::config::Config::check_users`]),
//! which keep the deadlines.
//!
//! The static release binaries link musl, which has no NSS: it reads
//! `/etc/passwd` (and asks nscd) itself. There, an account `/etc/passwd`
//! does not list is asked of the host's `getent` (a root-owned program at a
//! fixed path, which goes through the host's NSS), and where there is no
//! `getent` (a `FROM scratch` image) the lookup *fails* rather than saying
//! "no such account": the name stays unresolved, the uid is shown, and
//! `user:` entries for it are undecided (`expected="unknown"`), never a
//! wrong verdict.

use std::ffi::CStr;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::platform::UserLookup;

/// Looks up the passwd entry of `uid`. `Ok(NoEntry)` when the database
/// says there is none; `Err` when the lookup itself failed (an NSS source
/// down), which the caller retries later.
pub fn lookup(uid: u32) -> Result<UserLookup, String> {
    match libc_lookup(uid)? {
        UserLookup::NoEntry if NO_NSS => Ok(match getent(&uid.to_string())? {
            Some((name, _)) => UserLookup::Name(name),
            None => UserLookup::NoEntry,
        }),
        found => Ok(found),
    }
}

/// Whether the C library lacks NSS (a static musl build).
const NO_NSS: bool = cfg!(target_env = "musl");

/// Where `getent` may be; both are root's.
const GETENT: [&str; 2] = ["/usr/bin/getent", "/bin/getent"];

/// Asks `getent passwd KEY` (a uid or a name): the account's name and uid,
/// `Ok(None)` when NSS answers that there is none (exit status 2), `Err`
/// when there is no `getent` or it fails.
fn getent(key: &str) -> Result<Option<(String, u32)>, String> {
    let Some(program) = GETENT.iter().find(|p| Path::new(p).is_file()) else {
        return Err(format!(
            "passwd entry {key}: not in /etc/passwd, and this static build has no NSS and finds no getent ({})",
            GETENT.join(" or ")
        ));
    };
    let out = Command::new(program)
        .args(["passwd", key])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map_err(|e| format!("{program} passwd {key}: {e}"))?;
    match out.status.code() {
        Some(0) => parse_passwd_line(&out.stdout)
            .map(Some)
            .ok_or_else(|| format!("{program} passwd {key}: unreadable answer")),
        Some(2) => Ok(None),
        _ => Err(format!("{program} passwd {key}: {}", out.status)),
    }
}

/// The name and uid of the first `name:password:uid:...` line.
fn parse_passwd_line(bytes: &[u8]) -> Option<(String, u32)> {
    let line = bytes.split(|&b| b == b'\n').next()?;
    let mut fields = line.split(|&b| b == b':');
    let name = fields.next().filter(|n| !n.is_empty())?;
    let uid = std::str::from_utf8(fields.nth(1)?).ok()?.parse().ok()?;
    Some((String::from_utf8_lossy(name).into_owned(), uid))
}

/// [`lookup`] through the C library alone.
fn libc_lookup(uid: u32) -> Result<UserLookup, String> {
    let mut buf = vec![0u8; 1024];
    loop {
        // SAFETY: `passwd` is plain old data that getpwuid_r fills in; it is
        // only read after a successful call, and then only its `pw_name`,
        // which points into `buf`, still alive and unmodified here.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the duration of the call and
        // `buf.len()` is the true size of `buf`.
        let rc = unsafe {
            libc::getpwuid_r(
                uid,
                &mut pwd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut result,
            )
        };
        if rc == libc::ERANGE && buf.len() < (1 << 20) {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        // POSIX lets "not found" come back as 0 with no result, or as one of
        // these errors.
        if (rc == 0 && result.is_null()) || rc == libc::ENOENT || rc == libc::ESRCH {
            return Ok(UserLookup::NoEntry);
        }
        if rc != 0 {
            return Err(format!(
                "getpwuid_r({uid}): {}",
                std::io::Error::from_raw_os_error(rc)
            ));
        }
        if pwd.pw_name.is_null() {
            return Ok(UserLookup::NoEntry);
        }
        // SAFETY: on success pw_name is a NUL-terminated string inside `buf`.
        let name = unsafe { CStr::from_ptr(pwd.pw_name) };
        return Ok(UserLookup::Name(name.to_string_lossy().into_owned()));
    }
}

/// Looks up the passwd entry named `name`: its uid, `Ok(None)` when the
/// database says there is none, `Err` when the lookup failed.
pub fn lookup_name(name: &str) -> Result<Option<u32>, String> {
    match libc_lookup_name(name)? {
        // A name that could be an option or a uid is not handed to getent.
        None if NO_NSS && !name.starts_with('-') && !name.bytes().all(|b| b.is_ascii_digit()) => {
            Ok(getent(name)?.filter(|(n, _)| n == name).map(|(_, uid)| uid))
        }
        found => Ok(found),
    }
}

/// [`lookup_name`] through the C library alone.
fn libc_lookup_name(name: &str) -> Result<Option<u32>, String> {
    let Ok(cname) = std::ffi::CString::new(name) else {
        return Ok(None); // a name with a NUL byte names no account
    };
    let mut buf = vec![0u8; 1024];
    loop {
        // SAFETY: as in `lookup`: plain old data, read only after success.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the duration of the call,
        // `cname` is NUL-terminated and `buf.len()` is the size of `buf`.
        let rc = unsafe {
            libc::getpwnam_r(
                cname.as_ptr(),
                &mut pwd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut result,
            )
        };
        if rc == libc::ERANGE && buf.len() < (1 << 20) {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        if (rc == 0 && result.is_null()) || rc == libc::ENOENT || rc == libc::ESRCH {
            return Ok(None);
        }
        if rc != 0 {
            return Err(format!(
                "getpwnam_r({name:?}): {}",
                std::io::Error::from_raw_os_error(rc)
            ));
        }
        return Ok(Some(pwd.pw_uid));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_to_uids() {
        assert_eq!(lookup_name("root"), Ok(Some(0)));
        assert_eq!(lookup_name("no-such-user-portrange"), Ok(None));
        assert_eq!(lookup_name("a\0b"), Ok(None));
    }

    #[test]
    fn passwd_lines_decode() {
        assert_eq!(
            parse_passwd_line(b"ldap7:*:4242:100:LDAP user:/home/ldap7:/bin/sh\n"),
            Some(("ldap7".into(), 4242))
        );
        assert_eq!(parse_passwd_line(b"x:x:notanumber:0::/:/bin/sh\n"), None);
        assert_eq!(parse_passwd_line(b":x:1:1::/:/bin/sh\n"), None);
        assert_eq!(parse_passwd_line(b""), None);
    }

    #[test]
    fn getent_answers_for_root_and_not_for_nobody_made_up() {
        if !GETENT.iter().any(|p| Path::new(p).is_file()) {
            eprintln!("SKIPPED getent_answers_for_root: no getent here");
            return;
        }
        assert_eq!(getent("0"), Ok(Some(("root".into(), 0))));
        assert_eq!(getent("root"), Ok(Some(("root".into(), 0))));
        assert_eq!(getent("no-such-user-portrange"), Ok(None));
    }

    #[test]
    fn root_and_unknown() {
        assert_eq!(lookup(0), Ok(UserLookup::Name("root".into())));
        assert_eq!(lookup(4_000_000_000), Ok(UserLookup::NoEntry));
    }
}
