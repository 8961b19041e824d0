//! Checks a client assertion the way the Microsoft identity platform does: the certificate named
//! by `x5t#S256` (or `x5t`) must be the one registered on the app, the signature (PS256 or
//! RS256) must verify with its public key, and `iss`, `sub`, `aud` and `exp` must fit.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use ring::signature::{UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256, RSA_PSS_2048_8192_SHA256};
use serde_json::Value;

pub fn verify(jwt: &str, cert_pem: &str, client_id: &str, endpoint: &str) -> Result<(), String> {
    let parts: Vec<&str> = jwt.split('.').collect();
    let [h, c, s] = parts.as_slice() else { return Err("not a JWT".into()) };
    let json = |p: &str| -> Result<Value, String> {
        let raw = B64.decode(p).map_err(|_| "bad base64url".to_string())?;
        serde_json::from_slice(&raw).map_err(|_| "bad JSON".to_string())
    };
    let (header, claims) = (json(h)?, json(c)?);
    let sig = B64.decode(s).map_err(|_| "bad signature encoding".to_string())?;
    let (_, pem) =
        x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()).map_err(|e| format!("registered certificate: {e}"))?;
    let der = pem.contents;
    let s256 = B64.encode(ring::digest::digest(&ring::digest::SHA256, &der).as_ref());
    let s1 = B64.encode(ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &der).as_ref());
    if header["x5t#S256"].as_str() != Some(s256.as_str()) && header["x5t"].as_str() != Some(s1.as_str()) {
        return Err("The thumbprint does not match the registered certificate.".into());
    }
    let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|e| format!("registered certificate: {e}"))?;
    let key = cert.public_key().subject_public_key.data.to_vec();
    let alg: &dyn ring::signature::VerificationAlgorithm = match header["alg"].as_str() {
        Some("PS256") => &RSA_PSS_2048_8192_SHA256,
        Some("RS256") => &RSA_PKCS1_2048_8192_SHA256,
        other => return Err(format!("unsupported alg {other:?}")),
    };
    UnparsedPublicKey::new(alg, key)
        .verify(format!("{h}.{c}").as_bytes(), &sig)
        .map_err(|_| "The signature does not verify.".to_string())?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    if claims["iss"] != client_id || claims["sub"] != client_id {
        return Err("iss and sub must be the client id".into());
    }
    if claims["aud"].as_str() != Some(endpoint) {
        return Err(format!("aud must be the token endpoint {endpoint}"));
    }
    // nbf is "now" and exp 5-10 minutes after it; five minutes of clock skew are tolerated.
    let nbf = claims["nbf"].as_u64().ok_or("the assertion has no nbf")?;
    if nbf > now + 300 {
        return Err("the assertion is not valid yet (nbf)".into());
    }
    if claims["exp"].as_u64().is_none_or(|e| e <= now || e <= nbf) || claims["jti"].as_str().is_none_or(str::is_empty) {
        return Err("the assertion is expired or has no jti".into());
    }
    Ok(())
}
