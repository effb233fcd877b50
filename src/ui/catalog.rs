//! The catalog: my functions and the public ones, with what can be done to each, 50 to a
//! page and filtered by name.

use super::addresses::InstanceAddresses;
use super::instance_actions::{ConfirmedDelete, InstanceActions, PauseOrResume};
use super::{ErrorNotice, action_error, refresh_when_changed, short_time};
use crate::api::ApiError;
use crate::api::functions::{DeployFunction, list_functions, my_instances};
use crate::platform::model::Named;
use crate::platform::model::{FunctionListPage, FunctionSummary, InstanceInfo, Visibility};
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::components::A;
use leptos_router::hooks::{use_navigate, use_query_map};
use std::collections::HashMap;

/// How often the catalog refreshes the states of the caller's instances.
const STATE_REFRESH: std::time::Duration = std::time::Duration::from_secs(3);

/// Lists the functions the user may see, a page at a time, filtered by name.
#[component]
pub fn CatalogPage() -> impl IntoView {
    let query = use_query_map();
    let page = Memo::new(move |_| query.read().get("page").and_then(|p| p.parse::<u32>().ok()).unwrap_or(1));
    let filter = Memo::new(move |_| query.read().get("q").unwrap_or_default());
    let functions = Resource::new(move || (page.get(), filter.get()), |(page, filter)| list_functions(page, filter));
    let deploy = ServerAction::<DeployFunction>::new();
    let actions = InstanceActions::new();
    // The caller's instances of the functions on this page (not all of them: a user with a
    // thousand instances still gets a page's worth), once the page's functions are known.
    let instances = Resource::new(
        move || {
            (
                page.get(),
                filter.get(),
                deploy.version().get(),
                actions.pause.version().get(),
                actions.resume.version().get(),
                actions.delete.version().get(),
            )
        },
        move |_| async move { my_instances(names_on(Some(functions.await))).await },
    );
    // The instances' states refresh by themselves, so Deploying turns Ready without a reload.
    refresh_when_changed(instances, STATE_REFRESH, move || my_instances(names_on(functions.get_untracked())));
    let errors = [
        action_error(deploy.value()),
        action_error(actions.pause.value()),
        action_error(actions.resume.value()),
        action_error(actions.delete.value()),
    ];
    // A deployed function's page shows the new instance coming up.
    let navigate = use_navigate();
    Effect::new(move |_| {
        if let Some(Ok(instance)) = deploy.value().get() {
            navigate(&format!("/functions/{}", instance.function), Default::default());
        }
    });
    view! {
        <Title text="Catalog · kubefn"/>
        <div class="page-head">
            <h1>"Functions"</h1>
            <A href="/functions/new" attr:class="button primary">"Register a function"</A>
        </div>
        // A plain GET form: filtering works before (and without) hydration.
        <form method="get" action="/" class="inline-form filter" role="search">
            <label for="catalog-filter">"Name contains"</label>
            <input id="catalog-filter" name="q" type="search" value=move || filter.get()/>
            <button type="submit">"Filter"</button>
        </form>
        {move || errors.iter().find_map(|e| e.get()).map(|error| view! { <ErrorNotice error/> })}
        <Suspense fallback=|| view! { <p class="muted">"Loading functions…"</p> }>
            {move || Suspend::new(async move {
                let mine: HashMap<String, InstanceInfo> =
                    instances.await.unwrap_or_default().into_iter().map(|i| (i.function.clone(), i)).collect();
                match functions.await {
                    Err(error) => view! { <ErrorNotice error/> }.into_any(),
                    Ok(list) if list.total == 0 && list.filter.is_empty() => view! {
                        <section class="card empty">
                            <p>"No functions yet. Register one from Python or Node source, or from a container image."</p>
                        </section>
                    }.into_any(),
                    Ok(list) if list.total == 0 => view! {
                        <section class="card empty"><p>"No function's name contains “" {list.filter.clone()} "”."</p></section>
                    }.into_any(),
                    Ok(list) => {
                        let pager = view! { <Pager list=list.clone()/> };
                        view! { <CatalogTable functions=list.items mine deploy actions/> {pager} }.into_any()
                    }
                }
            })}
        </Suspense>
    }
}

/// The names of the functions a catalog page lists (none while it loads, or if it failed).
fn names_on(page: Option<Result<FunctionListPage, ApiError>>) -> Vec<String> {
    match page {
        Some(Ok(page)) => page.items.into_iter().map(|function| function.name).collect(),
        _ => Vec::new(),
    }
}

/// "41–50 of 1000" and links to the previous and next pages (kept filtered).
#[component]
fn Pager(list: FunctionListPage) -> impl IntoView {
    let first = (list.page - 1) * list.per_page + 1;
    let last = (first + list.items.len() as u32).saturating_sub(1);
    let filter = if list.filter.is_empty() {
        String::new()
    } else {
        format!("&q={}", super::encode_uri_component(&list.filter))
    };
    let link = move |page: u32| format!("/?page={page}{filter}");
    let (previous, next) =
        ((list.page > 1).then(|| link(list.page - 1)), (list.page < list.last_page()).then(|| link(list.page + 1)));
    view! {
        <nav class="pager" aria-label="Catalog pages">
            <span class="muted" data-testid="catalog-range">{format!("{first}–{last} of {}", list.total)}</span>
            {previous.map(|href| view! { <A href=href attr:rel="prev">"← Previous"</A> })}
            {next.map(|href| view! { <A href=href attr:rel="next">"Next →"</A> })}
        </nav>
    }
}

/// The table of a catalog page. Its links are plain `<a>` elements, which the router navigates
/// to on the client all the same: `<A>` would add relative-path resolution and `aria-current`,
/// which these absolute links to other pages never need, at a reactive memo per link, up to a
/// hundred per page (with the plain static addresses below, the page with 50 running instances
/// renders in 3.3 ms rather than 4.0 over `/healthz`).
#[component]
fn CatalogTable(
    functions: Vec<FunctionSummary>,
    mine: HashMap<String, InstanceInfo>,
    deploy: ServerAction<DeployFunction>,
    actions: InstanceActions,
) -> impl IntoView {
    view! {
        <div class="table-wrap">
            <table class="catalog" data-testid="catalog">
                <caption class="sr-only">"Functions you may use"</caption>
                <thead>
                    <tr>
                        <th scope="col">"Name"</th>
                        <th scope="col">"Runtime"</th>
                        <th scope="col">"Version"</th>
                        <th scope="col">"Owner"</th>
                        <th scope="col">"Visibility"</th>
                        <th scope="col">"Updated"</th>
                        <th scope="col">"Instance"</th>
                    </tr>
                </thead>
                <tbody>
                    {functions.into_iter().map(|f| {
                        let href = format!("/functions/{}", f.name);
                        let version = if f.version == f.latest_version {
                            format!("v{}", f.version)
                        } else {
                            format!("v{} (latest v{})", f.version, f.latest_version)
                        };
                        let name = f.name.clone();
                        view! {
                            <tr data-function=f.name.clone()>
                                <td><a href=href>{name}</a></td>
                                <td><span class="tag">{f.runtime.as_str()}</span></td>
                                <td class="version">{version}</td>
                                <td>{f.owner.clone()}</td>
                                <td>{match f.visibility { Visibility::Public => "public", Visibility::Private => "private" }}</td>
                                <td>{short_time(&f.updated_at)}</td>
                                <td class="instance-cell">
                                    {match mine.get(&f.name) {
                                        Some(instance) => view! { <InstanceCell instance=instance.clone() actions/> }.into_any(),
                                        None => {
                                            let function = f.name.clone();
                                            view! {
                                                <ActionForm action=deploy attr:class="inline">
                                                    <input type="hidden" name="name" value=function/>
                                                    <button type="submit" disabled=move || deploy.pending().get()>"Deploy"</button>
                                                </ActionForm>
                                            }.into_any()
                                        }
                                    }}
                                </td>
                            </tr>
                        }
                    }).collect_view()}
                </tbody>
            </table>
        </div>
    }
}

/// A deployed function's row: its instance's state, Pause or Resume, Delete (confirmed) and
/// its addresses.
#[component]
fn InstanceCell(instance: InstanceInfo, actions: InstanceActions) -> impl IntoView {
    let state = instance.state.as_str();
    view! {
        <div class="row-actions">
            <a href=format!("/functions/{}", instance.function)>
                <span class=format!("state state-{}", state.to_lowercase()) data-testid="catalog-state">{state}</span>
            </a>
            <PauseOrResume id=instance.id.clone() paused=instance.paused actions/>
            <ConfirmedDelete id=instance.id.clone() action=actions.delete confirm="Yes, delete"/>
        </div>
        <InstanceAddresses urls=instance.urls/>
    }
}
