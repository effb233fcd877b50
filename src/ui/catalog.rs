//! The catalog: my functions and the public ones, with what can be done to each.

use super::{short_time, ErrorNotice};
use crate::api::functions::list_functions;
use crate::platform::model::{FunctionSummary, Visibility};
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::components::A;

/// Lists the functions the user may see.
#[component]
pub fn CatalogPage() -> impl IntoView {
    let functions = Resource::new(|| (), |_| list_functions());
    view! {
        <Title text="Catalog · kubefn"/>
        <div class="page-head">
            <h1>"Functions"</h1>
            <A href="/functions/new" attr:class="button primary">"Register a function"</A>
        </div>
        <Suspense fallback=|| view! { <p class="muted">"Loading functions…"</p> }>
            {move || Suspend::new(async move {
                match functions.await {
                    Err(error) => view! { <ErrorNotice error/> }.into_any(),
                    Ok(list) if list.is_empty() => view! {
                        <section class="card empty">
                            <p>"No functions yet. Register one from Python or Node source, or from a container image."</p>
                        </section>
                    }.into_any(),
                    Ok(list) => view! { <CatalogTable functions=list/> }.into_any(),
                }
            })}
        </Suspense>
    }
}

#[component]
fn CatalogTable(functions: Vec<FunctionSummary>) -> impl IntoView {
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
                                <td>
                                    <button type="button" disabled title="Deploying needs a runtime, which this version of kubefn does not have yet">
                                        "Deploy"
                                    </button>
                                    <span class="hint">" runtime not available yet"</span>
                                </td>
                            </tr>
                        }
                    }).collect_view()}
                </tbody>
            </table>
        </div>
    }
}
