//! The `/build` request to the daemon: its query options, and the rewrite that turns
//! bollard's classic request into a BuildKit one using our session.

use std::collections::HashMap;

use bollard::query_parameters::{BuildImageOptions, BuilderVersion};

use super::BuildRequest;

/// The `/build` query: everything but the extra tags and the builder version, which
/// [`as_buildkit_request`] fixes up.
pub(super) fn build_options(
    request: &BuildRequest,
    dockerfile: &str,
    session: &str,
) -> BuildImageOptions {
    let mut build_args: HashMap<String, String> = request
        .build_args
        .iter()
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    // Inline cache is always exported, so the pushed image can seed the next build's cache.
    build_args.insert("BUILDKIT_INLINE_CACHE".to_owned(), "1".to_owned());
    let labels: HashMap<String, String> = request
        .labels
        .iter()
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    BuildImageOptions {
        dockerfile: dockerfile.to_owned(),
        // The daemon pulls the context and the Dockerfile from the session's file sync, as it
        // does from the Docker CLI.
        remote: Some("client-session".to_owned()),
        t: request.tags.first().cloned(),
        nocache: request.no_cache,
        cachefrom: (!request.cache_from.is_empty()).then(|| request.cache_from.clone()),
        buildargs: Some(build_args),
        labels: (!labels.is_empty()).then_some(labels),
        platform: request.platform.clone().unwrap_or_default(),
        target: request.target.clone().unwrap_or_default(),
        // See the module documentation: sent as classic, switched to BuildKit on the way out.
        version: BuilderVersion::BuilderV1,
        session: Some(session.to_owned()),
        ..BuildImageOptions::default()
    }
}

/// Turns bollard's classic `/build` request into a BuildKit one using our session, and adds the
/// tags after the first.
pub(super) fn as_buildkit_request(
    mut request: bollard::BollardRequest,
    extra_tags: &[String],
) -> bollard::BollardRequest {
    if !request.uri().path().ends_with("/build") {
        return request;
    }
    let query = request.uri().query().unwrap_or_default();
    let mut pairs: Vec<String> = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            if pair == "version=1" {
                "version=2".to_owned()
            } else {
                pair.to_owned()
            }
        })
        .collect();
    pairs.extend(
        extra_tags
            .iter()
            .map(|tag| format!("t={}", query_escape(tag))),
    );
    let path_and_query = format!("{}?{}", request.uri().path(), pairs.join("&"));
    let Ok(path_and_query) = hyper::http::uri::PathAndQuery::try_from(path_and_query) else {
        return request;
    };
    let mut parts = request.uri().clone().into_parts();
    parts.path_and_query = Some(path_and_query);
    if let Ok(uri) = hyper::Uri::from_parts(parts) {
        *request.uri_mut() = uri;
    }
    request
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn query_escape(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            escaped.push(char::from(byte));
        } else {
            escaped.push_str(&format!("%{byte:02X}"));
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn rewrites_only_the_build_request() {
        let build = hyper::Request::post(
            "unix://2f76/build?dockerfile=Dockerfile&t=app%3A1&version=1&session=abc",
        )
        .body(bollard::body_full(bytes::Bytes::new()))
        .expect("request");
        let rewritten = as_buildkit_request(
            build,
            &["127.0.0.1:5000/app:1".to_owned(), "app:latest".to_owned()],
        );
        assert_eq!(
            rewritten.uri().to_string(),
            "unix://2f76/build?dockerfile=Dockerfile&t=app%3A1&version=2&session=abc\
             &t=127.0.0.1%3A5000%2Fapp%3A1&t=app%3Alatest"
        );
        let other = hyper::Request::get("unix://2f76/images/json?version=1")
            .body(bollard::body_full(bytes::Bytes::new()))
            .expect("request");
        assert_eq!(
            as_buildkit_request(other, &[]).uri().to_string(),
            "unix://2f76/images/json?version=1"
        );
    }

    #[test]
    fn options_always_export_inline_cache_and_use_the_session() {
        let request = BuildRequest {
            context_dir: PathBuf::from("/src"),
            dockerfile: PathBuf::from("Dockerfile"),
            build_args: BTreeMap::from([("BUILDKIT_INLINE_CACHE".to_owned(), "0".to_owned())]),
            tags: vec!["a:1".to_owned(), "b:2".to_owned()],
            cache_from: vec!["registry/app:prev".to_owned()],
            ..BuildRequest::default()
        };
        let options = build_options(&request, "Dockerfile", "session-id");
        assert_eq!(
            options
                .buildargs
                .as_ref()
                .and_then(|args| args.get("BUILDKIT_INLINE_CACHE")),
            Some(&"1".to_owned())
        );
        assert_eq!(options.t.as_deref(), Some("a:1"));
        assert_eq!(options.session.as_deref(), Some("session-id"));
        assert_eq!(options.remote.as_deref(), Some("client-session"));
        assert_eq!(
            options.cachefrom,
            Some(vec!["registry/app:prev".to_owned()])
        );
        assert_eq!(options.labels, None);
    }
}
