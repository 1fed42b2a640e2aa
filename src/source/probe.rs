//! Why a network camera refused us. OpenCV reports only "not opened" and keeps FFmpeg's log to
//! itself, so a camera answering `401 Unauthorized` looked the same as one that is down. After
//! a failed open (never on the frame path) one plain request is sent, with the URL's own
//! credentials as Basic authentication, and the status line read: a 401 or 403 means the
//! user and password are the problem, and the message can say so.
//!
//! Only `rtsp://` and `http://` are probed (no TLS here). A camera demanding Digest answers 401
//! to our Basic attempt even with a right password; FFmpeg would have done Digest, so when its
//! open failed as well the credentials are still the likeliest cause.

use base64::Engine;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// What the probe learnt; `None` from [`probe`] means nothing useful (any other answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 401 or 403 although the URL carries a user and password.
    BadCredentials(u16),
    /// 401 or 403 and the URL carries no credentials.
    CredentialsNeeded(u16),
}

impl Refusal {
    /// The reason shown after "cannot be opened as a video".
    pub fn reason(self) -> String {
        match self {
            Refusal::BadCredentials(code) => format!(
                "authentication failed: the camera answered {code} to the user and password in \
                 the URL; check them"
            ),
            Refusal::CredentialsNeeded(code) => format!(
                "authentication failed: the camera answered {code} and the URL has no \
                 credentials; add them as scheme://user:password@host/..."
            ),
        }
    }
}

/// Parts of a URL the probe needs.
struct Target<'a> {
    rtsp: bool,
    host: &'a str,
    port: u16,
    /// The URL without its credentials (RTSP requests carry the absolute URL).
    bare: String,
    path: &'a str,
    user: Option<(String, String)>,
}

fn split(url: &str) -> Option<Target<'_>> {
    let (scheme, rest) = url.split_once("://")?;
    let (rtsp, default_port) = match scheme.to_ascii_lowercase().as_str() {
        "rtsp" => (true, 554),
        "http" => (false, 80),
        _ => return None,
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = (&rest[..end], &rest[end..]);
    let (creds, hostport) = match authority.rfind('@') {
        Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
        None => (None, authority),
    };
    let user = creds.map(|c| {
        let (u, p) = c.split_once(':').unwrap_or((c, ""));
        (percent_decode(u), percent_decode(p))
    });
    let (host, port) = if hostport.starts_with('[') {
        let close = hostport.find(']')?;
        let port = hostport[close + 1..].strip_prefix(':');
        (&hostport[1..close], port)
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    let port = match port {
        Some(p) => p.parse().ok()?,
        None => default_port,
    };
    Some(Target {
        rtsp,
        host,
        port,
        bare: format!("{scheme}://{hostport}{path}"),
        path: if path.is_empty() { "/" } else { path },
        user,
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The request the probe sends: RTSP `DESCRIBE` or HTTP `GET`, closing after the answer.
fn request(t: &Target) -> String {
    let auth = t
        .user
        .as_ref()
        .map(|(u, p)| {
            format!(
                "Authorization: Basic {}\r\n",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        })
        .unwrap_or_default();
    if t.rtsp {
        format!(
            "DESCRIBE {} RTSP/1.0\r\nCSeq: 1\r\nAccept: application/sdp\r\nUser-Agent: vigil\r\n{auth}\r\n",
            t.bare
        )
    } else {
        format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: vigil\r\nConnection: close\r\n{auth}\r\n",
            t.path, t.host
        )
    }
}

/// The status code of the first line of an RTSP or HTTP answer.
fn status(head: &[u8]) -> Option<u16> {
    let line = head.split(|&c| c == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut words = line.split_whitespace();
    let proto = words.next()?;
    if !(proto.starts_with("RTSP/") || proto.starts_with("HTTP/")) {
        return None;
    }
    words.next()?.parse().ok()
}

/// One request to `url` within `timeout` (connect, then each read and write); `Some` when the
/// answer is an authentication refusal.
pub fn probe(url: &str, timeout: Duration) -> Option<Refusal> {
    let t = split(url)?;
    let addr = (t.host, t.port).to_socket_addrs().ok()?.next()?;
    let mut s = TcpStream::connect_timeout(&addr, timeout).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    s.set_write_timeout(Some(timeout)).ok()?;
    s.write_all(request(&t).as_bytes()).ok()?;
    // The status line is all we need; 512 bytes is more than any status line.
    let mut head = [0u8; 512];
    let mut got = 0;
    while got < head.len() && !head[..got].contains(&b'\n') {
        match s.read(&mut head[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    match status(&head[..got])? {
        code @ (401 | 403) if t.user.is_some() => Some(Refusal::BadCredentials(code)),
        code @ (401 | 403) => Some(Refusal::CredentialsNeeded(code)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_split_with_their_credentials_decoded() {
        let t = split("rtsp://admin:p%40ss:w@10.0.0.5:8554/live?ch=1").unwrap();
        assert!(t.rtsp);
        assert_eq!((t.host, t.port), ("10.0.0.5", 8554));
        assert_eq!(t.bare, "rtsp://10.0.0.5:8554/live?ch=1");
        assert_eq!(t.user, Some(("admin".into(), "p@ss:w".into())));
        let t = split("http://cam/video.mjpg").unwrap();
        assert_eq!((t.host, t.port, t.path), ("cam", 80, "/video.mjpg"));
        assert!(t.user.is_none());
        assert!(split("https://cam/x").is_none());
        assert!(split("rtsp://cam:abc/x").is_none());
    }

    #[test]
    fn status_lines_are_read_from_rtsp_and_http() {
        assert_eq!(
            status(b"RTSP/1.0 401 Unauthorized\r\nCSeq: 1\r\n"),
            Some(401)
        );
        assert_eq!(status(b"HTTP/1.1 403 Forbidden\r\n"), Some(403));
        assert_eq!(status(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(status(b""), None);
    }

    #[test]
    fn an_http_camera_answering_401_is_an_authentication_failure() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            for _ in 0..2 {
                let (mut c, _) = l.accept().unwrap();
                let mut buf = [0u8; 1024];
                let n = c.read(&mut buf).unwrap();
                let req = String::from_utf8_lossy(&buf[..n]).into_owned();
                let _ = c.write_all(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n");
                assert!(req.starts_with("GET /v.mjpg HTTP/1.1"), "{req}");
            }
        });
        let t = Duration::from_secs(5);
        assert_eq!(
            probe(&format!("http://127.0.0.1:{port}/v.mjpg"), t),
            Some(Refusal::CredentialsNeeded(401))
        );
        assert_eq!(
            probe(&format!("http://u:p@127.0.0.1:{port}/v.mjpg"), t),
            Some(Refusal::BadCredentials(401))
        );
        server.join().unwrap();
    }
}
