//! The allowlist: what an entry of a range's `expected:` list says, and
//! how a listener's holder is judged against the list. An entry matches
//! when every field it gives matches; a field that cannot be decided (the
//! owner's exe unreadable, its user's name not resolved) makes the entry
//! undecided. A listener is expected when some entry matches, unknown when
//! none matches but one is undecided or its holder is unknown, and
//! unexpected otherwise. Kernel-held sockets match only entries that say
//! `kernel:`; process entries never match them, and an empty list allows
//! nothing. How names compare (case, Windows' `.exe`, path separators,
//! accounts and SIDs) is the platform's rule ([`crate::names`]).
//!
//! What a local user cannot forge decides: a `process:` name matches only
//! when it agrees with the executable the process runs (its file name, cut
//! as the kernel cuts it, or the name of a link to it in a directory only
//! root can write, which the platform checked: [`Owner::name_via_link`]),
//! so a process renamed after start is not matched by name; and an
//! executable that is gone (deleted, or an anonymous memory file:
//! [`Owner::exe_gone`]) satisfies neither `process:` nor `exe:`, whatever
//! its old path says. A `process:` entry whose exe cannot be read is
//! undecided, as an `exe:` entry is.

use regex::bytes::Regex;

use crate::names::{self, Rules};
use crate::platform::{Holder, Owner};
pub use crate::users::UserName;

/// Whether a listener is on its range's allowlist.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Expected {
    True,
    False,
    /// The holder could not be found, or a field the allowlist needs (the
    /// exe path, the user's name) could not be read.
    Unknown,
}

impl Expected {
    pub fn as_str(self) -> &'static str {
        match self {
            Expected::True => "true",
            Expected::False => "false",
            Expected::Unknown => "unknown",
        }
    }
}

/// One allowlist entry: every field it gives must match.
#[derive(Clone, Debug, Default)]
pub struct Matcher {
    pub process: Option<NameMatch>,
    pub exe: Option<ExeMatch>,
    pub user: Option<UserMatch>,
    /// Allows kernel-held sockets (any, or one tunnel device's).
    pub kernel: Option<KernelMatch>,
}

/// How a process name is matched.
#[derive(Clone, Debug)]
pub enum NameMatch {
    Exact(Vec<u8>),
    /// A `/regex/`, anchored at both ends.
    Regex(Regex),
}

/// An `exe:` glob, compiled by `globset` into an anchored byte regex:
/// `*` matches any run of characters, `/` included.
#[derive(Clone, Debug)]
pub struct ExeMatch {
    pub glob: String,
    pub regex: Regex,
}

/// How the socket's user is matched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UserMatch {
    Uid(u32),
    Name(String),
}

/// Which kernel-held sockets an entry allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelMatch {
    /// `kernel: true`: any.
    Any,
    /// `kernel: vxlan0`: those of this tunnel device.
    Device(String),
}

/// Judges one listener: `holder` is who holds it (`None`: unknown), `uid`
/// the socket's uid and `user` its name.
pub fn judge(
    allowlist: &[Matcher],
    holder: Option<&Holder>,
    uid: u32,
    user: &UserName,
) -> Expected {
    judge_with(&names::HOST, allowlist, holder, uid, user)
}

/// [`judge`] under the naming rules of a given platform.
pub fn judge_with(
    rules: &Rules,
    allowlist: &[Matcher],
    holder: Option<&Holder>,
    uid: u32,
    user: &UserName,
) -> Expected {
    let Some(holder) = holder else {
        return Expected::Unknown;
    };
    let mut result = Expected::False;
    for m in allowlist {
        let verdict = match holder {
            Holder::Process(owner) => judge_process(rules, m, owner, uid, user),
            Holder::Kernel { device } => judge_kernel(m, device.as_deref()),
        };
        match verdict {
            Expected::True => return Expected::True,
            Expected::Unknown => result = Expected::Unknown,
            Expected::False => {}
        }
    }
    result
}

fn judge_kernel(m: &Matcher, device: Option<&str>) -> Expected {
    match &m.kernel {
        Some(KernelMatch::Any) => Expected::True,
        Some(KernelMatch::Device(want)) => match device {
            Some(d) if d == want => Expected::True,
            Some(_) => Expected::False,
            None => Expected::Unknown,
        },
        None => Expected::False,
    }
}

fn judge_process(rules: &Rules, m: &Matcher, owner: &Owner, uid: u32, user: &UserName) -> Expected {
    if m.kernel.is_some() {
        return Expected::False;
    }
    let mut undecided = false;
    if let Some(p) = &m.process {
        let ok = match p {
            NameMatch::Exact(name) => rules.process_matches(name, &owner.comm),
            NameMatch::Regex(re) => rules.process_forms(&owner.comm).any(|n| re.is_match(n)),
        };
        if !ok {
            return Expected::False;
        }
        // The name counts only as the program's own: the file name of an
        // executable that is still there, or a root-only link's to it.
        match &owner.exe {
            _ if owner.exe_gone() => return Expected::False,
            Some(exe) if !rules.name_agrees(&owner.comm, exe) && !owner.name_via_link => {
                return Expected::False;
            }
            Some(_) => {}
            None => undecided = true,
        }
    }
    if let Some(e) = &m.exe {
        match &owner.exe {
            // What a gone executable's path says proves nothing.
            Some(_) if owner.exe_gone() => return Expected::False,
            Some(exe) if !e.regex.is_match(&rules.exe_path(exe)) => return Expected::False,
            Some(_) => {}
            None => undecided = true,
        }
    }
    if let Some(u) = &m.user {
        match u {
            UserMatch::Uid(want) => {
                if *want != uid {
                    return Expected::False;
                }
            }
            UserMatch::Name(want) if rules.is_account_id(want) => match &owner.user_id {
                Some(id) if rules.account_id_matches(want, id) => {}
                Some(_) => return Expected::False,
                None => undecided = true,
            },
            UserMatch::Name(want) => match user {
                UserName::Known(n) if rules.account_matches(want, n) => {}
                UserName::Known(_) | UserName::NoEntry => return Expected::False,
                UserName::Unresolved => undecided = true,
            },
        }
    }
    if undecided {
        Expected::Unknown
    } else {
        Expected::True
    }
}

/// Compiles an `exe:` glob with `globset` (which escapes regex syntax
/// inside classes, so `[a&&b]` is the characters, not an intersection),
/// under the platform's rules (Windows: any case, `\` is `/`).
pub fn compile_exe_glob(glob: &str, rules: &Rules) -> Result<ExeMatch, String> {
    if glob.is_empty() {
        return Err("the exe pattern is empty".into());
    }
    let g = globset::GlobBuilder::new(&rules.exe_glob(glob))
        .literal_separator(false)
        .case_insensitive(rules.case_insensitive)
        .backslash_escape(!rules.backslash_separator)
        .build()
        .map_err(|e| format!("bad exe pattern {glob:?}: {}", e.kind()))?;
    let regex = Regex::new(g.regex())
        .map_err(|e| format!("bad exe pattern {glob:?}: {}", one_line(&e.to_string())))?;
    Ok(ExeMatch {
        glob: glob.to_string(),
        regex,
    })
}

/// The fixed directory part of an `exe:` glob (as compiled, with `/`
/// separators): what comes before its first wildcard (`*`, `?`, `[`,
/// `{`, or a `\` escape), up to its last `/`, and the rest of the glob
/// after that directory. `None` when there is no `/` before the first
/// wildcard (`*CtxGfx*`): no fixed directory at all.
pub fn exe_fixed_dir(glob: &str) -> Option<(String, &str)> {
    let wild = glob.find(['*', '?', '[', '{', '\\']).unwrap_or(glob.len());
    let slash = glob[..wild].rfind('/')?;
    let dir = if slash == 0 { "/" } else { &glob[..slash] };
    Some((dir.to_string(), &glob[slash + 1..]))
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn owner(comm: &str, exe: Option<&str>) -> Holder {
        Holder::Process(Arc::new(Owner {
            pid: 1,
            comm: comm.as_bytes().to_vec(),
            exe: exe.map(|e| e.as_bytes().to_vec()),
            user: None,
            user_id: None,
            name_via_link: false,
        }))
    }

    fn known(n: &str) -> UserName {
        UserName::Known(n.into())
    }

    fn entry(process: Option<&str>, exe: Option<&str>, user: Option<UserMatch>) -> Matcher {
        Matcher {
            process: process.map(|p| NameMatch::Exact(p.as_bytes().to_vec())),
            exe: exe.map(|e| compile_exe_glob(e, &names::UNIX).unwrap()),
            user,
            kernel: None,
        }
    }

    #[test]
    fn judging() {
        let m = vec![
            entry(Some("CtxGfx"), Some("/opt/citrix/*"), None),
            entry(None, None, Some(UserMatch::Name("citrix".into()))),
        ];
        let ctx = owner("CtxGfx", Some("/opt/citrix/bin/CtxGfx"));
        let root = known("root");
        assert_eq!(judge(&m, Some(&ctx), 0, &root), Expected::True);
        let elsewhere = owner("CtxGfx", Some("/tmp/CtxGfx"));
        assert_eq!(judge(&m, Some(&elsewhere), 0, &root), Expected::False);
        let no_exe = owner("CtxGfx", None);
        assert_eq!(judge(&m, Some(&no_exe), 0, &root), Expected::Unknown);
        let nc = owner("nc", None);
        assert_eq!(judge(&m, Some(&nc), 0, &root), Expected::False);
        assert_eq!(judge(&m, Some(&nc), 1001, &known("citrix")), Expected::True);
        assert_eq!(judge(&m, None, 1001, &known("citrix")), Expected::Unknown);
        assert_eq!(judge(&[], Some(&ctx), 0, &root), Expected::False);
        let by_uid = vec![entry(None, None, Some(UserMatch::Uid(1001)))];
        assert_eq!(
            judge(&by_uid, Some(&ctx), 1001, &known("citrix")),
            Expected::True
        );
        assert_eq!(
            judge(&by_uid, Some(&ctx), 0, &known("1001")),
            Expected::False
        );
    }

    fn linked(comm: &str, exe: &str) -> Holder {
        Holder::Process(Arc::new(Owner {
            pid: 1,
            comm: comm.as_bytes().to_vec(),
            exe: Some(exe.as_bytes().to_vec()),
            user: None,
            user_id: None,
            name_via_link: true,
        }))
    }

    #[test]
    fn a_name_counts_only_when_it_agrees_with_the_executable() {
        let root = known("root");
        let by_name = vec![entry(Some("CtxGfx"), None, None)];
        let j = |h: &Holder| judge(&by_name, Some(h), 65534, &root);
        // The program itself, wherever it lies (the load warns about
        // name-only entries: a copy renamed is the program too).
        assert_eq!(
            j(&owner("CtxGfx", Some("/opt/citrix/CtxGfx"))),
            Expected::True
        );
        assert_eq!(j(&owner("CtxGfx", Some("/tmp/CtxGfx"))), Expected::True);
        // python3 renamed with prctl(PR_SET_NAME): its exe says otherwise.
        assert_eq!(
            j(&owner("CtxGfx", Some("/usr/bin/python3.11"))),
            Expected::False
        );
        // The exe unreadable: undecided, never "fine".
        assert_eq!(j(&owner("CtxGfx", None)), Expected::Unknown);
        // A name the platform found as a root-only link to the exe.
        assert_eq!(j(&linked("CtxGfx", "/usr/bin/python3.11")), Expected::True);
        let python = vec![entry(Some("python3"), None, None)];
        assert_eq!(
            judge(
                &python,
                Some(&linked("python3", "/usr/bin/python3.11")),
                0,
                &root
            ),
            Expected::True
        );
        assert_eq!(
            judge(
                &python,
                Some(&owner("python3", Some("/usr/bin/python3.11"))),
                0,
                &root
            ),
            Expected::False,
            "a link the platform did not vouch for"
        );
        // 15 bytes of a longer file name (Linux's comm; Windows keeps the
        // whole image name, so the Windows build runs this with Linux's
        // rules too).
        let long = vec![entry(Some("0123456789abcde"), None, None)];
        assert_eq!(
            judge_with(
                &names::UNIX,
                &long,
                Some(&owner("0123456789abcde", Some("/x/0123456789abcdefgh"))),
                0,
                &root
            ),
            Expected::True
        );
        // A regex is held to the same rule.
        let re = vec![Matcher {
            process: Some(NameMatch::Regex(Regex::new("^(?:Ctx.*)$").unwrap())),
            ..Default::default()
        }];
        assert_eq!(
            judge(
                &re,
                Some(&owner("CtxGfx", Some("/usr/bin/python3.11"))),
                0,
                &root
            ),
            Expected::False
        );
        // A user entry does not look at names: the kernel says who it is.
        let by_user = vec![entry(None, None, Some(UserMatch::Uid(65534)))];
        assert_eq!(
            judge(
                &by_user,
                Some(&owner("CtxGfx", Some("/usr/bin/python3.11"))),
                65534,
                &root
            ),
            Expected::True
        );
    }

    #[test]
    fn a_gone_executable_satisfies_neither_process_nor_exe() {
        let root = known("root");
        let memfd = owner("CtxGfx", Some("/memfd:CtxGfx (deleted)"));
        let deleted = owner("CtxGfx", Some("/opt/citrix/CtxGfx (deleted)"));
        let any = Regex::new("^(?:.*)$").unwrap();
        for (h, what) in [(&memfd, "memfd"), (&deleted, "deleted")] {
            for m in [
                entry(Some("CtxGfx"), None, None),
                entry(None, Some("*CtxGfx*"), None),
                entry(None, Some("/opt/citrix/*"), None),
                entry(Some("CtxGfx"), Some("/opt/citrix/*"), None),
                Matcher {
                    process: Some(NameMatch::Regex(any.clone())),
                    ..Default::default()
                },
            ] {
                assert_eq!(
                    judge(std::slice::from_ref(&m), Some(h), 0, &root),
                    Expected::False,
                    "{what}: {m:?}"
                );
            }
            // Even a link the platform vouched for.
            let Holder::Process(o) = h else {
                unreachable!()
            };
            let vouched = Holder::Process(Arc::new(Owner {
                name_via_link: true,
                ..(**o).clone()
            }));
            assert_eq!(
                judge(
                    &[entry(Some("CtxGfx"), None, None)],
                    Some(&vouched),
                    0,
                    &root
                ),
                Expected::False
            );
            // The user is the kernel's word, gone executable or not.
            assert_eq!(
                judge(
                    &[entry(None, None, Some(UserMatch::Uid(0)))],
                    Some(h),
                    0,
                    &root
                ),
                Expected::True
            );
        }
        // Windows: the attribution marks an image whose file is gone.
        let gone = Holder::Process(Arc::new(Owner {
            pid: 7,
            comm: b"CtxGfx.exe".to_vec(),
            exe: Some(br"C:\Citrix\CtxGfx.exe (deleted)".to_vec()),
            user: None,
            user_id: None,
            name_via_link: false,
        }));
        for m in [
            windows_entry(Some("CtxGfx"), None, None),
            windows_entry(None, Some(r"C:\Citrix\*"), None),
        ] {
            assert_eq!(
                judge_with(
                    &names::WINDOWS,
                    std::slice::from_ref(&m),
                    Some(&gone),
                    u32::MAX,
                    &root
                ),
                Expected::False
            );
        }
    }

    #[test]
    fn an_unresolved_user_name_is_unknown_not_unexpected() {
        let m = vec![entry(None, None, Some(UserMatch::Name("citrix".into())))];
        let p = owner("CtxGfx", None);
        assert_eq!(
            judge(&m, Some(&p), 1001, &UserName::Unresolved),
            Expected::Unknown
        );
        assert_eq!(
            judge(&m, Some(&p), 1001, &UserName::NoEntry),
            Expected::False
        );
        // A uid entry needs no name.
        let by_uid = vec![entry(None, None, Some(UserMatch::Uid(1001)))];
        assert_eq!(
            judge(&by_uid, Some(&p), 1001, &UserName::Unresolved),
            Expected::True
        );
    }

    #[test]
    fn kernel_sockets_match_only_kernel_entries() {
        let kernel = Holder::Kernel {
            device: Some("vx0".into()),
        };
        let root = known("root");
        let everything = vec![Matcher {
            process: Some(NameMatch::Regex(Regex::new("^(?:.*)$").unwrap())),
            ..Default::default()
        }];
        assert_eq!(judge(&everything, Some(&kernel), 0, &root), Expected::False);
        let by_root = vec![entry(None, None, Some(UserMatch::Uid(0)))];
        assert_eq!(judge(&by_root, Some(&kernel), 0, &root), Expected::False);
        assert_eq!(judge(&[], Some(&kernel), 0, &root), Expected::False);
        let any = vec![Matcher {
            kernel: Some(KernelMatch::Any),
            ..Default::default()
        }];
        assert_eq!(judge(&any, Some(&kernel), 0, &root), Expected::True);
        let other_dev = vec![Matcher {
            kernel: Some(KernelMatch::Device("vx9".into())),
            ..Default::default()
        }];
        assert_eq!(judge(&other_dev, Some(&kernel), 0, &root), Expected::False);
        let unnamed = Holder::Kernel { device: None };
        assert_eq!(
            judge(&other_dev, Some(&unnamed), 0, &root),
            Expected::Unknown
        );
        // A kernel entry does not allow a process (even one named "kernel").
        assert_eq!(
            judge(&any, Some(&owner("kernel", None)), 0, &root),
            Expected::False
        );
    }

    #[test]
    fn fixed_directories_of_exe_globs() {
        let d = |g| exe_fixed_dir(g).map(|(d, rest)| (d, rest.to_string()));
        assert_eq!(d("/opt/citrix/*"), Some(("/opt/citrix".into(), "*".into())));
        assert_eq!(
            d("/usr/bin/mosh-serve?"),
            Some(("/usr/bin".into(), "mosh-serve?".into()))
        );
        assert_eq!(d("/usr/bin/x"), Some(("/usr/bin".into(), "x".into())));
        assert_eq!(d("/opt/a*/bin/x"), Some(("/opt".into(), "a*/bin/x".into())));
        assert_eq!(d("/*"), Some(("/".into(), "*".into())));
        assert_eq!(
            d("C:/Program Files/Citrix/*").unwrap().0,
            "C:/Program Files/Citrix"
        );
        assert_eq!(d("*CtxGfx*"), None);
        assert_eq!(d("CtxGfx"), None);
    }

    #[test]
    fn exe_globs() {
        let g = |p: &str| compile_exe_glob(p, &names::UNIX).unwrap().regex;
        assert!(g("/opt/*").is_match(b"/opt/a/b/c"), "* crosses /");
        assert!(g("/usr/bin/mosh-serve?").is_match(b"/usr/bin/mosh-server"));
        assert!(g("/x/[ab]").is_match(b"/x/a"));
        assert!(!g("/x/[!ab]").is_match(b"/x/a"));
        assert!(!g("/opt/*").is_match(b"/usr/opt/a"), "anchored");
        // Regex class operators are plain characters in a glob class.
        for (glob, hit, miss) in [
            ("/x/[a&&b]", &b"/x/&"[..], &b"/x/c"[..]),
            ("/x/[a~~b]", b"/x/~", b"/x/c"),
        ] {
            let re = g(glob);
            assert!(re.is_match(hit), "{glob} matches {:?}", hit);
            assert!(!re.is_match(miss), "{glob} does not match {:?}", miss);
        }
        // `a--b` is a range from a to '-' in a glob: refused, not read as
        // a regex class difference.
        let e = compile_exe_glob("/x/[a--b]", &names::UNIX).unwrap_err();
        assert!(e.contains("invalid range"), "{e}");
        assert!(compile_exe_glob("", &names::UNIX).is_err());
        assert!(compile_exe_glob("/x/[ab", &names::UNIX).is_err());
        let ci = compile_exe_glob("C:/Program Files/Citrix/*", &names::WINDOWS)
            .unwrap()
            .regex;
        assert!(ci.is_match(b"c:/program files/citrix/HDX/bin/CtxGfx.exe"));
    }

    fn windows_owner(comm: &str, exe: &str, user: &str, sid: &str) -> Holder {
        Holder::Process(Arc::new(Owner {
            pid: 4242,
            comm: comm.as_bytes().to_vec(),
            exe: Some(exe.as_bytes().to_vec()),
            user: Some(user.into()),
            user_id: Some(sid.into()),
            name_via_link: false,
        }))
    }

    fn windows_entry(process: Option<&str>, exe: Option<&str>, user: Option<&str>) -> Matcher {
        Matcher {
            process: process.map(|p| NameMatch::Exact(p.as_bytes().to_vec())),
            exe: exe.map(|e| compile_exe_glob(e, &names::WINDOWS).unwrap()),
            user: user.map(|u| UserMatch::Name(u.into())),
            kernel: None,
        }
    }

    #[test]
    fn windows_rules() {
        let w = |m: &[Matcher], h: &Holder, user: &UserName| {
            judge_with(&names::WINDOWS, m, Some(h), u32::MAX, user)
        };
        let path = r"C:\Program Files (x86)\Citrix\HDX\bin\CtxGfx.exe";
        let ctx = windows_owner("CtxGfx.exe", path, r"CORP\alice", "S-1-5-21-1-2-3-1104");
        let alice = known(r"CORP\alice");
        for (entry, want) in [
            (windows_entry(Some("CtxGfx"), None, None), Expected::True),
            (
                windows_entry(Some("ctxgfx.EXE"), None, None),
                Expected::True,
            ),
            (
                windows_entry(Some("CtxGfx.ex"), None, None),
                Expected::False,
            ),
            (
                windows_entry(None, Some(r"c:\program files (x86)\citrix\*"), None),
                Expected::True,
            ),
            (
                windows_entry(
                    None,
                    Some("C:/Program Files (x86)/Citrix/HDX/bin/CtxGfx.exe"),
                    None,
                ),
                Expected::True,
            ),
            (
                windows_entry(None, Some(r"C:\Temp\*"), None),
                Expected::False,
            ),
            (windows_entry(None, None, Some("alice")), Expected::True),
            (
                windows_entry(None, None, Some(r"corp\ALICE")),
                Expected::True,
            ),
            (
                windows_entry(None, None, Some(r"OTHER\alice")),
                Expected::False,
            ),
            (
                windows_entry(None, None, Some("S-1-5-21-1-2-3-1104")),
                Expected::True,
            ),
            (windows_entry(None, None, Some("S-1-5-18")), Expected::False),
        ] {
            assert_eq!(
                w(std::slice::from_ref(&entry), &ctx, &alice),
                want,
                "{entry:?}"
            );
        }
        // A regex is tried on the image name and on its stem.
        let re = |p: &str| Matcher {
            process: Some(NameMatch::Regex(Regex::new(p).unwrap())),
            ..Default::default()
        };
        assert_eq!(w(&[re("^(?i:ctxgfx)$")], &ctx, &alice), Expected::True);
        assert_eq!(w(&[re(r"^(?:.*\.exe)$")], &ctx, &alice), Expected::True);
        // A SID entry needs the owner's SID: without it, unknown.
        let no_sid = Holder::Process(Arc::new(Owner {
            pid: 1,
            comm: b"CtxGfx.exe".to_vec(),
            exe: None,
            user: None,
            user_id: None,
            name_via_link: false,
        }));
        let by_sid = [windows_entry(None, None, Some("S-1-5-18"))];
        assert_eq!(
            w(&by_sid, &no_sid, &UserName::Unresolved),
            Expected::Unknown
        );
        // The same entries under Unix rules are byte-exact.
        let unix = judge_with(
            &names::UNIX,
            &[windows_entry(Some("CtxGfx"), None, None)],
            Some(&ctx),
            0,
            &alice,
        );
        assert_eq!(unix, Expected::False);
    }
}
