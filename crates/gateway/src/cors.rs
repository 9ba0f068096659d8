//! Which browser origins may call the REST routes, and the CORS layer that answers them.

use std::{str::FromStr, time::Duration};

use axum::http::Uri;
use http::HeaderValue;
use tower_http::cors::{AllowHeaders, AllowMethods, AllowOrigin, CorsLayer};

/// How long a browser may cache a CORS preflight answer.
const CORS_MAX_AGE: Duration = Duration::from_secs(600);

/// The origins CORS lets call the gateway: `KEYWARD_CORS_ALLOWED_ORIGINS`, a
/// comma-separated list of origins (`https://dashboard.example.com`), or `*` for any.
/// Empty (the default) answers no CORS headers at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum CorsOrigins {
    /// No CORS: browsers on other origins are refused by the browser itself.
    #[default]
    None,
    /// Any origin (`*`).
    Any,
    /// These origins, exactly.
    List(Vec<HeaderValue>),
}

impl FromStr for CorsOrigins {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let origins: Vec<&str> = text.split(',').map(str::trim).filter(|origin| !origin.is_empty()).collect();
        if origins.is_empty() {
            return Ok(Self::None);
        }
        if origins.contains(&"*") {
            return if origins.len() == 1 {
                Ok(Self::Any)
            } else {
                Err("`*` allows every origin and cannot be combined with others".to_owned())
            };
        }
        origins
            .into_iter()
            .map(|origin| {
                let uri: Uri = origin.parse().map_err(|_| format!("{origin:?} is not an origin"))?;
                let bare = uri.path_and_query().is_none_or(|p| p.as_str() == "/" || p.as_str().is_empty());
                if uri.scheme().is_none() || uri.authority().is_none() || !bare || origin.ends_with('/') {
                    return Err(format!("{origin:?} is not an origin (scheme://host[:port], no path)"));
                }
                HeaderValue::from_str(origin).map_err(|_| format!("{origin:?} is not an origin"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self::List)
    }
}

impl CorsOrigins {
    pub(crate) fn layer(&self) -> Option<CorsLayer> {
        let origins = match self {
            Self::None => return None,
            Self::Any => AllowOrigin::any(),
            Self::List(origins) => AllowOrigin::list(origins.iter().cloned()),
        };
        Some(
            CorsLayer::new()
                .allow_origin(origins)
                .allow_methods(AllowMethods::mirror_request())
                .allow_headers(AllowHeaders::mirror_request())
                .max_age(CORS_MAX_AGE),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::CorsOrigins;

    #[test]
    fn cors_origins_parse() {
        assert_eq!("".parse::<CorsOrigins>(), Ok(CorsOrigins::None));
        assert_eq!(" , ".parse::<CorsOrigins>(), Ok(CorsOrigins::None));
        assert_eq!("*".parse::<CorsOrigins>(), Ok(CorsOrigins::Any));
        let CorsOrigins::List(list) = "https://a.example, http://b.example:3000".parse().unwrap() else {
            panic!("a list")
        };
        assert_eq!(list, ["https://a.example", "http://b.example:3000"]);
        for bad in ["*,https://a.example", "a.example", "https://a.example/path", "https://a.example/"] {
            assert!(bad.parse::<CorsOrigins>().is_err(), "{bad}");
        }
    }
}
