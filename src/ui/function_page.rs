//! One function: the caller's instance of it, its current spec, its versions (with rollback)
//! and unregistering.

use super::instance_panel::InstancePanel;
use super::triggers::TriggersCard;
use super::{Confirm, ErrorNotice, action_error, short_time};
use crate::api::functions::{RollbackFunction, UnregisterFunction, get_function};
use crate::platform::model::Named;
use crate::platform::model::{FunctionDetail, Language};
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::components::A;
use leptos_router::hooks::{use_navigate, use_params_map};

/// The function page, `/functions/:name`.
#[component]
pub fn FunctionPage() -> impl IntoView {
    let params = use_params_map();
    let name = move || params.read().get("name").unwrap_or_default();
    let rollback = ServerAction::<RollbackFunction>::new();
    let unregister = ServerAction::<UnregisterFunction>::new();
    let detail = Resource::new(move || (name(), rollback.version().get()), |(name, _)| get_function(name));

    let navigate = use_navigate();
    Effect::new(move |_| {
        if let Some(Ok(())) = unregister.value().get() {
            navigate("/", Default::default());
        }
    });

    view! {
        <Title text=move || format!("{} · kubefn", name())/>
        <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match detail.await {
                    Err(error) => view! { <ErrorNotice error/> }.into_any(),
                    Ok(function) => view! { <FunctionView function rollback unregister/> }.into_any(),
                }
            })}
        </Transition>
    }
}

#[component]
fn FunctionView(
    function: FunctionDetail,
    rollback: ServerAction<RollbackFunction>,
    unregister: ServerAction<UnregisterFunction>,
) -> impl IntoView {
    let rollback_error = action_error(rollback.value());
    let unregister_error = action_error(unregister.value());
    let spec = function.spec.clone();
    let name = function.name.clone();
    let current = function.version;
    let confirm_label = format!("Yes, unregister {}", function.name);
    let unregister_name = function.name.clone();
    view! {
        <div class="page-head">
            <h1>{function.name.clone()} <span class="tag">{spec.runtime.as_str()}</span></h1>
            <div class="actions">
                <A href=format!("/functions/{}/edit", function.name) attr:class="button">"Edit (new version)"</A>
            </div>
        </div>
        <p class="muted">
            "Owned by " {function.owner.clone()} " · " {function.visibility.as_str()} " · version "
            <strong data-testid="current-version">{current}</strong> " of " {function.latest_version}
            " · updated " {short_time(&function.updated_at)}
        </p>
        <InstancePanel function=function.name.clone() owner=function.owner.clone()/>
        {move || rollback_error.get().map(|error| view! { <ErrorNotice error/> })}
        <div class="two-col">
            <section class="card" aria-labelledby="spec-title">
                <h2 id="spec-title">"Current version"</h2>
                <dl class="facts">
                    <dt>"Handler"</dt><dd>{spec.handler.clone().unwrap_or_else(|| "detected at start".into())}</dd>
                    {(spec.runtime == Language::Image).then(|| view! { <dt>"Image"</dt><dd><code>{spec.image.clone().unwrap_or_default()}</code></dd> })}
                    <dt>"Resources"</dt>
                    <dd>{format!("CPU {} (limit {}), memory {} (limit {})", spec.resources.cpu, spec.resources.cpu_limit, spec.resources.memory, spec.resources.memory_limit)}</dd>
                    <dt>"Scaling"</dt>
                    <dd data-testid="scaling">
                        {format!(
                            "{}–{} replicas{}{}{}{}",
                            spec.scaling.min,
                            spec.scaling.max,
                            spec.scaling.target_cpu_percent.map(|p| format!(", target CPU {p}%")).unwrap_or_default(),
                            spec.scaling.target_memory_percent.map(|p| format!(", target memory {p}%")).unwrap_or_default(),
                            spec.scaling.target_requests_in_flight.map(|n| format!(", target {n} requests in flight")).unwrap_or_default(),
                            spec.scaling.scale_to_zero_after_s.map(|s| format!(", to zero after {s} s idle")).unwrap_or_default(),
                        )}
                        " "
                        <A href=format!("/functions/{}/edit#scaling", function.name)>"Change scaling…"</A>
                    </dd>
                    <dt>"Service"</dt><dd>{spec.service.kind.as_str()}</dd>
                    <dt>"Environment"</dt>
                    <dd>{if spec.env.is_empty() { "none".to_string() } else { spec.env.keys().cloned().collect::<Vec<_>>().join(", ") }}</dd>
                </dl>
                {(!spec.source.is_empty()).then(|| view! {
                    <h3>"Source"</h3>
                    <pre class="code" data-testid="source"><code>{spec.source.clone()}</code></pre>
                })}
                {(!spec.requirements.is_empty()).then(|| view! {
                    <h3>"Dependencies"</h3>
                    <pre class="code"><code>{spec.requirements.clone()}</code></pre>
                })}
            </section>
            <section class="card" aria-labelledby="versions-title">
                <h2 id="versions-title">"Versions"</h2>
                <table class="versions" data-testid="versions">
                    <thead><tr><th scope="col">"#"</th><th scope="col">"By"</th><th scope="col">"When"</th><th scope="col"><span class="sr-only">"Action"</span></th></tr></thead>
                    <tbody>
                        {function.versions.iter().map(|v| {
                            let number = v.number;
                            let name = name.clone();
                            view! {
                                <tr data-version=number>
                                    <td>"v" {number}</td>
                                    <td>{v.created_by.clone()}</td>
                                    <td>{short_time(&v.created_at)}</td>
                                    <td>
                                        {if number == current {
                                            view! { <span class="badge">"current"</span> }.into_any()
                                        } else {
                                            view! {
                                                <ActionForm action=rollback attr:class="inline">
                                                    <input type="hidden" name="name" value=name/>
                                                    <input type="hidden" name="version" value=number/>
                                                    <button type="submit">{format!("Make v{number} current")}</button>
                                                </ActionForm>
                                            }.into_any()
                                        }}
                                    </td>
                                </tr>
                            }
                        }).collect_view()}
                    </tbody>
                </table>
            </section>
        </div>
        <TriggersCard function=function.name.clone()/>
        <section class="card danger-zone" aria-labelledby="danger-title">
            <h2 id="danger-title">"Unregister"</h2>
            <p>"Removes the function and all its versions. Refused while instances of it exist."</p>
            {move || unregister_error.get().map(|error| view! { <ErrorNotice error/> })}
            <Confirm ask="Unregister…">
                {
                    let (name, label) = (unregister_name.clone(), confirm_label.clone());
                    view! {
                        <ActionForm action=unregister attr:class="inline">
                            <input type="hidden" name="name" value=name/>
                            <button type="submit" class="danger">{label}</button>
                        </ActionForm>
                    }
                }
            </Confirm>
        </section>
    }
}
