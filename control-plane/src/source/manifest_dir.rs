//! Keeps a directory of manifests loaded: scans it, reparses files whose bytes
//! changed, keeps each file's last good content when a new one is malformed,
//! and republishes the merged state whenever it changes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::{Notify, watch};
use tracing::{debug, error, info, warn};
use xxhash_rust::xxh3::xxh3_64;

use super::StateSender;
use super::manifests::{Object, ParseError, is_manifest, parse_file};
use crate::error::{Error, Result};
use crate::metrics::{KindLabel, Metrics};
use crate::model::SourceState;

/// Safety net for filesystems whose change events get lost (network mounts, some ConfigMap swaps).
const RESCAN_INTERVAL: Duration = Duration::from_secs(5);
const SETTLE: Duration = Duration::from_millis(5);
const MAX_DEPTH: usize = 16;

#[derive(Debug)]
struct FileEntry {
    /// Hash of the bytes last read, good or not, so a bad file is reported once.
    content_hash: u64,
    /// The last content that parsed; `None` if the file never did.
    objects: Option<Arc<Vec<Object>>>,
}

/// What one scan found.
#[derive(Debug, Default)]
pub struct ScanOutcome {
    pub changed: bool,
    pub errors: Vec<ParseError>,
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

    /// Blocking: reads the directory. Fails only if the directory itself cannot be read.
    pub fn rescan(&mut self) -> Result<ScanOutcome> {
        let mut found = Vec::new();
        collect_files(&self.root, 0, &mut found)
            .map_err(|source| Error::ManifestDir { path: self.root.clone(), source })?;
        let mut outcome = ScanOutcome::default();
        let before = self.files.len();
        self.files.retain(|path, entry| {
            let keep = found.binary_search(path).is_ok();
            if !keep && entry.objects.is_some() {
                info!(file = %path.display(), "manifest file removed");
            }
            keep
        });
        outcome.changed |= self.files.len() != before;
        for path in found {
            let text = match std::fs::read(&path) {
                Ok(bytes) => bytes,
                // Vanished between listing and reading: the next scan settles it.
                Err(e) => {
                    debug!(file = %path.display(), error = %e, "cannot read manifest file");
                    continue;
                }
            };
            let content_hash = xxh3_64(&text);
            if self.files.get(&path).is_some_and(|f| f.content_hash == content_hash) {
                continue;
            }
            let parsed = std::str::from_utf8(&text)
                .map_err(|e| ParseError { path: path.clone(), line: 1, message: format!("not UTF-8: {e}") })
                .and_then(|text| parse_file(&path, text));
            let entry = self.files.entry(path.clone()).or_insert(FileEntry { content_hash, objects: None });
            entry.content_hash = content_hash;
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
        for (path, entry) in &self.files {
            for object in entry.objects.iter().flat_map(|o| o.iter()) {
                let clash = match object {
                    Object::Service(s) => state.services.insert(s.key.clone(), s.clone()).map(|_| &s.key),
                    Object::Slice(s) => state.slices.insert(s.key.clone(), s.clone()).map(|_| &s.key),
                    Object::Probe(p) => state.probes.insert(p.key.clone(), p.clone()).map(|_| &p.key),
                };
                if let Some(key) = clash {
                    warn!(file = %path.display(), object = %key, "object defined more than once; this file's copy wins");
                }
            }
        }
        state
    }
}

/// Manifest files under `dir`, sorted. Hidden entries are skipped, which also
/// skips the `..data` machinery of mounted ConfigMaps while following their symlinks.
fn collect_files(dir: &Path, depth: usize, found: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let Ok(meta) = std::fs::metadata(&path) else { continue };
        if meta.is_dir() && depth < MAX_DEPTH {
            collect_files(&path, depth + 1, found)?;
        } else if meta.is_file() && is_manifest(&path) {
            found.push(path);
        }
    }
    if depth == 0 {
        found.sort();
    }
    Ok(())
}

/// Loads `root`, publishes its state, then republishes on every change until `shutdown`.
pub async fn run(
    root: PathBuf,
    states: StateSender,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let mut dir = ManifestDir::new(&root);
    let wake = Arc::new(Notify::new());
    let waker = wake.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok() {
            waker.notify_one();
        }
    })
    .map_err(|source| Error::Watch { path: root.clone(), source })?;
    watcher.watch(&root, RecursiveMode::Recursive).map_err(|source| Error::Watch { path: root.clone(), source })?;
    let mut first = true;
    loop {
        let outcome;
        (dir, outcome) = tokio::task::spawn_blocking(move || {
            let outcome = dir.rescan();
            (dir, outcome)
        })
        .await?;
        match outcome {
            Ok(outcome) if outcome.changed || first => {
                metrics.source_events.get_or_create(&KindLabel { kind: "manifests" }).inc();
                let state = dir.state();
                info!(
                    services = state.services.len(),
                    slices = state.slices.len(),
                    probes = state.probes.len(),
                    "manifests loaded"
                );
                states.send_replace(Some(Arc::new(state)));
                first = false;
            }
            Ok(_) => {}
            // The directory vanished or became unreadable: keep serving what we have.
            Err(err) if !first => error!("{err}; serving the last loaded state"),
            Err(err) => return Err(err),
        }
        tokio::select! {
            _ = wake.notified() => {
                // Editors and ConfigMap updates touch several files at once; take them in one scan.
                tokio::time::sleep(SETTLE).await;
            }
            _ = tokio::time::sleep(RESCAN_INTERVAL) => {}
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

    fn names(dir: &ManifestDir) -> Vec<String> {
        dir.state().services.keys().map(ObjectKey::to_string).collect()
    }

    #[test]
    fn malformed_file_keeps_its_last_good_content_and_reports_file_and_line() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("web.yaml");
        std::fs::write(&file, WEB).unwrap();
        let mut dir = ManifestDir::new(tmp.path());
        assert!(dir.rescan().unwrap().changed);
        std::fs::write(&file, "apiVersion: v1\nkind: Service\nmetadata: { name: web\n").unwrap();
        let outcome = dir.rescan().unwrap();
        assert!(!outcome.changed);
        assert_eq!(outcome.errors.len(), 1);
        assert_eq!(outcome.errors[0].path, file);
        assert!(outcome.errors[0].line >= 3, "{}", outcome.errors[0]);
        assert_eq!(names(&dir), ["shop/web"]);
        assert!(dir.rescan().unwrap().errors.is_empty(), "an unchanged bad file is reported once");
    }

    #[test]
    fn new_changed_and_deleted_files_are_picked_up() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("web.yaml"), WEB).unwrap();
        let mut dir = ManifestDir::new(tmp.path());
        dir.rescan().unwrap();
        std::fs::create_dir(tmp.path().join("nested")).unwrap();
        std::fs::write(tmp.path().join("nested/api.yml"), API).unwrap();
        assert!(dir.rescan().unwrap().changed);
        assert_eq!(names(&dir), ["shop/api", "shop/web"]);
        assert!(!dir.rescan().unwrap().changed, "nothing changed");
        std::fs::remove_file(tmp.path().join("web.yaml")).unwrap();
        assert!(dir.rescan().unwrap().changed);
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
        dir.rescan().unwrap();
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
        dir.rescan().unwrap();
        assert_eq!(dir.state().services[&ObjectKey::new("shop", "web")].ports[0].port, 90);
    }

    #[test]
    fn a_missing_directory_is_an_error() {
        let mut dir = ManifestDir::new("/nonexistent/edgexds");
        assert!(dir.rescan().unwrap_err().to_string().contains("/nonexistent/edgexds"));
    }
}
