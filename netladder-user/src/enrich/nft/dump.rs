//! The netlink side of reading the ruleset: the NFT_MSG_GET* dump requests, and reading one
//! dump to its end.
use anyhow::{bail, Context};
use netlink_sys::{Socket, SocketAddr};

use crate::enrich::netlink::{self, End, Flow};
use crate::enrich::nfnl::*;

const NLM_F_REQUEST_DUMP: u16 = NLM_F_REQUEST | 0x300;
/// NFT_MSG_GETTABLE, GETCHAIN, GETRULE; the dumps answer with NEWTABLE (0), NEWCHAIN (3) and
/// NEWRULE (6), one lower.
pub(super) const GET_MSGS: [u16; 3] = [1, 4, 7];

/// Errnos meaning "no nf_tables here". nfnetlink answers EINVAL for a subsystem it does not
/// have, so that one only counts on the first request.
pub(super) fn no_nftables(errno: i32, first: bool) -> bool {
    use libc::{EAFNOSUPPORT, EINVAL, ENOENT, EOPNOTSUPP, EPROTONOSUPPORT};
    matches!(errno, EPROTONOSUPPORT | ENOENT | EAFNOSUPPORT | EOPNOTSUPP)
        || (first && errno == EINVAL)
}

/// The dump request for NFT_MSG_GET* `msg`: nlmsghdr plus nfgenmsg {NFPROTO_UNSPEC, v0, 0}.
pub(super) fn request(msg: u16, seq: u32) -> Vec<u8> {
    let kind = (NFNL_SUBSYS_NFTABLES << 8) | msg;
    let head = [
        20u32.to_ne_bytes(),
        pack16(kind, NLM_F_REQUEST_DUMP),
        seq.to_ne_bytes(),
    ];
    [head.concat(), vec![0; 8]].concat()
}

/// Runs one dump to its end, again when the kernel flags it inconsistent. None: no nf_tables.
pub(crate) fn dump(socket: &Socket, msg: u16, first: bool) -> anyhow::Result<Option<Vec<NfMsg>>> {
    for attempt in 0..4 {
        let req = request(msg, u32::from(msg) << 8 | attempt);
        socket
            .send_to(&req, &SocketAddr::new(0, 0), 0)
            .context("cannot send the nf_tables dump request")?;
        let mut msgs = Vec::new();
        let reply = netlink::receive(socket, "nf_tables dump", |m| {
            msgs.extend(nf_message(m));
            Ok(Flow::More)
        })?;
        let mut interrupted = reply.interrupted;
        match reply.end {
            End::Done => {}
            End::Refused(e) => match e.raw_os_error() {
                Some(libc::EINTR) => interrupted = true,
                Some(errno) if no_nftables(errno, first) => return Ok(None),
                _ => return Err(e).context("the kernel refused the nf_tables dump"),
            },
        }
        if !interrupted {
            return Ok(Some(msgs));
        }
    }
    bail!("the nf_tables ruleset kept changing during the dump")
}
