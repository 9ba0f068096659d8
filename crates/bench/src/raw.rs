//! `--raw`: calls sent as gRPC frames encoded before the run, over HTTP/2 connections
//! driven by `h2` directly, with no tonic client, no request encoding and no answer
//! decoding beyond the one field that tells a verification's outcome. A call costs the
//! client about what one costs h2load, so rotating through many keys stays server-bound.

use std::sync::Arc;

use anyhow::{Context, bail};
use bytes::{BufMut, Bytes, BytesMut};
use h2::client::SendRequest;
use http::{HeaderValue, Request, Uri};
use keyward_proto::v1;
use prost::Message;
use tokio::net::TcpStream;

/// The frames of one target: every call sends the next of them, in turn.
#[derive(Debug, Clone)]
pub(crate) struct Frames {
    uri: Uri,
    auth: Option<HeaderValue>,
    bodies: Arc<Vec<Bytes>>,
    /// Whether answers are VerifyApiKeyResponses, whose code is read.
    verify: bool,
}

impl Frames {
    /// Health/Check with an empty request.
    pub(crate) fn health(addr: &str) -> anyhow::Result<Self> {
        let uri = format!("http://{addr}/grpc.health.v1.Health/Check").parse()?;
        Ok(Self { uri, auth: None, bodies: Arc::new(vec![frame(&[])]), verify: false })
    }

    /// VerifyApiKey with each of `keys`, authenticated as `auth`.
    pub(crate) fn verify(addr: &str, keys: &[String], auth: Option<&str>) -> anyhow::Result<Self> {
        let uri = format!("http://{addr}/keyward.v1.ApiKeyService/VerifyApiKey").parse()?;
        let auth = auth.map(|key| HeaderValue::from_str(&format!("Bearer {key}"))).transpose()?;
        let bodies = keys
            .iter()
            .map(|key| frame(&v1::VerifyApiKeyRequest { key: key.clone(), ..Default::default() }.encode_to_vec()))
            .collect();
        Ok(Self { uri, auth, bodies: Arc::new(bodies), verify: true })
    }

    pub(crate) fn len(&self) -> usize {
        self.bodies.len()
    }
}

/// A gRPC frame: uncompressed flag, big-endian length, message.
fn frame(message: &[u8]) -> Bytes {
    let mut framed = BytesMut::with_capacity(5 + message.len());
    framed.put_u8(0);
    framed.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
    framed.put_slice(message);
    framed.freeze()
}

/// An HTTP/2 connection to `addr`, its I/O driven by a task of its own.
pub(crate) async fn connect(addr: &str) -> anyhow::Result<SendRequest<Bytes>> {
    let tcp = TcpStream::connect(addr).await.with_context(|| format!("cannot connect to {addr}"))?;
    tcp.set_nodelay(true)?;
    let (send, connection) = h2::client::handshake(tcp).await?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            eprintln!("HTTP/2 connection ended: {err}");
        }
    });
    Ok(send)
}

/// One call with frame `index` (modulo their number): its gRPC status code (0 is OK)
/// and, for a verification answered OK, the answer's verification code.
pub(crate) async fn call(
    send: &SendRequest<Bytes>,
    frames: &Frames,
    index: usize,
) -> anyhow::Result<(i32, Option<i32>)> {
    let mut send = send.clone().ready().await?;
    let mut request = Request::post(frames.uri.clone())
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())?;
    if let Some(auth) = &frames.auth {
        request.headers_mut().insert("authorization", auth.clone());
    }
    let (response, mut stream) = send.send_request(request, false)?;
    stream.send_data(frames.bodies[index % frames.bodies.len()].clone(), true)?;
    let response = response.await?;
    let (head, mut body) = response.into_parts();
    let mut answer = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        body.flow_control().release_capacity(chunk.len())?;
        answer.extend_from_slice(&chunk);
    }
    // A trailers-only answer (an error) carries its status in the headers.
    let trailers = body.trailers().await?;
    let status = trailers.as_ref().unwrap_or(&head.headers).get("grpc-status").context("no grpc-status")?;
    let code: i32 = status.to_str()?.parse()?;
    if code != 0 || !frames.verify {
        return Ok((code, None));
    }
    if answer.len() < 5 {
        bail!("a VerifyApiKey answer without a message");
    }
    Ok((code, Some(Verdict::decode(&answer[5..])?.code)))
}

/// The one field of a VerifyApiKeyResponse the tally needs; prost skips the others (the
/// key, the balances) without decoding them.
#[derive(Clone, PartialEq, Message)]
struct Verdict {
    #[prost(int32, tag = "2")]
    code: i32,
}
