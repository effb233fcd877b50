//! The catalog: my functions and the public ones, with what can be done to each.

use super::{action_error, short_time, ErrorNotice};
use crate::api::functions::{list_functions, my_instances, DeployFunction};
use crate::platform::model::{FunctionSummary, InstanceInfo, Visibility};
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::components::A;
use leptos_router::hooks::use_navigate;
use std::collections::HashMap;

/// Lists the functions the user may see.
#[component]
pub fn CatalogPage() -> impl IntoView {
    let functions = Resource::new(|| (), |_| list_functions());
    let deploy = ServerAction::<DeployFunction>::new();
    let instances = Resource::new(move || deploy.version().get(), |_| my_instances());
    let deploy_error = action_error(deploy.value());
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
        {move || deploy_error.get().map(|error| view! { <ErrorNotice error/> })}
        <Suspense fallback=|| view! { <p class="muted">"Loading functions…"</p> }>
            {move || Suspend::new(async move {
                let mine: HashMap<String, InstanceInfo> =
                    instances.await.unwrap_or_default().into_iter().map(|i| (i.function.clone(), i)).collect();
                match functions.await {
                    Err(error) => view! { <ErrorNotice error/> }.into_any(),
                    Ok(list) if list.is_empty() => view! {
                        <section class="card empty">
                            <p>"No functions yet. Register one from Python or Node source, or from a container image."</p>
                        </section>
                    }.into_any(),
                    Ok(list) => view! { <CatalogTable functions=list mine deploy/> }.into_any(),
                }
            })}
        </Suspense>
    }
}

#[component]
fn CatalogTable(functions: Vec<FunctionSummary>, mine: HashMap<String, InstanceInfo>, deploy: ServerAction<DeployFunction>) -> impl IntoView {
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
                                <td><A href=href>{name}</A></td>
                                <td><span class="tag">{f.runtime.as_str()}</span></td>
                                <td class="version">{version}</td>
                                <td>{f.owner.clone()}</td>
                                <td>{match f.visibility { Visibility::Public => "public", Visibility::Private => "private" }}</td>
                                <td>{short_time(&f.updated_at)}</td>
                                <td class="instance-cell">
                                    {match mine.get(&f.name) {
                                        Some(instance) => {
                                            let state = instance.state.as_str();
                                            view! {
                                                <A href=format!("/functions/{}", f.name)>
                                                    <span class=format!("state state-{}", state.to_lowercase())>{state}</span>
                                                </A>
                                            }.into_any()
                                        }
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
