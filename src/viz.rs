//! Pictures of the cluster's history: what `testfleet viz` prints or writes, what a leader
//! writes every so often into a directory (issue #18), and what a dashboard can serve.
//!
//! There are four, each a plain data type built from replicated rows and rendered three ways —
//! SVG (text), PNG (bytes) and plain text for a terminal (at most 100 columns):
//!
//! | kind | type | from | file stem |
//! |---|---|---|---|
//! | `cluster` | [`ClusterPicture`] | every coordinator's `Status` (roles, term, leader) and `workers` | `cluster_status` |
//! | `health` | [`HealthPicture`] | `health_samples`: cpu, memory, disk free, error rate per coordinator | `health_metrics` |
//! | `leaders` | [`LeaderPicture`] | `leader_transitions`, with each failover's gap estimated from `health_samples` | `leader_transitions` |
//! | `recovery` | [`RecoveryPicture`] | `worker_`, `task_` and `system_recovery_history` | `recovery_timeline` |
//!
//! # How it fits
//!
//! * The picture types and their renderers (`viz/cluster.rs`, `health.rs`, `leaders.rs`,
//!   `recovery.rs`) are pure: rows in, a picture out; a picture in, SVG and text out. Each
//!   picture carries the time it was made (`generated_at_us`) instead of reading a clock, so a
//!   rendering is a function of its data and the tests compare exact output.
//! * [`load`] does the I/O: it reads the rows either through a cluster, as every client command
//!   does (SQL through the leader, `Status` from every member — [`load::Source::Remote`]), or
//!   inside a coordinator from its own DuckDB copy and Raft metrics
//!   ([`load::Source::Local`]), which is what the leader's periodic writer uses: no network,
//!   no credentials.
//! * [`load::write_all`] renders all four to a directory as `<stem>_<UTC time>.svg` and `.png`;
//!   [`load::run_periodically`] does so every interval until cancelled (the leader spawns it
//!   when `--visualization-path` is set). `src/cli/viz.rs` is the command line.
//!
//! # Crates, and why
//!
//! * **plotters** (SVG backend only) draws the health charts: axes, ticks, a mesh and one line
//!   per coordinator are what a plotting library is for. Its default features are off: no
//!   bitmap backend (resvg rasterises), no `ttf` feature (which looks fonts up on the system
//!   through font-kit); its `ab_glyph` feature measures text with the embedded font instead,
//!   so labels are laid out with the metrics they are drawn with.
//! * The cluster graph and the two timelines are hand-written SVG (`viz/svg.rs`): they are a
//!   diagram and event marks rather than charts, and written by hand every mark carries a
//!   `class` and `data-*` attributes and a `<title>` (a tooltip in a browser), which is what
//!   lets a test — or a dashboard — count the transitions and find the leader.
//! * **resvg** (with usvg and tiny-skia, one maintained family, linebender) rasterises SVG to
//!   PNG. Default features are off: no system fonts, no memory-mapped fonts, no raster-image
//!   decoders; only `text`.
//! * **The font** is DejaVu Sans 2.37 (Debian's `fonts-dejavu-core`), committed in
//!   `assets/fonts/` with its license (Bitstream Vera terms, which allow redistribution) and
//!   compiled into the binary with `include_bytes!`. resvg's font database holds that font and
//!   nothing else, and plotters measures with it: a PNG renders the same on every machine and
//!   never looks for a system font or the network. The SVG names the `sans-serif` family, so
//!   a browser shows it with its own sans-serif font.
//!
//! Colours: one per coordinator role and per worker status, the same in every picture
//! (`viz/svg.rs`).

pub mod cluster;
pub mod health;
pub mod leaders;
pub mod load;
pub mod raster;
pub mod recovery;
mod rows;
mod svg;

/// XML escaping, shared with the merged JUnit report of `testfleet pytest`.
pub use svg::escape;
mod text;

pub use cluster::{ClusterPicture, NodeBox, WorkerBox};
pub use health::{HealthPicture, HealthPoint, HealthSeries};
pub use leaders::{LeaderPicture, Transition};
pub use recovery::{RecoveryEvent, RecoveryPicture, RecoveryScope};

/// Which picture.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Kind {
    /// Coordinators with their roles and the leader; workers grouped by status.
    Cluster,
    /// Health metrics over time, per coordinator.
    Health,
    /// Leader transitions: terms, leaders and failover gaps on a timeline.
    Leaders,
    /// Worker, task and system recovery attempts over time, by type and outcome.
    Recovery,
}

impl Kind {
    /// Every kind, in the order `write_all` writes them.
    pub const ALL: [Kind; 4] = [Kind::Cluster, Kind::Health, Kind::Leaders, Kind::Recovery];

    /// The start of the kind's file names (`cluster_status_20260512T101500Z.svg`).
    pub fn file_stem(self) -> &'static str {
        match self {
            Kind::Cluster => "cluster_status",
            Kind::Health => "health_metrics",
            Kind::Leaders => "leader_transitions",
            Kind::Recovery => "recovery_timeline",
        }
    }
}

/// How a picture is rendered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Tables, sparklines and an ASCII timeline for a terminal (100 columns).
    #[default]
    Text,
    /// An SVG document.
    Svg,
    /// A PNG image (rasterised from the SVG with the embedded font).
    Png,
}

impl Format {
    /// The file extension.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Text => "txt",
            Format::Svg => "svg",
            Format::Png => "png",
        }
    }
}

/// One of the four pictures.
#[derive(Clone, Debug, PartialEq)]
pub enum Picture {
    Cluster(ClusterPicture),
    Health(HealthPicture),
    Leaders(LeaderPicture),
    Recovery(RecoveryPicture),
}

impl Picture {
    pub fn kind(&self) -> Kind {
        match self {
            Picture::Cluster(_) => Kind::Cluster,
            Picture::Health(_) => Kind::Health,
            Picture::Leaders(_) => Kind::Leaders,
            Picture::Recovery(_) => Kind::Recovery,
        }
    }

    /// The picture as an SVG document.
    pub fn svg(&self) -> String {
        match self {
            Picture::Cluster(p) => p.svg(),
            Picture::Health(p) => p.svg(),
            Picture::Leaders(p) => p.svg(),
            Picture::Recovery(p) => p.svg(),
        }
    }

    /// The picture for a terminal.
    pub fn text(&self) -> String {
        match self {
            Picture::Cluster(p) => p.text(),
            Picture::Health(p) => p.text(),
            Picture::Leaders(p) => p.text(),
            Picture::Recovery(p) => p.text(),
        }
    }

    /// The picture as a PNG image.
    pub fn png(&self) -> Result<Vec<u8>, VizError> {
        raster::png(&self.svg())
    }

    /// The picture in `format`, as the bytes of a file.
    pub fn render(&self, format: Format) -> Result<Vec<u8>, VizError> {
        match format {
            Format::Text => Ok(self.text().into_bytes()),
            Format::Svg => Ok(self.svg().into_bytes()),
            Format::Png => self.png(),
        }
    }
}

/// Why a picture could not be made.
#[derive(Debug, thiserror::Error)]
pub enum VizError {
    /// Reading through the cluster failed (unreachable, refused, a query error); carries the
    /// client's error so the command line exits with its code.
    #[error("{0}")]
    Cluster(#[from] crate::cli::CliError),
    /// Reading this node's own copy failed (inside a coordinator).
    #[error("cannot read this node's state: {0}")]
    Local(String),
    /// A row did not have the shape its query asks for (a bug, or a newer schema).
    #[error("unexpected row from {table}: {why}")]
    Row { table: &'static str, why: String },
    /// An SVG could not be parsed or rasterised (a bug in a renderer).
    #[error("cannot render the picture: {0}")]
    Render(String),
    /// Writing a file failed.
    #[error("cannot write {path}: {source}")]
    Write {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// `micros` since the epoch as RFC 3339 UTC with milliseconds, or the number when out of range.
fn utc(micros: i64) -> String {
    crate::cli::time::rfc3339_utc(micros).unwrap_or_else(|| format!("{micros} µs"))
}

/// A duration in microseconds, short: `850 ms`, `2.4 s`, `3 min 5 s`, `2 h 10 min`.
fn span(micros: i64) -> String {
    let micros = micros.max(0);
    let ms = micros / 1000;
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else if ms < 3_600_000 {
        format!("{} min {} s", ms / 60_000, (ms / 1000) % 60)
    } else {
        format!("{} h {} min", ms / 3_600_000, (ms / 60_000) % 60)
    }
}

#[cfg(test)]
mod tests;
