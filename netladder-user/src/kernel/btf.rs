//! The running kernel's BTF: struct member offsets and enum values, resolved by name at start-up so
//! nothing about the kernel's layout is hard-coded.
use std::{collections::HashMap, os::fd::FromRawFd as _};

use anyhow::{anyhow, bail, Context as _, Result};
use btf_rs::{Backend, Btf, Type};

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Where the kernel's BTF is: `NETLADDER_BTF` when set (for kernels that keep it elsewhere),
/// else /sys/kernel/btf/vmlinux.
pub fn path() -> String {
    std::env::var("NETLADDER_BTF").unwrap_or_else(|_| VMLINUX_BTF.to_owned())
}

pub struct KernelBtf {
    btf: Btf,
    /// Ids by name, as looked up so far: each look-up of a new name reads every type's name (a
    /// hundred thousand of them), and start-up asks for some names many times (`sock` alone a
    /// dozen).
    ids: std::cell::RefCell<HashMap<String, Vec<u32>>>,
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
        let btf = Self::open(path).with_context(|| format!("cannot parse BTF in {path}"))?;
        Ok(Self {
            btf,
            ids: Default::default(),
        })
    }

    /// The kernel's BTF, memory-mapped and read on demand: a few MB and milliseconds, where
    /// parsing every type up front costs about 40 MB and 150 ms at each start (netladder only asks
    /// for a few dozen types). /sys/kernel/btf/vmlinux can be mapped since Linux 6.16; before, a
    /// copy in a memfd is mapped instead; parsing it all is the last resort.
    fn open(path: &str) -> Result<Btf> {
        if let Ok(btf) = Btf::from_file_with_backend(path, Backend::Mmap) {
            return Ok(btf);
        }
        match Self::open_copy(path) {
            Ok(btf) => Ok(btf),
            Err(_) => Ok(Btf::from_file(path)?),
        }
    }

    /// Copies `path` into an anonymous memory file and maps that.
    fn open_copy(path: &str) -> Result<Btf> {
        // SAFETY: plain syscall with a NUL-terminated name; the fd is owned right below.
        let fd = unsafe { libc::memfd_create(c"netladder-btf".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            bail!("memfd_create: {}", std::io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor nobody else owns.
        let mut copy = unsafe { std::fs::File::from_raw_fd(fd) };
        std::io::copy(&mut std::fs::File::open(path)?, &mut copy)?;
        // The mapping made from this path outlives `copy`, which is closed on return.
        Ok(Btf::from_file_with_backend(
            format!("/proc/self/fd/{fd}"),
            Backend::Mmap,
        )?)
    }

    /// The types named `name` (none when there is none).
    fn types_by_name(&self, name: &str) -> Vec<Type> {
        let ids = {
            let mut cache = self.ids.borrow_mut();
            match cache.get(name) {
                Some(ids) => ids.clone(),
                None => {
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
        let copy = KernelBtf {
            btf: KernelBtf::open_copy(VMLINUX_BTF).unwrap(),
            ids: Default::default(),
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
