//! Keeps a directory of manifests loaded: scans it, reparses files whose metadata
//! changed, keeps each file's last good content when a new one is malformed or
//! still being written, and republishes the merged state whenever it changes.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use notify::{RecursiveMode, Watcher};
use tracing::{debug, error, info, warn};

use super::file_events::{FileEvents, Pending};
use super::parse::{Located, MAX_FILE_BYTES, ParseError, is_manifest, parse_file_located};
use crate::error::{Error, Result};
use crate::model::{ObjectKey, ObjectKind, SourceState};

/// Safety net for filesystems whose change events get lost (network mounts). Rare on
/// purpose: with inotify working, an idle edgexds does no work at all.
pub const RESCAN_INTERVAL: Duration = Duration::from_secs(60);
/// Editors and ConfigMap updates touch several files at once; they are taken in one scan.
const SETTLE: Duration = Duration::from_millis(5);
/// Without events (the safety-net rescan), a file changed this recently may be mid-write.
const UNWATCHED_QUIET: Duration = Duration::from_secs(1);
const MAX_DEPTH: usize = 16;
/// Manifest files in the whole tree, at most; a larger tree is refused and the last state kept.
pub const MAX_FILES: usize = 10_000;

/// What identifies a file's content without reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileStat {
    dev: u64,
    ino: u64,
    len: u64,
    modified: Option<SystemTime>,
    ctime: (i64, i64),
}

impl FileStat {
    fn of(meta: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            modified: meta.modified().ok(),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

#[derive(Debug)]
struct FileEntry {
    /// Metadata at the last read, good or not, so a bad file is reported once.
    stat: FileStat,
    /// The last content that parsed; `None` if the file never did.
    objects: Option<Arc<Vec<Located>>>,
}

/// What one scan found.
#[derive(Debug, Default)]
pub struct ScanOutcome {
    pub changed: bool,
    pub errors: Vec<ParseError>,
    /// Files whose new content was not taken yet (mid-write); look again then.
    pub recheck_at: Option<Instant>,
}

/// How a scan learns what is complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// Startup: take every file as it is.
    Initial,
    /// Filesystem events: files a writer still holds are not read.
    Events,
    /// The safety net, without events: a file changed within [`UNWATCHED_QUIET`] waits.
    Periodic,
}

#[derive(Debug)]
pub struct ManifestDir {
    root: PathBuf,
    files: BTreeMap<PathBuf, FileEntry>,
}

impl ManifestDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into(), files: BTreeMap::new() }
    }

    /// Blocking: reads the directory. Fails if the directory itself cannot be read or
    /// holds more than [`MAX_FILES`] manifests; the last good state then stays.
    pub fn rescan(&mut self, trigger: Trigger, pending: &Pending) -> Result<ScanOutcome> {
        let mut found = Vec::new();
        let mut visited = HashSet::new();
        collect_files(&self.root, 0, &mut visited, &mut found)
            .map_err(|source| Error::ManifestDir { path: self.root.clone(), source })?;
        found.sort_by(|a, b| a.0.cmp(&b.0));
        let mut outcome = ScanOutcome::default();
        let before = self.files.len();
        self.files.retain(|path, entry| {
            let keep = found.binary_search_by(|(p, _)| p.cmp(path)).is_ok();
            if !keep && entry.objects.is_some() {
                info!(file = %path.display(), "manifest file removed");
            }
            keep
        });
        outcome.changed |= self.files.len() != before;
        let now = Instant::now();
        for (path, meta) in found {
            let stat = FileStat::of(&meta);
            if self.files.get(&path).is_some_and(|f| f.stat == stat) {
                continue;
            }
            let defer_until = match trigger {
                Trigger::Events if pending.is_mid_write(&path) => pending.writing.get(&path).copied(),
                Trigger::Periodic => recently_modified(&meta).map(|age| now + UNWATCHED_QUIET.saturating_sub(age)),
                _ => None,
            };
            if let Some(at) = defer_until {
                debug!(file = %path.display(), "manifest file is being written; keeping its last content for now");
                outcome.recheck_at = Some(outcome.recheck_at.map_or(at, |t| t.min(at)));
                continue;
            }
            let parsed = read_limited(&path, stat.len).and_then(|bytes| {
                let text = std::str::from_utf8(&bytes).map_err(|e| ParseError {
                    path: path.clone(),
                    line: 1,
                    message: format!("not UTF-8: {e}"),
                })?;
                parse_file_located(&path, text)
            });
            let entry = self.files.entry(path.clone()).or_insert(FileEntry { stat, objects: None });
            entry.stat = stat;
            match parsed {
                Ok(objects) => {
                    debug!(file = %path.display(), objects = objects.len(), "manifest file loaded");
                    entry.objects = Some(Arc::new(objects));
                    outcome.changed = true;
                }
                Err(err) => {
                    let kept = if entry.objects.is_some() { "last good content kept" } else { "file ignored" };
                    error!(file = %err.path.display(), line = err.line, "malformed manifest, {kept}: {err}");
                    outcome.errors.push(err);
                }
            }
        }
        Ok(outcome)
    }

    /// All objects of all good files; on a name clash the file later in path order wins.
    pub fn state(&self) -> SourceState {
        let mut state = SourceState::default();
        let mut origins: BTreeMap<(ObjectKind, ObjectKey), (&Path, usize)> = BTreeMap::new();
        for (path, entry) in &self.files {
            for Located { line, object } in entry.objects.iter().flat_map(|o| o.iter()) {
                let (kind, key) = (object.kind(), object.key().clone());
                object.clone().insert_into(&mut state);
                if let Some((earlier, earlier_line)) = origins.insert((kind, key.clone()), (path, *line)) {
                    warn!(
                        object = %key,
                        kind = kind.name(),
                        winner = %format!("{}:{line}", path.display()),
                        ignored = %format!("{}:{earlier_line}", earlier.display()),
                        "object defined more than once; the later file's copy wins"
                    );
                }
            }
        }
        state
    }
}

/// How long ago a file was modified, if that is less than [`UNWATCHED_QUIET`].
fn recently_modified(meta: &std::fs::Metadata) -> Option<Duration> {
    let age = meta.modified().ok()?.elapsed().unwrap_or_default();
    (age < UNWATCHED_QUIET).then_some(age)
}

/// Reads a file only if it is within [`MAX_FILE_BYTES`], so a huge file never reaches the parser.
fn read_limited(path: &Path, len: u64) -> Result<Vec<u8>, ParseError> {
    let too_big = |len: u64| ParseError {
        path: path.to_owned(),
        line: 1,
        message: format!("file of {len} bytes exceeds the limit of {MAX_FILE_BYTES} bytes"),
    };
    if len > MAX_FILE_BYTES as u64 {
        return Err(too_big(len));
    }
    use std::io::Read;
    let mut bytes = Vec::with_capacity(len as usize);
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_FILE_BYTES as u64 + 1).read_to_end(&mut bytes))
        .map_err(|e| ParseError { path: path.to_owned(), line: 1, message: format!("cannot read: {e}") })?;
    if bytes.len() > MAX_FILE_BYTES {
        return Err(too_big(bytes.len() as u64));
    }
    Ok(bytes)
}

/// Manifest files under `dir` with their metadata. Hidden entries are skipped, which also
/// skips the `..data` machinery of mounted ConfigMaps while following their symlinks.
/// Each directory is entered once, whatever symlinks lead to it, so links to the root
/// or to a parent cannot multiply paths.
fn collect_files(
    dir: &Path,
    depth: usize,
    visited: &mut HashSet<(u64, u64)>,
    found: &mut Vec<(PathBuf, std::fs::Metadata)>,
) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(dir)?;
    if !visited.insert((meta.dev(), meta.ino())) {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let Ok(meta) = std::fs::metadata(&path) else { continue };
        if meta.is_dir() && depth < MAX_DEPTH {
            collect_files(&path, depth + 1, visited, found)?;
        } else if meta.is_file() && is_manifest(&path) {
            if found.len() >= MAX_FILES {
                return Err(std::io::Error::other(format!(
                    "more than {MAX_FILES} manifest files; refusing to load the tree"
                )));
            }
            found.push((path, meta));
        }
    }
    Ok(())
}

/// Watches `root` and everything under it.
fn watch(watcher: &mut notify::RecommendedWatcher, root: &Path) -> Result<()> {
    watcher.watch(root, RecursiveMode::Recursive).map_err(|source| Error::Watch { path: root.to_owned(), source })
}

/// Loads `root`, publishes its state, then republishes on every change until `shutdown`.
pub async fn run(context: super::ManifestsContext) -> Result<()> {
    let super::ManifestsContext { dir: root, states, metrics, scans, mut shutdown } = context;
    let mut dir = ManifestDir::new(&root);
    let events = FileEvents::new();
    let recorder = (events.clone(), root.clone());
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
        Ok(event) => recorder.0.record(&recorder.1, &event),
        Err(_) => recorder.0.record(&recorder.1, &notify::Event::new(notify::EventKind::Any)),
    })
    .map_err(|source| Error::Watch { path: root.clone(), source })?;
    watch(&mut watcher, &root)?;
    // Set only while the root is gone, to see it come back: watching the parent all the
    // time would wake us for every sibling's activity.
    let parent = root.parent().filter(|p| !p.as_os_str().is_empty()).map(Path::to_owned);
    let mut watching_parent = false;
    let mut trigger = Trigger::Initial;
    let mut published = false;
    loop {
        let pending = events.take();
        if pending.root_replaced || watching_parent {
            if root.is_dir() {
                let _ = watcher.unwatch(&root);
                match watch(&mut watcher, &root) {
                    Ok(()) => info!(dir = %root.display(), "manifests directory is back; watching it again"),
                    Err(err) => warn!("{err}"),
                }
                if let Some(parent) = parent.as_deref().filter(|_| watching_parent) {
                    let _ = watcher.unwatch(parent);
                    watching_parent = false;
                }
            } else if let Some(parent) = parent.as_deref().filter(|_| !watching_parent) {
                watching_parent = watcher.watch(parent, RecursiveMode::NonRecursive).is_ok();
                // It may have come back before the parent's watch was in place.
                if root.is_dir() {
                    events.record(&root, &notify::Event::new(notify::EventKind::Any).add_path(root.clone()));
                }
            }
        }
        scans.scans.inc();
        let outcome;
        (dir, outcome) = tokio::task::spawn_blocking(move || {
            let outcome = dir.rescan(trigger, &pending);
            (dir, outcome)
        })
        .await
        .map_err(|source| Error::Task { what: "a manifests scan", source })?;
        let mut recheck_at = None;
        match outcome {
            Ok(outcome) => {
                recheck_at = outcome.recheck_at;
                if outcome.changed || !published {
                    metrics.event("manifests");
                    let state = dir.state();
                    info!(
                        services = state.services.len(),
                        slices = state.slices.len(),
                        probes = state.probes.len(),
                        "manifests loaded"
                    );
                    states.send_replace(Some(Arc::new(state)));
                    published = true;
                }
            }
            // The directory vanished or became unreadable: keep serving what we have.
            Err(err) if published => error!("{err}; serving the last loaded state"),
            Err(err) => return Err(err),
        }
        let next_periodic = tokio::time::Instant::now() + RESCAN_INTERVAL;
        let recheck = recheck_at.map_or(next_periodic, |at| next_periodic.min(at.into()));
        tokio::select! {
            () = events.changed() => {
                tokio::time::sleep(SETTLE).await;
                trigger = Trigger::Events;
            }
            () = tokio::time::sleep_until(recheck) => {
                trigger = if recheck_at.is_some() { Trigger::Events } else { Trigger::Periodic };
            }
            () = crate::shutdown::requested(&mut shutdown) => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ObjectKey;

    const WEB: &str =
        "apiVersion: v1\nkind: Service\nmetadata: { name: web, namespace: shop }\nspec: { ports: [{ port: 80 }] }\n";
    const API: &str =
        "apiVersion: v1\nkind: Service\nmetadata: { name: api, namespace: shop }\nspec: { ports: [{ port: 81 }] }\n";

    fn scan(dir: &mut ManifestDir) -> Result<ScanOutcome> {
        dir.rescan(Trigger::Events, &Pending::default())
    }

    fn names(dir: &ManifestDir) -> Vec<String> {
        dir.state().services.keys().map(ObjectKey::to_string).collect()
    }

    #[test]
    fn malformed_file_keeps_its_last_good_content_and_reports_file_and_line() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("web.yaml");
        std::fs::write(&file, WEB).unwrap();
        let mut dir = ManifestDir::new(tmp.path());
        assert!(scan(&mut dir).unwrap().changed);
        std::fs::write(&file, "apiVersion: v1\nkind: Service\nmetadata: { name: web\n").unwrap();
        let outcome = scan(&mut dir).unwrap();
        assert!(!outcome.changed);
        assert_eq!(outcome.errors.len(), 1);
        assert_eq!(outcome.errors[0].path, file);
        assert!(outcome.errors[0].line >= 3, "{}", outcome.errors[0]);
        assert_eq!(names(&dir), ["shop/web"]);
        assert!(scan(&mut dir).unwrap().errors.is_empty(), "an unchanged bad file is reported once");
    }

    #[test]
    fn new_changed_and_deleted_files_are_picked_up() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("web.yaml"), WEB).unwrap();
        let mut dir = ManifestDir::new(tmp.path());
        scan(&mut dir).unwrap();
        std::fs::create_dir(tmp.path().join("nested")).unwrap();
        std::fs::write(tmp.path().join("nested/api.yml"), API).unwrap();
        assert!(scan(&mut dir).unwrap().changed);
        assert_eq!(names(&dir), ["shop/api", "shop/web"]);
        assert!(!scan(&mut dir).unwrap().changed, "nothing changed");
        std::fs::remove_file(tmp.path().join("web.yaml")).unwrap();
        assert!(scan(&mut dir).unwrap().changed);
        assert_eq!(names(&dir), ["shop/api"]);
    }

    #[test]
    fn hidden_entries_and_other_extensions_are_skipped() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("..2024_01_01")).unwrap();
        std::fs::write(tmp.path().join("..2024_01_01/web.yaml"), WEB).unwrap();
        std::fs::write(tmp.path().join(".web.yaml.swp"), WEB).unwrap();
        std::fs::write(tmp.path().join("notes.txt"), WEB).unwrap();
        std::os::unix::fs::symlink(tmp.path().join("..2024_01_01/web.yaml"), tmp.path().join("web.yaml")).unwrap();
        let mut dir = ManifestDir::new(tmp.path());
        scan(&mut dir).unwrap();
        assert_eq!(
            dir.files.keys().collect::<Vec<_>>(),
            [&tmp.path().join("web.yaml")],
            "ConfigMap-style symlinks are followed"
        );
    }

    #[test]
    fn the_later_file_wins_a_duplicate_object() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("a.yaml"), WEB).unwrap();
        std::fs::write(tmp.path().join("b.yaml"), WEB.replace("port: 80", "port: 90")).unwrap();
        let mut dir = ManifestDir::new(tmp.path());
        scan(&mut dir).unwrap();
        assert_eq!(dir.state().services[&ObjectKey::new("shop", "web")].ports[0].port, 90);
    }

    #[test]
    fn a_missing_directory_is_an_error() {
        let mut dir = ManifestDir::new("/nonexistent/edgexds");
        assert!(scan(&mut dir).unwrap_err().to_string().contains("/nonexistent/edgexds"));
    }

    #[test]
    fn a_file_its_writer_still_holds_keeps_its_last_content_until_closed() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("web.yaml");
        std::fs::write(&file, WEB).unwrap();
        let mut dir = ManifestDir::new(tmp.path());
        scan(&mut dir).unwrap();
        // `(sleep 1; cat web.yaml.src) > web.yaml`: truncated, content not written yet.
        std::fs::write(&file, "").unwrap();
        let mut pending = Pending::default();
        pending.writing.insert(file.clone(), Instant::now() + Duration::from_secs(10));
        let outcome = dir.rescan(Trigger::Events, &pending).unwrap();
        assert!(!outcome.changed && outcome.recheck_at.is_some(), "{outcome:?}");
        assert_eq!(names(&dir), ["shop/web"], "the empty file is not taken while being written");
        std::fs::write(&file, API).unwrap();
        assert!(scan(&mut dir).unwrap().changed, "closed: the new content is taken");
        assert_eq!(names(&dir), ["shop/api"]);
    }

    #[test]
    fn without_events_a_file_changed_within_the_last_second_waits() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("web.yaml"), WEB).unwrap();
        let mut dir = ManifestDir::new(tmp.path());
        let outcome = dir.rescan(Trigger::Periodic, &Pending::default()).unwrap();
        assert!(!outcome.changed && outcome.recheck_at.is_some(), "{outcome:?}");
        assert!(dir.rescan(Trigger::Initial, &Pending::default()).unwrap().changed, "startup takes it as it is");
    }

    #[test]
    fn symlinks_back_to_the_root_do_not_multiply_paths() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("web.yaml"), WEB).unwrap();
        std::fs::create_dir(tmp.path().join("sub")).unwrap();
        std::os::unix::fs::symlink(tmp.path(), tmp.path().join("sub/loop")).unwrap();
        std::os::unix::fs::symlink(tmp.path(), tmp.path().join("again")).unwrap();
        let mut dir = ManifestDir::new(tmp.path());
        scan(&mut dir).unwrap();
        assert_eq!(dir.files.len(), 1, "{:?}", dir.files.keys().collect::<Vec<_>>());
    }

    #[test]
    fn an_oversized_file_is_refused_before_it_is_read() {
        let tmp = tempfile::tempdir().unwrap();
        let file = std::fs::File::create(tmp.path().join("big.yaml")).unwrap();
        file.set_len(MAX_FILE_BYTES as u64 + 1).unwrap();
        let mut dir = ManifestDir::new(tmp.path());
        let outcome = scan(&mut dir).unwrap();
        assert!(outcome.errors[0].message.contains("exceeds the limit"), "{:?}", outcome.errors);
    }

    #[test]
    fn a_tree_of_more_than_the_file_limit_is_refused_whole() {
        let tmp = tempfile::tempdir().unwrap();
        for index in 0..=MAX_FILES {
            std::fs::File::create(tmp.path().join(format!("{index}.yaml"))).unwrap();
        }
        let error = scan(&mut ManifestDir::new(tmp.path())).unwrap_err().to_string();
        assert!(error.contains("more than 10000 manifest files"), "{error}");
    }
}
