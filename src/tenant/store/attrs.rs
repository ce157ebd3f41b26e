//! User attributes: case-insensitive names, validation of a User, and PatchOp (RFC 7644 §3.5.2).

use serde_json::{json, Map, Value};

use super::{ScimError, ENTERPRISE_SCHEMA, USER_SCHEMA};

/// Attribute names of the core User schema, for case-insensitive matching (RFC 7643 §2.1).
const CORE_ATTRIBUTES: &[&str] = &[
    "schemas",
    "id",
    "externalId",
    "meta",
    "userName",
    "name",
    "displayName",
    "nickName",
    "profileUrl",
    "title",
    "userType",
    "preferredLanguage",
    "locale",
    "timezone",
    "active",
    "password",
    "emails",
    "phoneNumbers",
    "ims",
    "photos",
    "addresses",
    "groups",
    "entitlements",
    "roles",
    "x509Certificates",
    "givenName",
    "familyName",
    "middleName",
    "formatted",
    "honorificPrefix",
    "honorificSuffix",
    "value",
    "type",
    "primary",
    "display",
    USER_SCHEMA,
    ENTERPRISE_SCHEMA,
];

/// The key under which `name` lives in `map`: an existing key equal ignoring case (attribute
/// names are case-insensitive), else the canonical spelling of a known attribute, else `name`.
pub(super) fn key_for(map: &Map<String, Value>, name: &str) -> String {
    if let Some(key) = map.keys().find(|k| k.eq_ignore_ascii_case(name)) {
        return key.clone();
    }
    CORE_ATTRIBUTES
        .iter()
        .find(|k| k.eq_ignore_ascii_case(name))
        .map_or_else(|| name.to_string(), |k| (*k).to_string())
}

/// Validates a resource sent with POST or PUT and keeps its writable attributes.
pub(super) fn normalize(doc: &Value) -> Result<Map<String, Value>, ScimError> {
    let fields = doc
        .as_object()
        .ok_or_else(|| ScimError::invalid_syntax("The resource must be a JSON object"))?;
    let mut attrs = Map::new();
    for (name, value) in fields {
        let key = key_for(&attrs, name);
        // Read-only attributes are ignored on write (RFC 7644 §3.5.1), the password is never
        // returned, and schemas is rebuilt from the attributes present.
        let ignored = ["id", "meta", "groups", "password", "schemas"].contains(&key.as_str());
        if !ignored && !value.is_null() {
            attrs.insert(key, value.clone());
        }
    }
    finish(&mut attrs)?;
    Ok(attrs)
}

/// Checks the attributes a User must have and lists its extensions in `schemas`.
pub(super) fn finish(attrs: &mut Map<String, Value>) -> Result<(), ScimError> {
    match attrs.get("userName") {
        Some(Value::String(s)) if !s.trim().is_empty() => {}
        _ => {
            return Err(ScimError::invalid_value(
                "userName is required (a non-empty string)",
            ))
        }
    }
    match attrs.get("active") {
        // An account is active unless told otherwise, as tenants create them.
        None => {
            attrs.insert("active".into(), Value::Bool(true));
        }
        Some(Value::Bool(_)) => {}
        Some(_) => return Err(ScimError::invalid_value("active must be a boolean")),
    }
    if attrs.get("name").is_some_and(|n| !n.is_object()) {
        return Err(ScimError::invalid_value("name must be a complex attribute"));
    }
    let multi = [
        "emails",
        "phoneNumbers",
        "addresses",
        "ims",
        "photos",
        "entitlements",
        "roles",
    ];
    if let Some(bad) = multi
        .iter()
        .find(|m| attrs.get(**m).is_some_and(|v| !v.is_array()))
    {
        return Err(ScimError::invalid_value(format!("{bad} must be an array")));
    }
    let mut schemas = vec![json!(USER_SCHEMA)];
    schemas.extend(
        attrs
            .iter()
            .filter(|(k, v)| k.starts_with("urn:") && *k != USER_SCHEMA && v.is_object())
            .map(|(k, _)| json!(k)),
    );
    attrs.insert("schemas".into(), Value::Array(schemas));
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PatchKind {
    Add,
    Replace,
    Remove,
}

/// Applies one PatchOp operation to a user's attributes.
pub(super) fn apply_patch(attrs: &mut Map<String, Value>, op: &Value) -> Result<(), ScimError> {
    let kind = match op["op"].as_str().map(str::to_ascii_lowercase).as_deref() {
        Some("add") => PatchKind::Add,
        Some("replace") => PatchKind::Replace,
        Some("remove") => PatchKind::Remove,
        _ => {
            return Err(ScimError::invalid_syntax(
                "op must be add, replace or remove",
            ))
        }
    };
    let value = op.get("value").cloned().unwrap_or(Value::Null);
    match op.get("path") {
        Some(Value::String(path)) => {
            let names = parse_path(path)?;
            // parse_path never returns an empty list, so names[0] exists.
            if ["id", "meta", "groups"]
                .iter()
                .any(|r| r.eq_ignore_ascii_case(&names[0]))
            {
                let detail = format!("{path} is read-only");
                return Err(ScimError::new(400, Some("mutability"), detail));
            }
            if kind != PatchKind::Remove && value.is_null() {
                return Err(ScimError::invalid_value(format!(
                    "{path}: value is required"
                )));
            }
            apply_at(attrs, kind, &names, value)
        }
        None | Some(Value::Null) => {
            if kind == PatchKind::Remove {
                return Err(ScimError::new(400, Some("noTarget"), "remove needs a path"));
            }
            let Value::Object(fields) = value else {
                return Err(ScimError::invalid_value(
                    "Without a path, value must be an object",
                ));
            };
            for (name, v) in fields {
                // Read-only attributes in a path-less value are ignored, like in a PUT.
                let read_only = ["id", "meta", "schemas", "groups"];
                if read_only.iter().any(|r| r.eq_ignore_ascii_case(&name)) {
                    continue;
                }
                apply_at(attrs, kind, &parse_path(&name)?, v)?;
            }
            Ok(())
        }
        Some(_) => Err(ScimError::invalid_path("path must be a string")),
    }
}

/// Parses an attribute path (`active`, `name.givenName`, `urn:...:User:department`) into the
/// keys to follow; value filters (`emails[type eq "work"]`) are not supported.
fn parse_path(path: &str) -> Result<Vec<String>, ScimError> {
    let path = path.trim();
    if path.contains(['[', ']', ' ', '"']) {
        return Err(ScimError::invalid_path(format!(
            "Value filters in paths are not supported: {path}"
        )));
    }
    let (schema, rest) = split_schema(path);
    let mut names = Vec::new();
    if let Some(urn) = schema.filter(|u| !u.eq_ignore_ascii_case(USER_SCHEMA)) {
        names.push(urn.to_string());
    }
    let parts: Vec<&str> = if rest.is_empty() {
        Vec::new()
    } else {
        rest.split('.').collect()
    };
    if parts.len() > 2 || !parts.iter().all(|p| valid_attr_name(p)) {
        return Err(ScimError::invalid_path(format!(
            "Invalid attribute path: {path}"
        )));
    }
    names.extend(parts.iter().map(|p| p.to_string()));
    if names.is_empty() {
        return Err(ScimError::invalid_path(format!(
            "Invalid attribute path: {path}"
        )));
    }
    Ok(names)
}

/// Splits a schema URN prefix off an attribute path: `(Some(urn), "attr.sub")`.
pub(super) fn split_schema(path: &str) -> (Option<&str>, &str) {
    if !path
        .get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case("urn:"))
    {
        return (None, path);
    }
    for urn in [USER_SCHEMA, ENTERPRISE_SCHEMA] {
        if path
            .get(..urn.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(urn))
        {
            let rest = &path[urn.len()..];
            if rest.is_empty() {
                return (Some(urn), "");
            }
            if let Some(rest) = rest.strip_prefix(':') {
                return (Some(urn), rest);
            }
        }
    }
    // An unknown extension: attribute names hold no ':', so the URN ends at the last one.
    match path.rsplit_once(':') {
        Some((urn, attr)) => (Some(urn), attr),
        None => (Some(path), ""),
    }
}

/// ATTRNAME of RFC 7644 §3.10: ALPHA *(ALPHA / DIGIT / "-" / "_"), or `$ref`.
fn valid_attr_name(name: &str) -> bool {
    name == "$ref"
        || (name.starts_with(|c: char| c.is_ascii_alphabetic())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
}

/// Applies add/replace/remove at the attribute reached by following `names`.
fn apply_at(
    attrs: &mut Map<String, Value>,
    kind: PatchKind,
    names: &[String],
    value: Value,
) -> Result<(), ScimError> {
    let Some((leaf, parents)) = names.split_last() else {
        return Err(ScimError::invalid_path("Empty attribute path"));
    };
    let mut holder = attrs;
    for name in parents {
        let key = key_for(holder, name);
        if !holder.contains_key(&key) {
            if kind == PatchKind::Remove {
                return Ok(());
            }
            holder.insert(key.clone(), Value::Object(Map::new()));
        }
        holder = match holder.get_mut(&key) {
            Some(Value::Object(inner)) => inner,
            _ => return Err(ScimError::invalid_path(format!("{name} is not complex"))),
        };
    }
    let key = key_for(holder, leaf);
    // A null value means "unassigned" (RFC 7643 §2.5): the same as removing the attribute.
    if kind == PatchKind::Remove || value.is_null() {
        holder.remove(&key);
        return Ok(());
    }
    match holder.get_mut(&key) {
        Some(existing) => merge(existing, value, kind == PatchKind::Add),
        None => {
            holder.insert(key, value);
        }
    }
    Ok(())
}

/// Writes `value` over `existing`: complex values keep sub-attributes not named (RFC 7644
/// §3.5.2.1 and §3.5.2.3); `add` appends to multi-valued attributes, `replace` replaces them.
fn merge(existing: &mut Value, value: Value, append: bool) {
    match (existing, value) {
        (Value::Object(old), Value::Object(new)) => {
            for (name, v) in new {
                let key = key_for(old, &name);
                if v.is_null() {
                    old.remove(&key);
                } else {
                    old.insert(key, v);
                }
            }
        }
        (Value::Array(old), Value::Array(new)) if append => old.extend(new),
        (Value::Array(old), new) if append => old.push(new),
        (slot, new) => *slot = new,
    }
}
