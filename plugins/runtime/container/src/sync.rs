//! The messages between the shim and the processes it forks while making a container, over a
//! `SOCK_SEQPACKET` socket pair (one message per send, so no framing): a one-byte kind, then the
//! payload. File descriptors (the console's master side) ride along as `SCM_RIGHTS`.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};

use crate::error::{Error, Result};

/// The kinds of message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Child → shim: a new user namespace exists; write its uid/gid maps.
    UserNs = b'U',
    /// Child → shim: no user namespace to map.
    NoUserNs = b'N',
    /// Shim → child: go on.
    Go = b'G',
    /// Intermediate → shim: the container process's pid (4 bytes, little endian).
    Pid = b'P',
    /// Init → shim: the console's master side (an fd).
    Console = b'C',
    /// Init → shim: run the hooks that run before `pivot_root`; answered by Go or Error.
    Hooks = b'H',
    /// Init → shim: set up, waiting for Start.
    Ready = b'R',
    /// Shim → init: exec the process.
    Start = b'S',
    /// Either way: what failed, as text.
    Error = b'E',
}

impl Kind {
    fn from_byte(b: u8) -> Option<Kind> {
        Some(match b {
            b'U' => Kind::UserNs,
            b'N' => Kind::NoUserNs,
            b'G' => Kind::Go,
            b'P' => Kind::Pid,
            b'C' => Kind::Console,
            b'H' => Kind::Hooks,
            b'R' => Kind::Ready,
            b'S' => Kind::Start,
            b'E' => Kind::Error,
            _ => return None,
        })
    }
}

/// A received message.
#[derive(Debug)]
pub struct Message {
    pub kind: Kind,
    pub payload: Vec<u8>,
    pub fd: Option<OwnedFd>,
}

/// One end of the pair.
#[derive(Debug)]
pub struct Channel {
    fd: OwnedFd,
}

pub fn pair() -> Result<(Channel, Channel)> {
    let (a, b) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|source| Error::Sys {
        action: "create the start-up socket pair",
        source,
    })?;
    Ok((Channel { fd: a }, Channel { fd: b }))
}

impl Channel {
    pub fn send(&self, kind: Kind, payload: &[u8]) -> Result<()> {
        self.send_with_fd(kind, payload, None)
    }

    pub fn send_with_fd(&self, kind: Kind, payload: &[u8], fd: Option<RawFd>) -> Result<()> {
        let head = [kind as u8];
        let iov = [IoSlice::new(&head), IoSlice::new(payload)];
        let fds;
        let cmsgs: &[ControlMessage<'_>] = match fd {
            Some(f) => {
                fds = [f];
                &[ControlMessage::ScmRights(&fds)]
            }
            None => &[],
        };
        loop {
            match sendmsg::<()>(
                self.fd.as_raw_fd(),
                &iov,
                cmsgs,
                MsgFlags::MSG_NOSIGNAL,
                None,
            ) {
                Err(nix::Error::EINTR) => continue,
                Err(e) => return Err(Error::Handshake(format!("send: {e}"))),
                Ok(_) => return Ok(()),
            }
        }
    }

    /// The next message; `None` when the other side closed (for the shim after Start: the
    /// process exec'd, which closed its end).
    pub fn recv(&self) -> Result<Option<Message>> {
        let mut buf = vec![0u8; 64 * 1024];
        let mut space = nix::cmsg_space!([RawFd; 1]);
        let (len, fd) = loop {
            let mut iov = [IoSliceMut::new(&mut buf)];
            match recvmsg::<()>(
                self.fd.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Err(nix::Error::EINTR) => continue,
                Err(e) => return Err(Error::Handshake(format!("receive: {e}"))),
                Ok(msg) => {
                    let mut fd = None;
                    for c in msg.cmsgs().map_err(|e| Error::Handshake(e.to_string()))? {
                        if let ControlMessageOwned::ScmRights(fds) = c {
                            for f in fds {
                                // SAFETY: the kernel just installed this descriptor for us;
                                // nothing else owns it.
                                let owned = unsafe { OwnedFd::from_raw_fd(f) };
                                fd.get_or_insert(owned);
                            }
                        }
                    }
                    break (msg.bytes, fd);
                }
            }
        };
        if len == 0 {
            return Ok(None);
        }
        let kind = Kind::from_byte(buf[0])
            .ok_or_else(|| Error::Handshake(format!("unknown message kind {:#x}", buf[0])))?;
        buf.truncate(len);
        buf.remove(0);
        Ok(Some(Message {
            kind,
            payload: buf,
            fd,
        }))
    }

    /// Waits for one message of `kind`; an Error message becomes [`Error::Child`].
    pub fn expect(&self, kind: Kind) -> Result<Message> {
        match self.recv()? {
            Some(m) if m.kind == kind => Ok(m),
            Some(m) if m.kind == Kind::Error => Err(Error::Child(
                String::from_utf8_lossy(&m.payload).into_owned(),
            )),
            Some(m) => Err(Error::Handshake(format!(
                "expected {kind:?}, got {:?}",
                m.kind
            ))),
            None => Err(Error::Handshake(format!(
                "the other side closed while {kind:?} was awaited"
            ))),
        }
    }

    pub fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// `No such file or directory` → `no such file or directory`, as Go's error texts read.
pub(crate) fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_descriptors_cross() {
        let (a, b) = pair().unwrap();
        a.send(Kind::Pid, &42i32.to_le_bytes()).unwrap();
        let m = b.expect(Kind::Pid).unwrap();
        assert_eq!(i32::from_le_bytes(m.payload.try_into().unwrap()), 42);
        let file = std::fs::File::open("/dev/null").unwrap();
        a.send_with_fd(Kind::Console, b"", Some(file.as_raw_fd()))
            .unwrap();
        let m = b.expect(Kind::Console).unwrap();
        assert!(m.fd.is_some());
        a.send(Kind::Error, b"boom").unwrap();
        assert_eq!(b.expect(Kind::Ready).unwrap_err().to_string(), "boom");
        drop(a);
        assert!(b.recv().unwrap().is_none());
    }
}
