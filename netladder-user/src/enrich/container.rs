//! Who a failing socket belongs to, beyond the process: its cgroup v2 path, and from that path the
//! container runtime and container id (docker, containerd, CRI-O, podman) and, on Kubernetes, the
//! pod UID and QoS class. The pod's namespace and name, and the container's name, are not in the
//! cgroup path; they are taken from the kubelet's log directories (`/var/log/pods/NS_NAME_UID`,
//! `/var/log/containers/POD_NS_CONTAINER-ID.log`) and from docker's own container state, when those
//! exist on this host. Nothing here asks a runtime or the API server over the network.
//!
//! The kernel event carries the cgroup id (`bpf_get_current_cgroup_id`: the cgroup v2 directory's
//! inode number). It is mapped to a path first through `/proc/PID/cgroup` (checked against the id,
//! since the process may have moved or gone), else by an index of every directory of the cgroup2
//! mount by inode, rebuilt at most once a second on a miss. Answers are cached, bounded.
use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

/// What the cgroup path tells about a failing process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Workload {
    /// The cgroup v2 path, relative to the cgroup2 mount ("/system.slice/nginx.service").
    pub cgroup: String,
    pub container: Option<Container>,
    pub pod: Option<Pod>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Container {
    /// "docker", "containerd", "cri-o", "podman"; None when the path has an id but does not say
    /// which runtime made it (the kubelet's cgroupfs driver names only the id).
    pub runtime: Option<&'static str>,
    /// The full container id (64 hex digits).
    pub id: String,
    /// The container's name, when this host has it on disk (docker state, kubelet logs).
    pub name: Option<String>,
}

impl Container {
    /// The first 12 digits of the id, as `docker ps` and `crictl ps` show it.
    pub fn short_id(&self) -> &str {
        &self.id[..self.id.len().min(12)]
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pod {
    /// The pod UID in its usual form (with dashes), or a static pod's 32-digit hash.
    pub uid: String,
    /// "guaranteed", "burstable" or "besteffort".
    pub qos: &'static str,
    /// From `/var/log/pods/NAMESPACE_NAME_UID`, when the kubelet keeps it on this host.
    pub namespace: Option<String>,
    pub name: Option<String>,
}

/// What the path alone says (no file system access): the pure parser.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    pub runtime: Option<&'static str>,
    pub container_id: Option<String>,
    pub pod_uid: Option<String>,
    pub qos: Option<&'static str>,
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A pod UID as it appears in a cgroup name: a UUID with '-' (cgroupfs) or '_' (systemd, which
/// escapes '-'), or the 32 hex digits of a static pod's hash. Returned with dashes.
fn pod_uid(s: &str) -> Option<String> {
    let uuid = s.len() == 36
        && s.char_indices().all(|(i, c)| {
            if [8, 13, 18, 23].contains(&i) {
                c == '-' || c == '_'
            } else {
                c.is_ascii_hexdigit()
            }
        });
    let hash = s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit());
    (uuid || hash).then(|| s.replace('_', "-"))
}

/// Reads a cgroup v2 path (as in `/proc/PID/cgroup` after "0::") for a container and a pod.
///
/// Layouts (the deepest match wins, so a container's own sub-cgroups still name it):
/// - docker: `/docker/ID` (cgroupfs driver), `/system.slice/docker-ID.scope` (systemd driver);
/// - containerd: `.../cri-containerd-ID.scope` (CRI, systemd driver), `nerdctl-ID.scope`;
/// - CRI-O: `.../crio-ID.scope` (the `crio-conmon-ID.scope` beside it is its monitor process,
///   which is not the container);
/// - podman: `libpod-ID.scope` (`libpod-conmon-ID.scope` likewise is not the container);
/// - kubelet: `/kubepods.slice/kubepods-QOS.slice/kubepods-QOS-podUID.slice/...` (systemd driver,
///   guaranteed pods without the QOS level), `/kubepods/QOS/podUID/ID` (cgroupfs driver), also
///   under another root such as kind's `/kubelet.slice/kubelet-kubepods.slice/...`.
pub fn parse(path: &str) -> Parsed {
    let mut p = Parsed::default();
    let mut parent = "";
    let mut kube = false;
    for comp in path.split('/').filter(|c| !c.is_empty()) {
        let unit = comp
            .strip_suffix(".scope")
            .or_else(|| comp.strip_suffix(".slice"));
        if comp == "kubepods" || comp.contains("kubepods") {
            kube = true;
        }
        // Runtime-named scopes of the systemd cgroup driver.
        if let Some(unit) = unit {
            let named = [
                ("docker-", "docker"),
                ("cri-containerd-", "containerd"),
                ("nerdctl-", "containerd"),
                ("crio-", "cri-o"),
                ("libpod-", "podman"),
            ];
            for (prefix, runtime) in named {
                if let Some(id) = unit.strip_prefix(prefix).filter(|id| is_container_id(id)) {
                    p.runtime = Some(runtime);
                    p.container_id = Some(id.to_owned());
                }
            }
        }
        if is_container_id(comp) {
            // cgroupfs drivers: the bare id under the runtime's or the pod's directory.
            p.container_id = Some(comp.to_owned());
            p.runtime = match parent {
                "docker" => Some("docker"),
                _ => None,
            };
        }
        if kube {
            let name = unit.unwrap_or(comp);
            // "podUID" (cgroupfs), "kubepods-QOS-podUID" / "kubepods-podUID" (systemd).
            let tail = name.rsplit('-').next().unwrap_or(name);
            let candidate = if let Some(uid) = name.strip_prefix("pod") {
                Some(uid)
            } else if name.contains("kubepods") {
                // The UID itself may hold '-' only in the cgroupfs form, never here.
                tail.strip_prefix("pod")
            } else {
                None
            };
            if let Some(uid) = candidate.and_then(pod_uid) {
                p.pod_uid = Some(uid);
                if p.qos.is_none() {
                    p.qos = Some("guaranteed");
                }
            }
            for qos in ["burstable", "besteffort"] {
                if name == qos
                    || name.ends_with(&format!("-{qos}"))
                    || name.contains(&format!("-{qos}-pod"))
                {
                    p.qos = Some(qos);
                }
            }
        }
        parent = comp;
    }
    if p.pod_uid.is_none() {
        p.qos = None;
    }
    p
}

/// The "0::PATH" line of `/proc/PID/cgroup`.
fn unified_line(text: &str) -> Option<&str> {
    text.lines().find_map(|l| l.strip_prefix("0::"))
}

/// Pod namespace and name by UID, from the kubelet's `/var/log/pods/NAMESPACE_NAME_UID`
/// directories (names and namespaces are DNS labels: they hold no '_').
pub fn pods_from_log_dirs(
    names: impl Iterator<Item = String>,
) -> HashMap<String, (String, String)> {
    let mut pods = HashMap::new();
    for n in names {
        let mut parts = n.splitn(3, '_');
        if let (Some(ns), Some(name), Some(uid)) = (parts.next(), parts.next(), parts.next()) {
            if let Some(uid) = pod_uid(uid) {
                pods.insert(uid, (ns.to_owned(), name.to_owned()));
            }
        }
    }
    pods
}

/// Container names by id, from the kubelet's `/var/log/containers/POD_NAMESPACE_CONTAINER-ID.log`
/// links.
pub fn containers_from_log_links(names: impl Iterator<Item = String>) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for n in names {
        let Some(stem) = n.strip_suffix(".log") else {
            continue;
        };
        let Some((front, id)) = stem.rsplit_once('-') else {
            continue;
        };
        if !is_container_id(id) {
            continue;
        }
        if let Some(container) = front.splitn(3, '_').nth(2) {
            out.insert(id.to_owned(), container.to_owned());
        }
    }
    out
}

/// Docker's name for a container, from `config.v2.json` ("Name": "/web").
pub fn docker_name(config_v2: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(config_v2).ok()?;
    let name = v.get("Name")?.as_str()?;
    Some(name.trim_start_matches('/').to_owned()).filter(|n| !n.is_empty())
}

/// Where the resolver looks; fixed on a real host, temporary directories in tests.
#[derive(Clone, Debug)]
pub struct Paths {
    /// The cgroup2 mount; None when this host has none (cgroup v1 only).
    pub cgroup_root: Option<PathBuf>,
    pub proc: PathBuf,
    pub pod_logs: PathBuf,
    pub container_logs: PathBuf,
    pub docker: PathBuf,
}

impl Paths {
    pub fn host() -> Self {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        Self {
            cgroup_root: crate::mountinfo::cgroup2_root(&mountinfo),
            proc: "/proc".into(),
            pod_logs: "/var/log/pods".into(),
            container_logs: "/var/log/containers".into(),
            docker: "/var/lib/docker/containers".into(),
        }
    }
}

/// Cgroup id -> workload, cached. Bounded: at most [`Resolver::MAX_CACHED`] answers (the cache is
/// emptied when full), and the inode index of the cgroup tree at most [`Resolver::MAX_INDEXED`]
/// directories.
pub struct Resolver {
    paths: Paths,
    cache: HashMap<u64, Option<Arc<Workload>>>,
    index: HashMap<u64, String>,
    indexed_at: Option<Instant>,
    names_at: Option<Instant>,
    pods: HashMap<String, (String, String)>,
    container_names: HashMap<String, String>,
}

impl Resolver {
    pub const MAX_CACHED: usize = 4096;
    pub const MAX_INDEXED: usize = 100_000;
    const REFRESH: Duration = Duration::from_secs(1);

    pub fn new(paths: Paths) -> Self {
        Self {
            paths,
            cache: HashMap::new(),
            index: HashMap::new(),
            indexed_at: None,
            names_at: None,
            pods: HashMap::new(),
            container_names: HashMap::new(),
        }
    }

    /// The workload of cgroup `id` (None when it cannot be found: cgroup v1, or the cgroup is gone).
    /// `pid`: the process that was in it, tried first.
    pub fn resolve(&mut self, id: u64, pid: u32) -> Option<Arc<Workload>> {
        if id == 0 {
            return None;
        }
        if let Some(hit) = self.cache.get(&id) {
            return hit.clone();
        }
        let found = self
            .path_of(id, pid)
            .map(|path| Arc::new(self.workload(path)));
        // A miss is remembered only once the tree was searched for it.
        if found.is_some() || self.indexed_at.is_some() {
            if self.cache.len() >= Self::MAX_CACHED {
                self.cache.clear();
            }
            self.cache.insert(id, found.clone());
        }
        found
    }

    fn path_of(&mut self, id: u64, pid: u32) -> Option<String> {
        let root = self.paths.cgroup_root.clone()?;
        if let Ok(text) = std::fs::read_to_string(self.paths.proc.join(format!("{pid}/cgroup"))) {
            if let Some(path) = unified_line(&text) {
                let path = path.trim_end_matches(" (deleted)");
                if inode(&root.join(path.trim_start_matches('/'))) == Some(id) {
                    return Some(normalize(path));
                }
            }
        }
        if let Some(p) = self.index.get(&id) {
            return Some(p.clone());
        }
        if self.indexed_at.is_some_and(|t| t.elapsed() < Self::REFRESH) {
            return None;
        }
        self.index.clear();
        walk(&root, &root, &mut self.index, Self::MAX_INDEXED);
        self.indexed_at = Some(Instant::now());
        self.index.get(&id).cloned()
    }

    fn workload(&mut self, cgroup: String) -> Workload {
        let parsed = parse(&cgroup);
        let mut w = Workload {
            cgroup,
            container: parsed.container_id.map(|id| Container {
                runtime: parsed.runtime,
                id,
                name: None,
            }),
            pod: parsed.pod_uid.map(|uid| Pod {
                uid,
                qos: parsed.qos.unwrap_or("guaranteed"),
                namespace: None,
                name: None,
            }),
        };
        if let Some(pod) = &mut w.pod {
            self.refresh_names(|s| !s.pods.contains_key(&pod.uid));
            if let Some((ns, name)) = self.pods.get(&pod.uid) {
                pod.namespace = Some(ns.clone());
                pod.name = Some(name.clone());
            }
        }
        if let Some(c) = &mut w.container {
            if w.pod.is_some() {
                self.refresh_names(|s| !s.container_names.contains_key(&c.id));
                c.name = self.container_names.get(&c.id).cloned();
            } else if c.runtime == Some("docker") {
                c.name =
                    std::fs::read_to_string(self.paths.docker.join(&c.id).join("config.v2.json"))
                        .ok()
                        .and_then(|t| docker_name(&t));
            }
        }
        w
    }

    /// Rereads the kubelet's log directories when `missing` says the answer is not known yet, at
    /// most once a second.
    fn refresh_names(&mut self, missing: impl Fn(&Self) -> bool) {
        if !missing(self) || self.names_at.is_some_and(|t| t.elapsed() < Self::REFRESH) {
            return;
        }
        self.names_at = Some(Instant::now());
        self.pods = pods_from_log_dirs(dir_names(&self.paths.pod_logs));
        self.container_names = containers_from_log_links(dir_names(&self.paths.container_logs));
    }
}

fn dir_names(dir: &Path) -> impl Iterator<Item = String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
}

fn inode(p: &Path) -> Option<u64> {
    std::fs::metadata(p).ok().map(|m| m.ino())
}

fn normalize(path: &str) -> String {
    if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    }
}

/// Indexes every directory under `dir` by inode, as a path relative to `root`.
fn walk(root: &Path, dir: &Path, index: &mut HashMap<u64, String>, max: usize) {
    if index.len() >= max {
        return;
    }
    if let Some(ino) = inode(dir) {
        let rel = dir.strip_prefix(root).unwrap_or(dir);
        index.insert(ino, normalize(&rel.to_string_lossy()));
    }
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            walk(root, &entry.path(), index, max);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0bc5eac79e3ae7a0c2651f14722aa10fa333eb2325c2ca97da33aa284cda81b0";
    const ID2: &str = "8b5e81c1e8f2e6b0c9e4f1a2d3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6";

    fn check(
        path: &str,
        runtime: Option<&str>,
        id: Option<&str>,
        uid: Option<&str>,
        qos: Option<&str>,
    ) {
        let p = parse(path);
        assert_eq!(p.runtime, runtime, "runtime of {path}");
        assert_eq!(p.container_id.as_deref(), id, "id of {path}");
        assert_eq!(p.pod_uid.as_deref(), uid, "pod of {path}");
        assert_eq!(p.qos, qos, "qos of {path}");
    }

    #[test]
    fn docker_layouts() {
        // systemd cgroup driver (Debian's and most distributions' default).
        check(
            &format!("/system.slice/docker-{ID}.scope"),
            Some("docker"),
            Some(ID),
            None,
            None,
        );
        // cgroupfs driver.
        check(
            &format!("/docker/{ID}"),
            Some("docker"),
            Some(ID),
            None,
            None,
        );
        // A container running systemd inside: its own sub-cgroups still name it.
        check(
            &format!("/system.slice/docker-{ID}.scope/init.scope"),
            Some("docker"),
            Some(ID),
            None,
            None,
        );
        // Not containers.
        check("/system.slice/docker.service", None, None, None, None);
        check(
            "/user.slice/user-1000.slice/session-3.scope",
            None,
            None,
            None,
            None,
        );
        check("/", None, None, None, None);
    }

    #[test]
    fn containerd_and_podman_layouts() {
        check(
            &format!("/system.slice/nerdctl-{ID}.scope"),
            Some("containerd"),
            Some(ID),
            None,
            None,
        );
        check(
            &format!("/machine.slice/libpod-{ID}.scope"),
            Some("podman"),
            Some(ID),
            None,
            None,
        );
        check(
            &format!(
                "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope/container"
            ),
            Some("podman"),
            Some(ID),
            None,
            None,
        );
        check(
            &format!("/machine.slice/libpod-conmon-{ID}.scope"),
            None,
            None,
            None,
            None,
        );
    }

    #[test]
    fn kubelet_systemd_driver() {
        // containerd, burstable.
        check(
            &format!(
                "/kubepods.slice/kubepods-burstable.slice/\
                 kubepods-burstable-pod0b7632a2_a56e_4278_987a_22de18008dbe.slice/cri-containerd-{ID}.scope"
            ),
            Some("containerd"),
            Some(ID),
            Some("0b7632a2-a56e-4278-987a-22de18008dbe"),
            Some("burstable"),
        );
        // CRI-O, best effort.
        check(
            &format!(
                "/kubepods.slice/kubepods-besteffort.slice/\
                 kubepods-besteffort-pod729d2f46_480d_4796_a76c_e227e2671d31.slice/crio-{ID}.scope"
            ),
            Some("cri-o"),
            Some(ID),
            Some("729d2f46-480d-4796-a76c-e227e2671d31"),
            Some("besteffort"),
        );
        // CRI-O's monitor: the pod, but not a container.
        check(
            &format!(
                "/kubepods.slice/kubepods-burstable.slice/\
                 kubepods-burstable-pod0b7632a2_a56e_4278_987a_22de18008dbe.slice/crio-conmon-{ID}.scope"
            ),
            None,
            None,
            Some("0b7632a2-a56e-4278-987a-22de18008dbe"),
            Some("burstable"),
        );
        // Guaranteed pods hang directly off kubepods.slice.
        check(
            &format!(
                "/kubepods.slice/kubepods-podd80f4a0e_576f_47a8_a0cf_69dc23dc1980.slice/\
                 cri-containerd-{ID}.scope"
            ),
            Some("containerd"),
            Some(ID),
            Some("d80f4a0e-576f-47a8-a0cf-69dc23dc1980"),
            Some("guaranteed"),
        );
        // cri-dockerd.
        check(
            &format!(
                "/kubepods.slice/kubepods-besteffort.slice/\
                 kubepods-besteffort-pod729d2f46_480d_4796_a76c_e227e2671d31.slice/docker-{ID}.scope"
            ),
            Some("docker"),
            Some(ID),
            Some("729d2f46-480d-4796-a76c-e227e2671d31"),
            Some("besteffort"),
        );
        // kind: the kubelet's cgroup root is kubelet.slice.
        check(
            &format!(
                "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/\
                 kubelet-kubepods-besteffort-pod729d2f46_480d_4796_a76c_e227e2671d31.slice/\
                 cri-containerd-{ID}.scope"
            ),
            Some("containerd"),
            Some(ID),
            Some("729d2f46-480d-4796-a76c-e227e2671d31"),
            Some("besteffort"),
        );
        // The pause container's pod slice itself, and the QoS slices: no pod or a pod only.
        check(
            "/kubepods.slice/kubepods-burstable.slice",
            None,
            None,
            None,
            None,
        );
        // A static pod's UID is a 32-digit hash.
        check(
            &format!(
                "/kubepods.slice/kubepods-burstable.slice/\
                 kubepods-burstable-pod5d7e3c7b41c9f3b0e2a8c6d4f1b3a5c7.slice/cri-containerd-{ID}.scope"
            ),
            Some("containerd"),
            Some(ID),
            Some("5d7e3c7b41c9f3b0e2a8c6d4f1b3a5c7"),
            Some("burstable"),
        );
    }

    #[test]
    fn kubelet_cgroupfs_driver() {
        check(
            &format!("/kubepods/burstable/pod0b7632a2-a56e-4278-987a-22de18008dbe/{ID}"),
            None,
            Some(ID),
            Some("0b7632a2-a56e-4278-987a-22de18008dbe"),
            Some("burstable"),
        );
        check(
            &format!("/kubepods/besteffort/pod729d2f46-480d-4796-a76c-e227e2671d31/{ID2}"),
            None,
            Some(ID2),
            Some("729d2f46-480d-4796-a76c-e227e2671d31"),
            Some("besteffort"),
        );
        check(
            &format!("/kubepods/podd80f4a0e-576f-47a8-a0cf-69dc23dc1980/{ID}"),
            None,
            Some(ID),
            Some("d80f4a0e-576f-47a8-a0cf-69dc23dc1980"),
            Some("guaranteed"),
        );
    }

    #[test]
    fn names_from_kubelet_logs_and_docker() {
        let pods = pods_from_log_dirs(
            [
                "kube-system_coredns-5d78c9869d-8x7kq_0b7632a2-a56e-4278-987a-22de18008dbe",
                "shop_web-0_729d2f46-480d-4796-a76c-e227e2671d31",
                "garbage",
            ]
            .into_iter()
            .map(String::from),
        );
        assert_eq!(
            pods["0b7632a2-a56e-4278-987a-22de18008dbe"],
            (
                "kube-system".to_owned(),
                "coredns-5d78c9869d-8x7kq".to_owned()
            )
        );
        assert_eq!(pods.len(), 2);
        let containers = containers_from_log_links(
            [
                format!("web-0_shop_nginx-{ID}.log"),
                "web-0_shop_x-123.log".into(),
            ]
            .into_iter(),
        );
        assert_eq!(containers[ID], "nginx");
        assert_eq!(containers.len(), 1);
        assert_eq!(
            docker_name(r#"{"ID":"x","Name":"/web"}"#).as_deref(),
            Some("web")
        );
        assert_eq!(docker_name("not json"), None);
    }

    /// A resolver over a made-up host: a cgroup tree with a kubelet layout, kubelet log
    /// directories, and no process (so the tree index is what finds the id).
    #[test]
    fn resolves_ids_through_the_tree_and_names_pods() {
        let tmp = std::env::temp_dir().join(format!("nl-cgroup-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let rel = format!(
            "kubepods.slice/kubepods-burstable.slice/\
             kubepods-burstable-pod0b7632a2_a56e_4278_987a_22de18008dbe.slice/cri-containerd-{ID}.scope"
        );
        let cg = tmp.join("cgroup");
        std::fs::create_dir_all(cg.join(&rel)).unwrap();
        std::fs::create_dir_all(tmp.join("pods/shop_web-0_0b7632a2-a56e-4278-987a-22de18008dbe"))
            .unwrap();
        std::fs::create_dir_all(tmp.join("containers")).unwrap();
        std::fs::write(
            tmp.join(format!("containers/web-0_shop_nginx-{ID}.log")),
            "",
        )
        .unwrap();
        let id = inode(&cg.join(&rel)).unwrap();
        let mut r = Resolver::new(Paths {
            cgroup_root: Some(cg.clone()),
            proc: tmp.join("proc"),
            pod_logs: tmp.join("pods"),
            container_logs: tmp.join("containers"),
            docker: tmp.join("docker"),
        });
        let w = r.resolve(id, 1).expect("found by inode");
        assert_eq!(w.cgroup, format!("/{rel}"));
        let c = w.container.as_ref().unwrap();
        assert_eq!(
            (c.runtime, c.id.as_str(), c.name.as_deref()),
            (Some("containerd"), ID, Some("nginx"))
        );
        let p = w.pod.as_ref().unwrap();
        assert_eq!(p.namespace.as_deref(), Some("shop"));
        assert_eq!(p.name.as_deref(), Some("web-0"));
        assert_eq!(p.qos, "burstable");
        std::fs::remove_dir_all(tmp.join("pods")).unwrap();
        assert_eq!(r.resolve(id, 1), Some(w), "answered from the cache");
        assert_eq!(r.resolve(12345, 1), None, "an unknown id");
        let _ = std::fs::remove_dir_all(&tmp);
    }
}
