//! `redis-server` processes of a test's own, for the cases the shared Redis and cluster cannot
//! host (a master frozen with `SIGSTOP`, servers that speak only TLS): ports below the ephemeral
//! range, a scratch directory, and every process killed (woken first, if frozen) on drop.
//! Shared by the `state` and `api` suites (the latter through `#[path]`), each using a part.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct LocalRedis {
    pub nodes: Vec<(u16, Child)>,
    pub dir: PathBuf,
    /// `redis-cli` arguments that reach these servers (TLS material, when they speak TLS).
    cli: Vec<String>,
}

impl Drop for LocalRedis {
    fn drop(&mut self) {
        for (_, child) in &mut self.nodes {
            // A frozen node must be woken to die.
            let _ = Command::new("kill").arg("-CONT").arg(child.id().to_string()).status();
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A port whose cluster bus port (+10,000) is free too. Both below Linux's ephemeral range
/// (from 32,768), so no outgoing connection of a test running alongside takes one between
/// this check and the server's bind.
fn free_port_pair(taken: &[u16]) -> u16 {
    loop {
        let port = 10_000 + ((uuid::Uuid::new_v4().as_u128() & 0xffff) as u16 % 12_000);
        if taken.iter().any(|&t| t == port || t + 10_000 == port || port + 10_000 == t) {
            continue;
        }
        let ok = std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
            && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok();
        if ok {
            return port;
        }
    }
}

impl LocalRedis {
    /// A scratch directory for the servers' files (and whatever the test writes next to them).
    pub fn dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("rtgate-{name}-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Starts `n` servers in `dir`, each with `args(port)` after the common ones (the port
    /// itself is for the caller to place: `--port`, or `--port 0 --tls-port`), and waits until
    /// every one accepts connections. `cli` is what `redis-cli` needs to reach them.
    pub fn start(
        dir: PathBuf,
        n: usize,
        args: impl Fn(u16) -> Vec<String>,
        cli: Vec<String>,
    ) -> Self {
        let mut local = LocalRedis { nodes: Vec::new(), dir, cli };
        let mut ports = Vec::new();
        for _ in 0..n {
            let port = free_port_pair(&ports);
            ports.push(port);
            let child = Command::new("redis-server")
                .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
                .arg("--dir")
                .arg(&local.dir)
                .args(args(port))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server (scripts/services.sh installs it)");
            local.nodes.push((port, child));
        }
        for &port in &ports {
            let deadline = Instant::now() + Duration::from_secs(10);
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(Instant::now() < deadline, "redis-server on {port} did not start");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        local
    }

    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|(p, _)| *p).collect()
    }

    /// `redis-cli` with these servers' arguments and `args`; its output, or what it printed
    /// on failure.
    pub fn cli(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("redis-cli")
            .args(&self.cli)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            Ok(text)
        } else {
            Err(text + &String::from_utf8_lossy(&out.stderr))
        }
    }

    /// Joins every server into one cluster with `replicas` replicas per master, and waits
    /// until each one reports it ok and sees every replica.
    pub fn create_cluster(&self, replicas: usize) {
        let addrs: Vec<String> = self.ports().iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let mut args = vec!["--cluster", "create"];
        args.extend(addrs.iter().map(String::as_str));
        let replicas_arg = replicas.to_string();
        args.extend(["--cluster-replicas", &replicas_arg, "--cluster-yes"]);
        if let Err(e) = self.cli(&args) {
            panic!("redis-cli --cluster create failed: {e}");
        }
        // `cluster_state:ok` says every slot is served, not that every node has heard which
        // nodes became replicas: a test that looks for a master's replica right away found
        // it still listed as an empty master. So wait until every node sees both.
        let expected = self.ports().len() / (replicas + 1) * replicas;
        let ready = |port: &str| {
            self.cli(&["-p", port, "cluster", "info"]).is_ok_and(|i| i.contains("cluster_state:ok"))
                && self.cli(&["-p", port, "cluster", "nodes"]).is_ok_and(|nodes| {
                    let role = |l: &str| l.split(' ').nth(2).is_some_and(|f| f.contains("slave"));
                    nodes.lines().filter(|l| role(l)).count() == expected
                })
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        for port in self.ports() {
            while !ready(&port.to_string()) {
                assert!(Instant::now() < deadline, "the cluster did not become ok on {port}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Writes `bytes` to `dir/name` and returns the path as a string, for a server argument.
pub fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path.display().to_string()
}

/// A certificate authority of a test's own, a server certificate for 127.0.0.1 and a client
/// certificate, all signed by it, written as PEM files into a directory.
pub struct Pki {
    pub ca: String,
    pub server_cert: String,
    pub server_key: String,
    pub client_cert: String,
    pub client_key: String,
}

impl Pki {
    pub fn write(dir: &Path, name: &str) -> Pki {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, IsCa,
            KeyPair, KeyUsagePurpose,
        };
        // Distinct names: a leaf named like its issuer looks self-issued to OpenSSL.
        let named = |cn: &str, sans: Vec<String>| {
            let mut params = CertificateParams::new(sans).unwrap();
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, cn);
            params.distinguished_name = dn;
            params
        };
        let mut ca_params = named(&format!("rtgate test CA {name}"), Vec::new());
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        // One certificate per role; Redis also presents the server one as a client to its
        // cluster peers, so it carries no usage restriction.
        let leaf = |names: Vec<String>| {
            let key = KeyPair::generate().unwrap();
            let cert = named(&names[0], names.clone()).signed_by(&key, &ca).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) = leaf(vec!["127.0.0.1".into(), "localhost".into()]);
        let (client_cert, client_key) = leaf(vec!["rtgate-test-client".into()]);
        Pki {
            ca: write(dir, &format!("{name}-ca.pem"), ca.pem().as_bytes()),
            server_cert: write(dir, &format!("{name}-server.pem"), server_cert.as_bytes()),
            server_key: write(dir, &format!("{name}-server.key"), server_key.as_bytes()),
            client_cert: write(dir, &format!("{name}-client.pem"), client_cert.as_bytes()),
            client_key: write(dir, &format!("{name}-client.key"), client_key.as_bytes()),
        }
    }

    /// `redis-server` arguments serving TLS only, on `port`, with this PKI; clients must
    /// present a certificate when `auth_clients` says so.
    pub fn server_args(&self, port: u16, auth_clients: bool) -> Vec<String> {
        let port = port.to_string();
        let auth = if auth_clients { "yes" } else { "no" };
        [
            "--port",
            "0",
            "--tls-port",
            &port,
            "--tls-cert-file",
            &self.server_cert,
            "--tls-key-file",
            &self.server_key,
            "--tls-ca-cert-file",
            &self.ca,
            "--tls-auth-clients",
            auth,
            "--tls-replication",
            "yes",
            "--tls-cluster",
            "yes",
        ]
        .map(String::from)
        .to_vec()
    }

    /// `redis-cli` arguments reaching servers of this PKI.
    pub fn cli_args(&self) -> Vec<String> {
        ["--tls", "--cacert", &self.ca, "--cert", &self.client_cert, "--key", &self.client_key]
            .map(String::from)
            .to_vec()
    }

    /// The material rtgate is given: this CA, and the client certificate if `client`.
    pub fn rtgate(&self, client: bool) -> rtgate::state::redis_conn::RedisTls {
        let read = |p: &str| std::fs::read(p).unwrap();
        rtgate::state::redis_conn::RedisTls {
            ca: Some(read(&self.ca)),
            client: client.then(|| (read(&self.client_cert), read(&self.client_key))),
        }
    }
}
