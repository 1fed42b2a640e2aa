//! The `vigil` command line: a thin layer over the library.

use clap::{Parser, Subcommand};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use vigil::config::Problems;
use vigil::pipeline::{self, Prepared, RunOptions};
use vigil::shutdown::{Shutdown, Why};

/// Exit code for a config that fails its checks.
const EXIT_CONFIG: u8 = 2;

#[derive(Parser)]
#[command(
    name = "vigil",
    version,
    about = "Video streams in, labelled events out"
)]
struct Cli {
    /// Log filter (error, warn, info, debug, or tracing's directive syntax). Logs go to stderr.
    #[arg(long, global = true, env = "VIGIL_LOG", default_value = "info")]
    log: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the pipeline until the files end or a signal arrives.
    Run {
        #[arg(long, short)]
        config: PathBuf,
        /// Never draw progress bars, even on a terminal.
        #[arg(long)]
        no_progress: bool,
        /// After the run, write each file stream with its boxes, names and action labels drawn
        /// to DIR/<stream id>.mp4.
        #[arg(long, value_name = "DIR")]
        annotate: Option<PathBuf>,
    },
    /// Validate a config, its files, models and tensor shapes; exit 2 listing every problem.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Enrol people from photos and ask who is who (one-shot face gallery).
    #[command(subcommand)]
    Gallery(GalleryCmd),
    /// Measurements for scripts/bench.py (each prints one JSON object).
    #[command(subcommand)]
    Bench(BenchCmd),
    /// API tokens (`api.tokens` in the config).
    #[command(subcommand)]
    Token(TokenCmd),
    /// The configuration file's format.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Custom actions taught from a few example clips (docs/actions.md).
    #[command(subcommand)]
    Actions(ActionsCmd),
    /// Which parts of the clip at a moment of a video drove a label: an occlusion map
    /// (explain.json, explain.png, explain.mp4 in DIR; docs/actions.md).
    Explain {
        #[arg(long, short)]
        config: PathBuf,
        /// The video file.
        #[arg(long)]
        stream: PathBuf,
        /// Media time, seconds: the clip whose middle is nearest is explained.
        #[arg(long)]
        at: f64,
        /// A label of the model or a custom action (repeat for several; one set of forward
        /// passes serves them all). Default: the model's top label.
        #[arg(long = "label")]
        labels: Vec<String>,
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
        /// Cells: time chunks x rows x columns (one forward pass each).
        #[arg(long, default_value = "4x4x4")]
        grid: vigil::explain::Grid,
        /// Also measure faithfulness: mask the 20% most important cells against 20% random ones.
        #[arg(long)]
        deletion: bool,
        /// Print the JSON instead of a summary.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ActionsCmd {
    /// Teach (or re-teach) an action from example clips; negatives set its threshold.
    Teach {
        #[command(flatten)]
        g: GalleryArgs,
        #[arg(long)]
        name: String,
        /// Video files showing the action (each one example; all its clips are pooled).
        #[arg(required = true)]
        clips: Vec<PathBuf>,
        /// Video files that do not show it.
        #[arg(long = "negative")]
        negatives: Vec<PathBuf>,
    },
    /// List the custom actions.
    List {
        #[command(flatten)]
        g: GalleryArgs,
    },
    /// Remove a custom action.
    Remove {
        #[command(flatten)]
        g: GalleryArgs,
        #[arg(long)]
        name: String,
    },
}

fn actions(cmd: ActionsCmd) -> ExitCode {
    use vigil::control::actions as ops;
    let g = match &cmd {
        ActionsCmd::Teach { g, .. } | ActionsCmd::List { g } | ActionsCmd::Remove { g, .. } => g,
    };
    let loaded = match ops::load_config(&g.config) {
        Ok(l) => l,
        Err(p) => {
            eprint!("{p}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let result = match &cmd {
        ActionsCmd::Teach {
            name,
            clips,
            negatives,
            ..
        } => ops::teach(&loaded, name, clips, negatives),
        ActionsCmd::List { .. } => ops::list(&loaded),
        ActionsCmd::Remove { name, .. } => ops::remove(&loaded, name),
    };
    match result {
        Ok(v) if g.json => {
            println!("{v}");
            ExitCode::SUCCESS
        }
        Ok(v) => {
            print_actions_text(&cmd, &v);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn print_actions_text(cmd: &ActionsCmd, v: &serde_json::Value) {
    let f = |x: &serde_json::Value| x.as_f64().map_or("-".into(), |x| format!("{x:.3}"));
    match cmd {
        ActionsCmd::Teach { .. } => {
            println!(
                "{} {:?} in {}: threshold {} (cosine; {})",
                if v["replaced"] == true {
                    "re-taught"
                } else {
                    "taught"
                },
                v["name"].as_str().unwrap_or(""),
                v["file"].as_str().unwrap_or(""),
                f(&v["threshold"]),
                v["method"].as_str().unwrap_or("")
            );
            println!(
                "  held-out example clips above it: {}/{}; negative clips below it: {}/{}",
                v["positives_above"],
                v["positive_scores"].as_array().map_or(0, Vec::len),
                v["negatives_below"],
                v["negative_scores"].as_array().map_or(0, Vec::len)
            );
            match v["loo_accuracy"].as_f64() {
                Some(a) => println!("  leave-one-out accuracy over clips: {:.1}%", a * 100.0),
                None => println!(
                    "  leave-one-out accuracy: not measured (needs two examples or more and negatives)"
                ),
            }
        }
        ActionsCmd::List { .. } => {
            let list = v["actions"].as_array().cloned().unwrap_or_default();
            if list.is_empty() {
                println!("no custom actions ({})", v["file"].as_str().unwrap_or(""));
            }
            for a in list {
                println!(
                    "{}: threshold {}, {} examples, {} negatives, leave-one-out accuracy {}",
                    a["name"].as_str().unwrap_or(""),
                    f(&a["threshold"]),
                    a["examples"].as_array().map_or(0, Vec::len),
                    a["negatives"].as_array().map_or(0, Vec::len),
                    a["loo_accuracy"]
                        .as_f64()
                        .map_or("not measured".into(), |x| format!("{:.1}%", x * 100.0))
                );
            }
        }
        ActionsCmd::Remove { .. } => println!(
            "removed {:?} ({} left)",
            v["removed"].as_str().unwrap_or(""),
            v["left"]
        ),
    }
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Print a fresh random token once, and the config line that lets it in (only its SHA-256
    /// goes in the config).
    New {
        /// Who will hold the token (shown in logs instead of the token).
        #[arg(long)]
        name: String,
        /// `read` (look only) or `write` (also change streams and the gallery).
        #[arg(long, value_enum)]
        scope: ScopeArg,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ScopeArg {
    Read,
    Write,
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Print the JSON Schema of the config, generated from the structs that parse it (point
    /// your editor's YAML support at it).
    Schema,
}

#[derive(clap::Args)]
struct GalleryArgs {
    /// The config whose `faces` and `gallery` sections to use.
    #[arg(long, short)]
    config: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum GalleryCmd {
    /// Add a person from one photo or more (each must show one face, or name it with --face).
    Enroll {
        #[command(flatten)]
        g: GalleryArgs,
        #[arg(long)]
        name: String,
        /// Which face to take from photos with several, largest first from 0.
        #[arg(long)]
        face: Option<usize>,
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
    /// List enrolled people.
    List {
        #[command(flatten)]
        g: GalleryArgs,
    },
    /// Remove a person.
    Remove {
        #[command(flatten)]
        g: GalleryArgs,
        #[arg(long)]
        name: String,
    },
    /// Who is each face in the photo? (1:N)
    Identify {
        #[command(flatten)]
        g: GalleryArgs,
        /// Candidates listed per face.
        #[arg(long, default_value_t = 3)]
        top: usize,
        image: PathBuf,
    },
    /// Is the face in the photo this person? (1:1) Exit 0 for the same person, 3 for another.
    Verify {
        #[command(flatten)]
        g: GalleryArgs,
        #[arg(long)]
        name: String,
        /// Which face to check in a photo with several, largest first from 0 (default 0).
        #[arg(long)]
        face: Option<usize>,
        image: PathBuf,
    },
    /// Distances between the gallery's faces: the threshold for a false-accept rate, and the
    /// rates at `faces.match_threshold` (docs/faces.md).
    Calibrate {
        #[command(flatten)]
        g: GalleryArgs,
        /// Target false-accept rate.
        #[arg(long, default_value_t = 0.001)]
        far: f64,
    },
    /// Record that the face in the photo is not NAME: a face nearer to it than to NAME's own
    /// photos is never named NAME.
    Reject {
        #[command(flatten)]
        g: GalleryArgs,
        #[arg(long)]
        name: String,
        /// Which face to take from a photo with several, largest first from 0.
        #[arg(long)]
        face: Option<usize>,
        image: PathBuf,
    },
    /// List the groups of unknown faces (one per unseen person, as far as vigil can tell).
    Unknowns {
        #[command(flatten)]
        g: GalleryArgs,
    },
    /// Enrol an unknown group's faces under NAME (new or enrolled); later events use the name.
    NameUnknown {
        #[command(flatten)]
        g: GalleryArgs,
        #[arg(long)]
        id: String,
        #[arg(long)]
        name: String,
    },
    /// Fit a projection head on the gallery's embeddings with batch-all triplet loss; it is
    /// used only if held-out verification improves.
    Tune {
        #[command(flatten)]
        g: GalleryArgs,
        /// Go back to the state before the last tune (or rollback).
        #[arg(long)]
        rollback: bool,
    },
    /// Build the search index (HNSW for large galleries) ahead of a run and keep it beside the
    /// gallery, so `run` loads it; with a shared store, sync this node's cache first.
    Index {
        #[command(flatten)]
        g: GalleryArgs,
    },
}

/// Exit code of `gallery verify` when the face is someone else.
const EXIT_DIFFERENT: u8 = 3;

fn gallery(cmd: GalleryCmd) -> ExitCode {
    use vigil::control::gallery::{self as ops, Photo};
    let g = match &cmd {
        GalleryCmd::Enroll { g, .. }
        | GalleryCmd::List { g }
        | GalleryCmd::Remove { g, .. }
        | GalleryCmd::Identify { g, .. }
        | GalleryCmd::Verify { g, .. }
        | GalleryCmd::Calibrate { g, .. }
        | GalleryCmd::Reject { g, .. }
        | GalleryCmd::Unknowns { g }
        | GalleryCmd::NameUnknown { g, .. }
        | GalleryCmd::Tune { g, .. }
        | GalleryCmd::Index { g } => g,
    };
    let json = g.json;
    let mut s = match ops::open(&g.config) {
        Ok(s) => s,
        Err(p) => {
            eprint!("{p}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let result = match &cmd {
        GalleryCmd::Enroll {
            name, face, images, ..
        } => {
            let photos: Vec<Photo> = images.iter().map(|p| Photo::File(p)).collect();
            s.enroll(name, &photos, *face)
        }
        GalleryCmd::List { .. } => s.list(),
        GalleryCmd::Remove { name, .. } => s.remove(name),
        GalleryCmd::Identify { top, image, .. } => s.identify(&Photo::File(image), (*top).max(1)),
        GalleryCmd::Verify {
            name, face, image, ..
        } => s.verify(name, &Photo::File(image), *face),
        GalleryCmd::Calibrate { far, .. } => s.calibrate(*far),
        GalleryCmd::Reject {
            name, face, image, ..
        } => s.reject(name, &Photo::File(image), *face),
        GalleryCmd::Unknowns { .. } => s.unknowns(),
        GalleryCmd::NameUnknown { id, name, .. } => s.name_unknown(id, name),
        GalleryCmd::Index { .. } => s.index(),
        GalleryCmd::Tune { rollback, .. } => {
            if *rollback {
                s.rollback()
            } else {
                s.tune()
            }
        }
    };
    let v = match result {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if json {
        println!("{v}");
    } else {
        print_gallery_text(&cmd, &v);
    }
    match cmd {
        GalleryCmd::Verify { .. } if v["same"] == false => ExitCode::from(EXIT_DIFFERENT),
        _ => ExitCode::SUCCESS,
    }
}

fn print_index(v: &serde_json::Value) {
    let rows = v["rows"].as_u64().unwrap_or(0);
    if v["kind"] == "exact" {
        println!(
            "exact search over {rows} embeddings: no index to build (gallery.index.kind, hnsw_above)"
        );
        return;
    }
    let how = match v["origin"].as_str() {
        Some("loaded") => "loaded, already current,",
        Some("caught_up") => "loaded and brought up to date in place",
        _ => "built",
    };
    let secs = v["seconds"].as_f64().unwrap_or(0.0);
    println!("hnsw index over {rows} embeddings {how} in {secs:.1} s");
    match v["dir"].as_str() {
        Some(d) => println!("written to {d}"),
        None => println!("not written (gallery.index.persist is false, or the folder is not writable: see the log)"),
    }
}

fn print_gallery_text(cmd: &GalleryCmd, v: &serde_json::Value) {
    let f = |x: &serde_json::Value| x.as_f64().map_or("-".into(), |d| format!("{d:.3}"));
    match cmd {
        GalleryCmd::Enroll { .. } => println!(
            "enrolled {} ({} embedding(s) in total) in {}",
            v["enrolled"], v["embeddings"], v["gallery"]
        ),
        GalleryCmd::List { .. } => {
            for p in v["people"].as_array().into_iter().flatten() {
                println!(
                    "{}\t{} embedding(s)",
                    p["name"].as_str().unwrap_or(""),
                    p["embeddings"]
                );
            }
        }
        GalleryCmd::Remove { .. } => println!("removed {}", v["removed"]),
        GalleryCmd::Identify { .. } => {
            let faces = v["faces"].as_array().cloned().unwrap_or_default();
            if faces.is_empty() {
                println!("no face found");
            }
            for face in faces {
                let who = face["identity"].as_str().unwrap_or("unknown");
                let cands: Vec<String> = face["candidates"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| {
                        format!(
                            "{} {}",
                            c["identity"].as_str().unwrap_or(""),
                            f(&c["distance"])
                        )
                    })
                    .collect();
                println!("{} at {}: {}", who, face["box"], cands.join(", "));
            }
        }
        GalleryCmd::Verify { .. } => {
            let verdict = if v["same"] == true {
                "same person"
            } else {
                "different person"
            };
            println!(
                "{verdict}: distance {} to {} (threshold {})",
                f(&v["distance"]),
                v["identity"],
                f(&v["threshold"])
            );
        }
        GalleryCmd::Calibrate { .. } => print_calibration(v),
        GalleryCmd::Reject { .. } => println!(
            "{} is not {} ({} negative example(s) in {})",
            v["image"].as_str().unwrap_or(""),
            v["rejected"],
            v["negatives"],
            v["file"].as_str().unwrap_or("")
        ),
        GalleryCmd::Unknowns { .. } => {
            let groups = v["groups"].as_array().cloned().unwrap_or_default();
            if groups.is_empty() {
                println!("no unknown faces grouped yet");
            }
            for g in groups {
                println!(
                    "{}\t{} track(s)\tfirst {}\tlast {}\tstreams {}\t{}",
                    g["id"].as_str().unwrap_or(""),
                    g["count"],
                    g["first_seen"].as_str().unwrap_or(""),
                    g["last_seen"].as_str().unwrap_or(""),
                    g["streams"],
                    g["snapshot"].as_str().unwrap_or("-")
                );
            }
        }
        GalleryCmd::NameUnknown { .. } => println!(
            "group {} enrolled as {} ({} embedding(s) added, {} in total)",
            v["id"], v["enrolled"], v["added"], v["embeddings"]
        ),
        GalleryCmd::Tune { .. } => println!("{}", v["summary"].as_str().unwrap_or("")),
        GalleryCmd::Index { .. } => print_index(v),
    }
}

fn print_calibration(v: &serde_json::Value) {
    let f = |x: &serde_json::Value| x.as_f64().map_or("-".into(), |d| format!("{d:.3}"));
    let pct = |x: &serde_json::Value| {
        x.as_f64()
            .map_or("-".into(), |d| format!("{:.2}%", d * 100.0))
    };
    println!(
        "{} people, {} embeddings; {} faces of named tracks, {} of unknown groups",
        v["people"], v["embeddings"], v["named_track_embeddings"], v["unknown_group_embeddings"]
    );
    for kind in ["genuine", "impostor"] {
        let s = &v[kind];
        println!(
            "{kind:>9} pairs: {:>6}   min {}  5% {}  median {}  95% {}  max {}",
            s["pairs"],
            f(&s["min"]),
            f(&s["p5"]),
            f(&s["median"]),
            f(&s["p95"]),
            f(&s["max"])
        );
    }
    println!(
        "threshold for a false-accept rate of {}: {} (false rejects there: {})",
        v["target_far"],
        f(&v["threshold"]),
        pct(&v["frr_at_threshold"])
    );
    println!(
        "at the configured match_threshold {}: false accepts {}, false rejects {}",
        f(&v["configured_threshold"]),
        pct(&v["far_at_configured"]),
        pct(&v["frr_at_configured"])
    );
    for w in v["warnings"].as_array().into_iter().flatten() {
        println!("warning: {}", w.as_str().unwrap_or(""));
    }
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Append event-sized lines to a spool under each `fsync` policy (always, interval 200 ms,
    /// never) at an offered rate: the rate achieved, the share of time spent appending, and
    /// append latencies.
    Spool {
        /// Folder on the disk to measure (a spool per policy is made and removed under it).
        #[arg(long)]
        dir: PathBuf,
        /// Offered appends per second.
        #[arg(long, default_value_t = 1000.0)]
        rate: f64,
        /// Seconds per policy.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
    },
    /// Decode a video file through the source stage.
    Decode { file: PathBuf },
    /// Time a whole run of the config (model loading excluded) and count the faces it named.
    Faces {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Time a whole run of the config (model loading excluded): clips scored per second.
    Pipeline {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Time the action classifier on the first real clip of the config's first stream.
    Classify {
        #[arg(long, short)]
        config: PathBuf,
        /// Timed calls after one warm-up call.
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Clips per call.
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// Write the input tensor (f32 little-endian) here, for a peer to use the same clip.
        #[arg(long)]
        dump_input: Option<PathBuf>,
    },
    /// Enrol synthetic identities, persist and reload the gallery and its HNSW index, and time
    /// HNSW queries against exact search (recall@1).
    Gallery {
        /// Identities to enrol.
        #[arg(long, default_value_t = 10_000)]
        size: usize,
        /// Embedding length.
        #[arg(long, default_value_t = 128)]
        dim: usize,
        /// Queries of each kind (probes of enrolled people, strangers).
        #[arg(long, default_value_t = 1000)]
        queries: usize,
        /// Folder for the gallery file and its index (kept, so they can be inspected).
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 16)]
        m: usize,
        #[arg(long, default_value_t = 200)]
        ef_construction: usize,
        /// Candidate list sizes to search with, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "64")]
        ef_search: Vec<usize>,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Reuse the gallery and index an earlier run left in --dir (only reloading is timed).
        #[arg(long)]
        reuse: bool,
        /// Variance of component j falls as (j+1)^-decay (0: isotropic).
        #[arg(long, default_value_t = 0.0)]
        decay: f64,
        /// How the graph stores rows: f32, f16 or i8 (gallery.index.quantization).
        #[arg(long, default_value = "f32")]
        quantization: String,
        /// Candidates re-ranked by exact distance, comma-separated (each searched with each
        /// ef_search; gallery.index.rerank).
        #[arg(long, value_delimiter = ',', default_value = "0")]
        rerank: Vec<usize>,
        /// Only open the gallery and index an earlier run left in --dir, as `vigil run` does,
        /// and report the seconds and the peak resident memory.
        #[arg(long)]
        open_only: bool,
        /// With --open-only: then, on a copy of the gallery and its index, enrol one person in
        /// the file and time the open gallery catching up (seconds, peak resident memory).
        #[arg(long, requires = "open_only")]
        refresh: bool,
    },
}

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        // A closed stderr (the reader of a pipe went away) must not turn a log line into a
        // panic of whichever thread wrote it: tracing would report the failed write with
        // eprintln!, which panics.
        .log_internal_errors(false)
        .init();
}

/// Loads and checks a config, printing every problem.
fn prepared(config: &Path) -> Result<Prepared, ExitCode> {
    let report = |p: Problems| {
        eprint!("{p}");
        ExitCode::from(EXIT_CONFIG)
    };
    let loaded = vigil::config::load(config).map_err(report)?;
    // Before any thread starts: the options live in the process environment.
    vigil::source::live::configure_ffmpeg(&loaded.config.live);
    pipeline::prepare(loaded).map_err(report)
}

/// First signal: stop reading, drain, flush. Second: exit at once.
fn install_signals(stop: Shutdown) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            rt.block_on(async move {
                use tokio::signal::unix::{signal, SignalKind};
                let (Ok(mut int), Ok(mut term)) = (
                    signal(SignalKind::interrupt()),
                    signal(SignalKind::terminate()),
                ) else {
                    tracing::warn!("cannot install signal handlers");
                    return;
                };
                for n in 0.. {
                    tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} }
                    if n == 0 {
                        stop.cancel(Why::Exit);
                        tracing::warn!(
                            "stopping: finishing queued work (signal again to exit at once)"
                        );
                    } else {
                        // `_exit`, not `exit`: exit runs the C libraries' static destructors
                        // (ONNX Runtime, OpenCV) while inference threads still use them, which
                        // crashed the process now and then (SIGSEGV instead of 130).
                        // SAFETY: ends the process; nothing after it runs.
                        unsafe { libc::_exit(130) }
                    }
                }
            })
        })?;
    Ok(())
}

/// glibc gives every thread that allocates an arena of its own, up to 8 per core, and keeps
/// what they grew. A service whose cameras come and go starts and ends threads all day: with
/// the default, resident memory rose about 7 KB per stream added and removed (14 MB over 2000
/// cycles); with two arenas it stays flat (tests/api_robustness.rs) and decoding is as fast. A
/// `MALLOC_ARENA_MAX` in the environment wins.
fn limit_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets a parameter of the allocator; called before any thread.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse();
    init_logging(&cli.log);
    let result = match cli.cmd {
        Cmd::Check { config } => match prepared(&config) {
            Ok(p) => {
                let action = p.action.as_ref().map_or("off".to_string(), |a| {
                    format!("{} ({} classes)", a.classifier.name, a.labels.len())
                });
                let faces = p.faces.as_ref().map_or("off".to_string(), |f| {
                    let e = &f.models.embedder;
                    format!(
                        "{} + {} ({}-d), {} enrolled",
                        f.models.detector_name, f.models.embedder_name, e.dim, f.enrolled
                    )
                });
                let n = p.streams.len();
                let plural = if n == 1 { "" } else { "s" };
                println!(
                    "{}: ok ({n} stream{plural}; action: {action}; faces: {faces})",
                    config.display()
                );
                if let Some(line) = p.shard_summary() {
                    println!("  cluster: {line}");
                }
                // Cameras are not part of the config's validity (a run retries them until they
                // answer), but whether they answer now is worth knowing.
                for s in p.streams.iter().filter(|s| s.plan.kind.is_live()) {
                    use vigil::source::LiveSource;
                    match vigil::source::live::LiveReader::open(&s.plan.kind, &s.plan.live) {
                        Ok(r) => {
                            let i = r.info();
                            println!("  {}: reachable, {}x{}", s.id, i.width, i.height)
                        }
                        Err(e) => println!(
                            "  {}: not reachable now ({e}); `vigil run` keeps retrying",
                            s.id
                        ),
                    }
                }
                Ok(())
            }
            Err(code) => return code,
        },
        Cmd::Run {
            config,
            no_progress,
            annotate,
        } => {
            let report = |p: Problems| {
                eprint!("{p}");
                ExitCode::from(EXIT_CONFIG)
            };
            let loaded = match vigil::config::load(&config) {
                Ok(l) => l,
                Err(p) => return report(p),
            };
            // Before any thread starts: the options live in the process environment.
            vigil::source::live::configure_ffmpeg(&loaded.config.live);
            // The checks that need no model first: a config whose `metrics.listen` (or anything
            // else) is wrong is reported as such, with exit 2, before any server starts.
            // (`prepare` lists them with those only it finds, such as a file that does not
            // decode, as `vigil check` does.)
            let problems = vigil::config::validate(&loaded);
            if !problems.is_empty() {
                return match pipeline::prepare(loaded) {
                    Err(all) => report(all),
                    Ok(_) => report(Problems(problems)),
                };
            }
            // Health and readiness from the start: preparing can take minutes (an HNSW build
            // at a large gallery), and a probe must see a process starting, not nothing.
            let metrics = std::sync::Arc::new(vigil::metrics::Metrics::new());
            let server = match vigil::control::serve_metrics(&loaded.config.metrics, &metrics) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    return ExitCode::FAILURE;
                }
            };
            metrics
                .readiness
                .preparing("loading the models and the gallery");
            let p = match pipeline::prepare(loaded) {
                Ok(p) => p,
                Err(p) => return report(p),
            };
            let stop = Shutdown::new();
            if let Err(e) = install_signals(stop.clone()) {
                tracing::warn!("cannot install signal handlers: {e}");
            }
            let opts = RunOptions {
                progress: !no_progress,
                annotate,
                serve: false,
            };
            match vigil::control::run(p, opts, metrics, server.as_ref(), stop) {
                Ok(s) if s.ok() => {
                    tracing::info!(
                        "done: {} events; {} clips classified, {} skipped as stable, {} frames searched for faces",
                        s.events,
                        s.clips,
                        s.skipped,
                        s.face_frames
                    );
                    Ok(())
                }
                Ok(s) => {
                    let mut problems: Vec<String> = s.stream_errors;
                    problems.extend(s.inference_error);
                    if s.sink_errors > 0 {
                        problems.push(format!("{} failed sink writes", s.sink_errors));
                    }
                    Err(anyhow::anyhow!(
                        "the run finished with errors ({} events written):\n  {}",
                        s.events,
                        problems.join("\n  ")
                    ))
                }
                Err(e) => Err(e),
            }
        }
        Cmd::Gallery(cmd) => return gallery(cmd),
        Cmd::Actions(cmd) => return actions(cmd),
        Cmd::Explain {
            config,
            stream,
            at,
            labels,
            out,
            grid,
            deletion,
            json,
        } => {
            let loaded = match vigil::control::actions::load_config(&config) {
                Ok(l) => l,
                Err(p) => {
                    eprint!("{p}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            let req = vigil::explain::Request {
                video: &stream,
                at,
                labels,
                out: &out,
                grid,
                deletion,
            };
            vigil::explain::explain(&loaded, &req).map(|v| {
                if json {
                    println!("{v}");
                } else {
                    for m in v["maps"].as_array().into_iter().flatten() {
                        println!(
                            "{} ({}): p={:.3} on the clip {:.2}-{:.2} s",
                            m["label"].as_str().unwrap_or(""),
                            m["source"].as_str().unwrap_or(""),
                            m["score"].as_f64().unwrap_or(0.0),
                            v["clip"]["start"].as_f64().unwrap_or(0.0),
                            v["clip"]["end"].as_f64().unwrap_or(0.0)
                        );
                    }
                    println!(
                        "wrote {}/explain.json, explain.png and explain.mp4",
                        out.display()
                    );
                }
            })
        }
        Cmd::Token(TokenCmd::New { name, scope }) => {
            if name.trim().is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
                eprintln!("error: --name must be 1..=64 printable characters");
                return ExitCode::from(EXIT_CONFIG);
            }
            match vigil::control::token::new_token() {
                Ok(token) => {
                    let scope = match scope {
                        ScopeArg::Read => "read",
                        ScopeArg::Write => "write",
                    };
                    let hash = vigil::control::token::sha256_hex(&token);
                    println!("{token}");
                    eprintln!(
                        "Keep the token above secret: it is shown once. Add this line under `api: tokens:` in the config:"
                    );
                    println!(
                        "    - {{name: {}, sha256: {hash}, scope: {scope}}}",
                        serde_json::to_string(&name).unwrap_or_default()
                    );
                    Ok(())
                }
                Err(e) => Err(anyhow::anyhow!("cannot read random bytes: {e}")),
            }
        }
        Cmd::Config(ConfigCmd::Schema) => {
            let schema = schemars::schema_for!(vigil::config::Config);
            println!(
                "{}",
                serde_json::to_string_pretty(&schema).expect("a schema serialises")
            );
            Ok(())
        }
        Cmd::Bench(BenchCmd::Faces { config }) => match prepared(&config) {
            Ok(p) => vigil::bench::faces(p).map(|v| println!("{v}")),
            Err(code) => return code,
        },
        Cmd::Bench(BenchCmd::Gallery {
            size,
            dim,
            queries,
            dir,
            m,
            ef_construction,
            ef_search,
            seed,
            decay,
            reuse,
            quantization,
            rerank,
            open_only,
            refresh,
        }) => {
            let quantization = match quantization.as_str() {
                "f32" => vigil::config::IndexQuantization::F32,
                "f16" => vigil::config::IndexQuantization::F16,
                "i8" => vigil::config::IndexQuantization::I8,
                other => {
                    eprintln!("error: --quantization {other:?}: must be f32, f16 or i8");
                    return ExitCode::FAILURE;
                }
            };
            let index = vigil::config::GalleryIndexConfig {
                m,
                ef_construction,
                quantization,
                ..Default::default()
            };
            let o = vigil::bench::GalleryBench {
                size: size.max(1),
                dim: dim.max(1),
                queries,
                dir,
                index,
                seed,
                decay,
                ef_search,
                rerank,
                reuse: reuse || open_only,
                open_only,
                refresh,
            };
            vigil::bench::gallery(&o).map(|v| println!("{v}"))
        }
        Cmd::Bench(BenchCmd::Pipeline { config }) => match prepared(&config) {
            Ok(p) => vigil::bench::pipeline(p).map(|v| println!("{v}")),
            Err(code) => return code,
        },
        Cmd::Bench(BenchCmd::Spool { dir, rate, seconds }) => {
            vigil::bench::spool(&dir, rate, seconds).map(|v| println!("{v}"))
        }
        Cmd::Bench(BenchCmd::Decode { file }) => {
            vigil::bench::decode(&file).map(|v| println!("{v}"))
        }
        Cmd::Bench(BenchCmd::Classify {
            config,
            runs,
            batch,
            dump_input,
        }) => match prepared(&config) {
            Ok(p) => vigil::bench::classify(p, runs, batch.max(1), dump_input.as_deref())
                .map(|v| println!("{v}")),
            Err(code) => return code,
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
