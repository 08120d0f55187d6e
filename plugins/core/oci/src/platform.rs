//! Platforms with containerd's rules (its `platforms` package), over oci-spec's [`Platform`]:
//!
//! - [`host_platform`] (`DefaultSpec`): this machine's OS, architecture and, on arm, the CPU
//!   variant read from `/proc/cpuinfo` as containerd reads it;
//! - [`normalize`]: `x86_64` → `amd64`, `aarch64` → `arm64` (whose `v8` is implied), `armhf` →
//!   `arm/v7`, amd64's `v1` dropped, …;
//! - [`parse`] and [`format`] of `os[/arch[/variant]]`;
//! - [`Matcher`]: `Only` (the platform and what it also runs: arm v7 runs v6 and v5, arm64 runs
//!   arm, amd64 runs 386), `OnlyStrict`, `Ordered`, `All`, and the order of preference.

use std::cmp::Ordering;

use oci_spec::image::{Arch, Os, Platform};

/// Why a platform specifier does not parse. The texts are containerd's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlatformError {
    #[error("{0:?}: wildcards not yet supported")]
    Wildcard(String),
    #[error(
        "{component:?} is an invalid component of {spec:?}: platform specifier component must match \"^[A-Za-z0-9_-]+$\""
    )]
    InvalidComponent { component: String, spec: String },
    #[error("{0:?}: unknown operating system or architecture")]
    Unknown(String),
    #[error("{0:?}: cannot parse platform specifier")]
    TooManyParts(String),
}

/// A platform of `os`, `arch` and `variant` (empty: none), taken as given.
pub fn new(os: &str, arch: &str, variant: &str) -> Platform {
    let mut p = Platform::default();
    p.set_os(Os::from(os));
    p.set_architecture(arch_from(arch));
    p.set_variant((!variant.is_empty()).then(|| variant.to_owned()));
    p
}

fn arch_from(arch: &str) -> Arch {
    match arch {
        // oci-spec reads `armbe` as arm64be.
        "armbe" => Arch::ARMbe,
        other => Arch::from(other),
    }
}

/// The OS of `p` as a Go GOOS string.
pub fn os(p: &Platform) -> String {
    p.os().to_string()
}

/// The architecture of `p` as a Go GOARCH string.
pub fn arch(p: &Platform) -> String {
    p.architecture().to_string()
}

/// The variant of `p`, empty for none.
pub fn variant(p: &Platform) -> &str {
    p.variant().as_deref().unwrap_or("")
}

/// The GOOS of this machine.
pub fn host_os() -> &'static str {
    match std::env::consts::OS {
        "macos" => "darwin",
        other => other,
    }
}

/// The GOARCH of this machine (the one architecture table: Rust's names to Go's).
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "powerpc64" => "ppc64",
        "powerpc" => "ppc",
        "loongarch64" => "loong64",
        "mips64" if cfg!(target_endian = "little") => "mips64le",
        "mips" if cfg!(target_endian = "little") => "mipsle",
        "riscv64gc" => "riscv64",
        other => other,
    }
}

/// containerd's `DefaultSpec`: this machine's OS, architecture and CPU variant (arm and arm64
/// only; amd64 and the others have none).
pub fn host_platform() -> Platform {
    let arch = host_arch();
    new(host_os(), arch, &host_variant(arch))
}

fn host_variant(arch: &str) -> String {
    if !matches!(arch, "arm" | "arm64") {
        return String::new();
    }
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| variant_from_cpuinfo(&c, arch))
        // What containerd would find on any machine that runs this arch's binaries.
        .unwrap_or_else(|| if arch == "arm64" { "v8" } else { "v7" }.to_owned())
}

/// containerd's `getCPUVariant`: the variant named by `/proc/cpuinfo`'s `CPU architecture` line
/// (`8` → `v8`, `7` → `v7`, …, `unknown` for anything else), with the Raspberry Pi quirk (an
/// ARMv6 core reporting 7). `None` when the line is missing.
pub fn variant_from_cpuinfo(cpuinfo: &str, goarch: &str) -> Option<String> {
    let field = |name: &str| {
        cpuinfo.lines().find_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    };
    let mut v = field("Cpu architecture")?.to_ascii_lowercase();
    if goarch == "arm"
        && v == "7"
        && field("model name")
            .is_some_and(|m| m.to_ascii_lowercase().starts_with("armv6-compatible"))
    {
        v = "6".into();
    }
    let variant = match v.as_str() {
        "8" | "aarch64" => "v8",
        "7" | "7m" | "?(12)" | "?(13)" | "?(14)" | "?(15)" | "?(16)" | "?(17)" => "v7",
        "6" | "6tej" => "v6",
        "5" | "5t" | "5te" | "5tej" => "v5",
        "4" | "4t" => "v4",
        "3" => "v3",
        _ => "unknown",
    };
    Some(variant.to_owned())
}

fn normalize_os(os: &str) -> String {
    if os.is_empty() {
        return host_os().to_owned();
    }
    let os = os.to_ascii_lowercase();
    if os == "macos" {
        "darwin".to_owned()
    } else {
        os
    }
}

/// containerd's `normalizeArch`: the architecture's Go name and the variant that goes with it.
fn normalize_arch(arch: &str, variant: &str) -> (String, String) {
    let arch = arch.to_ascii_lowercase();
    let variant = variant.to_ascii_lowercase();
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

/// containerd's `Normalize`: Go's names for OS and architecture, the variant in canonical form
/// (none for amd64 v1 and arm64 v8, `v7` for plain arm). Other fields are kept.
pub fn normalize(p: &Platform) -> Platform {
    let (a, v) = normalize_arch(&arch(p), variant(p));
    let mut out = p.clone();
    out.set_os(Os::from(normalize_os(&os(p)).as_str()));
    out.set_architecture(arch_from(&a));
    out.set_variant((!v.is_empty()).then_some(v));
    out
}

/// containerd's `Format`: `os/arch[/variant]`, or `unknown` without an OS.
pub fn format(p: &Platform) -> String {
    let (os, arch) = (os(p), arch(p));
    if os.is_empty() {
        return "unknown".to_owned();
    }
    [os.as_str(), arch.as_str(), variant(p)]
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

/// containerd's `Parse` of a platform specifier: `linux`, `arm64`, `linux/amd64`,
/// `linux/arm/v7`. A lone OS gets this machine's architecture; a lone architecture this
/// machine's OS.
pub fn parse(spec: &str) -> Result<Platform, PlatformError> {
    if spec.contains('*') {
        return Err(PlatformError::Wildcard(spec.to_owned()));
    }
    let parts: Vec<&str> = spec.split('/').collect();
    for part in &parts {
        if part.is_empty()
            || !part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(PlatformError::InvalidComponent {
                component: (*part).to_owned(),
                spec: spec.to_owned(),
            });
        }
    }
    match parts.as_slice() {
        [one] => {
            let os = normalize_os(one);
            if known_os(&os) {
                let arch = host_arch();
                let mut variant = String::new();
                if arch == "arm" {
                    let v = host_variant(arch);
                    if v != "v7" {
                        variant = v;
                    }
                }
                return Ok(new(&os, arch, &variant));
            }
            let (arch, mut variant) = normalize_arch(one, "");
            if arch == "arm" && variant == "v7" {
                variant.clear();
            }
            if known_arch(&arch) {
                return Ok(new(host_os(), &arch, &variant));
            }
            Err(PlatformError::Unknown(spec.to_owned()))
        }
        [os, arch] => {
            let (arch, mut variant) = normalize_arch(arch, "");
            if arch == "arm" && variant == "v7" {
                variant.clear();
            }
            Ok(new(&normalize_os(os), &arch, &variant))
        }
        [os, arch, variant] => {
            let (arch, mut variant) = normalize_arch(arch, variant);
            if arch == "arm64" && variant.is_empty() {
                variant = "v8".to_owned();
            }
            Ok(new(&normalize_os(os), &arch, &variant))
        }
        _ => Err(PlatformError::TooManyParts(spec.to_owned())),
    }
}

/// A normalised `(os, architecture, variant)`, what matching compares.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Key {
    os: String,
    arch: String,
    variant: String,
}

impl Key {
    fn of(p: &Platform) -> Key {
        let n = normalize(p);
        Key {
            os: os(&n),
            arch: arch(&n),
            variant: variant(&n).to_owned(),
        }
    }

    fn platform(&self) -> Platform {
        new(&self.os, &self.arch, &self.variant)
    }
}

/// Which platforms a platform-aware walk accepts, and in which order of preference
/// (containerd's `MatchComparer`).
#[derive(Debug, Clone)]
pub struct Matcher(Accept);

#[derive(Debug, Clone)]
enum Accept {
    /// Any of these (normalised), earlier ones preferred.
    Ordered(Vec<Key>),
    /// Every platform, no preference.
    All,
}

impl Matcher {
    /// containerd's `Only`: `p` and the platforms it also runs (arm/v7 also v6 and v5; arm64
    /// also arm; amd64 with a level also the lower levels, and 386), in that order.
    pub fn only(p: &Platform) -> Matcher {
        let keys = platform_vector(Key::of(p))
            .iter()
            .map(|k| Key::of(&k.platform()))
            .collect();
        Matcher(Accept::Ordered(keys))
    }

    /// containerd's `OnlyStrict`: exactly `p` (after normalisation).
    pub fn only_strict(p: &Platform) -> Matcher {
        Matcher(Accept::Ordered(vec![Key::of(p)]))
    }

    /// containerd's `Ordered`: any of `ps`, earlier preferred.
    pub fn ordered(ps: &[Platform]) -> Matcher {
        Matcher(Accept::Ordered(ps.iter().map(Key::of).collect()))
    }

    /// Every platform (`platforms.All`).
    pub fn all() -> Matcher {
        Matcher(Accept::All)
    }

    /// `platforms.Default()`: this machine's platform and what it also runs.
    pub fn host() -> Matcher {
        Matcher::only(&host_platform())
    }

    /// `platforms.DefaultStrict()`: this machine's platform only.
    pub fn host_strict() -> Matcher {
        Matcher::only_strict(&host_platform())
    }

    /// Whether every platform matches.
    pub fn is_all(&self) -> bool {
        matches!(self.0, Accept::All)
    }

    pub fn matches(&self, p: &Platform) -> bool {
        match &self.0 {
            Accept::All => true,
            Accept::Ordered(ks) => {
                let k = Key::of(p);
                ks.contains(&k)
            }
        }
    }

    /// Whether `a` is preferred over `b`.
    pub fn less(&self, a: &Platform, b: &Platform) -> bool {
        let Accept::Ordered(ks) = &self.0 else {
            return false;
        };
        let (a, b) = (Key::of(a), Key::of(b));
        for k in ks {
            let (am, bm) = (*k == a, *k == b);
            if am && !bm {
                return true;
            }
            if am || bm {
                return false;
            }
        }
        false
    }

    /// Sorts `items` stably by the preference of their platforms; those without one go last.
    pub fn sort<T>(&self, items: &mut [T], platform: impl Fn(&T) -> Option<&Platform>) {
        items.sort_by(|x, y| match (platform(x), platform(y)) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Greater,
            (Some(_), None) => Ordering::Less,
            (Some(a), Some(b)) => {
                if self.less(a, b) {
                    Ordering::Less
                } else if self.less(b, a) {
                    Ordering::Greater
                } else {
                    Ordering::Equal
                }
            }
        });
    }

    /// The platforms this matcher accepts, most preferred first (empty for [`Matcher::all`]).
    pub fn platforms(&self) -> Vec<Platform> {
        match &self.0 {
            Accept::All => Vec::new(),
            Accept::Ordered(ks) => ks.iter().map(Key::platform).collect(),
        }
    }
}

/// Lower variant levels are listed from at most this one down. containerd lists every level
/// below the platform's, so `linux/amd64/v4000000000` (a valid specifier, from a client) made
/// it — and Berth, before this bound — build four billion platforms and run out of memory. Real
/// levels stop at amd64 v4 and arm v8; below this bound the vector is containerd's.
const MAX_VARIANT_LEVEL: u32 = 16;

/// containerd's `platformVector`: `k` and the platforms it can also run, most preferred first.
fn platform_vector(k: Key) -> Vec<Key> {
    let mut v = vec![k.clone()];
    let level = |variant: &str| {
        variant
            .strip_prefix('v')
            .and_then(|n| n.parse::<u32>().ok())
            .map(|n| n.min(MAX_VARIANT_LEVEL + 1))
    };
    match k.arch.as_str() {
        "amd64" => {
            if let Some(n) = level(&k.variant) {
                for n in (1..n).rev() {
                    v.push(Key {
                        variant: format!("v{n}"),
                        ..k.clone()
                    });
                }
            }
            v.push(Key {
                arch: "386".into(),
                variant: String::new(),
                ..k.clone()
            });
        }
        "arm" => {
            if let Some(n) = level(&k.variant) {
                for n in (5..n).rev() {
                    v.push(Key {
                        variant: format!("v{n}"),
                        ..k.clone()
                    });
                }
            }
        }
        "arm64" => {
            let variant = if k.variant.is_empty() {
                "v8".to_owned()
            } else {
                k.variant.clone()
            };
            v.extend(platform_vector(Key {
                arch: "arm".into(),
                variant,
                ..k
            }));
        }
        _ => {}
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(os: &str, arch: &str, variant: &str) -> Platform {
        new(os, arch, variant)
    }

    #[test]
    fn parse_and_format() {
        for (spec, want) in [
            ("linux/amd64", "linux/amd64"),
            ("linux/x86_64", "linux/amd64"),
            ("linux/amd64/v1", "linux/amd64"),
            ("linux/amd64/v3", "linux/amd64/v3"),
            ("linux/aarch64", "linux/arm64"),
            ("linux/arm64", "linux/arm64"),
            ("linux/arm64/v8", "linux/arm64/v8"),
            ("linux/armhf", "linux/arm"),
            ("linux/armel", "linux/arm/v6"),
            ("linux/arm/7", "linux/arm/v7"),
            ("linux/arm", "linux/arm"),
            ("linux/i386", "linux/386"),
            ("windows/x86_64", "windows/amd64"),
            ("Linux/AMD64", "linux/amd64"),
            ("macos/arm64", "darwin/arm64"),
        ] {
            assert_eq!(format(&parse(spec).unwrap()), want, "{spec}");
        }
        if host_arch() != "arm" {
            // A lone OS takes this machine's architecture (and, on arm, its variant).
            assert_eq!(
                format(&parse("linux").unwrap()),
                format!("linux/{}", host_arch())
            );
        }
        assert_eq!(arch(&parse("s390x").unwrap()), "s390x");
        assert_eq!(os(&parse("s390x").unwrap()), host_os());
        assert!(matches!(parse("linux/*"), Err(PlatformError::Wildcard(_))));
        assert!(matches!(
            parse("a/b/c/d"),
            Err(PlatformError::TooManyParts(_))
        ));
        assert!(matches!(parse("nonsense"), Err(PlatformError::Unknown(_))));
        assert!(matches!(
            parse("linux//amd64"),
            Err(PlatformError::InvalidComponent { .. })
        ));
        assert_eq!(format(&new("", "amd64", "")), "unknown");
    }

    #[test]
    fn normalises_aliases() {
        let n = normalize(&p("linux", "x86_64", ""));
        assert_eq!((arch(&n), variant(&n)), ("amd64".into(), ""));
        let n = normalize(&p("linux", "aarch64", "8"));
        assert_eq!((arch(&n), variant(&n)), ("arm64".into(), ""));
        let n = normalize(&p("linux", "arm", ""));
        assert_eq!(variant(&n), "v7");
        let n = normalize(&p("", "amd64", "v1"));
        assert_eq!((os(&n), variant(&n)), (host_os().into(), ""));
        // Serialises as the Go names.
        let json = serde_json::to_string(&normalize(&p("linux", "x86_64", ""))).unwrap();
        assert_eq!(json, r#"{"architecture":"amd64","os":"linux"}"#);
    }

    #[test]
    fn arm64_matches_its_v8_and_runs_arm() {
        let m = Matcher::only(&p("linux", "arm64", ""));
        assert!(m.matches(&p("linux", "arm64", "v8")));
        assert!(m.matches(&p("linux", "arm64", "")));
        assert!(m.matches(&p("linux", "aarch64", "8")));
        assert!(m.matches(&p("linux", "arm", "v8")));
        assert!(m.matches(&p("linux", "arm", "v7")));
        assert!(m.matches(&p("linux", "arm", "v6")));
        assert!(m.matches(&p("linux", "arm", "v5")));
        assert!(!m.matches(&p("linux", "amd64", "")));
        assert!(!m.matches(&p("windows", "arm64", "")));
        assert!(m.less(&p("linux", "arm64", "v8"), &p("linux", "arm", "v7")));
        let m = Matcher::only(&p("linux", "arm64", "v8"));
        assert!(m.matches(&p("linux", "arm64", "")));
    }

    #[test]
    fn arm_variants_fall_back_v7_v6_v5() {
        let m = Matcher::only(&p("linux", "arm", "v7"));
        assert!(m.matches(&p("linux", "arm", "")), "plain arm is v7");
        assert!(m.matches(&p("linux", "arm", "v6")));
        assert!(m.matches(&p("linux", "arm", "v5")));
        assert!(!m.matches(&p("linux", "arm", "v8")));
        assert!(!m.matches(&p("linux", "arm64", "")));
        assert!(m.less(&p("linux", "arm", "v6"), &p("linux", "arm", "v5")));
        let m = Matcher::only(&p("linux", "arm", "v6"));
        assert!(!m.matches(&p("linux", "arm", "v7")));
        assert!(m.matches(&p("linux", "arm", "v5")));
        let strict = Matcher::only_strict(&p("linux", "arm", "v7"));
        assert!(!strict.matches(&p("linux", "arm", "v6")));
    }

    #[test]
    fn amd64_matches_empty_or_v1_and_runs_386() {
        let m = Matcher::only(&p("linux", "amd64", ""));
        assert!(m.matches(&p("linux", "amd64", "")));
        assert!(m.matches(&p("linux", "amd64", "v1")));
        assert!(m.matches(&p("linux", "x86_64", "")));
        assert!(m.matches(&p("linux", "386", "")));
        assert!(!m.matches(&p("linux", "amd64", "v2")));
        assert!(!m.matches(&p("linux", "arm64", "")));
        assert!(m.less(&p("linux", "amd64", ""), &p("linux", "386", "")));
        let v3 = Matcher::only(&p("linux", "amd64", "v3"));
        assert!(v3.matches(&p("linux", "amd64", "v2")));
        assert!(v3.matches(&p("linux", "amd64", "")));
        assert!(!v3.matches(&p("linux", "amd64", "v4")));
        let strict = Matcher::only_strict(&p("linux", "amd64", ""));
        assert!(!strict.matches(&p("linux", "386", "")));
        assert!(strict.matches(&p("linux", "amd64", "v1")));
    }

    #[test]
    fn ordered_all_and_sort() {
        let m = Matcher::ordered(&[p("linux", "arm64", ""), p("linux", "amd64", "")]);
        assert!(m.less(&p("linux", "arm64", ""), &p("linux", "amd64", "")));
        assert!(!m.matches(&p("linux", "386", "")));
        assert!(Matcher::all().matches(&p("plan9", "mips", "")));
        assert!(Matcher::all().is_all());
        let m = Matcher::only(&p("linux", "amd64", ""));
        let mut v = vec![
            None,
            Some(p("linux", "386", "")),
            Some(p("linux", "amd64", "")),
        ];
        m.sort(&mut v, |x| x.as_ref());
        assert_eq!(arch(v[0].as_ref().unwrap()), "amd64");
        assert_eq!(arch(v[1].as_ref().unwrap()), "386");
        assert!(v[2].is_none());
    }

    #[test]
    fn host_is_matched_by_the_host_matcher() {
        let h = host_platform();
        assert_eq!(os(&h), host_os());
        assert_eq!(arch(&h), host_arch());
        match host_arch() {
            "amd64" | "386" => assert_eq!(variant(&h), ""),
            "arm64" => assert_eq!(variant(&h), "v8"),
            _ => {}
        }
        assert!(Matcher::host().matches(&h));
        assert!(Matcher::host_strict().matches(&h));
        assert!(Matcher::host().matches(&new(host_os(), host_arch(), "")) || host_arch() == "arm");
    }

    #[test]
    fn absurd_variant_levels_stay_small() {
        // Found by fuzzing (the reference target): this spec used to build 4e9 platforms.
        let m = Matcher::only(&parse("linux/amd64/v4000000000").unwrap());
        let ps = m.platforms();
        assert_eq!(ps.len(), 1 + MAX_VARIANT_LEVEL as usize + 1);
        assert_eq!(variant(&ps[1]), "v16");
        assert!(m.matches(&new("linux", "amd64", "v2")));
        assert!(m.matches(&new("linux", "386", "")));
        let arm = Matcher::only(&parse("linux/arm/v99999999").unwrap());
        assert!(arm.platforms().len() <= MAX_VARIANT_LEVEL as usize);
        assert!(arm.matches(&new("linux", "arm", "v7")));
    }

    #[test]
    fn cpu_variants_as_containerd_reads_them() {
        let arm64 = "processor\t: 0\nBogoMIPS\t: 50.00\nCPU architecture: 8\nCPU variant\t: 0x3\n";
        assert_eq!(variant_from_cpuinfo(arm64, "arm64").as_deref(), Some("v8"));
        let v7 = "processor : 0\nmodel name : ARMv7 Processor rev 4 (v7l)\nCPU architecture: 7\n";
        assert_eq!(variant_from_cpuinfo(v7, "arm").as_deref(), Some("v7"));
        let pi = "model name\t: ARMv6-compatible processor rev 7 (v6l)\nCPU architecture: 7\n";
        assert_eq!(variant_from_cpuinfo(pi, "arm").as_deref(), Some("v6"));
        assert_eq!(variant_from_cpuinfo(pi, "arm64").as_deref(), Some("v7"));
        let v5 = "CPU architecture: 5TE\n";
        assert_eq!(variant_from_cpuinfo(v5, "arm").as_deref(), Some("v5"));
        assert_eq!(
            variant_from_cpuinfo("CPU architecture: 99\n", "arm").as_deref(),
            Some("unknown")
        );
        assert_eq!(variant_from_cpuinfo("flags: sse\n", "arm"), None);
    }
}
