//! Redaction of command lines: the shapes in which operators put secrets on
//! a command line, cut before the line is shown anywhere (the trail's
//! events, the status document, the log). Pure: [`redact`] takes the raw
//! command line (arguments separated by NUL, as `/proc/<pid>/cmdline`
//! gives it) and the [`Program`] that reads it, and returns the arguments
//! with every secret replaced by [`REDACTED`]. Escaping and cutting are the
//! trail's.
//!
//! Shapes cut for every program:
//! - URL userinfo, anywhere in an argument: `scheme://user:<redacted>@host`
//!   (the whole userinfo when it has no password: `https://TOKEN@host`),
//!   and query parameters whose key names a secret (`?access_token=`);
//! - HTTP headers whose name names a secret (`Authorization`,
//!   `Proxy-Authorization`, `X-Api-Key`), however passed: as an argument of
//!   its own (`-H 'Authorization: Bearer x'`), attached (`-HAuthorization:
//!   x`) or as an option's value (`--header=Authorization: x`);
//! - `KEY=value`, `--key=value` and `--key value` where the key names a
//!   secret ([`secret_key`]), and each such item of a comma-separated
//!   `key=value` list (`-o user=u,password=x`).
//!
//! Short flags are secrets only in the program that defines them, so they
//! are cut by the program's identity: `-pX` for the MySQL/MariaDB clients,
//! `-a X` for `redis-cli`, `-p X`/`-pX` among `sshpass`'s own options (not
//! those of the command it runs), the password of `user:password` after
//! `-u`/`--user`/`-U`/`--proxy-user` for `curl` and the `--*user` options
//! of `wget`. The identity is the executable's file name
//! ([`Program::of_exe`]), never `argv[0]`: `argv[0]` is whatever the
//! process that ran the program wrote there (`exec -a`), while the
//! executable is the program that parses the arguments, so a real
//! `mysql` started as `db-client` still has its `-pX` cut and a python
//! script started as `mysql` keeps its `-p 3255`. Where the executable is
//! unknown (unreadable, or a memfd whose name its creator chose), every
//! program's rules apply: a secret cut too many is better than one shown.
//! `nc -l -p 3255` keeps its port.

/// What replaces a secret.
pub const REDACTED: &str = "<redacted>";

/// The program that parses a command line, for its own secret flags.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Program {
    /// `mysql`, `mariadb` and their tools (`mysqldump`, `mariadb-dump`):
    /// `-pPASSWORD`.
    MySql,
    /// `redis-cli` (and `valkey-cli`, `keydb-cli`): `-a PASSWORD`.
    RedisCli,
    /// `sshpass`: `-p PASSWORD` among its own options.
    Sshpass,
    /// `curl`: `-u user:password`, `-U user:password`.
    Curl,
    /// `wget`, `wget2`: `--user=user:password` and the like.
    Wget,
    /// Any other program: only the shapes every program shares.
    Other,
    /// Not known: every program's rules apply.
    #[default]
    Unknown,
}

impl Program {
    /// The program whose executable is at `exe` (as the platform read the
    /// path: a deleted file keeps its name, a memfd's name is its
    /// creator's choice and proves nothing).
    pub fn of_exe(exe: Option<&[u8]>) -> Program {
        let Some(exe) = exe else {
            return Program::Unknown;
        };
        if exe.starts_with(b"/memfd:") || exe.is_empty() {
            return Program::Unknown;
        }
        let exe = exe.strip_suffix(crate::platform::GONE_MARK).unwrap_or(exe);
        let name = exe
            .rsplit(|&b| b == b'/' || b == b'\\')
            .next()
            .unwrap_or(exe)
            .to_ascii_lowercase();
        let name = name.strip_suffix(b".exe").unwrap_or(&name);
        match name {
            b"redis-cli" | b"valkey-cli" | b"keydb-cli" => Program::RedisCli,
            b"sshpass" => Program::Sshpass,
            b"curl" => Program::Curl,
            b"wget" | b"wget2" => Program::Wget,
            n if n.starts_with(b"mysql") || n.starts_with(b"mariadb") => Program::MySql,
            _ => Program::Other,
        }
    }

    fn is(self, p: Program) -> bool {
        self == p || self == Program::Unknown
    }
}

/// Words that name a secret in a key (`--db-password`, `API_KEY`,
/// `apiToken`).
const SECRET_WORDS: [&str; 18] = [
    "password",
    "passwords",
    "passwd",
    "pwd",
    "pass",
    "passphrase",
    "secret",
    "secrets",
    "token",
    "tokens",
    "key",
    "auth",
    "authorization",
    "credential",
    "credentials",
    "private",
    "privkey",
    "cookie",
];

/// Endings that name a secret in a word written without separators
/// (`PGPASSWORD`, `clientsecret`, `authtoken`, `apikey`).
const SECRET_ENDINGS: [&str; 12] = [
    "password",
    "passwd",
    "pwd",
    "passphrase",
    "secret",
    "token",
    "credential",
    "credentials",
    "apikey",
    "accesskey",
    "privatekey",
    "secretkey",
];

/// Last words that make a secret-named key name something else: where the
/// secret is (`--password-file`), or what kind it is (`--auth-type`).
const NOT_THE_SECRET: [&str; 13] = [
    "file", "path", "dir", "fd", "env", "type", "id", "name", "user", "username", "method", "mode",
    "length",
];

/// The words of a key: split at `-`, `_`, `.` and where a lower-case
/// letter meets an upper-case one (`apiKey`), lower-cased.
fn words(key: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut prev_lower = false;
    for c in key.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            prev_lower = false;
            continue;
        }
        if c.is_uppercase() && prev_lower && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
        prev_lower = c.is_lowercase();
        cur.extend(c.to_lowercase());
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Whether a key (`--db-password`, `API_KEY`, `apiToken`, leading dashes
/// or not) names a secret: one of its words is a secret word (password,
/// passwd, pwd, pass, passphrase, secret, token, key, auth, authorization,
/// credential, private, cookie, and plurals) or ends in one written
/// without separators (`PGPASSWORD`, `authtoken`, `apikey`), unless the
/// last word says it names something else (`--password-file`,
/// `--auth-type`) or the key negates (`--no-auth`).
pub fn secret_key(key: &str) -> bool {
    let key = key.trim_start_matches('-');
    let w = words(key);
    if w.first().is_some_and(|f| f == "no") {
        return false;
    }
    if w.len() > 1
        && w.last()
            .is_some_and(|l| NOT_THE_SECRET.contains(&l.as_str()))
    {
        return false;
    }
    w.iter().any(|w| {
        SECRET_WORDS.contains(&w.as_str()) || SECRET_ENDINGS.iter().any(|e| w.ends_with(e))
    })
}

/// Whether `key` could be the key of a `KEY=value` argument: dashes, then
/// letters, digits, `_`, `-`, `.` (not a URL's or a path's text before a
/// `=`).
fn plausible_key(key: &str) -> bool {
    let k = key.trim_start_matches('-');
    !k.is_empty()
        && k.chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// `Name: value` with a header name that names a secret: `Name: <redacted>`.
fn header(s: &str) -> Option<String> {
    let (name, _) = s.split_once(':')?;
    let n = name.trim();
    let token = !n.is_empty()
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+.^_`|~-".contains(c));
    (token && secret_key(n)).then(|| format!("{name}: {REDACTED}"))
}

/// `user:password` as curl and wget take it: the password cut, or the
/// whole when there is no password (the user is then a token: `-u KEY:`).
fn user_password(s: &str) -> String {
    match s.split_once(':') {
        Some((user, pass)) if !pass.is_empty() && !user.is_empty() => {
            format!("{user}:{REDACTED}")
        }
        Some(_) => format!("{REDACTED}:"),
        None => s.to_string(),
    }
}

/// Cuts the userinfo and the secret query parameters of every URL in `s`.
fn urls(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("://") {
        let scheme_ok = rest[..i]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric());
        out.push_str(&rest[..i + 3]);
        rest = &rest[i + 3..];
        if !scheme_ok {
            continue;
        }
        let word = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let mut end = rest[..word].find(['/', '?', '#']).unwrap_or(word);
        // A password typed with a '/', '?' or '#' in it (not
        // percent-encoded): `user:p/w@host`. What follows the colon is no
        // port, and an '@' comes later: the userinfo runs to it.
        if !rest[..end].contains('@')
            && let Some((_, after)) = rest[..end].rsplit_once(':')
            && !after.chars().all(|c| c.is_ascii_digit())
            && let Some(at) = rest[..word].rfind('@')
        {
            end = rest[at..word]
                .find(['/', '?', '#'])
                .map_or(word, |i| at + i);
        }
        let authority = &rest[..end];
        if let Some(at) = authority.rfind('@') {
            let info = &authority[..at];
            match info.split_once(':') {
                Some((user, pass)) if !user.is_empty() && !pass.is_empty() => {
                    out.push_str(user);
                    out.push(':');
                    out.push_str(REDACTED);
                }
                _ => out.push_str(REDACTED),
            }
            out.push_str(&authority[at..]);
        } else {
            out.push_str(authority);
        }
        rest = &rest[end..];
        // The path, then the query up to a fragment or a space.
        let stop = rest
            .find(|c: char| c.is_whitespace() || c == '#')
            .unwrap_or(rest.len());
        let (url_rest, after) = rest.split_at(stop);
        match url_rest.split_once('?') {
            Some((path, query)) => {
                out.push_str(path);
                out.push('?');
                let params: Vec<String> = query
                    .split('&')
                    .map(|p| match p.split_once('=') {
                        Some((k, _)) if secret_key(k) => format!("{k}={REDACTED}"),
                        _ => p.to_string(),
                    })
                    .collect();
                out.push_str(&params.join("&"));
            }
            None => out.push_str(url_rest),
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

/// A value that is not itself a secret: a header or URLs inside it cut.
fn value(s: &str) -> String {
    header(s).unwrap_or_else(|| urls(s))
}

/// What the argument after the current one is.
#[derive(Clone, Copy, PartialEq)]
enum Next {
    Plain,
    /// A program's secret flag took it: cut whatever it is.
    Secret,
    /// A secret-named option took it, unless it is an option itself.
    SecretUnlessOption,
    /// curl's and wget's `user:password`.
    UserPassword,
    /// The value of one of sshpass's own options (`-f FILE`, `-d FD`):
    /// kept, and not the command.
    OwnValue,
}

/// One argument without the program's rules; sets `next` for the
/// argument after it.
fn generic(a: &str, next: &mut Next) -> String {
    if let Some(h) = header(a) {
        return h;
    }
    if let Some(rest) = a.strip_prefix("-H")
        && let Some(h) = header(rest)
    {
        return format!("-H{h}");
    }
    if let Some((key, v)) = a.split_once('=')
        && plausible_key(key)
    {
        // `--header=Authorization: Bearer a=b,c=d`: the header is the
        // value, whatever it holds.
        if !secret_key(key)
            && let Some(h) = header(v)
        {
            return format!("{key}={h}");
        }
        let items: Vec<&str> = a.split(',').collect();
        let pairs = items.iter().filter(|i| i.contains('=')).count();
        if pairs < 2 {
            // One key: its value runs to the end of the argument.
            let (key, v) = a.split_once('=').expect("checked");
            return if secret_key(key) {
                format!("{key}={REDACTED}")
            } else {
                format!("{key}={}", value(v))
            };
        }
        // A list (`user=u,password=x,ro`): commas end the values, as
        // the programs that take such lists read them.
        let shown: Vec<String> = items
            .iter()
            .map(|item| match item.split_once('=') {
                Some((k, _)) if secret_key(k) => format!("{k}={REDACTED}"),
                Some((k, v)) => format!("{k}={}", urls(v)),
                None => urls(item),
            })
            .collect();
        return shown.join(",");
    }
    if a.starts_with('-') && secret_key(a) {
        *next = Next::SecretUnlessOption;
    }
    urls(a)
}

/// The arguments of the command line `raw` (NUL-separated; invalid UTF-8
/// replaced), each secret in them replaced by [`REDACTED`], as `program`
/// reads them.
pub fn redact(raw: &[u8], program: Program) -> Vec<String> {
    let raw = raw.strip_suffix(&[0]).unwrap_or(raw);
    let mut out = Vec::new();
    let mut next = Next::Plain;
    // sshpass's own options end at the command it runs.
    let mut sshpass_options = program.is(Program::Sshpass);
    for (i, arg) in raw.split(|&b| b == 0).enumerate() {
        let a = String::from_utf8_lossy(arg);
        let a = a.as_ref();
        let this = std::mem::replace(&mut next, Next::Plain);
        match this {
            Next::Secret => {
                out.push(REDACTED.to_string());
                continue;
            }
            Next::SecretUnlessOption if !a.starts_with('-') => {
                out.push(REDACTED.to_string());
                continue;
            }
            Next::UserPassword => {
                out.push(user_password(a));
                continue;
            }
            Next::OwnValue => {
                out.push(a.to_string());
                continue;
            }
            _ => {}
        }
        if i == 0 {
            out.push(generic(a, &mut Next::Plain));
            continue;
        }
        if sshpass_options {
            if a == "-p" {
                out.push(a.to_string());
                next = Next::Secret;
                continue;
            }
            if let Some(p) = a.strip_prefix("-p")
                && !p.is_empty()
            {
                out.push(format!("-p{REDACTED}"));
                continue;
            }
            if matches!(a, "-f" | "-d") {
                out.push(a.to_string());
                next = Next::OwnValue;
                continue;
            }
            if !a.starts_with('-') {
                sshpass_options = false;
            }
        }
        if program.is(Program::MySql)
            && let Some(p) = a.strip_prefix("-p")
            && !p.is_empty()
        {
            out.push(format!("-p{REDACTED}"));
            continue;
        }
        if program.is(Program::RedisCli) && a == "-a" {
            out.push(a.to_string());
            next = Next::Secret;
            continue;
        }
        let curl = program.is(Program::Curl);
        let wget = program.is(Program::Wget);
        if (curl && matches!(a, "-u" | "-U" | "--user" | "--proxy-user"))
            || (wget && matches!(a, "--user" | "--http-user" | "--ftp-user" | "--proxy-user"))
        {
            out.push(a.to_string());
            next = Next::UserPassword;
            continue;
        }
        if curl
            && let Some(v) = a.strip_prefix("-u").or_else(|| a.strip_prefix("-U"))
            && !v.is_empty()
        {
            out.push(format!("{}{}", &a[..2], user_password(v)));
            continue;
        }
        if let Some((k, v)) = a.split_once('=')
            && ((curl && matches!(k, "--user" | "--proxy-user"))
                || (wget && matches!(k, "--user" | "--http-user" | "--ftp-user" | "--proxy-user")))
        {
            out.push(format!("{k}={}", user_password(v)));
            continue;
        }
        out.push(generic(a, &mut next));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(raw: &[u8], program: Program) -> String {
        redact(raw, program).join(" ")
    }

    fn other(raw: &[u8]) -> String {
        shown(raw, Program::Other)
    }

    #[test]
    fn url_userinfo() {
        assert_eq!(
            other(b"app\0https://user:pw3@db.example/x\0--db=postgres://u:p%40ss@h:5432/db"),
            "app https://user:<redacted>@db.example/x --db=postgres://u:<redacted>@h:5432/db"
        );
        // A token as the user, an empty user, a password holding '@'.
        assert_eq!(
            other(b"git\0clone\0https://ghp_tok@github.com/o/r\0redis://:rpw@h\0ftp://a:b@c@h/"),
            "git clone https://<redacted>@github.com/o/r redis://<redacted>@h ftp://a:<redacted>@h/"
        );
        // Secret query parameters; the rest of the URL stays.
        assert_eq!(
            other(b"x\0https://api/v1?access_token=t1&page=2#top"),
            "x https://api/v1?access_token=<redacted>&page=2#top"
        );
        assert_eq!(
            other(b"x\0https://example.org:8443/a?b=c"),
            "x https://example.org:8443/a?b=c"
        );
        // A password with a '/' in it; a port and a scoped package stay.
        assert_eq!(
            other(b"x\0https://user:p/w@host/x\0https://registry.example:443/@scope/pkg\0http://h/@me"),
            "x https://user:<redacted>@host/x https://registry.example:443/@scope/pkg http://h/@me"
        );
    }

    #[test]
    fn authorization_headers_however_passed() {
        assert_eq!(
            other(b"curl\0-H\0Authorization: Bearer tok4\0--header=Proxy-Authorization: Basic dTpw\0-HAuthorization:tok\0--header\0X-Api-Key: k1\0-H\0Accept: text/plain"),
            "curl -H Authorization: <redacted> --header=Proxy-Authorization: <redacted> -HAuthorization: <redacted> --header X-Api-Key: <redacted> -H Accept: text/plain"
        );
        // A value holding '=' does not survive as a key=value pair.
        assert_eq!(
            other(b"x\0authorization: Basic a=b=="),
            "x authorization: <redacted>"
        );
        assert_eq!(
            other(b"x\0--header=Authorization: Bearer a=b,c=d"),
            "x --header=Authorization: <redacted>"
        );
    }

    #[test]
    fn user_password_after_u_for_curl_and_wget() {
        assert_eq!(
            shown(b"curl\0-u\0alice:pw\0-ubob:pw2\0--user=carol:pw3\0--user\0dave:pw4\0-U\0px:pw5\0-u\0sk_live_1:", Program::Curl),
            "curl -u alice:<redacted> -ubob:<redacted> --user=carol:<redacted> --user dave:<redacted> -U px:<redacted> -u <redacted>:"
        );
        assert_eq!(
            shown(
                b"wget\0--user=erin:pw\0--http-user\0frank:pw2\0--password=x",
                Program::Wget
            ),
            "wget --user=erin:<redacted> --http-user frank:<redacted> --password=<redacted>"
        );
        // Other programs' -u is theirs: docker's uid:gid, python's -u.
        assert_eq!(
            other(b"docker\0run\0-u\x001000:1000\0img"),
            "docker run -u 1000:1000 img"
        );
        assert_eq!(shown(b"curl\0-u\0alice", Program::Curl), "curl -u alice");
    }

    #[test]
    fn comma_separated_key_value_lists() {
        assert_eq!(
            other(b"sshfs\0-o\0user=u,password=x,allow_other\0host:/d\0/mnt"),
            "sshfs -o user=u,password=<redacted>,allow_other host:/d /mnt"
        );
        assert_eq!(
            other(b"mount\0-ouser=u,pass=x\0--opts=uid=0,token=t"),
            "mount -ouser=u,pass=<redacted> --opts=uid=0,token=<redacted>"
        );
    }

    #[test]
    fn secret_keys_with_values_in_every_spelling() {
        assert_eq!(
            other(b"python3\0bind.py\0--password=abc1\0--token\0tok5\0PGPASSWORD=pg6\0--db-password\0pass7\0API_KEY=k\0--apiKey\0k2\0-Secret=s\0MYSQL_PWD=m\0--client-credential=c\0--private-key\0pk\0AUTH=a\0--passwd=z\0--pass\0rp"),
            "python3 bind.py --password=<redacted> --token <redacted> PGPASSWORD=<redacted> --db-password <redacted> API_KEY=<redacted> --apiKey <redacted> -Secret=<redacted> MYSQL_PWD=<redacted> --client-credential=<redacted> --private-key <redacted> AUTH=<redacted> --passwd=<redacted> --pass <redacted>"
        );
        // The value of a single key runs to the end, commas included.
        assert_eq!(other(b"x\0--password=a,b"), "x --password=<redacted>");
        // A flag followed by an option took no value.
        assert_eq!(
            other(b"mongod\0--auth\0--port\x0027017"),
            "mongod --auth --port 27017"
        );
    }

    #[test]
    fn keys_that_do_not_name_a_secret_are_kept() {
        let line = b"x\0--keyspace=k\0--author\0bob\0--tokenizer\0t\0--bypass\0y\0--monkey=m\0--password-file\0/run/s/p\0--no-auth\0n\0--auth-type=basic\0PWDX=1";
        assert_eq!(
            other(line),
            "x --keyspace=k --author bob --tokenizer t --bypass y --monkey=m --password-file /run/s/p --no-auth n --auth-type=basic PWDX=1"
        );
    }

    #[test]
    fn mysql_attached_p() {
        assert_eq!(
            shown(
                b"mysql\0-uroot\0-ppass8\0-h\0db\0-P3306\0-p\0mydb",
                Program::MySql
            ),
            "mysql -uroot -p<redacted> -h db -P3306 -p mydb"
        );
        assert_eq!(other(b"python3\0-ppass8"), "python3 -ppass8");
    }

    #[test]
    fn redis_cli_a() {
        assert_eq!(
            shown(
                b"redis-cli\0-h\0h\0-a\0redispw2\0-p\x006379",
                Program::RedisCli
            ),
            "redis-cli -h h -a <redacted> -p 6379"
        );
        // Even when it looks like an option.
        assert_eq!(
            shown(b"redis-cli\0-a\0-x", Program::RedisCli),
            "redis-cli -a <redacted>"
        );
        assert_eq!(other(b"python3\0-a\0redispw2"), "python3 -a redispw2");
    }

    #[test]
    fn sshpass_p_among_its_own_options_only() {
        assert_eq!(
            shown(
                b"sshpass\0-p\0hunter2\0ssh\0-p\x002222\0host",
                Program::Sshpass
            ),
            "sshpass -p <redacted> ssh -p 2222 host"
        );
        assert_eq!(
            shown(b"sshpass\0-v\0-phunter2\0ssh\0h", Program::Sshpass),
            "sshpass -v -p<redacted> ssh h"
        );
        assert_eq!(
            shown(
                b"sshpass\0-f\0/run/pw\0ssh\0-p\x002222\0h",
                Program::Sshpass
            ),
            "sshpass -f /run/pw ssh -p 2222 h"
        );
    }

    #[test]
    fn nothing_else_is_cut() {
        let line = b"nc\0-l\0-p\x003255\0-u\0-k";
        assert_eq!(other(line), "nc -l -p 3255 -u -k");
        let line = b"/usr/bin/rtpengine\0--interface=eth0\0--port-min=10000\0-v\0user:group\0a=b";
        assert_eq!(
            other(line),
            "/usr/bin/rtpengine --interface=eth0 --port-min=10000 -v user:group a=b"
        );
    }

    #[test]
    fn an_unknown_program_gets_every_programs_rules() {
        assert_eq!(
            shown(b"x\0-ppass8\0-a\0redispw2\0-u\0u:p", Program::Unknown),
            "x -p<redacted> -a <redacted> -u u:<redacted>"
        );
        assert_eq!(
            shown(b"nc\0-l\0-p\x003255", Program::Unknown),
            "nc -l -p <redacted>"
        );
    }

    #[test]
    fn the_program_is_the_executables_file_name() {
        let of = |e: &[u8]| Program::of_exe(Some(e));
        assert_eq!(of(b"/usr/bin/mariadb"), Program::MySql);
        assert_eq!(of(b"/usr/bin/mysqldump"), Program::MySql);
        assert_eq!(of(b"/usr/bin/redis-cli (deleted)"), Program::RedisCli);
        assert_eq!(of(b"/usr/bin/sshpass"), Program::Sshpass);
        assert_eq!(of(b"C:\\Tools\\CURL.EXE"), Program::Curl);
        assert_eq!(of(b"/usr/bin/wget"), Program::Wget);
        assert_eq!(of(b"/usr/bin/python3.11"), Program::Other);
        assert_eq!(of(b"/memfd:mysql (deleted)"), Program::Unknown);
        assert_eq!(Program::of_exe(None), Program::Unknown);
    }

    #[test]
    fn the_issues_line_as_python_and_as_each_program() {
        let line = b"python3\0bind.py\x003230\0-p\0hunter2\0--password=abc1\0-a\0redispw2\0https://user:pw3@db.example\0-H\0Authorization: Bearer tok4\0--token\0tok5\0PGPASSWORD=pg6\0--db-password\0pass7\0-ppass8";
        let py = other(line);
        assert_eq!(
            py,
            "python3 bind.py 3230 -p hunter2 --password=<redacted> -a redispw2 https://user:<redacted>@db.example -H Authorization: <redacted> --token <redacted> PGPASSWORD=<redacted> --db-password <redacted> -ppass8"
        );
        for s in ["abc1", "pw3", "tok4", "tok5", "pg6", "pass7"] {
            assert!(!py.contains(s), "{s}: {py}");
        }
        assert!(!shown(line, Program::MySql).contains("pass8"));
        assert!(!shown(line, Program::RedisCli).contains("redispw2"));
        // For sshpass, bind.py is the command: what follows is its own.
        assert!(shown(line, Program::Sshpass).contains("-p hunter2"));
    }
}
