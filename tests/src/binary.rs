//! The `edgexds` binary on free loopback ports, for tests that run the real thing: started on
//! a manifests directory with extra flags and environment, read through its admin port and
//! `/proc`. Shared by this crate and by `control-plane/tests` (which include this file), so
//! it uses only std.
//!
//! The binary is `EDGEXDS_BIN` when set (to measure another build, e.g. "before"), else the
//! one Cargo built for the package's own tests, else the one beside this test binary
//! (`target/<profile>/edgexds`, which `cargo test --workspace` builds).
#![allow(dead_code)] // each test binary uses its own part

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The `edgexds` binary these tests run.
pub fn edgexds_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("EDGEXDS_BIN") {
        return PathBuf::from(path);
    }
    if let Some(path) = option_env!("CARGO_BIN_EXE_edgexds") {
        return PathBuf::from(path);
    }
    sibling("edgexds")
}

/// A binary of this crate (`test-upstream`, say), beside the running test binary's
/// directory, as `cargo test --workspace` builds it.
pub fn sibling(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let dir = exe.parent().expect("a directory");
    // target/<profile>/deps/<test>: binaries are one level up; a binary runs from target/<profile>.
    let candidates = [dir.join(name), dir.parent().map(|d| d.join(name)).unwrap_or_default()];
    candidates.into_iter().find(|path| path.is_file()).unwrap_or_else(|| {
        panic!("no {name} binary beside {}: run `cargo build -p edgexds-tests --bins`", exe.display())
    })
}

pub struct Server {
    pub child: Child,
    pub xds: SocketAddr,
    pub admin: SocketAddr,
    pub debug: SocketAddr,
}

/// The three ports the binary listens on.
#[derive(Clone, Copy, Debug)]
pub struct Ports {
    pub xds: SocketAddr,
    pub admin: SocketAddr,
    pub debug: SocketAddr,
}

impl Ports {
    /// Three free loopback ports.
    pub fn free() -> Self {
        // Held together until all three are known, so the kernel cannot hand one out twice.
        let held: [TcpListener; 3] = std::array::from_fn(|_| TcpListener::bind("127.0.0.1:0").unwrap());
        let [xds, admin, debug] = held.each_ref().map(|l| l.local_addr().unwrap());
        Self { xds, admin, debug }
    }
}

impl Server {
    /// Starts the binary on `dir` with `extra` flags; its log goes to `stderr`.
    pub fn start(dir: &Path, extra: &[&str], stderr: Stdio) -> Self {
        Self::start_with_env(dir, extra, &[], stderr)
    }

    /// Same, with `env` set for it (e.g. `KUBECONFIG`, or limits as their variables, which
    /// a build without them ignores).
    pub fn start_with_env(dir: &Path, extra: &[&str], env: &[(&str, &str)], stderr: Stdio) -> Self {
        let dir = dir.display().to_string();
        let args = [&["--manifests", dir.as_str()][..], extra].concat();
        Self::launch(Ports::free(), &args, env, stderr)
    }

    /// `edgexds serve` on `ports` with `args` and `env`, once it is ready.
    pub fn launch(ports: Ports, args: &[&str], env: &[(&str, &str)], stderr: Stdio) -> Self {
        let Ports { xds, admin, debug } = ports;
        let child = Command::new(edgexds_binary())
            .arg("serve")
            .args(["--xds-addr", &xds.to_string(), "--admin-addr", &admin.to_string()])
            .args(["--debug-addr", &debug.to_string()])
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("edgexds runs");
        let mut server = Self { child, xds, admin, debug };
        // A server that exits on the way (a port taken meanwhile, a bad flag) says so at
        // once, rather than as a minute's wait for readiness.
        let deadline = Instant::now() + Duration::from_secs(60);
        while http_get(admin, "/readyz").is_none_or(|(status, _)| status != 200) {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("edgexds exited before it was ready ({status}); its log says why");
            }
            assert!(Instant::now() < deadline, "timed out waiting until ready");
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    /// The ports it listens on, for a replacement to take.
    pub fn ports(&self) -> Ports {
        Ports { xds: self.xds, admin: self.admin, debug: self.debug }
    }

    /// Stops it as Kubernetes stops a pod (SIGTERM) and waits until it has exited.
    pub fn terminate(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }

    /// Polls `done` until it holds (an event the test waits for), at most 20 s.
    pub fn wait_until(&self, what: &str, done: impl FnMut() -> bool) {
        self.wait_until_within(Duration::from_secs(20), what, done);
    }

    pub fn wait_until_within(&self, limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + limit;
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The sum of every sample of `name` (a series name or its prefix with labels).
    pub fn metric(&self, name: &str) -> f64 {
        let (_, text) = http_get(self.admin, "/metrics").expect("metrics answer");
        text.lines().filter(|l| l.starts_with(name)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
    }

    /// User plus system CPU time so far, in clock ticks.
    pub fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        let fields: Vec<&str> = stat.rsplit(')').next().unwrap().split_whitespace().collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    }

    /// Resident memory now, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").ok()?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).ok()?;
    let status = reply.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, reply.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned()))
}
