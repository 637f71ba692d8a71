//! uid → user name, through the C library (so NSS sources such as LDAP
//! work), cached for the life of the process. A uid with no entry is shown
//! as its number.

use std::collections::HashMap;
use std::ffi::CStr;

#[derive(Default)]
pub struct UserNames {
    cache: HashMap<u32, String>,
}

/// Cached uids beyond this are dropped wholesale (a host with that many
/// distinct socket owners in the ranges is unusual; the cost is a re-lookup).
const MAX_CACHED: usize = 4096;

impl UserNames {
    pub fn name(&mut self, uid: u32) -> &str {
        if self.cache.len() >= MAX_CACHED && !self.cache.contains_key(&uid) {
            self.cache.clear();
        }
        self.cache
            .entry(uid)
            .or_insert_with(|| lookup(uid).unwrap_or_else(|| uid.to_string()))
    }
}

/// Looks up the passwd entry of `uid`.
pub fn lookup(uid: u32) -> Option<String> {
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
        if rc != 0 || result.is_null() || pwd.pw_name.is_null() {
            return None;
        }
        // SAFETY: on success pw_name is a NUL-terminated string inside `buf`.
        let name = unsafe { CStr::from_ptr(pwd.pw_name) };
        return Some(name.to_string_lossy().into_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_unknown() {
        let mut u = UserNames::default();
        assert_eq!(u.name(0), "root");
        assert_eq!(u.name(4_000_000_000), "4000000000");
    }
}
