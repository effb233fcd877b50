//! What the API reads of instances: usage series and reports, the admin overview, and logs.

use super::*;
use crate::platform::model::Named;

impl Instances {
    /// The instance's usage time series since `since`.
    pub async fn usage(&self, caller: &Principal, id: &str, since: DateTime<Utc>) -> InstanceResult<Vec<UsageSample>> {
        let instance = self.owned(caller, id).await?;
        Ok(self.store.usage(&instance.id, since).await?)
    }

    /// The instance's usage since `since` with the scaling events in that window, for its charts.
    pub async fn usage_report(
        &self,
        caller: &Principal,
        id: &str,
        since: DateTime<Utc>,
    ) -> InstanceResult<UsageReport> {
        let instance = self.owned(caller, id).await?;
        let samples = self.store.usage(&instance.id, since).await?;
        let events =
            self.store.events_with_reasons(Some(&instance.id), &SCALING_REASONS, since, SCALING_EVENTS_SHOWN).await?;
        Ok(UsageReport {
            since,
            until: Utc::now(),
            samples,
            scaling_events: events.into_iter().map(|(_, event)| event).collect(),
        })
    }

    /// Everyone's instances and usage since `since`, for the admin dashboard; admins only.
    pub async fn overview(&self, caller: &Principal, since: DateTime<Utc>) -> InstanceResult<AdminOverview> {
        if !caller.is_admin() {
            return Err(InstanceError::AdminOnly { what: "everyone's instances and usage" });
        }
        let until = Utc::now();
        let database_ok = self.store.ping().await.is_ok();
        let instances = self.list(caller).await?;
        let samples = self.store.usage_of_all(since).await?;
        let users = self.store.users().await?;
        let samples_of = |instance: &InstanceInfo| samples.get(&instance.id).map_or(&[][..], Vec::as_slice);
        let usage_where = |keep: &dyn Fn(&InstanceInfo) -> bool| {
            usage_report::totals(instances.iter().filter(|i| keep(i)).map(|i| (i, samples_of(i))))
        };

        let users = users
            .iter()
            .map(|user| NamedUsage { name: user.name.clone(), totals: usage_where(&|i| i.user == user.name) })
            .collect();
        let mut function_names: Vec<&str> = instances.iter().map(|i| i.function.as_str()).collect();
        function_names.sort_unstable();
        function_names.dedup();
        let mut top_functions: Vec<NamedUsage> = function_names
            .iter()
            .map(|name| NamedUsage { name: name.to_string(), totals: usage_where(&|i| i.function == *name) })
            .collect();
        top_functions.sort_by(|a, b| b.totals.invocations.cmp(&a.totals.invocations).then_with(|| a.name.cmp(&b.name)));
        top_functions.truncate(TOP_FUNCTIONS_SHOWN);

        let by_id: HashMap<&str, &InstanceInfo> = instances.iter().map(|i| (i.id.as_str(), i)).collect();
        let scaling_events = self
            .store
            .events_with_reasons(None, &SCALING_REASONS, since, SCALING_EVENTS_SHOWN)
            .await?
            .into_iter()
            .filter_map(|(id, event)| {
                by_id.get(id.as_str()).map(|i| InstanceEvent {
                    user: i.user.clone(),
                    function: i.function.clone(),
                    event,
                })
            })
            .collect();
        let mut instances_by_state = std::collections::BTreeMap::new();
        for instance in &instances {
            *instances_by_state.entry(instance.state.as_str().to_string()).or_insert(0) += 1;
        }
        let running: HashSet<String> = self.runtime.instance_ids().into_iter().collect();
        let instances_unreported =
            u32::try_from(instances.iter().filter(|i| !running.contains(&i.id)).count()).unwrap_or(u32::MAX);
        let all: Vec<&[UsageSample]> = instances.iter().map(samples_of).collect();
        Ok(AdminOverview {
            since,
            until,
            health: PlatformHealth {
                runtime: self.runtime.name().to_string(),
                database_ok,
                instances_by_state,
                instances_unreported,
                checks: self.runtime.health(),
            },
            totals: usage_where(&|_| true),
            series: usage_report::summed_series(&all, since, until, SERIES_POINTS),
            users,
            top_functions,
            scaling_events,
            instances,
        })
    }

    /// The instance's log lines (from `since` on, when given); with `follow`, new ones as they come.
    pub async fn logs(
        &self,
        caller: &Principal,
        id: &str,
        follow: bool,
        since: Option<DateTime<Utc>>,
    ) -> InstanceResult<LogStream> {
        let instance = self.owned(caller, id).await?;
        let slot = match follow {
            true => Some(
                FollowSlot::take(&self.follows, caller.id)
                    .ok_or(InstanceError::TooManyFollows { limit: MAX_FOLLOWS_PER_USER })?,
            ),
            false => None,
        };
        match self.runtime.logs(&instance.id, follow, since) {
            // The slot is freed when the stream is dropped (the client went away).
            Ok(stream) => Ok(Box::pin(futures::StreamExt::map(stream, move |line| {
                let _held = &slot;
                line
            }))),
            // Recorded but not (yet) running: nothing was logged.
            Err(RuntimeError::NotFound { .. }) => Ok(Box::pin(futures::stream::empty())),
            Err(error) => Err(InstanceError::Runtime(error)),
        }
    }
}
