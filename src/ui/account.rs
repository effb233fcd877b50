//! The account page: the user's quota, secrets and API tokens for the REST API.

use super::{ErrorNotice, FieldMessage, action_error, short_time};
use crate::api::functions::{CreateToken, DeleteSecret, PutSecret, RevokeToken, list_secrets, list_tokens, my_quota};
use crate::platform::model::QuotaReport;
use leptos::prelude::*;
use leptos_meta::Title;

/// `/account`: the quota, secrets, and create, list and revoke API tokens.
#[component]
pub fn AccountPage() -> impl IntoView {
    let create = ServerAction::<CreateToken>::new();
    let revoke = ServerAction::<RevokeToken>::new();
    let tokens = Resource::new(move || (create.version().get(), revoke.version().get()), |_| list_tokens());
    let create_error = action_error(create.value());
    view! {
        <Title text="Account · kubefn"/>
        <h1>"Account"</h1>
        <QuotaCard/>
        <SecretsCard/>
        <section class="card" aria-labelledby="tokens-title">
            <h2 id="tokens-title">"API tokens"</h2>
            <p>"Use a token with the REST API: " <code>"curl -H 'Authorization: Bearer kfn_…' http://127.0.0.1:3000/api/v1/functions"</code></p>
            <p>"Every operation is described in the " <a href="/api/docs/" rel="external">"API reference"</a> " (OpenAPI: "
                <a href="/api/v1/openapi.json" rel="external">"/api/v1/openapi.json"</a> "). From a terminal, "
                <code>"kubefn login --url http://127.0.0.1:3000 --user NAME"</code> " creates a token for the "
                <code>"kubefn fn …"</code> " commands."</p>
            <ActionForm action=create attr:class="inline-form">
                <label for="token-name">"Token name"</label>
                <input id="token-name" name="name" placeholder="laptop" required/>
                <button type="submit" class="primary">"Create token"</button>
            </ActionForm>
            <FieldMessage error=create_error field="name"/>
            {move || create.value().get().and_then(Result::ok).map(|token| view! {
                <div class="alert success" role="status">
                    "New token " <strong>{token.info.name}</strong> " — copy it now, it is shown only once: "
                    <code data-testid="new-token">{token.token}</code>
                </div>
            })}
            <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    match tokens.await {
                        Err(error) => view! { <ErrorNotice error/> }.into_any(),
                        Ok(list) if list.is_empty() => view! { <p class="muted">"No tokens yet."</p> }.into_any(),
                        Ok(list) => view! {
                            <table>
                                <thead><tr><th scope="col">"Name"</th><th scope="col">"Created"</th><th scope="col">"Last used"</th><th scope="col"><span class="sr-only">"Action"</span></th></tr></thead>
                                <tbody>
                                    {list.into_iter().map(|t| view! {
                                        <tr>
                                            <td>{t.name.clone()}</td>
                                            <td>{short_time(&t.created_at)}</td>
                                            <td>{t.last_used_at.as_ref().map_or_else(|| "never".to_string(), short_time)}</td>
                                            <td>
                                                <ActionForm action=revoke attr:class="inline">
                                                    <input type="hidden" name="id" value=t.id/>
                                                    <button type="submit" class="danger">"Revoke"</button>
                                                </ActionForm>
                                            </td>
                                        </tr>
                                    }).collect_view()}
                                </tbody>
                            </table>
                        }.into_any(),
                    }
                })}
            </Transition>
        </section>
    }
}

/// The user's secrets: set (create or replace) by name, listed by name, deleted; values are
/// never shown back.
#[component]
fn SecretsCard() -> impl IntoView {
    let put = ServerAction::<PutSecret>::new();
    let delete = ServerAction::<DeleteSecret>::new();
    let secrets = Resource::new(move || (put.version().get(), delete.version().get()), |_| list_secrets());
    let put_error = action_error(put.value());
    let delete_error = action_error(delete.value());
    view! {
        <section class="card" aria-labelledby="secrets-title">
            <h2 id="secrets-title">"Secrets"</h2>
            <p>"Your instances read the secrets their function names as files "
                <code>"/var/openfaas/secrets/NAME"</code> " (and as variables where the function asks). Values are encrypted at rest and never shown again; setting one again replaces it and restarts the instances that read it."</p>
            <ActionForm action=put>
                <label for="secret-name">"Name"</label>
                <input id="secret-name" name="name" placeholder="db-password" required spellcheck="false"/>
                <FieldMessage error=put_error field="name"/>
                <label for="secret-value">"Value"</label>
                <textarea id="secret-value" name="value" rows="2" required spellcheck="false" autocomplete="off"></textarea>
                <FieldMessage error=put_error field="value"/>
                <button type="submit" class="primary">"Save secret"</button>
            </ActionForm>
            {move || put.value().get().and_then(Result::ok).map(|()| view! {
                <div class="alert success" role="status">"Secret saved."</div>
            })}
            {move || delete_error.get().map(|error| view! { <ErrorNotice error/> })}
            <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    match secrets.await {
                        Err(error) => view! { <ErrorNotice error/> }.into_any(),
                        Ok(list) if list.is_empty() => view! { <p class="muted">"No secrets yet."</p> }.into_any(),
                        Ok(list) => view! {
                            <table data-testid="secrets">
                                <thead><tr><th scope="col">"Name"</th><th scope="col">"Updated"</th><th scope="col"><span class="sr-only">"Action"</span></th></tr></thead>
                                <tbody>
                                    {list.into_iter().map(|s| view! {
                                        <tr>
                                            <td><code>{s.name.clone()}</code></td>
                                            <td>{short_time(&s.updated_at)}</td>
                                            <td>
                                                <ActionForm action=delete attr:class="inline">
                                                    <input type="hidden" name="name" value=s.name.clone()/>
                                                    <button type="submit" class="danger">"Delete"</button>
                                                </ActionForm>
                                            </td>
                                        </tr>
                                    }).collect_view()}
                                </tbody>
                            </table>
                        }.into_any(),
                    }
                })}
            </Transition>
        </section>
    }
}

/// What the user may have and what they have, limit by limit.
#[component]
fn QuotaCard() -> impl IntoView {
    let report = Resource::new(|| (), |_| my_quota());
    view! {
        <section class="card" aria-labelledby="quota-title">
            <h2 id="quota-title">"Quota"</h2>
            <p class="hint">"Set by an admin. Instances count at their most: every replica their autoscaler may start, at the CPU and memory limits."</p>
            <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    match report.await {
                        Err(error) => view! { <ErrorNotice error/> }.into_any(),
                        Ok(report) => view! { <QuotaTable report/> }.into_any(),
                    }
                })}
            </Transition>
        </section>
    }
}

/// One user's quota, limit by limit: used and allowed.
#[component]
pub fn QuotaTable(report: QuotaReport) -> impl IntoView {
    let (used, quota) = (report.used, report.quota);
    let gib = |bytes: u64| format!("{:.1} GiB", bytes as f64 / f64::from(1u32 << 30));
    let cores = |millis: u64| format!("{} cores", millis as f64 / 1000.0);
    let rows = [
        ("Functions", used.functions.to_string(), quota.functions.to_string()),
        ("Versions", used.versions.to_string(), quota.versions.to_string()),
        ("Instances", used.instances.to_string(), quota.instances.to_string()),
        ("Replicas", used.replicas.to_string(), quota.replicas.to_string()),
        ("CPU", cores(used.cpu_millicores), cores(quota.cpu_millicores)),
        ("Memory", gib(used.memory_bytes), gib(quota.memory_bytes)),
    ];
    view! {
        <table data-testid="quota">
            <thead><tr><th scope="col">"Limit"</th><th scope="col">"Used"</th><th scope="col">"Quota"</th></tr></thead>
            <tbody>
                {rows.into_iter().map(|(name, used, quota)| view! { <tr><th scope="row">{name}</th><td>{used}</td><td>{quota}</td></tr> }).collect_view()}
            </tbody>
        </table>
    }
}
