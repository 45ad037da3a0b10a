//! The validation stage: turns an event's raw JSON into its typed DTO and checks the DTO's
//! rules, producing one `FieldError` per failing field. Handlers only ever see valid DTOs.
//!
//! DTOs are serde structs with `deny_unknown_fields` and `validator` rules; `validated` turns
//! `validator`'s errors into wire `FieldError`s named as on the wire (camelCase). The text
//! policy lives here too: text is stored and relayed as text, and rejected when it holds NUL or
//! other control characters (newline and tab excepted). Invalid UTF-8 never gets this far: the
//! JSON decoder refuses it.
//!
//! A payload that is a struct must be a JSON object: serde's derived struct deserializers also
//! accept an array and fill the fields by position, so `parse` refuses anything but an object
//! before serde sees it (`Dto::OBJECT`). A DTO field that is itself a struct takes the same
//! check through `#[serde(deserialize_with = "validate::object")]` (`optional_object` for an
//! `Option`).

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
    /// Whether the payload must be a JSON object (every struct DTO). Only pass-through
    /// payloads that take any JSON say `false`.
    const OBJECT: bool = true;

    /// Rules beyond the type (lengths, formats). The default accepts everything.
    fn validate(&self) -> Result<(), Vec<FieldError>> {
        Ok(())
    }
}

/// Any JSON at all, passed through untouched (e.g. `sys:echo`).
impl Dto for Box<RawValue> {
    const OBJECT: bool = false;
}

/// Whether `json` (known to be JSON) is an object: its first non-whitespace byte is `{`.
pub fn is_object(json: &[u8]) -> bool {
    json.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

/// `content` … `conversation_id` → `conversationId`: field names as the wire spells them.
fn camel(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = false;
    for c in name.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn flatten(prefix: &str, errors: &validator::ValidationErrors, out: &mut Vec<FieldError>) {
    use validator::ValidationErrorsKind::*;
    let mut fields: Vec<_> = errors.errors().iter().collect();
    fields.sort_by_key(|(name, _)| name.to_string());
    for (name, kind) in fields {
        let path =
            if prefix.is_empty() { camel(name) } else { format!("{prefix}.{}", camel(name)) };
        match kind {
            Field(list) => out.extend(list.iter().map(|e| FieldError {
                path: path.clone(),
                rule: e.code.to_string(),
                message: e.message.as_deref().map_or_else(|| e.code.to_string(), str::to_owned),
            })),
            Struct(inner) => flatten(&path, inner, out),
            List(items) => {
                for (i, inner) in items {
                    flatten(&format!("{path}[{i}]"), inner, out);
                }
            }
        }
    }
}

/// Runs a `validator` derive and converts its errors: the usual body of `Dto::validate`.
pub fn validated<T: validator::Validate>(dto: &T) -> Result<(), Vec<FieldError>> {
    dto.validate().map_err(|e| {
        let mut out = Vec::new();
        flatten("", &e, &mut out);
        out
    })
}

fn rule(code: &'static str, message: &'static str) -> validator::ValidationError {
    validator::ValidationError::new(code).with_message(message.into())
}

/// Text policy: no NUL or other control characters except newline and tab.
pub fn plain_text(s: &str) -> Result<(), validator::ValidationError> {
    if s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(rule(
            "control_chars",
            "control characters other than newline and tab are not allowed",
        ));
    }
    Ok(())
}

/// Non-empty after trimming whitespace.
pub fn not_blank(s: &str) -> Result<(), validator::ValidationError> {
    if s.trim().is_empty() {
        return Err(rule("not_blank", "must not be empty or only whitespace"));
    }
    Ok(())
}

/// A UUID in its hyphenated form.
pub fn uuid(s: &str) -> Result<(), validator::ValidationError> {
    match uuid::Uuid::try_parse(s) {
        Ok(_) if s.len() == 36 => Ok(()),
        _ => Err(rule("uuid", "must be a UUID (8-4-4-4-12 hex digits)")),
    }
}

/// An identifier (a user id): plain text, 1 to 128 bytes.
pub fn identifier(s: &str) -> Result<(), validator::ValidationError> {
    if s.is_empty() || s.len() > 128 {
        return Err(rule("length", "must be 1 to 128 bytes"));
    }
    plain_text(s)
}

/// `deserialize_with` for a struct-typed DTO field: the value must be a JSON object (see the
/// module docs), then it is parsed as `T`.
pub fn object<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: DeserializeOwned,
{
    use serde::{Deserialize, de::Error};
    let raw = Box::<RawValue>::deserialize(d)?;
    if !is_object(raw.get().as_bytes()) {
        return Err(D::Error::custom("must be a JSON object"));
    }
    serde_json::from_str(raw.get()).map_err(D::Error::custom)
}

/// `object` for an `Option` field (with `#[serde(default)]`): absent is `None`; `null` is not.
pub fn optional_object<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: DeserializeOwned,
{
    object(d).map(Some)
}

/// Parses and validates `raw` as `T`.
pub fn parse<T: Dto>(raw: &RawValue) -> Result<T, Vec<FieldError>> {
    if T::OBJECT && !is_object(raw.get().as_bytes()) {
        return Err(vec![FieldError {
            path: String::new(),
            rule: "type".into(),
            message: "must be a JSON object".into(),
        }]);
    }
    // Path tracking costs on every field and only a failure needs the path: parse plainly,
    // and parse a failed payload again with tracking to say where it failed.
    let value: T = match serde_json::from_str(raw.get()) {
        Ok(value) => value,
        Err(plain) => return Err(vec![type_error::<T>(raw, plain)]),
    };
    value.validate()?;
    Ok(value)
}

fn type_error<T: Dto>(raw: &RawValue, plain: serde_json::Error) -> FieldError {
    let mut de = serde_json::Deserializer::from_str(raw.get());
    let (path, message) = match serde_path_to_error::deserialize::<_, T>(&mut de) {
        Err(e) => (e.path().to_string(), e.inner().to_string()),
        // Both parsers read the same input the same way; this arm only keeps the function total.
        Ok(_) => (".".to_owned(), plain.to_string()),
    };
    let path = if path == "." { String::new() } else { path };
    FieldError { path, rule: "type".into(), message }
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
        assert_eq!(parse::<Sample>(&raw(r#"{"name":" "}"#)).unwrap_err()[0].rule, "required");
        let e = parse::<Sample>(&raw(r#"{"name":5}"#)).unwrap_err();
        assert_eq!((e[0].path.as_str(), e[0].rule.as_str()), ("name", "type"));
        assert_eq!(parse::<Sample>(&raw(r#"{"name":"a","x":1}"#)).unwrap_err()[0].rule, "type");
    }

    /// A derived struct deserializer would take `["a"]` as `{"name":"a"}`.
    #[test]
    fn a_struct_payload_must_be_an_object() {
        for not_object in [r#"["a"]"#, "null", r#""a""#, "1", " [\"a\"]"] {
            let e = parse::<Sample>(&raw(not_object)).unwrap_err();
            assert_eq!(
                (e[0].path.as_str(), e[0].rule.as_str(), e[0].message.as_str()),
                ("", "type", "must be a JSON object"),
                "{not_object}"
            );
        }
        assert!(parse::<Sample>(&raw(" \n{\"name\":\"a\"}")).is_ok());
        // Pass-through payloads take any JSON.
        assert!(parse::<Box<RawValue>>(&raw(r#"["a"]"#)).is_ok());
    }
}
