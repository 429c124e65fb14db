//! Keeps a directory of manifests loaded: scans it, reparses files whose metadata
//! changed, and keeps the source state up to date change by change.
//!
//! Each object is accepted or refused on its own, as `kubectl apply -f` would: a refused
//! object keeps its last accepted version if it had one, and a new one stays absent. A
//! file that cannot be read at all, or is still being written, keeps its whole last good
//! content. The state is a set of persistent maps edited per change, so an edit costs the
//! objects of the files it touched, not the directory.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use notify::{RecursiveMode, Watcher};
use tracing::{debug, error, info, warn};

use super::file_events::{FileEvents, FileStat, Pending, WRITER_QUIET};
use super::parse::{Located, MAX_FILE_BYTES, ParseError, Parsed, is_manifest, parse_file};
use crate::error::{Error, Result};
use crate::model::{Diagnostic, ObjectKey, ObjectKind, SourceState};

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

/// The manifest files a scan found with their metadata, and the known files that are gone.
type Found = (Vec<(PathBuf, std::fs::Metadata)>, Vec<PathBuf>);

/// An object, as one file defines it.
type Slot = (ObjectKind, ObjectKey);

#[derive(Debug)]
struct FileEntry {
    /// Metadata at the last read, good or not, so a bad file is reported once.
    stat: FileStat,
    /// What the file holds in effect: its objects accepted (or kept, when refused since),
    /// and its refusals. `None` if it never parsed.
    content: Option<Content>,
}

#[derive(Debug, Default)]
struct Content {
    objects: BTreeMap<Slot, Located>,
    refused: Vec<Diagnostic>,
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
    /// The files that define each object, in path order: the last one's copy is in effect.
    definers: BTreeMap<Slot, BTreeSet<PathBuf>>,
    state: SourceState,
    /// Files whose new content was not taken yet (mid-write): looked at again, events or not.
    deferred: BTreeSet<PathBuf>,
}

impl ManifestDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            files: BTreeMap::new(),
            definers: BTreeMap::new(),
            state: SourceState::default(),
            deferred: BTreeSet::new(),
        }
    }

    /// Blocking: reads the directory, or only the files events named. Fails if the
    /// directory itself cannot be read or holds more than [`MAX_FILES`] manifests; the last
    /// good state then stays.
    pub fn rescan(&mut self, trigger: Trigger, pending: &Pending) -> Result<ScanOutcome> {
        let (found, gone) = match (trigger, &pending.touched) {
            (Trigger::Events, Some(touched)) => self.look_at(touched.iter().chain(pending.writing.keys()))?,
            _ => self.walk()?,
        };
        self.deferred.clear();
        let mut outcome = ScanOutcome::default();
        for path in gone {
            if let Some(FileEntry { content: Some(content), .. }) = self.files.remove(&path) {
                info!(file = %path.display(), "manifest file removed");
                outcome.changed |= self.take_effect(&path, Some(content), None);
            }
        }
        let now = Instant::now();
        for (path, meta) in found {
            let stat = FileStat::of(&meta);
            if self.files.get(&path).is_some_and(|f| f.stat == stat) {
                continue;
            }
            let defer_until = match trigger {
                Trigger::Events if pending.is_mid_write(&path) => pending.writing.get(&path).copied(),
                // Changed since its writer closed it, though no event says so yet: a new write
                // (`cmd > file` truncating) began after the close that woke this scan. Its own
                // events will wake the next one.
                Trigger::Events if pending.changed_since_settled(&path, stat) => Some(now + WRITER_QUIET),
                Trigger::Periodic => recently_modified(&meta).map(|age| now + UNWATCHED_QUIET.saturating_sub(age)),
                _ => None,
            };
            if let Some(at) = defer_until {
                debug!(file = %path.display(), "manifest file is being written; keeping its last content for now");
                self.deferred.insert(path.clone());
                outcome.recheck_at = Some(outcome.recheck_at.map_or(at, |t| t.min(at)));
                continue;
            }
            let parsed = read_limited(&path, stat.len).and_then(|bytes| {
                let text = std::str::from_utf8(&bytes).map_err(|e| ParseError {
                    path: path.clone(),
                    line: 1,
                    message: format!("not UTF-8: {e}"),
                })?;
                parse_file(&path, text)
            });
            let entry = self.files.entry(path.clone()).or_insert(FileEntry { stat, content: None });
            entry.stat = stat;
            match parsed {
                Ok(parsed) => {
                    debug!(file = %path.display(), objects = parsed.objects.len(), refused = parsed.refused.len(), "manifest file loaded");
                    let old = entry.content.take();
                    let new = content_of(parsed, old.as_ref());
                    outcome.changed |= self.take_effect(&path, old, Some(new));
                }
                Err(err) => {
                    let kept = if entry.content.is_some() { "last good content kept" } else { "file ignored" };
                    error!(file = %err.path.display(), line = err.line, "malformed manifest, {kept}: {err}");
                    outcome.errors.push(err);
                }
            }
        }
        Ok(outcome)
    }

    /// Every manifest file in the tree, and the files known before that are gone.
    fn walk(&self) -> Result<Found> {
        let mut found = Vec::new();
        let mut visited = HashSet::new();
        collect_files(&self.root, 0, &mut visited, &mut found)
            .map_err(|source| Error::ManifestDir { path: self.root.clone(), source })?;
        found.sort_by(|a, b| a.0.cmp(&b.0));
        let gone =
            self.files.keys().filter(|path| found.binary_search_by(|(p, _)| p.cmp(path)).is_err()).cloned().collect();
        Ok((found, gone))
    }

    /// Only `named` (what events named) and the files deferred last time: what of them is a
    /// manifest file now, and what was and is no longer. Costs the change, not the tree.
    fn look_at<'a>(&'a self, named: impl Iterator<Item = &'a PathBuf>) -> Result<Found> {
        if !self.root.is_dir() {
            return Err(Error::ManifestDir {
                path: self.root.clone(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "not a directory"),
            });
        }
        let candidates: BTreeSet<&PathBuf> = named.chain(&self.deferred).collect();
        let (mut found, mut gone) = (Vec::new(), Vec::new());
        for path in candidates {
            let deep = path.strip_prefix(&self.root).map_or(true, |rest| rest.components().count() > MAX_DEPTH + 1);
            match std::fs::metadata(path) {
                Ok(meta) if meta.is_file() && is_manifest(path) && !deep => found.push((path.clone(), meta)),
                _ if self.files.contains_key(path) => gone.push(path.clone()),
                _ => {}
            }
        }
        let new = found.iter().filter(|(path, _)| !self.files.contains_key(path)).count();
        if self.files.len() - gone.len() + new > MAX_FILES {
            let source =
                std::io::Error::other(format!("more than {MAX_FILES} manifest files; refusing to load the tree"));
            return Err(Error::ManifestDir { path: self.root.clone(), source });
        }
        Ok((found, gone))
    }

    /// The state of every file's objects in effect: a copy of persistent maps, so it costs nothing.
    pub fn state(&self) -> SourceState {
        self.state.clone()
    }

    /// Replaces what `path` holds in effect (`old` by `new`) and brings the state up to date
    /// for the objects either holds; says whether the state changed.
    fn take_effect(&mut self, path: &Path, old: Option<Content>, new: Option<Content>) -> bool {
        let mut changed = false;
        let mut slots: BTreeSet<Slot> = BTreeSet::new();
        let refused_before = old.iter().flat_map(|c| &c.refused).collect::<BTreeSet<_>>();
        let refused_now = new.iter().flat_map(|c| &c.refused).collect::<BTreeSet<_>>();
        for refused in refused_before.difference(&refused_now) {
            changed |= self.state.refused.remove(*refused).is_some();
        }
        for refused in refused_now.difference(&refused_before) {
            changed |= self.state.refused.insert((*refused).clone()).is_none();
        }
        for slot in old.iter().flat_map(|c| c.objects.keys()) {
            slots.insert(slot.clone());
            if let Some(files) = self.definers.get_mut(slot) {
                files.remove(path);
            }
        }
        for slot in new.iter().flat_map(|c| c.objects.keys()) {
            slots.insert(slot.clone());
            self.definers.entry(slot.clone()).or_default().insert(path.to_owned());
        }
        if let Some(entry) = self.files.get_mut(path) {
            entry.content = new;
        }
        for slot in slots {
            changed |= self.settle(&slot);
        }
        changed
    }

    /// Puts the copy of `slot` in effect into the state: the last defining file's, or none;
    /// says whether the state changed.
    fn settle(&mut self, slot: &Slot) -> bool {
        let files = self.definers.get(slot).filter(|files| !files.is_empty());
        let winner = files.and_then(|files| {
            let last = files.iter().next_back()?;
            if files.len() > 1 {
                let ignored: Vec<String> = files.iter().rev().skip(1).map(|p| p.display().to_string()).collect();
                warn!(
                    object = %slot.1,
                    kind = slot.0.name(),
                    winner = %last.display(),
                    ignored = %ignored.join(", "),
                    "object defined more than once; the later file's copy wins"
                );
            }
            let content = self.files.get(last)?.content.as_ref()?;
            content.objects.get(slot).map(|located| located.object.clone())
        });
        match winner {
            Some(object) if !object.is_in(&self.state) => {
                object.insert_into(&mut self.state);
                true
            }
            Some(_) => false,
            None => {
                self.definers.remove(slot);
                self.state.remove(slot.0, &slot.1)
            }
        }
    }
}

/// What a newly parsed file holds in effect: its accepted objects, and for each object it
/// refuses, the version `old` had accepted, if any.
fn content_of(parsed: Parsed, old: Option<&Content>) -> Content {
    let mut content = Content::default();
    for located in parsed.objects {
        let slot = (located.object.kind(), located.object.key().clone());
        content.objects.insert(slot, located);
    }
    for refused in parsed.refused {
        let kept = refused.object.as_ref().and_then(|slot| {
            let previous = old?.objects.get(slot)?;
            content.objects.entry(slot.clone()).or_insert_with(|| previous.clone());
            Some(())
        });
        let outcome = match kept {
            Some(()) => "refused; its last accepted version stays in effect",
            None => "refused",
        };
        let object = match &refused.object {
            Some((kind, key)) => format!("{} {key}", kind.name()),
            None => format!("manifest {}:{}", refused.error.path.display(), refused.error.line),
        };
        content.refused.push(Diagnostic { object, message: format!("{}: {outcome}", refused.error) });
    }
    content
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
        metrics.synced(outcome.is_ok());
        match outcome {
            Ok(outcome) => {
                recheck_at = outcome.recheck_at;
                if outcome.changed || !published {
                    metrics.event(crate::pipeline::MANIFESTS_EVENT);
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

    fn probe(name: &str, interval_ms: u32) -> String {
        format!(
            "apiVersion: edgexds.io/v1alpha1\nkind: HealthProbe\nmetadata: {{ name: {name}, namespace: shop }}\nspec: {{ targetRef: {{ name: web }}, intervalMs: {interval_ms} }}\n"
        )
    }

    fn intervals(dir: &ManifestDir) -> Vec<(String, u32)> {
        dir.state()
            .probes
            .iter()
            .map(|(key, p)| (key.name.to_string(), p.valid.as_ref().map_or(0, |v| v.base.interval_ms)))
            .collect()
    }

    fn refused(dir: &ManifestDir) -> Vec<String> {
        dir.state().refused.iter().map(|d| format!("{}: {}", d.object, d.message)).collect()
    }

    #[test]
    fn each_object_is_taken_on_its_own_and_a_broken_one_keeps_its_last_accepted_version_until_fixed() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("shop.yaml");
        let write = |probes: &[(&str, u32)]| {
            let docs: Vec<String> =
                std::iter::once(WEB.to_owned()).chain(probes.iter().map(|(n, i)| probe(n, *i))).collect();
            std::fs::write(&file, docs.join("---\n")).unwrap();
        };
        // First load: the bad new probe is absent, everything else is taken.
        write(&[("a", 1000), ("b", 50), ("c", 3000)]);
        let mut dir = ManifestDir::new(tmp.path());
        assert!(scan(&mut dir).unwrap().changed);
        assert_eq!(names(&dir), ["shop/web"]);
        assert_eq!(intervals(&dir), [("a".into(), 1000), ("c".into(), 3000)]);
        let why = refused(&dir);
        assert_eq!(why.len(), 1, "{why:?}");
        assert!(why[0].starts_with("HealthProbe shop/b: ") && why[0].contains("shop.yaml:11: "), "{why:?}");
        assert!(why[0].ends_with("spec.intervalMs: 50 is out of range 100..=3600000: refused"), "{why:?}");
        // An edit that breaks an accepted object keeps its last accepted version.
        write(&[("a", 40), ("b", 50), ("c", 4000)]);
        assert!(scan(&mut dir).unwrap().changed);
        assert_eq!(intervals(&dir), [("a".into(), 1000), ("c".into(), 4000)]);
        assert!(refused(&dir).iter().any(|r| r.starts_with("HealthProbe shop/a") && r.ends_with("stays in effect")));
        // Fixed, it is taken.
        write(&[("a", 2000), ("b", 5000), ("c", 4000)]);
        assert!(scan(&mut dir).unwrap().changed);
        assert_eq!(intervals(&dir), [("a".into(), 2000), ("b".into(), 5000), ("c".into(), 4000)]);
        assert!(refused(&dir).is_empty());
        // Removed from the file, it is removed.
        write(&[("a", 2000), ("c", 4000)]);
        assert!(scan(&mut dir).unwrap().changed);
        assert_eq!(intervals(&dir), [("a".into(), 2000), ("c".into(), 4000)]);
        // A file that cannot be read at all keeps its whole last good content.
        std::fs::write(&file, format!("{WEB}---\nkind: [unclosed\n")).unwrap();
        let outcome = scan(&mut dir).unwrap();
        assert!(!outcome.changed && outcome.errors.len() == 1, "{outcome:?}");
        assert_eq!(intervals(&dir), [("a".into(), 2000), ("c".into(), 4000)]);
    }

    #[test]
    fn an_edit_changes_the_state_by_what_it_touched_and_shares_the_rest() {
        let tmp = tempfile::tempdir().unwrap();
        for index in 0..50 {
            std::fs::write(
                tmp.path().join(format!("{index}.yaml")),
                API.replace("name: api", &format!("name: api-{index}")),
            )
            .unwrap();
        }
        let mut dir = ManifestDir::new(tmp.path());
        scan(&mut dir).unwrap();
        let before = dir.state();
        std::fs::write(
            tmp.path().join("7.yaml"),
            API.replace("name: api", "name: api-7").replace("port: 81", "port: 82"),
        )
        .unwrap();
        assert!(scan(&mut dir).unwrap().changed);
        let after = dir.state();
        let changed: Vec<String> = before
            .services
            .diff(&after.services)
            .map(|item| match item {
                imbl::ordmap::DiffItem::Update { new: (key, _), .. } => key.to_string(),
                other => panic!("only an update: {other:?}"),
            })
            .collect();
        assert_eq!(changed, ["shop/api-7"]);
    }

    #[test]
    fn with_events_naming_files_only_those_files_are_looked_at() {
        let tmp = tempfile::tempdir().unwrap();
        let (web, api) = (tmp.path().join("web.yaml"), tmp.path().join("api.yaml"));
        std::fs::write(&web, WEB).unwrap();
        std::fs::write(&api, API).unwrap();
        let mut dir = ManifestDir::new(tmp.path());
        scan(&mut dir).unwrap();
        std::fs::write(&web, WEB.replace("port: 80", "port: 90")).unwrap();
        std::fs::write(&api, API.replace("port: 81", "port: 91")).unwrap();
        let named = Pending { touched: Some([web.clone()].into()), ..Pending::default() };
        assert!(dir.rescan(Trigger::Events, &named).unwrap().changed);
        let ports =
            |dir: &ManifestDir| -> Vec<u16> { dir.state().services.values().map(|s| s.ports[0].port).collect() };
        assert_eq!(ports(&dir), [81, 90], "api.yaml was not named, so not read");
        std::fs::remove_file(&web).unwrap();
        let named = Pending { touched: Some([web].into()), ..Pending::default() };
        assert!(dir.rescan(Trigger::Events, &named).unwrap().changed);
        assert_eq!(names(&dir), ["shop/api"], "a named file that is gone is removed");
        assert!(scan(&mut dir).unwrap().changed, "a scan of everything finds what events did not name");
        assert_eq!(ports(&dir), [91]);
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
    fn a_write_that_begins_after_the_close_that_woke_the_scan_is_not_taken_before_its_events_arrive() {
        use notify::event::{AccessKind, AccessMode, EventKind};
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("web.yaml");
        std::fs::write(&file, WEB).unwrap();
        let mut dir = ManifestDir::new(tmp.path());
        scan(&mut dir).unwrap();
        // The writer closes its first write, which wakes a scan ...
        std::fs::write(&file, format!("{WEB}# again\n")).unwrap();
        let events = FileEvents::new();
        let close = notify::Event::new(EventKind::Access(AccessKind::Close(AccessMode::Write))).add_path(file.clone());
        events.record(tmp.path(), &close);
        let pending = events.take();
        // ... and truncates the file for the next before the scan reads it, its event not in yet.
        std::fs::write(&file, "").unwrap();
        let outcome = dir.rescan(Trigger::Events, &pending).unwrap();
        assert!(!outcome.changed && outcome.recheck_at.is_some(), "{outcome:?}");
        assert_eq!(names(&dir), ["shop/web"], "the truncated file is not taken");
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
