//! What a stream's `url` names, and how it may be shown: credentials never leave this module
//! in the clear.

use std::ops::Range;
use std::path::{Path, PathBuf};

/// The kinds of source vigil reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceKind {
    /// A video file (path resolved against the config's folder).
    File(PathBuf),
    /// `rtsp://`, `rtsps://`, `http://` or `https://` through OpenCV's FFmpeg backend.
    Network(String),
    /// A V4L2 camera: `/dev/videoN`, or a bare index `N` meaning `/dev/videoN`.
    Device(String),
}

/// The schemes FFmpeg reads for us.
pub const NETWORK_SCHEMES: [&str; 4] = ["rtsp", "rtsps", "http", "https"];

impl SourceKind {
    /// Classifies `url`; `resolve` turns a relative file path into an absolute one. `Err` names
    /// a scheme vigil does not read.
    pub fn parse(url: &str, resolve: impl Fn(&Path) -> PathBuf) -> Result<SourceKind, String> {
        let url = url.trim();
        if let Some(scheme) = scheme(url) {
            let lower = scheme.to_ascii_lowercase();
            return if NETWORK_SCHEMES.contains(&lower.as_str()) {
                Ok(SourceKind::Network(url.to_string()))
            } else if lower == "file" {
                Ok(SourceKind::File(resolve(Path::new(&url[7..]))))
            } else {
                Err(format!(
                    "`{scheme}://` is not a source vigil reads: use rtsp://, rtsps://, http://, \
                     https://, a file path or a camera (/dev/videoN)"
                ))
            };
        }
        if !url.is_empty() && url.chars().all(|c| c.is_ascii_digit()) && url.len() <= 3 {
            return Ok(SourceKind::Device(format!(
                "/dev/video{}",
                url.parse::<u32>().unwrap_or(0)
            )));
        }
        if url
            .strip_prefix("/dev/video")
            .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
        {
            return Ok(SourceKind::Device(url.to_string()));
        }
        Ok(SourceKind::File(resolve(Path::new(url))))
    }

    /// Cameras and network streams: they run in real time, may drop out and come back.
    pub fn is_live(&self) -> bool {
        !matches!(self, SourceKind::File(_))
    }

    /// How the source may appear in logs, events and errors.
    pub fn display(&self) -> String {
        match self {
            SourceKind::File(p) => p.display().to_string(),
            SourceKind::Network(u) => redact(u),
            SourceKind::Device(d) => d.clone(),
        }
    }
}

/// What is wrong with the host and port of a network URL, if anything: FFmpeg would only say
/// "Port missing in uri" when it is tried, and `check` used to pass `rtsp://h:abc/x`.
pub fn authority_problem(url: &str) -> Option<String> {
    let start = url.find("://")? + 3;
    let rest = &url[start..];
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    let (host, port) = if let Some(v6) = host_port.strip_prefix('[') {
        match v6.split_once(']') {
            Some((h, tail)) => (h, tail.strip_prefix(':')),
            None => return Some("the IPv6 address has no closing `]`".into()),
        }
    } else {
        match host_port.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host_port, None),
        }
    };
    if host.is_empty() {
        return Some("has no host".into());
    }
    match port {
        Some(p) if p.parse::<u16>().map_or(true, |n| n == 0) => Some(format!(
            "port `{}` is not a number from 1 to 65535",
            crate::echo::echo(p)
        )),
        _ => None,
    }
}

fn scheme(url: &str) -> Option<&str> {
    let (scheme, _) = url.split_once("://")?;
    (!scheme.is_empty()
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '-' || c == '.'))
    .then_some(scheme)
}

/// Schemes whose bare `user@` is a token (NATS), not a user name.
fn token_scheme(scheme: &str) -> bool {
    ["nats", "tls", "ws", "wss"]
        .iter()
        .any(|s| scheme.eq_ignore_ascii_case(s))
}

/// Query parameters whose values are secrets on common cameras (`?user=admin&password=...`).
fn secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["pass", "pwd", "token", "secret", "key", "auth", "sig"]
        .iter()
        .any(|s| k.contains(s))
}

/// Byte ranges of `url`'s secrets, in order: the password of `user:password@` (credentials end
/// at the authority's last `@`; the authority ends at the first `/`, `?` or `#`) and the values
/// of secret query parameters.
fn secret_spans(url: &str) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return out;
    };
    let rest = &url[start..];
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    if let Some(at) = rest[..end].rfind('@') {
        if let Some(colon) = rest[..at].find(':') {
            out.push(start + colon + 1..start + at);
        } else if at > 0 && token_scheme(&url[..start - 3]) {
            // `nats://TOKEN@host`: a bare user part is the secret itself.
            out.push(start..start + at);
        }
    }
    let fragment = rest.find('#').unwrap_or(rest.len());
    if let Some(q) = rest[..fragment].find('?') {
        let mut pos = start + q + 1;
        for kv in rest[q + 1..fragment].split('&') {
            if let Some(eq) = kv.find('=') {
                if secret_key(&kv[..eq]) {
                    out.push(pos + eq + 1..pos + kv.len());
                }
            }
            pos += kv.len() + 1;
        }
    }
    out
}

/// `url` with the password of `user:password@` and secret query values replaced by `***`.
/// Anything that is not a URL comes back unchanged.
pub fn redact(url: &str) -> String {
    let mut out = String::with_capacity(url.len());
    let mut last = 0;
    for span in secret_spans(url) {
        out.push_str(&url[last..span.start]);
        out.push_str("***");
        last = span.end;
    }
    out.push_str(&url[last..]);
    out
}

/// Replaces every occurrence of `url`'s secrets in `text` (an error message from a library that
/// echoes the URL it was given).
pub fn scrub(text: &str, url: &str) -> String {
    let mut out = text.replace(url, &redact(url));
    // At least 3 characters, so scrubbing never mangles ordinary text.
    for span in secret_spans(url).into_iter().filter(|s| s.len() >= 3) {
        out = out.replace(&url[span], "***");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_and_secret_parameters_are_redacted() {
        assert_eq!(
            redact("rtsp://admin:hunter2@10.0.0.5:554/stream1"),
            "rtsp://admin:***@10.0.0.5:554/stream1"
        );
        // A password may itself contain `@` and `:`; the host is after the last `@`.
        assert_eq!(
            redact("rtsp://admin:p@ss:w0rd@cam.local/live?channel=1"),
            "rtsp://admin:***@cam.local/live?channel=1"
        );
        assert_eq!(
            redact("http://cam/video.cgi?user=admin&password=hunter2&res=hd#x"),
            "http://cam/video.cgi?user=admin&password=***&res=hd#x"
        );
        assert_eq!(redact("rtsp://user@cam/x"), "rtsp://user@cam/x");
        assert_eq!(redact("nats://s3cr3tt0k@nats:4222"), "nats://***@nats:4222");
        assert_eq!(redact("nats://u:pw@nats:4222"), "nats://u:***@nats:4222");
        assert_eq!(redact("/videos/a.mp4"), "/videos/a.mp4");
        let url = "rtsp://admin:hunter2@10.0.0.5/x?token=abcdef";
        let said = format!("cannot open {url}: 401 (hunter2 refused, token abcdef)");
        let clean = scrub(&said, url);
        assert!(
            !clean.contains("hunter2") && !clean.contains("abcdef"),
            "{clean}"
        );
        assert!(
            clean.contains("rtsp://admin:***@10.0.0.5/x?token=***"),
            "{clean}"
        );
    }

    #[test]
    fn urls_are_classified() {
        let r = |p: &Path| Path::new("/cfg").join(p);
        assert_eq!(
            SourceKind::parse("rtsp://cam/x", r),
            Ok(SourceKind::Network("rtsp://cam/x".into()))
        );
        assert_eq!(
            SourceKind::parse("HTTPS://cam/x.m3u8", r),
            Ok(SourceKind::Network("HTTPS://cam/x.m3u8".into()))
        );
        assert_eq!(
            SourceKind::parse("0", r),
            Ok(SourceKind::Device("/dev/video0".into()))
        );
        assert_eq!(
            SourceKind::parse("/dev/video12", r),
            Ok(SourceKind::Device("/dev/video12".into()))
        );
        assert_eq!(
            SourceKind::parse("a.mp4", r),
            Ok(SourceKind::File("/cfg/a.mp4".into()))
        );
        assert_eq!(
            SourceKind::parse("file:///v/a.mp4", r),
            Ok(SourceKind::File("/v/a.mp4".into()))
        );
        assert!(SourceKind::parse("ftp://x/y", r)
            .unwrap_err()
            .contains("`ftp://` is not a source"));
    }
}
