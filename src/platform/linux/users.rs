//! uid → user name through the C library's `getpwuid_r`, and name → uid
//! through `getpwnam_r` (for the allowlist's `user:` names), so NSS
//! sources such as LDAP or SSSD work. Blocking: called only from lookup
//! threads ([`crate::users`], [`crate::config::Config::check_users`]),
//! which keep the deadlines.

use std::ffi::CStr;

use crate::platform::UserLookup;

/// Looks up the passwd entry of `uid`. `Ok(NoEntry)` when the database
/// says there is none; `Err` when the lookup itself failed (an NSS source
/// down), which the caller retries later.
pub fn lookup(uid: u32) -> Result<UserLookup, String> {
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
    fn root_and_unknown() {
        assert_eq!(lookup(0), Ok(UserLookup::Name("root".into())));
        assert_eq!(lookup(4_000_000_000), Ok(UserLookup::NoEntry));
    }
}
