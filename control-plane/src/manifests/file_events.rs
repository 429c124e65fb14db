//! Turns inotify events on the manifests directory into what a rescan needs to know:
//! whether anything relevant happened, and which files a writer still holds open.
//!
//! Two rules come from the field. Reading a file opens it, and the open is itself an
//! event, so access events (open, read, close without write) must never wake a rescan,
//! or the watcher wakes itself forever. And `cmd > file` truncates first and writes
//! later: a file modified but not yet closed by its writer is mid-write, so its
//! content is not taken until the writer closes it (or goes quiet for [`WRITER_QUIET`]).
//! A write may also begin between the close that wakes a scan and the scan's read, before
//! its first event arrives: the file as it was when closed (or moved into place) is
//! remembered, and a file found otherwise is mid-write too.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use notify::event::{AccessKind, AccessMode, CreateKind, EventKind, ModifyKind};
use tokio::sync::Notify;

/// A writer that modified a file and then wrote nothing for this long is taken as done,
/// for writers that keep a file open (or whose close is not reported).
pub const WRITER_QUIET: Duration = Duration::from_secs(10);
/// Files tracked as mid-write at most; more (a hostile writer) are not tracked, and
/// are then read like files changed on a filesystem without events.
const MAX_TRACKED_WRITES: usize = 10_000;
/// Files named by events between two scans, at most; past it, the whole tree is looked at.
const MAX_TOUCHED: usize = 1_000;

/// What identifies a file's content without reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStat {
    dev: u64,
    ino: u64,
    pub len: u64,
    modified: Option<SystemTime>,
    ctime: (i64, i64),
}

impl FileStat {
    pub fn of(meta: &std::fs::Metadata) -> Self {
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

/// Shared between the watcher thread, which records events, and the rescan loop.
#[derive(Debug, Default)]
pub struct FileEvents {
    state: Mutex<EventState>,
    wake: Notify,
}

/// The default names no files: until events have named some, everything is new.
#[derive(Debug, Default)]
struct EventState {
    /// Files modified since their writer last closed them, with the last modification.
    writing: HashMap<PathBuf, Instant>,
    /// Files as their writer closed them, or as they were moved into place.
    settled: HashMap<PathBuf, FileStat>,
    /// The root itself was removed, created or moved: its watch must be set up again.
    root_replaced: bool,
    /// The files events named since the last scan; `None` when the whole tree must be looked
    /// at (a directory changed, a hidden entry such as a ConfigMap's `..data` moved, or too many).
    touched: Option<BTreeSet<PathBuf>>,
}

/// What the rescan loop takes from [`FileEvents`] before a scan.
#[derive(Debug, Default, Clone)]
pub struct Pending {
    /// Files a writer still holds, with the instant they count as done anyway.
    pub writing: HashMap<PathBuf, Instant>,
    pub root_replaced: bool,
    /// The only files that can have changed, when events say; `None`: any file can have.
    pub touched: Option<BTreeSet<PathBuf>>,
    /// The touched files as they were when last closed or moved into place.
    pub settled: HashMap<PathBuf, FileStat>,
}

impl Pending {
    pub fn is_mid_write(&self, path: &Path) -> bool {
        self.writing.contains_key(path)
    }

    /// Whether `path`, now `stat`, differs from how its writer left it: written again since.
    pub fn changed_since_settled(&self, path: &Path, stat: FileStat) -> bool {
        self.settled.get(path).is_some_and(|settled| *settled != stat)
    }

    /// When the oldest open write counts as finished, if any file is mid-write.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.writing.values().min().copied()
    }
}

impl FileEvents {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Resolves when an event worth a rescan arrived since the last call.
    pub async fn changed(&self) {
        self.wake.notified().await;
    }

    /// Records one event about `root`'s tree (or its parent); wakes the rescan if it matters.
    pub fn record(&self, root: &Path, event: &notify::Event) {
        let now = Instant::now();
        let mut state = crate::lock::lock(&self.state);
        let wake = match event.kind {
            // Our own reads produce these: never a reason to look again.
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => {
                for path in &event.paths {
                    state.writing.remove(path);
                    state.settle(path);
                }
                true
            }
            EventKind::Access(_) => false,
            EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Any | ModifyKind::Other) => {
                for path in event.paths.iter().filter(|p| p.starts_with(root)) {
                    if state.writing.len() < MAX_TRACKED_WRITES || state.writing.contains_key(path) {
                        state.writing.insert(path.clone(), now + WRITER_QUIET);
                    }
                }
                // The close that ends the write wakes the rescan; a writer that never closes
                // is picked up at its deadline.
                false
            }
            EventKind::Create(CreateKind::File) => {
                // A new regular file is being written; a new symlink is complete as it is.
                for path in event.paths.iter().filter(|p| p.starts_with(root)) {
                    let is_link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
                    if !is_link && state.writing.len() < MAX_TRACKED_WRITES {
                        state.writing.insert(path.clone(), now + WRITER_QUIET);
                    }
                }
                true
            }
            _ => {
                for path in &event.paths {
                    state.writing.remove(path);
                    state.settle(path);
                }
                true
            }
        };
        if event.paths.iter().any(|p| p == root) && !matches!(event.kind, EventKind::Access(_)) {
            state.root_replaced = true;
        }
        if wake {
            state.touch(root, event);
        }
        // Events from the parent's watch about anything but the root are noise.
        let relevant = event.paths.is_empty() || event.paths.iter().any(|p| p.starts_with(root));
        drop(state);
        if wake && relevant {
            self.wake.notify_one();
        }
    }

    /// What a scan must respect now; clears the root flag and the files touched. Writes past
    /// their deadline are done.
    pub fn take(&self) -> Pending {
        let now = Instant::now();
        let mut state = crate::lock::lock(&self.state);
        state.writing.retain(|_, deadline| *deadline > now);
        let touched = state.touched.replace(BTreeSet::new());
        let settled = match &touched {
            Some(touched) => touched.iter().filter_map(|p| Some((p.clone(), *state.settled.get(p)?))).collect(),
            None => state.settled.clone(),
        };
        Pending {
            writing: state.writing.clone(),
            root_replaced: std::mem::take(&mut state.root_replaced),
            touched,
            settled,
        }
    }
}

impl EventState {
    /// Remembers `path` as it is now, done with; forgets it if it is gone.
    fn settle(&mut self, path: &Path) {
        match std::fs::metadata(path) {
            Ok(meta) if meta.is_file() => {
                if self.settled.len() < MAX_TRACKED_WRITES || self.settled.contains_key(path) {
                    self.settled.insert(path.to_owned(), FileStat::of(&meta));
                }
            }
            _ => {
                self.settled.remove(path);
            }
        }
    }

    /// Notes the files `event` may have changed, or that any may have.
    fn touch(&mut self, root: &Path, event: &notify::Event) {
        let Some(touched) = &mut self.touched else { return };
        let folder = matches!(
            event.kind,
            EventKind::Create(CreateKind::Folder) | EventKind::Remove(notify::event::RemoveKind::Folder)
        );
        let mut everything = event.paths.is_empty() || folder;
        for path in &event.paths {
            let Ok(rest) = path.strip_prefix(root) else { continue };
            // A hidden entry (a ConfigMap's `..data` symlink swapped) or a directory may
            // change many files at once, none of them named.
            let hidden = rest.components().any(|c| c.as_os_str().to_string_lossy().starts_with('.'));
            if hidden || std::fs::metadata(path).is_ok_and(|m| m.is_dir()) {
                everything = true;
            } else if crate::manifests::parse::is_manifest(path) {
                touched.insert(path.clone());
            }
        }
        if everything || touched.len() > MAX_TOUCHED {
            self.touched = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use notify::event::{DataChange, RemoveKind};

    use super::*;

    fn event(kind: EventKind, path: &Path) -> notify::Event {
        notify::Event::new(kind).add_path(path.to_owned())
    }

    #[tokio::test(start_paused = true)]
    async fn opening_and_reading_a_file_never_wakes_a_rescan() {
        let events = FileEvents::new();
        let root = Path::new("/m");
        for kind in [
            EventKind::Access(AccessKind::Open(AccessMode::Any)),
            EventKind::Access(AccessKind::Read),
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
        ] {
            events.record(root, &event(kind, &root.join("web.yaml")));
        }
        // With the clock paused, the timeout fires as soon as nothing else can run.
        let woke = tokio::time::timeout(Duration::from_millis(20), events.changed()).await;
        assert!(woke.is_err(), "access events must not wake the watcher");
    }

    #[test]
    fn events_name_the_files_to_look_at_and_a_directory_or_hidden_entry_means_all() {
        let events = FileEvents::new();
        let root = Path::new("/m");
        assert!(events.take().touched.is_none(), "before any event, everything");
        let close = EventKind::Access(AccessKind::Close(AccessMode::Write));
        events.record(root, &event(close, &root.join("web.yaml")));
        events.record(root, &event(EventKind::Remove(RemoveKind::File), &root.join("sub/api.yml")));
        let touched = events.take().touched.expect("files named");
        assert_eq!(touched.into_iter().collect::<Vec<_>>(), [root.join("sub/api.yml"), root.join("web.yaml")]);
        events.record(root, &event(EventKind::Create(CreateKind::Any), &root.join("..data")));
        assert!(events.take().touched.is_none(), "a ConfigMap's ..data moved: any file may have");
        events.record(root, &event(EventKind::Remove(RemoveKind::Folder), &root.join("sub")));
        assert!(events.take().touched.is_none(), "a directory: any file under it may have");
    }

    #[tokio::test]
    async fn a_file_is_mid_write_from_its_first_modification_until_its_writer_closes_it() {
        let events = FileEvents::new();
        let (root, file) = (Path::new("/m"), Path::new("/m/web.yaml"));
        events.record(root, &event(EventKind::Modify(ModifyKind::Data(DataChange::Any)), file));
        assert!(events.take().is_mid_write(file), "truncated, not yet closed");
        events.record(root, &event(EventKind::Access(AccessKind::Close(AccessMode::Write)), file));
        tokio::time::timeout(Duration::from_secs(1), events.changed()).await.expect("the close wakes the rescan");
        assert!(!events.take().is_mid_write(file));
    }

    #[test]
    fn removing_or_recreating_the_root_asks_for_a_new_watch_and_ignores_siblings() {
        let events = FileEvents::new();
        let root = Path::new("/tmp/m");
        events.record(root, &event(EventKind::Create(CreateKind::Folder), Path::new("/tmp/other")));
        assert!(!events.take().root_replaced);
        events.record(root, &event(EventKind::Remove(RemoveKind::Folder), root));
        assert!(events.take().root_replaced);
        assert!(!events.take().root_replaced, "taken once");
    }
}
