//! The caller's own instance of a function, on the function page: deploy it, see its state,
//! replicas and addresses, pause, resume, scale or delete it, invoke it through the gateway,
//! chart its usage and watch its logs live.

use super::addresses::InstanceAddresses;
use super::instance_actions::{ConfirmedDelete, InstanceActions, PauseOrResume};
use super::session::Session;
use super::usage_charts::InstanceCharts;
use super::{ErrorNotice, FieldMessage, action_error, in_browser, refresh_when_changed, short_time};
use crate::api::functions::{DeployFunction, InvokeFunction, ScaleInstance, my_instance};
use crate::platform::model::Named;
use crate::platform::model::{InstanceInfo, InstanceState, LogEntry};
use leptos::prelude::*;
use std::time::Duration;

/// How often the panel asks for the instance's state while the page is open.
const REFRESH: Duration = Duration::from_millis(1500);

/// The instance card and, once deployed, its live logs. `owner` is the function's owner: an
/// instance of someone else's function stays on one version unless its user follows the owner.
#[component]
pub fn InstancePanel(function: String, owner: String) -> impl IntoView {
    let deploy = ServerAction::<DeployFunction>::new();
    let actions = InstanceActions::new();
    let scale = ServerAction::<ScaleInstance>::new();
    let errors = [
        action_error(deploy.value()),
        action_error(actions.pause.value()),
        action_error(actions.resume.value()),
        action_error(scale.value()),
        action_error(actions.delete.value()),
    ];

    let name = function.clone();
    let name_for_invoke = function.clone();
    let instance = Resource::new(
        move || {
            (
                deploy.version().get(),
                actions.pause.version().get(),
                actions.resume.version().get(),
                scale.version().get(),
                actions.delete.version().get(),
            )
        },
        move |_| my_instance(name.clone()),
    );
    // Shows state changes such as Deploying → Ready or a crash without a reload.
    let polled = function.clone();
    refresh_when_changed(instance, REFRESH, move || my_instance(polled.clone()));

    view! {
        <section class="card instance" aria-labelledby="instance-title" data-testid="instance">
            <h2 id="instance-title">"Your instance"</h2>
            {move || errors.iter().find_map(|e| e.get()).map(|error| view! { <ErrorNotice error/> })}
            <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
                {move || Suspend::new({
                    let function = function.clone();
                    let owner = owner.clone();
                    async move {
                        match instance.await {
                            Err(error) => view! { <ErrorNotice error/> }.into_any(),
                            Ok(None) => view! { <NotDeployed function owner=owner.clone() deploy/> }.into_any(),
                            Ok(Some(instance)) => view! { <InstanceView instance owner=owner.clone() deploy actions scale/> }.into_any(),
                        }
                    }
                })}
            </Transition>
        </section>
        // In a Transition, so the server waits for the instance before rendering the invoke form
        // and the browser, hydrating, finds what the server sent (read outside one, the server
        // could render it before the instance had loaded, and hydration failed). The id is
        // memoised so a poll that changes only the state rebuilds nothing here; a Transition,
        // unlike a Suspense, keeps these while the instance loads again. The charts and the live
        // logs are live views that need the browser anyway: they render there only, once the page
        // has hydrated, so their own loading cannot make the server's page and the browser's differ.
        <Transition fallback=|| ()>
            {
                let instance_id = Memo::new(move |_| instance.get().and_then(Result::ok).flatten().map(|i| i.id));
                let live = in_browser();
                view! {
                    {move || instance_id.get().map(|_| view! { <InvokePanel function=name_for_invoke.clone()/> })}
                    {move || instance_id.get().filter(|_| live.get()).map(|id| view! { <InstanceCharts id/> })}
                    {move || instance_id.get().filter(|_| live.get()).map(|id| view! { <LiveLogs id/> })}
                }
            }
        </Transition>
    }
}

/// Sends one request to the instance through the gateway and shows the answer.
#[component]
fn InvokePanel(function: String) -> impl IntoView {
    let invoke = ServerAction::<InvokeFunction>::new();
    let error = action_error(invoke.value());
    let gateway_path = function.clone();
    view! {
        <section class="card" aria-labelledby="invoke-title">
            <h2 id="invoke-title">"Invoke"</h2>
            <p class="hint">"Goes through the gateway, as " <code>{move || format!("/fn/<you>/{gateway_path}/…")}</code> " does."</p>
            <ActionForm action=invoke attr:class="invoke-form">
                <input type="hidden" name="function" value=function/>
                <div class="inline-form">
                    <label for="invoke-method">"Method"</label>
                    <select id="invoke-method" name="method">
                        {["POST", "GET", "PUT", "DELETE", "PATCH"].into_iter().map(|m| view! { <option value=m>{m}</option> }).collect_view()}
                    </select>
                    <label for="invoke-path">"Path"</label>
                    <input id="invoke-path" name="path" value="/" class="path"/>
                </div>
                <label for="invoke-headers">"Headers"</label>
                <textarea id="invoke-headers" name="headers" rows="2" class="code" placeholder="X-Request-Id: 42" aria-describedby="invoke-headers-hint"></textarea>
                <p class="hint" id="invoke-headers-hint">"One " <code>"Name: value"</code> " per line. Without a Content-Type the body goes as text/plain."</p>
                <FieldMessage error field="headers"/>
                <label for="invoke-body">"Body"</label>
                <textarea id="invoke-body" name="body" rows="3" class="code"></textarea>
                <FieldMessage error field="method"/>
                <FieldMessage error field="path"/>
                <button type="submit" class="primary" disabled=move || invoke.pending().get()>"Send"</button>
            </ActionForm>
            {move || error.get().filter(|e| e.field.is_none()).map(|error| view! { <ErrorNotice error/> })}
            {move || invoke.value().get().and_then(Result::ok).map(|answer| view! {
                <p class="status-line">
                    <span class=if answer.status < 400 { "state state-ready" } else { "state state-failed" } data-testid="invoke-status">{answer.status}</span>
                    <span class="muted" data-testid="invoke-duration">{format!("{} ms", answer.elapsed_ms)}</span>
                </p>
                <details data-testid="invoke-headers">
                    <summary>"Headers"</summary>
                    <ul class="headers">
                        {answer.headers.iter().map(|(k, v)| view! { <li><code>{format!("{k}: {v}")}</code></li> }).collect_view()}
                    </ul>
                </details>
                <pre class="code" data-testid="invoke-body">{answer.body.clone()}</pre>
            })}
        </section>
    }
}

#[component]
fn NotDeployed(function: String, owner: String, deploy: ServerAction<DeployFunction>) -> impl IntoView {
    let session = expect_context::<Session>();
    let owner_name = owner.clone();
    let theirs =
        Memo::new(move |_| session.user.get().and_then(Result::ok).flatten().is_some_and(|me| me.name != owner_name));
    view! {
        <p>"Not deployed. Deploying starts your own copy of this function, with its own replicas and node port."</p>
        <ActionForm action=deploy attr:class="inline">
            <input type="hidden" name="name" value=function/>
            {move || theirs.get().then(|| view! {
                <label class="checkbox">
                    <input type="checkbox" name="follow_updates" value="true" data-testid="follow-updates"/>
                    {format!(" Follow {owner}'s updates")}
                </label>
            })}
            <button type="submit" class="primary" disabled=move || deploy.pending().get()>"Deploy"</button>
        </ActionForm>
        {move || theirs.get().then(|| view! {
            <p class="hint">"Following runs the owner's future versions with your instance's data and secrets. Otherwise your instance stays on the version you deploy now, and only you change that."</p>
        })}
    }
}

/// Which version the instance runs and why, with the button that changes it (instances of
/// someone else's function only).
#[component]
fn VersionPolicy(instance: InstanceInfo, owner: String, deploy: ServerAction<DeployFunction>) -> impl IntoView {
    let (text, follow, button) = match instance.pinned {
        true if instance.latest_version != instance.version => (
            format!("stays on v{} ({owner} is on v{})", instance.version, instance.latest_version),
            "true",
            format!("Follow {owner}'s updates"),
        ),
        true => (format!("stays on v{}", instance.version), "true", format!("Follow {owner}'s updates")),
        false => (format!("follows {owner}'s updates"), "false", format!("Stay on v{}", instance.version)),
    };
    view! {
        <span data-testid="version-policy">{text}</span>
        <ActionForm action=deploy attr:class="inline">
            <input type="hidden" name="name" value=instance.function.clone()/>
            <input type="hidden" name="follow_updates" value=follow/>
            <button type="submit" data-testid="version-policy-change">{button}</button>
        </ActionForm>
    }
}

#[component]
fn InstanceView(
    instance: InstanceInfo,
    owner: String,
    deploy: ServerAction<DeployFunction>,
    actions: InstanceActions,
    scale: ServerAction<ScaleInstance>,
) -> impl IntoView {
    let state = instance.state.as_str();
    let (toggle_id, scale_id, delete_id) = (instance.id.clone(), instance.id.clone(), instance.id.clone());
    let serving = match instance.serving_version {
        Some(serving) if serving != instance.version => format!("v{} (v{serving} still serving)", instance.version),
        _ => format!("v{}", instance.version),
    };
    let retry = matches!(instance.state, InstanceState::Failed);
    let coming_up = matches!(instance.state, InstanceState::Pending | InstanceState::Deploying | InstanceState::Failed);
    view! {
        <DeployProgress state=instance.state ready=instance.replicas.ready desired=instance.replicas.desired/>
        <p class="status-line">
            <span class=format!("state state-{}", state.to_lowercase()) data-testid="instance-state">{state}</span>
            " "
            {(!instance.message.is_empty()).then(|| view! { <span class="message" data-testid="instance-message">{instance.message.clone()}</span> })}
        </p>
        <dl class="facts">
            <dt>"Replicas"</dt>
            <dd data-testid="replicas">{format!("{} of {} ready", instance.replicas.ready, instance.replicas.desired)}</dd>
            <dt>"Version"</dt>
            <dd>
                {serving}
                {(instance.user != owner).then(|| view! { " · " <VersionPolicy instance=instance.clone() owner=owner.clone() deploy/> })}
            </dd>
            <dt>"Addresses"</dt>
            <dd><InstanceAddresses urls=instance.urls.clone()/></dd>
            {(!instance.limits.is_empty()).then(|| view! { <dt>"Limits"</dt><dd class="hint">{instance.limits.clone()}</dd> })}
            <dt>"Deployed"</dt>
            <dd>{short_time(&instance.created_at)}</dd>
        </dl>
        <div class="actions">
            <PauseOrResume id=toggle_id paused=instance.paused actions/>
            <ActionForm action=scale attr:class="inline">
                <input type="hidden" name="id" value=scale_id/>
                <label for="scale-replicas">"Replicas"</label>
                <input id="scale-replicas" name="replicas" type="number" min="0" max="20" inputmode="numeric" value=instance.replicas.desired.to_string() class="narrow"/>
                <button type="submit">"Scale"</button>
            </ActionForm>
            <span class="hint">"With a CPU or memory target the autoscaler may change this count at its next decision."</span>
            {retry.then(|| {
                let function = instance.function.clone();
                view! {
                    <ActionForm action=deploy attr:class="inline">
                        <input type="hidden" name="name" value=function/>
                        <button type="submit" class="primary">"Deploy again"</button>
                    </ActionForm>
                }
            })}
            <ConfirmedDelete id=delete_id action=actions.delete confirm="Yes, delete my instance"/>
        </div>
        {(!instance.replica_details.is_empty()).then(|| view! {
            <table class="replicas" data-testid="replica-table">
                <caption class="sr-only">"Replicas"</caption>
                <thead><tr><th scope="col">"Replica"</th><th scope="col">"State"</th><th scope="col">"Version"</th><th scope="col">"Restarts"</th></tr></thead>
                <tbody>
                    {instance.replica_details.iter().map(|r| view! {
                        <tr><td>{r.name.clone()}</td><td>{r.state.clone()}</td><td>"v" {r.version}</td><td>{r.restarts}</td></tr>
                    }).collect_view()}
                </tbody>
            </table>
        })}
        {(!instance.events.is_empty()).then(|| view! {
            <details class="events" open=coming_up>
                <summary>"Events (" {instance.events.len()} ")"</summary>
                <ul>
                    {instance.events.iter().map(|e| view! {
                        <li class=format!("event {}", e.kind.to_lowercase())>
                            <time>{e.at.format("%H:%M:%S").to_string()}</time> " " <strong>{e.reason.clone()}</strong> " " {e.message.clone()}
                        </li>
                    }).collect_view()}
                </ul>
            </details>
        })}
    }
}

/// Pending → Deploying → Ready as steps, the current one marked, while an instance comes up
/// (or failed to).
#[component]
fn DeployProgress(state: InstanceState, ready: u32, desired: u32) -> impl IntoView {
    let reached = match state {
        InstanceState::Pending => 0,
        InstanceState::Deploying | InstanceState::Failed => 1,
        _ => return None,
    };
    let steps = ["Pending", "Deploying", "Ready"]
        .into_iter()
        .enumerate()
        .map(|(index, step)| {
            let class = match index.cmp(&reached) {
                std::cmp::Ordering::Less => "done",
                std::cmp::Ordering::Equal if state == InstanceState::Failed => "failed",
                std::cmp::Ordering::Equal => "current",
                std::cmp::Ordering::Greater => "todo",
            };
            let label = if index == 2 { format!("Ready ({ready} of {desired} replicas)") } else { step.to_string() };
            view! { <li class=class aria-current=(class == "current").then_some("step")>{label}</li> }
        })
        .collect_view();
    Some(view! { <ol class="progress" data-testid="deploy-progress" aria-label="Deploy progress">{steps}</ol> })
}

/// The instance's logs, followed live over server-sent events while the page is open: follow
/// on or off, a text filter, auto-scroll that can be paused, and a download of what is shown.
#[component]
fn LiveLogs(id: String) -> impl IntoView {
    let lines = RwSignal::new(Vec::<(u64, LogEntry)>::new());
    let live = RwSignal::new(false);
    let follow = RwSignal::new(true);
    let auto_scroll = RwSignal::new(true);
    let filter = RwSignal::new(String::new());
    follow_logs(&id, follow, lines, live);
    let shown = Memo::new(move |_| {
        let needle = filter.get().to_lowercase();
        lines
            .get()
            .into_iter()
            .filter(|(_, line)| {
                needle.is_empty() || line.text.to_lowercase().contains(&needle) || line.replica.contains(&needle)
            })
            .collect::<Vec<_>>()
    });
    let download = move || {
        let text: String = shown
            .get()
            .iter()
            .map(|(_, l)| format!("{} {} {} {}\n", l.at.to_rfc3339(), l.replica, l.stream, l.text))
            .collect();
        format!("data:text/plain;charset=utf-8,{}", super::encode_uri_component(&text))
    };
    let area = NodeRef::<leptos::html::Div>::new();
    // Keeps the newest line in view unless the reader paused scrolling to read older ones.
    Effect::new(move |_| {
        shown.track();
        if auto_scroll.get()
            && let Some(area) = area.get()
        {
            area.set_scroll_top(area.scroll_height());
        }
    });
    view! {
        <section class="card" aria-labelledby="logs-title">
            <h2 id="logs-title">
                "Logs "
                <span class="muted" data-testid="logs-live">
                    {move || match (follow.get(), live.get()) { (false, _) => "(not following)", (true, true) => "(live)", (true, false) => "(connecting…)" }}
                </span>
            </h2>
            <div class="log-controls">
                <label><input type="checkbox" prop:checked=move || follow.get() on:change=move |e| follow.set(event_target_checked(&e))/> " Follow"</label>
                <label><input type="checkbox" prop:checked=move || auto_scroll.get() on:change=move |e| auto_scroll.set(event_target_checked(&e))/> " Auto-scroll"</label>
                <label for="logs-filter" class="sr-only">"Filter log lines"</label>
                <input id="logs-filter" type="search" placeholder="Filter lines" prop:value=move || filter.get() on:input=move |e| filter.set(event_target_value(&e))/>
                <span class="muted" data-testid="logs-count">{move || format!("{} of {} lines", shown.get().len(), lines.get().len())}</span>
                <a class="button" href=download download=format!("{id}-logs.txt") data-testid="logs-download">"Download"</a>
            </div>
            <div class="logs" data-testid="logs" role="log" aria-live="polite" tabindex="0" node_ref=area>
                <For each=move || shown.get() key=|(n, _)| *n let:((_, line))>
                    <div class=format!("line {}", line.stream)>
                        <span class="replica tag">{line.replica.clone()}</span>
                        " "
                        <span class="text">{line.text.clone()}</span>
                    </div>
                </For>
            </div>
        </section>
    }
}

/// While `follow` is on, keeps an EventSource open on the instance's log stream (each
/// connection starts with the backlog); turning it off or leaving the page closes it.
#[cfg(feature = "hydrate")]
fn follow_logs(id: &str, follow: RwSignal<bool>, lines: RwSignal<Vec<(u64, LogEntry)>>, live: RwSignal<bool>) {
    use send_wrapper::SendWrapper;
    use wasm_bindgen::JsCast;
    use wasm_bindgen::closure::Closure;
    /// Log lines the page keeps; older ones scroll away.
    const LOG_LINES_KEPT: usize = 500;

    let url = format!("/api/v1/instances/{id}/logs?follow=true");
    Effect::new(move |_| {
        if !follow.get() {
            live.set(false);
            return;
        }
        let Ok(source) = web_sys::EventSource::new(&url) else { return };
        let mut counter = 0u64;
        let on_message = Closure::<dyn FnMut(web_sys::MessageEvent)>::new(move |event: web_sys::MessageEvent| {
            let Some(data) = event.data().as_string() else { return };
            let Ok(line) = serde_json::from_str::<LogEntry>(&data) else { return };
            counter += 1;
            let number = counter;
            lines.update(|lines| {
                lines.push((number, line));
                if lines.len() > LOG_LINES_KEPT {
                    lines.drain(..lines.len() - LOG_LINES_KEPT);
                }
            });
        });
        // Every (re)connection starts with the whole backlog, so what was shown is replaced.
        let on_open = Closure::<dyn FnMut()>::new(move || {
            lines.set(Vec::new());
            live.set(true);
        });
        // The browser reconnects by itself after an error.
        let on_error = Closure::<dyn FnMut()>::new(move || live.set(false));
        source.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        source.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        source.set_onerror(Some(on_error.as_ref().unchecked_ref()));
        let kept = SendWrapper::new((source, on_message, on_open, on_error));
        on_cleanup(move || {
            let (source, ..) = &*kept;
            source.close();
        });
    });
}

#[cfg(not(feature = "hydrate"))]
fn follow_logs(_id: &str, _follow: RwSignal<bool>, _lines: RwSignal<Vec<(u64, LogEntry)>>, _live: RwSignal<bool>) {}
