//! The HTTPS client the ACME library talks to the CA through: hyper with our own
//! rustls configuration (ring; the system roots, or the private CA of `ca_file`), a
//! deadline on every request, and a note of the last `Retry-After` the CA sent with a
//! 429 or 503 (RFC 8555 §6.6), which the library does not surface but rate limits
//! need.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use instant_acme::{BodyWrapper, BytesResponse, Error, HttpClient};

use crate::clock::Timestamp;

/// No single exchange with the CA may take longer than this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// When the CA last asked us to come back (from a 429/503 `Retry-After`).
pub(crate) type RetryAfter = Arc<Mutex<Option<Timestamp>>>;

pub(crate) struct CaClient {
    http: Client<hyper_rustls::HttpsConnector<HttpConnector>, BodyWrapper<Bytes>>,
    retry_after: RetryAfter,
}

impl CaClient {
    /// A client trusting `ca_pem` (PEM CA certificates) or the system's roots.
    pub(crate) fn new(ca_pem: Option<&[u8]>, retry_after: RetryAfter) -> Result<CaClient, String> {
        let tls = crate::tls::client_config(ca_pem)?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .enable_http2()
            .build();
        Ok(CaClient {
            http: Client::builder(TokioExecutor::new()).build(connector),
            retry_after,
        })
    }
}

/// `Retry-After`: delay-seconds or an HTTP date (RFC 9110 §10.2.3).
fn parse_retry_after(value: &str, now: Timestamp) -> Option<Timestamp> {
    let value = value.trim();
    match value.parse::<i64>() {
        Ok(secs) => now.checked_add(time::Duration::seconds(secs)),
        Err(_) => {
            let at = httpdate::parse_http_date(value).ok()?;
            let ms = at.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis();
            Timestamp::from_unix_ms(i64::try_from(ms).ok()?)
        }
    }
}

impl HttpClient for CaClient {
    fn request(
        &self,
        req: hyper::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, Error>> + Send>> {
        let fut = self.http.request(req);
        let slot = self.retry_after.clone();
        Box::pin(async move {
            let rsp = match tokio::time::timeout(REQUEST_TIMEOUT, fut).await {
                Ok(Ok(rsp)) => rsp,
                Ok(Err(e)) => return Err(Error::Other(Box::new(e))),
                Err(_) => {
                    return Err(Error::Other(
                        format!("the CA did not answer within {REQUEST_TIMEOUT:?}").into(),
                    ))
                }
            };
            let status = rsp.status().as_u16();
            if status == 429 || status == 503 {
                let when = rsp
                    .headers()
                    .get(hyper::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| parse_retry_after(v, Timestamp::now()));
                if let (Some(when), Ok(mut s)) = (when, slot.lock()) {
                    *s = Some(when);
                }
            }
            Ok(BytesResponse::from(rsp))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let now = Timestamp::from_unix_ms(1_000_000_000).unwrap();
        assert_eq!(
            parse_retry_after(" 120 ", now).map(|t| t.unix_seconds()),
            Some(1_000_120)
        );
        assert_eq!(
            parse_retry_after("Thu, 01 Jan 1970 00:01:40 GMT", now).map(|t| t.unix_seconds()),
            Some(100)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
