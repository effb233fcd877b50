//! Serving instances another kubefn process leads: with several kubefn processes on one
//! database, one leads and applies (the reconcile loop); every other one keeps its routes to the
//! instances as they run, so its gateway answers for all of them.

use super::*;
use crate::platform::leadership::Leadership;

impl Instances {
    /// Runs the serving loop until aborted: every `period`, and whenever a function's current
    /// version changes, a [`Instances::serve_pass`] while another process leads.
    pub fn spawn_server(&self, period: Duration, leadership: Leadership) -> tokio::task::JoinHandle<()> {
        let instances = self.clone();
        tokio::spawn(async move {
            loop {
                if !leadership.is_leading() {
                    if let Err(error) = instances.serve_pass().await {
                        tracing::warn!(error = %crate::platform::error_chain(&error), "serving the leader's instances failed; trying again");
                    }
                    instances.meters.lock().passed = true;
                }
                tokio::select! {
                    () = tokio::time::sleep(period) => {}
                    () = instances.wake.notified() => {}
                }
            }
        })
    }

    /// One pass: this process serves every instance the store has as it runs (changing nothing
    /// in the runtime) and stops serving those the store no longer has.
    pub async fn serve_pass(&self) -> InstanceResult<()> {
        let records = self.store.instances(None).await?;
        let mut specs = self.store.instance_specs(None).await?;
        let mut user_quotas: HashMap<i64, Quota> = HashMap::new();
        let mut served = HashSet::new();
        for record in records {
            if record.state == InstanceState::Deleting {
                continue;
            }
            let spec = self.spec_of(&mut specs, &record).await?;
            let quota = self.quota_in(&mut user_quotas, record.user_id).await?;
            served.insert(record.id.clone());
            if let Err(error) = self.apply(&record, spec, quota, ApplyMode::Serve).await {
                tracing::warn!(instance = %record.id, %error, "cannot serve the instance");
            }
        }
        self.runtime.release_all_but(&served).await;
        Ok(())
    }
}
