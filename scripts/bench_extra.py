"""The parts of `make bench` beyond the peer comparisons (imported by scripts/bench.py).

- a 1080p file for the decode rows (made from the demo clip: no native 1080p clip is on the
  registries this project may use);
- the whole pipeline on a file against its slowest stage alone (the classifier);
- the int8 I3D against fp32 (speed, and top-1 labels on every window of the real clips);
- the gallery at 10k / 100k / 1M synthetic identities (`vigil bench gallery`);
- scaling over 1, 2, 4 and 8 live cameras (scripts/bench_live.py);
- an opt-in memory soak: one looping stream for N minutes, resident memory sampled, its slope.

Each function returns {"rows": [...], "notes": [...], ...} in bench.py's row format:
[measure, vigil, peer, ratio, target, cores other processes used meanwhile].
"""

import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

import bench_live  # noqa: E402  (scripts/ is on the path: bench.py puts it there)

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build"
DEMO_VIDEO = BUILD / "media" / "bigbuckbunny.mp4"
MODEL = BUILD / "models" / "i3d_kinetics400.onnx"
MODEL_INT8 = BUILD / "models" / "i3d_kinetics400_int8.onnx"
LABELS = BUILD / "models" / "kinetics400_labels.txt"
ORT_LIBRARY = BUILD / "lib" / "libonnxruntime.so"
PIPELINE_TARGET = 0.90
GALLERY_P99_LIMIT_MS = 5.0
GALLERY_RECALL_TARGET = 0.99
GALLERY_BUILD_LIMIT_S = 15 * 60
# The index the gallery rows measure (gallery.index: quantization, rerank; searched with each ef_search).
# i8 graph, m 32, ef_construction 128, best 32 re-ranked: at a million identities, built in 574 s on 2
# busy cores with recall@1 1.000 for probes from ef_search 256 (docs/config.md, gallery.index).
GALLERY_INDEX_ARGS = ["--m", "32", "--ef-construction", "128", "--quantization", "i8", "--rerank", "32",
                      "--ef-search", "64,128,256"]


def say(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def run_json(cmd, what, timeout=None):
    started = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - started
    if out.returncode != 0:
        raise RuntimeError(f"{what} failed ({out.returncode}):\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1]), wall


def make_1080p(workdir, loops):
    """The demo clip scaled to 1920x1080 (Lanczos) and encoded as H.264 High, looped `loops` times."""
    out = workdir / f"bigbuckbunny_1080p_x{loops}.mp4"
    cmd = ["ffmpeg", "-hide_banner", "-nostdin", "-v", "error", "-y", "-stream_loop", str(loops - 1),
           "-i", str(DEMO_VIDEO), "-map", "0:v:0", "-vf", "scale=1920:1080:flags=lanczos",
           "-c:v", "libx264", "-preset", "medium", "-crf", "18", "-pix_fmt", "yuv420p", str(out)]
    if subprocess.run(cmd).returncode != 0:
        raise RuntimeError(f"ffmpeg could not write {out}")
    return out, f"{DEMO_VIDEO.name} upscaled to 1080p, re-encoded H.264, x{loops}"


def action_config(path, video, model, threads, max_batch=4, adaptive=None):
    """The action branch alone on `video`, events to `path` with the suffix .jsonl. max_batch
    None leaves vigil's default; adaptive sets `action.schedule.adaptive` when given."""
    batch = f"  max_batch: {max_batch}\n" if max_batch is not None else ""
    schedule = f"  schedule:\n    adaptive: {'true' if adaptive else 'false'}\n" if adaptive is not None else ""
    path.write_text(f"""\
streams:
  - id: bench
    url: {video}
action:
  enabled: true
  model:
    path: {model}
    labels: {LABELS}
{batch}{schedule}faces:
  enabled: false
sinks:
  - type: file
    path: {path.with_suffix('.jsonl')}
metrics:
  enabled: false
runtime:
  onnxruntime_library: {ORT_LIBRARY}
  execution_provider: cpu
  intra_threads: {threads}
""")
    return path


def bench_pipeline(vigil, sampler, workdir, video, label, runs, threads):
    """Whole pipeline on a file (decode, sampler, preprocessing, batching, classifier, smoother,
    events) in clips/s, against the classifier alone on batches of the same size."""
    config = action_config(workdir / "pipeline.yaml", video, MODEL, threads)
    whole, alone = [], []
    for r in range(runs):
        order = ["pipeline", "classifier"] if r % 2 == 0 else ["classifier", "pipeline"]
        for side in order:
            say(f"pipeline round {r + 1}/{runs}: {side}")
            if side == "pipeline":
                whole.append(sampler.take("pipeline", lambda: run_json(
                    [str(vigil), "bench", "pipeline", "--config", str(config)], "vigil bench pipeline")[0]))
            else:
                alone.append(sampler.take("classifier alone", lambda: run_json(
                    [str(vigil), "bench", "classify", "--config", str(config), "--runs", "3", "--batch", "4"],
                    "vigil bench classify")[0]))
    w = statistics.median(o["clips_per_s"] for o in whole)
    a = statistics.median(o["clips_per_s"] for o in alone)
    noise = statistics.median(o["foreign_cores"] for o in whole + alone)
    first = whole[0]
    # The spread: each round's pipeline against the classifier alone of the same round.
    rounds = [p["clips_per_s"] / c["clips_per_s"] for p, c in zip(whole, alone)]
    return {
        "rows": [[f"whole pipeline on {label} ({first['frames']} frames, {first['clips']} clips, actions) "
                  "vs its slowest stage alone, the classifier on batches of 4 (clips/s)",
                  f"{w:.3f}", f"{a:.3f}", w / a, PIPELINE_TARGET, noise, (min(rounds), max(rounds))]],
        "notes": [f"pipeline: {runs} interleaved runs per side, median; the pipeline's time runs from "
                  f"the start of the run to its last event (model loading excluded): "
                  f"{statistics.median(o['seconds'] for o in whole):.1f} s; the classifier alone times "
                  "3 calls of 4 clips after a warm-up call."],
    }


def bench_int8(vigil, sampler, workdir, runs, threads, compare_python):
    """int8 I3D against fp32: vigil's clips/s with each model, and every window's top-1 label
    on the real clips (scripts/compare_int8.py)."""
    if not MODEL_INT8.is_file():
        return {"rows": [], "notes": [f"int8: skipped ({MODEL_INT8.relative_to(ROOT)} not built)."]}
    fp32 = action_config(workdir / "fp32.yaml", DEMO_VIDEO, MODEL, threads)
    int8 = action_config(workdir / "int8.yaml", DEMO_VIDEO, MODEL_INT8, threads)
    sides = {"fp32": [], "int8": []}
    for r in range(runs):
        for side in (["int8", "fp32"] if r % 2 == 0 else ["fp32", "int8"]):
            cfg = int8 if side == "int8" else fp32
            sides[side].append(sampler.take(f"classify {side}", lambda: run_json(
                [str(vigil), "bench", "classify", "--config", str(cfg), "--runs", "3", "--batch", "1"],
                "vigil bench classify")[0]))
    f = statistics.median(o["clips_per_s"] for o in sides["fp32"])
    i = statistics.median(o["clips_per_s"] for o in sides["int8"])
    noise = statistics.median(o["foreign_cores"] for o in sides["fp32"] + sides["int8"])
    rounds = [a["clips_per_s"] / b["clips_per_s"] for a, b in zip(sides["int8"], sides["fp32"])]
    rows = [[f"int8 I3D vs fp32 in vigil, 1 clip, {threads} threads (clips/s)", f"{i:.3f}", f"{f:.3f}",
             i / f, 1.0, noise, (min(rounds), max(rounds))]]
    notes = [f"int8: {runs} interleaved processes per side, 3 timed calls each, median; top-1 of the first "
             f"demo clip: int8 {sides['int8'][0]['top1']!r} ({sides['int8'][0]['top1_score']:.3f}), "
             f"fp32 {sides['fp32'][0]['top1']!r} ({sides['fp32'][0]['top1_score']:.3f})."]
    agreement = None
    if compare_python and Path(compare_python).exists():
        say("int8: top-1 of every window of the real clips (scripts/compare_int8.py)")
        try:
            out = subprocess.run([str(compare_python), str(ROOT / "scripts" / "compare_int8.py"), "--runs", "1",
                                  "--threads", str(threads)], capture_output=True, text=True, timeout=3600)
            agreement = json.loads(out.stdout) if out.returncode == 0 else None
            if agreement is None:
                notes.append(f"int8: compare_int8.py failed: {out.stderr[-500:]}")
        except (OSError, ValueError, subprocess.TimeoutExpired) as e:
            notes.append(f"int8: compare_int8.py failed: {e}")
    else:
        notes.append("int8: label agreement not measured (run `make int8` to create its venv).")
    if agreement:
        total, same = agreement["total"]["windows"], agreement["total"]["top1_agree"]
        rows.append([f"int8 I3D: windows of the real clips whose top-1 label equals fp32's (of {total})",
                     f"{same}", f"{total}", same / total if total else 0.0, 1.0, 0.0])
        for clip in agreement["files"]:
            for d in clip["differ"]:
                notes.append(f"int8 changes the label of {Path(clip['file']).name} at {d['start_s']} s: fp32 "
                             f"{d['fp32'][0]!r} {d['fp32'][1]:.3f}, int8 {d['int8'][0]!r} {d['int8'][1]:.3f} "
                             f"(int8 gives fp32's label {d['int8_p_of_fp32_label']:.3f}).")
        notes.append("int8 model files: " + ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in agreement["model_bytes"].items())
                     + "; per-file top-5 overlap (mean) " + ", ".join(
                         f"{Path(c['file']).name} {c['top5_overlap_mean']}" for c in agreement["files"]) + ".")
    return {"rows": rows, "notes": notes, "int8_per_fp32": i / f, "agreement": agreement}


def bench_gallery(vigil, keep_dir, sizes, queries, saved=None):
    """`vigil bench gallery` per size: HNSW p99 latency against the 5 ms limit and recall@1
    against exact search, on probes of enrolled people (structured spectrum, decay 1) and on
    isotropic identities (the worst case) up to 100k. Galleries and their indexes are kept in
    `keep_dir` and reused by later runs (`--reuse`): the first run enrols and builds (a million
    identities: about 10 minutes on 2 cores with GALLERY_INDEX_ARGS), later ones time reloading and
    searching. At a million, rows for the build time (when this run built it) against the 15-minute
    limit and for the peak memory of a process that opens the gallery and its index against twice the
    embeddings' size."""
    results = json.loads(Path(saved).read_text()) if saved else []
    for size in sizes:
        for decay in ([1.0, 0.0] if size <= 100_000 else [1.0]):
            say(f"gallery {size} identities, decay {decay:g}")
            common = [str(vigil), "bench", "gallery", "--size", str(size), "--decay", str(decay),
                      "--dir", str(keep_dir), *GALLERY_INDEX_ARGS]
            out, _ = run_json(common + ["--queries", str(queries), "--reuse"], "vigil bench gallery")
            # A process of its own that only opens the gallery and its index, as `vigil run` does:
            # its peak resident memory; then, on a copy, a running gallery catching up with
            # another process's enrolment.
            opened, _ = run_json(common + ["--open-only", "--refresh"], "vigil bench gallery --open-only --refresh")
            out["open"] = opened
            results.append(out)
    rows, notes = [], []
    secs = lambda v: "-" if v is None else f"{v:.1f} s"

    for r in results:
        spectrum = "learned-like spectrum" if r["decay"] > 0 else "isotropic (worst case)"
        name = f"gallery {r['size']:,} x {r['dim']}-d, {spectrum}"
        index = f"{r.get('quantization', 'f32')} graph"
        for s in r["searches"]:
            q = s["queries"]["probe"]
            ef = s["ef_search"]
            if r.get("quantization", "f32") != "f32":
                ef = f"{ef}, {index}" + (f", best {s['rerank']} re-ranked by exact distance" if s.get("rerank")
                                         else ", no re-ranking")
            rows.append([f"{name}, ef_search {ef}: HNSW p99 query latency vs the {GALLERY_P99_LIMIT_MS:g} ms limit (ms; ratio = limit / p99)",
                         f"{q['hnsw_ms_p99']:.2f}", f"{GALLERY_P99_LIMIT_MS:g}", GALLERY_P99_LIMIT_MS / q["hnsw_ms_p99"], 1.0, 0.0])
            rows.append([f"{name}, ef_search {ef}: recall@1 of probes vs exact search",
                         f"{q['recall_at_1']:.3f}", "1", q["recall_at_1"], GALLERY_RECALL_TARGET, 0.0])
            st = s["queries"]["stranger"]
            notes.append(f"{name}, ef_search {ef}: probes p50 {q['hnsw_ms_p50']:.2f} ms (exact search p50 "
                         f"{q['exact_ms_p50']:.1f} ms, p99 {q['exact_ms_p99']:.1f} ms); strangers recall@1 "
                         f"{st['recall_at_1']:.3f}, p99 {st['hnsw_ms_p99']:.2f} ms; the enrolled person found for "
                         f"{100 * q['hnsw_found_the_enrolled_person']:.1f}% of probes.")
        if r.get("index_build_s") is not None and r["size"] >= 1_000_000:
            build = r["index_build_s"]
            rows.append([f"{name}: HNSW build ({index}, m {r['m']}, ef_construction {r['ef_construction']}, "
                         f"{r['threads']} threads), whole build vs the {GALLERY_BUILD_LIMIT_S / 60:g}-min limit "
                         f"(s; ratio = limit / build)", f"{build:.0f}", f"{GALLERY_BUILD_LIMIT_S}",
                         GALLERY_BUILD_LIMIT_S / build, 1.0, 0.0])
            if r.get("index_build_cpu_s"):
                notes.append(f"{name}: the build used {r['index_build_cpu_s']:.0f} CPU seconds in {build:.0f} s "
                             f"({r['index_build_cpu_s'] / build:.2f} cores of {r['threads']}; other processes "
                             f"running meanwhile slow it).")
        o = r.get("open")
        if o and r["size"] >= 1_000_000:
            limit = 2 * o["embeddings_mib"]
            rows.append([f"{name}: peak resident memory of a process opening the gallery and loading its index "
                         f"({index}) vs twice the embeddings' {o['embeddings_mib']:.0f} MiB (MiB; ratio = limit / peak)",
                         f"{o['peak_rss_mib']:.0f}", f"{limit:.0f}", limit / o["peak_rss_mib"], 1.0, 0.0])
            how = ("the persisted index loaded first, then the file read person by person against it, each person "
                   "it holds unchanged dropped as read" if o["origin"] in ("loaded", "caught_up") else
                   "the file read whole and the index built")
            notes.append(f"{name}: a process of its own opened the live gallery as `vigil run` does ({how}; index "
                         f"{o['origin']}, {o.get('index_added', 0)} rows brought in) in {o['open_s']:.1f} s; "
                         f"{o['peak_rss_before_open_mib']:.0f} MiB peak before the open, {o['rss_after_open_mib']:.0f} MiB "
                         f"resident after it (the index and the list of people).")
            rf = o.get("refresh")
            if rf:
                how = ("in place, the file read person by person against the index" if rf["in_place"]
                       else "the index built again")
                notes.append(f"{name}: another process enrolled one person (on a copy of the gallery and its index); "
                             f"the running gallery caught up ({how}) in {rf['refresh_s']:.1f} s, its resident "
                             f"memory {rf['rss_before_mib']:.0f} MiB before and {rf['peak_rss_mib']:.0f} MiB at the "
                             f"peak ({rf['people_after']:,} people after).")
        made = ("reused from an earlier run (enrolment and build not repeated)" if r.get("reused") else
                f"enrolment {secs(r['enrol_s'])}, file written in {secs(r['save_s'])}, HNSW (m {r['m']}, "
                f"ef_construction {r['ef_construction']}) built in {secs(r['index_build_s'])} on {r['threads']} threads "
                f"and saved in {secs(r['index_save_s'])}")
        notes.append(f"{name}: {made}; gallery file {r['file_mib']:.0f} MiB reloaded in {r['reload_s']:.1f} s, "
                     f"HNSW index reloaded (fingerprint and checksum checked) in {r['index_load_s']:.1f} s; "
                     f"resident memory {r['rss_mib']:.0f} MiB with the exact index beside it.")
    return {"rows": rows, "notes": notes, "results": results}


def bench_scaling(saved=None, window=90.0, repeat=3):
    """scripts/bench_live.py: 1, 2, 4, 8 RTSP cameras with both branches (its own document too),
    then 1 and 8 again until there are `repeat` paired passes. Rows: total throughput of each
    branch with 8 cameras against 1, the least-served camera against half the mean share, and
    the memory each added camera costs; the latencies go in the notes."""
    if saved:
        rows = json.loads(Path(saved).read_text())
    else:
        out = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_live.py"), "--json",
                              "--window", str(window), "--repeat", str(repeat)], capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"bench_live.py failed:\n{out.stderr[-2000:]}")
        text = out.stdout
        rows = json.loads(text[text.index("\n[") + 1:])
    _, table = bench_live.render(rows, 20.0, window)
    lo, hi = min(r["streams"] for r in rows), max(r["streams"] for r in rows)
    passes = sorted({r.get("pass", 1) for r in rows})
    pairs = []
    for p in passes:
        one = [r for r in rows if r.get("pass", 1) == p and r["streams"] == lo]
        many = [r for r in rows if r.get("pass", 1) == p and r["streams"] == hi]
        if one and many and lo != hi:
            pairs.append((one[0], many[0]))
    out_rows, notes = [], []
    if not pairs:
        return {"table": table, "rows_json": rows, "rows": [], "notes": []}
    med = statistics.median
    spread = lambda v: (min(v), max(v))  # noqa: E731
    cams = f"{hi} vs {lo} RTSP 720p25 camera(s), both branches, {len(pairs)} paired pass(es)"
    for key, what in [("clips_per_s_per_stream", "classifier clips/s"), ("face_fps_per_stream", "face frames/s")]:
        tot = lambda r: r[key] * r["streams"]  # noqa: E731
        ratios = [tot(m) / tot(o) if tot(o) else 0.0 for o, m in pairs]
        out_rows.append([f"live, {cams}: total {what} with {hi} against {lo} (median of the passes)",
                         f"{med(tot(m) for _, m in pairs):.2f}", f"{med(tot(o) for o, _ in pairs):.2f}",
                         med(ratios), 0.9, 0.0, spread(ratios)])
    for key, what in [("clips_per_s_per_camera", "classifier clips/s"), ("face_fps_per_camera", "face frames/s")]:
        shares = []
        for _, m in pairs:
            per = m.get(key) or []
            mean = statistics.mean(per) if per else 0.0
            shares.append(min(per) / (mean / 2) if mean > 0 else 0.0)
        least = med(min(m.get(key) or [0.0]) for _, m in pairs)
        out_rows.append([f"live, {cams}: the least-served of {hi} cameras' {what} against half the mean share "
                         "(ratio = least / (mean / 2))", f"{least:.3f}",
                         f"{med(statistics.mean(m.get(key) or [0.0]) / 2 for _, m in pairs):.3f}",
                         med(shares), 1.0, 0.0, spread(shares)])
    per_cam = [(m["rss_mib"] - o["rss_mib"]) / (hi - lo) for o, m in pairs]
    out_rows.append([f"live, {cams}: resident memory each added camera costs, (RSS with {hi} - RSS with {lo}) / "
                     f"{hi - lo}, against a 150 MiB limit (MiB; ratio = limit / measured)",
                     f"{med(per_cam):.0f}", "150", 150 / max(med(per_cam), 1e-9), 1.0, 0.0,
                     spread([150 / max(v, 1e-9) for v in per_cam])])
    fmt = lambda v: f"<= {v:g} s"  # noqa: E731
    for o, m in pairs:
        notes.append(f"live pass {o.get('pass', 1)}: latency p99 (capture to result, bucket upper bound) action "
                     f"{fmt(o['latency_p99_s'])} with {lo} camera(s), {fmt(m['latency_p99_s'])} with {hi}; faces "
                     f"{fmt(o.get('face_latency_p99_s', float('nan')))} and {fmt(m.get('face_latency_p99_s', float('nan')))}; "
                     f"per-camera clips/s with {hi}: {', '.join(f'{v:.2f}' for v in m.get('clips_per_s_per_camera', []))}; "
                     f"face frames/s: {', '.join(f'{v:.1f}' for v in m.get('face_fps_per_camera', []))}.")
    return {"table": table, "rows_json": rows, "rows": out_rows, "notes": notes}


def saved_soak(saved, every=10.0):
    """The soak a separate run saved (`bench.py --save-json`), summarised as `bench_soak` does."""
    run = json.loads(Path(saved).read_text())
    if not run.get("soak"):
        raise RuntimeError(f"{saved}: no soak samples (run bench.py with --soak-minutes and --save-json)")
    samples = [tuple(s) for s in run["soak"]]
    out = soak_summary(samples, run.get("soak_minutes") or samples[-1][0] / 60, every)
    out["notes"].append(f"soak: measured in a separate run ({Path(saved).name}, {run.get('date', 'date unknown')}) of "
                        f"vigil {run.get('vigil', 'unknown')}, not in this one.")
    return out


def bench_soak(vigil, workdir, minutes, every=10.0):
    """One looping, paced 720p stream with both branches for `minutes`; RSS every `every` s.
    The slope is a least-squares fit over the samples after the first fifth (warm-up)."""
    faces_models = BUILD / "models"
    config = workdir / "soak.yaml"
    config.write_text(f"""\
streams:
  - id: soak
    url: {BUILD / 'media' / 'faces_demo.mp4'}
    loop: true
    realtime: true
action:
  model:
    path: {MODEL}
    labels: {LABELS}
faces:
  enabled: true
  detector:
    type: mtcnn
    pnet: {faces_models / 'mtcnn_pnet.onnx'}
    rnet: {faces_models / 'mtcnn_rnet.onnx'}
    onet: {faces_models / 'mtcnn_onet.onnx'}
  embedder:
    path: {faces_models / 'dlib_resnet.onnx'}
gallery:
  path: {workdir / 'soak-gallery.json'}
sinks:
  - type: file
    path: {workdir / 'soak.jsonl'}
    max_bytes: 10000000
    keep: 1
metrics:
  enabled: false
runtime:
  onnxruntime_library: {ORT_LIBRARY}
""")
    proc = subprocess.Popen([str(vigil), "run", "--config", str(config)], stdout=subprocess.DEVNULL,
                            stderr=open(workdir / "soak.log", "w"))
    samples = []
    started = time.monotonic()
    try:
        while time.monotonic() - started < minutes * 60:
            time.sleep(every)
            if proc.poll() is not None:
                raise RuntimeError(f"vigil exited during the soak: {(workdir / 'soak.log').read_text()[-2000:]}")
            m = bench_live.rss_mib(proc.pid)
            if m is not None and math.isfinite(m):
                samples.append((time.monotonic() - started, m))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return soak_summary(samples, minutes, every)


def soak_summary(samples, minutes, every):
    """Rows and notes of a soak's (seconds, RSS MiB) samples."""
    tail = samples[len(samples) // 5:]
    xs = [t / 3600 for t, _ in tail]
    ys = [m for _, m in tail]
    mx, my = statistics.mean(xs), statistics.mean(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    hour_share = slope / my
    # The peaks of the four quarters after warm-up: a slope that a saw-tooth of allocations
    # cannot fake (least squares over a saw-tooth depends on where the teeth fall).
    q = max(1, len(tail) // 4)
    peaks = [max(tail[i:i + q], key=lambda s: s[1]) for i in range(0, q * 4, q) if tail[i:i + q]]
    peak_slope = (peaks[-1][1] - peaks[0][1]) / max((peaks[-1][0] - peaks[0][0]) / 3600, 1e-9)
    # A flat or falling slope shows as a ratio of 100 (the least growth the ratio tells apart).
    return {
        "rows": [[f"memory soak: {minutes:g} min of one looping, real-time 720p stream, both branches: resident "
                  "memory slope after warm-up (the first fifth) as a share of RSS per hour (ratio = 1%/h / that)",
                  f"{100 * hour_share:+.2f}%/h", "1%/h", 0.01 / max(hour_share, 1e-4), 1.0, 0.0]],
        "notes": [f"soak: {len(samples)} samples every {every:g} s; RSS {samples[0][1]:.0f} MiB at the first, "
                  f"{min(ys):.0f}-{max(ys):.0f} MiB after warm-up, mean {my:.0f} MiB; least-squares slope "
                  f"{slope:+.1f} MiB/h over the last four fifths; the peaks of its four quarters "
                  f"{', '.join(f'{m:.0f}' for _, m in peaks)} MiB ({peak_slope:+.1f} MiB/h from the first to the last)."],
        "samples": samples,
    }
