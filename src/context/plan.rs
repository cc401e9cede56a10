//! [`PlannedEntry`]: one file, directory or link as a COPY will write it, at its final path
//! under the layer root. [`plan_copy`] turns resolved sources and a destination into the
//! sorted list of entries that both the cache key ([`super::hash_plan`]) and staging
//! ([`super::stage_plan`]) read, so the two can never disagree.
//!
//! Docker's destination rules: a directory source copies its *contents*; a file source to a
//! destination ending in `/` (or `.`, or a known directory) goes inside it under its own
//! name, otherwise it becomes the destination; several sources need a directory
//! destination ending in `/`. Later sources overwrite earlier ones at the same path.

use super::resolve::Source;
use super::{read_err, CopyOptions, Error};
use crate::dockerfile::ignore::IgnoreMatcher;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};

/// What an entry is, with what its type needs beyond mode and owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    File {
        size: u64,
    },
    Symlink {
        target: Vec<u8>,
    },
    /// A second name of a file earlier in the plan (its `dest`), as the layer tar writes it.
    Hardlink {
        first: Vec<u8>,
    },
    Fifo,
    /// A socket: copied as an empty regular file with the socket's permission bits, as
    /// BuildKit's context transfer (fsutil) delivers one. Hashed as that empty file.
    Socket,
    CharDevice {
        rdev: u64,
    },
    BlockDevice {
        rdev: u64,
    },
}

/// One entry of a COPY's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedEntry {
    /// The path under the layer root, slash-separated, no leading `/`.
    pub dest: Vec<u8>,
    /// Where the bytes come from.
    pub source: PathBuf,
    /// The source path relative to its root, for `--explain` ("context file app/x").
    pub source_rel: String,
    pub kind: EntryKind,
    /// Permission bits (`0o7777`) after `--chmod`.
    pub mode: u32,
    /// Owner after `--chown` (or 0:0 from the context, kept for `COPY --from`).
    pub uid: u32,
    pub gid: u32,
    /// Extended attributes, sorted; `security.selinux` is left out (a host label).
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Source mtime (seconds, nanoseconds): staged as Docker does, never hashed.
    pub mtime: (i64, i64),
    /// Device and inode of a source file with several names, to find hardlinks; never hashed.
    pub inode: Option<(u64, u64)>,
    /// A regular file's stat data, for the [`super::StatCache`]; never hashed.
    pub stat: Option<super::StatKey>,
}

/// Joins a WORKDIR and a COPY destination as Docker does: relative destinations are under
/// the workdir; `.`, an empty string and a trailing `/` mean "a directory" and keep (or
/// gain) the trailing `/`.
pub fn resolve_dest(workdir: &str, dest: &str) -> String {
    let dir = dest.is_empty() || dest == "." || dest.ends_with('/') || dest.ends_with("/.");
    let joined = if dest.starts_with('/') {
        dest.to_string()
    } else {
        format!("{}/{dest}", if workdir.is_empty() { "/" } else { workdir })
    };
    let mut out = super::glob::clean(&format!("/{joined}"));
    if dir && !out.ends_with('/') {
        out.push('/');
    }
    out
}

/// Lays out `sources` under `dest` (absolute, after WORKDIR), sorted by destination path
/// bytes (so parents come before children).
pub fn plan_copy(
    sources: &[Source],
    dest: &str,
    opts: &CopyOptions,
) -> Result<Vec<PlannedEntry>, Error> {
    plan_copy_cached(sources, dest, opts, None)
}

/// [`plan_copy`], taking a regular file's xattrs from `cache` when its stat data is the
/// one recorded (setting or removing an xattr changes the ctime), instead of listing them.
pub fn plan_copy_cached(
    sources: &[Source],
    dest: &str,
    opts: &CopyOptions,
    cache: Option<&super::StatCache>,
) -> Result<Vec<PlannedEntry>, Error> {
    let dest_is_dir = opts.dest_is_dir
        || dest.is_empty()
        || dest == "."
        || dest.ends_with('/')
        || dest.ends_with("/.");
    // Several directories merge into the destination, slash or not, as BuildKit copies
    // each one's contents there; several files into one path would overwrite each other
    // (BuildKit's open bug, moby/buildkit#1853): refused, as the reference says.
    let parents = sources.iter().any(|s| s.parents.is_some());
    let dest_is_dir = dest_is_dir || parents;
    if sources.len() > 1 && !dest_is_dir && !sources.iter().all(Source::is_dir) {
        return Err(Error::DestNotDir {
            command: if opts.command.is_empty() {
                "COPY"
            } else {
                opts.command
            },
            dest: dest.into(),
        });
    }
    let base = super::glob::clean(&format!("/{dest}"));
    let base = base.trim_start_matches('/').as_bytes();
    let exclude = match opts.exclude.is_empty() {
        true => None,
        false => Some(IgnoreMatcher::parse_named(
            &opts.exclude.join("\n"),
            "--exclude",
        )?),
    };
    let mut planner = Planner {
        opts,
        exclude,
        walked: Vec::new(),
        cache,
    };
    // Each source is walked into a list of its own (a walk never yields one path twice);
    // one source — nearly every COPY — is then just sorted, several are merged in order with
    // Docker's overwrite rules.
    let mut merged: Option<BTreeMap<Vec<u8>, PlannedEntry>> =
        (sources.len() > 1).then(BTreeMap::new);
    let mut plan = Vec::new();
    for src in sources {
        let abs = src.path();
        let md = fs::metadata(&abs).map_err(read_err(&abs))?;
        // `COPY --parents`: the source lands at its path below the pivot, and the
        // directories on that path come with their own metadata.
        let at_dest = match &src.parents {
            Some(below) => {
                planner.plan_parents(src, base, below)?;
                join(base, below)
            }
            None => base.to_vec(),
        };
        if src.is_dir {
            let at = At {
                abs,
                rel: src.rel.clone(),
                local: Vec::new(),
                dest: at_dest,
                top: true,
            };
            planner.walk_dir(src, &at, &md)?;
        } else {
            let excluded = planner
                .exclude
                .as_ref()
                .is_some_and(|m| m.is_excluded(&String::from_utf8_lossy(&src.name)));
            if excluded {
                continue;
            }
            let target = if src.parents.is_some() {
                at_dest
            } else if dest_is_dir {
                join(base, &src.name)
            } else {
                base.to_vec()
            };
            if let Some(e) = planner.entry(src, abs, &src.rel, target, &md)? {
                planner.walked.push(e);
            }
        }
        let walked = std::mem::take(&mut planner.walked);
        match merged.as_mut() {
            Some(map) => walked.into_iter().for_each(|e| insert(map, e)),
            None => plan = walked,
        }
    }
    match merged {
        Some(map) => plan = map.into_values().collect(),
        // A walk in name order is already in byte order unless a name sorts between a
        // directory and its contents (`a.txt` between `a` and `a/b`): then moving the
        // 250-byte entries about is paid, not for every plan.
        None if plan.windows(2).all(|w| w[0].dest <= w[1].dest) => {}
        None => plan.sort_unstable_by(|a, b| a.dest.cmp(&b.dest)),
    }
    link_hardlinks(&mut plan);
    Ok(plan)
}

/// Adds an entry of a later source; a non-directory replaces whatever was at its path,
/// subtree included, and a directory keeps an existing directory's metadata (as BuildKit).
fn insert(entries: &mut BTreeMap<Vec<u8>, PlannedEntry>, e: PlannedEntry) {
    if e.kind == EntryKind::Dir {
        if let Some(old) = entries.get(&e.dest) {
            if old.kind == EntryKind::Dir {
                return;
            }
        }
    } else {
        let below = [&e.dest[..], b"/"].concat();
        let doomed: Vec<Vec<u8>> = entries
            .range(below.clone()..)
            .take_while(|(k, _)| k.starts_with(&below))
            .map(|(k, _)| k.clone())
            .collect();
        for k in doomed {
            entries.remove(&k);
        }
    }
    entries.insert(e.dest.clone(), e);
}

fn join(a: &[u8], b: &[u8]) -> Vec<u8> {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_vec(),
        (_, true) => a.to_vec(),
        _ => [a, b"/", b].concat(),
    }
}

/// A path being walked: on disk, relative to the source root (for the ignore file),
/// relative to the copied directory (for `--exclude`), and at the destination.
struct At {
    abs: PathBuf,
    rel: Vec<u8>,
    local: Vec<u8>,
    dest: Vec<u8>,
    /// The directory source itself (not something inside it).
    top: bool,
}

impl At {
    /// `local` only matters to `--exclude`: without it, it is not built.
    fn child(&self, name: &[u8], with_local: bool) -> At {
        At {
            abs: self.abs.join(OsStr::from_bytes(name)),
            rel: join(&self.rel, name),
            local: if with_local {
                join(&self.local, name)
            } else {
                Vec::new()
            },
            dest: join(&self.dest, name),
            top: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hidden {
    /// Included.
    No,
    /// Excluded, and nothing below can come back.
    Skip,
    /// An excluded directory walked only because an exception could match below.
    Descend,
}

fn hidden(m: &IgnoreMatcher, path: &[u8], is_dir: bool) -> Hidden {
    if m.is_empty() {
        return Hidden::No;
    }
    let s = String::from_utf8_lossy(path);
    if !m.is_excluded(&s) {
        Hidden::No
    } else if is_dir && m.may_include_below(&s) {
        Hidden::Descend
    } else {
        Hidden::Skip
    }
}

/// A child in a directory's listing.
enum Listed {
    Leaf(PlannedEntry),
    /// A subdirectory: its own entry, the listing job of what it holds, and whether it is
    /// walked only because an exception could match below it.
    Dir {
        entry: Option<PlannedEntry>,
        id: usize,
        only_for_exceptions: bool,
    },
}

/// The walk threads' shared state: directories to list (last in, first out, so the walk
/// stays mostly depth-first), how many are being listed, and the listings by job id.
struct Queue {
    jobs: Vec<(usize, At)>,
    busy: usize,
    next: usize,
    done: BTreeMap<usize, Result<Vec<Listed>, Error>>,
}

/// Threads that list and stat a directory source: the machine's cores, at most 4 (the
/// kernel's stat path, not the disk, is what they share out).
fn walk_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
}

/// Appends the listing of job `id` and, recursively, its subdirectories' in depth-first
/// name order: the order, and the choices, of a serial walk. Returns whether anything was
/// planned below (an excluded directory walked only for exceptions goes if nothing came
/// back). The first error in that order is the walk's.
fn assemble(
    id: usize,
    done: &mut BTreeMap<usize, Result<Vec<Listed>, Error>>,
    out: &mut Vec<PlannedEntry>,
) -> Result<bool, Error> {
    // Every queued directory is listed before the walk threads end (an error ends only
    // that directory's listing), so each id is there.
    let children = done
        .remove(&id)
        .expect("every queued directory is listed")?;
    let mut any = false;
    for child in children {
        match child {
            Listed::Leaf(e) => {
                out.push(e);
                any = true;
            }
            Listed::Dir {
                entry,
                id,
                only_for_exceptions,
            } => {
                let at = out.len();
                out.extend(entry);
                let found = assemble(id, done, out)?;
                if only_for_exceptions && !found {
                    // Nothing below came back: the directory itself goes too.
                    out.truncate(at);
                } else {
                    any = true;
                }
            }
        }
    }
    Ok(any)
}

struct Planner<'o> {
    opts: &'o CopyOptions,
    /// `--exclude` patterns, relative to each copied directory.
    exclude: Option<IgnoreMatcher>,
    /// The entries of the source being walked, in walk order.
    walked: Vec<PlannedEntry>,
    cache: Option<&'o super::StatCache>,
}

impl Planner<'_> {
    /// The directories between the destination and a `--parents` source (`below`: its path
    /// under the pivot), each planned from the source directory it stands for.
    fn plan_parents(&mut self, src: &Source, base: &[u8], below: &[u8]) -> Result<(), Error> {
        let pivot = &src.matched[..src.matched.len().saturating_sub(below.len())];
        let mut rel = Vec::new();
        let parts: Vec<&[u8]> = below.split(|b| *b == b'/').collect();
        for part in &parts[..parts.len().saturating_sub(1)] {
            rel = join(&rel, part);
            let from = [pivot, &rel[..]].concat();
            let abs = src.root.join(OsStr::from_bytes(&from));
            let md = fs::metadata(&abs).map_err(read_err(&abs))?;
            if let Some(e) = self.entry(src, abs, &from, join(base, &rel), &md)? {
                self.walked.push(e);
            }
        }
        Ok(())
    }

    /// Plans a directory and, recursively, what it holds under the ignore rules and
    /// `--exclude`. Returns whether anything was planned below it.
    ///
    /// With a warm stat cache, the directories are listed and their entries stat'ed by
    /// [`walk_threads`] threads taking directories from one queue (a stat per file is most
    /// of a large context's no-op); the listings are then put together in the order a serial depth-first walk
    /// gives, so the result does not depend on which thread listed what.
    fn walk_dir(&mut self, src: &Source, at: &At, md: &fs::Metadata) -> Result<bool, Error> {
        if !at.dest.is_empty() {
            let e = self.entry(src, at.abs.clone(), &at.rel, at.dest.clone(), md)?;
            if let Some(mut e) = e {
                if at.top && self.opts.chown.is_none() {
                    // The directory a COPY creates for a directory source is root's, as
                    // in BuildKit; only what is inside keeps its owner.
                    (e.uid, e.gid) = (0, 0);
                }
                self.walked.push(e);
            }
        }
        let root = At {
            abs: at.abs.clone(),
            rel: at.rel.clone(),
            local: at.local.clone(),
            dest: at.dest.clone(),
            top: at.top,
        };
        let queue = Mutex::new(Queue {
            jobs: vec![(0, root)],
            busy: 0,
            next: 1,
            done: BTreeMap::new(),
        });
        let wake = Condvar::new();
        // Threads only with a warm stat cache, where the stats are most of the work. A cold
        // COPY reads every file after the walk (and stages it), and what the threads
        // allocate stays in their own malloc arenas, out of reach of that later work
        // (+13 MiB peak for a cold 100,000-file COPY).
        let threads = match self.cache {
            Some(c) if !c.is_empty() => walk_threads(),
            _ => 1,
        };
        let this: &Planner = self;
        std::thread::scope(|scope| {
            for _ in 1..threads {
                scope.spawn(|| this.list_jobs(src, &queue, &wake));
            }
            this.list_jobs(src, &queue, &wake);
        });
        let mut done = queue.into_inner().unwrap_or_else(|e| e.into_inner()).done;
        let total: usize = done.values().map(|l| l.as_ref().map_or(0, Vec::len)).sum();
        self.walked.reserve(total);
        assemble(0, &mut done, &mut self.walked)
    }

    /// A walk thread: lists queued directories until none is queued and none is being
    /// listed (a listing queues the directories it finds).
    fn list_jobs(&self, src: &Source, queue: &Mutex<Queue>, wake: &Condvar) {
        let lock = || queue.lock().unwrap_or_else(|e| e.into_inner());
        let mut q = lock();
        loop {
            if let Some((id, at)) = q.jobs.pop() {
                q.busy += 1;
                drop(q);
                let listed = self.list_dir(src, &at);
                q = lock();
                q.busy -= 1;
                let listed = listed.map(|(mut children, subdirs)| {
                    for (i, sub) in subdirs {
                        let job = q.next;
                        q.next += 1;
                        if let Listed::Dir { id, .. } = &mut children[i] {
                            *id = job;
                        }
                        q.jobs.push((job, sub));
                    }
                    children
                });
                q.done.insert(id, listed);
                wake.notify_all();
            } else if q.busy == 0 {
                return;
            } else {
                q = wake.wait(q).unwrap_or_else(|e| e.into_inner());
            }
        }
    }

    /// One directory's children in name order, each planned from its own lstat, and the
    /// subdirectories still to list (by their index among the children).
    #[allow(clippy::type_complexity)]
    fn list_dir(&self, src: &Source, at: &At) -> Result<(Vec<Listed>, Vec<(usize, At)>), Error> {
        let mut names = Vec::new();
        for entry in fs::read_dir(&at.abs).map_err(read_err(&at.abs))? {
            let entry = entry.map_err(read_err(&at.abs))?;
            names.push((entry.file_name(), entry));
        }
        names.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        let with_local = self.exclude.is_some();
        let (mut children, mut subdirs) = (Vec::with_capacity(names.len()), Vec::new());
        for (name, dirent) in names {
            let child = at.child(name.as_bytes(), with_local);
            // lstat relative to the open directory: no walk of the whole path per entry.
            let md = dirent.metadata().map_err(read_err(&child.abs))?;
            let is_dir = md.is_dir();
            let context = src.ignore.as_deref().map(|m| hidden(m, &child.rel, is_dir));
            let local = self
                .exclude
                .as_ref()
                .map(|m| hidden(m, &child.local, is_dir));
            let verdicts = [context, local];
            if verdicts.iter().flatten().any(|v| *v == Hidden::Skip) {
                continue;
            }
            if is_dir {
                let entry =
                    self.entry(src, child.abs.clone(), &child.rel, child.dest.clone(), &md)?;
                children.push(Listed::Dir {
                    entry,
                    id: 0,
                    only_for_exceptions: verdicts.iter().flatten().any(|v| *v == Hidden::Descend),
                });
                subdirs.push((children.len() - 1, child));
            } else if let Some(e) = self.entry(src, child.abs, &child.rel, child.dest, &md)? {
                children.push(Listed::Leaf(e));
            }
        }
        Ok((children, subdirs))
    }

    /// One entry from a source's metadata; `None` for a file type it cannot know.
    fn entry(
        &self,
        src: &Source,
        abs: PathBuf,
        rel: &[u8],
        dest: Vec<u8>,
        md: &fs::Metadata,
    ) -> Result<Option<PlannedEntry>, Error> {
        let ft = md.file_type();
        let kind = if ft.is_dir() {
            EntryKind::Dir
        } else if ft.is_file() {
            EntryKind::File { size: md.len() }
        } else if ft.is_symlink() {
            let target = fs::read_link(&abs).map_err(read_err(&abs))?;
            EntryKind::Symlink {
                target: target.as_os_str().as_bytes().to_vec(),
            }
        } else if ft.is_fifo() {
            EntryKind::Fifo
        } else if ft.is_char_device() {
            EntryKind::CharDevice { rdev: md.rdev() }
        } else if ft.is_block_device() {
            EntryKind::BlockDevice { rdev: md.rdev() }
        } else if ft.is_socket() {
            EntryKind::Socket
        } else {
            return Ok(None);
        };
        let is_link = matches!(kind, EntryKind::Symlink { .. });
        let mode = match (is_link, &self.opts.chmod) {
            (true, _) => 0o777,
            (false, Some(chmod)) => chmod.apply(md.mode(), ft.is_dir()),
            (false, None) => md.mode() & 0o7777,
        };
        let (uid, gid) = match self.opts.chown {
            Some(ids) => ids,
            None if src.keep_owner => (md.uid(), md.gid()),
            None => (0, 0),
        };
        let stat = ft.is_file().then(|| super::StatKey::of(md));
        let xattrs = match (self.cache, &stat) {
            (Some(c), Some(key)) => match c.xattrs(&abs, key) {
                Some(x) => x.clone(),
                None => read_xattrs(&abs)?,
            },
            _ => read_xattrs(&abs)?,
        };
        Ok(Some(PlannedEntry {
            dest,
            source: abs,
            source_rel: if rel.is_empty() {
                ".".into()
            } else {
                String::from_utf8_lossy(rel).into_owned()
            },
            xattrs,
            kind,
            mode,
            uid,
            gid,
            mtime: (md.mtime(), md.mtime_nsec()),
            inode: (ft.is_file() && md.nlink() > 1).then(|| (md.dev(), md.ino())),
            stat,
        }))
    }
}

/// The entry's own xattrs (never a symlink target's). A filesystem without xattr support
/// simply has none.
fn read_xattrs(path: &Path) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, Error> {
    let mut out = BTreeMap::new();
    let names = match xattr::list(path) {
        Ok(names) => names,
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => return Ok(out),
        Err(e) => return Err(read_err(path)(e)),
    };
    for name in names {
        if name == OsStr::new("security.selinux") {
            continue;
        }
        if let Some(value) = xattr::get(path, &name).map_err(read_err(path))? {
            out.insert(name.as_bytes().to_vec(), value);
        }
    }
    Ok(out)
}

/// Turns second and later names of one inode into hardlinks to the first (in path order).
fn link_hardlinks(plan: &mut [PlannedEntry]) {
    let mut first: BTreeMap<(u64, u64), Vec<u8>> = BTreeMap::new();
    for e in plan.iter_mut() {
        let Some(inode) = e.inode else { continue };
        match first.get(&inode) {
            Some(f) => e.kind = EntryKind::Hardlink { first: f.clone() },
            None => {
                first.insert(inode, e.dest.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_join_workdir_like_docker() {
        for (workdir, dest, want) in [
            ("/app", ".", "/app/"),
            ("/app", "./", "/app/"),
            ("/app", "", "/app/"),
            ("/app", "x", "/app/x"),
            ("/app", "x/", "/app/x/"),
            ("/app", "x/.", "/app/x/"),
            ("/app", "/abs", "/abs"),
            ("/app", "../../etc/", "/etc/"),
            ("", "rel", "/rel"),
            ("/", "/", "/"),
        ] {
            assert_eq!(resolve_dest(workdir, dest), want, "{workdir:?} + {dest:?}");
        }
    }

    #[test]
    fn join_handles_empty_sides() {
        assert_eq!(join(b"", b"a"), b"a");
        assert_eq!(join(b"a", b""), b"a");
        assert_eq!(join(b"a", b"b"), b"a/b");
    }
}
