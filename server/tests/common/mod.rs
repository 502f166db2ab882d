//! Test harness: runs the real `thyme` binary on free loopback ports with a
//! temporary data directory.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Server {
    pub child: Option<Child>,
    pub pg_port: u16,
    pub control_port: u16,
    pub query_port: u16,
    pub data: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl Server {
    /// Start a server on a fresh data directory.
    pub fn start() -> Server {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let mut s = Server::start_on(&data);
        s._tmp = Some(tmp);
        s
    }

    /// Start a server on a fresh data directory with extra flags and
    /// environment.
    #[allow(dead_code)]
    pub fn start_with(args: &[&str], env: &[(&str, &str)]) -> Server {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let mut s = Server::spawn(&data, args, env);
        s._tmp = Some(tmp);
        s
    }

    /// Start a server on `data` (which may hold a previous server's state).
    pub fn start_on(data: &Path) -> Server {
        Server::spawn(data, &[], &[])
    }

    /// Start a server on free ports; another process can take a port
    /// between `free_port` and the server's bind, so a server that exits
    /// before it listens is started again on other ports.
    fn spawn(data: &Path, args: &[&str], env: &[(&str, &str)]) -> Server {
        for _ in 0..5 {
            if let Some(s) = Server::try_spawn(data, args, env) {
                return s;
            }
        }
        panic!("thyme did not start (5 attempts)");
    }

    fn try_spawn(data: &Path, args: &[&str], env: &[(&str, &str)]) -> Option<Server> {
        let pg_port = free_port();
        let control_port = free_port();
        let query_port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_thyme"))
            .args([
                "serve",
                "--data",
                data.to_str().unwrap(),
                "--pg-addr",
                &format!("127.0.0.1:{pg_port}"),
                "--control-addr",
                &format!("127.0.0.1:{control_port}"),
                "--query-addr",
                &format!("127.0.0.1:{query_port}"),
            ])
            .args(args)
            .envs(env.iter().copied())
            .env("THYME_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start thyme");
        let mut s = Server {
            child: Some(child),
            pg_port,
            control_port,
            query_port,
            data: data.to_path_buf(),
            _tmp: None,
        };
        s.wait_ready().then_some(s)
    }

    /// Wait until every listener accepts; `false` if the server exited.
    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let ports = [self.pg_port, self.control_port, self.query_port];
            if ports
                .iter()
                .all(|p| std::net::TcpStream::connect(("127.0.0.1", *p)).is_ok())
            {
                return true;
            }
            if let Some(c) = self.child.as_mut() {
                if c.try_wait().ok().flatten().is_some() {
                    self.child = None;
                    return false;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("thyme did not start listening on {}", self.pg_port);
    }

    pub fn conn_str(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=thyme dbname=thyme",
            self.pg_port
        )
    }

    pub async fn connect(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.conn_str(), tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        client
    }

    /// `kill -9` the server (no clean shutdown).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGTERM and wait for a clean exit; returns the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        let pid = c.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                return st;
            }
            if Instant::now() > deadline {
                c.kill().unwrap();
                panic!("thyme did not stop on SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A plain HTTP/1.0 GET on loopback: (status code, body).
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

/// A random generator seeded from `THYME_SEED` (or randomly), printing the
/// seed so a failing run can be replayed.
pub fn seeded_rng(test: &str) -> (u64, rand::rngs::StdRng) {
    use rand::SeedableRng;
    let seed: u64 = std::env::var("THYME_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("{test}: THYME_SEED={seed}");
    (seed, rand::rngs::StdRng::seed_from_u64(seed))
}
