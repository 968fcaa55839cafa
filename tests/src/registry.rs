//! `Registry`: Debian's `docker-registry` (distribution v2) on a free 127.0.0.1 port, with its
//! storage in a temporary directory and, optionally, htpasswd authentication. Docker treats
//! 127.0.0.0/8 registries as insecure by default, so no TLS is needed; nothing leaves
//! loopback. Killed and removed on drop.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::wait::wait_until_blocking;

const BINARY: &str = "/usr/bin/docker-registry";
const START_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Registry {
    dir: tempfile::TempDir,
    child: Child,
    port: u16,
}

/// Credentials of an authenticating registry.
#[derive(Debug, Clone)]
pub struct Login {
    pub username: String,
    pub password: String,
}

impl Registry {
    /// A registry open to everyone.
    pub fn start() -> Registry {
        Self::start_with(None)
    }

    /// A registry that demands `login` (HTTP basic auth against an htpasswd file).
    pub fn start_with(login: Option<&Login>) -> Registry {
        assert!(
            std::path::Path::new(BINARY).exists(),
            "{BINARY} is missing: run `bash contrib/setup.sh` (package docker-registry)"
        );
        let dir = tempfile::tempdir().expect("registry directory");
        let auth = match login {
            Some(login) => {
                let hash = bcrypt::hash(&login.password, 5).expect("bcrypt");
                let htpasswd = dir.path().join("htpasswd");
                std::fs::write(&htpasswd, format!("{}:{hash}\n", login.username))
                    .expect("write htpasswd");
                format!(
                    "auth:\n  htpasswd:\n    realm: dockpod-test\n    path: {}\n",
                    htpasswd.display()
                )
            }
            None => String::new(),
        };
        let config = format!(
            // Port 0: the registry binds a free port itself and logs it (at level info).
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:0\n{auth}",
            dir.path().join("data").display()
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("write registry config");
        let log = File::create(dir.path().join("registry.log")).expect("registry log");
        let err = log.try_clone().expect("registry log");
        let child = Command::new(BINARY)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .expect("spawning docker-registry");
        let mut registry = Registry {
            dir,
            child,
            port: 0,
        };
        let port = wait_until_blocking("the registry to listen", START_TIMEOUT, || {
            if let Ok(Some(status)) = registry.child.try_wait() {
                panic!("docker-registry exited with {status}:\n{}", registry.log());
            }
            listening_port(&registry.log())
        });
        registry.port = port.unwrap_or_else(|| {
            panic!(
                "docker-registry never said where it listens:\n{}",
                registry.log()
            )
        });
        let up = wait_until_blocking("the registry to answer", START_TIMEOUT, || {
            if let Ok(Some(status)) = registry.child.try_wait() {
                panic!("docker-registry exited with {status}:\n{}", registry.log());
            }
            registry.answers().then_some(())
        });
        assert!(
            up.is_some(),
            "docker-registry did not answer:\n{}",
            registry.log()
        );
        registry
    }

    /// `127.0.0.1:PORT`, the registry part of image references.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Whether `GET /v2/` gets an HTTP answer (200, or 401 when authenticating).
    fn answers(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let req = format!(
            "GET /v2/ HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.host()
        );
        if s.write_all(req.as_bytes()).is_err() {
            return false;
        }
        let mut head = [0u8; 12];
        s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 ")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The port of the registry's `listening on 127.0.0.1:<port>` log line.
fn listening_port(log: &str) -> Option<u16> {
    let at = log.find("listening on 127.0.0.1:")? + "listening on 127.0.0.1:".len();
    let digits: String = log[at..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// A port the test itself holds on 127.0.0.1 (bound as port 0, then read back), for a host
/// port that nothing on the host binds (CNI's portmap rewrites packets instead): while the
/// listener lives, no other process can take the port. A connection that reaches the
/// listener went past every rewriting rule.
pub fn reserved_port() -> (TcpListener, u16) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let port = listener.local_addr().expect("its address").port();
    (listener, port)
}

/// A port free on 127.0.0.1 at the time of the call, for a program that must bind the port
/// itself and cannot bind port 0 (Docker's published ports): another process may take the
/// port meanwhile, so the caller must retry with another one when the bind fails.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free loopback port")
}
