//! The member's HTTP/1.1 client of one direct endpoint: kept-alive
//! connections over pinned TLS (or plain HTTP, for the pull bench only)
//! that read the socket in large pieces and a chunk's body straight into
//! its own buffer.
//!
//! It speaks just what the agent's listener answers: `GET` with a
//! `Content-Length` body, one request at a time per connection. Through a
//! general client, rustls reads the socket 4 KiB at a time and hands on one
//! 16 KiB record per read, and every body passes through the client's own
//! buffer and a task of its own on the way: a system call, a wake-up and a
//! copy more than the bytes need. Here the socket is read 256 KiB at a time
//! beneath TLS, and the decrypted records go at once into the chunk's
//! buffer.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use hyper::StatusCode;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, ReadBuf};
use tokio::net::TcpStream;

use super::rate::Limiter;
use crate::telemetry::error_chain;

/// Bytes read from the socket at once.
const READ_BUFFER: usize = 256 * 1024;
/// Room for a response's head (the agent's are a few hundred bytes).
const MAX_HEAD: usize = 8 * 1024;
/// Largest body taken: four times the largest chunk.
const MAX_BODY: u64 = 4 * crate::client::scan::MAX_CHUNK as u64;

/// One direct endpoint (`https://host:port[/prefix]`) and its idle connections.
pub struct EndpointClient {
    /// Where to connect (`host:port`), also the Host header.
    authority: String,
    /// The URL's path, before `/chunks/...`.
    prefix: String,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    connect_timeout: Duration,
    request_timeout: Duration,
    idle: Mutex<Vec<Connection>>,
}

type Connection = Box<dyn Io>;

/// How an exchange on a connection went wrong.
enum Broken {
    /// Closed (or reset) before any byte of an answer: on a kept-alive
    /// connection, the agent closed it while idle.
    BeforeAnswer(String),
    Other(String),
}

impl EndpointClient {
    /// A client of `url`, over TLS with `tls` (else plain HTTP: `url` must
    /// then be `http://`).
    pub fn new(
        url: &str,
        tls: Option<rustls::ClientConfig>,
        connect_timeout: Duration,
        request_timeout: Duration,
    ) -> Result<Self, String> {
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("not a URL ({e})"))?;
        let want = if tls.is_some() { "https" } else { "http" };
        if parsed.scheme() != want {
            return Err(format!("not an {want}:// URL"));
        }
        let host = match parsed.host() {
            Some(url::Host::Domain(name)) => name.to_owned(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            None => return Err("no host".to_owned()),
        };
        let port = parsed.port_or_known_default().ok_or("no port")?;
        let authority = match parsed.host() {
            Some(url::Host::Ipv6(ip)) => format!("[{ip}]:{port}"),
            _ => format!("{host}:{port}"),
        };
        let tls = match tls {
            Some(config) => {
                // Any name will do: the certificate is pinned, not checked
                // against a name.
                let name = ServerName::try_from(host).map_err(|e| e.to_string())?;
                Some((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
            }
            None => None,
        };
        Ok(Self {
            authority,
            prefix: parsed.path().trim_end_matches('/').to_owned(),
            tls,
            connect_timeout,
            request_timeout,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// `GET {url}{path}` with `token`: the status and, on success, the
    /// whole body, read within `limiter`.
    pub async fn get(&self, path: &str, token: &str, limiter: &Limiter) -> Result<(StatusCode, Bytes), String> {
        tokio::time::timeout(self.request_timeout, self.get_within(path, token, limiter))
            .await
            .map_err(|_| format!("no answer within {:?}", self.request_timeout))?
    }

    async fn get_within(&self, path: &str, token: &str, limiter: &Limiter) -> Result<(StatusCode, Bytes), String> {
        let request = format!(
            "GET {}{path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\nUser-Agent: ferry/{}\r\n\r\n",
            self.prefix,
            self.authority,
            env!("CARGO_PKG_VERSION")
        );
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        if let Some(mut connection) = idle {
            match exchange(&mut connection, &request, limiter).await {
                Ok((answer, keep)) => return Ok(self.done(connection, answer, keep)),
                // Closed while idle: a GET is asked again on a new one.
                Err(Broken::BeforeAnswer(_)) => {}
                Err(Broken::Other(e)) => return Err(e),
            }
        }
        let mut connection = tokio::time::timeout(self.connect_timeout, self.connect())
            .await
            .map_err(|_| format!("could not connect within {:?}", self.connect_timeout))??;
        match exchange(&mut connection, &request, limiter).await {
            Ok((answer, keep)) => Ok(self.done(connection, answer, keep)),
            Err(Broken::BeforeAnswer(e) | Broken::Other(e)) => Err(e),
        }
    }

    /// Keeps the connection for the next request when it may be reused.
    fn done(&self, connection: Connection, answer: (StatusCode, Bytes), keep: bool) -> (StatusCode, Bytes) {
        if keep {
            self.idle.lock().unwrap_or_else(|e| e.into_inner()).push(connection);
        }
        answer
    }

    async fn connect(&self) -> Result<Connection, String> {
        let tcp = TcpStream::connect(&self.authority).await.map_err(|e| error_chain(&e))?;
        tcp.set_nodelay(true).map_err(|e| error_chain(&e))?;
        let tcp = BufReader::with_capacity(READ_BUFFER, tcp);
        Ok(match &self.tls {
            Some((connector, name)) => {
                Box::new(Filled(connector.connect(name.clone(), tcp).await.map_err(|e| error_chain(&e))?))
            }
            None => Box::new(tcp),
        })
    }
}

/// Sends `request` and reads its answer: the status, the body on success,
/// and whether the connection may carry another request (a success read
/// to its end, and not `Connection: close`).
async fn exchange(
    connection: &mut Connection,
    request: &str,
    limiter: &Limiter,
) -> Result<((StatusCode, Bytes), bool), Broken> {
    let broken = |e: io::Error| Broken::BeforeAnswer(error_chain(&e));
    connection.write_all(request.as_bytes()).await.map_err(broken)?;
    connection.flush().await.map_err(broken)?;

    let mut head = BytesMut::with_capacity(MAX_HEAD);
    let Head { status, content_length, close, len } = loop {
        match connection.read_buf(&mut head).await {
            Ok(0) if head.is_empty() => return Err(Broken::BeforeAnswer("closed".to_owned())),
            Err(e) if head.is_empty() => return Err(broken(e)),
            Ok(0) => return Err(Broken::Other("closed in the middle of an answer".to_owned())),
            Err(e) => return Err(Broken::Other(error_chain(&e))),
            Ok(_) => {}
        }
        if let Some(parsed) = parse_head(&head).map_err(Broken::Other)? {
            break parsed;
        }
        if head.len() >= MAX_HEAD {
            return Err(Broken::Other(format!("an answer's head longer than {MAX_HEAD} bytes")));
        }
    };
    if !status.is_success() {
        // The body is not read: the connection is not reused.
        return Ok(((status, Bytes::new()), false));
    }
    let length = content_length.ok_or_else(|| Broken::Other("an answer without Content-Length".to_owned()))?;
    if length > MAX_BODY {
        return Err(Broken::Other(format!("an answer of {length} bytes, more than any chunk")));
    }
    let early = head.split_off(len);
    if early.len() as u64 > length {
        return Err(Broken::Other("more bytes than the answer's Content-Length".to_owned()));
    }
    limiter.take(early.len()).await;
    let mut body = BytesMut::with_capacity(length as usize);
    body.extend_from_slice(&early);
    while (body.len() as u64) < length {
        let left = length - body.len() as u64;
        match (&mut *connection).take(left).read_buf(&mut body).await {
            Ok(0) => return Err(Broken::Other(format!("closed {left} bytes before the answer's end"))),
            Ok(read) => limiter.take(read).await,
            Err(e) => return Err(Broken::Other(error_chain(&e))),
        }
    }
    Ok(((status, body.freeze()), !close))
}

/// What is read of an answer's head.
#[derive(Debug, PartialEq)]
struct Head {
    status: StatusCode,
    content_length: Option<u64>,
    /// `Connection: close`, or HTTP/1.0.
    close: bool,
    /// Its bytes, up to the body.
    len: usize,
}

/// The complete head at the start of `buf`; None while it is incomplete.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(buf).map_err(|e| format!("not an HTTP answer ({e})"))? {
        httparse::Status::Complete(len) => len,
        httparse::Status::Partial => return Ok(None),
    };
    let status = response
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or_else(|| "an answer without a status".to_owned())?;
    let (mut length, mut close) = (None, response.version == Some(0));
    for h in response.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let value = std::str::from_utf8(h.value).ok().and_then(|v| v.trim().parse::<u64>().ok());
            length = Some(value.ok_or("an answer with a malformed Content-Length")?);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err("a chunked answer (the agent sends a Content-Length)".to_owned());
        } else if h.name.eq_ignore_ascii_case("connection") {
            close = h.value.eq_ignore_ascii_case(b"close");
        }
    }
    Ok(Some(Head { status, content_length: length, close, len }))
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// Fills the reader's buffer with whatever can be read without waiting
/// (TLS hands on one record per read otherwise).
struct Filled<T>(T);

impl<T: AsyncRead + Unpin> AsyncRead for Filled<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let start = buf.filled().len();
        while buf.remaining() > 0 {
            let before = buf.filled().len();
            match Pin::new(&mut self.0).poll_read(cx, buf) {
                Poll::Ready(Ok(())) if buf.filled().len() == before => break,
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending if buf.filled().len() == start => return Poll::Pending,
                Poll::Pending => break,
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Filled<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::{parse_head, EndpointClient, Head, Limiter, StatusCode};

    /// A listener answering each connection's first request with `body`,
    /// written in pieces, then closing it (as an agent closes an idle
    /// connection); answers its address.
    async fn one_answer_per_connection(body: Vec<u8>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let body = body.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    while !head.ends_with(b"\r\n\r\n") {
                        let mut byte = [0u8];
                        if socket.read(&mut byte).await.unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    assert!(head.starts_with(b"GET /p/chunks/x HTTP/1.1\r\n"), "{}", String::from_utf8_lossy(&head));
                    let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
                    socket.write_all(head.as_bytes()).await.unwrap();
                    for piece in body.chunks(100_000) {
                        socket.write_all(piece).await.unwrap();
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                });
            }
        });
        format!("http://{address}/p")
    }

    #[tokio::test]
    async fn a_body_in_pieces_arrives_whole_and_a_connection_closed_while_idle_is_replaced() {
        let body: Vec<u8> = (0..1_000_003u32).map(|i| (i % 251) as u8).collect();
        let url = one_answer_per_connection(body.clone()).await;
        let client = EndpointClient::new(&url, None, Duration::from_secs(5), Duration::from_secs(5)).unwrap();
        let limiter = Limiter::new(None);
        for _ in 0..3 {
            let (status, got) = client.get("/chunks/x", "t", &limiter).await.unwrap();
            assert_eq!(status, StatusCode::OK);
            assert!(got == body, "{} bytes of {}", got.len(), body.len());
            // The listener closes the kept connection meanwhile.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[test]
    fn a_head_is_read_once_complete_with_its_length_and_whether_the_connection_stays() {
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-type: application/octet-stream\r\n\r\nhello";
        let head = |status, content_length, close, len| Ok(Some(Head { status, content_length, close, len }));
        assert_eq!(parse_head(ok), head(StatusCode::OK, Some(5), false, ok.len() - 5));
        assert_eq!(parse_head(&ok[..20]), Ok(None), "incomplete");
        let closing = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(parse_head(closing), head(StatusCode::SERVICE_UNAVAILABLE, Some(0), true, closing.len()));
        let old = b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n";
        assert_eq!(parse_head(old).map(|h| h.map(|h| h.close)), Ok(Some(true)), "HTTP/1.0 closes");
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n").is_err());
        assert!(parse_head(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
    }
}
