//! Writes the certificates the Python tests of the xDS port need into a directory:
//! `ca.crt`, `xds.{crt,key}` (for 127.0.0.1), `sidecar.{crt,key}` (SPIFFE ID of shop/web),
//! `anonymous.{crt,key}` (from the CA, no SPIFFE ID), `stranger-ca.crt` and
//! `stranger.{crt,key}` (a SPIFFE ID, from another CA).
//!
//!     test-pki DIR

use std::path::PathBuf;

use edgexds_tests::pki::TestCa;

fn main() -> anyhow::Result<()> {
    let dir = PathBuf::from(std::env::args().nth(1).ok_or_else(|| anyhow::anyhow!("usage: test-pki DIR"))?);
    std::fs::create_dir_all(&dir)?;
    let (ca, stranger) = (TestCa::new("mesh")?, TestCa::new("stranger")?);
    ca.write(&dir.join("ca.crt"))?;
    stranger.write(&dir.join("stranger-ca.crt"))?;
    ca.server(&dir, "xds")?;
    ca.client(&dir, "sidecar", Some("spiffe://cluster.local/ns/shop/sa/web"))?;
    ca.client(&dir, "anonymous", None)?;
    stranger.client(&dir, "stranger", Some("spiffe://cluster.local/ns/shop/sa/web"))?;
    Ok(())
}
