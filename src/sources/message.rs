//! SQS producer messages: `{"users": [{...CSV field names...}]}`, validated like CSV rows.

use serde_json::{Map, Value};

use super::fields::{canonical_field, validate, Field, RowError};
use crate::user::User;

/// Largest message body accepted, in bytes: the most SQS delivers (1 MiB since August 2025).
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// A problem with a message as a whole: none of its users can be read.
///
/// The body is never echoed: it holds personal data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// The body is larger than [`MAX_MESSAGE_BYTES`].
    #[error("the message body is {bytes} bytes, more than the {MAX_MESSAGE_BYTES} allowed; send fewer users per message")]
    TooLarge {
        /// Size of the body.
        bytes: usize,
    },
    /// The body is not JSON.
    #[error("the message body is not valid JSON (error at line {line}, column {column})")]
    NotJson {
        /// Line of the syntax error, from 1.
        line: usize,
        /// Column of the syntax error, from 1.
        column: usize,
    },
    /// The body is JSON but not an object.
    #[error("the message body must be a JSON object like {{\"users\": [...]}}, not {kind}")]
    NotAnObject {
        /// What it is instead.
        kind: &'static str,
    },
    /// The object has no `users` key.
    #[error("the message has no \"users\" array; expected {{\"users\": [...]}}")]
    NoUsersField,
    /// `users` is not an array.
    #[error("\"users\" must be an array of user objects, not {kind}")]
    UsersNotArray {
        /// What it is instead.
        kind: &'static str,
    },
    /// `users` is an empty array.
    #[error("\"users\" is empty: the message names nobody to provision")]
    NoUsers,
}

/// How a JSON value's type reads in a message (`a string`, `an array`, ...).
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Parses a producer message body into one result per entry of `users`, in order.
///
/// Keys are matched like CSV headers (aliases included); unknown keys are ignored. Values may
/// be strings, booleans or numbers; `null` counts as absent. A user's [`RowError`] is wrapped
/// in [`RowError::InUser`] naming its index.
pub fn parse_message(body: &str) -> Result<Vec<Result<User, RowError>>, MessageError> {
    if body.len() > MAX_MESSAGE_BYTES {
        return Err(MessageError::TooLarge { bytes: body.len() });
    }
    // Only the error's position is kept: serde_json messages can quote parts of the input.
    let value: Value = serde_json::from_str(body).map_err(|e| MessageError::NotJson {
        line: e.line(),
        column: e.column(),
    })?;
    let Value::Object(mut object) = value else {
        return Err(MessageError::NotAnObject { kind: kind(&value) });
    };
    let users = match object.remove("users") {
        None => return Err(MessageError::NoUsersField),
        Some(Value::Array(users)) => users,
        Some(other) => return Err(MessageError::UsersNotArray { kind: kind(&other) }),
    };
    if users.is_empty() {
        return Err(MessageError::NoUsers);
    }
    Ok(users
        .iter()
        .enumerate()
        .map(|(index, user)| {
            parse_user(user).map_err(|error| RowError::InUser {
                index,
                error: Box::new(error),
            })
        })
        .collect())
}

/// Validates a user that arrived already parsed (in a retry message) exactly like a producer's:
/// the same checks on the same fields. Returns the user as validation leaves it (trimmed,
/// blank optional fields absent, `user_name` defaulting to the email).
pub fn validate_user(user: &User) -> Result<User, RowError> {
    let mut values: Vec<(Field, &str)> = vec![
        (Field::Email, &user.email),
        (Field::FirstName, &user.first_name),
        (Field::LastName, &user.last_name),
        (Field::UserName, &user.user_name),
        (Field::Active, if user.active { "true" } else { "false" }),
    ];
    let optional = [
        (Field::DisplayName, &user.display_name),
        (Field::ExternalId, &user.external_id),
        (Field::Title, &user.title),
        (Field::Department, &user.department),
        (Field::EmployeeNumber, &user.employee_number),
        (Field::Phone, &user.phone),
    ];
    for (field, value) in optional {
        if let Some(value) = value {
            values.push((field, value));
        }
    }
    validate(&values)
}

fn parse_user(user: &Value) -> Result<User, RowError> {
    let Value::Object(fields) = user else {
        return Err(RowError::NotAnObject { kind: kind(user) });
    };
    let texts = texts(fields)?;
    let values: Vec<(Field, &str)> = texts.iter().map(|(f, v)| (*f, v.as_str())).collect();
    validate(&values)
}

/// The user's recognised fields as text: numbers (ids, phones) and booleans (`active`) are
/// spelled as JSON writes them, which `validate` accepts.
fn texts(fields: &Map<String, Value>) -> Result<Vec<(Field, String)>, RowError> {
    let mut texts = Vec::new();
    for (key, value) in fields {
        let Some(field) = canonical_field(key) else {
            continue;
        };
        let text = match value {
            Value::Null => continue,
            Value::String(s) => s.clone(),
            Value::Bool(b) => b.to_string(),
            Value::Number(n) => n.to_string(),
            Value::Array(_) | Value::Object(_) => {
                return Err(RowError::WrongType {
                    field,
                    kind: kind(value),
                })
            }
        };
        texts.push((field, text));
    }
    Ok(texts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn only_user(body: &str) -> Result<User, RowError> {
        let mut users = parse_message(body).unwrap();
        assert_eq!(users.len(), 1);
        users.remove(0)
    }

    #[test]
    fn the_contract_example_parses() {
        let body = r#"{"users": [{"email": "a@example.com", "first_name": "Ada", "last_name": "Lovelace", "status": "active"}]}"#;
        let user = only_user(body).unwrap();
        assert_eq!(user.user_name, "a@example.com");
        assert_eq!(user.first_name, "Ada");
        assert!(user.active);
    }

    #[test]
    fn aliases_booleans_and_numbers() {
        let body = r#"{"users": [{"Work Email": " b@example.com ", "givenName": "Bo", "Surname": "Li",
            "active": false, "Employee ID": 1234, "phone": 15550100, "title": null, "unknown": [1]}],
            "attempt": 3}"#;
        let user = only_user(body).unwrap();
        assert_eq!(user.email, "b@example.com");
        assert!(!user.active);
        assert_eq!(user.employee_number.as_deref(), Some("1234"));
        assert_eq!(user.phone.as_deref(), Some("15550100"));
        assert_eq!(user.title, None);
        let body = r#"{"users": [{"email": "b@example.com", "first_name": "B", "last_name": "L", "active": 0}]}"#;
        assert!(!only_user(body).unwrap().active);
    }

    #[test]
    fn bad_users_are_reported_by_index_and_others_go_on() {
        let body = r#"{"users": [
            {"email": "a@example.com", "first_name": "A", "last_name": "B"},
            "c@example.com",
            {"email": "secret.person@example.com", "first_name": "C"},
            {"email": "d@example.com", "first_name": "D", "last_name": "E", "status": "sabbatical"},
            {"email": "e@example.com", "first_name": ["E"], "last_name": "F"},
            {"email": "f@example.com", "mail": "g@example.com", "first_name": "F", "last_name": "G"}
        ]}"#;
        let users = parse_message(body).unwrap();
        assert_eq!(users.len(), 6);
        assert!(users[0].is_ok());
        let texts: Vec<String> = users[1..]
            .iter()
            .map(|u| u.as_ref().unwrap_err().to_string())
            .collect();
        assert!(
            texts[0].starts_with("users[1]: ") && texts[0].contains("a string"),
            "{}",
            texts[0]
        );
        assert!(
            texts[1].starts_with("users[2]: ") && texts[1].contains("last_name"),
            "{}",
            texts[1]
        );
        assert!(texts[2].contains("sabbatical"), "{}", texts[2]);
        assert!(
            texts[3].contains("first_name") && texts[3].contains("an array"),
            "{}",
            texts[3]
        );
        assert!(texts[4].contains("email is given twice"), "{}", texts[4]);
        assert!(texts.iter().all(|t| !t.contains("secret.person")));
    }

    #[test]
    fn bad_messages_are_rejected_without_echoing_the_body() {
        let not_json =
            parse_message("{\"users\": [{\"email\": \"secret@example.com\"").unwrap_err();
        assert!(matches!(not_json, MessageError::NotJson { .. }));
        assert!(!not_json.to_string().contains("secret"), "{not_json}");
        let garbage = parse_message("secret@example.com").unwrap_err();
        assert!(!garbage.to_string().contains("secret"), "{garbage}");
        assert_eq!(
            parse_message("[1]").unwrap_err(),
            MessageError::NotAnObject { kind: "an array" }
        );
        assert_eq!(parse_message("{}").unwrap_err(), MessageError::NoUsersField);
        assert_eq!(
            parse_message(r#"{"users": {"email": "a@example.com"}}"#).unwrap_err(),
            MessageError::UsersNotArray { kind: "an object" }
        );
        assert_eq!(
            parse_message(r#"{"users": []}"#).unwrap_err(),
            MessageError::NoUsers
        );
    }

    #[test]
    fn a_parsed_user_is_validated_like_a_producer_s() {
        let body = r#"{"users": [{"email": " b@example.com ", "first_name": "Bo", "last_name": "Li",
            "active": false, "title": "Agent", "phone": "  "}]}"#;
        let user = only_user(body).unwrap();
        assert_eq!(validate_user(&user), Ok(user.clone()));
        let mut bad = user.clone();
        bad.email = "secret.person".into();
        let error = validate_user(&bad).unwrap_err();
        assert!(matches!(error, RowError::InvalidEmail { .. }), "{error}");
        assert!(!error.to_string().contains("secret.person"), "{error}");
        let mut blank = user.clone();
        blank.last_name = " ".into();
        assert_eq!(
            validate_user(&blank),
            Err(RowError::Missing(Field::LastName))
        );
        let mut control = user.clone();
        control.user_name = "b@example.com\nadmin".into();
        assert!(matches!(
            validate_user(&control),
            Err(RowError::InvalidUserName { .. })
        ));
        let mut untrimmed = user.clone();
        untrimmed.first_name = " Bo ".into();
        untrimmed.title = Some("".into());
        let mut expected = user.clone();
        expected.title = None;
        assert_eq!(validate_user(&untrimmed), Ok(expected));
    }

    #[test]
    fn oversized_bodies_are_rejected_before_parsing() {
        let body = format!("{{\"users\": [\"{}\"]}}", "x".repeat(MAX_MESSAGE_BYTES));
        assert!(matches!(
            parse_message(&body),
            Err(MessageError::TooLarge { .. })
        ));
    }
}
