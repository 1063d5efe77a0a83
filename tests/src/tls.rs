//! Certificates made with `openssl` for the TLS scenarios, and `openssl s_server` in a namespace.
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::Netns;

/// A fresh temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "nltest-{}-{}-{tag}",
            std::process::id(),
            crate::unique_id()
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create a temporary directory");
        TempDir(p)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `openssl ARGS` in `dir`; panics with its stderr when it fails.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const EC: [&str; 5] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
];

/// What the server's certificate looks like.
pub enum Leaf<'a> {
    /// Signed by the test CA (`ca.pem`), with subjectAltName `san`, valid between two
    /// `YYYYMMDDHHMMSSZ` dates.
    Signed {
        san: &'a str,
        not_before: &'a str,
        not_after: &'a str,
    },
    /// Self-signed, with subjectAltName `san`, valid for 30 days from now.
    SelfSigned { san: &'a str },
}

/// Makes `ca.pem`/`ca.key` (a test CA) and `leaf.pem`/`leaf.key` in `dir`. Exact dates use
/// `openssl ca -startdate/-enddate` (OpenSSL 3.0's `x509 -req` has no such options).
pub fn make_certs(dir: &Path, leaf: Leaf) {
    openssl(
        dir,
        &[
            &["req", "-x509"],
            &EC[..],
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "3650",
                "-subj",
                "/CN=netladder test CA",
            ],
        ]
        .concat(),
    );
    match leaf {
        Leaf::SelfSigned { san } => {
            let ext = format!("subjectAltName={san}");
            openssl(
                dir,
                &[
                    &["req", "-x509"],
                    &EC[..],
                    &[
                        "-keyout",
                        "leaf.key",
                        "-out",
                        "leaf.pem",
                        "-days",
                        "30",
                        "-subj",
                        "/CN=netladder self-signed",
                        "-addext",
                        &ext,
                    ],
                ]
                .concat(),
            );
        }
        Leaf::Signed {
            san,
            not_before,
            not_after,
        } => {
            openssl(
                dir,
                &[
                    &["req"],
                    &EC[..],
                    &[
                        "-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=leaf",
                    ],
                ]
                .concat(),
            );
            std::fs::write(dir.join("ext"), format!("subjectAltName={san}\n")).unwrap();
            std::fs::write(dir.join("index.txt"), "").unwrap();
            std::fs::write(dir.join("serial"), "1000\n").unwrap();
            std::fs::write(
                dir.join("ca.cnf"),
                "[ca]\ndefault_ca = test\n[test]\ndatabase = index.txt\nnew_certs_dir = .\n\
                 serial = serial\ndefault_md = sha256\npolicy = any\nunique_subject = no\n\
                 [any]\ncommonName = supplied\n",
            )
            .unwrap();
            openssl(
                dir,
                &[
                    "ca",
                    "-batch",
                    "-notext",
                    "-config",
                    "ca.cnf",
                    "-cert",
                    "ca.pem",
                    "-keyfile",
                    "ca.key",
                    "-in",
                    "leaf.csr",
                    "-out",
                    "leaf.pem",
                    "-startdate",
                    not_before,
                    "-enddate",
                    not_after,
                    "-extfile",
                    "ext",
                ],
            );
        }
    }
}

/// A helper process, killed and reaped on drop (also when a test panics).
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `openssl s_server` in `ns` on `addr:port` with `leaf.pem` from `dir` (and `extra` options);
/// waits until it listens.
pub fn tls_server(ns: &Netns, dir: &Path, addr: &str, port: u16, extra: &[&str]) -> Running {
    let child = ns
        .command("openssl")
        .args(["s_server", "-quiet", "-accept"])
        .arg(format!("{addr}:{port}"))
        .args(["-cert", "leaf.pem", "-key", "leaf.key"])
        .args(extra)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_server");
    let child = Running(child);
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        if ns
            .sh(&format!("ss -Hltn 'sport = :{port}'"))
            .is_ok_and(|o| !o.trim().is_empty())
        {
            return child;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("openssl s_server did not listen within 10 s");
}

/// Whether `program` can be run here (found on PATH).
pub fn have_program(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
}
