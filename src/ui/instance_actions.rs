//! The buttons that change an instance, shared by the catalog rows and the instance panel.

use super::Confirm;
use crate::api::functions::{DeleteInstance, PauseInstance, ResumeInstance};
use leptos::prelude::*;

/// The actions a page offers on instances; their versions tell the page to reload them.
#[derive(Clone, Copy)]
pub struct InstanceActions {
    /// Pause.
    pub pause: ServerAction<PauseInstance>,
    /// Resume.
    pub resume: ServerAction<ResumeInstance>,
    /// Delete.
    pub delete: ServerAction<DeleteInstance>,
}

impl InstanceActions {
    /// Fresh actions (one set per page).
    pub fn new() -> InstanceActions {
        InstanceActions { pause: ServerAction::new(), resume: ServerAction::new(), delete: ServerAction::new() }
    }
}

impl Default for InstanceActions {
    fn default() -> Self {
        InstanceActions::new()
    }
}

/// "Pause" for a running instance, "Resume" for a paused one. Plain forms, so they work
/// before hydration.
#[component]
pub fn PauseOrResume(id: String, paused: bool, actions: InstanceActions) -> impl IntoView {
    if paused {
        view! {
            <ActionForm action=actions.resume attr:class="inline">
                <input type="hidden" name="id" value=id/>
                <button type="submit" class="primary">"Resume"</button>
            </ActionForm>
        }
        .into_any()
    } else {
        view! {
            <ActionForm action=actions.pause attr:class="inline">
                <input type="hidden" name="id" value=id/>
                <button type="submit">"Pause"</button>
            </ActionForm>
        }
        .into_any()
    }
}

/// "Delete…", which asks once more ("`confirm`" or Cancel) before deleting the instance.
#[component]
pub fn ConfirmedDelete(id: String, action: ServerAction<DeleteInstance>, confirm: &'static str) -> impl IntoView {
    view! {
        <Confirm ask="Delete…">
            {
                let id = id.clone();
                view! {
                    <ActionForm action attr:class="inline">
                        <input type="hidden" name="id" value=id/>
                        <button type="submit" class="danger">{confirm}</button>
                    </ActionForm>
                }
            }
        </Confirm>
    }
}
