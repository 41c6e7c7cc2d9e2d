//! Redis over TLS: a throwaway PKI (a CA, a server certificate for 127.0.0.1 and a client
//! certificate, made with the openssl CLI) and a `redis-server` listening only on a TLS port that
//! requires a client certificate.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use tempfile::TempDir;

use super::{
    Killed, free_port,
    redis::{cli, server_args, spawn, until},
};

/// A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA.
pub struct Pki {
    pub dir: TempDir,
}

fn openssl(dir: &Path, args: &[&str]) {
    let st = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl must be installed");
    assert!(st.success(), "openssl {args:?} failed");
}

impl Pki {
    /// A fresh CA named `name` with a server and a client certificate.
    pub fn new(name: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        let mut ca = vec!["req", "-x509"];
        ca.extend(ec);
        ca.extend(["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj"]);
        let subj = format!("/CN={name}");
        ca.push(&subj);
        ca.extend(["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
        openssl(d, &ca);
        for (who, ext) in [
            ("server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"),
            ("client", "extendedKeyUsage=clientAuth\n"),
        ] {
            std::fs::write(d.join(format!("{who}.ext")), ext).expect("write ext");
            let (key, csr, pem, extf) =
                (format!("{who}.key"), format!("{who}.csr"), format!("{who}.pem"), format!("{who}.ext"));
            let mut req = vec!["req"];
            req.extend(ec);
            let subj = format!("/CN={who}");
            req.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
            openssl(d, &req);
            openssl(
                d,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-out",
                    &pem,
                    "-days",
                    "2",
                    "-extfile",
                    &extf,
                ],
            );
        }
        Self { dir }
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// `redis-cli` arguments for this PKI.
    pub fn cli_args(&self) -> Vec<String> {
        let p = |f: &str| self.path(f).display().to_string();
        vec![
            "--tls".into(),
            "--cacert".into(),
            p("ca.pem"),
            "--cert".into(),
            p("client.pem"),
            "--key".into(),
            p("client.key"),
        ]
    }
}

/// `redis-server` listening only on a TLS port that requires a client certificate.
pub struct TlsRedis {
    pub port: u16,
    _proc: Killed,
    _dir: TempDir,
}

impl TlsRedis {
    pub async fn start(pki: &Pki) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let mut args = server_args(0, dir.path());
        let p = |f: &str| pki.path(f).display().to_string();
        args.extend([
            "--tls-port".to_string(),
            port.to_string(),
            "--tls-cert-file".into(),
            p("server.pem"),
            "--tls-key-file".into(),
            p("server.key"),
            "--tls-ca-cert-file".into(),
            p("ca.pem"),
            "--tls-auth-clients".into(),
            "yes".into(),
        ]);
        let proc = spawn("redis-server", &args);
        let tls = pki.cli_args();
        until("the TLS redis-server", || cli(port, &tls, &["PING"]) == "PONG").await;
        Self { port, _proc: proc, _dir: dir }
    }
}
