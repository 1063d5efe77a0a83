//! The one netlink receive loop. Every request netladder sends over netlink and waits for
//! (rtnetlink: routes, links, addresses, neighbours; sock_diag; the nf_tables dumps) reads its
//! reply here: datagrams into one bounded buffer, split into messages, each data message handed
//! to the caller, until the reply ends.
//!
//! A reply ends at NLMSG_DONE (a dump), when the caller has what it asked for (a request that is
//! not a dump: one message), or at an NLMSG_ERROR or NLMSG_DONE that carries an errno: the
//! kernel's refusal, given back as an `io::Error` with that errno. Acknowledgements (NLMSG_ERROR
//! with 0), NLMSG_NOOP and NLMSG_OVERRUN are not handed on. A datagram longer than the buffer, a
//! message header cut short, or a length that does not fit the datagram is an error, never a
//! panic. The sockets are blocking and have no receive timeout: the kernel answers every request
//! it gets, and the loop waits for that answer.
//!
//! Numbers from the uapi header linux/netlink.h.

use std::io;

use anyhow::{bail, Context};
use netlink_sys::Socket;

pub(super) const NLMSG_NOOP: u16 = 1;
pub(super) const NLMSG_ERROR: u16 = 2;
pub(super) const NLMSG_DONE: u16 = 3;
pub(super) const NLMSG_OVERRUN: u16 = 4;
/// The dump was interrupted by a change (its parts may not agree).
pub(super) const NLM_F_DUMP_INTR: u16 = 0x10;
/// struct nlmsghdr: length u32, type u16, flags u16, sequence u32, port u32 (native endian).
const HEADER: usize = 16;
/// The largest datagram read. The kernel fills a dump's datagrams to at most 32 KiB (or to
/// the size of its largest message, for link dumps); a single reply is smaller.
pub(super) const BUFFER: usize = 1 << 18;

/// One message of a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Message<'a> {
    pub(super) kind: u16,
    pub(super) flags: u16,
    pub(super) seq: u32,
    /// The whole message, header included (what the netlink-packet crates deserialize).
    pub(super) bytes: &'a [u8],
}

impl<'a> Message<'a> {
    /// The message after its header.
    pub(super) fn payload(&self) -> &'a [u8] {
        &self.bytes[HEADER..]
    }
}

/// What the caller wants after a data message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Flow {
    /// Read on (a dump, until NLMSG_DONE).
    More,
    /// The reply is complete (a request that is not a dump has one message).
    Complete,
}

/// How a reply ended.
#[derive(Debug)]
pub(super) enum End {
    /// NLMSG_DONE, or the caller had its whole reply.
    Done,
    /// The kernel refused: the errno of an NLMSG_ERROR or NLMSG_DONE.
    Refused(io::Error),
}

/// A whole reply.
#[derive(Debug)]
pub(super) struct Reply {
    pub(super) end: End,
    /// A message was flagged NLM_F_DUMP_INTR: the dump changed while it was read.
    pub(super) interrupted: bool,
}

/// Reads the reply to a request just sent on `socket`, each data message to `each`. The error
/// is a failure to read or a malformed reply (`what` names the reply: "rtnetlink"...); the
/// kernel's refusal is `End::Refused`.
pub(super) fn receive(
    socket: &Socket,
    what: &str,
    mut each: impl FnMut(&Message) -> anyhow::Result<Flow>,
) -> anyhow::Result<Reply> {
    let mut buf = vec![0u8; BUFFER];
    let mut interrupted = false;
    loop {
        let n = socket
            .recv(&mut &mut buf[..], libc::MSG_TRUNC)
            .with_context(|| format!("cannot read the {what} reply"))?;
        if n > buf.len() {
            bail!("the {what} reply has a datagram of {n} bytes, more than the {BUFFER} read");
        }
        let end = feed(&buf[..n], &mut interrupted, &mut each)
            .with_context(|| format!("malformed {what} reply"))?;
        if let Some(end) = end {
            return Ok(Reply { end, interrupted });
        }
    }
}

/// Why a datagram cannot be split into messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Malformed {
    /// Bytes after the last message, fewer than a header.
    ShortTail(usize),
    /// A message whose length is below a header's or past the datagram's end.
    Length { len: usize, left: usize },
}

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Malformed::ShortTail(n) => {
                write!(f, "{n} bytes after the last message, less than a header")
            }
            Malformed::Length { len, left } => {
                write!(f, "a message of length {len} in {left} bytes")
            }
        }
    }
}

impl std::error::Error for Malformed {}

/// The messages of one datagram, in order; an error for the first one that does not fit, and
/// nothing after it.
pub(super) fn split(datagram: &[u8]) -> impl Iterator<Item = Result<Message<'_>, Malformed>> {
    let mut rest = Some(datagram);
    std::iter::from_fn(move || {
        let now = rest.take().filter(|r| !r.is_empty())?;
        if now.len() < HEADER {
            return Some(Err(Malformed::ShortTail(now.len())));
        }
        let word = |at: usize| u32::from_ne_bytes([now[at], now[at + 1], now[at + 2], now[at + 3]]);
        let len = word(0) as usize;
        if len < HEADER || len > now.len() {
            return Some(Err(Malformed::Length {
                len,
                left: now.len(),
            }));
        }
        // Messages are padded to 4 bytes; the last one's padding may be left out.
        rest = Some(&now[len.next_multiple_of(4).min(now.len())..]);
        Some(Ok(Message {
            kind: u16::from_ne_bytes([now[4], now[5]]),
            flags: u16::from_ne_bytes([now[6], now[7]]),
            seq: word(8),
            bytes: &now[..len],
        }))
    })
}

/// The errno an NLMSG_ERROR or NLMSG_DONE carries (0: none). An NLMSG_DONE may come without
/// one; an NLMSG_ERROR may not.
fn code(m: &Message) -> anyhow::Result<i32> {
    match m.payload() {
        [a, b, c, d, ..] => Ok(i32::from_ne_bytes([*a, *b, *c, *d])),
        _ if m.kind == NLMSG_DONE => Ok(0),
        short => bail!("an NLMSG_ERROR of {} bytes without its code", short.len()),
    }
}

/// Reads one datagram of a reply: each data message to `each`, until the reply ends (`Some`)
/// or the datagram does (`None`: the reply goes on in the next one).
pub(super) fn feed(
    datagram: &[u8],
    interrupted: &mut bool,
    each: &mut impl FnMut(&Message) -> anyhow::Result<Flow>,
) -> anyhow::Result<Option<End>> {
    for m in split(datagram) {
        let m = m?;
        *interrupted |= m.flags & NLM_F_DUMP_INTR != 0;
        match m.kind {
            NLMSG_NOOP | NLMSG_OVERRUN => {}
            NLMSG_ERROR | NLMSG_DONE => {
                let code = code(&m)?;
                if code < 0 {
                    let errno = code.checked_neg().unwrap_or(i32::MAX);
                    return Ok(Some(End::Refused(io::Error::from_raw_os_error(errno))));
                }
                if m.kind == NLMSG_DONE {
                    return Ok(Some(End::Done));
                }
                // NLMSG_ERROR with 0: an acknowledgement, nothing to hand on.
            }
            _ => {
                if each(&m)? == Flow::Complete {
                    return Ok(Some(End::Done));
                }
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message: header (length, type, flags, sequence, port 0) and payload, padded to 4.
    fn msg(kind: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let len = (HEADER + payload.len()) as u32;
        let mut m = [
            &len.to_ne_bytes()[..],
            &kind.to_ne_bytes(),
            &flags.to_ne_bytes(),
            &seq.to_ne_bytes(),
            &0u32.to_ne_bytes(),
            payload,
        ]
        .concat();
        m.resize(m.len().next_multiple_of(4), 0);
        m
    }

    fn error(code: i32) -> Vec<u8> {
        // The code, then (for a refusal) the request's header; 16 zero bytes stand in for it.
        msg(
            NLMSG_ERROR,
            0,
            7,
            &[&code.to_ne_bytes()[..], &[0; 16]].concat(),
        )
    }

    fn done(code: i32) -> Vec<u8> {
        msg(NLMSG_DONE, 0x2, 7, &code.to_ne_bytes())
    }

    /// Feeds the datagrams in order, as `receive` does, until the reply ends; the payloads
    /// handed on, how it ended (None: it had not), and whether it was interrupted.
    fn run(
        datagrams: &[Vec<u8>],
        complete_after: Option<usize>,
    ) -> (Vec<Vec<u8>>, Option<End>, bool) {
        let mut seen = Vec::new();
        let mut interrupted = false;
        let mut each = |m: &Message| {
            seen.push(m.payload().to_vec());
            Ok(if Some(seen.len()) == complete_after {
                Flow::Complete
            } else {
                Flow::More
            })
        };
        for d in datagrams {
            if let Some(end) = feed(d, &mut interrupted, &mut each).unwrap() {
                return (seen, Some(end), interrupted);
            }
        }
        (seen, None, interrupted)
    }

    #[test]
    fn a_dump_in_several_datagrams_ends_at_done() {
        let first = [msg(20, 0x2, 7, b"a"), msg(20, 0x2, 7, b"bcdef")].concat();
        let second = [msg(20, 0x2, 7, b"gh"), done(0)].concat();
        let (seen, end, interrupted) = run(&[first, second], None);
        assert_eq!(seen, vec![b"a".to_vec(), b"bcdef".to_vec(), b"gh".to_vec()]);
        assert!(matches!(end, Some(End::Done)), "{end:?}");
        assert!(!interrupted);
    }

    #[test]
    fn a_datagram_without_done_leaves_the_reply_open() {
        let (seen, end, _) = run(&[msg(20, 0x2, 7, b"abcd")], None);
        assert_eq!(seen.len(), 1);
        assert!(end.is_none());
    }

    #[test]
    fn a_single_reply_ends_when_the_caller_has_it() {
        let d = [msg(24, 0, 1, b"route"), msg(24, 0, 1, b"never")].concat();
        let (seen, end, _) = run(&[d], Some(1));
        assert_eq!(seen, vec![b"route".to_vec()]);
        assert!(matches!(end, Some(End::Done)));
    }

    #[test]
    fn an_error_message_is_the_kernels_refusal_with_its_errno() {
        let d = [
            msg(20, 0x2, 7, b"kept"),
            error(-libc::EPERM),
            msg(20, 0, 7, b"not read"),
        ]
        .concat();
        let (seen, end, _) = run(&[d], None);
        assert_eq!(seen.len(), 1);
        match end {
            Some(End::Refused(e)) => assert_eq!(e.raw_os_error(), Some(libc::EPERM)),
            other => panic!("{other:?}"),
        }
        // A dump that fails part way says so in its NLMSG_DONE.
        let (_, end, _) = run(&[done(-libc::EINTR)], None);
        assert!(matches!(end, Some(End::Refused(e)) if e.raw_os_error() == Some(libc::EINTR)));
        // The most negative code does not overflow.
        let (_, end, _) = run(&[error(i32::MIN)], None);
        assert!(matches!(end, Some(End::Refused(_))));
    }

    #[test]
    fn acknowledgements_noops_and_overruns_are_not_handed_on() {
        let d = [
            error(0),
            msg(NLMSG_NOOP, 0, 0, b""),
            msg(NLMSG_OVERRUN, 0, 0, b""),
            msg(20, 0, 7, b"data"),
            done(0),
        ]
        .concat();
        let (seen, end, _) = run(&[d], None);
        assert_eq!(seen, vec![b"data".to_vec()]);
        assert!(matches!(end, Some(End::Done)));
    }

    #[test]
    fn an_interrupted_dump_is_flagged() {
        let d = [msg(20, 0x2 | NLM_F_DUMP_INTR, 7, b"x"), done(0)].concat();
        let (_, end, interrupted) = run(&[d], None);
        assert!(matches!(end, Some(End::Done)));
        assert!(interrupted);
    }

    #[test]
    fn a_done_without_its_code_still_ends_the_dump() {
        let (_, end, _) = run(&[msg(NLMSG_DONE, 0x2, 7, b"")], None);
        assert!(matches!(end, Some(End::Done)));
    }

    #[test]
    fn the_last_message_may_come_without_its_padding() {
        let mut d = msg(20, 0, 7, b"abcde");
        d.truncate(HEADER + 5);
        let messages: Vec<_> = split(&d).collect::<Result<_, _>>().unwrap();
        assert_eq!(messages.len(), 1);
        assert_eq!(messages[0].payload(), b"abcde");
        assert_eq!((messages[0].kind, messages[0].seq), (20, 7));
    }

    /// Cut or lying lengths are errors, never a panic or a loop without end.
    #[test]
    fn malformed_datagrams_are_errors() {
        let whole = [msg(20, 0, 7, b"abcdefgh"), done(0)].concat();
        let mut interrupted = false;
        let mut each = |_: &Message| Ok(Flow::More);
        // Every cut of a valid datagram is an error, but the one right after a whole message.
        let first = HEADER + 8;
        for cut in 1..whole.len() {
            let got = feed(&whole[..cut], &mut interrupted, &mut each);
            if cut == first {
                assert!(matches!(got, Ok(None)), "cut at {cut}: {got:?}");
            } else {
                assert!(got.is_err(), "cut at {cut}: {got:?}");
            }
        }
        // A length below the header's, zero (no progress), or past the datagram's end.
        for len in [0u32, 8, 15, 1000] {
            let mut d = msg(20, 0, 7, b"abcd");
            d[..4].copy_from_slice(&len.to_ne_bytes());
            let err = feed(&d, &mut interrupted, &mut each).unwrap_err();
            assert!(err.to_string().contains(&format!("length {len}")), "{err}");
        }
        // An NLMSG_ERROR too short to hold its code.
        let short = msg(NLMSG_ERROR, 0, 7, b"ab");
        assert!(feed(&short[..HEADER + 2], &mut interrupted, &mut each).is_err());
        // A caller's own error (a message it cannot decode) stops the reply.
        let mut refuse = |_: &Message| -> anyhow::Result<Flow> { bail!("cannot decode") };
        assert!(feed(&msg(20, 0, 7, b"x"), &mut interrupted, &mut refuse).is_err());
        // An empty datagram is no message, and no end.
        assert!(feed(&[], &mut interrupted, &mut each).unwrap().is_none());
    }
}
