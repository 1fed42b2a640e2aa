//! Checks that need no model and no decoder: ranges, names, and that the named files exist.
//! Decoding a stream's first frame and loading the model are done by `pipeline::prepare`.

use super::{DetectorConfig, Loaded, Problem, SinkConfig};
use crate::url::{redact, SourceKind};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;

/// Every problem in the config that can be found without opening videos or models.
pub fn validate(l: &Loaded) -> Vec<Problem> {
    let c = &l.config;
    let mut out = Vec::new();
    let mut p = |path: String, msg: String| out.push(l.problem(path, msg));

    if c.streams.is_empty() && c.api.is_none() {
        p(
            "streams".into(),
            "at least one stream is needed (or an `api` section, to add streams while running)"
                .into(),
        );
    }
    let mut ids = HashSet::new();
    if c.streams.len() > super::MAX_STREAMS {
        // Nothing is checked or probed in a list this long.
        p(
            "streams".into(),
            format!(
                "{} streams listed; one vigil runs at most {} (split them over several)",
                c.streams.len(),
                super::MAX_STREAMS
            ),
        );
    } else {
        for (i, s) in c.streams.iter().enumerate() {
            for (field, msg) in check_stream(l, s) {
                p(format!("streams[{i}].{field}"), msg);
            }
            if check_stream_id(&s.id).is_ok() && !ids.insert(s.id.as_str()) {
                p(
                    format!("streams[{i}].id"),
                    format!("stream id `{}` is used twice", shorten(&s.id)),
                );
            }
        }
    }
    if let Err(e) = crate::cluster::Shard::from_config(c.cluster.plain()) {
        let field = match e {
            crate::cluster::ClusterError::Replicas(_) => "cluster.replicas",
            _ => "cluster.ordinal",
        };
        p(field.into(), e.to_string());
    }
    if let Some(api) = &c.api {
        for (field, msg) in check_api(api) {
            p(format!("api.{field}"), msg);
        }
    }
    let lv = &c.live;
    for (name, v, lo, hi) in [
        ("open_timeout_ms", lv.open_timeout_ms, 100, 600_000),
        ("stall_timeout_ms", lv.stall_timeout_ms, 100, 600_000),
        ("reconnect_initial_ms", lv.reconnect_initial_ms, 10, 600_000),
        ("reconnect_max_ms", lv.reconnect_max_ms, 10, 3_600_000),
    ] {
        if !(lo..=hi).contains(&v) {
            p(
                format!("live.{name}"),
                format!("must be {lo}..={hi} milliseconds, got {v}"),
            );
        }
    }
    if lv.reconnect_max_ms < lv.reconnect_initial_ms {
        p(
            "live.reconnect_max_ms".into(),
            format!(
                "{} ms is below reconnect_initial_ms ({} ms)",
                lv.reconnect_max_ms, lv.reconnect_initial_ms
            ),
        );
    }

    let m = &c.motion;
    if m.threshold == 0 {
        p(
            "motion.threshold".into(),
            "must be 1..=255 grey levels, got 0 (every pixel would count as changed)".into(),
        );
    }
    if !(m.min_area.is_finite() && m.min_area > 0.0 && m.min_area <= 1.0) {
        p(
            "motion.min_area".into(),
            format!(
                "must be a fraction of the frame above 0 and at most 1, got {}",
                m.min_area
            ),
        );
    }
    if m.hold_ms > 600_000 {
        p(
            "motion.hold_ms".into(),
            format!("must be 0..=600000 milliseconds, got {}", m.hold_ms),
        );
    }

    let a = &c.action;
    if a.enabled {
        match &a.model {
            None => p("action.model".into(), "is required while the action branch is enabled (give `path:` and `labels:`, or set `action.enabled: false`)".into()),
            Some(m) => {
                if let Err(e) = check_readable_file(&l.resolve(&m.path)) {
                    p("action.model.path".into(), format!("{e} (the set-up script builds the default models: `make setup`)"));
                }
                if let Err(e) = check_readable_file(&l.resolve(&m.labels)) {
                    p("action.model.labels".into(), e);
                }
            }
        }
    }
    if !(a.sample_fps.is_finite() && a.sample_fps > 0.0 && a.sample_fps <= 1000.0) {
        p(
            "action.sample_fps".into(),
            format!(
                "must be above 0 and at most 1000 frames per second, got {}",
                a.sample_fps
            ),
        );
    }
    if a.frames == 0 || a.frames > 1024 {
        p(
            "action.frames".into(),
            format!("must be 1..=1024 frames, got {}", a.frames),
        );
    }
    if a.stride == 0 {
        p("action.stride".into(), "must be at least 1 frame".into());
    }
    if a.crop == 0 {
        p("action.crop".into(), "must be at least 1 pixel".into());
    } else if a.resize_short_side < a.crop {
        p(
            "action.resize_short_side".into(),
            format!(
                "{} px is smaller than the {} px crop",
                a.resize_short_side, a.crop
            ),
        );
    }
    if let Some(n) = a.max_batch.filter(|n| *n == 0 || *n > 256) {
        p(
            "action.max_batch".into(),
            format!("must be 1..=256 clips, got {n}"),
        );
    }
    if a.schedule.max_skip > 16 {
        p(
            "action.schedule.max_skip".into(),
            format!("must be 0..=16 clips, got {}", a.schedule.max_skip),
        );
    }
    if a.schedule.stable_clips == 0 || a.schedule.stable_clips > 64 {
        p(
            "action.schedule.stable_clips".into(),
            format!("must be 1..=64 clips, got {}", a.schedule.stable_clips),
        );
    }
    if let Some(dir) = &a.snapshots {
        if !l.resolve(dir).is_dir() {
            p(
                "action.snapshots".into(),
                format!("{} is not an existing folder", l.resolve(dir).display()),
            );
        }
    }
    if a.max_wait_ms > 60_000 {
        p(
            "action.max_wait_ms".into(),
            format!("{} ms is over a minute", a.max_wait_ms),
        );
    }
    if !(0..=19).contains(&a.nice) {
        p(
            "action.nice".into(),
            format!(
                "must be 0..=19 (how much lower the classifier runs), got {}",
                a.nice
            ),
        );
    }
    let s = &a.smoother;
    for (name, v) in [
        ("start_threshold", s.start_threshold),
        ("end_threshold", s.end_threshold),
    ] {
        if !(0.0..=1.0).contains(&v) {
            p(
                format!("action.smoother.{name}"),
                format!("must be a probability in 0..1, got {v}"),
            );
        }
    }
    if s.end_threshold > s.start_threshold {
        p(
            "action.smoother.end_threshold".into(),
            format!(
                "{} is above start_threshold {}: a segment would end as it starts",
                s.end_threshold, s.start_threshold
            ),
        );
    }

    let faces = validate_faces(l);

    let mut files = HashSet::new();
    let mut spools = HashSet::new();
    for (i, sink) in c.sinks.iter().enumerate() {
        let spool = match sink {
            SinkConfig::Mqtt {
                host,
                topic_prefix,
                client_id,
                timeout_ms,
                spool,
                ..
            } => {
                if host.trim().is_empty() {
                    p(format!("sinks[{i}].host"), "is empty".into());
                }
                if topic_prefix.is_empty() || topic_prefix.contains(['+', '#']) {
                    p(
                        format!("sinks[{i}].topic_prefix"),
                        format!(
                            "{:?}: must be non-empty, without `+` or `#`",
                            shorten(topic_prefix)
                        ),
                    );
                }
                if client_id.is_empty() {
                    p(format!("sinks[{i}].client_id"), "is empty".into());
                }
                net_timeout(&mut p, i, *timeout_ms);
                Some(spool)
            }
            SinkConfig::Nats(n) => {
                let lower = n.url.trim().to_ascii_lowercase();
                if !(lower.starts_with("nats://") || lower.starts_with("tls://")) {
                    p(
                        format!("sinks[{i}].url"),
                        format!(
                            "{}: must start with nats:// or tls://",
                            shorten(&redact(&n.url))
                        ),
                    );
                } else if let Some(why) = crate::url::authority_problem(&n.url) {
                    p(
                        format!("sinks[{i}].url"),
                        format!("{}: {why}", shorten(&redact(&n.url))),
                    );
                }
                if let Some(why) = prefix_problem(&n.prefix) {
                    p(
                        format!("sinks[{i}].prefix"),
                        format!("{:?}: {why}", shorten(&n.prefix)),
                    );
                }
                if let Some(why) = stream_name_problem(&n.jetstream) {
                    p(
                        format!("sinks[{i}].jetstream"),
                        format!("{:?}: {why}", shorten(&n.jetstream)),
                    );
                }
                if !(1..=86_400).contains(&n.duplicate_window_s) {
                    p(
                        format!("sinks[{i}].duplicate_window_s"),
                        format!("must be 1..=86400 seconds, got {}", n.duplicate_window_s),
                    );
                }
                net_timeout(&mut p, i, n.timeout_ms);
                Some(&n.spool)
            }
            SinkConfig::Webhook {
                url,
                timeout_ms,
                spool,
                ..
            } => {
                let lower = url.to_ascii_lowercase();
                if !(lower.starts_with("http://") || lower.starts_with("https://")) {
                    p(
                        format!("sinks[{i}].url"),
                        format!(
                            "{}: must start with http:// or https://",
                            shorten(&redact(url))
                        ),
                    );
                }
                net_timeout(&mut p, i, *timeout_ms);
                Some(spool)
            }
            _ => None,
        };
        if let Some(spool) = spool {
            let dir = l.resolve(
                spool
                    .dir
                    .as_deref()
                    .unwrap_or(Path::new(&format!("spool/{}", sink.name()))),
            );
            if !spools.insert(dir.clone()) {
                p(
                    format!("sinks[{i}].spool.dir"),
                    format!(
                        "{} is the spool of another sink too (give each its own `spool.dir`)",
                        dir.display()
                    ),
                );
            }
            if spool.max_bytes < 65536 {
                p(
                    format!("sinks[{i}].spool.max_bytes"),
                    format!("{} bytes is below the 65536 minimum", spool.max_bytes),
                );
            }
            if !(10..=60_000).contains(&spool.fsync_interval_ms) {
                p(
                    format!("sinks[{i}].spool.fsync_interval_ms"),
                    format!(
                        "must be 10..=60000 milliseconds, got {}",
                        spool.fsync_interval_ms
                    ),
                );
            }
            if spool.drain_ms > 600_000 {
                p(
                    format!("sinks[{i}].spool.drain_ms"),
                    format!("{} ms is over 10 minutes", spool.drain_ms),
                );
            }
        }
        if let SinkConfig::File { max_bytes, .. } = sink {
            if max_bytes.is_some_and(|m| m < 4096) {
                p(
                    format!("sinks[{i}].max_bytes"),
                    "must be at least 4096 bytes".into(),
                );
            }
        }
        if let SinkConfig::File { path, .. } = sink {
            let full = l.resolve(path);
            if !files.insert(full.clone()) {
                p(
                    format!("sinks[{i}].path"),
                    "the same file is named by two sinks".into(),
                );
            }
            if full.is_dir() {
                p(
                    format!("sinks[{i}].path"),
                    format!("{} is a directory", full.display()),
                );
            } else if let Some(dir) = full.parent().filter(|d| !d.as_os_str().is_empty()) {
                if !dir.is_dir() {
                    p(
                        format!("sinks[{i}].path"),
                        format!("folder {} does not exist", dir.display()),
                    );
                }
            }
        }
    }
    if c.sinks
        .iter()
        .filter(|s| matches!(s, SinkConfig::Stdout))
        .count()
        > 1
    {
        p(
            "sinks".into(),
            "stdout is listed twice: every event would be printed twice".into(),
        );
    }

    if c.metrics.enabled {
        if let Err(e) = c.metrics.listen.parse::<SocketAddr>() {
            p(
                "metrics.listen".into(),
                format!("`{}` is not an address:port ({e})", c.metrics.listen),
            );
        }
    }
    let r = &c.runtime;
    if let Some(lib) = &r.onnxruntime_library {
        if let Err(e) = check_readable_file(&l.resolve(lib)) {
            p(
                "runtime.onnxruntime_library".into(),
                format!(
                    "{e} (the set-up script extracts it from the onnxruntime wheel: `make setup`)"
                ),
            );
        }
    }
    if r.queue_capacity == 0 || r.queue_capacity > 4096 {
        p(
            "runtime.queue_capacity".into(),
            format!("must be 1..=4096 items, got {}", r.queue_capacity),
        );
    }
    if r.intra_threads > 1024 {
        p(
            "runtime.intra_threads".into(),
            format!(
                "must be 0 (one per core) up to 1024 threads, got {}",
                r.intra_threads
            ),
        );
    }
    out.extend(faces);
    out
}

/// The face branch and gallery sections: checked for runs with faces on and for every
/// `vigil gallery` command.
pub fn validate_faces(l: &Loaded) -> Vec<Problem> {
    let f = &l.config.faces;
    let mut out = Vec::new();
    let mut p = |path: &str, msg: String| out.push(l.problem(path, msg));
    let needed =
        f.enabled || l.config.faces.detector.is_some() || l.config.faces.embedder.is_some();
    if needed {
        match &f.detector {
            None => p(
                "faces.detector",
                "is required for the face branch (`type: mtcnn` with `pnet`, `rnet`, `onet`)"
                    .into(),
            ),
            Some(DetectorConfig::Mtcnn {
                pnet,
                rnet,
                onet,
                min_face_px,
                scale_factor,
                thresholds,
                min_probability,
            }) => {
                for (name, path) in [("pnet", pnet), ("rnet", rnet), ("onet", onet)] {
                    if let Err(e) = check_readable_file(&l.resolve(path)) {
                        p(
                            &format!("faces.detector.{name}"),
                            format!(
                                "{e} (the set-up script builds the default models: `make setup`)"
                            ),
                        );
                    }
                }
                if !(*min_face_px >= 12.0 && *min_face_px <= 10_000.0) {
                    p(
                        "faces.detector.min_face_px",
                        format!("must be 12..=10000 pixels, got {min_face_px}"),
                    );
                }
                if !(*scale_factor > 0.1 && *scale_factor < 0.95) {
                    p(
                        "faces.detector.scale_factor",
                        format!("must be between 0.1 and 0.95, got {scale_factor}"),
                    );
                }
                for v in thresholds.iter().chain([min_probability]) {
                    if !(0.0..=1.0).contains(v) {
                        p(
                            "faces.detector",
                            format!(
                                "thresholds and min_probability are probabilities in 0..1, got {v}"
                            ),
                        );
                    }
                }
            }
        }
        match &f.embedder {
            None => p(
                "faces.embedder",
                "is required for the face branch (give `path:`)".into(),
            ),
            Some(e) => {
                if let Err(e) = check_readable_file(&l.resolve(&e.path)) {
                    p(
                        "faces.embedder.path",
                        format!("{e} (the set-up script builds the default models: `make setup`)"),
                    );
                }
            }
        }
    }
    if !(f.sample_fps.is_finite() && f.sample_fps >= 0.0 && f.sample_fps <= 1000.0) {
        p(
            "faces.sample_fps",
            format!(
                "must be 0 (every frame) up to 1000 frames per second, got {}",
                f.sample_fps
            ),
        );
    }
    if f.detect_interval == 0 || f.detect_interval > 1000 {
        p(
            "faces.detect_interval",
            format!("must be 1..=1000 frames, got {}", f.detect_interval),
        );
    }
    if !(0..=19).contains(&f.nice) {
        p(
            "faces.nice",
            format!(
                "must be 0..=19 (how much lower the face branch runs), got {}",
                f.nice
            ),
        );
    }
    if !(f.match_threshold > 0.0 && f.match_threshold.is_finite()) {
        p(
            "faces.match_threshold",
            format!("must be a positive distance, got {}", f.match_threshold),
        );
    }
    if f.unknowns.max_groups == 0 || f.unknowns.max_groups > 100_000 {
        p(
            "faces.unknowns.max_groups",
            format!("must be 1..=100000, got {}", f.unknowns.max_groups),
        );
    }
    if f.unknowns.tracks_per_group == 0 || f.unknowns.tracks_per_group > 64 {
        p(
            "faces.unknowns.tracks_per_group",
            format!("must be 1..=64, got {}", f.unknowns.tracks_per_group),
        );
    }
    if f.calibration.tracks_per_person > 64 {
        p(
            "faces.calibration.tracks_per_person",
            format!("must be 0..=64, got {}", f.calibration.tracks_per_person),
        );
    }
    if f.calibration.max_people == 0 || f.calibration.max_people > 1_000_000 {
        p(
            "faces.calibration.max_people",
            format!("must be 1..=1000000, got {}", f.calibration.max_people),
        );
    }
    let tu = &f.tune;
    if !(tu.margin > 0.0 && tu.margin.is_finite()) {
        p(
            "faces.tune.margin",
            format!("must be a positive distance, got {}", tu.margin),
        );
    }
    if tu.out_dim == 0 || tu.out_dim > 4096 {
        p(
            "faces.tune.out_dim",
            format!("must be 1..=4096, got {}", tu.out_dim),
        );
    }
    if tu.steps == 0 || tu.steps > 100_000 {
        p(
            "faces.tune.steps",
            format!("must be 1..=100000, got {}", tu.steps),
        );
    }
    if !(tu.learning_rate > 0.0 && tu.learning_rate <= 1.0) {
        p(
            "faces.tune.learning_rate",
            format!("must be in (0, 1], got {}", tu.learning_rate),
        );
    }
    if !(tu.holdout > 0.0 && tu.holdout < 1.0) {
        p(
            "faces.tune.holdout",
            format!("must be in (0, 1), got {}", tu.holdout),
        );
    }
    if !(tu.far > 0.0 && tu.far < 1.0) {
        p(
            "faces.tune.far",
            format!("must be in (0, 1), got {}", tu.far),
        );
    }
    let t = &f.tracker;
    if !(0.0..=1.0).contains(&t.iou_threshold) || t.iou_threshold == 0.0 {
        p(
            "faces.tracker.iou_threshold",
            format!("must be in (0, 1], got {}", t.iou_threshold),
        );
    }
    if t.embeds_per_track == 0 {
        p(
            "faces.tracker.embeds_per_track",
            "must be at least 1".into(),
        );
    }
    if t.decide_after == 0 || t.decide_after > t.embeds_per_track {
        p(
            "faces.tracker.decide_after",
            format!(
                "must be 1..=embeds_per_track ({}), got {}",
                t.embeds_per_track, t.decide_after
            ),
        );
    }
    if let Some(dir) = &f.snapshots {
        if !l.resolve(dir).is_dir() {
            p(
                "faces.snapshots",
                format!("{} is not an existing folder", l.resolve(dir).display()),
            );
        }
    }
    let g = l.resolve(&l.config.gallery.path);
    if g.is_dir() {
        p("gallery.path", format!("{} is a directory", g.display()));
    } else if let Some(dir) = g.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.is_dir() {
            p(
                "gallery.path",
                format!("folder {} does not exist", dir.display()),
            );
        }
    }
    let ix = &l.config.gallery.index;
    if !(2..=255).contains(&ix.m) {
        p("gallery.index.m", format!("is {}; must be 2 to 255", ix.m));
    }
    if ix.ef_construction < ix.m {
        p(
            "gallery.index.ef_construction",
            format!("is {}; must be at least m ({})", ix.ef_construction, ix.m),
        );
    }
    if ix.ef_search == 0 {
        p("gallery.index.ef_search", "must be at least 1".into());
    }
    if ix.rerank > super::MAX_RERANK {
        p(
            "gallery.index.rerank",
            format!("is {}; must be 0 (off) to {}", ix.rerank, super::MAX_RERANK),
        );
    }
    if l.config.gallery.max_image_pixels == 0 {
        p("gallery.max_image_pixels", "must be at least 1".into());
    }
    if let Some(pg) = &l.config.gallery.postgres {
        let url = pg.url.trim();
        let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
        if !matches!(scheme.as_deref(), Some("postgres" | "postgresql")) {
            p(
                "gallery.postgres.url",
                format!(
                    "{}: must be a postgres://user:password@host:port/database URL",
                    shorten(&redact(url))
                ),
            );
        } else if let Some(why) = crate::url::authority_problem(url) {
            p(
                "gallery.postgres.url",
                format!("{}: {why}", shorten(&redact(url))),
            );
        }
        if pg.connect_timeout_ms == 0 {
            p(
                "gallery.postgres.connect_timeout_ms",
                "must be at least 1".into(),
            );
        }
        if pg.poll_ms == 0 {
            p("gallery.postgres.poll_ms", "must be at least 1".into());
        }
    }
    out
}

/// Stream ids become metric labels and file names: keep them tame.
fn check_stream_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 64 {
        return Err(format!("must be 1 to 64 characters, got {}", id.len()));
    }
    match id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "_-.".contains(*c)))
    {
        Some(c) => Err(format!(
            "`{id}` contains {c:?}: use letters, digits, `_`, `-` and `.`"
        )),
        None => Ok(()),
    }
}

/// What is wrong with a subject prefix, if anything: it must be dot-separated non-empty tokens
/// without wildcards (`*`, `>`) or white space.
fn prefix_problem(prefix: &str) -> Option<&'static str> {
    if prefix.is_empty() {
        return Some("is empty");
    }
    if prefix.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some("contains white space");
    }
    if prefix.split('.').any(str::is_empty) {
        return Some("has an empty token (a leading, trailing or doubled `.`)");
    }
    if prefix.split('.').any(|t| t.contains(['*', '>'])) {
        return Some("contains a wildcard (`*` or `>`)");
    }
    None
}

/// What is wrong with a JetStream stream name, if anything (the server's rule).
fn stream_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("is empty");
    }
    if name.len() > 255 {
        return Some("is longer than 255 bytes");
    }
    if name
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '.' | '*' | '>' | '/' | '\\'))
    {
        return Some("contains white space, `.`, `*`, `>`, `/` or `\\`");
    }
    None
}

fn net_timeout(p: &mut impl FnMut(String, String), i: usize, ms: u64) {
    if !(100..=120_000).contains(&ms) {
        p(
            format!("sinks[{i}].timeout_ms"),
            format!("must be 100..=120000 milliseconds, got {ms}"),
        );
    }
}

/// `realtime` and `loop` describe how a file is read; a camera already runs in real time.
/// Every problem of one stream entry that can be found without opening it, as (field, message):
/// the checks `vigil check` makes on `streams[i]` and the API on a stream it is asked to add.
pub fn check_stream(l: &Loaded, s: &super::StreamConfig) -> Vec<(&'static str, String)> {
    let c = &l.config;
    let mut out = Vec::new();
    if let Err(e) = check_stream_id(&s.id) {
        out.push(("id", e));
    }
    for b in s.branches.iter().flatten() {
        let on = match b {
            super::Branch::Action => c.action.enabled,
            super::Branch::Faces => c.faces.enabled,
        };
        if !on {
            let name = b.as_str();
            out.push((
                "branches",
                format!("lists `{name}`, but {name}.enabled is false"),
            ));
        }
    }
    if s.url.trim().is_empty() {
        out.push(("url", "is empty".into()));
        return out;
    }
    let live_only = |out: &mut Vec<(&'static str, String)>| {
        for (name, on) in [("realtime", s.realtime), ("loop", s.looped)] {
            if on {
                out.push((
                    name,
                    "applies to files only: a camera or network stream is live already".into(),
                ));
            }
        }
    };
    match SourceKind::parse(&s.url, |f| l.resolve(f)) {
        Err(e) => out.push(("url", e)),
        Ok(SourceKind::File(path)) => {
            if let Err(e) = check_readable_file(&path) {
                out.push(("url", e));
            }
        }
        Ok(SourceKind::Network(url)) => {
            if url.contains(char::is_whitespace) {
                out.push((
                    "url",
                    format!("{}: contains white space", shorten(&redact(&url))),
                ));
            } else if let Some(why) = crate::url::authority_problem(&url) {
                out.push(("url", format!("{}: {why}", shorten(&redact(&url)))));
            }
            live_only(&mut out);
        }
        Ok(SourceKind::Device(_)) => live_only(&mut out),
    }
    out
}

/// Problems of the `api` section, as (field, message).
fn check_api(api: &super::ApiConfig) -> Vec<(String, String)> {
    let mut out = Vec::new();
    match api.listen.parse::<SocketAddr>() {
        Err(e) => out.push((
            "listen".into(),
            format!("`{}` is not an address:port ({e})", shorten(&api.listen)),
        )),
        Ok(addr) if !addr.ip().is_loopback() && api.tokens.is_empty() => out.push((
            "listen".into(),
            format!(
                "{addr} is reachable from other machines, so `api.tokens` is required (make one with `vigil token new --name NAME --scope write`)"
            ),
        )),
        Ok(_) => {}
    }
    let mut names = HashSet::new();
    for (i, t) in api.tokens.iter().enumerate() {
        if t.name.trim().is_empty() || t.name.len() > 64 || t.name.chars().any(char::is_control) {
            out.push((
                format!("tokens[{i}].name"),
                "must be 1..=64 printable characters".into(),
            ));
        } else if !names.insert(t.name.as_str()) {
            out.push((
                format!("tokens[{i}].name"),
                format!("`{}` is used twice", t.name),
            ));
        }
        if t.sha256.len() != 64 || !t.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            out.push((
                format!("tokens[{i}].sha256"),
                "must be the SHA-256 of the token as 64 hex digits (not the token itself; `vigil token new` prints the line to add)".into(),
            ));
        }
    }
    if !(1024..=1 << 30).contains(&api.max_body_bytes) {
        out.push((
            "max_body_bytes".into(),
            format!(
                "must be 1024..=1073741824 bytes, got {}",
                api.max_body_bytes
            ),
        ));
    }
    if !(1..=1_000_000).contains(&api.event_ring) {
        out.push((
            "event_ring".into(),
            format!("must be 1..=1000000 events, got {}", api.event_ring),
        ));
    }
    if !(100..=3_600_000).contains(&api.idle_timeout_ms) {
        out.push((
            "idle_timeout_ms".into(),
            format!(
                "must be 100..=3600000 milliseconds, got {}",
                api.idle_timeout_ms
            ),
        ));
    }
    if !(1..=65_536).contains(&api.max_connections) {
        out.push((
            "max_connections".into(),
            format!("must be 1..=65536, got {}", api.max_connections),
        ));
    }
    if api.event_clips > 1024 {
        out.push((
            "event_clips".into(),
            format!("must be 0..=1024 clips, got {}", api.event_clips),
        ));
    }
    if !(1..=64).contains(&api.explain_threads) {
        out.push((
            "explain_threads".into(),
            format!("must be 1..=64 threads, got {}", api.explain_threads),
        ));
    }
    out
}

/// A user's value as an error message repeats it (cut to 200 characters).
fn shorten(v: &str) -> String {
    crate::echo::echo(v).into_owned()
}

/// A file that exists, is a regular file and can be opened for reading.
pub(crate) fn check_readable_file(path: &Path) -> Result<(), String> {
    let meta =
        std::fs::metadata(path).map_err(|e| format!("{}: {}", path.display(), describe_io(&e)))?;
    if meta.is_dir() {
        return Err(format!("{} is a directory, not a file", path.display()));
    }
    std::fs::File::open(path)
        .map(|_| ())
        .map_err(|e| format!("{}: {}", path.display(), describe_io(&e)))
}

fn describe_io(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    fn problems(yaml: &str) -> Vec<String> {
        let l = parse(Path::new("t.yaml"), yaml).expect("parses");
        validate(&l).into_iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn reports_every_problem_with_its_position() {
        let yaml = "streams:\n  - id: 'bad id'\n    url: /nonexistent/a.mp4\naction:\n  enabled: false\n  frames: 0\n  smoother:\n    start_threshold: 0.2\n    end_threshold: 0.4\n";
        let p = problems(yaml);
        assert!(
            p.iter()
                .any(|s| s.starts_with("t.yaml:2:9: streams[0].id: `bad id` contains ' '")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|s| s
                    .starts_with("t.yaml:3:10: streams[0].url: /nonexistent/a.mp4: no such file")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|s| s.starts_with("t.yaml:6:11: action.frames: must be 1..=1024")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|s| s.starts_with("t.yaml:9:20: action.smoother.end_threshold: 0.4 is above")),
            "{p:?}"
        );
        assert_eq!(p.len(), 4, "{p:?}");
    }

    #[test]
    fn explanation_settings_are_checked_with_their_position() {
        let yaml = "api:\n  listen: '127.0.0.1:0'\n  event_clips: 5000\n  explain_threads: 0\naction: {enabled: false}\n";
        let p = problems(yaml);
        for want in [
            "t.yaml:3:16: api.event_clips: must be 0..=1024 clips, got 5000",
            "t.yaml:4:20: api.explain_threads: must be 1..=64 threads, got 0",
        ] {
            assert!(p.iter().any(|s| s.starts_with(want)), "{want}: {p:?}");
        }
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(problems(
            "api:\n  listen: '127.0.0.1:0'\n  event_clips: 0\naction: {enabled: false}\n"
        )
        .is_empty());
    }

    #[test]
    fn motion_settings_are_checked_and_the_gate_defaults_to_live_streams() {
        let yaml = "streams:\n  - {id: a, url: /dev/null}\naction: {enabled: false}\nmotion:\n  threshold: 0\n  min_area: 1.5\n  hold_ms: 700000\n";
        let p = problems(yaml);
        for want in [
            "t.yaml:5:14: motion.threshold: must be 1..=255",
            "t.yaml:6:13: motion.min_area: must be a fraction",
            "t.yaml:7:12: motion.hold_ms: must be 0..=600000",
        ] {
            assert!(p.iter().any(|s| s.starts_with(want)), "{want}: {p:?}");
        }
        assert_eq!(p.len(), 3, "{p:?}");
        let m = crate::config::MotionConfig::default();
        assert!(m.gates(None, true) && !m.gates(None, false));
        assert!(m.gates(Some(true), false) && !m.gates(Some(false), true));
        let off = crate::config::MotionConfig {
            enabled: Some(false),
            ..m.clone()
        };
        assert!(!off.gates(None, true) && off.gates(Some(true), true));
        let on = crate::config::MotionConfig {
            enabled: Some(true),
            ..m
        };
        assert!(on.gates(None, false) && !on.gates(Some(false), false));
    }

    #[test]
    fn gallery_index_settings_are_checked_with_their_position() {
        let yaml = "streams:\n  - {id: a, url: /dev/null}\ngallery:\n  index: {kind: hnsw, m: 1, ef_construction: 0, ef_search: 0, quantization: i8, rerank: 5000}\n";
        let l = parse(Path::new("t.yaml"), yaml).expect("parses");
        let p: Vec<String> = validate_faces(&l)
            .into_iter()
            .map(|p| p.to_string())
            .collect();
        for want in [
            "gallery.index.m: is 1; must be 2 to 255",
            "gallery.index.ef_construction: is 0; must be at least m (1)",
            "gallery.index.ef_search: must be at least 1",
            "gallery.index.rerank: is 5000; must be 0 (off) to 1024",
        ] {
            assert!(p.iter().any(|s| s.contains(want)), "{want}: {p:?}");
        }
        assert!(p.iter().any(|s| s.starts_with("t.yaml:4:")), "{p:?}");
        let e = parse(Path::new("t.yaml"), "gallery: {index: {kind: fast}}\n").unwrap_err();
        assert!(e.to_string().contains("unknown variant `fast`"), "{e}");
        let e = parse(
            Path::new("t.yaml"),
            "gallery: {index: {quantization: f8}}\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown variant `f8`"), "{e}");
    }

    #[test]
    fn an_enabled_action_branch_needs_a_model() {
        let p = problems("streams:\n  - {id: a, url: /dev/null}\n");
        assert!(
            p.iter().any(|s| s.contains("action.model: is required")),
            "{p:?}"
        );
    }

    #[test]
    fn live_urls_are_checked_and_never_shown_with_their_password() {
        let p = problems(
            "streams:\n  - {id: cam, url: 'rtsp://u:hunter2@127.0.0.1/x y', loop: true}\n  - {id: b, url: 'ftp://u:hunter2@h/x'}\naction: {enabled: false}\nlive: {reconnect_initial_ms: 5000, reconnect_max_ms: 1000}\n",
        );
        let all = p.join("\n");
        assert!(
            all.contains("streams[0].url: rtsp://u:***@127.0.0.1/x y: contains white space"),
            "{all}"
        );
        assert!(
            all.contains("streams[0].loop: applies to files only"),
            "{all}"
        );
        assert!(
            all.contains("streams[1].url: `ftp://` is not a source vigil reads"),
            "{all}"
        );
        assert!(
            all.contains("live.reconnect_max_ms: 1000 ms is below"),
            "{all}"
        );
        assert!(!all.contains("hunter2"), "{all}");
        assert!(problems(
            "streams:\n  - {id: cam, url: 'rtsp://u:p@127.0.0.1/x'}\naction: {enabled: false}\n"
        )
        .is_empty());
        for (url, want) in [
            (
                "rtsp://u:p@127.0.0.1:abc/x",
                "rtsp://u:***@127.0.0.1:abc/x: port `abc` is not a number from 1 to 65535",
            ),
            ("rtsp://127.0.0.1:70000/x", "port `70000` is not"),
            ("rtsp://h:/x", "port `` is not"),
            ("http://u:p@/x", "has no host"),
        ] {
            let all = problems(&format!(
                "streams:\n  - {{id: cam, url: '{url}'}}\naction: {{enabled: false}}\n"
            ))
            .join("\n");
            assert!(
                all.starts_with("t.yaml:2:")
                    && all.contains("streams[0].url: ")
                    && all.contains(want),
                "{url}: {all}"
            );
        }
        for ok in [
            "rtsp://u:p@127.0.0.1:8554/x",
            "rtsp://[::1]:554/x",
            "http://cam/x?a=b:c",
            "rtsp://u:p:q@h/x",
        ] {
            let all = problems(&format!(
                "streams:\n  - {{id: cam, url: '{ok}'}}\naction: {{enabled: false}}\n"
            ));
            assert!(all.is_empty(), "{ok}: {all:?}");
        }
    }

    #[test]
    fn prefixes_and_stream_names_are_checked() {
        assert_eq!(prefix_problem("vigil"), None);
        assert_eq!(prefix_problem("site.vigil"), None);
        assert!(prefix_problem("").is_some());
        assert!(prefix_problem("a..b").is_some());
        assert!(prefix_problem(".a").is_some());
        assert!(prefix_problem("a.>").is_some());
        assert!(prefix_problem("a.*").is_some());
        assert!(prefix_problem("a b").is_some());
        assert_eq!(stream_name_problem("VIGIL"), None);
        assert!(stream_name_problem("VI.GIL").is_some());
        assert!(stream_name_problem("").is_some());
    }

    #[test]
    fn network_sinks_are_checked() {
        let p = problems(
            "streams:\n  - {id: a, url: /dev/null}\naction: {enabled: false}\nsinks:\n  - {type: mqtt, host: '', topic_prefix: 'a/#'}\n  - {type: webhook, url: 'ftp://u:hunter2@x/y', timeout_ms: 5}\n  - {type: webhook, url: 'http://x/y', spool: {dir: spool/mqtt, max_bytes: 10}}\n  - {type: file, path: e.jsonl, max_bytes: 10}\n",
        );
        let all = p.join("\n");
        for want in [
            "sinks[0].host: is empty",
            "sinks[0].topic_prefix: \"a/#\": must be non-empty, without `+` or `#`",
            "sinks[1].url: ftp://u:***@x/y: must start with http:// or https://",
            "sinks[1].timeout_ms: must be 100..=120000 milliseconds, got 5",
            "sinks[2].spool.dir: ",
            "is the spool of another sink too",
            "sinks[2].spool.max_bytes: 10 bytes is below the 65536 minimum",
            "sinks[3].max_bytes: must be at least 4096 bytes",
        ] {
            assert!(all.contains(want), "missing {want:?} in:\n{all}");
        }
        assert!(!all.contains("hunter2"), "{all}");
    }

    #[test]
    fn nats_sinks_spool_fsync_and_the_cluster_are_checked() {
        let p = problems(
            "streams:\n  - {id: a, url: /dev/null}\naction: {enabled: false}\nsinks:\n  - {type: nats, url: 'http://tok3nsecret@x:4222', prefix: 'a.>', jetstream: 'A.B', duplicate_window_s: 0, spool: {fsync_interval_ms: 5}}\n  - {type: nats, url: 'nats://u:hunter2@h:abc'}\ncluster: {replicas: 3, ordinal: 3}\n",
        );
        let all = p.join("\n");
        for want in [
            "sinks[0].url: http://tok3nsecret@x:4222: must start with nats:// or tls://",
            "sinks[0].prefix: \"a.>\": contains a wildcard",
            "sinks[0].jetstream: \"A.B\": contains white space, `.`",
            "sinks[0].duplicate_window_s: must be 1..=86400 seconds, got 0",
            "sinks[0].spool.fsync_interval_ms: must be 10..=60000 milliseconds, got 5",
            "sinks[1].url: nats://u:***@h:abc: port `abc` is not a number",
            "cluster.ordinal: 3 is not below cluster.replicas (3)",
        ] {
            assert!(all.contains(want), "missing {want:?} in:\n{all}");
        }
        assert!(!all.contains("hunter2"), "{all}");
        let p = problems(
            "streams:\n  - {id: a, url: /dev/null}\naction: {enabled: false}\ncluster: {replicas: 0}\n",
        );
        assert!(
            p.join("\n")
                .contains("cluster.replicas: must be 1..=1024, got 0"),
            "{p:?}"
        );
    }
}
