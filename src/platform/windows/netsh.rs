//! Windows' port settings, read from `netsh`: the dynamic (ephemeral) port
//! range per protocol (`netsh int ipv4 show dynamicport tcp`) and the
//! excluded port ranges (`netsh int ipv4 show excludedportrange
//! protocol=udp`), the Hyper-V/WinNAT/administered reservations in which
//! binds fail. No documented Win32 API lists the excluded ranges (iphlpapi
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

/// Parses `netsh int ipv4 show excludedportrange protocol=<protocol>`:
/// one "start end" pair per line under the dashed line (administered
/// exclusions carry a trailing `*`). No pair is an empty set.
pub fn parse_excluded_ranges(text: &str) -> Result<PortSet, String> {
    let body = below_dashes(text)?;
    let mut ranges = Vec::new();
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
        ranges.push((start, end));
    }
    Ok(PortSet::from_intervals(ranges))
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

    use crate::ranges::{PortSet, Protocol};

    /// How long an answer is kept.
    const TTL: Duration = Duration::from_secs(60);
    /// How long netsh may take.
    const TIMEOUT: Duration = Duration::from_secs(5);
    const CREATE_NO_WINDOW: u32 = 0x0800_0000;

    #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
    enum Query {
        Dynamic,
        Excluded,
    }

    type Key = (Query, &'static str, Protocol);
    /// When each answer was read, and the answer.
    type Answers = HashMap<Key, (Instant, Result<PortSet, String>)>;

    /// The port settings, each read at most once a minute.
    #[derive(Default)]
    pub struct Settings {
        cache: Mutex<Answers>,
    }

    impl Settings {
        /// The dynamic port range of `protocol` (IPv4, plus IPv6's when
        /// it differs).
        pub fn dynamic(&self, protocol: Protocol) -> Result<PortSet, String> {
            self.both(Query::Dynamic, protocol)
        }

        /// The excluded port ranges of `protocol` (IPv4 and IPv6).
        pub fn excluded(&self, protocol: Protocol) -> Result<PortSet, String> {
            self.both(Query::Excluded, protocol)
        }

        fn both(&self, query: Query, protocol: Protocol) -> Result<PortSet, String> {
            let v4 = self.get((query, "ipv4", protocol))?;
            match self.get((query, "ipv6", protocol)) {
                Ok(v6) => Ok(PortSet::union([&v4, &v6])),
                Err(e) => {
                    log::debug!("netsh int ipv6 for {protocol}: {e}");
                    Ok(v4)
                }
            }
        }

        fn get(&self, key: Key) -> Result<PortSet, String> {
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((at, answer)) = cache.get(&key)
                && at.elapsed() < TTL
            {
                return answer.clone();
            }
            let answer = read(key);
            cache.insert(key, (Instant::now(), answer.clone()));
            answer
        }
    }

    fn read((query, family, protocol): Key) -> Result<PortSet, String> {
        let args = match query {
            Query::Dynamic => vec![
                "int".to_string(),
                family.to_string(),
                "show".into(),
                "dynamicport".into(),
                protocol.as_str().into(),
            ],
            Query::Excluded => vec![
                "int".to_string(),
                family.to_string(),
                "show".into(),
                "excludedportrange".into(),
                format!("protocol={}", protocol.as_str()),
            ],
        };
        let shown = format!("netsh {}", args.join(" "));
        let text = netsh(&args).map_err(|e| format!("{shown}: {e}"))?;
        match query {
            Query::Dynamic => super::parse_dynamic_port(&text),
            Query::Excluded => super::parse_excluded_ranges(&text),
        }
        .map_err(|e| format!("{shown}: {e}"))
    }

    /// Runs `%SystemRoot%\System32\netsh.exe` (never one found on PATH),
    /// with no window, and returns its output; killed after [`TIMEOUT`].
    fn netsh(args: &[String]) -> Result<String, String> {
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
            .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
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
                    return Err(format!("no answer within {} s", TIMEOUT.as_secs()));
                }
                Err(e) => return Err(e.to_string()),
            }
        };
        let out = reader.join().unwrap_or_default();
        let text = String::from_utf8_lossy(&out).into_owned();
        if !status.success() {
            return Err(format!("exited with {status}: {:?}", super::excerpt(&text)));
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
        let p = parse_excluded_ranges(EXCLUDED_EN).unwrap();
        assert_eq!(
            p,
            PortSet::from_intervals(vec![(3230, 3239), (50000, 50059)])
        );
        assert_eq!(p.len(), 70);
        assert!(parse_excluded_ranges(EXCLUDED_NONE).unwrap().is_empty());
        let p = parse_excluded_ranges(EXCLUDED_DE).unwrap();
        assert_eq!(p.len(), 100);
        // Wine's netsh prints nothing: an error, never "no exclusions".
        assert!(parse_excluded_ranges("").is_err());
        assert!(parse_excluded_ranges("-----\n 20 10\n").is_err());
    }
}
