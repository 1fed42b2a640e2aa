//! The `nats` sink: NATS JetStream through async-nats, behind the disk spool like MQTT and the
//! webhook. Each event goes to `<prefix>.<stream>.<type>` with its id as the JetStream message
//! id (`Nats-Msg-Id`), and counts as delivered only once the server acknowledged storing it
//! (a duplicate acknowledged as such counts too: the server has it). A replay from the spool
//! (after an outage, a timeout whose ack was lost, or a kill -9) therefore stores each event
//! once, as long as it reaches the server within the stream's duplicate window.
//!
//! Subjects: the event type keeps its dot, so `face.identified` is two subject tokens
//! (`vigil.door.face.identified`) and `vigil.*.face.>` takes every face event. The stream id
//! is one token: bytes other than ASCII letters, digits, `_` and `-` are written `%XX` (so a
//! stream `hall.2` is `hall%2E2`; ids are validated to letters, digits, `_`, `-`, `.`, so the
//! dot is the only one met in practice). The mapping is one to one; the event's `stream`
//! field has the id as given.
//!
//! The client runs on a one-thread tokio runtime of its own (`sink-nats-io`), so the
//! connection answers the server's pings while the delivery thread waits; the delivery thread
//! blocks on each publish and its ack. Once connected, async-nats reconnects by itself; while
//! it is away, publishes time out and stay spooled.

use super::deliver::{stream_and_type, PublishError, Publisher};
use async_nats::jetstream;
use std::time::Duration;

/// What the `nats` sink needs from its config.
#[derive(Debug, Clone)]
pub struct NatsOptions {
    pub url: String,
    pub prefix: String,
    /// The JetStream stream that stores the events.
    pub jetstream: String,
    /// Create `jetstream` (subjects `<prefix>.>`) when it does not exist.
    pub create: bool,
    pub duplicate_window: Duration,
    pub timeout: Duration,
}

pub struct Nats {
    o: NatsOptions,
    /// The URL with its credentials replaced, for messages.
    shown: String,
    rt: tokio::runtime::Runtime,
    client: Option<async_nats::Client>,
    /// Set once the stream is known to exist.
    js: Option<jetstream::Context>,
}

/// `id` as one subject token: ASCII letters, digits, `_` and `-` as they are, every other byte
/// as `%XX` (upper-case hex).
pub fn subject_token(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `%XX` sequences of a URL's user part as the bytes they stand for.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The subject of an event.
pub fn subject(prefix: &str, stream: &str, kind: &str) -> String {
    format!("{prefix}.{}.{kind}", subject_token(stream))
}

impl Nats {
    pub fn new(o: NatsOptions) -> std::io::Result<Nats> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("sink-nats-io")
            .enable_all()
            .build()?;
        Ok(Nats {
            shown: crate::url::redact(&o.url),
            o,
            rt,
            client: None,
            js: None,
        })
    }

    fn failed(&self, what: &str, e: impl std::fmt::Display) -> PublishError {
        PublishError::Failed(format!(
            "NATS {}: {what}: {}",
            self.shown,
            crate::url::scrub(&e.to_string(), &self.o.url)
        ))
    }

    /// Connects (once; async-nats reconnects by itself after that) and makes sure the stream
    /// exists.
    fn ready(&mut self) -> Result<jetstream::Context, PublishError> {
        if let Some(js) = &self.js {
            return Ok(js.clone());
        }
        if self.client.is_none() {
            let addr: async_nats::ServerAddr = self
                .o
                .url
                .parse()
                .map_err(|e| self.failed("not a NATS URL", e))?;
            let mut opts = async_nats::ConnectOptions::new()
                .name("vigil")
                .connection_timeout(self.o.timeout)
                .request_timeout(Some(self.o.timeout));
            // The client does not take credentials from the URL itself.
            match (addr.username(), addr.password()) {
                (Some(user), Some(pass)) => {
                    opts = opts.user_and_password(percent_decode(user), percent_decode(pass))
                }
                (Some(token), None) => opts = opts.token(percent_decode(token)),
                _ => {}
            }
            let url = self.o.url.clone();
            let connect = async move { async_nats::connect_with_options(url, opts).await };
            let client = self
                .rt
                .block_on(async { tokio::time::timeout(self.o.timeout * 2, connect).await })
                .map_err(|_| PublishError::Timeout(self.o.timeout.as_millis() * 2))?
                .map_err(|e| self.failed("cannot connect", e))?;
            tracing::info!(sink = "nats", "connected to {}", self.shown);
            self.client = Some(client);
        }
        let client = self.client.clone().expect("connected");
        // The context spawns its acknowledgement task on the runtime it is made in.
        let _in_runtime = self.rt.enter();
        let mut js = jetstream::new(client);
        js.set_timeout(self.o.timeout);
        let name = self.o.jetstream.clone();
        if self.o.create {
            let config = jetstream::stream::Config {
                name: name.clone(),
                subjects: vec![format!("{}.>", self.o.prefix)],
                storage: jetstream::stream::StorageType::File,
                duplicate_window: self.o.duplicate_window,
                ..Default::default()
            };
            let made = self.rt.block_on(js.get_or_create_stream(config));
            made.map_err(|e| self.failed(&format!("cannot find or create stream `{name}`"), e))?;
        } else {
            let found = self.rt.block_on(js.get_stream(&name));
            found.map_err(|e| {
                self.failed(
                    &format!(
                        "stream `{name}` (create_stream is false: it must exist and take `{}.>`)",
                        self.o.prefix
                    ),
                    e,
                )
            })?;
        }
        self.js = Some(js.clone());
        Ok(js)
    }
}

impl Publisher for Nats {
    fn publish(&mut self, line: &str) -> Result<(), PublishError> {
        let (stream, kind) = stream_and_type(line)?;
        let id = serde_json::from_str::<serde_json::Value>(line)
            .ok()
            .and_then(|v| v["id"].as_str().map(String::from))
            .ok_or_else(|| PublishError::BadLine("no `id`".into()))?;
        let js = self.ready()?;
        let subject = subject(&self.o.prefix, &stream, &kind);
        let msg = jetstream::message::PublishMessage::build()
            .payload(line.to_string().into())
            .message_id(&id);
        let sent = self.rt.block_on(async {
            let ack = js.send_publish(subject.clone(), msg).await?;
            ack.await
        });
        match sent {
            Ok(_ack) => Ok(()),
            Err(e) => {
                use jetstream::context::PublishErrorKind as K;
                let offline = self.client.as_ref().is_some_and(|c| {
                    c.connection_state() != async_nats::connection::State::Connected
                });
                match e.kind() {
                    // Deleted meanwhile, or never taking this subject: look again next time
                    // (and create it, when allowed).
                    K::StreamNotFound => {
                        self.js = None;
                        Err(self
                            .failed(&format!("no JetStream stream takes subject `{subject}`"), e))
                    }
                    K::TimedOut if offline => Err(self.failed(
                        "disconnected (reconnecting)",
                        format!(
                            "no acknowledgement within {} ms",
                            self.o.timeout.as_millis()
                        ),
                    )),
                    K::TimedOut => Err(PublishError::Timeout(self.o.timeout.as_millis())),
                    _ => Err(self.failed(&format!("publish to `{subject}`"), e)),
                }
            }
        }
    }

    fn close(&mut self) {
        if let Some(c) = self.client.take() {
            let _ = self
                .rt
                .block_on(async { tokio::time::timeout(Duration::from_secs(1), c.flush()).await });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_keep_type_dots_and_encode_the_stream_id_as_one_token() {
        assert_eq!(
            subject("vigil", "door", "face.identified"),
            "vigil.door.face.identified"
        );
        assert_eq!(
            subject("site1.vigil", "hall.2", "stream.up"),
            "site1.vigil.hall%2E2.stream.up"
        );
        // One to one: `a.b` and `a%2Eb` (were `%` allowed) and `a_b` stay apart.
        assert_ne!(subject_token("a.b"), subject_token("a_b"));
        assert_ne!(subject_token("a.b"), subject_token("a%2Eb"));
        assert_eq!(subject_token("x y*>"), "x%20y%2A%3E");
    }

    #[test]
    fn url_credentials_are_percent_decoded() {
        assert_eq!(percent_decode("p%40ss%3Aw0rd"), "p@ss:w0rd");
        assert_eq!(percent_decode("plain"), "plain");
        assert_eq!(percent_decode("odd%4"), "odd%4");
    }
}
