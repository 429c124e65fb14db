//! Certificates for tests, generated with rcgen: a CA, serving certificates for loopback,
//! and client certificates with or without a SPIFFE ID.

use std::path::{Path, PathBuf};

use anyhow::Result;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType};

pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

/// A certificate and its key, as PEM files.
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCa {
    pub fn new(name: &str) -> Result<Self> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        let pem = params.self_signed(&key)?.pem();
        Ok(Self { issuer: Issuer::new(params, key), pem })
    }

    pub fn pem(&self) -> &str {
        &self.pem
    }

    pub fn write(&self, path: &Path) -> Result<PathBuf> {
        std::fs::write(path, &self.pem)?;
        Ok(path.to_owned())
    }

    /// A serving certificate for 127.0.0.1 and localhost.
    pub fn server(&self, dir: &Path, name: &str) -> Result<Issued> {
        let params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?;
        self.issue(dir, name, params)
    }

    /// A serving certificate for 127.0.0.1 and localhost that expired in 2021.
    pub fn expired_server(&self, dir: &Path, name: &str) -> Result<Issued> {
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?;
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        self.issue(dir, name, params)
    }

    /// A client certificate named `name`, carrying `spiffe` as a URI SAN when given.
    pub fn client(&self, dir: &Path, name: &str, spiffe: Option<&str>) -> Result<Issued> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, name);
        if let Some(uri) = spiffe {
            params.subject_alt_names = vec![SanType::URI(uri.try_into()?)];
        }
        self.issue(dir, name, params)
    }

    /// A client certificate for a Kubernetes user `name` in group `group` (its organization).
    pub fn client_in_group(&self, dir: &Path, name: &str, group: &str) -> Result<Issued> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.distinguished_name.push(DnType::OrganizationName, group);
        self.issue(dir, name, params)
    }

    fn issue(&self, dir: &Path, name: &str, params: CertificateParams) -> Result<Issued> {
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let issued = Issued { cert: dir.join(format!("{name}.crt")), key: dir.join(format!("{name}.key")) };
        std::fs::write(&issued.cert, cert.pem())?;
        std::fs::write(&issued.key, key.serialize_pem())?;
        Ok(issued)
    }
}
