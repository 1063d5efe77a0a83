//! uprobes attached as uprobe_multi links (Linux 6.6+) instead of perf events.
//!
//! Why: closing a perf-event uprobe waits for the kernel's grace periods while it holds a global
//! mutex (`event_mutex`), so the 13 uprobes took about 80 ms each at exit, one after the other:
//! 1.05 s of a 1.08 s shutdown (docs/benchmarks.md). A uprobe_multi link is released without
//! that mutex, so the links close side by side and their waits overlap.
//!
//! How: such a link needs its program loaded with the uprobe_multi attach type, which aya 0.14
//! has no way to ask for. The programs are the same ones in the same object: this module parses
//! the object with aya-obj, points its map references at the maps aya created (so the programs
//! share every map with the rest), links its function calls, and loads each uprobe program with
//! the attach type itself. aya keeps the maps and every other program.
//!
//! Where the kernel has no uprobe_multi (`KERNEL_FUNCTION` missing from its BTF: 5.10, 6.1),
//! or refuses one, the loader attaches the program through aya as before.
use std::collections::HashSet;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use aya::maps::{Map, MapData};
use aya::{Btf, Ebpf};
use aya_obj::generated::{bpf_attach_type, bpf_cmd, bpf_insn, bpf_prog_type};

/// The kernel function behind uprobe_multi links: present in the kernel's BTF from 6.6 on.
pub const KERNEL_FUNCTION: &str = "bpf_uprobe_multi_link_attach";

/// The object's programs relocated against the maps of a loaded [`Ebpf`], ready to load.
pub struct Relocated {
    obj: aya_obj::Object,
}

impl Relocated {
    /// Parses `object` (the bytes aya loaded into `ebpf`) and relocates it: map references to
    /// `ebpf`'s maps (by name), calls linked, and BTF relocations (if the object has any)
    /// against `btf`.
    pub fn new(object: &[u8], ebpf: &Ebpf, btf: &Btf) -> Result<Self, String> {
        let mut obj = aya_obj::Object::parse(object).map_err(|e| format!("object: {e}"))?;
        if obj.has_btf_relocations() {
            obj.relocate_btf(btf)
                .map_err(|e| format!("BTF relocations: {e}"))?;
        }
        let text_sections: HashSet<usize> = obj.functions.keys().map(|(s, _)| *s).collect();
        let defs = std::mem::take(&mut obj.maps);
        let mut maps: Vec<(&str, RawFd, &aya_obj::Map)> = Vec::with_capacity(defs.len());
        for (name, def) in &defs {
            let data = ebpf
                .map(name)
                .and_then(map_data)
                .ok_or_else(|| format!("map {name} was not created"))?;
            maps.push((name.as_str(), data.fd().as_fd().as_raw_fd(), def));
        }
        obj.relocate_maps(maps.into_iter(), &text_sections)
            .map_err(|e| format!("map relocations: {e}"))?;
        obj.relocate_calls(&text_sections)
            .map_err(|e| format!("call relocations: {e}"))?;
        Ok(Self { obj })
    }

    /// Loads program `name` as a uprobe_multi program and attaches it to `symbol` of the ELF
    /// file `path` (every process that maps it), as a uretprobe when `ret`.
    pub fn attach(&self, name: &str, path: &Path, symbol: &str, ret: bool) -> Result<Link, String> {
        let offset = symbol_offset(path, symbol)?;
        let prog = self.load(name)?;
        let link = link_create(&prog, path, offset, ret)
            .map_err(|e| format!("uprobe_multi link refused: {e} ({})", path.display()))?;
        Ok(Link {
            name: name.to_string(),
            prog,
            _link: link,
        })
    }

    fn load(&self, name: &str) -> Result<OwnedFd, String> {
        let program = self
            .obj
            .programs
            .get(name)
            .ok_or_else(|| format!("program {name} is not in the eBPF object"))?;
        let function = self
            .obj
            .functions
            .get(&program.function_key())
            .ok_or_else(|| format!("program {name} has no code"))?;
        prog_load(name, &function.instructions, &program.license)
    }
}

/// One program attached through a uprobe_multi link. Dropping it closes the link (the probe is
/// gone once that returns), then the program.
pub struct Link {
    pub name: String,
    // Declared first: dropped first (the link before its program).
    _link: OwnedFd,
    prog: OwnedFd,
}

impl Link {
    /// The program's descriptor (for its statistics in /proc/self/fdinfo).
    pub fn prog_fd(&self) -> RawFd {
        self.prog.as_raw_fd()
    }
}

/// The `MapData` inside any kind of aya map.
fn map_data(map: &Map) -> Option<&MapData> {
    Some(match map {
        Map::Array(m)
        | Map::ArrayOfMaps(m)
        | Map::BloomFilter(m)
        | Map::CgroupArray(m)
        | Map::CgroupStorage(m)
        | Map::CgrpStorage(m)
        | Map::CpuMap(m)
        | Map::DevMap(m)
        | Map::DevMapHash(m)
        | Map::HashMap(m)
        | Map::HashOfMaps(m)
        | Map::InodeStorage(m)
        | Map::LpmTrie(m)
        | Map::LruHashMap(m)
        | Map::PerCpuArray(m)
        | Map::PerCpuCgroupStorage(m)
        | Map::PerCpuHashMap(m)
        | Map::PerCpuLruHashMap(m)
        | Map::PerfEventArray(m)
        | Map::ProgramArray(m)
        | Map::Queue(m)
        | Map::ReusePortSockArray(m)
        | Map::RingBuf(m)
        | Map::SockHash(m)
        | Map::SockMap(m)
        | Map::SkStorage(m)
        | Map::Stack(m)
        | Map::StackTraceMap(m)
        | Map::Unsupported(m)
        | Map::XskMap(m) => m,
    })
}

/// Where `symbol` (a defined function of the dynamic or the full symbol table) starts in the
/// file at `path`: its address less its section's address, plus that section's offset in the
/// file (what a uprobe is given). The file is mapped, not read: a uprobe row asks this of a
/// library of several MB (libcrypto) for one symbol, and only the headers and symbol tables are
/// touched.
pub fn symbol_offset(path: &Path, symbol: &str) -> Result<u64, String> {
    use object::{Object as _, ObjectSection as _, ObjectSymbol as _};
    let opened =
        std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mapped = super::mapped::Mapped::new(&opened)
        .ok_or_else(|| format!("cannot map {}", path.display()))?;
    let file = object::File::parse(mapped.bytes())
        .map_err(|e| format!("{} is not an ELF file: {e}", path.display()))?;
    let found = file
        .dynamic_symbols()
        .chain(file.symbols())
        .find(|s| s.is_definition() && s.address() != 0 && s.name() == Ok(symbol))
        .ok_or_else(|| format!("no symbol {symbol} in {}", path.display()))?;
    let section = found
        .section_index()
        .and_then(|i| file.section_by_index(i).ok())
        .ok_or_else(|| format!("symbol {symbol} of {} has no section", path.display()))?;
    let (file_offset, _) = section
        .file_range()
        .ok_or_else(|| format!("symbol {symbol} of {} is not in the file", path.display()))?;
    Ok(found.address() - section.address() + file_offset)
}

/// `bpf(BPF_PROG_LOAD)` for a kprobe-type program with the uprobe_multi attach type (the
/// leading fields of `union bpf_attr` for that command; the rest must be zero).
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
    _rest: [u64; 7],
}

/// `bpf(BPF_LINK_CREATE)` for a uprobe_multi link.
#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
    path: u64,
    offsets: u64,
    ref_ctr_offsets: u64,
    cookies: u64,
    cnt: u32,
    multi_flags: u32,
    pid: u32,
    _pad: u32,
    _rest: [u64; 8],
}

fn bpf<T>(cmd: bpf_cmd, attr: &mut T) -> io::Result<OwnedFd> {
    // SAFETY: `attr` is a zero-padded `union bpf_attr` prefix for `cmd`, of its full size.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            attr as *mut T,
            std::mem::size_of::<T>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor the kernel just gave us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

fn prog_load(name: &str, insns: &[bpf_insn], license: &CString) -> Result<OwnedFd, String> {
    let mut attr = ProgLoadAttr {
        prog_type: bpf_prog_type::BPF_PROG_TYPE_KPROBE as u32,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        expected_attach_type: bpf_attach_type::BPF_TRACE_UPROBE_MULTI as u32,
        ..Default::default()
    };
    // The kernel keeps 15 bytes of a program's name.
    for (d, s) in attr.prog_name.iter_mut().zip(name.bytes().take(15)) {
        *d = s;
    }
    match bpf(bpf_cmd::BPF_PROG_LOAD, &mut attr) {
        Ok(fd) => Ok(fd),
        Err(first) => {
            // Once more with the verifier's log, for its reason.
            let mut log = vec![0u8; 1 << 20];
            attr.log_level = 1;
            attr.log_size = log.len() as u32;
            attr.log_buf = log.as_mut_ptr() as u64;
            let again = bpf(bpf_cmd::BPF_PROG_LOAD, &mut attr);
            let text = String::from_utf8_lossy(&log);
            let text = text.trim_end_matches('\0');
            let reason = text
                .lines()
                .rev()
                .find(|l| {
                    !l.is_empty()
                        && !l.starts_with("processed ")
                        && !l.starts_with("verification time")
                        && !l.starts_with("stack depth")
                })
                .unwrap_or("");
            match again {
                // Loaded the second time (a passing hiccup): keep it.
                Ok(fd) => Ok(fd),
                Err(_) if reason.is_empty() => Err(format!("load failed: {first}")),
                Err(_) => Err(format!("load failed: {first}: {reason}")),
            }
        }
    }
}

fn link_create(prog: &OwnedFd, path: &Path, offset: u64, ret: bool) -> io::Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    let path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let offsets = [offset];
    let mut attr = LinkCreateAttr {
        prog_fd: prog.as_raw_fd() as u32,
        attach_type: bpf_attach_type::BPF_TRACE_UPROBE_MULTI as u32,
        path: path.as_ptr() as u64,
        offsets: offsets.as_ptr() as u64,
        cnt: 1,
        multi_flags: if ret {
            aya_obj::generated::BPF_F_UPROBE_MULTI_RETURN
        } else {
            0
        },
        ..Default::default()
    };
    bpf(bpf_cmd::BPF_LINK_CREATE, &mut attr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attrs_have_the_size_of_union_bpf_attr_prefixes() {
        // Both are read by the kernel as `union bpf_attr`, whose size here is 128 bytes at
        // most for these commands; the fields sit where uapi/linux/bpf.h puts them.
        assert_eq!(std::mem::size_of::<ProgLoadAttr>(), 128);
        assert_eq!(std::mem::size_of::<LinkCreateAttr>(), 128);
        assert_eq!(std::mem::offset_of!(ProgLoadAttr, prog_name), 48);
        assert_eq!(std::mem::offset_of!(ProgLoadAttr, expected_attach_type), 68);
        assert_eq!(std::mem::offset_of!(LinkCreateAttr, path), 16);
        assert_eq!(std::mem::offset_of!(LinkCreateAttr, cnt), 48);
        assert_eq!(std::mem::offset_of!(LinkCreateAttr, pid), 56);
    }

    #[test]
    fn finds_a_libc_function_in_its_text() {
        let Some(libc) = crate::kernel::libs::find("libc.so.6") else {
            return;
        };
        let off = symbol_offset(&libc, "getaddrinfo").expect("getaddrinfo in libc");
        assert!(off > 0);
        assert!(symbol_offset(&libc, "no_such_function_here").is_err());
    }
}
