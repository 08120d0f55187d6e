//! An overlay mount's options: its upper, work and lower directories, read from and written to
//! the `key=value` strings a containerd [`Mount`](crate::Mount) carries.
//!
//! The kernel splits `lowerdir` on `:` and the whole data string on `,`, so a directory whose path
//! holds either cannot be named here; Berth's drivers only make numeric snapshot directories.

use std::path::PathBuf;

/// What an overlay mount's options say.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OverlayOptions {
    /// `upperdir=`: where writes go; none for a read-only overlay.
    pub upperdir: Option<PathBuf>,
    /// `workdir=`: overlay's scratch directory, on the upper's filesystem.
    pub workdir: Option<PathBuf>,
    /// `lowerdir=` (and any `lowerdir+=`), nearest layer first, as overlay lists them.
    pub lowerdirs: Vec<PathBuf>,
    /// `userxattr`: overlay keeps its metadata (whiteouts, opaque directories) in `user.overlay.*`
    /// xattrs instead of `trusted.overlay.*`.
    pub userxattr: bool,
    /// Every other option, in its order (`index=off`, `ro`, …).
    pub other: Vec<String>,
}

impl OverlayOptions {
    /// Reads the options of an overlay mount. A later `upperdir=`, `workdir=` or `lowerdir=`
    /// replaces an earlier one, as the kernel does; `lowerdir+=` adds one layer below the others.
    pub fn parse<S: AsRef<str>>(options: &[S]) -> OverlayOptions {
        let mut o = OverlayOptions::default();
        for opt in options.iter().map(AsRef::as_ref) {
            match opt.split_once('=') {
                Some(("upperdir", d)) => o.upperdir = Some(PathBuf::from(d)),
                Some(("workdir", d)) => o.workdir = Some(PathBuf::from(d)),
                Some(("lowerdir", dirs)) => {
                    o.lowerdirs = split_lowerdirs(dirs).map(PathBuf::from).collect();
                }
                Some(("lowerdir+", d)) => o.lowerdirs.push(PathBuf::from(d)),
                None if opt == "userxattr" => o.userxattr = true,
                _ => o.other.push(opt.to_owned()),
            }
        }
        o
    }

    /// The options for a [`Mount`](crate::Mount): the other options first, then `userxattr`,
    /// `workdir`, `upperdir` and one `lowerdir` list.
    pub fn to_options(&self) -> Vec<String> {
        let mut out = self.other.clone();
        if self.userxattr {
            out.push("userxattr".to_owned());
        }
        if let Some(w) = &self.workdir {
            out.push(format!("workdir={}", w.display()));
        }
        if let Some(u) = &self.upperdir {
            out.push(format!("upperdir={}", u.display()));
        }
        if !self.lowerdirs.is_empty() {
            let dirs: Vec<String> = self
                .lowerdirs
                .iter()
                .map(|d| d.display().to_string())
                .collect();
            out.push(format!("lowerdir={}", dirs.join(":")));
        }
        out
    }
}

/// The layers of a `lowerdir=` value, nearest first; empty entries are skipped.
pub(crate) fn split_lowerdirs(dirs: &str) -> impl Iterator<Item = &str> {
    dirs.split(':').filter(|d| !d.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_active_overlay_names_its_upper_work_and_lowers() {
        let o = OverlayOptions::parse(&[
            "index=off",
            "userxattr",
            "workdir=/s/3/work",
            "upperdir=/s/3/fs",
            "lowerdir=/s/2/fs:/s/1/fs",
        ]);
        assert_eq!(
            o,
            OverlayOptions {
                upperdir: Some("/s/3/fs".into()),
                workdir: Some("/s/3/work".into()),
                lowerdirs: vec!["/s/2/fs".into(), "/s/1/fs".into()],
                userxattr: true,
                other: vec!["index=off".into()],
            }
        );
    }

    #[test]
    fn a_view_has_no_upper_and_empty_layers_are_skipped() {
        let o = OverlayOptions::parse(&["ro", "lowerdir=:/s/2/fs::/s/1/fs:"]);
        assert_eq!(o.upperdir, None);
        assert_eq!(o.workdir, None);
        assert!(!o.userxattr);
        assert_eq!(
            o.lowerdirs,
            vec![PathBuf::from("/s/2/fs"), "/s/1/fs".into()]
        );
        assert_eq!(o.other, vec!["ro".to_owned()]);
    }

    #[test]
    fn lowerdir_plus_adds_below_and_a_later_lowerdir_replaces() {
        let o = OverlayOptions::parse(&["lowerdir=/a", "lowerdir+=/b", "lowerdir+=/c"]);
        assert_eq!(
            o.lowerdirs,
            vec![PathBuf::from("/a"), "/b".into(), "/c".into()]
        );
        let o = OverlayOptions::parse(&["lowerdir=/a:/b", "lowerdir=/c"]);
        assert_eq!(o.lowerdirs, vec![PathBuf::from("/c")]);
    }

    #[test]
    fn options_that_only_look_like_ours_stay_other_options() {
        let o = OverlayOptions::parse(&["upperdirx=/u", "userxattr=1", "metacopy=on"]);
        assert_eq!(o.upperdir, None);
        assert!(!o.userxattr);
        assert_eq!(o.other, vec!["upperdirx=/u", "userxattr=1", "metacopy=on"]);
    }

    #[test]
    fn options_written_are_read_back_the_same() {
        let o = OverlayOptions {
            upperdir: Some("/s/9/fs".into()),
            workdir: Some("/s/9/work".into()),
            lowerdirs: (1..=8).rev().map(|i| format!("/s/{i}/fs").into()).collect(),
            userxattr: true,
            other: vec!["index=off".into()],
        };
        let written = o.to_options();
        assert_eq!(
            written,
            vec![
                "index=off".to_owned(),
                "userxattr".into(),
                "workdir=/s/9/work".into(),
                "upperdir=/s/9/fs".into(),
                "lowerdir=/s/8/fs:/s/7/fs:/s/6/fs:/s/5/fs:/s/4/fs:/s/3/fs:/s/2/fs:/s/1/fs".into(),
            ]
        );
        assert_eq!(OverlayOptions::parse(&written), o);
        assert!(OverlayOptions::default().to_options().is_empty());
    }
}
