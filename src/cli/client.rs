//! The CLI's HTTP client of kubefn's REST API and gateway: one hyper client (HTTP or HTTPS
//! with the system's roots), the API token as `Authorization: Bearer`, and the API's JSON
//! errors turned into [`CliError::Api`] with the API's own words.

use super::CliError;
use crate::api::ApiError;
use http::{Method, Request, Response, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A client of one kubefn, with or without an API token.
pub struct ApiClient {
    base: String,
    token: Option<String>,
    http: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

/// An answer read whole.
pub struct Answer {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON of `T`; `what` names the call (`/tokens`, `the log-in`) in the error.
    pub fn decode<T: DeserializeOwned>(&self, what: &str) -> Result<T, CliError> {
        serde_json::from_slice(&self.body)
            .map_err(|error| CliError::usage(format!("kubefn answered {what} with something unexpected: {error}")))
    }
}

impl ApiClient {
    /// A client of the kubefn at `base` (`http://host:port` or `https://…`).
    pub fn new(base: &str, token: Option<String>) -> Result<ApiClient, CliError> {
        let base = base.trim_end_matches('/').to_string();
        let uri: Uri = base
            .parse()
            .map_err(|_| CliError::usage(format!("{base:?} is not a URL such as http://127.0.0.1:3000")))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(CliError::usage(format!("{base:?} is not a URL such as http://127.0.0.1:3000")));
        }
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|source| CliError::Local { what: "cannot read the system's TLS roots".into(), source })?
            .https_or_http()
            .enable_http1()
            .build();
        Ok(ApiClient { base, token, http: Client::builder(TokioExecutor::new()).build(connector) })
    }

    /// The kubefn this client talks to.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends a request and returns the response as it streams in.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
        extra: &[(String, String)],
    ) -> Result<Response<Incoming>, CliError> {
        let url = format!("{}{path}", self.base);
        let mut request = Request::builder().method(method).uri(&url);
        if let Some(token) = &self.token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        for (name, value) in extra {
            request = request.header(name.as_str(), value.as_str());
        }
        let request = match body {
            Some((content_type, bytes)) => request.header(header::CONTENT_TYPE, content_type).body(Full::from(bytes)),
            None => request.body(Full::default()),
        }
        .map_err(|error| CliError::usage(format!("cannot build a request to {url}: {error}")))?;
        self.http
            .request(request)
            .await
            .map_err(|source| CliError::Unreachable { url: self.base.clone(), source: Box::new(source) })
    }

    /// Sends a request and reads the whole answer.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
        extra: &[(String, String)],
    ) -> Result<Answer, CliError> {
        let response = self.send(method, path, body, extra).await?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|source| CliError::Unreachable { url: self.base.clone(), source: Box::new(source) })?
            .to_bytes();
        Ok(Answer { status: parts.status, headers: parts.headers, body })
    }

    /// A REST call with an optional JSON body: the answer's JSON, or the API's error.
    pub async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, CliError> {
        self.rest(method, path, body).await?.decode(path)
    }

    /// A REST call with an optional JSON body whose answer may be empty (204): the answer, or
    /// the API's error.
    pub async fn rest(&self, method: Method, path: &str, body: Option<&impl Serialize>) -> Result<Answer, CliError> {
        let body = match body {
            Some(value) => Some((
                "application/json",
                serde_json::to_vec(value)
                    .map_err(|error| CliError::usage(format!("cannot encode the request: {error}")))?,
            )),
            None => None,
        };
        let answer = self.call(method, &format!("/api/v1{path}"), body, &[]).await?;
        if answer.status.is_client_error() || answer.status.is_server_error() {
            return Err(api_error(&answer));
        }
        Ok(answer)
    }
}

/// The API's error in an answer: its JSON error, or the status and text when it is not one.
pub fn api_error(answer: &Answer) -> CliError {
    let error = serde_json::from_slice::<ApiError>(&answer.body).unwrap_or_else(|_| {
        let text = String::from_utf8_lossy(&answer.body).trim().to_string();
        let reason = answer.status.canonical_reason().unwrap_or("error");
        ApiError::new(answer.status.as_u16(), if text.is_empty() { reason.to_string() } else { text })
    });
    CliError::Api(Box::new(error))
}

/// A path segment with everything but unreserved characters percent-encoded.
pub fn escape(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}
