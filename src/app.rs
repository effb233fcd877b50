//! The HTML shell, the router and the session state every page shares.

use crate::api::functions::{LogIn, LogOut, SignUp, current_user};
use crate::ui::{
    account::AccountPage,
    admin::AdminPage,
    catalog::CatalogPage,
    function_page::FunctionPage,
    functions_form::{EditFunctionPage, RegisterFunctionPage},
    login::LoginPage,
    session::Session,
};
use leptos::prelude::*;
use leptos_meta::{MetaTags, Stylesheet, Title, provide_meta_context};
use leptos_router::components::{A, Route, Router, Routes};
use leptos_router::{Lazy, LazyRoute, SsrMode, lazy_route, path};

/// The document around the app, rendered on the server only.
pub fn shell(options: LeptosOptions) -> impl IntoView {
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8"/>
                <meta name="viewport" content="width=device-width, initial-scale=1"/>
                <meta name="color-scheme" content="light dark"/>
                <link rel="icon" href="/favicon.svg" type="image/svg+xml"/>
                <AutoReload options=options.clone()/>
                <HydrationScripts options/>
                <MetaTags/>
            </head>
            <body>
                <App/>
            </body>
        </html>
    }
}

/// The application: header, routes.
#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    let log_in = ServerAction::<LogIn>::new();
    let sign_up = ServerAction::<SignUp>::new();
    let log_out = ServerAction::<LogOut>::new();
    let user = Resource::new(
        move || (log_in.version().get(), sign_up.version().get(), log_out.version().get()),
        |_| current_user(),
    );
    provide_context(Session { user, log_in, sign_up, log_out });

    view! {
        <Stylesheet id="leptos" href="/pkg/kubefn.css"/>
        <Title text="kubefn"/>
        <Router>
            <Header/>
            <main id="main">
                <Routes fallback=|| view! { <section class="card"><h1>"Page not found"</h1><p><A href="/">"Back to the catalog"</A></p></section> }>
                    // Async rendering waits for the data before the first byte, so a visitor who
                    // is not logged in gets a real redirect to /login, JavaScript or not.
                    <Route path=path!("/") view=CatalogPage ssr=SsrMode::Async/>
                    <Route path=path!("/login") view=LoginPage ssr=SsrMode::Async/>
                    // The pages behind the catalog load their code when first opened (see `lazy_page!`).
                    <Route path=path!("/account") view={Lazy::<AccountRoute>::new()} ssr=SsrMode::Async/>
                    <Route path=path!("/admin") view={Lazy::<AdminRoute>::new()} ssr=SsrMode::Async/>
                    <Route path=path!("/functions/new") view={Lazy::<RegisterFunctionRoute>::new()}/>
                    <Route path=path!("/functions/:name") view={Lazy::<FunctionRoute>::new()} ssr=SsrMode::Async/>
                    <Route path=path!("/functions/:name/edit") view={Lazy::<EditFunctionRoute>::new()} ssr=SsrMode::Async/>
                </Routes>
            </main>
        </Router>
    }
}

/// Declares a route whose page is split into its own wasm chunk (`cargo leptos build --split`),
/// fetched the first time a visitor opens such a page (or with the page itself, preloaded, when it
/// is the one loaded first). The catalog and the log-in page, where every visit starts, stay in
/// the main bundle; the function page, forms, account and admin do not, so the first download is
/// smaller (docs/BUNDLE.md). The page fetches its own data, so `data` has nothing to start.
macro_rules! lazy_page {
    ($($(#[$doc:meta])* $route:ident => $page:ident;)+) => {$(
        $(#[$doc])*
        struct $route;

        #[lazy_route]
        impl LazyRoute for $route {
            fn data() -> Self {
                Self
            }

            fn view(_route: Self) -> AnyView {
                $page().into_any()
            }
        }
    )+};
}

lazy_page! {
    /// `/account`.
    AccountRoute => AccountPage;
    /// `/admin`.
    AdminRoute => AdminPage;
    /// `/functions/new`.
    RegisterFunctionRoute => RegisterFunctionPage;
    /// `/functions/:name`.
    FunctionRoute => FunctionPage;
    /// `/functions/:name/edit`.
    EditFunctionRoute => EditFunctionPage;
}

#[component]
fn Header() -> impl IntoView {
    let session = expect_context::<Session>();
    view! {
        <header class="topbar">
            <a class="skip" href="#main">"Skip to content"</a>
            <A href="/" attr:class="brand">"kubefn"</A>
            <nav aria-label="Main">
                <Transition fallback=|| ()>
                    {move || Suspend::new(async move {
                        match session.user.await {
                            Ok(Some(user)) => view! {
                                <A href="/">"Catalog"</A>
                                <A href="/functions/new">"Register"</A>
                                <A href="/account">"Account"</A>
                                {(user.role == crate::platform::model::Role::Admin).then(|| view! { <A href="/admin">"Admin"</A> })}
                                <span class="whoami" data-testid="whoami">
                                    {user.name.clone()}
                                    {(user.role == crate::platform::model::Role::Admin).then(|| view! { <span class="badge">"admin"</span> })}
                                </span>
                                <ActionForm action=session.log_out attr:class="inline">
                                    <button type="submit" class="link">"Log out"</button>
                                </ActionForm>
                            }.into_any(),
                            _ => view! { <A href="/login">"Log in"</A> }.into_any(),
                        }
                    })}
                </Transition>
            </nav>
        </header>
    }
}
