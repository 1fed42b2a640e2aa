//! Measurements behind `vigil bench`: each prints one JSON object, so a script can set them
//! beside a peer measured in the same run (see `scripts/bench.py`).

use crate::action::clip::{Clip, ClipWindow, Preprocess};
use crate::action::sampler::Sampler;
use crate::pipeline::Prepared;
use crate::source::file::FileReader;
use crate::source::FrameReader;
use anyhow::{bail, Context};
use std::io::Write;
use std::path::Path;
use std::time::Instant;

/// Decodes a whole file through the source stage; returns frames and seconds.
pub fn decode(path: &Path) -> anyhow::Result<serde_json::Value> {
    let started = Instant::now();
    let mut r = FileReader::open(path)?;
    let mut frames = 0u64;
    while r.next_frame()?.is_some() {
        frames += 1;
    }
    r.finish(frames)?;
    let secs = started.elapsed().as_secs_f64();
    let info = r.info();
    Ok(serde_json::json!({
        "file": path.display().to_string(), "width": info.width, "height": info.height,
        "frames": frames, "seconds": secs, "fps": frames as f64 / secs,
    }))
}

/// Appends lines of a typical face event's size (~400 bytes) to a fresh spool under `dir` for
/// each fsync policy, offered at `rate` appends per second for `seconds`: what a busy events
/// stage would do. Reports the rate achieved, the share of the time spent inside appends (the
/// events stage's cost) and the append latencies (p50, p99, max in microseconds; an append
/// that forces the disk waits for it).
pub fn spool(dir: &Path, rate: f64, seconds: f64) -> anyhow::Result<serde_json::Value> {
    use crate::event::spool::{Fsync, Spool};
    use std::time::Duration;
    let line = format!(
        "{{\"id\":\"0190a8f0-0000-7000-8000-000000000000\",\"type\":\"face.identified\",\"stream\":\"door\",\"media_time\":12.345,\"wall_time\":\"2026-01-01T00:00:00.000Z\",\"identity\":\"someone\",\"distance\":0.41,\"track_id\":7,\"box\":[1.0,2.0,3.0,4.0],\"pad\":\"{}\"}}",
        "x".repeat(160)
    );
    let gap = Duration::from_secs_f64(1.0 / rate.max(1.0));
    let run_for = Duration::from_secs_f64(seconds.max(0.1));
    let mut out = serde_json::Map::new();
    for (name, policy) in [
        ("always", Fsync::Always),
        ("interval_200ms", Fsync::Every(Duration::from_millis(200))),
        ("never", Fsync::Never),
    ] {
        let d = dir.join(format!("bench-spool-{name}"));
        let _ = std::fs::remove_dir_all(&d);
        let s = Spool::open_with(&d, 1 << 30, policy)?;
        let mut took = Vec::new();
        let started = Instant::now();
        let mut next = started;
        while started.elapsed() < run_for {
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            }
            next += gap;
            let t = Instant::now();
            s.push(&line)?;
            took.push(t.elapsed().as_secs_f64() * 1e6);
        }
        let secs = started.elapsed().as_secs_f64();
        drop(s);
        std::fs::remove_dir_all(&d)?;
        let busy: f64 = took.iter().sum::<f64>() / 1e6 / secs;
        took.sort_by(f64::total_cmp);
        out.insert(
            name.into(),
            serde_json::json!({
                "appends_per_s": took.len() as f64 / secs,
                "busy_share": busy,
                "p50_us": percentile(&took, 50.0),
                "p99_us": percentile(&took, 99.0),
                "max_us": took.last().copied().unwrap_or(0.0),
            }),
        );
    }
    out.insert("offered_per_s".into(), serde_json::json!(rate));
    out.insert("line_bytes".into(), serde_json::json!(line.len()));
    out.insert("dir".into(), serde_json::json!(dir.display().to_string()));
    Ok(serde_json::Value::Object(out))
}

/// The first clip of the config's first stream, preprocessed as a run would.
fn first_clip(p: &Prepared) -> anyhow::Result<Clip> {
    let a = &p.loaded.config.action;
    let s = p.streams.first().context("the config has no stream")?;
    let path = s
        .file()
        .context("the first stream is not a file: the benchmark needs a recorded clip")?;
    let mut r = FileReader::open(path)?;
    let mut sampler = Sampler::new(a.sample_fps);
    let mut prep = Preprocess::new(a.resize_short_side, a.crop);
    let mut window = ClipWindow::new(0, a.frames, a.stride, a.sample_fps);
    let mut picked = Vec::new();
    while let Some((t, m)) = r.next_frame()? {
        sampler.push(t, std::sync::Arc::new(m), |m, t| {
            picked.push((m.clone(), t))
        });
        for (m, t) in picked.drain(..) {
            if let Some(c) = window.push(t, prep.apply(&m)?) {
                return Ok(c);
            }
        }
    }
    window.finish().context("the stream has no frames")
}

/// Times the classifier on one real clip repeated `batch` times, `runs` calls after a warm-up.
/// With `dump`, writes the exact input tensor (f32 little-endian, `[batch, 3, T, side, side]`)
/// so a peer can be fed the same bytes.
pub fn classify(
    mut p: Prepared,
    runs: usize,
    batch: usize,
    dump: Option<&Path>,
) -> anyhow::Result<serde_json::Value> {
    let clip = first_clip(&p)?;
    let Some(a) = p.action.as_mut() else {
        bail!("the action branch is disabled in this config")
    };
    let clips: Vec<&Clip> = (0..batch).map(|_| &clip).collect();
    let probs = a.classifier.classify(&clips)?;
    if let Some(path) = dump {
        let t = a.classifier.input_tensor();
        let mut f = std::fs::File::create(path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        for v in t {
            f.write_all(&v.to_le_bytes())?;
        }
    }
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        a.classifier.classify(&clips)?;
        times.push(started.elapsed().as_secs_f64());
    }
    let total: f64 = times.iter().sum();
    let (top, score) = probs[0]
        .iter()
        .copied()
        .enumerate()
        .fold((0, f32::MIN), |b, (i, v)| if v > b.1 { (i, v) } else { b });
    Ok(serde_json::json!({
        "model": a.classifier.name, "frames": p.loaded.config.action.frames, "batch": batch, "runs": runs,
        "threads": p.loaded.config.runtime.intra_threads,
        "seconds_per_call": times, "clips_per_s": (runs * batch) as f64 / total,
        "top1": a.labels.get(top), "top1_score": score,
    }))
}

/// Runs the whole pipeline as configured (meant for a faces-only config with a `file` sink) and
/// times it from the first frame to the last event, model loading excluded. Reports frames per
/// second and which identities the events named.
pub fn faces(p: Prepared) -> anyhow::Result<serde_json::Value> {
    let sink = p.loaded.config.sinks.iter().find_map(|s| match s {
        crate::config::SinkConfig::File { path, .. } => Some(p.loaded.resolve(path)),
        _ => None,
    });
    let Some(sink) = sink else {
        bail!("the config needs a `file` sink to count identities")
    };
    let before = std::fs::read_to_string(&sink)
        .map(|t| t.lines().count())
        .unwrap_or(0);
    let started = Instant::now();
    let summary = run(p)?;
    let secs = started.elapsed().as_secs_f64();
    let text = std::fs::read_to_string(&sink)
        .with_context(|| format!("cannot read {}", sink.display()))?;
    let mut named: std::collections::BTreeMap<String, u64> = Default::default();
    let (mut unknown, mut tracks) = (0u64, std::collections::BTreeSet::new());
    for line in text.lines().skip(before) {
        let e: serde_json::Value = serde_json::from_str(line)?;
        match e["type"].as_str() {
            Some("face.identified") => {
                *named
                    .entry(e["identity"].as_str().unwrap_or("").to_string())
                    .or_default() += 1
            }
            Some("face.unknown") => unknown += 1,
            _ => continue,
        }
        tracks.insert((e["stream"].to_string(), e["track_id"].as_u64()));
    }
    Ok(serde_json::json!({
        "frames": summary.frames, "seconds": secs, "fps": summary.frames as f64 / secs,
        "identified_events": named, "unknown_events": unknown, "tracks_reported": tracks.len(),
        "ok": summary.ok(),
    }))
}

/// A whole run with default options and no metrics endpoint.
fn run(p: Prepared) -> anyhow::Result<crate::pipeline::Summary> {
    let metrics = std::sync::Arc::new(crate::metrics::Metrics::new());
    let opts = crate::pipeline::RunOptions::default();
    crate::pipeline::run(p, opts, metrics, crate::shutdown::Shutdown::new(), |_| {
        Ok(())
    })
}

/// Runs the whole pipeline as configured (meant for an actions-only config on a file) and times
/// it from the start of the run to its end, model loading excluded: clips scored per second.
pub fn pipeline(p: Prepared) -> anyhow::Result<serde_json::Value> {
    let batch = p.loaded.config.action.batch();
    let threads = p.loaded.config.runtime.intra_threads;
    let started = Instant::now();
    let summary = run(p)?;
    let secs = started.elapsed().as_secs_f64();
    if !summary.ok() {
        bail!("the run failed: {summary:?}");
    }
    Ok(serde_json::json!({
        "frames": summary.frames, "clips": summary.clips, "seconds": secs,
        "clips_per_s": summary.clips as f64 / secs, "fps": summary.frames as f64 / secs,
        "max_batch": batch, "threads": threads, "events": summary.events,
    }))
}

/// A small seeded generator (SplitMix64) with normal deviates, so synthetic galleries are the
/// same in every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn uniform(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// `dim` values of N(0, sigma^2).
    fn normal(&mut self, dim: usize, sigma: f64) -> Vec<f32> {
        (0..dim)
            .map(|_| {
                let (u, v) = (self.uniform(), self.uniform());
                ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos() * sigma) as f32
            })
            .collect()
    }
}

/// Percentile (0-100) of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// A line of /proc/self/status in MiB (`VmRSS:` now, `VmHWM:` the peak so far).
fn status_mib(key: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn rss_mib() -> f64 {
    status_mib("VmRSS:")
}

/// CPU seconds this process used so far (user and system, every thread).
fn cpu_s() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return f64::NAN;
    }
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

/// Sets the process's peak resident memory (`VmHWM`) back to what is resident now.
fn reset_peak_rss() -> std::io::Result<()> {
    std::fs::write("/proc/self/clear_refs", "5")
}

/// `--refresh`: a copy of the gallery at `path` and its index is opened as `vigil run` opens
/// it; one person is enrolled in the copy's file as another process would (read, changed and
/// written under the lock); the C heap's free pages are handed back and the peak reset; then
/// the open gallery refreshes, as its watcher does within half a second of such a change. The
/// copy goes afterwards, so the gallery and index kept for `--reuse` are never touched.
fn gallery_refresh(
    o: &GalleryBench,
    path: &std::path::Path,
    cfg: &crate::config::GalleryIndexConfig,
    rng: &mut Rng,
    person: impl Fn(&mut Rng) -> Vec<f32>,
) -> anyhow::Result<serde_json::Value> {
    use crate::gallery::{ann, live, LiveGallery};
    let scratch = o.dir.join("refresh-copy");
    let _ = std::fs::remove_dir_all(&scratch);
    let copy = scratch.join(path.file_name().context("the gallery has no file name")?);
    let (from, to) = (ann::index_dir(path), ann::index_dir(&copy));
    std::fs::create_dir_all(&to).with_context(|| format!("cannot create {}", to.display()))?;
    std::fs::copy(path, &copy).with_context(|| format!("cannot copy {}", path.display()))?;
    for f in std::fs::read_dir(&from).with_context(|| format!("cannot read {}", from.display()))? {
        let f = f?;
        if f.file_type()?.is_file() {
            std::fs::copy(f.path(), to.join(f.file_name()))?;
        }
    }
    let result = (|| -> anyhow::Result<serde_json::Value> {
        let running = LiveGallery::open(&copy, "synthetic", o.dim, cfg)?;
        let opened = running.index().get();
        let newcomer = person(rng);
        live::update_file(&copy, "synthetic", o.dim, |g| {
            g.enroll("bench-newcomer", newcomer.clone(), "bench".into())
        })?;
        crate::infer::release_free_heap();
        reset_peak_rss().context("cannot reset the peak resident memory")?;
        let rss_before = rss_mib();
        let t = Instant::now();
        if !running.refresh()? {
            bail!("the running gallery did not see the change");
        }
        let refresh_s = t.elapsed().as_secs_f64();
        let peak = status_mib("VmHWM:");
        let found = running.index().get().search(&newcomer, 1);
        if found.first().map(|m| m.name.as_str()) != Some("bench-newcomer") {
            bail!("the newcomer is not found after the refresh: {found:?}");
        }
        Ok(serde_json::json!({
            "people_after": running.people().len(), "refresh_s": refresh_s,
            "rss_before_mib": rss_before, "peak_rss_mib": peak,
            "in_place": std::sync::Arc::ptr_eq(&opened, &running.index().get()),
        }))
    })();
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

/// Options of `vigil bench gallery`.
pub struct GalleryBench {
    pub size: usize,
    pub dim: usize,
    pub queries: usize,
    pub dir: std::path::PathBuf,
    pub index: crate::config::GalleryIndexConfig,
    pub seed: u64,
    /// Keep a gallery (and index) left in `dir` by an earlier run with the same options instead of
    /// enrolling and building again: only reloading is timed then.
    pub reuse: bool,
    /// Candidate list sizes to search with (the same index, searched once per value).
    pub ef_search: Vec<usize>,
    /// Candidates re-ranked by exact distance, searched once per value with each ef_search
    /// (a quantized index keeps its f32 rows when any is above 0).
    pub rerank: Vec<usize>,
    /// Only open the gallery and its index as `vigil run` does (both left in `dir` by an earlier
    /// run with the same options), and report the time and the process's peak memory.
    pub open_only: bool,
    /// With `open_only`: then, on a copy of the gallery and its index, what a running vigil's
    /// gallery does when another process enrols someone (the copy's file changed, the open
    /// gallery refreshed): its seconds, and the resident memory before and at the peak.
    pub refresh: bool,
    /// Spectrum of the synthetic identities: the variance of component j falls as
    /// (j+1)^-decay. 0 is isotropic.
    pub decay: f64,
}

/// Enrols `size` synthetic identities through the gallery's own API, saves and reloads the
/// file, builds, persists and reloads the HNSW index, then times queries against it and
/// against exact search. Identities are Gaussian in `dim` dimensions, component j with a
/// variance proportional to (j+1)^-decay, scaled so that two people are 0.9 apart on average
/// (dlib's descriptors: the same person under 0.6). With decay 0 every direction varies
/// equally, the hardest case for a graph index; learned embeddings concentrate their variance
/// in fewer directions (decay 1 puts half of it in the first 8 of 128). A *probe* is an enrolled
/// person plus isotropic noise about 0.35 long (another photo of them); a *stranger* is a new
/// person (many people nearly as far). Recall@1 is the share of queries whose HNSW top-1 is
/// exact search's top-1.
pub fn gallery(o: &GalleryBench) -> anyhow::Result<serde_json::Value> {
    use crate::gallery::{ann, ExactIndex, Gallery, Index};
    let weights: Vec<f64> = (0..o.dim)
        .map(|j| ((j + 1) as f64).powf(-o.decay))
        .collect();
    let total: f64 = weights.iter().sum();
    // E|a-b|^2 = 2 * sum of variances = 0.81
    let sigmas: Vec<f32> = weights
        .iter()
        .map(|w| (0.405 * w / total).sqrt() as f32)
        .collect();
    let person = |rng: &mut Rng| -> Vec<f32> {
        rng.normal(o.dim, 1.0)
            .into_iter()
            .zip(&sigmas)
            .map(|(v, s)| v * s)
            .collect()
    };
    let participation = total * total / weights.iter().map(|w| w * w).sum::<f64>();
    let noise_sigma = 0.35 / (o.dim as f64).sqrt();
    std::fs::create_dir_all(&o.dir)
        .with_context(|| format!("cannot create {}", o.dir.display()))?;
    let path = o.dir.join(format!(
        "gallery-{}-d{}-decay{}-seed{}.json",
        o.size, o.dim, o.decay, o.seed
    ));
    let mut rng = Rng(o.seed);
    // (--open-only does not read the gallery before the timed open: its peak memory is measured.)
    let reused = if o.open_only {
        path.is_file()
    } else {
        o.reuse && Gallery::open(&path, "synthetic", o.dim).is_ok_and(|g| g.people.len() == o.size)
    };
    if o.open_only && !reused {
        bail!(
            "--open-only needs the gallery an earlier run with the same options left in {}",
            o.dir.display()
        );
    }
    let (mut enrol_s, mut save_s) = (None, None);
    if reused {
        // Draw the same numbers the enrolment drew, so the queries are the same too.
        for _ in 0..o.size {
            person(&mut rng);
        }
    } else {
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_dir_all(ann::index_dir(&path));
        let t = Instant::now();
        let mut g = Gallery::open(&path, "synthetic", o.dim)?;
        for i in 0..o.size {
            let e = person(&mut rng);
            g.enroll(&format!("person-{i:07}"), e, "synthetic".into())?;
        }
        enrol_s = Some(t.elapsed().as_secs_f64());
        let t = Instant::now();
        g.save()?;
        save_s = Some(t.elapsed().as_secs_f64());
    }
    let file_mib = std::fs::metadata(&path)?.len() as f64 / (1 << 20) as f64;
    let embeddings_mib = (o.size * o.dim * 4) as f64 / (1 << 20) as f64;
    let rerank_max = o.rerank.iter().copied().max().unwrap_or(0);
    let cfg = crate::config::GalleryIndexConfig {
        kind: crate::config::IndexKind::Hnsw,
        rerank: rerank_max,
        ef_search: o.ef_search.first().copied().unwrap_or(o.index.ef_search),
        ..o.index.clone()
    };
    if o.open_only {
        // What `vigil run` does at start: open the live gallery (the persisted index loaded,
        // then the file read against it; or the file read whole and the index built).
        let before = status_mib("VmHWM:");
        let t = Instant::now();
        let live = crate::gallery::LiveGallery::open(&path, "synthetic", o.dim, &cfg)?;
        let open_s = t.elapsed().as_secs_f64();
        let report = live.index_report();
        if live.people().len() != o.size {
            bail!("opened {} people of {}", live.people().len(), o.size);
        }
        let (hwm, rss_after_open) = (status_mib("VmHWM:"), rss_mib());
        drop(live);
        let refresh = if o.refresh {
            Some(gallery_refresh(o, &path, &cfg, &mut rng, person)?)
        } else {
            None
        };
        return Ok(serde_json::json!({
            "size": o.size, "dim": o.dim, "decay": o.decay, "m": cfg.m,
            "ef_construction": cfg.ef_construction, "quantization": cfg.quantization,
            "rerank": rerank_max, "open_s": open_s, "origin": report.origin,
            "index_rows": report.rows, "index_added": report.added,
            "embeddings_mib": embeddings_mib, "file_mib": file_mib,
            "peak_rss_before_open_mib": before, "peak_rss_mib": hwm,
            "rss_after_open_mib": rss_after_open, "refresh": refresh,
        }));
    }

    let t = Instant::now();
    let g = Gallery::open(&path, "synthetic", o.dim)?;
    let reload_s = t.elapsed().as_secs_f64();
    if g.people.len() != o.size {
        bail!("reloaded {} people of {}", g.people.len(), o.size);
    }

    let params = ann::HnswParams::from_config(&cfg);
    let t = Instant::now();
    std::hint::black_box(ann::fingerprint(&g.people));
    let fingerprint_s = t.elapsed().as_secs_f64();
    let dir = ann::index_dir(&path);
    let (mut build_s, mut build_cpu_s, mut index_save_s) = (None, None, None);
    if !(reused && ann::HnswIndex::load_current(&dir, &g.people, o.dim, params)?.is_some()) {
        let (t, cpu) = (Instant::now(), cpu_s());
        let built = ann::HnswIndex::build(&g.people, o.dim, params, None)?;
        build_s = Some(t.elapsed().as_secs_f64());
        build_cpu_s = Some(cpu_s() - cpu);
        let t = Instant::now();
        built.save(&dir)?;
        index_save_s = Some(t.elapsed().as_secs_f64());
    }
    let t = Instant::now();
    let hnsw = ann::HnswIndex::load_current(&dir, &g.people, o.dim, params)?
        .context("the index just written was not accepted on reload")?;
    let index_load_s = t.elapsed().as_secs_f64();
    let exact = ExactIndex::new(&g.people);
    let rss = rss_mib();

    // The queries, and exact search's answer and time for each.
    struct Query {
        q: Vec<f32>,
        truth: Option<usize>,
        exact: Option<String>,
        exact_ms: f64,
    }
    let mut sets = Vec::new();
    for kind in ["probe", "stranger"] {
        let mut qs = Vec::with_capacity(o.queries);
        for _ in 0..o.queries {
            let (q, truth) = if kind == "probe" {
                let i = rng.below(o.size);
                let mut q = g.people[i].embeddings[0].clone();
                for (v, n) in q.iter_mut().zip(rng.normal(o.dim, noise_sigma)) {
                    *v += n;
                }
                (q, Some(i))
            } else {
                (person(&mut rng), None)
            };
            let t = Instant::now();
            let e = exact.search(&q, 1);
            let exact_ms = t.elapsed().as_secs_f64() * 1e3;
            qs.push(Query {
                q,
                truth,
                exact: e.into_iter().next().map(|m| m.name),
                exact_ms,
            });
        }
        sets.push((kind, qs));
    }
    let mut hnsw = hnsw;
    let mut runs = Vec::new();
    let combos: Vec<(usize, usize)> = o
        .ef_search
        .iter()
        .flat_map(|&ef| o.rerank.iter().map(move |&r| (ef, r)))
        .collect();
    for &(ef, rerank) in &combos {
        hnsw.set_ef_search(ef);
        hnsw.set_rerank(rerank);
        let mut kinds = serde_json::Map::new();
        for (kind, qs) in &sets {
            let mut t_h = Vec::with_capacity(qs.len());
            let (mut agree, mut right) = (0usize, 0usize);
            for q in qs {
                let t = Instant::now();
                let h = hnsw.search(&q.q, 1);
                t_h.push(t.elapsed().as_secs_f64() * 1e3);
                let top = h.into_iter().next().map(|m| m.name);
                agree += usize::from(top == q.exact);
                if let (Some(i), Some(name)) = (q.truth, &top) {
                    right += usize::from(*name == g.people[i].name);
                }
            }
            let mut t_e: Vec<f64> = qs.iter().map(|q| q.exact_ms).collect();
            t_h.sort_by(f64::total_cmp);
            t_e.sort_by(f64::total_cmp);
            let n = qs.len().max(1) as f64;
            kinds.insert(
                kind.to_string(),
                serde_json::json!({
                    "queries": qs.len(), "recall_at_1": agree as f64 / n,
                    "hnsw_ms_p50": percentile(&t_h, 50.0), "hnsw_ms_p99": percentile(&t_h, 99.0),
                    "exact_ms_p50": percentile(&t_e, 50.0), "exact_ms_p99": percentile(&t_e, 99.0),
                    "hnsw_found_the_enrolled_person": (*kind == "probe").then(|| right as f64 / n),
                }),
            );
        }
        runs.push(serde_json::json!({"ef_search": ef, "rerank": rerank, "queries": kinds}));
    }
    Ok(serde_json::json!({
        "size": o.size, "dim": o.dim, "decay": o.decay, "participation_ratio": participation,
        "m": params.m, "ef_construction": params.ef_construction,
        "quantization": params.quantization, "embeddings_mib": embeddings_mib,
        "threads": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "reused": reused, "enrol_s": enrol_s, "save_s": save_s, "file_mib": file_mib, "reload_s": reload_s,
        "fingerprint_s": fingerprint_s, "index_build_s": build_s, "index_build_cpu_s": build_cpu_s, "index_save_s": index_save_s,
        "index_load_s": index_load_s, "rss_mib": rss, "searches": runs,
    }))
}
