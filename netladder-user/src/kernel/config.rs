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

/// Every BTF name `resolve` looks up (`KernelBtf::prefetch` finds them in one pass).
pub const BTF_NAMES: &[&str] = &[
    "sock",
    "inet_sock",
    "net",
    "task_struct",
    "nsproxy",
    "sk_buff",
    "net_device",
    "neighbour",
    "neigh_table",
    "user_msghdr",
    "msghdr",
    "files_struct",
    "fdtable",
    "file",
    "socket",
    "inet_connection_sock",
    "skb_drop_reason",
];

pub fn resolve(btf: &KernelBtf, tracefs_root: &Path) -> Resolved {
    btf.prefetch(BTF_NAMES.iter().copied());
    let mut c = Config::empty();
    let mut missing = Vec::new();
    let mut off = |strukt: &str, path: &str| -> u32 {
        btf.offset(strukt, path).unwrap_or_else(|e| {
            missing.push(e.to_string());
            ABSENT
        })
    };
    c.sk_daddr = off("sock", "__sk_common.skc_daddr");
    c.sk_rcv_saddr = off("sock", "__sk_common.skc_rcv_saddr");
    c.sk_dport = off("sock", "__sk_common.skc_dport");
    c.sk_num = off("sock", "__sk_common.skc_num");
    c.sk_sport = off("inet_sock", "inet_sport");
    c.sk_family = off("sock", "__sk_common.skc_family");
    c.sk_v6_daddr = off("sock", "__sk_common.skc_v6_daddr");
    c.sk_v6_rcv_saddr = off("sock", "__sk_common.skc_v6_rcv_saddr");
    c.sk_net = off("sock", "__sk_common.skc_net");
    c.sk_protocol = off("sock", "sk_protocol");
    c.sk_err = off("sock", "sk_err");
    c.sk_err_soft = off("sock", "sk_err_soft");
    c.net_ns_inum = off("net", "ns.inum");
    c.task_nsproxy = off("task_struct", "nsproxy");
    c.nsproxy_net_ns = off("nsproxy", "net_ns");
    c.skb_head = off("sk_buff", "head");
    c.skb_network_header = off("sk_buff", "network_header");
    c.skb_iif = off("sk_buff", "skb_iif");
    c.skb_dev = off("sk_buff", "dev");
    c.dev_nd_net = off("net_device", "nd_net");
    c.dev_ifindex = off("net_device", "ifindex");
    c.neigh_state = off("neighbour", "nud_state");
    c.neigh_key = off("neighbour", "primary_key");
    c.neigh_dev = off("neighbour", "dev");
    c.neigh_tbl = off("neighbour", "tbl");
    c.tbl_family = off("neigh_table", "family");
    c.msghdr_name = off("user_msghdr", "msg_name");
    c.kmsghdr_name = off("msghdr", "msg_name");
    c.task_files = off("task_struct", "files");
    c.files_fdt = off("files_struct", "fdt");
    c.fdt_max_fds = off("fdtable", "max_fds");
    c.fdt_fd = off("fdtable", "fd");
    c.file_private_data = off("file", "private_data");
    c.socket_file = off("socket", "file");
    c.socket_sk = off("socket", "sk");
    c.socket_type = off("socket", "type");
    c.sk_state = off("sock", "__sk_common.skc_state");
    c.icsk_retransmits = off("inet_connection_sock", "icsk_retransmits");

    let mut drop_reasons = HashMap::new();
    match btf.enum_values("skb_drop_reason") {
        Ok(values) => {
            let get = |name: &str| values.get(name).copied().unwrap_or(ABSENT);
            c.reason_no_socket = get("SKB_DROP_REASON_NO_SOCKET");
            c.reason_netfilter_drop = get("SKB_DROP_REASON_NETFILTER_DROP");
            for (name, value) in values {
                let short = name.trim_start_matches("SKB_DROP_REASON_").to_owned();
                drop_reasons.insert(value, short);
            }
        }
        Err(e) => missing.push(format!("{e} (kernels before 5.17 have no drop reasons)")),
    }

    let mut tp = |event: &str, field: &str| -> u32 {
        tracefs::field_offset(tracefs_root, "syscalls", event, field).unwrap_or_else(|e| {
            missing.push(e.to_string());
            ABSENT
        })
    };
    c.sys_enter_connect_fd = tp("sys_enter_connect", "fd");
    c.sys_enter_connect_addr = tp("sys_enter_connect", "uservaddr");
    c.sys_enter_bind_fd = tp("sys_enter_bind", "fd");
    c.sys_enter_bind_addr = tp("sys_enter_bind", "umyaddr");
    c.sys_enter_listen_fd = tp("sys_enter_listen", "fd");
    c.sys_enter_sendto_fd = tp("sys_enter_sendto", "fd");
    c.sys_enter_sendto_addr = tp("sys_enter_sendto", "addr");
    c.sys_enter_sendmsg_fd = tp("sys_enter_sendmsg", "fd");
    c.sys_enter_sendmsg_msg = tp("sys_enter_sendmsg", "msg");
    c.sys_exit_ret = tp("sys_exit_connect", "ret");
    // ssh (#030): log lines written or sent by ssh / sshd, files the client opens.
    c.sys_enter_write_fd = tp("sys_enter_write", "fd");
    c.sys_enter_write_buf = tp("sys_enter_write", "buf");
    c.sys_enter_write_count = tp("sys_enter_write", "count");
    c.sys_enter_sendto_buf = tp("sys_enter_sendto", "buff");
    c.sys_enter_sendto_len = tp("sys_enter_sendto", "len");
    c.sys_enter_openat_filename = tp("sys_enter_openat", "filename");
    // Route lookups (kernels without fentry): their error and destination.
    let mut fib = |category: &str, event: &str, field: &str| -> u32 {
        tracefs::field_offset(tracefs_root, category, event, field).unwrap_or_else(|e| {
            missing.push(e.to_string());
            ABSENT
        })
    };
    c.fib_err = fib("fib", "fib_table_lookup", "err");
    c.fib_dst = fib("fib", "fib_table_lookup", "dst");
    c.fib6_err = fib("fib6", "fib6_table_lookup", "err");
    c.fib6_dst = fib("fib6", "fib6_table_lookup", "dst");
    c.fib_iif = fib("fib", "fib_table_lookup", "iif");
    c.fib6_iif = fib("fib6", "fib6_table_lookup", "iif");
    c.self_tgid = std::process::id();
    Resolved {
        config: c,
        missing,
        drop_reasons,
    }
}
