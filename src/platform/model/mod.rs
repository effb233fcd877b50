//! The FaaS domain as plain serde types: what a function is, how it scales, how it is reached.
//!
//! These types are shared with the browser (the register form and the pages render them), so
//! nothing here may depend on the server-only crates (`sqlx`, `kube`, `axum`).
//!
//! One file per domain; everything is re-exported here, so callers name `model::FunctionSpec`.

mod account;
mod async_call;
mod function;
mod instance;
mod trigger;
mod usage;

pub use account::*;
pub use async_call::*;
pub use function::*;
pub use instance::*;
pub use trigger::*;
pub use usage::*;

use serde::{Deserialize, Serialize};

/// The model's closed sets of names (languages, visibilities, states, roles…): each value's text
/// in JSON, forms, the database and the pages. strum derives the text from the same spelling
/// serde uses (`#[strum(serialize_all)]` beside `#[serde(rename_all)]`; a unit test holds the
/// two together), so no enum carries a hand-written table. Implemented for every enum that
/// derives `strum::IntoStaticStr` and `strum::VariantArray`.
pub trait Named: Copy + Into<&'static str> + strum::VariantArray + 'static {
    /// Every value, in the order declared (the order forms offer them).
    const ALL: &'static [Self] = Self::VARIANTS;

    /// The value's name.
    fn as_str(self) -> &'static str {
        self.into()
    }

    /// The value named `text`, if any (names are case-sensitive, as stored).
    fn parse(text: &str) -> Option<Self> {
        Self::VARIANTS.iter().copied().find(|value| value.as_str() == text)
    }
}

impl<T: Copy + Into<&'static str> + strum::VariantArray + 'static> Named for T {}

/// One invalid field of a request: the field's path (`resources.cpu`, `env.MY VAR`) and what is wrong.
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    /// Dotted path of the field in the JSON body (the form field for the UI).
    pub field: String,
    /// What is wrong and what is accepted.
    pub message: String,
}

impl FieldError {
    /// A field error with the given path and message.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError { field: field.into(), message: message.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each name agrees with serde's spelling of the same value, so JSON, forms and the database
    /// never disagree.
    fn names_agree_with_serde<T: Named + Serialize + std::fmt::Debug + PartialEq>() {
        for value in T::ALL.iter().copied() {
            assert_eq!(serde_json::to_value(value).expect("serializes"), serde_json::json!(value.as_str()));
            assert_eq!(T::parse(value.as_str()), Some(value));
        }
        assert_eq!(T::parse("no such name"), None);
    }

    #[test]
    fn every_named_enum_spells_its_values_as_serde_does() {
        names_agree_with_serde::<Language>();
        names_agree_with_serde::<Visibility>();
        names_agree_with_serde::<ServiceKind>();
        names_agree_with_serde::<InvokeAccess>();
        names_agree_with_serde::<Role>();
        names_agree_with_serde::<AsyncState>();
        names_agree_with_serde::<RunOutcome>();
        names_agree_with_serde::<InstanceState>();
    }

    #[test]
    fn a_spec_made_in_code_has_the_defaults_a_registration_gets() {
        let source = "def handle(req):\n    return req\n";
        let registered: FunctionSpec =
            serde_json::from_value(serde_json::json!({"name": "hello", "runtime": "python", "source": source}))
                .expect("a registration with only the required fields");
        assert_eq!(FunctionSpec::new("hello", Language::Python, source), registered);
    }
}
