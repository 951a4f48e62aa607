//! Runs a test again in a mount namespace of its own (`unshare`, util-linux; needs root) where
//! `/etc/hosts` names one host on loopback and `/etc/resolv.conf` points at a name server that
//! never answers (a UDP socket the test binds on a loopback address), so lookups of any other
//! name hang as they do when the network went away. The machine's own files are never touched:
//! the bind mounts live and die with the namespace, and the run in it dies with the test process
//! ([`super::support::dies_with_us`]).

use std::time::Duration;

/// The namespace a test runs itself again in.
pub struct SilentDns<'a> {
    /// Set in the run inside the namespace, so that run does the test's work.
    pub child_env: &'a str,
    /// The one name `/etc/hosts` resolves there (to 127.0.0.1).
    pub name: &'a str,
    /// Where the silent name server listens.
    pub server: &'a str,
    /// The resolver's own timeout for one query.
    pub resolver_timeout: Duration,
    /// The test to run there (its full name, run with `--exact`).
    pub test: &'a str,
}

impl SilentDns<'_> {
    /// Whether this is the run inside the namespace.
    pub fn inside(&self) -> bool {
        std::env::var_os(self.child_env).is_some()
    }

    /// Runs the test again inside the namespace and asserts that it passed there.
    pub fn run_inside(&self) {
        super::support::require("unshare", "util-linux");
        super::support::require("mount", "util-linux");
        let dir = tempfile::tempdir().unwrap();
        let hosts = dir.path().join("hosts");
        std::fs::write(&hosts, format!("127.0.0.1 localhost\n127.0.0.1 {}\n", self.name)).unwrap();
        let resolv = dir.path().join("resolv.conf");
        std::fs::write(
            &resolv,
            format!(
                "nameserver {}\noptions timeout:{} attempts:1\n",
                self.server,
                self.resolver_timeout.as_secs()
            ),
        )
        .unwrap();
        let out = super::support::dies_with_us("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(r#"mount --bind "$1" /etc/hosts && mount --bind "$2" /etc/resolv.conf && exec "$3" --exact "$4" --nocapture"#)
            .arg("sh")
            .arg(&hosts)
            .arg(&resolv)
            .arg(std::env::current_exe().unwrap())
            .arg(self.test)
            .env(self.child_env, "1")
            .output()
            .unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "the run in its own mount namespace failed (root is needed for unshare --mount):\n{stdout}\n{stderr}"
        );
    }
}
