"""The action path, whole process, against the plain Python loop (imported by scripts/bench.py).

Both sides are timed the same way: wall time around the whole process (start-up, model
loading, decoding, every inference call, exit), peak resident memory from wait4(2). The peer is
scripts/action_loop.py (OpenCV + onnxruntime, sequential, one `session.run` per clip, the same
ONNX file, intra-op threads, spinning and CPU arena set as vigil sets them). The sides alternate
process by process. vigil runs three ways on each file:

- as configured by default (adaptive clip scheduling on): the target row;
- with `action.schedule.adaptive: false`, every clip classified like the peer: the
  like-for-like row, and the reference for labels ("fp32 vigil");
- the labels row compares the `action.started` labels of the first with the second.
"""

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bench_extra  # noqa: E402  (scripts/ is on the path)
from bench_extra import BUILD, LABELS, MODEL, ROOT  # noqa: E402

LOOP = ROOT / "scripts" / "action_loop.py"
SPEED_TARGET = 1.5
RSS_TARGET = 1.0  # peer's peak RSS / vigil's


def say(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def run(cmd, what):
    """Runs cmd; returns (stdout, stderr, wall seconds, peak RSS MiB from wait4). The output
    goes through files, so neither pipe can fill while the other is read."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        text, log = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed ({proc.returncode}): {' '.join(map(str, cmd))}\n{log[-2000:]}")
    return text, log, wall, usage.ru_maxrss / 1024


def config(path, video, threads, adaptive):
    """vigil's default action path on `video` (max_batch left to vigil); returns the events file."""
    return bench_extra.action_config(path, video, MODEL, threads, max_batch=None, adaptive=adaptive).with_suffix(".jsonl")


def vigil_side(vigil, cfg, events):
    events.unlink(missing_ok=True)
    _, err, wall, rss = run([str(vigil), "run", "--config", str(cfg), "--no-progress"], "vigil run")
    started = []
    for line in events.read_text().splitlines():
        e = json.loads(line)
        if e.get("type") == "action.started":
            started.append(e.get("label"))
    done = re.search(r"(\d+) clips classified, (\d+) skipped as stable", err)
    clips, skipped = (int(done.group(1)), int(done.group(2))) if done else (None, None)
    return {"wall": wall, "rss": rss, "started": started, "clips": clips, "skipped": skipped}


def peer_side(python, video, threads):
    out, _, wall, rss = run([str(python), str(LOOP), "--model", str(MODEL), "--labels", str(LABELS),
                             "--video", str(video), "--threads", str(threads)], "the Python loop")
    r = json.loads(out.strip().splitlines()[-1])
    return {"wall": wall, "rss": rss, "clips": r["clips"], "top1": r["top1"]}


def spread(values):
    return min(values), max(values)


def bench_action(vigil, python, sampler, workdir, videos, rounds, threads):
    """videos: [(path, label)]. Returns bench.py's {"rows", "notes", "problems"}."""
    rows, notes, problems = [], [], []
    for video, label in videos:
        fast_cfg, dense_cfg = workdir / f"action-{label}.yaml", workdir / f"action-{label}-dense.yaml"
        fast_ev = config(fast_cfg, video, threads, True)
        dense_ev = config(dense_cfg, video, threads, False)
        sides = {"vigil": [], "dense": [], "peer": []}
        for r in range(rounds):
            order = ["vigil", "dense", "peer"] if r % 2 == 0 else ["peer", "dense", "vigil"]
            for side in order:
                say(f"action path {label} round {r + 1}/{rounds}: {side}")
                if side == "vigil":
                    m = lambda: vigil_side(vigil, fast_cfg, fast_ev)
                elif side == "dense":
                    m = lambda: vigil_side(vigil, dense_cfg, dense_ev)
                else:
                    m = lambda: peer_side(python, video, threads)
                sides[side].append(sampler.take(f"action {side}", m))
        v, d, p = sides["vigil"], sides["dense"], sides["peer"]
        med = lambda xs, k: statistics.median(o[k] for o in xs)
        noise = statistics.median(o["foreign_cores"] for o in v + d + p)
        # Speed ratios per round (peer wall / vigil wall), so the spread is over paired runs.
        fast_r = [b["wall"] / a["wall"] for a, b in zip(v, p)]
        dense_r = [b["wall"] / a["wall"] for a, b in zip(d, p)]
        rss_r = [b["rss"] / a["rss"] for a, b in zip(v, p)]
        clips, skipped = v[0]["clips"], v[0]["skipped"]
        work = (f"{clips} of {clips + skipped} clips classified, the rest skipped as stable"
                if clips is not None and skipped is not None else "adaptive schedule")
        rows.append([f"action path, whole process, {label}: vigil default ({work}) vs the Python loop "
                       f"(every one of {p[0]['clips']} clips) (s per run)",
                     f"{med(v, 'wall'):.2f}", f"{med(p, 'wall'):.2f}",
                     med(p, "wall") / med(v, "wall"), SPEED_TARGET, noise, spread(fast_r)])
        rows.append([f"action path, whole process, {label}: vigil with every clip classified "
                       f"(schedule off) vs the Python loop: the same work (s per run)",
                     f"{med(d, 'wall'):.2f}", f"{med(p, 'wall'):.2f}",
                     med(p, "wall") / med(d, "wall"), SPEED_TARGET, noise, spread(dense_r)])
        rows.append([f"action path, peak RSS, {label}: vigil default vs the Python loop (MiB; ratio = peer / vigil)",
                     f"{med(v, 'rss'):.0f}", f"{med(p, 'rss'):.0f}",
                     med(p, "rss") / med(v, "rss"), RSS_TARGET, noise, spread(rss_r)])
        fast_labels = {tuple(o["started"]) for o in v}
        dense_labels = {tuple(o["started"]) for o in d}
        same = len(fast_labels) == 1 and fast_labels == dense_labels
        show = lambda ls: ", ".join(next(iter(ls))) or "none" if len(ls) == 1 else str(sorted(ls))
        rows.append([f"action path, {label}: action.started labels, vigil default vs every clip classified "
                     f"(ratio 1 = the same in every run)",
                     show(fast_labels), show(dense_labels), 1.0 if same else 0.0, 1.0, 0.0])
        if not same:
            problems.append(f"action path {label}: started labels differ: default {sorted(fast_labels)}, "
                            f"every clip {sorted(dense_labels)}")
        peer_top = p[0]["top1"]
        notes.append(
            f"action path {label}: {rounds} rounds, the three sides alternating; median wall vigil default "
            f"{med(v, 'wall'):.2f} s, every clip {med(d, 'wall'):.2f} s, Python loop {med(p, 'wall'):.2f} s; "
            f"peak RSS {med(v, 'rss'):.0f} / {med(d, 'rss'):.0f} / {med(p, 'rss'):.0f} MiB. "
            f"The Python loop's top-1 per clip: {', '.join(peer_top)}.")
    return {"rows": rows, "notes": notes, "problems": problems}


STARTUP_LIMIT_S = 1.0


def bench_startup(vigil, sampler, workdir, runs):
    """From `vigil run` on the default config (config/default.yaml, both branches, its gallery)
    to its first `stream.up` event, which is written once a stream's first frame is decoded."""
    default = ROOT / "config" / "default.yaml"
    if not (BUILD / "demo-gallery.json").exists():
        return {"rows": [], "notes": ["start-up: skipped (no build/demo-gallery.json: run `make demo-gallery`)."],
                "problems": []}
    text = default.read_text().replace("../build/", f"{BUILD}/").replace("127.0.0.1:9464", "127.0.0.1:0")
    cfg = workdir / "startup.yaml"
    cfg.write_text(text)

    def once():
        started = time.perf_counter()
        proc = subprocess.Popen([str(vigil), "run", "--config", str(cfg), "--no-progress"],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        seconds = None
        for line in proc.stdout:
            if '"stream.up"' in line:
                seconds = time.perf_counter() - started
                break
        proc.terminate()
        proc.wait()
        if seconds is None:
            raise RuntimeError("vigil run on the default config wrote no stream.up event")
        return {"seconds": seconds}

    samples = [sampler.take("start-up", once) for _ in range(runs)]
    secs = [s["seconds"] for s in samples]
    med = statistics.median(secs)
    noise = statistics.median(s["foreign_cores"] for s in samples)
    ratios = [STARTUP_LIMIT_S / s for s in secs]
    return {
        "rows": [[f"start-up: `vigil run` on config/default.yaml (both branches, 5 models) to its first "
                  f"stream.up event, {runs} runs (s; ratio = limit / measured)",
                  f"{med:.2f}", f"{STARTUP_LIMIT_S:.1f}", STARTUP_LIMIT_S / med, 1.0, noise,
                  (min(ratios), max(ratios))]],
        "notes": [f"start-up: {', '.join(f'{s:.2f}' for s in secs)} s; the models load in parallel and the "
                  "I3D's blank-clip check runs once per model file (cached)."],
        "problems": [],
    }
