//! A real etcd (on 127.0.0.1 unless told otherwise) at free ports with a temp data dir, stopped by PID on drop.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

pub struct Etcd {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub client_port: u16,
    peer_port: u16,
    host: String,
    /// Client TLS files (ca, cert, key) when the server requires client certificates.
    tls: Option<(PathBuf, PathBuf, PathBuf)>,
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

impl Etcd {
    /// Starts etcd on 127.0.0.1 and waits until it answers.
    pub async fn start() -> Etcd {
        Etcd::start_on("127.0.0.1").await
    }

    /// Starts etcd listening on `host` (an address of the caller's namespace).
    pub async fn start_on(host: &str) -> Etcd {
        let mut e = Etcd {
            child: None,
            dir: tempfile::tempdir().unwrap(),
            client_port: free_port(),
            peer_port: free_port(),
            host: host.to_string(),
            tls: None,
        };
        e.first_spawn().await;
        e
    }

    /// Starts etcd on 127.0.0.1 serving TLS and requiring client certificates (made with the
    /// openssl CLI in the data dir). `tls_files()` gives the client's ca, cert and key.
    pub async fn start_tls() -> Etcd {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        let script = format!(
            "set -e; cd {d}
            openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.crt -days 1 -subj /CN=wtfd-ca 2>/dev/null
            for n in server client; do
              openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout $n.key -out $n.csr -subj /CN=$n 2>/dev/null
              printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n' > $n.ext
              openssl x509 -req -in $n.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out $n.crt -days 1 -extfile $n.ext 2>/dev/null
            done"
        );
        let st = Command::new("bash").args(["-c", &script]).status().unwrap();
        assert!(st.success(), "making test certificates failed");
        let p = |n: &str| dir.path().join(n);
        let mut e = Etcd {
            child: None,
            client_port: free_port(),
            peer_port: free_port(),
            host: "127.0.0.1".into(),
            tls: Some((p("ca.crt"), p("client.crt"), p("client.key"))),
            dir,
        };
        e.first_spawn().await;
        e
    }

    /// (ca, cert, key) for a TLS etcd.
    pub fn tls_files(&self) -> Option<(PathBuf, PathBuf, PathBuf)> {
        self.tls.clone()
    }

    fn connect_options(&self) -> Option<etcd_client::ConnectOptions> {
        let (ca, cert, key) = self.tls.as_ref()?;
        let tls = etcd_client::TlsOptions::new()
            .ca_certificate(etcd_client::Certificate::from_pem(std::fs::read(ca).unwrap()))
            .identity(etcd_client::Identity::from_pem(
                std::fs::read(cert).unwrap(),
                std::fs::read(key).unwrap(),
            ));
        Some(etcd_client::ConnectOptions::new().with_tls(tls))
    }

    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}:{}", self.host, self.client_port)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The first start: when a port [`free_port`] gave was taken before etcd bound it (the
    /// tests' own outgoing connections draw local ports from the same range), new ports and a
    /// fresh data dir, a few times.
    async fn first_spawn(&mut self) {
        for _ in 0..5 {
            match self.spawn().await {
                Err(log) if log.contains("address already in use") => {
                    self.client_port = free_port();
                    self.peer_port = free_port();
                    let _ = std::fs::remove_dir_all(self.data_dir());
                    let _ = std::fs::remove_file(self.dir.path().join("etcd.log"));
                }
                Err(log) => panic!("etcd did not start: {log}"),
                Ok(()) => return,
            }
        }
        panic!("etcd did not start: its ports were taken five times: {}", self.log());
    }

    /// Starts etcd on its ports and data and waits until it answers; `Err` with its log when
    /// it exits first.
    async fn spawn(&mut self) -> Result<(), String> {
        let (c, p, h) = (self.client_port, self.peer_port, self.host.clone());
        let cs = if self.tls.is_some() { "https" } else { "http" };
        let d = self.dir.path();
        let tls_args: Vec<String> = if self.tls.is_some() {
            vec![
                format!("--cert-file={}", d.join("server.crt").display()),
                format!("--key-file={}", d.join("server.key").display()),
                format!("--trusted-ca-file={}", d.join("ca.crt").display()),
                "--client-cert-auth".into(),
            ]
        } else {
            Vec::new()
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("etcd.log"))
            .unwrap();
        let child = Command::new("/usr/bin/etcd")
            .args(["--name", "t", "--data-dir"])
            .arg(self.data_dir())
            .args([
                "--listen-client-urls",
                &format!("{cs}://{h}:{c}"),
                "--advertise-client-urls",
                &format!("{cs}://{h}:{c}"),
                "--listen-peer-urls",
                &format!("http://{h}:{p}"),
                "--initial-advertise-peer-urls",
                &format!("http://{h}:{p}"),
                "--initial-cluster",
                &format!("t=http://{h}:{p}"),
            ])
            .args(&tls_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start /usr/bin/etcd");
        self.child = Some(child);
        // Wait until it serves requests.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut client) =
                etcd_client::Client::connect([self.endpoint()], self.connect_options()).await
            {
                if client.get("health-probe", None).await.is_ok() {
                    return Ok(());
                }
            }
            if self.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_some()) {
                self.child = None;
                return Err(self.log());
            }
            assert!(tokio::time::Instant::now() < deadline, "etcd did not start: {}", self.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }

    /// Stops the process (SIGTERM, then waits).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            }
            let _ = child.wait();
        }
    }

    /// Starts it again on the same ports and data.
    pub async fn restart(&mut self) {
        self.stop();
        if let Err(log) = self.spawn().await {
            panic!("etcd did not start again: {log}");
        }
    }

    pub async fn client(&self) -> etcd_client::Client {
        etcd_client::Client::connect([self.endpoint()], self.connect_options()).await.unwrap()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
