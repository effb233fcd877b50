//! Cron triggers on the function page: the caller's schedules on their instance, each with
//! its next fire time and latest runs; add one, delete one.

use super::{Confirm, ErrorNotice, FieldMessage, action_error, short_time};
use crate::api::functions::{CreateTrigger, DeleteTrigger, list_triggers};
use crate::platform::model::Named;
use crate::platform::model::TriggerInfo;
use leptos::prelude::*;

/// The triggers card.
#[component]
pub fn TriggersCard(function: String) -> impl IntoView {
    let create = ServerAction::<CreateTrigger>::new();
    let delete = ServerAction::<DeleteTrigger>::new();
    let create_error = action_error(create.value());
    let delete_error = action_error(delete.value());
    let name = function.clone();
    let triggers =
        Resource::new(move || (create.version().get(), delete.version().get()), move |_| list_triggers(name.clone()));
    view! {
        <section class="card" aria-labelledby="triggers-title" data-testid="triggers">
            <h2 id="triggers-title">"Cron triggers"</h2>
            <p class="hint">"Invoke your instance on a schedule (5-field cron in UTC, or @hourly, @daily…). Runs are at most once per due time."</p>
            {move || delete_error.get().map(|error| view! { <ErrorNotice error/> })}
            <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    match triggers.await {
                        Err(error) => view! { <ErrorNotice error/> }.into_any(),
                        Ok(list) if list.is_empty() => view! { <p class="muted">"No triggers yet."</p> }.into_any(),
                        Ok(list) => view! { <TriggerTable list delete/> }.into_any(),
                    }
                })}
            </Transition>
            <ActionForm action=create attr:class="trigger-form">
                <input type="hidden" name="function" value=function/>
                <div class="inline-form">
                    <label for="trigger-schedule">"Schedule"</label>
                    <input id="trigger-schedule" name="schedule" placeholder="*/5 * * * *" required/>
                    <label for="trigger-method">"Method"</label>
                    <select id="trigger-method" name="method">
                        {["POST", "GET", "PUT"].into_iter().map(|m| view! { <option value=m>{m}</option> }).collect_view()}
                    </select>
                    <label for="trigger-path">"Path"</label>
                    <input id="trigger-path" name="path" value="/"/>
                </div>
                <label for="trigger-body">"Body"</label>
                <input id="trigger-body" name="body"/>
                <FieldMessage error=create_error field="schedule"/>
                <FieldMessage error=create_error field="method"/>
                <FieldMessage error=create_error field="path"/>
                <FieldMessage error=create_error field="body"/>
                {move || create_error.get().filter(|e| e.field.is_none()).map(|error| view! { <ErrorNotice error/> })}
                <button type="submit" disabled=move || create.pending().get()>"Add trigger"</button>
            </ActionForm>
        </section>
    }
}

#[component]
fn TriggerTable(list: Vec<TriggerInfo>, delete: ServerAction<DeleteTrigger>) -> impl IntoView {
    view! {
        <div class="table-wrap">
            <table data-testid="trigger-table">
                <thead><tr>
                    <th scope="col">"Schedule"</th><th scope="col">"Sends"</th><th scope="col">"Next"</th><th scope="col">"Last run"</th>
                    <th scope="col"><span class="sr-only">"Action"</span></th>
                </tr></thead>
                <tbody>
                    {list.into_iter().map(|t| {
                        let last = t.runs.first().map(|run| {
                            format!("{} {}{}", short_time(&run.scheduled_for), run.outcome.as_str(), run.status.map(|s| format!(" ({s})")).unwrap_or_default())
                        });
                        view! {
                            <tr data-trigger=t.id>
                                <td><code>{t.spec.schedule.clone()}</code></td>
                                <td><code>{format!("{} {}", t.spec.method, t.spec.path)}</code></td>
                                <td>{t.next_fire_at.as_ref().map(short_time).unwrap_or_else(|| "never".into())}</td>
                                <td>{last.unwrap_or_else(|| "not yet".into())}</td>
                                <td>
                                    <Confirm ask="Delete…">
                                        {
                                            let id = t.id;
                                            view! {
                                                <ActionForm action=delete attr:class="inline">
                                                    <input type="hidden" name="id" value=id/>
                                                    <button type="submit" class="danger">"Yes, delete trigger"</button>
                                                </ActionForm>
                                            }
                                        }
                                    </Confirm>
                                </td>
                            </tr>
                        }
                    }).collect_view()}
                </tbody>
            </table>
        </div>
    }
}
