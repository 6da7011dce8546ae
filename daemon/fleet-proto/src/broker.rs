//! How either end reaches the broker: a `mqtt://host:port` or `mqtts://host:port` URL, and
//! for TLS the fleet CA and this client's certificate and key (PEM files). TLS uses rustls
//! with ring, the workspace's one crypto provider.

use rumqttc::{MqttOptions, TlsConfiguration, Transport};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Where the broker is and how to prove who we are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broker {
    pub url: String,
    /// The fleet CA that signed the broker's certificate (TLS only).
    pub ca_file: Option<PathBuf>,
    /// This client's certificate and key: its CN is its identity at the broker.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("broker `{0}`: use mqtt://host:port or mqtts://host:port")]
    BadUrl(String),
    #[error("{path}: {error}")]
    File { path: PathBuf, error: String },
    #[error("mqtts needs ca_file, cert_file and key_file")]
    MissingTlsFiles,
    #[error("TLS: {0}")]
    Tls(String),
}

impl Broker {
    /// MQTT options for `client_id`: keepalive, a clean session (delivery is the
    /// application's, see the crate's docs), and TLS when the URL says `mqtts`.
    pub fn options(
        &self,
        client_id: &str,
        keepalive: Duration,
    ) -> Result<MqttOptions, BrokerError> {
        let bad = || BrokerError::BadUrl(self.url.clone());
        let (tls, rest) = if let Some(rest) = self.url.strip_prefix("mqtts://") {
            (true, rest)
        } else if let Some(rest) = self.url.strip_prefix("mqtt://") {
            (false, rest)
        } else {
            return Err(bad());
        };
        let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.trim_end_matches('/').parse().map_err(|_| bad())?;
        if host.is_empty() {
            return Err(bad());
        }
        let mut options = MqttOptions::new(client_id, host, port);
        options
            .set_keep_alive(keepalive)
            .set_clean_session(true)
            .set_max_packet_size(4 << 20, 4 << 20);
        if tls {
            let config = self.tls_config()?;
            options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                Arc::new(config),
            )));
        }
        Ok(options)
    }

    fn tls_config(&self) -> Result<rustls::ClientConfig, BrokerError> {
        let (Some(ca), Some(cert), Some(key)) = (&self.ca_file, &self.cert_file, &self.key_file)
        else {
            return Err(BrokerError::MissingTlsFiles);
        };
        let mut roots = rustls::RootCertStore::empty();
        for certificate in certificates(ca)? {
            roots
                .add(certificate)
                .map_err(|e| BrokerError::Tls(e.to_string()))?;
        }
        let chain = certificates(cert)?;
        let key = rustls_pemfile::private_key(&mut read(key)?.as_slice())
            .map_err(|e| file_error(key, e))?
            .ok_or_else(|| file_error(key, "no private key in it"))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| BrokerError::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| BrokerError::Tls(e.to_string()))
    }
}

fn file_error(path: &Path, error: impl std::fmt::Display) -> BrokerError {
    BrokerError::File {
        path: path.to_path_buf(),
        error: error.to_string(),
    }
}

fn read(path: &Path) -> Result<Vec<u8>, BrokerError> {
    std::fs::read(path).map_err(|e| file_error(path, e))
}

fn certificates(
    path: &Path,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, BrokerError> {
    let pem = read(path)?;
    let certificates: Result<Vec<_>, _> = rustls_pemfile::certs(&mut pem.as_slice()).collect();
    let certificates = certificates.map_err(|e| file_error(path, e))?;
    if certificates.is_empty() {
        return Err(file_error(path, "no certificate in it"));
    }
    Ok(certificates)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(url: &str) -> Broker {
        Broker {
            url: url.into(),
            ca_file: None,
            cert_file: None,
            key_file: None,
        }
    }

    #[test]
    fn urls_are_read_and_bad_ones_refused() {
        let options = broker("mqtt://127.0.0.1:1883")
            .options("hall-1", Duration::from_secs(15))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(options.broker_address(), ("127.0.0.1".to_string(), 1883));
        for bad in [
            "127.0.0.1:1883",
            "mqtt://:1883",
            "mqtt://host",
            "http://h:1",
        ] {
            assert!(
                broker(bad).options("x", Duration::from_secs(1)).is_err(),
                "{bad}"
            );
        }
        assert!(matches!(
            broker("mqtts://h:8883").options("x", Duration::from_secs(1)),
            Err(BrokerError::MissingTlsFiles)
        ));
    }
}
