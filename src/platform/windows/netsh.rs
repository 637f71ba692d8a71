//! Windows' port settings, read from `netsh`: the dynamic (ephemeral) port
//! range per protocol (`netsh int ipv4 show dynamicport tcp`) and the
//! excluded port ranges (`netsh int ipv4 show excludedportrange
//! protocol=udp`). Excluded ranges are of two kinds: those a service
//! reserved (Hyper-V's WinNAT, Docker, WSL), in which a bind fails with
//! WSAEACCES although nothing listens, and administered ones (marked `*`,
//! added with `netsh ... add excludedportrange`), which keep ports out of
//! the dynamic range and of other reservations but which a program may
//! still bind explicitly. Both are outside the dynamic range; only the
//! first are unbindable. No documented Win32 API lists the excluded ranges (iphlpapi
//! only creates and looks up persistent reservations by their start, and
//! the Host Compute Network API covers its own guest reservations), so
//! netsh, which ships with every Windows since Vista, is the source; its
//! labels are localized, so the parsers read only the numbers below the
//! dashed header line, and refuse output without one (Wine's netsh prints
//! nothing for these commands). The IPv4 answer is required, the IPv6 one
//! is added when it parses. Each answer is kept for a minute: these are
//! settings, and a scrape should not start eight processes.

use crate::ranges::PortSet;

/// Parses `netsh int ipv4 show dynamicport <protocol>`: the start port and
/// the number of ports, the two numbers under the dashed line.
pub fn parse_dynamic_port(text: &str) -> Result<PortSet, String> {
    let body = below_dashes(text)?;
    let numbers: Vec<u32> = body
        .iter()
        .filter_map(|l| l.rsplit_once(':'))
        .filter_map(|(_, v)| v.trim().parse().ok())
        .collect();
    let [start, count] = numbers[..] else {
        return Err(format!(
            "expected a start port and a number of ports, found {} numbers in {:?}",
            numbers.len(),
            excerpt(text)
        ));
    };
    let end = start + count.saturating_sub(1);
    if start == 0 || count == 0 || end > 65535 {
        return Err(format!(
            "start port {start} and {count} ports are not a port range"
        ));
    }
    Ok(PortSet::from_intervals(vec![(start as u16, end as u16)]))
}

/// The excluded port ranges of one protocol.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Exclusions {
    /// Reserved by a service: no other program can bind these.
    pub reserved: PortSet,
    /// Administered (`*`): out of the dynamic range, but bindable.
    pub administered: PortSet,
}

impl Exclusions {
    /// Every excluded port, of either kind.
    pub fn all(&self) -> PortSet {
        PortSet::union([&self.reserved, &self.administered])
    }
}

/// Parses `netsh int ipv4 show excludedportrange protocol=<protocol>`:
/// one "start end" pair per line under the dashed line, administered
/// exclusions with a trailing `*`. No pair is no exclusion.
pub fn parse_excluded_ranges(text: &str) -> Result<Exclusions, String> {
    let body = below_dashes(text)?;
    let (mut reserved, mut administered) = (Vec::new(), Vec::new());
    for line in body {
        let mut words = line.split_whitespace();
        let (Some(a), Some(b)) = (words.next(), words.next()) else {
            continue;
        };
        let (Ok(start), Ok(end)) = (a.parse::<u16>(), b.parse::<u16>()) else {
            continue; // the "* - Administered port exclusions." legend
        };
        if start == 0 || start > end {
            return Err(format!("{start}-{end} is not a port range"));
        }
        if words.next() == Some("*") {
            administered.push((start, end));
        } else {
            reserved.push((start, end));
        }
    }
    Ok(Exclusions {
        reserved: PortSet::from_intervals(reserved),
        administered: PortSet::from_intervals(administered),
    })
}

/// The lines after the last line made of dashes (and spaces), which ends
/// the localized header.
fn below_dashes(text: &str) -> Result<Vec<&str>, String> {
    let lines: Vec<&str> = text.lines().collect();
    let is_rule = |l: &str| {
        let t = l.trim();
        t.len() >= 3 && t.chars().all(|c| c == '-' || c == ' ')
    };
    let Some(i) = lines.iter().rposition(|l| is_rule(l)) else {
        return Err(format!(
            "unexpected netsh output (no dashed header line): {:?}",
            excerpt(text)
        ));
    };
    Ok(lines[i + 1..].to_vec())
}

fn excerpt(text: &str) -> String {
    let t = text.trim();
    if t.chars().count() > 200 {
        format!("{}...", t.chars().take(200).collect::<String>())
    } else {
        t.to_string()
    }
}

#[cfg(windows)]
pub use run::Settings;

#[cfg(windows)]
mod run {
    use std::collections::HashMap;
    use std::io::Read;
    use std::os::windows::process::CommandExt;
    use std::process::{Command, Stdio};
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    use super::Exclusions;
    use crate::ranges::{PortSet, Protocol};

    /// How long an answer is kept.
    const TTL: Duration = Duration::from_secs(60);
    /// How long netsh may take.
    const TIMEOUT: Duration = Duration::from_secs(5);
    const CREATE_NO_WINDOW: u32 = 0x0800_0000;

    /// IP version and protocol of one question.
    type Key = (&'static str, Protocol);
    /// When each answer was read, and the answer.
    type Answers<T> = Mutex<HashMap<Key, (Instant, Result<T, String>)>>;

    /// The port settings, each read at most once a minute.
    #[derive(Default)]
    pub struct Settings {
        dynamic: Answers<PortSet>,
        excluded: Answers<Exclusions>,
    }

    impl Settings {
        /// The ports outgoing connections of `protocol` can take: the
        /// dynamic port range (IPv4's, and IPv6's when it reads) less every
        /// excluded range (if those cannot be read, the whole dynamic range
        /// counts: the overlap is overstated rather than hidden).
        pub fn ephemeral(&self, protocol: Protocol) -> Result<PortSet, String> {
            let dynamic = both(&self.dynamic, protocol, read_dynamic, |a, b| {
                PortSet::union([a, b])
            })?;
            Ok(match self.excluded(protocol) {
                Ok(x) => dynamic.difference(&x.all()),
                Err(_) => dynamic,
            })
        }

        /// The excluded port ranges of `protocol` (IPv4 and IPv6).
        pub fn excluded(&self, protocol: Protocol) -> Result<Exclusions, String> {
            both(&self.excluded, protocol, read_excluded, |a, b| Exclusions {
                reserved: PortSet::union([&a.reserved, &b.reserved]),
                administered: PortSet::union([&a.administered, &b.administered]),
            })
        }
    }

    /// IPv4's answer (required) merged with IPv6's (when it reads).
    fn both<T: Clone>(
        answers: &Answers<T>,
        protocol: Protocol,
        read: fn(Key) -> Result<T, String>,
        merge: fn(&T, &T) -> T,
    ) -> Result<T, String> {
        let v4 = cached(answers, ("ipv4", protocol), read)?;
        match cached(answers, ("ipv6", protocol), read) {
            Ok(v6) => Ok(merge(&v4, &v6)),
            Err(e) => {
                log::debug!("netsh int ipv6 for {protocol}: {e}");
                Ok(v4)
            }
        }
    }

    fn cached<T: Clone>(
        answers: &Answers<T>,
        key: Key,
        read: fn(Key) -> Result<T, String>,
    ) -> Result<T, String> {
        let mut map = answers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, answer)) = map.get(&key)
            && at.elapsed() < TTL
        {
            return answer.clone();
        }
        let answer = read(key);
        map.insert(key, (Instant::now(), answer.clone()));
        answer
    }

    fn read_dynamic((family, protocol): Key) -> Result<PortSet, String> {
        let args = ["int", family, "show", "dynamicport", protocol.as_str()];
        let text = netsh(&args)?;
        super::parse_dynamic_port(&text).map_err(|e| format!("netsh {}: {e}", args.join(" ")))
    }

    fn read_excluded((family, protocol): Key) -> Result<Exclusions, String> {
        let which = format!("protocol={}", protocol.as_str());
        let args = ["int", family, "show", "excludedportrange", &which];
        let text = netsh(&args)?;
        super::parse_excluded_ranges(&text).map_err(|e| format!("netsh {}: {e}", args.join(" ")))
    }

    /// Runs `%SystemRoot%\System32\netsh.exe` (never one found on PATH),
    /// with no window, and returns its output; killed after [`TIMEOUT`].
    fn netsh(args: &[&str]) -> Result<String, String> {
        let shown = format!("netsh {}", args.join(" "));
        let root = std::env::var_os("SystemRoot").unwrap_or_else(|| "C:\\Windows".into());
        let exe = std::path::Path::new(&root)
            .join("System32")
            .join("netsh.exe");
        let mut child = Command::new(&exe)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .creation_flags(CREATE_NO_WINDOW)
            .spawn()
            .map_err(|e| format!("{shown}: cannot start {}: {e}", exe.display()))?;
        let mut stdout = child.stdout.take().expect("stdout is piped");
        let reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = stdout.read_to_end(&mut buf);
            buf
        });
        let deadline = Instant::now() + TIMEOUT;
        let status = loop {
            match child.try_wait() {
                Ok(Some(st)) => break st,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("{shown}: no answer within {} s", TIMEOUT.as_secs()));
                }
                Err(e) => return Err(format!("{shown}: {e}")),
            }
        };
        let out = reader.join().unwrap_or_default();
        let text = String::from_utf8_lossy(&out).into_owned();
        if !status.success() {
            return Err(format!(
                "{shown}: exited with {status}: {:?}",
                super::excerpt(&text)
            ));
        }
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The layout of netsh's answers on Windows Server 2019/2022 (English),
    // with the labels of a German installation in the second cases.
    const DYNAMIC_EN: &str = "\r\nProtocol tcp Dynamic Port Range\r\n---------------------------------\r\nStart Port      : 49152\r\nNumber of Ports : 16384\r\n\r\n";
    const DYNAMIC_DE: &str = "\r\nProtokoll udp Dynamischer Portbereich\r\n---------------------------------\r\nStartport       : 1025\r\nAnzahl der Ports : 64511\r\n\r\n";
    const EXCLUDED_EN: &str = "\r\nProtocol udp Port Exclusion Ranges\r\n\r\nStart Port    End Port\r\n----------    --------\r\n      3230        3239\r\n     50000       50059     *\r\n\r\n* - Administered port exclusions.\r\n\r\n";
    const EXCLUDED_NONE: &str = "\r\nProtocol tcp Port Exclusion Ranges\r\n\r\nStart Port    End Port\r\n----------    --------\r\n\r\n* - Administered port exclusions.\r\n\r\n";
    const EXCLUDED_DE: &str = "\r\nProtokoll tcp Portausschlussbereiche\r\n\r\nStartport    Endport\r\n----------    --------\r\n      1080        1179\r\n\r\n* - Verwaltete Portausschlüsse.\r\n\r\n";

    #[test]
    fn dynamic_ranges() {
        let p = parse_dynamic_port(DYNAMIC_EN).unwrap();
        assert_eq!(p, PortSet::from_intervals(vec![(49152, 65535)]));
        let p = parse_dynamic_port(DYNAMIC_DE).unwrap();
        assert_eq!(p, PortSet::from_intervals(vec![(1025, 65535)]));
        for bad in [
            "",
            "The following command was not found: int ipv4 show dynamicport tcp.",
            "-----\nStart Port : 49152\n",
            "-----\nStart Port : 60000\nNumber of Ports : 10000\n",
            "-----\nStart Port : 0\nNumber of Ports : 10\n",
        ] {
            assert!(parse_dynamic_port(bad).is_err(), "{bad:?}");
        }
        let e = parse_dynamic_port("").unwrap_err();
        assert!(e.contains("no dashed header line"), "{e}");
    }

    #[test]
    fn excluded_ranges() {
        let x = parse_excluded_ranges(EXCLUDED_EN).unwrap();
        assert_eq!(x.reserved, PortSet::from_intervals(vec![(3230, 3239)]));
        assert_eq!(
            x.administered,
            PortSet::from_intervals(vec![(50000, 50059)]),
            "the * lines"
        );
        assert_eq!(x.all().len(), 70);
        assert_eq!(
            parse_excluded_ranges(EXCLUDED_NONE).unwrap(),
            Exclusions::default()
        );
        let x = parse_excluded_ranges(EXCLUDED_DE).unwrap();
        assert_eq!((x.reserved.len(), x.administered.len()), (100, 0));
        // Wine's netsh prints nothing: an error, never "no exclusions".
        assert!(parse_excluded_ranges("").is_err());
        assert!(parse_excluded_ranges("-----\n 20 10\n").is_err());
    }
}
