//! The caller's own instance of a function, on the function page: deploy it, see its state,
//! replicas and addresses, pause, resume, scale or delete it, invoke it through the gateway
//! and watch its logs live.

use super::{action_error, short_time, ErrorNotice, FieldMessage};
use crate::api::functions::{my_instance, DeleteInstance, DeployFunction, InvokeFunction, PauseInstance, ResumeInstance, ScaleInstance};
use crate::platform::model::{InstanceInfo, InstanceState, LogEntry};
use leptos::prelude::*;
use std::time::Duration;

/// How often the panel asks for the instance's state while the page is open.
const REFRESH: Duration = Duration::from_millis(1500);

/// The instance card and, once deployed, its live logs.
#[component]
pub fn InstancePanel(function: String) -> impl IntoView {
    let deploy = ServerAction::<DeployFunction>::new();
    let pause = ServerAction::<PauseInstance>::new();
    let resume = ServerAction::<ResumeInstance>::new();
    let scale = ServerAction::<ScaleInstance>::new();
    let delete = ServerAction::<DeleteInstance>::new();
    let errors = [action_error(deploy.value()), action_error(pause.value()), action_error(resume.value()), action_error(scale.value()), action_error(delete.value())];

    // Polling (in the browser only: effects do not run on the server) shows state changes
    // such as Deploying → Ready or a crash without a reload.
    let tick = RwSignal::new(0u64);
    Effect::new(move |_| {
        if let Ok(handle) = set_interval_with_handle(move || tick.update(|t| *t += 1), REFRESH) {
            on_cleanup(move || handle.clear());
        }
    });
    let name = function.clone();
    let name_for_invoke = function.clone();
    let instance = Resource::new(
        move || {
            (
                tick.get(),
                deploy.version().get(),
                pause.version().get(),
                resume.version().get(),
                scale.version().get(),
                delete.version().get(),
            )
        },
        move |_| my_instance(name.clone()),
    );
    let instance_id = Memo::new(move |_| instance.get().and_then(Result::ok).flatten().map(|i| i.id));

    view! {
        <section class="card instance" aria-labelledby="instance-title" data-testid="instance">
            <h2 id="instance-title">"Your instance"</h2>
            {move || errors.iter().find_map(|e| e.get()).map(|error| view! { <ErrorNotice error/> })}
            <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
                {move || Suspend::new({
                    let function = function.clone();
                    async move {
                        match instance.await {
                            Err(error) => view! { <ErrorNotice error/> }.into_any(),
                            Ok(None) => view! { <NotDeployed function deploy/> }.into_any(),
                            Ok(Some(instance)) => view! { <InstanceView instance deploy pause resume scale delete/> }.into_any(),
                        }
                    }
                })}
            </Transition>
        </section>
        {move || instance_id.get().map(|_| view! { <InvokePanel function=name_for_invoke.clone()/> })}
        {move || instance_id.get().map(|id| view! { <LiveLogs id/> })}
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
                    <span class="muted">{format!("{} ms", answer.elapsed_ms)}</span>
                </p>
                <details>
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
fn NotDeployed(function: String, deploy: ServerAction<DeployFunction>) -> impl IntoView {
    view! {
        <p>"Not deployed. Deploying starts your own copy of this function, with its own replicas and node port."</p>
        <ActionForm action=deploy attr:class="inline">
            <input type="hidden" name="name" value=function/>
            <button type="submit" class="primary" disabled=move || deploy.pending().get()>"Deploy"</button>
        </ActionForm>
    }
}

#[component]
fn InstanceView(
    instance: InstanceInfo,
    deploy: ServerAction<DeployFunction>,
    pause: ServerAction<PauseInstance>,
    resume: ServerAction<ResumeInstance>,
    scale: ServerAction<ScaleInstance>,
    delete: ServerAction<DeleteInstance>,
) -> impl IntoView {
    let confirming = RwSignal::new(false);
    let state = instance.state.as_str();
    let (toggle_id, scale_id, delete_id) = (instance.id.clone(), instance.id.clone(), instance.id.clone());
    let serving = match instance.serving_version {
        Some(serving) if serving != instance.version => format!("v{} (v{serving} still serving)", instance.version),
        _ => format!("v{}", instance.version),
    };
    let retry = matches!(instance.state, InstanceState::Failed);
    view! {
        <p class="status-line">
            <span class=format!("state state-{}", state.to_lowercase()) data-testid="instance-state">{state}</span>
            " "
            {(!instance.message.is_empty()).then(|| view! { <span class="message" data-testid="instance-message">{instance.message.clone()}</span> })}
        </p>
        <dl class="facts">
            <dt>"Replicas"</dt>
            <dd data-testid="replicas">{format!("{} of {} ready", instance.replicas.ready, instance.replicas.desired)}</dd>
            <dt>"Version"</dt>
            <dd>{serving}</dd>
            <dt>"Node port"</dt>
            <dd>{match instance.urls.node_port.clone() {
                Some(url) => view! { <a href=url.clone() data-testid="node-port">{url.clone()}</a> }.into_any(),
                None => view! { <span class="muted">"none yet"</span> }.into_any(),
            }}</dd>
            {(!instance.limits.is_empty()).then(|| view! { <dt>"Limits"</dt><dd class="hint">{instance.limits.clone()}</dd> })}
            <dt>"Deployed"</dt>
            <dd>{short_time(&instance.created_at)}</dd>
        </dl>
        <div class="actions">
            {if instance.paused {
                let id = toggle_id;
                view! {
                    <ActionForm action=resume attr:class="inline">
                        <input type="hidden" name="id" value=id/>
                        <button type="submit" class="primary">"Resume"</button>
                    </ActionForm>
                }.into_any()
            } else {
                let id = toggle_id;
                view! {
                    <ActionForm action=pause attr:class="inline">
                        <input type="hidden" name="id" value=id/>
                        <button type="submit">"Pause"</button>
                    </ActionForm>
                }.into_any()
            }}
            <ActionForm action=scale attr:class="inline">
                <input type="hidden" name="id" value=scale_id/>
                <label for="scale-replicas">"Replicas"</label>
                <input id="scale-replicas" name="replicas" type="number" min="0" max="20" inputmode="numeric" value=instance.replicas.desired.to_string() class="narrow"/>
                <button type="submit">"Scale"</button>
            </ActionForm>
            {retry.then(|| {
                let function = instance.function.clone();
                view! {
                    <ActionForm action=deploy attr:class="inline">
                        <input type="hidden" name="name" value=function/>
                        <button type="submit" class="primary">"Deploy again"</button>
                    </ActionForm>
                }
            })}
            <Show
                when=move || confirming.get()
                fallback=move || view! { <button type="button" class="danger" on:click=move |_| confirming.set(true)>"Delete…"</button> }
            >
                {
                    let id = delete_id.clone();
                    view! {
                        <ActionForm action=delete attr:class="inline">
                            <input type="hidden" name="id" value=id/>
                            <button type="submit" class="danger">"Yes, delete my instance"</button>
                            <button type="button" on:click=move |_| confirming.set(false)>"Cancel"</button>
                        </ActionForm>
                    }
                }
            </Show>
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
            <details class="events">
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

/// The instance's logs, followed live over server-sent events while the page is open.
#[component]
fn LiveLogs(id: String) -> impl IntoView {
    let lines = RwSignal::new(Vec::<(u64, LogEntry)>::new());
    let live = RwSignal::new(false);
    follow_logs(&id, lines, live);
    view! {
        <section class="card" aria-labelledby="logs-title">
            <h2 id="logs-title">
                "Logs "
                <span class="muted" data-testid="logs-live">{move || if live.get() { "(live)" } else { "(connecting…)" }}</span>
            </h2>
            <div class="logs" data-testid="logs" role="log" aria-live="polite" tabindex="0">
                <For each=move || lines.get() key=|(n, _)| *n let:((_, line))>
                    <div class=format!("line {}", line.stream)>
                        <span class="replica">{line.replica.clone()}</span>
                        " "
                        <span class="text">{line.text.clone()}</span>
                    </div>
                </For>
            </div>
        </section>
    }
}

/// Opens an EventSource on the instance's log stream; closed when the component goes away.
#[cfg(feature = "hydrate")]
fn follow_logs(id: &str, lines: RwSignal<Vec<(u64, LogEntry)>>, live: RwSignal<bool>) {
    use send_wrapper::SendWrapper;
    use wasm_bindgen::closure::Closure;
    use wasm_bindgen::JsCast;
    /// Log lines the page keeps; older ones scroll away.
    const LOG_LINES_KEPT: usize = 500;

    let Ok(source) = web_sys::EventSource::new(&format!("/api/v1/instances/{id}/logs?follow=true")) else { return };
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
}

#[cfg(not(feature = "hydrate"))]
fn follow_logs(_id: &str, _lines: RwSignal<Vec<(u64, LogEntry)>>, _live: RwSignal<bool>) {}
