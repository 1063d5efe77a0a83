//! A read-only private mapping of a whole file: the kernel's BTF (kernel/btf.rs) and the shared
//! libraries whose symbols the uprobes attach to (kernel/multi.rs). Only the pages read are
//! loaded, and nothing is copied.

/// A read-only private mapping of a whole file, unmapped on drop.
pub struct Mapped {
    ptr: *mut libc::c_void,
    len: usize,
}

impl Mapped {
    /// None for an empty file or a refused mapping.
    pub fn new(file: &std::fs::File) -> Option<Self> {
        let len = usize::try_from(file.metadata().ok()?.len()).ok()?;
        if len == 0 {
            return None;
        }
        // SAFETY: a fresh read-only mapping of `len` bytes of an open file; checked below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                std::os::fd::AsRawFd::as_raw_fd(file),
                0,
            )
        };
        (ptr != libc::MAP_FAILED).then_some(Self { ptr, len })
    }

    pub fn bytes(&self) -> &[u8] {
        // SAFETY: the mapping lives as long as `self` and is never written. The files mapped
        // are not written in place either: the kernel's BTF, our own copy of it, and system
        // libraries (replaced by rename on upgrade, the way the dynamic loader relies on).
        unsafe { std::slice::from_raw_parts(self.ptr as *const u8, self.len) }
    }
}

// SAFETY: the mapping is read-only and owned: any thread may read it or unmap it.
unsafe impl Send for Mapped {}
unsafe impl Sync for Mapped {}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}
