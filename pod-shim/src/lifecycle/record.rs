//! The pod's record as the shim keeps it: the one in memory, behind a lock that is never
//! held across a Docker call or a disk write, and its durable copy (`state::Store`), written
//! on tokio's blocking pool so that a slow or frozen disk holds up only the operations waiting
//! for their own save, never the shim's event loop (gRPC, exit tracking, streams). One writer
//! at a time drains the queue and ends when it is empty: an idle shim keeps no thread for its
//! saves (a thread of its own cost every shim 0.02 MiB).
//!
//! Durable before reported: a part of the record (the pod's own fields, or one container)
//! whose change is still on its way to the disk is reported as it was before that change, so
//! no client hears of a state that a restarted shim would not remember. One kind of save is
//! reported at once and answered once written, without a flush of its own (`Reach::Implied`): a
//! change that the record on the disk already implies (a removal whose intent is there, which
//! a restarted shim finishes the same way; a container's create, whose intent holds the record
//! it makes). It is written before its answer because the
//! front's lists read the files (`shim-manager/src/listing.rs`): a list made after the answer
//! must not show what the call removed. Readers never wait for the disk. A part settles
//! when the save that holds its change finishes, whether it succeeded or failed: a failed
//! save fails its operation, and what that operation changed in memory is reported from then
//! on, as it is by every later save.
//!
//! Saves go to the writer in the order they were asked for. The writer takes every save
//! queued behind the one it just wrote and writes only the newest record, which holds all
//! their changes (a batch), so a slow disk does not build up a backlog of stale records.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{oneshot, Notify};

use crate::error::{Error, Result};
use crate::state::Store;
use dockpod_proto::pod_record::{ContainerRecord, PodRecord};
use dockpod_proto::state_journal::Reached;

pub(super) struct Record {
    current: Mutex<PodRecord>,
    settling: Arc<Mutex<Settling>>,
    /// The writer's queue; unbounded in jobs, but a job is one operation's save and every
    /// operation waits for its own, so it holds at most one per operation in flight.
    writer: Arc<Writer>,
    /// Notified by the writer whenever saves have settled.
    settled: Arc<Notify>,
    store: Store,
}

/// Where the writer puts the record: the pod's `Store`, or in tests one that can be held up.
pub(super) trait Disk: Send + Sync + 'static {
    /// The record where readers (and a shim that restarts after this one died) read it; on
    /// the disk when it says so, else once `sync` returns.
    fn write(&self, record: &PodRecord) -> io::Result<Reached>;
    fn sync(&self) -> io::Result<()>;
    fn remove(&self) -> io::Result<()>;
    /// No save waits: work that would otherwise delay one (the journal's making) is done.
    fn idle(&self) {}
}

impl Disk for Store {
    fn write(&self, record: &PodRecord) -> io::Result<Reached> {
        Store::write_ahead(self, record)
    }

    fn sync(&self) -> io::Result<()> {
        Store::sync(self)
    }

    fn idle(&self) {
        Store::idle(self)
    }

    fn remove(&self) -> io::Result<()> {
        Store::remove(self)
    }
}

/// How far a save gets before its caller goes on and its change is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reach {
    /// On the disk: what a restarted shim remembers whatever crashed.
    Disk,
    /// Reported at once, answered once written (where the front's lists and a restarted shim
    /// read it), and flushed later: for a change that a save already on the disk implies (a
    /// removal's outcome, which a shim that finds its intent finishes the same way, whether
    /// it died before this write or after it, or the machine before the flush; a container
    /// create's, which such a shim records from its intent). The writer
    /// flushes it once idle, or with the next save; a failed write fails the call, a failed
    /// flush is logged (the next save writes the change again).
    Implied,
}

/// A part of the record that is reported as a whole.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Part {
    /// The sandbox's fields: everything but the containers and the intents (which no client
    /// is told of).
    Pod,
    Container(String),
}

/// What is on its way to the disk.
#[derive(Default)]
struct Settling {
    /// The record as the last save handed it to the writer.
    queued: PodRecord,
    /// The record as the last finished save wrote it (or tried to).
    settled: PodRecord,
    /// Parts changed by a save that has not finished, each with that save's number; at most
    /// one entry per container of the record and one for the pod.
    pending: HashMap<Part, u64>,
    last_asked: u64,
}

/// Work on files that go with a save, for the writer to do after it (`Record::save_then`).
pub(super) type Then = Box<dyn FnOnce() + Send>;

/// The writer's answer to one job: the disk's error is shared by every save of a batch.
type Outcome = std::result::Result<(), Arc<io::Error>>;

enum Job {
    Save {
        number: u64,
        record: Box<PodRecord>,
        reach: Reach,
        /// Told once the record is written, before it is flushed (`save_ahead`).
        written: Option<oneshot::Sender<Outcome>>,
        done: oneshot::Sender<Outcome>,
        /// Run by the writer once the save is done (`save_then`).
        then: Option<Then>,
    },
    Remove {
        done: oneshot::Sender<Outcome>,
    },
}

impl Record {
    /// `record` is what the disk holds (or the fresh record about to be saved first).
    pub(super) fn new(store: Store, record: PodRecord) -> Record {
        Record::with_disk(store.clone(), store, record)
    }

    pub(super) fn with_disk(store: Store, disk: impl Disk, record: PodRecord) -> Record {
        let settling = Arc::new(Mutex::new(Settling {
            queued: record.clone(),
            settled: record.clone(),
            ..Default::default()
        }));
        let settled = Arc::new(Notify::new());
        let writer = Arc::new(Writer {
            queue: Mutex::new(Queue::default()),
            disk: Box::new(disk),
            settling: settling.clone(),
            settled: settled.clone(),
        });
        Record {
            current: Mutex::new(record),
            settling,
            writer,
            settled,
            store,
        }
    }

    /// The record; a poisoned lock still holds the last consistent record, so it is used.
    pub(super) fn lock(&self) -> MutexGuard<'_, PodRecord> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn settling(&self) -> MutexGuard<'_, Settling> {
        lock(&self.settling)
    }

    /// The record as clients may be told of it (see the module's doc).
    pub(super) fn reported(&self) -> PodRecord {
        let current = self.lock();
        let settling = self.settling();
        let mut view = current.clone();
        for part in settling.pending.keys() {
            match part {
                Part::Pod => {
                    let containers = std::mem::take(&mut view.containers);
                    let intents = std::mem::take(&mut view.intents);
                    view = PodRecord {
                        containers,
                        intents,
                        ..settling.settled.without_containers()
                    };
                }
                Part::Container(id) => match settling.settled.containers.get(id) {
                    Some(c) => {
                        view.containers.insert(id.clone(), c.clone());
                    }
                    None => {
                        view.containers.remove(id);
                    }
                },
            }
        }
        view
    }

    /// One container as clients may be told of it.
    pub(super) fn reported_container(&self, id: &str) -> Option<ContainerRecord> {
        let current = self.lock();
        let settling = self.settling();
        if settling
            .pending
            .contains_key(&Part::Container(id.to_string()))
        {
            settling.settled.containers.get(id).cloned()
        } else {
            current.containers.get(id).cloned()
        }
    }

    /// Returns once no save holding a change of container `id` is on its way to the disk: an
    /// operation that found its change recorded by another (Docker's event, say) answers once
    /// that change is reported.
    pub(super) async fn container_settled(&self, id: &str) {
        let part = Part::Container(id.to_string());
        loop {
            let settled = self.settled.notified();
            tokio::pin!(settled);
            // Registered before the look, so no settling falls in between unseen.
            settled.as_mut().enable();
            if !self.settling().pending.contains_key(&part) {
                return;
            }
            settled.await;
        }
    }

    /// Writes the record as it is now; returns once it is on disk (or failed to get there).
    /// Dropping the returned future does not withdraw the save.
    pub(super) async fn save(&self) -> Result<()> {
        self.save_then(Reach::Disk, None).await
    }

    /// Writes the record as it is now; returns once it got as far as `reach` asks. `then`,
    /// work on files that the change leaves unneeded, is done by the writer after it has
    /// answered, on its thread: off the caller's way, and after the record (a crash between
    /// the two leaves a file nothing reads, not a record naming a file that is gone).
    pub(super) async fn save_then(&self, reach: Reach, then: Option<Then>) -> Result<()> {
        let implied = reach == Reach::Implied;
        let (written, done) = self.queue(reach, implied, then)?;
        if let Some(written) = written {
            self.outcome("writing", written.await)?;
            let path = self.store.path().display().to_string();
            drop(tokio::spawn(async move {
                if let Ok(Err(e)) = done.await {
                    tracing::warn!(error = %e, path, "flushing a change the disk implies; the next save writes it");
                }
            }));
            return Ok(());
        }
        self.outcome("writing", done.await)
    }

    /// Writes the record as it is now, for its caller to go on once it is written (a shim
    /// that dies from then on reads it) and to wait for the disk later: an intent whose
    /// flush runs beside the Docker call it announces.
    pub(super) fn save_ahead(&self) -> Result<Ahead<'_>> {
        let (written, done) = self.queue(Reach::Disk, true, None)?;
        Ok(Ahead {
            record: self,
            written,
            done,
        })
    }

    /// Hands the record as it is now to the writer.
    fn queue(
        &self,
        reach: Reach,
        ahead: bool,
        then: Option<Then>,
    ) -> Result<(
        Option<oneshot::Receiver<Outcome>>,
        oneshot::Receiver<Outcome>,
    )> {
        let current = self.lock();
        let mut settling = self.settling();
        settling.last_asked += 1;
        let number = settling.last_asked;
        mark_changes(&mut settling, &current, number);
        if reach == Reach::Implied {
            // Reported at once: the disk implies it already.
            settling.pending.retain(|_, n| *n != number);
        }
        let (done, finished) = oneshot::channel();
        let (written, on_written) = ahead.then(oneshot::channel).unzip();
        let job = Job::Save {
            number,
            record: Box::new(current.clone()),
            reach,
            written,
            done,
            then,
        };
        // Sent under both locks: the writer gets the saves in the order of their numbers.
        if Writer::send(&self.writer, job).is_err() {
            settling.pending.retain(|_, n| *n != number);
            return Err(self.failed("writing", writer_gone()));
        }
        Ok((on_written, finished))
    }

    /// The pod's state directory, for the files kept beside the record (log positions).
    pub(super) fn store(&self) -> &Store {
        &self.store
    }

    /// Deletes the durable copy (the pod is removed), after every save asked for before.
    pub(super) async fn remove(&self) -> Result<()> {
        let (done, finished) = oneshot::channel();
        if Writer::send(&self.writer, Job::Remove { done }).is_err() {
            return Err(self.failed("removing", writer_gone()));
        }
        self.outcome("removing", finished.await)
    }

    fn outcome(
        &self,
        doing: &str,
        answer: std::result::Result<Outcome, oneshot::error::RecvError>,
    ) -> Result<()> {
        match answer {
            Ok(Ok(())) => Ok(()),
            Ok(Err(shared)) => Err(self.failed(doing, copy_io(&shared))),
            Err(_) => Err(self.failed(doing, writer_gone())),
        }
    }

    fn failed(&self, doing: &str, e: io::Error) -> Error {
        Error::io(format!("{doing} {}", self.store.path().display()))(e)
    }
}

/// A save in two steps (`Record::save_ahead`).
pub(super) struct Ahead<'a> {
    record: &'a Record,
    written: Option<oneshot::Receiver<Outcome>>,
    done: oneshot::Receiver<Outcome>,
}

impl Ahead<'_> {
    /// Returns once the record is written (readers and a restarted shim read it).
    pub(super) async fn written(&mut self) -> Result<()> {
        match self.written.take() {
            Some(written) => self.record.outcome("writing", written.await),
            None => Ok(()),
        }
    }

    /// Returns once the record is on the disk.
    pub(super) async fn done(self) -> Result<()> {
        self.record.outcome("writing", self.done.await)
    }
}

fn lock(settling: &Mutex<Settling>) -> MutexGuard<'_, Settling> {
    settling.lock().unwrap_or_else(|p| p.into_inner())
}

fn writer_gone() -> io::Error {
    io::Error::other("the pod state writer has stopped")
}

/// The same error for one more caller: the OS error number (which decides the gRPC code)
/// where there is one, else the kind and the message.
fn copy_io(e: &io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::new(e.kind(), e.to_string()),
    }
}

/// Marks every part that differs between the record last queued and `now` as changed by save
/// `number`.
fn mark_changes(settling: &mut Settling, now: &PodRecord, number: u64) {
    if !settling.queued.same_pod(now) {
        settling.pending.insert(Part::Pod, number);
    }
    for (id, c) in &now.containers {
        if settling.queued.containers.get(id) != Some(c) {
            settling.pending.insert(Part::Container(id.clone()), number);
        }
    }
    for id in settling.queued.containers.keys() {
        if !now.containers.contains_key(id) {
            settling.pending.insert(Part::Container(id.clone()), number);
        }
    }
    settling.queued = now.clone();
}

/// The jobs not yet taken, and whether a writer is at work on the blocking pool.
#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    writing: bool,
}

struct Writer {
    queue: Mutex<Queue>,
    disk: Box<dyn Disk>,
    settling: Arc<Mutex<Settling>>,
    settled: Arc<Notify>,
}

impl Writer {
    /// Queues `job`, starting a writer unless one is at work. Never waits for the disk.
    fn send(this: &Arc<Writer>, job: Job) -> std::result::Result<(), ()> {
        let mut queue = this.lock();
        queue.jobs.push_back(job);
        if queue.writing {
            return Ok(());
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            queue.jobs.pop_back();
            return Err(());
        };
        queue.writing = true;
        let writer = this.clone();
        drop(runtime.spawn_blocking(move || writer.drain()));
        Ok(())
    }

    /// Writes batches until the queue is empty. Every save queued behind the one being
    /// written is taken with the next batch, of which only the newest record is written.
    fn drain(&self) {
        let _unwinding = Unwinding(self);
        loop {
            let mut idled = false;
            let jobs = loop {
                let mut queue = self.lock();
                if !queue.jobs.is_empty() {
                    break std::mem::take(&mut queue.jobs);
                }
                if idled {
                    queue.writing = false;
                    return;
                }
                // Still the writer while idle: a save asked for meanwhile is taken next.
                drop(queue);
                self.disk.idle();
                idled = true;
            };
            let mut saves = Vec::new();
            for job in jobs {
                match job {
                    Job::Save { .. } => saves.push(job),
                    Job::Remove { done } => {
                        self.write_batch(std::mem::take(&mut saves));
                        let _ = done.send(self.disk.remove().map_err(Arc::new));
                    }
                }
            }
            self.write_batch(saves);
        }
    }

    fn write_batch(&self, saves: Vec<Job>) {
        write_batch(&*self.disk, &self.settling, &self.settled, saves);
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A writer that panics drops the jobs it had not written (their callers are told the writer
/// stopped) and lets the next save start another: one bug fails the saves at hand, not every
/// save after them.
struct Unwinding<'a>(&'a Writer);

impl Drop for Unwinding<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let mut queue = self.0.lock();
            queue.jobs.clear();
            queue.writing = false;
        }
    }
}

/// Writes the newest record of `saves` (each holds every change of the ones before it),
/// flushes it unless every save of the batch asked for less, then settles them all with the
/// outcome.
fn write_batch(disk: &dyn Disk, settling: &Mutex<Settling>, settled: &Notify, saves: Vec<Job>) {
    let mut waiting = Vec::with_capacity(saves.len());
    let mut written_waiting = Vec::new();
    let mut after = Vec::new();
    let mut reach = Reach::Implied;
    let mut newest = None;
    for job in saves {
        if let Job::Save {
            number,
            record,
            reach: asked,
            written,
            done,
            then,
        } = job
        {
            after.extend(then);
            if asked == Reach::Disk {
                reach = Reach::Disk;
            }
            written_waiting.extend(written);
            waiting.push(done);
            newest = Some((number, record));
        }
    }
    let Some((number, record)) = newest else {
        return;
    };
    let wrote = disk.write(&record).map_err(Arc::new);
    for written in written_waiting {
        let _ = written.send(wrote.as_ref().map(|_| ()).map_err(Arc::clone));
    }
    let outcome: Outcome = match wrote {
        Ok(Reached::Kernel) if reach == Reach::Disk => disk.sync().map_err(Arc::new),
        Ok(_) => Ok(()),
        Err(e) => Err(e),
    };
    {
        let mut settling = lock(settling);
        settling.settled = *record;
        settling.pending.retain(|_, n| *n > number);
    }
    settled.notify_waiters();
    for done in waiting {
        // A caller that went away has nothing to be told.
        let _ = done.send(outcome.clone());
    }
    for then in after {
        then();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use dockpod_proto::cri::ContainerState;

    /// Holds the writer at the disk while closed, as a slow disk would.
    #[derive(Default)]
    struct Gate {
        closed: Mutex<bool>,
        opened: std::sync::Condvar,
    }

    impl Gate {
        fn set(&self, closed: bool) {
            *self.closed.lock().unwrap_or_else(|p| p.into_inner()) = closed;
            self.opened.notify_all();
        }

        fn pass(&self) {
            let mut closed = self.closed.lock().unwrap_or_else(|p| p.into_inner());
            while *closed {
                closed = self.opened.wait(closed).unwrap_or_else(|p| p.into_inner());
            }
        }
    }

    /// A disk whose writes wait at the gate.
    struct Gated {
        store: Store,
        gate: Arc<Gate>,
        entered: Arc<AtomicUsize>,
    }

    impl Disk for Gated {
        fn write(&self, record: &PodRecord) -> io::Result<Reached> {
            self.entered.fetch_add(1, Ordering::SeqCst);
            self.gate.pass();
            self.store.write_ahead(record)
        }

        fn sync(&self) -> io::Result<()> {
            self.store.sync()
        }

        fn remove(&self) -> io::Result<()> {
            self.store.remove()
        }
    }

    struct Fixture {
        dir: tempfile::TempDir,
        record: Record,
        gate: Arc<Gate>,
        entered: Arc<AtomicUsize>,
    }

    impl Drop for Fixture {
        /// A test that fails with the gate closed would otherwise hang: the runtime waits
        /// for the writer held at it.
        fn drop(&mut self) {
            self.gate.set(false);
        }
    }

    fn start(first: PodRecord) -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::new(dir.path());
        store.save(&first).expect("first save");
        let gate = Arc::new(Gate::default());
        let entered = Arc::new(AtomicUsize::new(0));
        let disk = Gated {
            // A writer of its own, as a restarted shim's: its first save is a compaction.
            store: Store::new(dir.path()),
            gate: gate.clone(),
            entered: entered.clone(),
        };
        Fixture {
            record: Record::with_disk(store, disk, first),
            dir,
            gate,
            entered,
        }
    }

    fn container(id: &str, state: ContainerState) -> ContainerRecord {
        ContainerRecord {
            id: id.into(),
            state: state as i32,
            ..Default::default()
        }
    }

    fn on_disk(f: &Fixture) -> PodRecord {
        Store::new(f.dir.path())
            .load()
            .expect("load")
            .expect("saved")
    }

    /// Whether `save` is still waiting: a gated write cannot finish, so this is no race.
    async fn still_waiting(save: &mut (impl std::future::Future + Unpin)) -> bool {
        tokio::time::timeout(Duration::from_millis(20), save)
            .await
            .is_err()
    }

    /// While a save waits on the disk, the parts it changed are reported as they were and the
    /// others as they are; once it is written, the change is reported.
    #[tokio::test]
    async fn a_change_is_reported_only_once_it_is_on_disk() {
        let mut first = PodRecord::default();
        for id in ["a", "b", "same"] {
            first
                .containers
                .insert(id.into(), container(id, ContainerState::ContainerRunning));
        }
        let f = start(first);
        f.gate.set(true);
        {
            let mut r = f.record.lock();
            r.containers
                .insert("a".into(), container("a", ContainerState::ContainerExited));
            r.containers.remove("b");
            r.containers
                .insert("c".into(), container("c", ContainerState::ContainerCreated));
            r.ready = true;
        }
        let saving = f.record.save();
        tokio::pin!(saving);
        assert!(
            still_waiting(&mut saving).await,
            "the save waits for the disk"
        );
        let before = f.record.reported();
        assert!(!before.ready, "the pod's fields wait for their save");
        assert_eq!(
            before.containers.keys().collect::<Vec<_>>(),
            vec!["a", "b", "same"],
            "a removed container stays and a new one waits"
        );
        assert_eq!(
            f.record.reported_container("a").map(|c| c.state),
            Some(ContainerState::ContainerRunning as i32),
            "an exit waits for its save"
        );
        // A change no save was asked for yet is reported as it is: each operation asks for
        // its save right after its change, and its events wait for that save.
        f.record
            .lock()
            .containers
            .get_mut("same")
            .expect("same")
            .exit_code = 3;
        assert_eq!(
            f.record.reported_container("same").map(|c| c.exit_code),
            Some(3)
        );

        f.gate.set(false);
        saving.await.expect("save");
        let after = f.record.reported();
        assert!(after.ready);
        assert_eq!(
            after.containers.keys().collect::<Vec<_>>(),
            vec!["a", "c", "same"]
        );
        assert_eq!(
            f.record.reported_container("a").map(|c| c.state),
            Some(ContainerState::ContainerExited as i32)
        );
        let disk = on_disk(&f);
        assert!(disk.ready);
        assert!(disk.containers.contains_key("c") && !disk.containers.contains_key("b"));
    }

    /// A caller that did not make a change itself still waits for its save.
    #[tokio::test]
    async fn a_container_settles_when_the_save_of_its_change_does() {
        let f = start(PodRecord::default());
        f.gate.set(true);
        f.record
            .lock()
            .containers
            .insert("a".into(), container("a", ContainerState::ContainerRunning));
        let mut saving = Box::pin(f.record.save());
        assert!(still_waiting(&mut saving).await);
        let mut settled = Box::pin(f.record.container_settled("a"));
        assert!(still_waiting(&mut settled).await, "settled before the save");
        f.record.container_settled("other").await;
        f.gate.set(false);
        settled.await;
        saving.await.expect("save");
    }

    /// Saves queued behind one that waits on the disk are written as one, the newest.
    #[tokio::test]
    async fn saves_queued_behind_a_slow_one_are_written_once() {
        let f = start(PodRecord::default());
        f.gate.set(true);
        let mut saves = Vec::new();
        for id in ["a", "b", "c"] {
            f.record
                .lock()
                .containers
                .insert(id.into(), container(id, ContainerState::ContainerCreated));
            let mut save = Box::pin(f.record.save());
            assert!(still_waiting(&mut save).await);
            saves.push(save);
            if id == "a" {
                // The first is at the disk before the others are asked for.
                let deadline = std::time::Instant::now() + Duration::from_secs(10);
                while f.entered.load(Ordering::SeqCst) == 0 {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "the writer never wrote"
                    );
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
        f.gate.set(false);
        for result in futures_util::future::join_all(saves).await {
            result.expect("save");
        }
        assert_eq!(
            f.entered.load(Ordering::SeqCst),
            2,
            "a, then b and c as one"
        );
        assert_eq!(on_disk(&f).containers.len(), 3);
    }

    /// A failed save fails its caller with the disk's error, and settles: what it changed is
    /// reported from then on rather than never.
    #[tokio::test]
    async fn a_failed_save_settles_with_its_error() {
        let f = start(PodRecord::default());
        f.record
            .lock()
            .containers
            .insert("a".into(), container("a", ContainerState::ContainerCreated));
        // A directory where the file goes makes the write fail.
        let state = f.dir.path().join(dockpod_proto::layout::STATE_FILE);
        std::fs::remove_file(&state).expect("remove");
        std::fs::create_dir(&state).expect("a directory in the way");
        let err = f.record.save().await.expect_err("the save fails");
        assert!(err.to_string().contains("state.json"), "{err}");
        assert!(f.record.settling().pending.is_empty());
        assert!(f.record.reported().containers.contains_key("a"));
    }

    /// A disk whose flushes wait at the gate (its writes go through), counting them.
    struct SlowFlush {
        store: Store,
        gate: Arc<Gate>,
        syncs: Arc<AtomicUsize>,
    }

    impl Disk for SlowFlush {
        fn write(&self, record: &PodRecord) -> io::Result<Reached> {
            self.store.write_ahead(record)
        }

        fn sync(&self) -> io::Result<()> {
            self.syncs.fetch_add(1, Ordering::SeqCst);
            self.gate.pass();
            self.store.sync()
        }

        fn remove(&self) -> io::Result<()> {
            self.store.remove()
        }
    }

    /// A record whose journal is in place (its saves are frames, not compactions) on a disk
    /// whose flushes are held at the gate.
    fn slow_flush() -> (tempfile::TempDir, Record, Arc<Gate>, Arc<AtomicUsize>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::new(dir.path());
        store.save(&PodRecord::default()).expect("first save");
        store.idle();
        let gate = Arc::new(Gate::default());
        let syncs = Arc::new(AtomicUsize::new(0));
        let disk = SlowFlush {
            store: store.clone(),
            gate: gate.clone(),
            syncs: syncs.clone(),
        };
        let record = Record::with_disk(store, disk, PodRecord::default());
        (dir, record, gate, syncs)
    }

    /// An intent is written (a restarted shim reads it) before its caller goes on to Docker,
    /// and its flush runs meanwhile: the caller waits for it only when it asks.
    #[tokio::test]
    async fn a_save_ahead_is_read_back_before_it_is_flushed() {
        let (dir, record, gate, syncs) = slow_flush();
        gate.set(true);
        record
            .lock()
            .intents
            .insert("c1".into(), dockpod_proto::pod_record::Intent::Remove);
        let mut saving = record.save_ahead().expect("queued");
        saving.written().await.expect("written");
        let read = Store::new(dir.path()).load().expect("load").expect("saved");
        assert!(read.intents.contains_key("c1"), "a restarted shim reads it");
        let mut done = Box::pin(saving.done());
        assert!(still_waiting(&mut done).await, "the flush is held");
        gate.set(false);
        done.await.expect("flushed");
        assert_eq!(syncs.load(Ordering::SeqCst), 1);
    }

    /// A save the disk already implies is reported at once, but answered only once it is
    /// written (the front's lists read the file): here it waits, held at the disk behind the
    /// save of another container's change, which stays unreported meanwhile. The work that
    /// goes with it runs after it.
    #[tokio::test]
    async fn a_save_the_disk_implies_is_reported_at_once_and_answered_once_written() {
        let mut first = PodRecord::default();
        for id in ["a", "b"] {
            first
                .containers
                .insert(id.into(), container(id, ContainerState::ContainerRunning));
        }
        let f = start(first);
        f.gate.set(true);
        f.record
            .lock()
            .containers
            .insert("a".into(), container("a", ContainerState::ContainerExited));
        let mut exit = Box::pin(f.record.save());
        assert!(still_waiting(&mut exit).await, "the exit's save is held");
        f.record.lock().containers.remove("b");
        let ran = Arc::new(AtomicUsize::new(0));
        let then: Then = Box::new({
            let ran = ran.clone();
            move || {
                ran.fetch_add(1, Ordering::SeqCst);
            }
        });
        let mut removal = Box::pin(f.record.save_then(Reach::Implied, Some(then)));
        assert!(
            still_waiting(&mut removal).await,
            "answered before it was written"
        );
        let reported = f.record.reported();
        assert!(
            !reported.containers.contains_key("b"),
            "the removal is reported"
        );
        assert_eq!(
            reported.containers["a"].state,
            ContainerState::ContainerRunning as i32,
            "the exit is not, until it is on the disk"
        );
        assert_eq!(ran.load(Ordering::SeqCst), 0, "nothing written yet");
        f.gate.set(false);
        exit.await.expect("the exit saved");
        removal.await.expect("the removal written");
        let read = on_disk(&f);
        assert!(!read.containers.contains_key("b"), "answered, not written");
        assert_eq!(
            read.containers["a"].state,
            ContainerState::ContainerExited as i32
        );
        // The work after the save runs on the writer's thread once the save is written.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while ran.load(Ordering::SeqCst) == 0 {
            assert!(std::time::Instant::now() < deadline, "never ran");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// A save the disk already implies does not wait for a flush: with every flush held, it
    /// is answered once written, and asks for none.
    #[tokio::test]
    async fn a_save_the_disk_implies_waits_for_no_flush() {
        let (dir, record, gate, syncs) = slow_flush();
        gate.set(true);
        record.lock().containers.insert(
            "c1".into(),
            container("c1", ContainerState::ContainerExited),
        );
        tokio::time::timeout(
            // Generous: only a save that waited for the held flush would take it.
            Duration::from_secs(30),
            record.save_then(Reach::Implied, None),
        )
        .await
        .expect("answered without a flush")
        .expect("written");
        let read = Store::new(dir.path()).load().expect("load").expect("saved");
        assert!(
            read.containers.contains_key("c1"),
            "a restarted shim reads it"
        );
        assert_eq!(syncs.load(Ordering::SeqCst), 0, "no flush of its own");
        gate.set(false);
    }

    /// Removal comes after every save asked for before it.
    #[tokio::test]
    async fn removal_follows_the_saves_before_it() {
        let f = start(PodRecord::default());
        f.record.lock().ready = true;
        let (saved, removed) = tokio::join!(f.record.save(), f.record.remove());
        let aside = dockpod_proto::layout::removed_pod_dir(f.dir.path());
        let record = std::fs::read(aside.join(dockpod_proto::layout::STATE_FILE));
        let _ = std::fs::remove_dir_all(&aside);
        saved.expect("save");
        removed.expect("remove");
        assert!(!f.dir.path().exists(), "the pod's directory is gone");
        let record: PodRecord =
            serde_json::from_slice(&record.expect("renamed aside whole")).expect("a record");
        assert!(record.ready, "the save was written before the removal");
    }
}
