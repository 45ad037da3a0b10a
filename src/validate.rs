//! The validation stage: turns an event's raw JSON into its typed DTO and checks the DTO's
//! rules, producing one `FieldError` per failing field. Handlers only ever see valid DTOs.

use serde::{Serialize, de::DeserializeOwned};
use serde_json::value::RawValue;

/// One field that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// Path of the field in the payload (`content`, `members[2]`); empty for the whole payload.
    pub path: String,
    /// The rule that failed (`type`, `required`, `length`, `uuid`, …).
    pub rule: String,
    pub message: String,
}

/// An event payload: deserializable, then checked by its own rules.
pub trait Dto: DeserializeOwned + Send + 'static {
    /// Rules beyond the type (lengths, formats). The default accepts everything.
    fn validate(&self) -> Result<(), Vec<FieldError>> {
        Ok(())
    }
}

/// Any JSON at all, passed through untouched (e.g. `sys:echo`).
impl Dto for Box<RawValue> {}

/// Parses and validates `raw` as `T`.
pub fn parse<T: Dto>(raw: &RawValue) -> Result<T, Vec<FieldError>> {
    let mut de = serde_json::Deserializer::from_str(raw.get());
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        vec![FieldError {
            path,
            rule: "type".into(),
            message: e.inner().to_string(),
        }]
    })?;
    value.validate()?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        name: String,
    }
    impl Dto for Sample {
        fn validate(&self) -> Result<(), Vec<FieldError>> {
            if self.name.trim().is_empty() {
                return Err(vec![FieldError {
                    path: "name".into(),
                    rule: "required".into(),
                    message: "must not be blank".into(),
                }]);
            }
            Ok(())
        }
    }

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.into()).unwrap()
    }

    #[test]
    fn parses_then_applies_rules() {
        assert_eq!(parse::<Sample>(&raw(r#"{"name":"a"}"#)).unwrap().name, "a");
        assert_eq!(
            parse::<Sample>(&raw(r#"{"name":" "}"#)).unwrap_err()[0].rule,
            "required"
        );
        let e = parse::<Sample>(&raw(r#"{"name":5}"#)).unwrap_err();
        assert_eq!((e[0].path.as_str(), e[0].rule.as_str()), ("name", "type"));
        assert_eq!(
            parse::<Sample>(&raw(r#"{"name":"a","x":1}"#)).unwrap_err()[0].rule,
            "type"
        );
    }
}
