//! How the platform names processes, executables and accounts, and so how
//! an allowlist entry compares with them. Linux: a process name is the
//! kernel's `comm`, paths and user names compare byte for byte, and a number
//! in `user:` is a uid. Windows: a process name is the image name
//! (`CtxGfx.exe`), and `process: CtxGfx` matches it as well as
//! `process: CtxGfx.exe`; names, paths and accounts compare
//! case-insensitively; `\` and `/` are the same separator in `exe:`; a
//! `user:` is `DOMAIN\name`, a bare `name` (any domain) or a SID
//! (`S-1-5-18`), and Windows has no uids. The allowlist and the
//! configuration call these rules and never look at the OS themselves;
//! both rule sets are compiled everywhere, so Linux tests check Windows'.

use std::borrow::Cow;

/// The naming rules of one platform.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rules {
    /// Process names, paths and account names compare case-insensitively.
    pub case_insensitive: bool,
    /// A suffix a process name may be given without (`.exe`).
    pub image_suffix: Option<&'static str>,
    /// `\` is a path separator, the same as `/`.
    pub backslash_separator: bool,
    /// Accounts are `DOMAIN\name` with a SID; a number is not a uid.
    pub windows_accounts: bool,
    /// The longest process name the kernel keeps of an executable's file
    /// name (Linux's `comm`: 15 bytes), when it cuts them.
    pub name_max: Option<usize>,
}

/// Linux and the other Unixes.
pub const UNIX: Rules = Rules {
    case_insensitive: false,
    image_suffix: None,
    backslash_separator: false,
    windows_accounts: false,
    name_max: Some(15),
};

/// Windows.
pub const WINDOWS: Rules = Rules {
    case_insensitive: true,
    image_suffix: Some(".exe"),
    backslash_separator: true,
    windows_accounts: true,
    name_max: None,
};

/// The rules of the machine the exporter runs on.
pub const HOST: Rules = if cfg!(windows) { WINDOWS } else { UNIX };

impl Rules {
    /// Whether an exact `process:` name matches the process name `comm`.
    pub fn process_matches(&self, want: &[u8], comm: &[u8]) -> bool {
        if !self.case_insensitive {
            return want == comm;
        }
        let (want, comm) = (self.stem(want), self.stem(comm));
        want.eq_ignore_ascii_case(comm) || lower(want) == lower(comm)
    }

    /// The forms of a process name a `process: /regex/` is tried on: the
    /// name, and on Windows the name without `.exe`.
    pub fn process_forms<'a>(&self, comm: &'a [u8]) -> impl Iterator<Item = &'a [u8]> {
        let stem = self.stem(comm);
        std::iter::once(comm).chain((stem.len() != comm.len()).then_some(stem))
    }

    /// The name without the image suffix, when it ends with it.
    fn stem<'a>(&self, name: &'a [u8]) -> &'a [u8] {
        match self.image_suffix {
            Some(suffix) if name.len() > suffix.len() => {
                let (stem, tail) = name.split_at(name.len() - suffix.len());
                if tail.eq_ignore_ascii_case(suffix.as_bytes()) {
                    stem
                } else {
                    name
                }
            }
            _ => name,
        }
    }

    /// The file name of an executable path (its last part).
    pub fn exe_file_name<'a>(&self, exe: &'a [u8]) -> &'a [u8] {
        let sep = |b: &u8| *b == b'/' || (self.backslash_separator && *b == b'\\');
        exe.rsplit(sep).next().unwrap_or(exe)
    }

    /// Whether the process name `comm` is the one the kernel gives a
    /// program started from `exe` itself: its file name, cut to
    /// [`Rules::name_max`] bytes (Linux), or the image name (Windows). A
    /// process renamed after start (`prctl(PR_SET_NAME)`, a changed
    /// `argv[0]` does not change it) or started through a link of another
    /// name does not agree.
    pub fn name_agrees(&self, comm: &[u8], exe: &[u8]) -> bool {
        let file = self.exe_file_name(exe);
        if file.is_empty() {
            return false;
        }
        let file = match self.name_max {
            Some(max) if file.len() > max => &file[..max],
            _ => file,
        };
        if self.case_insensitive {
            self.process_matches(file, comm)
        } else {
            file == comm
        }
    }

    /// An `exe:` glob as it is compiled: on Windows with `/` for `\`.
    pub fn exe_glob<'a>(&self, glob: &'a str) -> Cow<'a, str> {
        if self.backslash_separator && glob.contains('\\') {
            Cow::Owned(glob.replace('\\', "/"))
        } else {
            Cow::Borrowed(glob)
        }
    }

    /// An executable path as the `exe:` globs see it: on Windows with `/`
    /// for `\`.
    pub fn exe_path<'a>(&self, path: &'a [u8]) -> Cow<'a, [u8]> {
        if self.backslash_separator && path.contains(&b'\\') {
            Cow::Owned(
                path.iter()
                    .map(|&b| if b == b'\\' { b'/' } else { b })
                    .collect(),
            )
        } else {
            Cow::Borrowed(path)
        }
    }

    /// Whether a `user:` made of digits is a uid (Unix) or a name.
    pub fn numeric_user_is_uid(&self) -> bool {
        !self.windows_accounts
    }

    /// Whether a `user:` names an account by its id (a Windows SID).
    pub fn is_account_id(&self, want: &str) -> bool {
        self.windows_accounts && is_sid(want)
    }

    /// Whether a `user:` id matches the owner's account id.
    pub fn account_id_matches(&self, want: &str, id: &str) -> bool {
        want.eq_ignore_ascii_case(id)
    }

    /// Whether a `user:` name matches the owner's account name. On Windows
    /// `DOMAIN\name` must match whole, and a bare name matches the name
    /// part of any domain.
    pub fn account_matches(&self, want: &str, name: &str) -> bool {
        if !self.windows_accounts {
            return want == name;
        }
        let eq = |a: &str, b: &str| a.to_lowercase() == b.to_lowercase();
        if want.contains('\\') {
            eq(want, name)
        } else {
            eq(want, name.rsplit('\\').next().unwrap_or(name))
        }
    }
}

/// Unicode lowercase of (lossily decoded) bytes; for names beyond ASCII.
fn lower(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_lowercase()
}

/// `S-1-5-18`, `S-1-5-21-1004336348-1177238915-682003330-512`.
fn is_sid(s: &str) -> bool {
    let Some(rest) = s.strip_prefix("S-").or_else(|| s.strip_prefix("s-")) else {
        return false;
    };
    let parts: Vec<&str> = rest.split('-').collect();
    parts.len() >= 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_compares_bytes() {
        assert!(UNIX.process_matches(b"CtxGfx", b"CtxGfx"));
        assert!(!UNIX.process_matches(b"ctxgfx", b"CtxGfx"));
        assert!(!UNIX.process_matches(b"CtxGfx", b"CtxGfx.exe"));
        assert_eq!(UNIX.process_forms(b"a.exe").count(), 1);
        assert_eq!(UNIX.exe_glob(r"C:\x\*"), r"C:\x\*");
        assert_eq!(&*UNIX.exe_path(br"/opt/a\b"), br"/opt/a\b");
        assert!(UNIX.numeric_user_is_uid());
        assert!(!UNIX.is_account_id("S-1-5-18"));
        assert!(UNIX.account_matches("root", "root"));
        assert!(!UNIX.account_matches("Root", "root"));
    }

    #[test]
    fn names_agree_with_the_executable_file_name() {
        assert!(UNIX.name_agrees(b"CtxGfx", b"/opt/citrix/CtxGfx"));
        assert!(
            !UNIX.name_agrees(b"CtxGfx", b"/usr/bin/python3.11"),
            "renamed"
        );
        assert!(
            !UNIX.name_agrees(b"python3", b"/usr/bin/python3.11"),
            "a link"
        );
        assert!(!UNIX.name_agrees(b"ctxgfx", b"/opt/CtxGfx"), "bytes");
        // The kernel keeps 15 bytes of the file name.
        assert!(UNIX.name_agrees(b"0123456789abcde", b"/x/0123456789abcdefgh"));
        assert!(!UNIX.name_agrees(b"0123456789abcd", b"/x/0123456789abcdefgh"));
        assert!(!UNIX.name_agrees(b"", b"/x/"));
        assert_eq!(UNIX.exe_file_name(br"/a/b\c"), br"b\c");
        assert!(WINDOWS.name_agrees(b"CtxGfx.exe", br"C:\Citrix\CTXGFX.EXE"));
        assert!(WINDOWS.name_agrees(b"CtxGfx.exe", b"C:/Citrix/CtxGfx.exe"));
        assert!(!WINDOWS.name_agrees(b"CtxGfx.exe", br"C:\Temp\other.exe"));
        assert_eq!(WINDOWS.exe_file_name(br"C:\a\b.exe"), b"b.exe");
    }

    #[test]
    fn windows_image_names() {
        for want in ["CtxGfx", "CtxGfx.exe", "ctxgfx", "CTXGFX.EXE"] {
            assert!(
                WINDOWS.process_matches(want.as_bytes(), b"CtxGfx.exe"),
                "{want}"
            );
        }
        assert!(!WINDOWS.process_matches(b"CtxGfx.ex", b"CtxGfx.exe"));
        assert!(!WINDOWS.process_matches(b"Ctx", b"CtxGfx.exe"));
        assert!(!WINDOWS.process_matches(b"CtxGfx.exe.exe", b"CtxGfx.exe"));
        // A name without the suffix (System, Registry) compares as it is.
        assert!(WINDOWS.process_matches(b"system", b"System"));
        // ".exe" alone is a name, not an empty stem.
        assert!(!WINDOWS.process_matches(b"", b".exe"));
        // Beyond ASCII.
        assert!(WINDOWS.process_matches("ÜBER".as_bytes(), "über.exe".as_bytes()));
        let forms: Vec<&[u8]> = WINDOWS.process_forms(b"CtxGfx.EXE").collect();
        assert_eq!(forms, [&b"CtxGfx.EXE"[..], &b"CtxGfx"[..]]);
    }

    #[test]
    fn windows_paths() {
        assert_eq!(
            WINDOWS.exe_glob(r"C:\Program Files\Citrix\*"),
            "C:/Program Files/Citrix/*"
        );
        assert_eq!(
            &*WINDOWS.exe_path(br"C:\Program Files\Citrix\HDX\bin\CtxGfx.exe"),
            b"C:/Program Files/Citrix/HDX/bin/CtxGfx.exe"
        );
        assert_eq!(&*WINDOWS.exe_path(b"C:/x"), b"C:/x");
    }

    #[test]
    fn windows_accounts() {
        assert!(!WINDOWS.numeric_user_is_uid());
        let system = r"NT AUTHORITY\SYSTEM";
        assert!(WINDOWS.account_matches(r"NT AUTHORITY\SYSTEM", system));
        assert!(WINDOWS.account_matches(r"nt authority\system", system));
        assert!(WINDOWS.account_matches("SYSTEM", system));
        assert!(WINDOWS.account_matches("system", system));
        assert!(!WINDOWS.account_matches(r"CORP\SYSTEM", system));
        assert!(!WINDOWS.account_matches("SYS", system));
        assert!(WINDOWS.account_matches("ctxsvc", r"CORP\CtxSvc"));
        assert!(WINDOWS.is_account_id("S-1-5-18"));
        assert!(WINDOWS.is_account_id("s-1-5-21-1004336348-1177238915-682003330-512"));
        for not_sid in ["S-1-5", "S-1-5-", "S-x-5-18", "SYSTEM", "1-5-18", "S--1-5"] {
            assert!(!WINDOWS.is_account_id(not_sid), "{not_sid}");
        }
        assert!(WINDOWS.account_id_matches("s-1-5-18", "S-1-5-18"));
        assert!(!WINDOWS.account_id_matches("S-1-5-19", "S-1-5-18"));
    }
}
