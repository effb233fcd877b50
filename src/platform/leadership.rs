//! Leadership: with several kubefn processes on one database, the work that must happen once
//! (the reconcile loop, cron fires, the async workers) runs in one of them, the leader. Every
//! process serves the UI, the REST API and the gateway.
//!
//! The leader holds a lease, a row in the database every process already shares (the
//! `leases` table): it renews the lease every [`LeaseTimings::renew_every`]; the others try to
//! take it at the same pace and win once it has gone [`LeaseTimings::duration`] unrenewed. A
//! leader that cannot renew stops its work at [`LeaseTimings::step_down_after`], before its
//! lease can expire, so two processes never lead at once while their clocks agree to within
//! the margin between the two (as Kubernetes' own Lease-based leader election assumes). A leader
//! that stops gracefully gives its lease up, so the next one takes over at once.
//!
//! Why the database and not a Kubernetes Lease: every kubefn process must reach the database to
//! do anything at all, inside a cluster or not; a second arbiter would add a way to disagree
//! (a process holding the Lease but cut off from the database) without removing one.
//!
//! SQLite is one process's file: there the one process leads from the start ([`Leadership::solo`]).

use super::store::{Store, StoreError};
use chrono::Utc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The name of the lease the leader holds.
pub const LEADER_LEASE: &str = "leader";

/// How long a lease runs and how often it is renewed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseTimings {
    /// How long a lease runs unrenewed before another process may take it: the longest the
    /// work waits for a new leader after a leader dies (plus one [`Self::renew_every`]).
    pub duration: Duration,
    /// How often the leader renews, and the others try to take the lease.
    pub renew_every: Duration,
}

impl Default for LeaseTimings {
    /// A 10 s lease renewed every 2 s: a new leader within 12 s of a crash.
    fn default() -> Self {
        LeaseTimings { duration: Duration::from_secs(10), renew_every: Duration::from_secs(2) }
    }
}

impl LeaseTimings {
    /// How long after its last successful renewal a leader that cannot renew stops its work:
    /// two renewals' worth before its lease expires, so it has stopped before anyone takes over.
    pub fn step_down_after(&self) -> Duration {
        self.duration.saturating_sub(self.renew_every * 2)
    }
}

/// Which process leads; cheap to clone.
#[derive(Clone, Debug)]
pub struct Leadership {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The lease's database; `None` when this process leads alone.
    store: Option<Store>,
    /// This process's name as a lease holder: host, process id and a random part.
    holder: String,
    timings: LeaseTimings,
    leading: watch::Sender<bool>,
}

impl Leadership {
    /// This process leads from the start and for good (SQLite: nobody else can share the file).
    pub fn solo() -> Leadership {
        Leadership::with(None, LeaseTimings::default(), true)
    }

    /// The leadership `store` calls for: a lease with `timings` in a PostgreSQL database, which
    /// several processes may share; alone on a SQLite file.
    pub fn for_store(store: &Store, timings: LeaseTimings) -> Leadership {
        if store.is_shared() { Leadership::elected(store.clone(), timings) } else { Leadership::solo() }
    }

    /// This process competes for the lease in `store` with every other process on it; it leads
    /// once [`Leadership::spawn`] has won it.
    pub fn elected(store: Store, timings: LeaseTimings) -> Leadership {
        Leadership::with(Some(store), timings, false)
    }

    fn with(store: Option<Store>, timings: LeaseTimings, leading: bool) -> Leadership {
        let host = std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
            .map(|host| host.trim().to_string())
            .filter(|host| !host.is_empty())
            .unwrap_or_else(|| "kubefn".into());
        let random = uuid::Uuid::new_v4().simple().to_string();
        let holder = format!("{host}/{}/{}", std::process::id(), &random[..8]);
        Leadership { inner: Arc::new(Inner { store, holder, timings, leading: watch::Sender::new(leading) }) }
    }

    /// This process's name in the lease (`HOST/PID/RANDOM`).
    pub fn holder(&self) -> &str {
        &self.inner.holder
    }

    /// Whether this process leads now.
    pub fn is_leading(&self) -> bool {
        *self.inner.leading.borrow()
    }

    /// Waits until this process leads, for `patience` at most; whether it does.
    pub async fn until_leading(&self, patience: Duration) -> bool {
        let mut leading = self.inner.leading.subscribe();
        tokio::time::timeout(patience, leading.wait_for(|leads| *leads)).await.is_ok_and(|led| led.is_ok())
    }

    /// Competes for the lease until aborted: takes it when it is free, renews it while held,
    /// and steps down when it is lost or cannot be renewed in time. Nothing to do alone.
    pub fn spawn(&self) -> JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let Some(store) = this.inner.store.clone() else { return };
            let timings = this.inner.timings;
            let mut held_since: Option<Instant> = None;
            loop {
                let asked = Instant::now();
                let now = Utc::now();
                let expires = now + chrono::Duration::from_std(timings.duration).unwrap_or(chrono::TimeDelta::MAX);
                let answer = tokio::time::timeout(
                    timings.renew_every,
                    store.try_lease(LEADER_LEASE, this.holder(), now, expires),
                )
                .await;
                match answer {
                    Ok(Ok(true)) => held_since = Some(asked),
                    Ok(Ok(false)) => held_since = None,
                    Ok(Err(error)) => this.cannot_ask(&error),
                    Err(_) => tracing::warn!(holder = this.holder(), "the leader lease did not answer in time"),
                }
                // Measured from when the last renewal was asked for: the lease runs from then.
                let leading = held_since.is_some_and(|since| since.elapsed() < timings.step_down_after());
                if !leading {
                    held_since = None;
                }
                this.inner.leading.send_if_modified(|was| {
                    let changed = *was != leading;
                    if changed {
                        if leading {
                            tracing::info!(
                                holder = this.holder(),
                                "this kubefn leads now: it reconciles, fires cron triggers and works the async queue"
                            );
                        } else {
                            tracing::warn!(
                                holder = this.holder(),
                                "this kubefn no longer leads: its reconcile, cron and async work stop"
                            );
                        }
                    }
                    *was = leading;
                    changed
                });
                tokio::time::sleep_until((asked + timings.renew_every).into()).await;
            }
        })
    }

    fn cannot_ask(&self, error: &StoreError) {
        tracing::warn!(holder = self.holder(), error = %super::error_chain(error), "cannot renew or take the leader lease");
    }

    /// Runs `start`'s task while this process leads: started on winning the lease, aborted on
    /// losing it, started again on winning it back. Aborting the returned task stops it too.
    pub fn lead<F>(&self, start: F) -> JoinHandle<()>
    where
        F: Fn() -> JoinHandle<()> + Send + 'static,
    {
        let mut leading = self.inner.leading.subscribe();
        tokio::spawn(async move {
            let mut work: Option<AbortOnDrop> = None;
            loop {
                let lead = *leading.borrow_and_update();
                if lead && work.is_none() {
                    work = Some(AbortOnDrop(start()));
                } else if !lead {
                    work = None;
                }
                if leading.changed().await.is_err() {
                    return;
                }
            }
        })
    }

    /// Gives the lease up when this process holds it (a graceful stop), so another process
    /// takes over at once instead of after the lease runs out.
    pub async fn resign(&self) {
        let Some(store) = &self.inner.store else { return };
        self.inner.leading.send_replace(false);
        if let Err(error) = store.release_lease(LEADER_LEASE, self.holder()).await {
            self.cannot_ask(&error);
        }
    }
}

/// A task that is aborted when this is dropped: the work a leader stops when it steps down, or
/// when the task that runs it is aborted.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quick() -> LeaseTimings {
        LeaseTimings { duration: Duration::from_millis(900), renew_every: Duration::from_millis(150) }
    }

    async fn until(what: &str, condition: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !condition() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn one_process_leads_and_another_takes_over_when_it_stops() {
        for super::super::store::test_databases::TestStore { store, .. } in
            super::super::store::test_databases::test_stores().await
        {
            let timings = quick();
            let first = Leadership::elected(store.clone(), timings);
            let second = Leadership::elected(store.clone(), timings);
            let first_campaign = first.spawn();
            until("the first leads", || first.is_leading()).await;
            let second_campaign = second.spawn();
            let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let most_at_once = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let starts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let work = |leadership: &Leadership| {
                let (running, most_at_once, starts) = (running.clone(), most_at_once.clone(), starts.clone());
                leadership.lead(move || {
                    starts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let now = running.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                    most_at_once.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
                    let running = running.clone();
                    tokio::spawn(async move {
                        let _running = CountWhileAlive(running);
                        std::future::pending::<()>().await;
                    })
                })
            };
            let (first_work, second_work) = (work(&first), work(&second));
            tokio::time::sleep(timings.duration * 2).await;
            assert!(!second.is_leading(), "the lease is renewed: one leader");
            assert_eq!(starts.load(std::sync::atomic::Ordering::SeqCst), 1, "the work runs once");

            // A crash: the leader and its work stop at once, and it gives nothing up.
            first_campaign.abort();
            first_work.abort();
            until("the second leads", || second.is_leading()).await;
            until("the work starts again", || starts.load(std::sync::atomic::Ordering::SeqCst) == 2).await;
            assert_eq!(most_at_once.load(std::sync::atomic::Ordering::SeqCst), 1, "never two at once");

            // A graceful stop hands over at once, long before the lease would run out.
            let patient = LeaseTimings { duration: Duration::from_secs(60), renew_every: timings.renew_every };
            let third = Leadership::elected(store.clone(), patient);
            let third_campaign = third.spawn();
            second_campaign.abort();
            second_work.abort();
            second.resign().await;
            until("the third leads", || third.is_leading()).await;
            third_campaign.abort();
        }
    }

    #[tokio::test]
    async fn a_leader_cut_off_from_its_database_stops_its_work_before_the_lease_expires() {
        for super::super::store::test_databases::TestStore { store, .. } in
            super::super::store::test_databases::test_stores().await
        {
            // Long enough that a busy test machine still renews in time.
            let timings = LeaseTimings { duration: Duration::from_secs(3), renew_every: Duration::from_millis(500) };
            let leader = Leadership::elected(store.clone(), timings);
            let campaign = leader.spawn();
            until("it leads", || leader.is_leading()).await;
            let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let work = leader.lead({
                let running = running.clone();
                move || {
                    running.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let running = running.clone();
                    tokio::spawn(async move {
                        let _running = CountWhileAlive(running);
                        std::future::pending::<()>().await;
                    })
                }
            });
            until("the work runs", || running.load(std::sync::atomic::Ordering::SeqCst) == 1).await;
            let (_, expires) = store.lease_holder(LEADER_LEASE).await.expect("read").expect("held");
            store.close().await;
            until("the work stops", || running.load(std::sync::atomic::Ordering::SeqCst) == 0).await;
            assert!(Utc::now() < expires, "stopped before its lease could pass to another process");
            assert!(!leader.is_leading());
            campaign.abort();
            work.abort();
        }
    }

    /// Counts one running task while it lives (the counter is raised when the task starts).
    struct CountWhileAlive(Arc<std::sync::atomic::AtomicUsize>);

    impl Drop for CountWhileAlive {
        fn drop(&mut self) {
            self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
}
