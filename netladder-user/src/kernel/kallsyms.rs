//! Names kernel addresses (the `location` of a drop) with /proc/kallsyms.
use std::io::BufRead as _;

/// The kernel's text symbols, sorted by address, with their names in one string: about 2 MB for
/// a whole kernel (a map of owned strings took several times that, for every start).
pub struct Kallsyms {
    /// (start address, name start in `names`, name length), sorted by address, one per address.
    syms: Vec<(u64, u32, u32)>,
    names: String,
}

impl Kallsyms {
    pub fn load() -> Self {
        let mut k = Self::empty();
        if let Ok(file) = std::fs::File::open("/proc/kallsyms") {
            // Line by line: the file is several MB of text.
            let mut reader = std::io::BufReader::with_capacity(1 << 16, file);
            let mut line = String::new();
            while matches!(reader.read_line(&mut line), Ok(n) if n > 0) {
                k.add_line(&line);
                line.clear();
            }
        }
        k.finish()
    }

    /// The symbols of a kallsyms text (tests; `load` reads the kernel's line by line).
    #[cfg(test)]
    pub fn parse(text: &str) -> Self {
        let mut k = Self::empty();
        for line in text.lines() {
            k.add_line(line);
        }
        k.finish()
    }

    /// No symbols: every address stays unnamed.
    pub fn empty() -> Self {
        Self {
            syms: Vec::new(),
            names: String::new(),
        }
    }

    fn add_line(&mut self, line: &str) {
        let mut it = line.split_whitespace();
        let (Some(addr), Some(kind), Some(name)) = (it.next(), it.next(), it.next()) else {
            return;
        };
        if !matches!(kind, "t" | "T") {
            return;
        }
        if let Ok(addr) = u64::from_str_radix(addr, 16) {
            if addr != 0 {
                self.syms
                    .push((addr, self.names.len() as u32, name.len() as u32));
                self.names.push_str(name);
            }
        }
    }

    /// Sorts by address; of several names at one address the last one listed is kept.
    fn finish(mut self) -> Self {
        // Stable: equal addresses keep their listing order, and dedup keeps the first of a run.
        self.syms.reverse();
        self.syms.sort_by_key(|s| s.0);
        self.syms.dedup_by_key(|s| s.0);
        self.syms.shrink_to_fit();
        self.names.shrink_to_fit();
        self
    }

    fn name(&self, sym: &(u64, u32, u32)) -> &str {
        &self.names[sym.1 as usize..(sym.1 + sym.2) as usize]
    }

    /// The text range [start, end) of a function: its address up to the next symbol's.
    pub fn range(&self, name: &str) -> Option<[u64; 2]> {
        let i = self.syms.iter().position(|s| self.name(s) == name)?;
        let end = self.syms.get(i + 1)?.0;
        Some([self.syms[i].0, end])
    }

    /// `name+0xoff` for an address, or None when unknown (e.g. kallsyms hidden by kptr_restrict).
    pub fn symbolize(&self, addr: u64) -> Option<String> {
        let i = self.syms.partition_point(|s| s.0 <= addr).checked_sub(1)?;
        let sym = &self.syms[i];
        Some(format!("{}+{:#x}", self.name(sym), addr - sym.0))
    }
}

/// The kernel's symbols, read from /proc/kallsyms the first time they are asked for: reading
/// it makes the kernel format every symbol of the kernel and its modules, which is a tenth of
/// netladder's start-up CPU, and most runs never name a drop location.
pub struct OnDemand(std::sync::OnceLock<Kallsyms>);

impl OnDemand {
    /// Nothing read yet.
    pub fn new() -> Self {
        Self(std::sync::OnceLock::new())
    }

    /// Symbols already read (or none at all: `Kallsyms::empty()`).
    pub fn with(k: Kallsyms) -> Self {
        Self(std::sync::OnceLock::from(k))
    }

    pub fn get(&self) -> &Kallsyms {
        self.0.get_or_init(Kallsyms::load)
    }
}

impl Default for OnDemand {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::Kallsyms;

    #[test]
    fn symbolizes_inside_functions() {
        let k = Kallsyms::parse(
            "ffffffff81000000 T _stext\nffffffff81100000 t nf_hook_slow\n\
             ffffffff81100400 T nft_do_chain\nffffffff81200000 D some_data\n",
        );
        assert_eq!(
            k.symbolize(0xffffffff81100010).as_deref(),
            Some("nf_hook_slow+0x10")
        );
        assert_eq!(
            k.symbolize(0xffffffff81100400).as_deref(),
            Some("nft_do_chain+0x0")
        );
        assert_eq!(k.symbolize(0x10), None);
        assert_eq!(
            k.range("nf_hook_slow"),
            Some([0xffffffff81100000, 0xffffffff81100400])
        );
        assert_eq!(
            k.range("nft_do_chain"),
            None,
            "no symbol after it: end unknown"
        );
        assert_eq!(k.range("missing"), None);
    }

    #[test]
    fn of_two_names_at_one_address_the_last_is_kept() {
        let k = Kallsyms::parse(
            "ffffffff81100000 t first_alias\nffffffff81100000 T second_alias\n\
             ffffffff81100400 T next\nffffffff81100800 T after\n",
        );
        assert_eq!(
            k.symbolize(0xffffffff81100008).as_deref(),
            Some("second_alias+0x8")
        );
        assert_eq!(
            k.range("second_alias"),
            Some([0xffffffff81100000, 0xffffffff81100400])
        );
        assert_eq!(k.range("first_alias"), None);
    }

    #[test]
    fn loads_the_running_kernel() {
        let k = Kallsyms::load();
        if let Some([start, end]) = k.range("tcp_v4_rcv") {
            assert!(start < end);
            assert!(k.symbolize(start).unwrap().starts_with("tcp_v4_rcv+0x0"));
        } else {
            println!("NL-SKIP /proc/kallsyms hidden or without tcp_v4_rcv");
        }
    }

    #[test]
    fn hidden_addresses_give_nothing() {
        let k = Kallsyms::parse("0000000000000000 T nf_hook_slow\n");
        assert_eq!(k.symbolize(0xffffffff81100010), None);
    }
}
