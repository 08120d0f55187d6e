//! Platform matching with containerd's rules (`platforms` package): normalisation of OS and
//! architecture names, the default platform of this host, `Only` (which also accepts what the
//! host can run, e.g. 386 on amd64), `OnlyStrict`, `All`, ordering and formatting.

use crate::oci::Platform;

/// The GOOS of this host.
pub fn host_os() -> &'static str {
    match std::env::consts::OS {
        "macos" => "darwin",
        other => other,
    }
}

/// The GOARCH of this host.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "powerpc64" => "ppc64",
        "loongarch64" => "loong64",
        "mips64" if cfg!(target_endian = "little") => "mips64le",
        "mips" if cfg!(target_endian = "little") => "mipsle",
        other => other,
    }
}

/// containerd's `DefaultSpec()`: this host's OS, architecture and CPU variant.
pub fn default_spec() -> Platform {
    let arch = host_arch();
    let variant = match arch {
        "arm64" => "v8",
        "arm" => "v7",
        _ => "",
    };
    Platform {
        os: host_os().to_owned(),
        architecture: arch.to_owned(),
        variant: variant.to_owned(),
        ..Platform::default()
    }
}

fn normalize_os(os: &str) -> String {
    if os.is_empty() {
        return host_os().to_owned();
    }
    let os = os.to_lowercase();
    if os == "macos" {
        "darwin".to_owned()
    } else {
        os
    }
}

fn normalize_arch(arch: &str, variant: &str) -> (String, String) {
    let arch = arch.to_lowercase();
    let variant = variant.to_lowercase();
    match arch.as_str() {
        "i386" => ("386".into(), String::new()),
        "x86_64" | "x86-64" | "amd64" => {
            let v = if variant == "v1" {
                String::new()
            } else {
                variant
            };
            ("amd64".into(), v)
        }
        "aarch64" | "arm64" => {
            let v = if variant == "8" || variant == "v8" {
                String::new()
            } else {
                variant
            };
            ("arm64".into(), v)
        }
        "armhf" => ("arm".into(), "v7".into()),
        "armel" => ("arm".into(), "v6".into()),
        "arm" => {
            let v = match variant.as_str() {
                "" | "7" => "v7".to_owned(),
                "5" | "6" | "8" => format!("v{variant}"),
                _ => variant,
            };
            ("arm".into(), v)
        }
        _ => (arch, variant),
    }
}

/// containerd's `Normalize`.
pub fn normalize(p: &Platform) -> Platform {
    let (architecture, variant) = normalize_arch(&p.architecture, &p.variant);
    Platform {
        os: normalize_os(&p.os),
        architecture,
        variant,
        ..p.clone()
    }
}

/// containerd's `Format`: `os/arch[/variant]`, or `unknown` without an OS.
pub fn format(p: &Platform) -> String {
    if p.os.is_empty() {
        return "unknown".to_owned();
    }
    [p.os.as_str(), p.architecture.as_str(), p.variant.as_str()]
        .iter()
        .filter(|s| !s.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join("/")
}

fn known_os(os: &str) -> bool {
    matches!(
        os,
        "aix"
            | "android"
            | "darwin"
            | "dragonfly"
            | "freebsd"
            | "hurd"
            | "illumos"
            | "ios"
            | "js"
            | "linux"
            | "nacl"
            | "netbsd"
            | "openbsd"
            | "plan9"
            | "solaris"
            | "windows"
            | "zos"
    )
}

fn known_arch(arch: &str) -> bool {
    matches!(
        arch,
        "386"
            | "amd64"
            | "amd64p32"
            | "arm"
            | "armbe"
            | "arm64"
            | "arm64be"
            | "ppc64"
            | "ppc64le"
            | "loong64"
            | "mips"
            | "mipsle"
            | "mips64"
            | "mips64le"
            | "mips64p32"
            | "mips64p32le"
            | "ppc"
            | "riscv"
            | "riscv64"
            | "s390"
            | "s390x"
            | "sparc"
            | "sparc64"
            | "wasm"
    )
}

/// containerd's `Parse` of a platform specifier (`linux`, `arm64`, `linux/arm/v7`).
pub fn parse(spec: &str) -> Result<Platform, String> {
    if spec.contains('*') {
        return Err(format!("{spec:?}: wildcards not yet supported"));
    }
    let parts: Vec<&str> = spec.split('/').collect();
    for part in &parts {
        if part.is_empty()
            || !part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(format!(
                "{part:?} is an invalid component of {spec:?}: platform specifier component must match \"^[A-Za-z0-9_-]+$\""
            ));
        }
    }
    let mut p = Platform::default();
    match parts.as_slice() {
        [one] => {
            let os = normalize_os(one);
            if known_os(&os) {
                p.os = os;
                p.architecture = host_arch().to_owned();
                return Ok(p);
            }
            let (arch, mut variant) = normalize_arch(one, "");
            if arch == "arm" && variant == "v7" {
                variant.clear();
            }
            if known_arch(&arch) {
                p.os = host_os().to_owned();
                p.architecture = arch;
                p.variant = variant;
                return Ok(p);
            }
            Err(format!(
                "{spec:?}: unknown operating system or architecture"
            ))
        }
        [os, arch] => {
            p.os = normalize_os(os);
            let (arch, mut variant) = normalize_arch(arch, "");
            if arch == "arm" && variant == "v7" {
                variant.clear();
            }
            p.architecture = arch;
            p.variant = variant;
            Ok(p)
        }
        [os, arch, variant] => {
            p.os = normalize_os(os);
            let (arch, mut variant) = normalize_arch(arch, variant);
            if arch == "arm64" && variant.is_empty() {
                variant = "v8".to_owned();
            }
            p.architecture = arch;
            p.variant = variant;
            Ok(p)
        }
        _ => Err(format!("{spec:?}: cannot parse platform specifier")),
    }
}

/// What a platform-aware walk accepts, and in which order of preference.
#[derive(Clone, Debug)]
pub enum MatchComparer {
    /// Any of these (normalised) platforms, earlier ones preferred.
    Ordered(Vec<Platform>),
    /// Every platform, no preference.
    All,
}

fn matches_one(m: &Platform, p: &Platform) -> bool {
    let n = normalize(p);
    m.os == n.os && m.architecture == n.architecture && m.variant == n.variant
}

impl MatchComparer {
    pub fn matches(&self, p: &Platform) -> bool {
        match self {
            MatchComparer::All => true,
            MatchComparer::Ordered(ms) => ms.iter().any(|m| matches_one(m, p)),
        }
    }

    /// Whether `a` is preferred over `b`.
    pub fn less(&self, a: &Platform, b: &Platform) -> bool {
        match self {
            MatchComparer::All => false,
            MatchComparer::Ordered(ms) => {
                for m in ms {
                    let am = matches_one(m, a);
                    let bm = matches_one(m, b);
                    if am && !bm {
                        return true;
                    }
                    if am || bm {
                        return false;
                    }
                }
                false
            }
        }
    }

    /// Sorts descriptors stably: matched platforms by preference, those without one last.
    pub fn sort<T>(&self, items: &mut [T], platform: impl Fn(&T) -> Option<&Platform>) {
        items.sort_by(|x, y| match (platform(x), platform(y)) {
            (None, None) => std::cmp::Ordering::Equal,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some(_), None) => std::cmp::Ordering::Less,
            (Some(a), Some(b)) => {
                if self.less(a, b) {
                    std::cmp::Ordering::Less
                } else if self.less(b, a) {
                    std::cmp::Ordering::Greater
                } else {
                    std::cmp::Ordering::Equal
                }
            }
        });
    }
}

fn platform_vector(p: Platform) -> Vec<Platform> {
    let mut v = vec![p.clone()];
    match p.architecture.as_str() {
        "amd64" => {
            if let Ok(n) = p.variant.trim_start_matches('v').parse::<u32>() {
                for n in (1..n).rev() {
                    v.push(Platform {
                        variant: format!("v{n}"),
                        ..p.clone()
                    });
                }
            }
            v.push(Platform {
                architecture: "386".into(),
                variant: String::new(),
                ..p.clone()
            });
        }
        "arm" => {
            if let Ok(n) = p.variant.trim_start_matches('v').parse::<u32>() {
                if n > 5 {
                    for n in (5..n).rev() {
                        v.push(Platform {
                            variant: format!("v{n}"),
                            ..p.clone()
                        });
                    }
                }
            }
        }
        "arm64" => {
            let variant = if p.variant.is_empty() {
                "v8".to_owned()
            } else {
                p.variant.clone()
            };
            v.extend(platform_vector(Platform {
                architecture: "arm".into(),
                variant,
                ..p.clone()
            }));
        }
        _ => {}
    }
    v
}

/// containerd's `Only`: the platform and those it can also run.
pub fn only(p: &Platform) -> MatchComparer {
    MatchComparer::Ordered(
        platform_vector(normalize(p))
            .into_iter()
            .map(|p| normalize(&p))
            .collect(),
    )
}

/// containerd's `OnlyStrict`: exactly the platform.
pub fn only_strict(p: &Platform) -> MatchComparer {
    MatchComparer::Ordered(vec![normalize(p)])
}

/// containerd's `Ordered`: any of these, in this order of preference.
pub fn ordered(ps: &[Platform]) -> MatchComparer {
    MatchComparer::Ordered(ps.iter().map(normalize).collect())
}

/// `platforms.Default()`: this host's platform, plus what it can run.
pub fn default_matcher() -> MatchComparer {
    only(&default_spec())
}

/// `platforms.DefaultStrict()`: this host's platform only.
pub fn default_strict() -> MatchComparer {
    only_strict(&default_spec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(os: &str, arch: &str, variant: &str) -> Platform {
        Platform {
            os: os.into(),
            architecture: arch.into(),
            variant: variant.into(),
            ..Platform::default()
        }
    }

    #[test]
    fn parse_and_format() {
        assert_eq!(format(&parse("linux/amd64").unwrap()), "linux/amd64");
        assert_eq!(format(&parse("linux/arm64").unwrap()), "linux/arm64");
        assert_eq!(format(&parse("linux/arm64/v8").unwrap()), "linux/arm64/v8");
        assert_eq!(format(&parse("linux/armhf").unwrap()), "linux/arm");
        assert_eq!(format(&parse("linux/arm/7").unwrap()), "linux/arm/v7");
        assert_eq!(format(&parse("linux/arm").unwrap()), "linux/arm");
        assert_eq!(format(&parse("windows/x86_64").unwrap()), "windows/amd64");
        assert!(parse("linux/*").is_err());
        assert!(parse("a/b/c/d").is_err());
        assert!(parse("nonsense").is_err());
        assert_eq!(format(&Platform::default()), "unknown");
    }

    #[test]
    fn only_amd64_also_runs_386() {
        let m = only(&p("linux", "amd64", ""));
        assert!(m.matches(&p("linux", "amd64", "")));
        assert!(m.matches(&p("linux", "x86_64", "")));
        assert!(m.matches(&p("linux", "386", "")));
        assert!(!m.matches(&p("linux", "arm64", "")));
        assert!(m.less(&p("linux", "amd64", ""), &p("linux", "386", "")));
        let strict = only_strict(&p("linux", "amd64", ""));
        assert!(!strict.matches(&p("linux", "386", "")));
    }

    #[test]
    fn arm64_variants_normalise() {
        let m = only(&p("linux", "arm64", "v8"));
        assert!(m.matches(&p("linux", "arm64", "")));
        assert!(m.matches(&p("linux", "aarch64", "8")));
        assert!(m.matches(&p("linux", "arm", "v7")));
        assert!(m.matches(&p("linux", "arm", "v5")));
        assert!(!m.matches(&p("linux", "amd64", "")));
    }

    #[test]
    fn sort_prefers_matches_then_unplatformed_last() {
        let m = only(&p("linux", "amd64", ""));
        let mut v = vec![
            None,
            Some(p("linux", "386", "")),
            Some(p("linux", "amd64", "")),
        ];
        m.sort(&mut v, |x| x.as_ref());
        assert_eq!(v[0].as_ref().unwrap().architecture, "amd64");
        assert_eq!(v[1].as_ref().unwrap().architecture, "386");
        assert!(v[2].is_none());
    }
}
