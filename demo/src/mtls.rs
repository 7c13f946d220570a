//! The demo's mTLS service, `ledger`: certificates made at start by `legate-cp certs init`
//! (a development CA, and leaves for `ledger` and `checkout`), one upstream instance
//! (`ledger-1`, the fault-injecting upstream terminating TLS and requiring a client certificate
//! from that CA), and the YAML that makes it a service of the demo's ambassador.
//!
//! The YAML the walkthrough edits (`examples/services.yaml`) cannot name the certificates: they
//! exist only while the demo runs, and paths in `tls` are read when the file loads. So the
//! control plane serves a copy, `<demo dir>/served/services.yaml`, next to `certs/`: the file
//! as written (ports shifted by `--port-offset`), `ledger` added to the `checkout`
//! ambassador's `services` list, and a second YAML document defining `ledger` with `tls` paths
//! relative to the copy. Every line of the original keeps its number, so an error in an edit
//! is reported at the line the user wrote.

use crate::topology::{AMBASSADOR, loopback, shift_ports};
use anyhow::Context as _;
use legate_control_plane::certs::{InitOptions, init};
use legate_test_upstream::{TlsSettings, Upstream};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The mTLS service.
pub const SERVICE: &str = "ledger";
/// Its instance (answered in `x-upstream-instance`).
pub const INSTANCE: &str = "ledger-1";
/// Its port on 127.0.0.1 (before `--port-offset`).
pub const PORT: u16 = 9031;
/// The SPIFFE trust domain of the demo certificates.
pub const TRUST_DOMAIN: &str = "example.org";
/// What the banner says about the instance.
pub const ROLE: &str = "mTLS: client certificates from the demo CA required";

/// The certificates of one demo run.
#[derive(Clone, Debug)]
pub struct Certs {
    /// The directory `certs init` wrote (`ca.pem`, `ledger.pem/.key`, `checkout.pem/.key`).
    pub dir: PathBuf,
}

impl Certs {
    /// Runs `legate-cp certs init --out <dir> --trust-domain example.org --service ledger
    /// --service checkout`.
    pub fn generate(dir: &Path) -> anyhow::Result<Certs> {
        init(&InitOptions::new(dir, TRUST_DOMAIN, &[SERVICE, AMBASSADOR]))
            .with_context(|| format!("legate-cp certs init --out {}", dir.display()))?;
        Ok(Certs {
            dir: dir.to_path_buf(),
        })
    }

    /// Starts `ledger-1` on `127.0.0.1:(PORT + offset)`: TLS with the `ledger` certificate,
    /// client certificates from the demo CA required.
    pub async fn start_upstream(&self, offset: u16) -> anyhow::Result<Upstream> {
        let addr = addr(offset);
        let tls = TlsSettings::new(self.dir.join("ledger.pem"), self.dir.join("ledger.key"))
            .client_ca(self.dir.join("ca.pem"));
        Upstream::builder(INSTANCE)
            .addr(addr)
            .tls(tls)
            .start()
            .await
            .with_context(|| {
                format!(
                    "upstream {INSTANCE}: binding {addr} (another demo running? --port-offset N \
                     moves every port)"
                )
            })
    }
}

/// `ledger-1`'s address after `offset`.
pub fn addr(offset: u16) -> SocketAddr {
    loopback(PORT, offset)
}

/// The YAML document defining `ledger` (paths relative to the served copy, whose `certs/`
/// holds the certificates).
fn ledger_document(offset: u16) -> String {
    format!(
        "# Added by legate-demo: the mTLS service. Its certificates were made at demo start by\n\
         # `legate-cp certs init --out certs --service {SERVICE} --service {AMBASSADOR}`.\n\
         services:\n  \
           {SERVICE}:\n    \
             endpoints: [{addr}]\n    \
             tls:\n      \
               ca: certs/ca.pem\n      \
               cert: certs/{AMBASSADOR}.pem\n      \
               key: certs/{AMBASSADOR}.key\n      \
               sni: {SERVICE}\n      \
               verify_san: [spiffe://{TRUST_DOMAIN}/ns/default/sa/{SERVICE}]\n",
        addr = addr(offset)
    )
}

/// The served copy of `text`: ports shifted by `offset`, `ledger` allowed for the `checkout`
/// ambassador, and the `ledger` service appended as a second document.
pub fn served_copy(text: &str, offset: u16) -> String {
    let shifted = shift_ports(text, offset);
    let mut out = allow_ledger(&shifted);
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str("---\n");
    out.push_str(&ledger_document(offset));
    out
}

/// Adds `ledger` to the `services:` list of the `checkout` ambassador, when it has one
/// written as a flow list (`services: [a, b]`) or a block list (`- a` lines); without a list
/// the ambassador may call every service already. The line count does not change for a flow
/// list; a block list gets one more line after the list's first item.
fn allow_ledger(text: &str) -> String {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let key = |l: &str, k: &str| {
        let t = l.trim_start();
        t.strip_prefix(k)
            .is_some_and(|r| r.trim_start().starts_with(':'))
    };
    let Some(ambassadors) = lines
        .iter()
        .position(|l| indent(l) == 0 && key(l, "ambassadors"))
    else {
        return text.to_owned();
    };
    let block_end = |from: usize, level: usize| {
        (from..lines.len())
            .find(|&i| {
                let t = lines[i].trim();
                !t.is_empty() && !t.starts_with('#') && indent(lines[i]) <= level
            })
            .unwrap_or(lines.len())
    };
    let end = block_end(ambassadors + 1, 0);
    let Some(checkout) = (ambassadors + 1..end).find(|&i| key(lines[i], AMBASSADOR)) else {
        return text.to_owned();
    };
    let level = indent(lines[checkout]);
    let end = block_end(checkout + 1, level);
    let Some(list) = (checkout + 1..end).find(|&i| key(lines[i], "services")) else {
        return text.to_owned();
    };
    let mut out: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
    let line = &lines[list];
    let (_, value) = line.split_once(':').unwrap_or((line, ""));
    if let Some(open) = value.find('[') {
        let at = line.len() - value.len() + open + 1;
        let empty = value[open + 1..].trim_start().starts_with(']');
        let insert = if empty {
            SERVICE.to_owned()
        } else {
            format!("{SERVICE}, ")
        };
        out[list] = format!("{}{insert}{}", &line[..at], &line[at..]);
    } else if let Some(item) = (list + 1..end).find(|&i| lines[i].trim_start().starts_with("- ")) {
        let pad = &lines[item][..indent(lines[item])];
        out.insert(item + 1, format!("{pad}- {SERVICE}\n"));
    }
    out.concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_ledger_in_flow_and_block_lists() {
        let flow = "services: {}\nambassadors:\n  other:\n    services: [a]\n  checkout:\n    listen: x # c\n    services: [a, b]   # comment\n";
        assert_eq!(
            allow_ledger(flow),
            "services: {}\nambassadors:\n  other:\n    services: [a]\n  checkout:\n    listen: x # c\n    services: [ledger, a, b]   # comment\n"
        );
        let block =
            "ambassadors:\n  checkout:\n    services:\n      - a\n      - b\n    listen: x\n";
        assert_eq!(
            allow_ledger(block),
            "ambassadors:\n  checkout:\n    services:\n      - a\n      - ledger\n      - b\n    listen: x\n"
        );
        let none = "ambassadors:\n  checkout:\n    listen: x\nservices:\n  a: {}\n";
        assert_eq!(allow_ledger(none), none);
        assert_eq!(
            allow_ledger("ambassadors:\n  checkout:\n    services: []\n"),
            "ambassadors:\n  checkout:\n    services: [ledger]\n"
        );
    }

    /// The served copy of the shipped YAML passes `legate-cp validate` with the generated
    /// certificates, keeps every line of the original at its number, and lets the checkout
    /// ambassador call `ledger` over mTLS.
    #[test]
    fn served_copy_of_the_example_validates() {
        let dir = tempfile::tempdir().expect("temp dir");
        let certs = Certs::generate(&dir.path().join("certs")).expect("certs init");
        assert!(certs.dir.join("checkout.key").is_file());
        let copy = dir.path().join("services.yaml");
        let text = served_copy(crate::topology::EMBEDDED_YAML, 100);
        for (a, b) in crate::topology::EMBEDDED_YAML.lines().zip(text.lines()) {
            let b = b.replace(&format!("{SERVICE}, "), "");
            assert_eq!(
                shift_ports(a, 100),
                b,
                "the copy keeps the original's lines"
            );
        }
        std::fs::write(&copy, &text).expect("write");
        let config = legate_control_plane::config::load(&copy).unwrap_or_else(|errors| {
            panic!("{}", legate_control_plane::config::error_lines(&errors))
        });
        let ledger = &config.services[SERVICE];
        assert!(ledger.tls.is_some());
        assert_eq!(ledger.endpoints[0].port, PORT + 100);
        assert!(
            config.ambassadors[AMBASSADOR]
                .services
                .iter()
                .any(|s| s == SERVICE)
        );
    }
}
