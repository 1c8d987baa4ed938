//! Validation of tenant settings: each refusal says what to fix.

use adsync_domain::RateLimit;
use url::Url;

use crate::{Result, ServiceError, vault::Credentials};

/// A display name: 1 to 200 characters, no control characters.
pub fn validate_name(name: &str) -> Result<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(ServiceError::Invalid(
            "name must be 1 to 200 characters without control characters".into(),
        ));
    }
    Ok(name.to_owned())
}

/// An `http(s)://host[:port][/path]` base URL without credentials, query or fragment,
/// normalized without a trailing slash (the rate budget is keyed by it).
pub fn normalize_api_url(text: &str) -> Result<String> {
    let bad = |why: &str| {
        ServiceError::Invalid(format!(
            "api_url {text:?} {why}: use the platform's base URL, e.g. https://ads.example.com"
        ))
    };
    let url = Url::parse(text.trim()).map_err(|e| bad(&format!("is not a URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("must be http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad(
            "must not carry credentials (give them in \"credentials\")",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("must not have a query or fragment"));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// A client id: 1 to 200 printable ASCII characters (it is sent as a header).
pub fn client_id(id: &str) -> Result<String> {
    if id.is_empty() || id.len() > 200 || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ServiceError::Invalid(
            "client_id must be 1 to 200 printable ASCII characters without spaces".into(),
        ));
    }
    Ok(id.to_owned())
}

/// `N/W`: 1 to 100,000 requests per window of 1 ms to 1 day.
pub fn rate_limit(text: &str) -> Result<RateLimit> {
    let limit: RateLimit = text.parse().map_err(|e| {
        ServiceError::Invalid(format!(
            "rate_limit {text:?}: {e}; write N/W, e.g. \"10/60s\""
        ))
    })?;
    if limit.requests > 100_000 || limit.window > std::time::Duration::from_secs(86_400) {
        return Err(ServiceError::Invalid(format!(
            "rate_limit {text:?} is out of range: at most 100000 requests per window of at most 1 day"
        )));
    }
    Ok(limit)
}

/// 1 to 1000 campaigns per page.
pub fn page_size(n: u64) -> Result<u64> {
    if (1..=1000).contains(&n) {
        Ok(n)
    } else {
        Err(ServiceError::Invalid(format!(
            "page_size {n} is out of range: 1 to 1000"
        )))
    }
}

/// An email and a password, both present.
pub fn credentials(c: &Credentials) -> Result<()> {
    use secrecy::ExposeSecret;
    if c.email.trim().is_empty() || c.email.len() > 320 {
        return Err(ServiceError::Invalid(
            "credentials.email must be 1 to 320 characters".into(),
        ));
    }
    let len = c.password.expose_secret().len();
    if len == 0 || len > 1024 {
        return Err(ServiceError::Invalid(
            "credentials.password must be 1 to 1024 bytes".into(),
        ));
    }
    Ok(())
}
