//! Register a function, or edit one (which records a new immutable version).

use super::{ErrorNotice, FieldMessage, action_error};
use crate::api::ApiError;
use crate::api::functions::{FunctionForm, SaveFunction, get_function};
use crate::platform::model::Named;
use crate::platform::model::{InvokeAccess, Language, ServiceKind};
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::{use_navigate, use_params_map};

/// `/functions/new`.
#[component]
pub fn RegisterFunctionPage() -> impl IntoView {
    view! {
        <Title text="Register a function · kubefn"/>
        <h1>"Register a function"</h1>
        <FunctionFormView existing=String::new() initial=FunctionForm::blank()/>
    }
}

/// `/functions/:name/edit`.
#[component]
pub fn EditFunctionPage() -> impl IntoView {
    let params = use_params_map();
    let name = move || params.read().get("name").unwrap_or_default();
    let detail = Resource::new(name, get_function);
    view! {
        <Title text=move || format!("Edit {} · kubefn", name())/>
        <h1>"Edit " {name}</h1>
        <p class="hint">"Saving records a new version and makes it current; earlier versions stay available for rollback."</p>
        <Suspense fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match detail.await {
                    Err(error) => view! { <ErrorNotice error/> }.into_any(),
                    Ok(function) => {
                        let initial = FunctionForm::from_spec(&function.spec);
                        view! { <FunctionFormView existing=function.name initial/> }.into_any()
                    }
                }
            })}
        </Suspense>
    }
}

#[component]
fn FunctionFormView(existing: String, initial: FunctionForm) -> impl IntoView {
    let save = ServerAction::<SaveFunction>::new();
    let error = action_error(save.value());
    let runtime = RwSignal::new(Language::parse(&initial.runtime).unwrap_or_default());
    let navigate = use_navigate();
    Effect::new(move |_| {
        if let Some(Ok(function)) = save.value().get() {
            navigate(&format!("/functions/{}", function.name), Default::default());
        }
    });
    let editing = !existing.is_empty();
    let general_error = move || error.get().filter(|e: &ApiError| e.field.is_none());
    let summary = move || {
        error.get().filter(|e| e.field.is_some()).map(|e| {
            let count = e.errors.len().max(1);
            view! { <div class="alert error" role="alert">{format!("{count} field(s) need attention: ")} {e.error.clone()}</div> }
        })
    };
    view! {
        <ActionForm action=save attr:class="function-form card" attr:id="function-form">
            <input type="hidden" name="existing" value=existing/>
            {move || general_error().map(|error| view! { <ErrorNotice error/> })}
            {summary}
            <div class="grid">
                <div class="field">
                    <label for="f-name">"Name"</label>
                    <input id="f-name" name="form[name]" value=initial.name.clone() required readonly=editing
                        aria-describedby="f-name-hint" autocomplete="off" spellcheck="false"/>
                    <p class="hint" id="f-name-hint">"Lowercase letters, digits and '-', at most 40 characters, unique."</p>
                    <FieldMessage error field="name"/>
                </div>
                <div class="field">
                    <label for="f-runtime">"Runtime"</label>
                    <select id="f-runtime" name="form[runtime]"
                        on:change=move |ev| runtime.set(Language::parse(&event_target_value(&ev)).unwrap_or_default())>
                        {Language::ALL.iter().copied().map(|r| view! {
                            <option value=r.as_str() selected=r.as_str() == initial.runtime>{r.as_str()}</option>
                        }).collect_view()}
                    </select>
                    <FieldMessage error field="runtime"/>
                </div>
                <div class="field">
                    <label for="f-handler">"Handler"</label>
                    <input id="f-handler" name="form[handler]" value=initial.handler.clone() placeholder="detect" spellcheck="false"/>
                    <p class="hint">"Entry point, e.g. handle; empty to detect it."</p>
                    <FieldMessage error field="handler"/>
                </div>
                <div class="field">
                    <label for="f-visibility">"Visibility"</label>
                    <select id="f-visibility" name="form[visibility]">
                        <option value="private" selected=initial.visibility == "private">"private"</option>
                        <option value="public" selected=initial.visibility == "public">"public"</option>
                    </select>
                    <FieldMessage error field="visibility"/>
                </div>
            </div>
            <div class="field" class:hidden=move || runtime.get() != Language::Image>
                <label for="f-image">"Image"</label>
                <input id="f-image" name="form[image]" value=initial.image.clone() placeholder="registry.example.com/team/app:1.0" spellcheck="false"/>
                <FieldMessage error field="image"/>
                <label for="f-registry-secret">"Registry credentials (a secret's name, optional)"</label>
                <input id="f-registry-secret" name="form[registry_secret]" value=initial.registry_secret.clone() placeholder="regcred" spellcheck="false"/>
                <p class="muted">"For a private registry: a secret of yours holding a Docker config.json, as `docker login` writes it."</p>
                <FieldMessage error field="registry_secret"/>
            </div>
            <div class="field" class:hidden=move || runtime.get() == Language::Image>
                <label for="f-source">"Source"</label>
                <textarea id="f-source" name="form[source]" class="code" rows="14" spellcheck="false">{initial.source.clone()}</textarea>
                <FieldMessage error field="source"/>
            </div>
            <div class="field" class:hidden=move || runtime.get() == Language::Image>
                <label for="f-requirements">"Dependencies"</label>
                <textarea id="f-requirements" name="form[requirements]" class="code" rows="4" spellcheck="false"
                    placeholder="requirements.txt (Python) or package.json (Node)">{initial.requirements.clone()}</textarea>
                <FieldMessage error field="requirements"/>
            </div>
            <div class="field">
                <label for="f-env">"Environment"</label>
                <textarea id="f-env" name="form[env]" class="code" rows="3" spellcheck="false" placeholder="NAME=value, one per line">{initial.env.clone()}</textarea>
                <FieldMessage error field="env"/>
                {move || error.get().map(|e| e.errors.iter().filter(|f| f.field.starts_with("env.")).map(|f| view! {
                    <p class="field-error" role="alert">{f.message.clone()}</p>
                }).collect_view())}
            </div>
            <div class="field">
                <label for="f-secrets">"Secrets"</label>
                <textarea id="f-secrets" name="form[secrets]" class="code" rows="2" spellcheck="false"
                    placeholder="db-password, or db-password DB_PASSWORD for env too; one per line">{initial.secrets.clone()}</textarea>
                <p class="muted">"Each instance reads its own user's secrets of these names at /var/openfaas/secrets/NAME (set them on the Account page)."</p>
                <FieldMessage error field="secrets"/>
                {move || error.get().map(|e| e.errors.iter().filter(|f| f.field.starts_with("secrets[")).map(|f| view! {
                    <p class="field-error" role="alert">{f.message.clone()}</p>
                }).collect_view())}
            </div>
            <fieldset>
                <legend>"Resources per replica"</legend>
                <div class="grid">
                    <QuantityInput id="f-cpu" name="cpu" label="CPU request" value=initial.cpu.clone() error field="resources.cpu"/>
                    <QuantityInput id="f-cpu-limit" name="cpu_limit" label="CPU limit" value=initial.cpu_limit.clone() error field="resources.cpu_limit"/>
                    <QuantityInput id="f-memory" name="memory" label="Memory request" value=initial.memory.clone() error field="resources.memory"/>
                    <QuantityInput id="f-memory-limit" name="memory_limit" label="Memory limit" value=initial.memory_limit.clone() error field="resources.memory_limit"/>
                </div>
            </fieldset>
            <fieldset id="scaling">
                <legend>"Scaling and service"</legend>
                <div class="grid">
                    <QuantityInput id="f-min" name="min" label="Min replicas" value=initial.min.clone() error field="scaling.min"/>
                    <QuantityInput id="f-max" name="max" label="Max replicas" value=initial.max.clone() error field="scaling.max"/>
                    <QuantityInput id="f-target" name="target_cpu_percent" label="Target CPU %" value=initial.target_cpu_percent.clone() error field="scaling.target_cpu_percent"/>
                    <QuantityInput id="f-target-memory" name="target_memory_percent" label="Target memory %" value=initial.target_memory_percent.clone() error field="scaling.target_memory_percent"/>
                    <QuantityInput id="f-target-in-flight" name="target_requests_in_flight" label="Target requests in flight" value=initial.target_requests_in_flight.clone() error field="scaling.target_requests_in_flight"/>
                    <QuantityInput id="f-idle" name="scale_to_zero_after_s" label="Scale to zero after (s)" value=initial.scale_to_zero_after_s.clone() error field="scaling.scale_to_zero_after_s"/>
                    <QuantityInput id="f-timeout" name="timeout_s" label="Timeout (s)" value=initial.timeout_s.clone() error field="timeout_s"/>
                    <div class="field">
                        <label for="f-service">"Service type"</label>
                        <select id="f-service" name="form[service_type]">
                            {ServiceKind::ALL.iter().copied().filter(|k| *k != ServiceKind::ExternalName).map(|k| view! {
                                <option value=k.as_str() selected=k.as_str() == initial.service_type>{k.as_str()}</option>
                            }).collect_view()}
                        </select>
                        <FieldMessage error field="service.type"/>
                    </div>
                </div>
            </fieldset>
            <fieldset>
                <legend>"Invocation"</legend>
                <div class="grid">
                    <div class="field">
                        <label for="f-invoke-access">"Who may invoke"</label>
                        <select id="f-invoke-access" name="form[invoke_access]">
                            {InvokeAccess::ALL.iter().copied().map(|a| view! {
                                <option value=a.as_str() selected=a.as_str() == initial.invoke_access>{match a {
                                    InvokeAccess::Owner => "the instance's user",
                                    InvokeAccess::Token => "any kubefn user (session or API token)",
                                    InvokeAccess::Public => "anyone",
                                }}</option>
                            }).collect_view()}
                        </select>
                        <FieldMessage error field="invoke.access"/>
                    </div>
                    <QuantityInput id="f-max-body" name="max_body_bytes" label="Largest request body (bytes)" value=initial.max_body_bytes.clone() error field="invoke.max_body_bytes"/>
                    <QuantityInput id="f-max-in-flight" name="max_in_flight_per_replica" label="Requests at once per replica (0: no limit)" value=initial.max_in_flight_per_replica.clone() error field="invoke.max_in_flight_per_replica"/>
                </div>
            </fieldset>
            <div class="form-actions">
                <button type="submit" class="primary" disabled=move || save.pending().get()>
                    {if editing { "Save new version" } else { "Register" }}
                </button>
                {move || save.pending().get().then(|| view! { <span class="muted">"Saving…"</span> })}
            </div>
        </ActionForm>
    }
}

#[component]
fn QuantityInput(
    id: &'static str,
    name: &'static str,
    label: &'static str,
    value: String,
    error: Signal<Option<ApiError>>,
    field: &'static str,
) -> impl IntoView {
    view! {
        <div class="field">
            <label for=id>{label}</label>
            <input id=id name=format!("form[{name}]") value=value spellcheck="false"/>
            <FieldMessage error field=field/>
        </div>
    }
}
