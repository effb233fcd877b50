//! Deleting instances: marked first (so a crash finishes the job), removed in the background
//! when the runtime takes longer than the caller waits.

use super::*;

impl Instances {
    /// Records that the instance is being deleted (under the change lock, so no reconcile pass
    /// starts it again), so a crash before the end finishes the deletion at the next start.
    pub(super) async fn mark_deleting(&self, mut instance: InstanceRecord) -> InstanceResult<InstanceRecord> {
        if instance.state != InstanceState::Deleting {
            instance.state = InstanceState::Deleting;
            instance.message = "stopping its replicas".into();
            self.store.set_instance_state(&instance.id, instance.state, &instance.message).await?;
        }
        Ok(instance)
    }

    /// Removes a marked instance in the background and waits up to [`DELETE_WAIT`] for it.
    pub(super) async fn remove_waiting(&self, instance: InstanceRecord) -> InstanceResult<Removal> {
        let Some(removal) = self.spawn_removal(instance.id.clone()) else {
            return Ok(Removal::Underway(Box::new(self.info(instance))));
        };
        match tokio::time::timeout(DELETE_WAIT, removal).await {
            Ok(Ok(result)) => result.map(|()| Removal::Done),
            // The task panicked: the record stays `Deleting`, and the reconcile loop retries.
            Ok(Err(join)) => {
                tracing::error!(instance = %instance.id, error = %join, "deleting the instance stopped; the reconcile loop retries");
                Ok(Removal::Underway(Box::new(self.info(instance))))
            }
            Err(_slow) => Ok(Removal::Underway(Box::new(self.info(instance)))),
        }
    }

    /// Starts removing an instance (or, with no record, a stray the runtime still runs): the
    /// runtime stops it, then its record goes. `None` if a removal of it is already under way.
    /// A failure leaves the record `Deleting` with the reason, and the reconcile loop retries.
    pub(super) fn spawn_removal(&self, id: String) -> Option<tokio::task::JoinHandle<InstanceResult<()>>> {
        if !self.removing.lock().insert(id.clone()) {
            return None;
        }
        let instances = self.clone();
        Some(tokio::spawn(async move {
            let result = match instances.runtime.delete(&id).await {
                Ok(()) => instances.store.delete_instance(&id).await.map_err(InstanceError::from),
                Err(error) => {
                    let message = format!("deleting failed and is retried: {error}");
                    tracing::warn!(instance = %id, error = %crate::platform::error_chain(&error), "deleting the instance failed; the reconcile loop retries");
                    let _ = instances.store.set_instance_state(&id, InstanceState::Deleting, &message).await;
                    Err(InstanceError::Runtime(error))
                }
            };
            instances.removing.lock().remove(&id);
            result
        }))
    }
}
