//! Network sinks: every event goes into the sink's [`Spool`] first (a local append, so the
//! events stage never waits on the network), and a delivery thread per sink publishes from the
//! spool's front, advancing it only once the peer has acknowledged. While the peer is down,
//! attempts back off (0.5 s doubling to 30 s); when it returns, the spool replays in order.
//! Delivery is at least once: consumers de-duplicate by event `id`.

use super::spool::Spool;
use super::Sink;
use crate::metrics::{Metrics, Outcome};
use crate::shutdown::{Shutdown, Why};
use std::io;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Something that takes one event at a time and says when it has it.
pub trait Publisher: Send {
    /// Delivers one event line; `Ok` only once the peer acknowledged it.
    fn publish(&mut self, line: &str) -> Result<(), PublishError>;
    /// Called once at the end, while the peer may still be reachable.
    fn close(&mut self) {}
}

/// A spool and the thread that empties it.
pub struct SpooledSink {
    name: &'static str,
    spool: Arc<Spool>,
    depth: prometheus::IntGauge,
    closing: Shutdown,
    thread: Option<JoinHandle<()>>,
    /// With `fsync: interval`: forces appends to disk on time, also while the delivery thread
    /// waits on an unreachable peer.
    syncer: Option<JoinHandle<()>>,
    /// How long `close` lets the thread deliver what is spooled.
    drain: Duration,
}

impl SpooledSink {
    pub fn start(
        name: &'static str,
        spool: Spool,
        mut publisher: Box<dyn Publisher>,
        drain: Duration,
        metrics: Arc<Metrics>,
    ) -> io::Result<SpooledSink> {
        let spool = Arc::new(spool);
        let metrics_depth = metrics.spool_depth(name);
        metrics_depth.set(spool.depth() as i64);
        let closing = Shutdown::new();
        let syncer = match spool.sync_interval() {
            Some(every) => {
                let (s, c) = (spool.clone(), closing.clone());
                Some(
                    std::thread::Builder::new()
                        .name(format!("spool-sync-{name}"))
                        .spawn(move || {
                            while c.sleep(every) {
                                if let Err(e) = s.sync_due() {
                                    tracing::error!(sink = name, "{e}");
                                }
                            }
                        })?,
                )
            }
            None => None,
        };
        let (s, c) = (spool.clone(), closing.clone());
        let thread = std::thread::Builder::new()
            .name(format!("sink-{name}"))
            .spawn(move || {
                let ok = metrics.sink_published(name, Outcome::Ok);
                let failed = metrics.sink_published(name, Outcome::Error);
                let depth = metrics.spool_depth(name);
                let dropped = metrics.spool_dropped(name);
                let mut failures = 0u32;
                let mut reported = 0u64;
                loop {
                    depth.set(s.depth() as i64);
                    let d = s.dropped();
                    dropped.inc_by(d - reported);
                    reported = d;
                    let next = match s.peek(Duration::from_millis(100)) {
                        Ok(Some(next)) => next,
                        Ok(None) if c.is_cancelled() => break,
                        Ok(None) => continue,
                        Err(e) => {
                            tracing::error!(sink = name, "{e}");
                            std::thread::sleep(Duration::from_secs(1));
                            continue;
                        }
                    };
                    let (line, pos) = next;
                    match publisher.publish(&line) {
                        Ok(()) => {
                            ok.inc();
                            if failures > 0 {
                                tracing::info!(sink = name, "delivering again");
                            }
                            failures = 0;
                            if let Err(e) = s.commit(pos) {
                                tracing::error!(sink = name, "{e}");
                            }
                        }
                        Err(e) => {
                            failed.inc();
                            if failures == 0 {
                                tracing::warn!(
                                    sink = name,
                                    "cannot deliver: {e}; spooling ({} waiting) and retrying",
                                    s.depth()
                                );
                            }
                            failures = failures.saturating_add(1);
                            if c.is_cancelled() {
                                break;
                            }
                            let wait = Duration::from_millis(
                                (500u64 << failures.min(6).saturating_sub(1)).min(10_000),
                            );
                            c.sleep(wait);
                        }
                    }
                }
                depth.set(s.depth() as i64);
                publisher.close();
            })?;
        Ok(SpooledSink {
            name,
            depth: metrics_depth,
            spool,
            closing,
            thread: Some(thread),
            syncer,
            drain,
        })
    }
}

impl Sink for SpooledSink {
    fn name(&self) -> &'static str {
        self.name
    }

    fn write_line(&mut self, line: &str) -> io::Result<()> {
        self.spool.push(line)?;
        self.depth.set(self.spool.depth() as i64);
        Ok(())
    }

    /// Gives the thread `drain` to deliver what is spooled; what is left stays on disk for the
    /// next run.
    fn close(&mut self) -> io::Result<()> {
        let until = Instant::now() + self.drain;
        while self.spool.depth() > 0 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.closing.cancel(Why::Exit);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some(t) = self.syncer.take() {
            let _ = t.join();
        }
        self.spool.sync_all()?;
        let left = self.spool.depth();
        if left > 0 {
            tracing::warn!(
                sink = self.name,
                "{left} events stay spooled for the next run"
            );
        }
        Ok(())
    }
}

/// Why a delivery failed (it is retried from the spool).
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("a spooled line is not an event: {0}")]
    BadLine(String),
    #[error("no answer within {0} ms")]
    Timeout(u128),
    /// The broker or the server refused or failed (its message, credentials scrubbed).
    #[error("{0}")]
    Failed(String),
}

/// The stream and type of an event line, for topics.
pub(super) fn stream_and_type(line: &str) -> Result<(String, String), PublishError> {
    let v: serde_json::Value =
        serde_json::from_str(line).map_err(|e| PublishError::BadLine(e.to_string()))?;
    let field = |k: &str| {
        v[k].as_str()
            .map(String::from)
            .ok_or_else(|| PublishError::BadLine(format!("no `{k}`")))
    };
    Ok((field("stream")?, field("type")?))
}

/// MQTT 3.1.1 through rumqttc: QoS 1 publishes to `<prefix>/<stream>/<event type>`, a retained
/// `<prefix>/available` of `online` on every connection and `offline` as the last will and at
/// a clean end.
pub struct Mqtt {
    options: rumqttc::MqttOptions,
    prefix: String,
    timeout: Duration,
    conn: Option<(rumqttc::Client, rumqttc::Connection)>,
}

impl Mqtt {
    pub fn new(
        host: &str,
        port: u16,
        client_id: &str,
        prefix: &str,
        credentials: Option<(String, String)>,
        timeout: Duration,
    ) -> Mqtt {
        let mut options = rumqttc::MqttOptions::new(client_id, host, port);
        options.set_keep_alive(Duration::from_secs(10));
        options.set_clean_session(true);
        options.set_last_will(rumqttc::LastWill::new(
            format!("{prefix}/available"),
            "offline",
            rumqttc::QoS::AtLeastOnce,
            true,
        ));
        if let Some((u, p)) = credentials {
            options.set_credentials(u, p);
        }
        Mqtt {
            options,
            prefix: prefix.to_string(),
            timeout,
            conn: None,
        }
    }

    /// Drives the connection until `want` matches an incoming packet.
    fn wait_for(
        conn: &mut rumqttc::Connection,
        timeout: Duration,
        want: impl Fn(&rumqttc::Packet) -> bool,
    ) -> Result<(), PublishError> {
        let until = Instant::now() + timeout;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(PublishError::Timeout(timeout.as_millis()));
            }
            match conn.recv_timeout(left) {
                Ok(Ok(rumqttc::Event::Incoming(p))) if want(&p) => return Ok(()),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(PublishError::Failed(e.to_string())),
                Err(_) => return Err(PublishError::Timeout(timeout.as_millis())),
            }
        }
    }

    fn publish_acked(
        client: &rumqttc::Client,
        conn: &mut rumqttc::Connection,
        timeout: Duration,
        topic: String,
        retain: bool,
        payload: &[u8],
    ) -> Result<(), PublishError> {
        client
            .try_publish(topic, rumqttc::QoS::AtLeastOnce, retain, payload.to_vec())
            .map_err(|e| PublishError::Failed(e.to_string()))?;
        Self::wait_for(conn, timeout, |p| matches!(p, rumqttc::Packet::PubAck(_)))
    }

    fn connect(&mut self) -> Result<(), PublishError> {
        let (client, mut conn) = rumqttc::Client::new(self.options.clone(), 16);
        Self::wait_for(&mut conn, self.timeout, |p| {
            matches!(p, rumqttc::Packet::ConnAck(_))
        })?;
        let topic = format!("{}/available", self.prefix);
        Self::publish_acked(&client, &mut conn, self.timeout, topic, true, b"online")?;
        self.conn = Some((client, conn));
        Ok(())
    }
}

impl Publisher for Mqtt {
    fn publish(&mut self, line: &str) -> Result<(), PublishError> {
        let (stream, kind) = stream_and_type(line)?;
        if self.conn.is_none() {
            self.connect()?;
        }
        let (client, conn) = self.conn.as_mut().expect("connected");
        let topic = format!("{}/{stream}/{kind}", self.prefix);
        let r = Self::publish_acked(client, conn, self.timeout, topic, false, line.as_bytes());
        if r.is_err() {
            // A fresh connection next time: nothing half-sent is replayed behind our back.
            self.conn = None;
        }
        r
    }

    fn close(&mut self) {
        if let Some((client, mut conn)) = self.conn.take() {
            let topic = format!("{}/available", self.prefix);
            let _ = Self::publish_acked(&client, &mut conn, self.timeout, topic, true, b"offline");
            let _ = client.disconnect();
            let _ = Self::wait_for(&mut conn, Duration::from_millis(500), |_| false);
        }
    }
}

/// HTTP POST of each event's JSON; any 2xx is delivery. With a secret, the body's
/// HMAC-SHA256 goes in `X-Vigil-Signature: sha256=<hex>`.
pub struct Webhook {
    url: String,
    shown: String,
    agent: ureq::Agent,
    secret: Option<Vec<u8>>,
}

impl Webhook {
    pub fn new(url: &str, timeout: Duration, secret: Option<&str>) -> Webhook {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .build()
            .into();
        Webhook {
            url: url.to_string(),
            shown: crate::url::redact(url),
            agent,
            secret: secret.map(|s| s.as_bytes().to_vec()),
        }
    }
}

/// `sha256=<hex>` of HMAC-SHA256(`secret`, `body`).
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC takes any key size");
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

impl Publisher for Webhook {
    fn publish(&mut self, line: &str) -> Result<(), PublishError> {
        let mut req = self
            .agent
            .post(&self.url)
            .header("Content-Type", "application/json");
        if let Some(secret) = &self.secret {
            req = req.header("X-Vigil-Signature", &signature(secret, line.as_bytes()));
        }
        match req.send(line) {
            Ok(_) => Ok(()),
            Err(e) => Err(PublishError::Failed(format!(
                "POST {}: {}",
                self.shown,
                crate::url::scrub(&e.to_string(), &self.url)
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_match_a_published_hmac_sha256_vector() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
