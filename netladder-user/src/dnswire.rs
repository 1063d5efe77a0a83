//! DNS on the wire and in glibc's resolver: the names of RCODEs and of getaddrinfo's EAI_*
//! results, and a bounds-checked reader of DNS names, shared by the classifier (names the kernel
//! copied from responses) and the enrichment's own queries.

use anyhow::{bail, Result};

/// glibc's EAI_* values (ABI).
pub const EAI_NONAME: i32 = -2;
pub const EAI_AGAIN: i32 = -3;
pub const EAI_FAIL: i32 = -4;
pub const EAI_NODATA: i32 = -5;
pub const EAI_ADDRFAMILY: i32 = -9;

pub fn eai_name(code: i32) -> &'static str {
    match code {
        0 => "success",
        EAI_NONAME => "EAI_NONAME",
        EAI_AGAIN => "EAI_AGAIN",
        EAI_FAIL => "EAI_FAIL",
        EAI_NODATA => "EAI_NODATA",
        EAI_ADDRFAMILY => "EAI_ADDRFAMILY",
        -1 => "EAI_BADFLAGS",
        -6 => "EAI_FAMILY",
        -7 => "EAI_SOCKTYPE",
        -8 => "EAI_SERVICE",
        -10 => "EAI_MEMORY",
        -11 => "EAI_SYSTEM",
        _ => "EAI_OTHER",
    }
}

/// The RCODE's name.
pub fn rcode_name(rcode: u8) -> String {
    match rcode {
        0 => "NOERROR".into(),
        1 => "FORMERR".into(),
        2 => "SERVFAIL".into(),
        3 => "NXDOMAIN".into(),
        4 => "NOTIMP".into(),
        5 => "REFUSED".into(),
        n => format!("RCODE {n}"),
    }
}

/// A bounds-checked reader over DNS wire bytes.
pub(crate) struct Reader<'a> {
    pub(crate) buf: &'a [u8],
    pub(crate) pos: usize,
}

impl Reader<'_> {
    pub(crate) fn take(&mut self, n: usize) -> Result<&[u8]> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.buf.len());
        let Some(end) = end else {
            bail!("the response is cut short");
        };
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    pub(crate) fn u16(&mut self) -> Result<u16> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// Skips a (possibly compressed) name: labels up to a zero byte or a pointer.
    pub(crate) fn skip_name(&mut self) -> Result<()> {
        for _ in 0..128 {
            let len = self.take(1)?[0];
            match len {
                0 => return Ok(()),
                l if l & 0xc0 == 0xc0 => {
                    self.take(1)?;
                    return Ok(());
                }
                l if l & 0xc0 != 0 => bail!("unknown label type in the response"),
                l => {
                    self.take(usize::from(l))?;
                }
            }
        }
        bail!("a name in the response has too many labels")
    }
}

/// The name at the start of `wire`, a question's name as the kernel copied it from a response
/// (`netladder_common::dns`): length-prefixed labels ending with the zero label and nothing
/// after it. With `cut`, the kernel copied only the first labels: `wire` holds whole labels and
/// no zero label. Compression pointers, reserved label types, a name longer than DNS allows and
/// bytes left over are errors, never a guessed name. Bytes that are not letters, digits, `-` or
/// `_` are shown as `\DDD` (as dig does), so the text is always one printable word.
pub fn wire_name(wire: &[u8], cut: bool) -> Result<String> {
    let mut r = Reader { buf: wire, pos: 0 };
    let mut name = String::new();
    for _ in 0..128 {
        if cut && r.pos == wire.len() {
            if name.is_empty() {
                bail!("a cut name without a single label");
            }
            return Ok(name);
        }
        let len = r.take(1)?[0];
        if len == 0 {
            if cut {
                bail!("a name marked cut that ends");
            }
            if r.pos != wire.len() {
                bail!("bytes after the question's name");
            }
            if name.is_empty() {
                name.push('.');
            }
            return Ok(name);
        }
        if len & 0xc0 != 0 {
            bail!("a compression pointer or reserved label type in the question's name");
        }
        if r.pos + usize::from(len) > 255 {
            bail!("a name longer than 255 bytes");
        }
        if !name.is_empty() {
            name.push('.');
        }
        for &b in r.take(usize::from(len))? {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                name.push(char::from(b));
            } else {
                name.push_str(&format!("\\{b:03}"));
            }
        }
    }
    bail!("a name with too many labels")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names() {
        assert_eq!(
            wire_name(&[4, b'm', b'i', b's', b's', 2, b'n', b'l', 0], false).unwrap(),
            "miss.nl"
        );
        assert_eq!(wire_name(&[0], false).unwrap(), ".");
        assert_eq!(
            wire_name(&[3, b'a', b'.', b' ', 0], false).unwrap(),
            "a\\046\\032"
        );
        assert_eq!(wire_name(&[1, b'a', 1, b'b'], true).unwrap(), "a.b");
        for bad in [
            &[][..],
            &[1, b'a'][..],       // ends inside the name
            &[1, b'a', 0, 0][..], // bytes after it
            &[0xc0, 12][..],      // compression pointer
            &[0x41, b'a', 0][..], // reserved label type
            &[3, b'a', b'b'][..], // truncated label
        ] {
            assert!(wire_name(bad, false).is_err(), "{bad:?}");
        }
        assert!(
            wire_name(&[1, b'a', 0], true).is_err(),
            "a cut name has no end"
        );
        assert!(wire_name(&[], true).is_err());
        let long: Vec<u8> = (0..5)
            .flat_map(|_| std::iter::once(63u8).chain(std::iter::repeat_n(b'x', 63)))
            .chain([0])
            .collect();
        assert!(wire_name(&long, false).is_err(), "320 bytes");
    }

    #[test]
    fn code_names() {
        assert_eq!(rcode_name(3), "NXDOMAIN");
        assert_eq!(rcode_name(9), "RCODE 9");
        assert_eq!(eai_name(EAI_NONAME), "EAI_NONAME");
        assert_eq!(eai_name(libc::EAI_SYSTEM), "EAI_SYSTEM");
        assert_eq!(eai_name(libc::EAI_MEMORY), "EAI_MEMORY");
    }
}
