//! Certificate credentials: a client assertion (JWT) signed with the app's private key, as the
//! Microsoft identity platform documents: header `alg` PS256, `typ` JWT, `x5t#S256` = base64url
//! of the certificate's SHA-256 thumbprint; claims `aud` (the token endpoint), `iss` = `sub` =
//! client id, `jti`, `nbf`, `iat`, `exp` (10 minutes).

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{RsaKeyPair, RSA_PSS_SHA256};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::GraphError;

/// A certificate and its private key, loaded from one PEM file.
pub struct Certificate {
    thumbprint_s256: String,
    key: RsaKeyPair,
    /// The certificate's notAfter, in seconds since 1970: `check` warns before it comes.
    not_after: i64,
}

impl std::fmt::Debug for Certificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Certificate(x5t#S256={}, key: ***)", self.thumbprint_s256)
    }
}

impl Certificate {
    /// Reads the first certificate and the private key (PKCS#8 or PKCS#1 RSA) of a PEM file.
    pub fn from_pem_file(path: &Path) -> Result<Certificate, GraphError> {
        let shown = path.display();
        let cert = CertificateDer::pem_file_iter(path)
            .map_err(|e| GraphError::Config(format!("cannot read client_certificate_file {shown}: {e}")))?
            .next()
            .ok_or_else(|| {
                GraphError::Config(format!("client_certificate_file {shown} holds no certificate (BEGIN CERTIFICATE)"))
            })?
            .map_err(|e| GraphError::Config(format!("client_certificate_file {shown}: {e}")))?;
        let key = PrivateKeyDer::from_pem_file(path).map_err(|e| {
            GraphError::Config(format!("client_certificate_file {shown} holds no private key it can use: {e}"))
        })?;
        let key = match &key {
            PrivateKeyDer::Pkcs8(k) => RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()),
            PrivateKeyDer::Pkcs1(k) => RsaKeyPair::from_der(k.secret_pkcs1_der()),
            _ => {
                return Err(GraphError::Config(format!("client_certificate_file {shown}: the private key must be RSA")))
            }
        }
        .map_err(|e| GraphError::Config(format!("client_certificate_file {shown}: not a usable RSA key ({e})")))?;
        let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).map_err(|e| {
            GraphError::Config(format!("client_certificate_file {shown}: not an X.509 certificate ({e})"))
        })?;
        let not_after = parsed.validity().not_after.timestamp();
        let digest = ring::digest::digest(&ring::digest::SHA256, cert.as_ref());
        Ok(Certificate { thumbprint_s256: B64.encode(digest.as_ref()), key, not_after })
    }

    /// When the certificate expires (notAfter), in seconds since 1970.
    pub fn not_after(&self) -> i64 {
        self.not_after
    }

    /// A signed assertion for `client_id` at `token_url`.
    pub fn assertion(&self, client_id: &str, token_url: &str) -> Result<String, GraphError> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let rng = SystemRandom::new();
        let mut jti = [0u8; 16];
        rng.fill(&mut jti).map_err(|_| GraphError::Config("no randomness for the assertion id".into()))?;
        let header = serde_json::json!({"alg": "PS256", "typ": "JWT", "x5t#S256": self.thumbprint_s256});
        let claims = serde_json::json!({"aud": token_url, "iss": client_id, "sub": client_id, "jti": hex(&jti),
            "nbf": now, "iat": now, "exp": now + 600});
        let signing_input = format!("{}.{}", B64.encode(header.to_string()), B64.encode(claims.to_string()));
        let mut sig = vec![0u8; self.key.public().modulus_len()];
        self.key
            .sign(&RSA_PSS_SHA256, &rng, signing_input.as_bytes(), &mut sig)
            .map_err(|_| GraphError::Config("signing the client assertion failed".into()))?;
        Ok(format!("{signing_input}.{}", B64.encode(sig)))
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
