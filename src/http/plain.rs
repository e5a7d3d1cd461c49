//! Plain HTTP sent to a TLS port (an identity provider or a curl given `http://`
//! instead of `https://`). Left to rustls, the client got raw TLS alert bytes back
//! and a confusing error; answered as nginx does, it gets `HTTP/1.1 400` with a
//! short plain-text body saying that the port speaks HTTPS and naming the https://
//! URL to use, and the connection closes.
//!
//! A TLS connection starts with a handshake record (content type 22, RFC 8446 §5.1);
//! any other first byte cannot be TLS. The accept loop peeks that byte before the
//! handshake (`is_tls_start`) and hands the connection here otherwise. The answer
//! reads at most `MAX_HEAD` bytes of the request head, within the connection's
//! handshake deadline, to take the path and the `Host` the client used (only when
//! it is a plain host[:port]; otherwise the listener's own address).
//!
//! Knows TCP and the first line and `Host` of an HTTP/1 request; nothing of routes.

use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The first byte of every TLS connection: a handshake record (RFC 8446 §5.1).
const TLS_HANDSHAKE: u8 = 22;
/// The most of a plain request's head that is read to build the answer.
const MAX_HEAD: usize = 8 * 1024;
/// The longest path put into the answer's URL.
const MAX_PATH: usize = 1024;

/// Whether `first`, a connection's first byte, can start a TLS connection.
pub(crate) fn is_tls_start(first: u8) -> bool {
    first == TLS_HANDSHAKE
}

/// Answers a connection whose first byte was not TLS: reads what the client sent of
/// its request head (until the blank line, `MAX_HEAD` bytes or `deadline`), writes
/// the 400 and shuts the write side. The caller drops `io`, which closes it.
pub(crate) async fn answer<IO>(mut io: IO, local: SocketAddr, deadline: tokio::time::Instant)
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let mut head = Vec::with_capacity(1024);
    let read = async {
        let mut buf = [0u8; 1024];
        while head.len() < MAX_HEAD && !head_complete(&head) {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n.min(MAX_HEAD - head.len())]),
            }
        }
    };
    // Answered with what came, whether the head was complete or not.
    let _ = tokio::time::timeout_at(deadline, read).await;
    let response = response(&head, local);
    let write = async {
        io.write_all(response.as_bytes()).await?;
        io.shutdown().await
    };
    let _ = tokio::time::timeout_at(deadline, write).await;
}

fn head_complete(head: &[u8]) -> bool {
    head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n")
}

/// The whole answer to the plain request whose head (or its start) is `head`.
fn response(head: &[u8], local: SocketAddr) -> String {
    let body = format!(
        "This port speaks HTTPS only, and this request came as plain HTTP.\n\
         Use {}\n",
        https_url(head, local)
    );
    format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\n\r\n{body}",
        body.len()
    )
}

/// `https://HOST/PATH` for the request: HOST from its `Host` header when that is a
/// plain host[:port], else the listener's address; PATH from its request line when
/// it is an origin-form path of visible ASCII, else `/`.
fn https_url(head: &[u8], local: SocketAddr) -> String {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split('\n').map(|l| l.trim_end_matches('\r'));
    let path = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .filter(|p| p.starts_with('/') && p.len() <= MAX_PATH)
        .filter(|p| p.bytes().all(|b| b.is_ascii_graphic()))
        .unwrap_or("/");
    let host = lines
        .take_while(|l| !l.is_empty())
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("host")
                .then(|| value.trim())
        })
        .filter(|h| plain_host(h))
        .map(str::to_owned)
        .unwrap_or_else(|| local.to_string());
    format!("https://{host}{path}")
}

/// A host name or address with an optional port: letters, digits, `.-:[]`, nothing
/// that could change what the URL means.
fn plain_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 255
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> SocketAddr {
        "127.0.0.1:8443".parse().unwrap()
    }

    #[test]
    fn only_a_handshake_record_starts_tls() {
        assert!(is_tls_start(0x16));
        for b in [b'G', b'P', b'D', 0x15, 0x17, 0x80, 0, b'\r'] {
            assert!(!is_tls_start(b), "{b:#x}");
        }
    }

    #[test]
    fn the_url_takes_the_path_and_host_the_client_used() {
        let head = b"GET /scim/v2/Users?count=1 HTTP/1.1\r\nhost: scim.example.com:8443\r\n\r\n";
        assert_eq!(
            https_url(head, local()),
            "https://scim.example.com:8443/scim/v2/Users?count=1"
        );
        let v6 = b"POST /scim/v2/Users HTTP/1.1\nAccept: */*\nHost: [::1]:8443\n\n";
        assert_eq!(https_url(v6, local()), "https://[::1]:8443/scim/v2/Users");
    }

    #[test]
    fn odd_hosts_and_paths_fall_back_to_the_listener_and_the_root() {
        for head in [
            &b"GET /x HTTP/1.1\r\nHost: evil.example/phish?\r\n\r\n"[..],
            b"GET /x HTTP/1.1\r\nHost: a b\r\n\r\n",
            b"GET /x HTTP/1.1\r\n\r\nHost: after.example\r\n",
            b"GET /x HTTP/1.1\r\n",
        ] {
            assert_eq!(https_url(head, local()), "https://127.0.0.1:8443/x");
        }
        for head in [
            &b"GET http://other.example/ HTTP/1.1\r\nHost: h\r\n\r\n"[..],
            b"GET /\x01bad HTTP/1.1\r\nHost: h\r\n\r\n",
        ] {
            assert_eq!(https_url(head, local()), "https://h/");
        }
        for head in [&b"\x00\x01\x02"[..], b""] {
            assert_eq!(https_url(head, local()), "https://127.0.0.1:8443/");
        }
    }

    #[test]
    fn the_answer_is_a_complete_400_with_its_length() {
        let r = response(b"GET / HTTP/1.1\r\nHost: h:1\r\n\r\n", local());
        let (head, body) = r.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{head}");
        assert!(
            head.contains(&format!("Content-Length: {}", body.len())),
            "{head}"
        );
        assert!(head.contains("Connection: close"));
        assert_eq!(
            body,
            "This port speaks HTTPS only, and this request came as plain HTTP.\nUse https://h:1/\n"
        );
    }
}
