//! Names kernel addresses (the `location` of a drop) with /proc/kallsyms.
use std::collections::BTreeMap;

pub struct Kallsyms {
    /// Start address -> symbol name (text symbols only).
    syms: BTreeMap<u64, String>,
}

impl Kallsyms {
    pub fn load() -> Self {
        let text = std::fs::read_to_string("/proc/kallsyms").unwrap_or_default();
        Self::parse(&text)
    }

    pub fn parse(text: &str) -> Self {
        let mut syms = BTreeMap::new();
        for line in text.lines() {
            let mut it = line.split_whitespace();
            let (Some(addr), Some(kind), Some(name)) = (it.next(), it.next(), it.next()) else {
                continue;
            };
            if !matches!(kind, "t" | "T") {
                continue;
            }
            if let Ok(addr) = u64::from_str_radix(addr, 16) {
                if addr != 0 {
                    syms.insert(addr, name.to_owned());
                }
            }
        }
        Self { syms }
    }

    /// The text range [start, end) of a function: its address up to the next symbol's.
    pub fn range(&self, name: &str) -> Option<[u64; 2]> {
        let start = self
            .syms
            .iter()
            .find(|(_, n)| n.as_str() == name)
            .map(|(a, _)| *a)?;
        let end = self.syms.range(start + 1..).next().map(|(a, _)| *a)?;
        Some([start, end])
    }

    /// `name+0xoff` for an address, or None when unknown (e.g. kallsyms hidden by kptr_restrict).
    pub fn symbolize(&self, addr: u64) -> Option<String> {
        let (start, name) = self.syms.range(..=addr).next_back()?;
        Some(format!("{name}+{:#x}", addr - start))
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
    fn hidden_addresses_give_nothing() {
        let k = Kallsyms::parse("0000000000000000 T nf_hook_slow\n");
        assert_eq!(k.symbolize(0xffffffff81100010), None);
    }
}
