use std::fmt;

use nix::errno::Errno;

use crate::{CompileError, LoadError};

/// The most instructions a classic BPF program may have (`BPF_MAXINSNS`).
const MAX_INSTRUCTIONS: usize = 4096;

/// Size of a `struct sock_filter` as libseccomp exports it: code (u16), jt (u8), jf (u8), k (u32).
const INSTRUCTION_SIZE: usize = 8;

/// A compiled seccomp filter, ready for [`Program::load`].
#[derive(Clone)]
pub struct Program {
    /// Kept as the kernel's own structs so that loading only has to point at them.
    filter: Box<[libc::sock_filter]>,
    /// `filter.len()`, checked at compile time to fit `sock_fprog.len`.
    len: u16,
    /// `SECCOMP_FILTER_FLAG_*` from the spec's `flags`.
    flags: libc::c_ulong,
}

impl Program {
    pub(crate) fn from_bpf(bytes: &[u8], flags: libc::c_ulong) -> Result<Program, CompileError> {
        let malformed = || CompileError::MalformedExport { len: bytes.len() };
        let chunks = bytes.chunks_exact(INSTRUCTION_SIZE);
        if bytes.is_empty() || !chunks.remainder().is_empty() {
            return Err(malformed());
        }
        let filter = chunks
            .map(|chunk| match *chunk {
                [c0, c1, jt, jf, k0, k1, k2, k3] => Ok(libc::sock_filter {
                    // libseccomp writes the structs in the machine's byte order, as the kernel
                    // reads them.
                    code: u16::from_ne_bytes([c0, c1]),
                    jt,
                    jf,
                    k: u32::from_ne_bytes([k0, k1, k2, k3]),
                }),
                _ => Err(malformed()),
            })
            .collect::<Result<Box<[_]>, _>>()?;
        let len = u16::try_from(filter.len())
            .ok()
            .filter(|&len| usize::from(len) <= MAX_INSTRUCTIONS)
            .ok_or(CompileError::TooLong {
                instructions: filter.len(),
                max: MAX_INSTRUCTIONS,
            })?;
        Ok(Program { filter, len, flags })
    }

    /// Installs the filter on the calling thread (and, with `SECCOMP_FILTER_FLAG_TSYNC`, on every
    /// thread of the process) with seccomp(2).
    ///
    /// Makes one system call and allocates nothing, so a forked child of a multithreaded process
    /// may call it. It does not set no_new_privs: without it the caller needs CAP_SYS_ADMIN.
    /// Every later system call of the process, including execve, goes through the filter.
    pub fn load(&self) -> Result<(), LoadError> {
        let prog = libc::sock_fprog {
            len: self.len,
            // The kernel only reads through this pointer; the struct wants it mutable.
            filter: self.filter.as_ptr().cast_mut(),
        };
        // SAFETY: seccomp(SECCOMP_SET_MODE_FILTER, flags, &prog) reads `prog` and the `len`
        // instructions it points at, which `self.filter` holds and which outlive the call; it
        // writes no memory of ours. The kernel verifies the program itself.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                self.flags,
                &raw const prog,
            )
        };
        match rc {
            0 => Ok(()),
            -1 => Err(match Errno::last() {
                Errno::EACCES => LoadError::NeedsNoNewPrivs {
                    source: Errno::EACCES,
                },
                source => LoadError::Kernel {
                    flags: self.flags,
                    source,
                },
            }),
            // With TSYNC the kernel returns the id of a thread it could not synchronise.
            tid => Err(LoadError::ThreadNotSynchronised { tid }),
        }
    }

    /// How many BPF instructions the program has.
    pub fn instruction_count(&self) -> usize {
        self.filter.len()
    }

    /// The `SECCOMP_FILTER_FLAG_*` bits [`Program::load`] passes to seccomp(2).
    pub fn flags(&self) -> libc::c_ulong {
        self.flags
    }

    #[cfg(test)]
    pub(crate) fn instructions(&self) -> &[libc::sock_filter] {
        &self.filter
    }

    #[cfg(test)]
    pub(crate) fn words(&self) -> Vec<(u16, u8, u8, u32)> {
        self.filter
            .iter()
            .map(|i| (i.code, i.jt, i.jf, i.k))
            .collect()
    }

    /// Checks what every libseccomp program looks like: it starts by loading the architecture
    /// from `seccomp_data`, every jump lands inside the program, and it ends with a return.
    #[cfg(test)]
    pub(crate) fn assert_well_formed(&self) {
        const BPF_LD_W_ABS: u16 = 0x20;
        const BPF_JMP: u16 = 0x05;
        const BPF_JA: u16 = 0x00;
        const BPF_RET: u16 = 0x06;
        /// offsetof(struct seccomp_data, arch)
        const ARCH_OFFSET: u32 = 4;

        let f = &self.filter;
        assert!(!f.is_empty());
        assert_eq!(usize::from(self.len), f.len());
        assert_eq!((f[0].code, f[0].k), (BPF_LD_W_ABS, ARCH_OFFSET), "{self:?}");
        let last = f[f.len() - 1];
        assert_eq!(last.code & 0x07, BPF_RET, "{self:?}");
        for (at, i) in f.iter().enumerate() {
            if i.code & 0x07 != BPF_JMP {
                continue;
            }
            let targets = if i.code & 0xf0 == BPF_JA {
                vec![at + 1 + usize::try_from(i.k).unwrap()]
            } else {
                vec![at + 1 + usize::from(i.jt), at + 1 + usize::from(i.jf)]
            };
            for target in targets {
                assert!(target < f.len(), "jump at {at} to {target} leaves {self:?}");
            }
        }
    }
}

impl fmt::Debug for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Program")
            .field("instructions", &self.filter.len())
            .field("flags", &format_args!("{:#x}", self.flags))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_that_is_not_whole_instructions_is_refused() {
        for len in [0, 7, 9, 15] {
            let err = Program::from_bpf(&vec![0; len], 0).unwrap_err();
            assert!(matches!(err, CompileError::MalformedExport { .. }), "{len}");
        }
    }

    #[test]
    fn program_longer_than_the_kernel_allows_is_refused() {
        let bytes = vec![0; (MAX_INSTRUCTIONS + 1) * INSTRUCTION_SIZE];
        let err = Program::from_bpf(&bytes, 0).unwrap_err();
        assert!(
            matches!(
                err,
                CompileError::TooLong {
                    instructions: 4097,
                    ..
                }
            ),
            "{err}"
        );
        let bytes = vec![0; MAX_INSTRUCTIONS * INSTRUCTION_SIZE];
        assert_eq!(
            Program::from_bpf(&bytes, 0).unwrap().instruction_count(),
            4096
        );
    }

    #[test]
    fn instructions_are_read_in_machine_byte_order() {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&0x0020u16.to_ne_bytes());
        bytes.extend_from_slice(&[3, 4]);
        bytes.extend_from_slice(&0x7fff_0000u32.to_ne_bytes());
        let program = Program::from_bpf(&bytes, 0).unwrap();
        assert_eq!(program.words(), [(0x20, 3, 4, 0x7fff_0000)]);
    }
}
