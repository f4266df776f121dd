//! The crate's one HTTP client: hyper-util's pooled client over hyper-rustls
//! (the system's CA certificates, HTTP/1.1, `http://` too for loopback labs), with
//! one overall deadline per request. The GitLab API uses it; so will `doctor`
//! and the broker client.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// What any answer carries: the status, the headers and the whole body.
#[derive(Debug)]
pub(crate) struct Response {
    pub status: StatusCode,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum HttpError {
    #[error("cannot set up the HTTPS client: {0}")]
    Setup(String),
    /// No answer: the connection, TLS or the transfer failed.
    #[error("{0}")]
    Transport(String),
    #[error("no answer within {}s", .0.as_secs())]
    Timeout(Duration),
}

/// An async client; build it once and share it.
pub(crate) struct Client {
    inner: hyper_util::client::legacy::Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
}

impl Client {
    /// A client whose every request (connect, send, read the whole body) must
    /// finish within `timeout`.
    pub(crate) fn new(timeout: Duration) -> Result<Client, HttpError> {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| HttpError::Setup(format!("no CA certificates: {e}")))?
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Client {
            inner: hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(https),
            timeout,
        })
    }

    pub(crate) async fn send(&self, req: Request<Full<Bytes>>) -> Result<Response, HttpError> {
        let answer = tokio::time::timeout(self.timeout, async {
            let resp = self
                .inner
                .request(req)
                .await
                .map_err(|e| HttpError::Transport(crate::report::report(&e)))?;
            let status = resp.status();
            let headers = resp.headers().clone();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| HttpError::Transport(crate::report::report(&e)))?
                .to_bytes();
            Ok(Response {
                status,
                headers,
                body,
            })
        })
        .await;
        answer.unwrap_or(Err(HttpError::Timeout(self.timeout)))
    }
}

/// The same client for blocking code: each call runs on its own
/// single-thread runtime.
pub(crate) struct BlockingClient {
    rt: tokio::runtime::Runtime,
    client: Client,
}

impl BlockingClient {
    pub(crate) fn new(timeout: Duration) -> Result<BlockingClient, HttpError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| HttpError::Setup(format!("cannot start the async runtime: {e}")))?;
        Ok(BlockingClient {
            rt,
            client: Client::new(timeout)?,
        })
    }

    pub(crate) fn send(&self, req: Request<Full<Bytes>>) -> Result<Response, HttpError> {
        self.rt.block_on(self.client.send(req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn get(url: &str) -> Request<Full<Bytes>> {
        Request::get(url).body(Full::new(Bytes::new())).unwrap()
    }

    #[test]
    fn answers_refusals_and_silence() {
        let c = BlockingClient::new(Duration::from_secs(1)).unwrap();
        // An answer, status and body whole.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).unwrap();
            s.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 5\r\n\r\nnope!")
                .unwrap();
        });
        let r = c.send(get(&format!("http://{addr}/x"))).unwrap();
        assert_eq!((r.status.as_u16(), &r.body[..]), (404, &b"nope!"[..]));
        // Nothing listens: a transport error that says so.
        let e = c.send(get("http://127.0.0.1:9/")).unwrap_err();
        assert!(matches!(e, HttpError::Transport(_)), "{e:?}");
        assert!(e.to_string().to_lowercase().contains("refused"), "{e}");
        // Accepts and never answers: the deadline.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = silent.local_addr().unwrap();
        let e = c.send(get(&format!("http://{addr}/"))).unwrap_err();
        assert_eq!(e.to_string(), "no answer within 1s");
        drop(silent);
    }
}
