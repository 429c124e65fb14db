//! Logging setup: text or JSON, with a filter that can be changed at runtime.
//!
//! Lines go through a bounded queue to a writer thread, so a log output that is not
//! being read (a full pipe) never blocks serving: lines are dropped and counted instead.

use std::sync::OnceLock;

use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();
static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// Log lines queued for the writer thread at most; beyond, new lines are dropped.
const QUEUED_LINES: usize = 4096;

/// Lines dropped so far because the output could not keep up.
pub fn dropped_lines() -> u64 {
    DROPPED.get().map_or(0, |c| c.dropped_lines() as u64)
}

/// Installs logging; keep the guard alive until exit so queued lines are flushed.
pub fn init(format: LogFormat, filter: &str) -> Result<WorkerGuard, String> {
    let filter = parse(filter)?;
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    let (writer, guard) =
        NonBlockingBuilder::default().lossy(true).buffered_lines_limit(QUEUED_LINES).finish(std::io::stderr());
    let _ = DROPPED.set(writer.error_counter());
    let fmt = tracing_subscriber::fmt::layer().with_writer(writer);
    match format {
        LogFormat::Text => registry.with(fmt).try_init(),
        LogFormat::Json => registry.with(fmt.json().flatten_event(true).with_current_span(true)).try_init(),
    }
    .map_err(|e| e.to_string())?;
    let _ = FILTER.set(handle);
    Ok(guard)
}

fn parse(filter: &str) -> Result<EnvFilter, String> {
    EnvFilter::try_new(filter).map_err(|e| format!("invalid log filter {filter:?}: {e}"))
}

/// Replaces the log filter; returns it as now in force.
pub fn set_filter(filter: &str) -> Result<String, String> {
    let handle = FILTER.get().ok_or("logging is not managed by edgexds in this process")?;
    let parsed = parse(filter)?;
    let shown = parsed.to_string();
    handle.reload(parsed).map_err(|e| e.to_string())?;
    tracing::info!(filter = %shown, "log filter changed");
    Ok(shown)
}

pub fn current_filter() -> Option<String> {
    FILTER.get()?.with_current(|f| f.to_string()).ok()
}
