//! The running kernel's BTF: struct member offsets and enum values, resolved by name at start-up so
//! nothing about the kernel's layout is hard-coded.
use std::{collections::HashMap, os::fd::FromRawFd as _};

use anyhow::{anyhow, bail, Context as _, Result};
use btf_rs::{Backend, Btf, Type};

use super::mapped::Mapped;

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Where the kernel's BTF is: `NETLADDER_BTF` when set (for kernels that keep it elsewhere),
/// else /sys/kernel/btf/vmlinux.
pub fn path() -> String {
    std::env::var("NETLADDER_BTF").unwrap_or_else(|_| VMLINUX_BTF.to_owned())
}

pub struct KernelBtf {
    btf: Btf,
    /// The raw BTF, mapped a second time for `prefetch` (None when only a parsed copy exists).
    raw: Option<Mapped>,
    /// Ids by name, as looked up so far: each look-up of a new name reads every type's name (a
    /// hundred thousand of them), and start-up asks for some names many times (`sock` alone a
    /// dozen).
    ids: std::cell::RefCell<HashMap<String, Vec<u32>>>,
    /// Passes over every type's name made so far (tests: start-up makes one).
    scans: std::cell::Cell<u32>,
}

impl KernelBtf {
    pub fn load() -> Result<Self> {
        Self::from_file(&path())
    }

    pub fn from_file(path: &str) -> Result<Self> {
        if !std::path::Path::new(path).exists() {
            bail!(
                "no kernel BTF at {path}: this kernel was built without CONFIG_DEBUG_INFO_BTF, \
                 which netladder needs to find struct offsets and drop reasons"
            );
        }
        let (btf, raw) = Self::open(path).with_context(|| format!("cannot parse BTF in {path}"))?;
        Ok(Self {
            btf,
            raw,
            ids: Default::default(),
            scans: Default::default(),
        })
    }

    /// The kernel's BTF, memory-mapped and read on demand: a few MB and milliseconds, where
    /// parsing every type up front costs about 40 MB and 150 ms at each start (netladder only asks
    /// for a few dozen types). /sys/kernel/btf/vmlinux can be mapped since Linux 6.16; before, a
    /// copy in a memfd is mapped instead; parsing it all is the last resort. The raw bytes are
    /// mapped once more for `prefetch`.
    fn open(path: &str) -> Result<(Btf, Option<Mapped>)> {
        if let Ok(btf) = Btf::from_file_with_backend(path, Backend::Mmap) {
            let raw = std::fs::File::open(path).ok().and_then(|f| Mapped::new(&f));
            return Ok((btf, raw));
        }
        match Self::open_copy(path) {
            Ok((btf, raw)) => Ok((btf, Some(raw))),
            Err(_) => Ok((Btf::from_file(path)?, None)),
        }
    }

    /// Copies `path` into an anonymous memory file and maps that.
    fn open_copy(path: &str) -> Result<(Btf, Mapped)> {
        // SAFETY: plain syscall with a NUL-terminated name; the fd is owned right below.
        let fd = unsafe { libc::memfd_create(c"netladder-btf".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            bail!("memfd_create: {}", std::io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor nobody else owns.
        let mut copy = unsafe { std::fs::File::from_raw_fd(fd) };
        std::io::copy(&mut std::fs::File::open(path)?, &mut copy)?;
        let raw = Mapped::new(&copy).ok_or_else(|| anyhow!("cannot map the BTF copy"))?;
        // The mappings made from this file outlive `copy`, which is closed on return.
        let btf = Btf::from_file_with_backend(format!("/proc/self/fd/{fd}"), Backend::Mmap)?;
        Ok((btf, raw))
    }

    /// Looks up all of `names` in one pass over the types (each look-up of a new name is
    /// otherwise a pass of its own: start-up asks for about twenty). Names asked later that are
    /// not among them are still found, one pass each. Does nothing when the raw BTF is not at
    /// hand or not laid out as expected.
    pub fn prefetch<'n>(&self, names: impl IntoIterator<Item = &'n str>) {
        let Some(raw) = &self.raw else { return };
        let mut cache = self.ids.borrow_mut();
        let wanted: Vec<&str> = names
            .into_iter()
            .filter(|n| !cache.contains_key(*n))
            .collect();
        if wanted.is_empty() {
            return;
        }
        if let Some(found) = ids_by_names(raw.bytes(), &wanted) {
            self.scans.set(self.scans.get() + 1);
            for (name, ids) in found {
                cache.insert(name.to_owned(), ids);
            }
        }
    }

    /// The types named `name` (none when there is none).
    fn types_by_name(&self, name: &str) -> Vec<Type> {
        let ids = {
            let mut cache = self.ids.borrow_mut();
            match cache.get(name) {
                Some(ids) => ids.clone(),
                None => {
                    self.scans.set(self.scans.get() + 1);
                    let ids = self.btf.resolve_ids_by_name(name).unwrap_or_default();
                    cache.insert(name.to_owned(), ids.clone());
                    ids
                }
            }
        };
        ids.into_iter()
            .filter_map(|id| self.btf.resolve_type_by_id(id).ok())
            .collect()
    }

    /// Passes over every type's name made so far.
    #[cfg(test)]
    pub fn scans(&self) -> u32 {
        self.scans.get()
    }

    /// Byte offset of `path` ("a.b.c") inside `struct name`, looking through anonymous
    /// structs/unions the way C does.
    pub fn offset(&self, name: &str, path: &str) -> Result<u32> {
        let mut ty = self.named_struct(name)?;
        let mut total = 0u32;
        for part in path.split('.') {
            let (bits, member_ty) = self
                .find_member(&ty, part)?
                .ok_or_else(|| anyhow!("struct {name} has no member {path} on this kernel"))?;
            if bits % 8 != 0 {
                bail!("{name}.{path} is a bitfield: it cannot be read by offset");
            }
            total += bits / 8;
            ty = self.strip(member_ty)?;
        }
        Ok(total)
    }

    /// Values of a C enum by member name (e.g. `enum skb_drop_reason`).
    pub fn enum_values(&self, name: &str) -> Result<HashMap<String, u32>> {
        for ty in self.types_by_name(name) {
            if let Type::Enum(e) = ty {
                let mut out = HashMap::new();
                for m in &e.members {
                    out.insert(self.btf.resolve_name(m)?, m.val());
                }
                return Ok(out);
            }
        }
        bail!("enum {name} is not in this kernel's BTF")
    }

    /// Number of arguments of a BTF-enabled tracepoint (`btf_trace_<name>` minus the context).
    pub fn tracepoint_args(&self, name: &str) -> Option<usize> {
        let ty = self
            .types_by_name(&format!("btf_trace_{name}"))
            .into_iter()
            .next()?;
        let mut ty = self.btf.resolve_chained_type(ty.as_btf_type()?).ok()?;
        loop {
            match ty {
                Type::FuncProto(p) => return Some(p.parameters.len().saturating_sub(1)),
                Type::Ptr(_) | Type::Typedef(_) => {
                    ty = self.btf.resolve_chained_type(ty.as_btf_type()?).ok()?
                }
                _ => return None,
            }
        }
    }

    /// Whether the kernel has a function of this name (for fexit/kprobe targets).
    pub fn has_function(&self, name: &str) -> bool {
        self.types_by_name(name)
            .iter()
            .any(|t| matches!(t, Type::Func(_)))
    }

    fn named_struct(&self, name: &str) -> Result<Type> {
        self.types_by_name(name)
            .into_iter()
            .find(|t| matches!(t, Type::Struct(_)))
            .ok_or_else(|| anyhow!("struct {name} is not in this kernel's BTF"))
    }

    /// Follows typedefs and qualifiers to the underlying type.
    fn strip(&self, mut ty: Type) -> Result<Type> {
        loop {
            match ty {
                Type::Typedef(_)
                | Type::Const(_)
                | Type::Volatile(_)
                | Type::Restrict(_)
                | Type::TypeTag(_) => {
                    let inner = ty.as_btf_type().ok_or_else(|| anyhow!("bad BTF chain"))?;
                    ty = self.btf.resolve_chained_type(inner)?;
                }
                other => return Ok(other),
            }
        }
    }

    /// Finds `name` in a struct/union, descending into anonymous members. Returns the bit
    /// offset relative to `ty` and the member's type.
    fn find_member(&self, ty: &Type, name: &str) -> Result<Option<(u32, Type)>> {
        let members = match ty {
            Type::Struct(s) | Type::Union(s) => &s.members,
            _ => return Ok(None),
        };
        for m in members {
            // Only the member asked for and the anonymous ones are resolved further.
            let member_name = self.btf.resolve_name(m).unwrap_or_default();
            if member_name != name && !member_name.is_empty() {
                continue;
            }
            let member_ty = self.strip(self.btf.resolve_chained_type(m)?)?;
            if member_name == name {
                return Ok(Some((m.bit_offset(), member_ty)));
            }
            if member_name.is_empty() {
                if let Some((bits, t)) = self.find_member(&member_ty, name)? {
                    return Ok(Some((m.bit_offset() + bits, t)));
                }
            }
        }
        Ok(None)
    }
}

/// The ids of the types named in `wanted` (every name present, with no ids when absent), from
/// one walk over a vmlinux BTF blob (no base BTF: ids start at 1). None when the blob is not
/// as expected (other byte order, an unknown kind, a walk that does not end where the type
/// section does): the caller then asks btf_rs name by name.
fn ids_by_names<'n>(raw: &[u8], wanted: &[&'n str]) -> Option<HashMap<&'n str, Vec<u32>>> {
    let u32_at = |off: usize| -> Option<u32> {
        Some(u32::from_ne_bytes(
            raw.get(off..off.checked_add(4)?)?.try_into().ok()?,
        ))
    };
    if raw.get(..2)? != 0xeb9fu16.to_ne_bytes() {
        return None;
    }
    let hdr_len = u32_at(4)? as usize;
    let (type_off, type_len) = (u32_at(8)? as usize, u32_at(12)? as usize);
    let (str_off, str_len) = (u32_at(16)? as usize, u32_at(20)? as usize);
    let types_start = hdr_len.checked_add(type_off)?;
    let types_end = types_start.checked_add(type_len)?;
    let strs = raw.get(hdr_len + str_off..hdr_len.checked_add(str_off)?.checked_add(str_len)?)?;
    if types_end > raw.len() {
        return None;
    }
    let mut out: HashMap<&'n str, Vec<u32>> = wanted.iter().map(|n| (*n, Vec::new())).collect();
    // A name's length rules out most types before any comparison.
    let max_len = wanted.iter().map(|n| n.len()).max().unwrap_or(0);
    let lengths: u128 = wanted
        .iter()
        .filter(|n| n.len() < 128)
        .fold(0, |m, n| m | 1 << n.len());
    let mut pos = types_start;
    let mut id = 1u32;
    while pos < types_end {
        let name_off = u32_at(pos)? as usize;
        let info = u32_at(pos + 4)?;
        let vlen = (info & 0xffff) as usize;
        // Bytes after the 12-byte header, per BTF_KIND_* (include/uapi/linux/btf.h).
        let extra = match (info >> 24) & 0x1f {
            1 | 14 | 17 => 4,             // INT, VAR, DECL_TAG
            3 => 12,                      // ARRAY
            4 | 5 | 15 | 19 => 12 * vlen, // STRUCT, UNION, DATASEC, ENUM64
            6 | 13 => 8 * vlen,           // ENUM, FUNC_PROTO
            2 | 7..=12 | 16 | 18 => 0,    // PTR, FWD, TYPEDEF, qualifiers, FUNC, FLOAT, TYPE_TAG
            _ => return None,
        };
        if name_off != 0 {
            let name = strs.get(name_off..)?;
            let name = &name[..name.len().min(max_len + 1)];
            let end = name.iter().position(|&b| b == 0);
            if let Some(end) = end.filter(|&e| e >= 128 || lengths & 1 << e != 0) {
                if let Some(ids) = std::str::from_utf8(&name[..end])
                    .ok()
                    .and_then(|n| out.get_mut(n))
                {
                    ids.push(id);
                }
            }
        }
        pos += 12 + extra;
        id += 1;
    }
    (pos == types_end).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> Option<KernelBtf> {
        KernelBtf::load().ok()
    }

    #[test]
    fn resolves_nested_and_anonymous_members() {
        let Some(btf) = host() else {
            println!("NL-SKIP no kernel BTF on this machine");
            return;
        };
        // skc_family sits after the address and port unions in sock_common on every kernel.
        let daddr = btf.offset("sock", "__sk_common.skc_daddr").unwrap();
        let family = btf.offset("sock", "__sk_common.skc_family").unwrap();
        assert!(family > daddr);
        // network_header is inside an anonymous struct group on recent kernels.
        let nh = btf.offset("sk_buff", "network_header").unwrap();
        let th = btf.offset("sk_buff", "transport_header").unwrap();
        assert_eq!(th + 2, nh, "transport_header is followed by network_header");
        assert!(btf.offset("sock", "no_such_member").is_err());
    }

    #[test]
    fn a_copy_in_memory_reads_the_same_as_the_file() {
        if !std::path::Path::new(VMLINUX_BTF).exists() {
            println!("NL-SKIP no kernel BTF on this machine");
            return;
        }
        // The way kernels before 6.16 (no mmap of the sysfs file) read it.
        let (btf, raw) = KernelBtf::open_copy(VMLINUX_BTF).unwrap();
        let copy = KernelBtf {
            btf,
            raw: Some(raw),
            ids: Default::default(),
            scans: Default::default(),
        };
        let direct = host().unwrap();
        for (s, m) in [
            ("sock", "__sk_common.skc_family"),
            ("sk_buff", "network_header"),
        ] {
            assert_eq!(copy.offset(s, m).unwrap(), direct.offset(s, m).unwrap());
        }
        assert_eq!(copy.tracepoint_args("inet_sock_set_state"), Some(3));
    }

    #[test]
    fn one_pass_finds_what_btf_rs_finds_name_by_name() {
        let Some(btf) = host() else {
            println!("NL-SKIP no kernel BTF on this machine");
            return;
        };
        let Some(raw) = &btf.raw else {
            println!("NL-SKIP the kernel's BTF could not be mapped");
            return;
        };
        let mut names: Vec<&str> = crate::kernel::config::btf_names();
        names.extend([
            "btf_trace_kfree_skb",
            "tcp_v4_connect",
            "tcp_v6_err",
            "no_such_type_here",
            "",
        ]);
        let found = ids_by_names(raw.bytes(), &names).expect("one pass over vmlinux BTF");
        assert_eq!(found.len(), names.len());
        for name in names.iter().filter(|n| !n.is_empty()) {
            assert_eq!(
                found[name],
                btf.btf.resolve_ids_by_name(name).unwrap(),
                "ids of {name}"
            );
        }
        assert!(found["no_such_type_here"].is_empty());
        assert!(found[""].is_empty(), "unnamed types are never matched");
        assert!(!found["sock"].is_empty());
        assert!(ids_by_names(&raw.bytes()[..100], &names).is_none());
    }

    #[test]
    fn start_up_names_take_one_pass() {
        let Some(btf) = host() else {
            println!("NL-SKIP no kernel BTF on this machine");
            return;
        };
        if btf.raw.is_none() {
            println!("NL-SKIP the kernel's BTF could not be mapped");
            return;
        }
        let root = std::env::temp_dir();
        let _ = crate::kernel::config::resolve(&btf, &root);
        assert_eq!(
            btf.scans(),
            1,
            "every name resolve asks for is in btf_names()"
        );
    }

    #[test]
    fn finds_drop_reasons_and_tracepoint_args() {
        let Some(btf) = host() else {
            println!("NL-SKIP no kernel BTF on this machine");
            return;
        };
        if let Ok(reasons) = btf.enum_values("skb_drop_reason") {
            assert!(reasons.contains_key("SKB_DROP_REASON_NO_SOCKET"));
            assert!(
                reasons["SKB_DROP_REASON_NETFILTER_DROP"] > reasons["SKB_DROP_REASON_NO_SOCKET"]
            );
        }
        assert_eq!(btf.tracepoint_args("inet_sock_set_state"), Some(3));
        assert_eq!(
            btf.tracepoint_args("tcp_receive_reset").map(|n| n >= 1),
            Some(true)
        );
        assert!(btf.has_function("tcp_v4_connect"));
    }
}
