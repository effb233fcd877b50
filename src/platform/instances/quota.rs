//! Instances against their users' quotas: what each instance claims, a user's report, and the
//! check every change passes.

use super::*;

impl Instances {
    /// User `user_id`'s quota, read at most once per pass through `cache`.
    pub(super) async fn quota_in(&self, cache: &mut HashMap<i64, Quota>, user_id: i64) -> InstanceResult<Quota> {
        if let Some(quota) = cache.get(&user_id) {
            return Ok(*quota);
        }
        let quota = self.quotas.quota_of(user_id).await?;
        cache.insert(user_id, quota);
        Ok(quota)
    }

    /// What each of the user's instances but `except` claims at its most ([`Footprint`]).
    pub(super) async fn footprints(&self, user_id: i64, except: Option<&str>) -> InstanceResult<Vec<Footprint>> {
        let mut footprints = Vec::new();
        let mut specs = self.store.instance_specs(Some(user_id)).await?;
        for instance in self.store.instances(Some(user_id)).await? {
            if instance.state == InstanceState::Deleting || Some(instance.id.as_str()) == except {
                continue;
            }
            let spec = self.spec_of(&mut specs, &instance).await?;
            footprints.push(Footprint::of(&spec, instance.replicas));
        }
        Ok(footprints)
    }

    /// The quota and use of user `name`: the caller's own, or anyone's for an admin.
    pub async fn quota_report(&self, caller: &Principal, name: &str) -> InstanceResult<QuotaReport> {
        let user = self.quotas.user(caller, name).await?;
        let footprints = self.footprints(user.id, None).await?;
        Ok(self.quotas.report(&user, &footprints).await?)
    }

    /// Refuses a change that would take the user past their quota: instance `changed` (or a new
    /// one, when `None`) claiming `planned`, the others as they are.
    pub(super) async fn check_quota(
        &self,
        user_id: i64,
        changed: Option<&str>,
        planned: Footprint,
    ) -> InstanceResult<()> {
        let mut after = self.footprints(user_id, changed).await?;
        after.push(planned);
        Ok(self.quotas.check_instances(user_id, &after).await?)
    }
}
