//! Builds the `Config` handed to the eBPF programs: struct offsets and drop-reason values from BTF,
//! syscall tracepoint offsets from tracefs. Each missing piece is reported, never guessed.
use std::{collections::HashMap, path::Path};

use netladder_common::{Config, ABSENT};

use super::{btf::KernelBtf, tracefs};

/// The config plus what could not be resolved on this kernel (one line each).
pub struct Resolved {
    pub config: Config,
    pub missing: Vec<String>,
    /// Every `enum skb_drop_reason` value by name, for naming drop reasons in evidence.
    pub drop_reasons: HashMap<u32, String>,
}

/// A `Config` field, by where it is stored.
type Field = fn(&mut Config) -> &mut u32;

/// A table of `Config` fields and where each comes from: `field: "source", ...;`.
macro_rules! fields {
    ($($field:ident: $($source:literal),+;)*) => {
        &[$((|c| &mut c.$field, [$($source),+])),*]
    };
}

/// Offsets of struct members from BTF: the field, the struct, the member's path in it.
const BTF_OFFSETS: &[(Field, [&str; 2])] = fields! {
    sk_daddr: "sock", "__sk_common.skc_daddr";
    sk_rcv_saddr: "sock", "__sk_common.skc_rcv_saddr";
    sk_dport: "sock", "__sk_common.skc_dport";
    sk_num: "sock", "__sk_common.skc_num";
    sk_sport: "inet_sock", "inet_sport";
    sk_family: "sock", "__sk_common.skc_family";
    sk_v6_daddr: "sock", "__sk_common.skc_v6_daddr";
    sk_v6_rcv_saddr: "sock", "__sk_common.skc_v6_rcv_saddr";
    sk_net: "sock", "__sk_common.skc_net";
    sk_protocol: "sock", "sk_protocol";
    sk_err: "sock", "sk_err";
    sk_err_soft: "sock", "sk_err_soft";
    net_ns_inum: "net", "ns.inum";
    task_nsproxy: "task_struct", "nsproxy";
    nsproxy_net_ns: "nsproxy", "net_ns";
    skb_head: "sk_buff", "head";
    skb_network_header: "sk_buff", "network_header";
    skb_iif: "sk_buff", "skb_iif";
    skb_dev: "sk_buff", "dev";
    dev_nd_net: "net_device", "nd_net";
    dev_ifindex: "net_device", "ifindex";
    neigh_state: "neighbour", "nud_state";
    neigh_key: "neighbour", "primary_key";
    neigh_dev: "neighbour", "dev";
    neigh_tbl: "neighbour", "tbl";
    tbl_family: "neigh_table", "family";
    msghdr_name: "user_msghdr", "msg_name";
    kmsghdr_name: "msghdr", "msg_name";
    task_files: "task_struct", "files";
    files_fdt: "files_struct", "fdt";
    fdt_max_fds: "fdtable", "max_fds";
    fdt_fd: "fdtable", "fd";
    file_private_data: "file", "private_data";
    socket_file: "socket", "file";
    socket_sk: "socket", "sk";
    socket_type: "socket", "type";
    sk_state: "sock", "__sk_common.skc_state";
    icsk_retransmits: "inet_connection_sock", "icsk_retransmits";
    // Route lookups (route.rs, bind.rs: kernels without fentry).
    flowi4_daddr: "flowi4", "daddr";
    flowi4_iif: "flowi4", "__fl_common.flowic_iif";
    flowi6_daddr: "flowi6", "daddr";
    flowi6_iif: "flowi6", "__fl_common.flowic_iif";
    fib6_res_f6i: "fib6_result", "f6i";
    fib6_res_type: "fib6_result", "fib6_type";
    net_fib6_null: "net", "ipv6.fib6_null_entry";
};

/// The enum whose values `DROP_REASONS` reads, and that names the drop reasons of events.
const DROP_REASON_ENUM: &str = "skb_drop_reason";

/// Values of `enum skb_drop_reason` (ABSENT when the kernel lacks them).
const DROP_REASONS: &[(Field, [&str; 1])] = fields! {
    reason_no_socket: "SKB_DROP_REASON_NO_SOCKET";
    reason_netfilter_drop: "SKB_DROP_REASON_NETFILTER_DROP";
};

/// Offsets of tracepoint fields from tracefs: the field, the category, the event, its field.
const TRACEPOINT_FIELDS: &[(Field, [&str; 3])] = fields! {
    sys_enter_connect_fd: "syscalls", "sys_enter_connect", "fd";
    sys_enter_connect_addr: "syscalls", "sys_enter_connect", "uservaddr";
    sys_enter_bind_fd: "syscalls", "sys_enter_bind", "fd";
    sys_enter_bind_addr: "syscalls", "sys_enter_bind", "umyaddr";
    sys_enter_listen_fd: "syscalls", "sys_enter_listen", "fd";
    sys_enter_sendto_fd: "syscalls", "sys_enter_sendto", "fd";
    sys_enter_sendto_addr: "syscalls", "sys_enter_sendto", "addr";
    sys_enter_sendmsg_fd: "syscalls", "sys_enter_sendmsg", "fd";
    sys_enter_sendmsg_msg: "syscalls", "sys_enter_sendmsg", "msg";
    sys_exit_ret: "syscalls", "sys_exit_connect", "ret";
    // ssh (#030): log lines written or sent by ssh / sshd, files the client opens.
    sys_enter_write_fd: "syscalls", "sys_enter_write", "fd";
    sys_enter_write_buf: "syscalls", "sys_enter_write", "buf";
    sys_enter_write_count: "syscalls", "sys_enter_write", "count";
    sys_enter_sendto_buf: "syscalls", "sys_enter_sendto", "buff";
    sys_enter_sendto_len: "syscalls", "sys_enter_sendto", "len";
    sys_enter_openat_filename: "syscalls", "sys_enter_openat", "filename";
};

/// Every BTF name `resolve` looks up, each once (`KernelBtf::prefetch` finds them in one pass).
pub fn btf_names() -> Vec<&'static str> {
    let mut names: Vec<&str> = Vec::new();
    for name in BTF_OFFSETS.iter().map(|(_, [strukt, _])| *strukt) {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names.push(DROP_REASON_ENUM);
    names
}

pub fn resolve(btf: &KernelBtf, tracefs_root: &Path) -> Resolved {
    btf.prefetch(btf_names());
    let mut c = Config::empty();
    let mut missing = Vec::new();
    for (field, [strukt, path]) in BTF_OFFSETS {
        *field(&mut c) = btf.offset(strukt, path).unwrap_or_else(|e| {
            missing.push(e.to_string());
            ABSENT
        });
    }

    let mut drop_reasons = HashMap::new();
    match btf.enum_values(DROP_REASON_ENUM) {
        Ok(values) => {
            for (field, [name]) in DROP_REASONS {
                *field(&mut c) = values.get(*name).copied().unwrap_or(ABSENT);
            }
            for (name, value) in values {
                let short = name.trim_start_matches("SKB_DROP_REASON_").to_owned();
                drop_reasons.insert(value, short);
            }
        }
        Err(e) => missing.push(format!("{e} (kernels before 5.17 have no drop reasons)")),
    }

    for (field, [category, event, name]) in TRACEPOINT_FIELDS {
        *field(&mut c) =
            tracefs::field_offset(tracefs_root, category, event, name).unwrap_or_else(|e| {
                missing.push(e.to_string());
                ABSENT
            });
    }
    c.self_tgid = std::process::id();
    Resolved {
        config: c,
        missing,
        drop_reasons,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Which `Config` word each table entry writes.
    fn slots(table: impl IntoIterator<Item = Field>) -> Vec<usize> {
        let mut c = Config::empty();
        let base = &raw const c as usize;
        table
            .into_iter()
            .map(|field| (field(&mut c) as *mut u32 as usize - base) / 4)
            .collect()
    }

    #[test]
    fn every_config_field_has_one_source() {
        let mut written = slots(
            BTF_OFFSETS
                .iter()
                .map(|(f, _)| *f)
                .chain(DROP_REASONS.iter().map(|(f, _)| *f))
                .chain(TRACEPOINT_FIELDS.iter().map(|(f, _)| *f)),
        );
        written.sort_unstable();
        let mut named: Vec<&str> = written.iter().map(|i| Config::FIELDS[*i]).collect();
        named.dedup();
        assert_eq!(named.len(), written.len(), "a field is written twice");
        // The three that are not offsets: set by the caller, 0 until then.
        let unsourced: Vec<&str> = Config::FIELDS
            .iter()
            .copied()
            .filter(|f| !named.contains(f))
            .collect();
        assert_eq!(unsourced, ["self_tgid", "only_netns", "empty_programs"]);
    }

    #[test]
    fn btf_names_are_each_struct_once_and_the_drop_reasons() {
        let names = btf_names();
        for (_, [strukt, _]) in BTF_OFFSETS {
            assert_eq!(names.iter().filter(|n| *n == strukt).count(), 1, "{strukt}");
        }
        assert_eq!(names.last(), Some(&"skb_drop_reason"));
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), names.len());
    }
}
