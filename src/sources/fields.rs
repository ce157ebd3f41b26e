//! Column names and row validation shared by CSV files and SQS producer messages.

use std::fmt;

use crate::mask::mask_email;
use crate::user::User;

/// Longest field accepted, in bytes; longer ones are a row error.
pub const MAX_FIELD_BYTES: usize = 64 * 1024;

/// A canonical input field: one of the contract's CSV column names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Field {
    /// `email` (required).
    Email,
    /// `first_name` (required).
    FirstName,
    /// `last_name` (required).
    LastName,
    /// `user_name` (defaults to the email).
    UserName,
    /// `display_name`.
    DisplayName,
    /// `external_id`.
    ExternalId,
    /// `active` (true/false/yes/no/y/n/1/0).
    Active,
    /// `status` (active, inactive, terminated, leaver, enabled, disabled).
    Status,
    /// `title`.
    Title,
    /// `department`.
    Department,
    /// `employee_number`.
    EmployeeNumber,
    /// `phone`.
    Phone,
}

impl Field {
    /// Every field, required ones first.
    pub const ALL: [Field; 12] = [
        Field::Email,
        Field::FirstName,
        Field::LastName,
        Field::UserName,
        Field::DisplayName,
        Field::ExternalId,
        Field::Active,
        Field::Status,
        Field::Title,
        Field::Department,
        Field::EmployeeNumber,
        Field::Phone,
    ];

    /// The fields every row must have a value for.
    pub const REQUIRED: [Field; 3] = [Field::Email, Field::FirstName, Field::LastName];

    /// The contract's column name (`email`, `first_name`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Field::Email => "email",
            Field::FirstName => "first_name",
            Field::LastName => "last_name",
            Field::UserName => "user_name",
            Field::DisplayName => "display_name",
            Field::ExternalId => "external_id",
            Field::Active => "active",
            Field::Status => "status",
            Field::Title => "title",
            Field::Department => "department",
            Field::EmployeeNumber => "employee_number",
            Field::Phone => "phone",
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Normalized header spellings (see [`normalize`]) and the field each one means.
/// Only unambiguous names: a wrong guess would provision wrong data silently,
/// while an unknown column is merely listed as ignored.
const ALIASES: &[(&str, Field)] = &[
    ("email", Field::Email),
    ("emailaddress", Field::Email),
    ("workemail", Field::Email),
    ("workemailaddress", Field::Email),
    ("businessemail", Field::Email),
    ("primaryemail", Field::Email),
    ("primaryemailaddress", Field::Email),
    ("mail", Field::Email),
    ("firstname", Field::FirstName),
    ("givenname", Field::FirstName),
    ("namegivenname", Field::FirstName),
    ("forename", Field::FirstName),
    ("lastname", Field::LastName),
    ("surname", Field::LastName),
    ("familyname", Field::LastName),
    ("namefamilyname", Field::LastName),
    ("username", Field::UserName),
    ("login", Field::UserName),
    ("loginname", Field::UserName),
    ("upn", Field::UserName),
    ("userprincipalname", Field::UserName),
    ("displayname", Field::DisplayName),
    ("fullname", Field::DisplayName),
    ("externalid", Field::ExternalId),
    ("active", Field::Active),
    ("enabled", Field::Active),
    ("isactive", Field::Active),
    ("accountenabled", Field::Active),
    ("status", Field::Status),
    ("employmentstatus", Field::Status),
    ("employeestatus", Field::Status),
    ("title", Field::Title),
    ("jobtitle", Field::Title),
    ("department", Field::Department),
    ("dept", Field::Department),
    ("departmentname", Field::Department),
    ("employeenumber", Field::EmployeeNumber),
    ("employeeid", Field::EmployeeNumber),
    ("employeeno", Field::EmployeeNumber),
    ("empid", Field::EmployeeNumber),
    ("empno", Field::EmployeeNumber),
    ("workerid", Field::EmployeeNumber),
    ("phone", Field::Phone),
    ("phonenumber", Field::Phone),
    ("workphone", Field::Phone),
    ("workphonenumber", Field::Phone),
    ("businessphone", Field::Phone),
    ("telephone", Field::Phone),
    ("telephonenumber", Field::Phone),
    ("mobile", Field::Phone),
    ("mobilephone", Field::Phone),
    ("mobilenumber", Field::Phone),
];

/// Lower-cases and drops whitespace, `_`, `-`, `.` and stray BOMs, so `Work E-mail`,
/// `work_email` and `workEmail` compare equal.
fn normalize(header: &str) -> String {
    header
        .chars()
        .filter(|c| !(c.is_whitespace() || matches!(c, '_' | '-' | '.' | '\u{feff}')))
        .flat_map(char::to_lowercase)
        .collect()
}

/// Maps a CSV header or JSON key to its canonical field, ignoring case, spaces, `_`, `-` and `.`.
pub fn canonical_field(header: &str) -> Option<Field> {
    let key = normalize(header);
    ALIASES
        .iter()
        .find(|(alias, _)| *alias == key)
        .map(|(_, field)| *field)
}

/// Why one row (or one user of a message) cannot be provisioned, in an administrator's words.
///
/// Email addresses are only ever shown masked (`a***@example.com`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RowError {
    /// A required field is absent or blank.
    #[error("{0} is empty; it is required")]
    Missing(Field),
    /// The email does not look like an address.
    #[error("email {shown:?} is not a valid address: {problem}")]
    InvalidEmail {
        /// The address, masked.
        shown: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// The userName cannot be used.
    #[error("user_name {shown:?} cannot be used: {problem}")]
    InvalidUserName {
        /// The userName, masked.
        shown: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// The `active` value is not a recognised yes/no word.
    #[error("active value {value:?} is not recognised; use true/false, yes/no, y/n or 1/0")]
    InvalidActive {
        /// The value as given (shortened).
        value: String,
    },
    /// The `status` value is not a recognised word.
    #[error(
        "status value {value:?} is not recognised; use active, inactive, terminated or leaver"
    )]
    InvalidStatus {
        /// The value as given (shortened).
        value: String,
    },
    /// `active` and `status` are both given and disagree.
    #[error("active is {active:?} but status is {status:?}; they disagree: fill in only one of them, or make them agree")]
    Conflict {
        /// The `active` value (shortened).
        active: String,
        /// The `status` value (shortened).
        status: String,
    },
    /// Two columns or keys of the row both mean the same field.
    #[error("{0} is given twice; keep only one")]
    DuplicateField(Field),
    /// The CSV record has a different number of fields than the header.
    #[error("the row has {found} fields but the header has {expected}; look for an unquoted comma or a missing field")]
    FieldCount {
        /// Number of header columns.
        expected: usize,
        /// Number of fields in the row.
        found: usize,
    },
    /// A CSV field is not UTF-8 text.
    #[error("column {column:?} is not valid UTF-8 text; save the file as \"CSV UTF-8\"")]
    NotUtf8 {
        /// The header of the column.
        column: String,
    },
    /// A CSV field is implausibly long.
    #[error("column {column:?} holds {bytes} bytes, more than the {max} allowed; an unclosed quote may have swallowed the lines after it", max = MAX_FIELD_BYTES)]
    FieldTooLong {
        /// The header of the column.
        column: String,
        /// Size of the field.
        bytes: usize,
    },
    /// A message value is an array or object where text was expected.
    #[error("{field} must be text, a number or a boolean, not {kind}")]
    WrongType {
        /// The field.
        field: Field,
        /// What was found (`an array`, `an object`).
        kind: &'static str,
    },
    /// A message entry is not a JSON object.
    #[error("expected an object of user fields, found {kind}")]
    NotAnObject {
        /// What was found.
        kind: &'static str,
    },
    /// An error about one user of an SQS message, with its position in `users` (from 0).
    #[error("users[{index}]: {error}")]
    InUser {
        /// Index in the message's `users` array, from 0.
        index: usize,
        /// What is wrong with that user.
        error: Box<RowError>,
    },
}

/// Shortens a value for an error message so a runaway field cannot flood a report.
pub(crate) fn excerpt(value: &str) -> String {
    const MAX_CHARS: usize = 40;
    match value.char_indices().nth(MAX_CHARS) {
        Some((cut, _)) => format!("{}…", &value[..cut]),
        None => value.to_owned(),
    }
}

/// Masks an address (or userName) for an error message: first character and domain only.
/// The domain is taken after the last `@`, so `a@b@c.com` does not reveal `b`.
fn masked(value: &str) -> String {
    let shown = match value.rsplit_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            mask_email(&format!("{first}@{domain}"))
        }
        None => mask_email(value),
    };
    excerpt(&shown)
}

/// Whether every byte is visible ASCII: such text has no whitespace or control character,
/// checked without decoding characters (the slow part of validating a row).
fn is_visible_ascii(value: &str) -> bool {
    // A fold without an early exit: the compiler checks many bytes per instruction.
    value
        .bytes()
        .fold(true, |visible, b| visible & b.is_ascii_graphic())
}

/// What is wrong with an email address, if anything. Deliberately simple (no crate): it catches
/// the usual spreadsheet mistakes and leaves RFC 5321 corner cases to the SCIM service.
fn email_problem(email: &str) -> Option<&'static str> {
    if !is_visible_ascii(email) && email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some("it contains a space or a control character");
    }
    let Some(at) = email.bytes().position(|b| b == b'@') else {
        return Some("it has no @");
    };
    let (local, domain) = (&email.as_bytes()[..at], &email.as_bytes()[at + 1..]);
    if domain.contains(&b'@') {
        return Some("it has more than one @");
    }
    if local.is_empty() {
        return Some("nothing comes before the @");
    }
    if !domain.contains(&b'.') {
        return Some("the domain after the @ has no dot");
    }
    if domain.starts_with(b".") || domain.ends_with(b".") || domain.windows(2).any(|w| w == b"..") {
        return Some(
            "the domain after the @ has an empty part (a leading, trailing or doubled dot)",
        );
    }
    None
}

/// `str::trim`, without decoding characters when the value starts and ends with visible ASCII.
fn trim(value: &str) -> &str {
    match (value.as_bytes().first(), value.as_bytes().last()) {
        (Some(a), Some(z)) if a.is_ascii_graphic() && z.is_ascii_graphic() => value,
        _ => value.trim(),
    }
}

/// Which of two word lists `value` is in, ignoring ASCII case (no allocation: it runs per row).
fn one_of(value: &str, yes: &[&str], no: &[&str]) -> Option<bool> {
    let is = |words: &[&str]| words.iter().any(|w| w.eq_ignore_ascii_case(value));
    if is(yes) {
        Some(true)
    } else if is(no) {
        Some(false)
    } else {
        None
    }
}

fn parse_active(value: &str) -> Result<bool, RowError> {
    one_of(
        value,
        &["true", "yes", "y", "1"],
        &["false", "no", "n", "0"],
    )
    .ok_or_else(|| RowError::InvalidActive {
        value: excerpt(value),
    })
}

fn parse_status(value: &str) -> Result<bool, RowError> {
    one_of(
        value,
        &["active", "enabled"],
        &["inactive", "terminated", "leaver", "disabled"],
    )
    .ok_or_else(|| RowError::InvalidStatus {
        value: excerpt(value),
    })
}

/// A valid row's values, borrowed from the row: what [`validate`] checks without owning anything
/// (checking a whole file needs no [`User`] per row).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checked<'a> {
    /// The userName (the email when the row has none), trimmed.
    pub user_name: &'a str,
    /// Whether the user is to be active.
    pub active: bool,
    /// Every value by field (trimmed; blank ones are None).
    slots: [Option<&'a str>; Field::ALL.len()],
}

impl Checked<'_> {
    /// A field's value, None when blank.
    pub fn get(&self, field: Field) -> Option<&str> {
        self.slots[field as usize]
    }

    /// The owned user.
    pub fn to_user(&self) -> User {
        let owned = |field: Field| self.get(field).map(str::to_owned);
        User {
            user_name: self.user_name.to_owned(),
            email: self.get(Field::Email).unwrap_or_default().to_owned(),
            first_name: self.get(Field::FirstName).unwrap_or_default().to_owned(),
            last_name: self.get(Field::LastName).unwrap_or_default().to_owned(),
            active: self.active,
            display_name: owned(Field::DisplayName),
            external_id: owned(Field::ExternalId),
            title: owned(Field::Title),
            department: owned(Field::Department),
            employee_number: owned(Field::EmployeeNumber),
            phone: owned(Field::Phone),
        }
    }
}

/// Validates one row's values (any order, each field at most once) into a [`User`].
///
/// Values are trimmed; blank optional values become `None`; `user_name` defaults to the email;
/// with neither `active` nor `status` the user is active.
pub fn validate(values: &[(Field, &str)]) -> Result<User, RowError> {
    check(values).map(|checked| checked.to_user())
}

/// [`validate`] without owning the values: the same checks, the same errors.
pub fn check<'a>(values: &[(Field, &'a str)]) -> Result<Checked<'a>, RowError> {
    let mut slots: [Option<&str>; Field::ALL.len()] = [None; Field::ALL.len()];
    for &(field, value) in values {
        let slot = &mut slots[field as usize];
        if slot.is_some() {
            return Err(RowError::DuplicateField(field));
        }
        *slot = Some(trim(value));
    }
    for slot in &mut slots {
        *slot = slot.filter(|v| !v.is_empty());
    }
    let get = |field: Field| slots[field as usize];
    let required = |field: Field| get(field).ok_or(RowError::Missing(field));

    let email = required(Field::Email)?;
    if let Some(problem) = email_problem(email) {
        return Err(RowError::InvalidEmail {
            shown: masked(email),
            problem,
        });
    }
    required(Field::FirstName)?;
    required(Field::LastName)?;
    let user_name = get(Field::UserName).unwrap_or(email);
    // Quotes, backslashes and non-ASCII are fine in a userName (the SCIM client escapes them in
    // filters); control characters would break filters and logs alike.
    if !is_visible_ascii(user_name) && user_name.chars().any(char::is_control) {
        return Err(RowError::InvalidUserName {
            shown: masked(user_name),
            problem: "it contains a control character (a line break or tab?)",
        });
    }

    let from_active = get(Field::Active).map(parse_active).transpose()?;
    let from_status = get(Field::Status).map(parse_status).transpose()?;
    let active = match (from_active, from_status) {
        (Some(a), Some(s)) if a != s => {
            return Err(RowError::Conflict {
                active: excerpt(get(Field::Active).unwrap_or_default()),
                status: excerpt(get(Field::Status).unwrap_or_default()),
            })
        }
        (Some(a), _) => a,
        (None, Some(s)) => s,
        (None, None) => true,
    };
    Ok(Checked {
        user_name,
        active,
        slots,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn row<'a>(pairs: &[(Field, &'a str)]) -> Vec<(Field, &'a str)> {
        let mut v = vec![
            (Field::Email, "ada@example.com"),
            (Field::FirstName, "Ada"),
            (Field::LastName, "Lovelace"),
        ];
        v.retain(|(f, _)| !pairs.iter().any(|(g, _)| g == f));
        v.extend_from_slice(pairs);
        v
    }

    #[test]
    fn canonical_names_and_aliases() {
        let cases = [
            ("email", Field::Email),
            ("Email Address", Field::Email),
            ("Work Email", Field::Email),
            ("work-e-mail", Field::Email),
            ("mail", Field::Email),
            ("Primary Email", Field::Email),
            ("first_name", Field::FirstName),
            ("Given Name", Field::FirstName),
            ("givenName", Field::FirstName),
            ("name.givenName", Field::FirstName),
            ("FORENAME", Field::FirstName),
            ("Last Name", Field::LastName),
            ("Surname", Field::LastName),
            ("familyName", Field::LastName),
            ("userName", Field::UserName),
            ("UserPrincipalName", Field::UserName),
            ("UPN", Field::UserName),
            ("login", Field::UserName),
            ("Display Name", Field::DisplayName),
            ("Full Name", Field::DisplayName),
            ("externalId", Field::ExternalId),
            ("Employee ID", Field::EmployeeNumber),
            ("employeeNumber", Field::EmployeeNumber),
            ("Emp ID", Field::EmployeeNumber),
            ("Worker ID", Field::EmployeeNumber),
            ("Dept", Field::Department),
            ("Job Title", Field::Title),
            ("Phone Number", Field::Phone),
            ("Work Phone", Field::Phone),
            ("telephone", Field::Phone),
            ("Mobile", Field::Phone),
            ("Enabled", Field::Active),
            ("Employment Status", Field::Status),
            ("  \u{feff}E_MAIL  ", Field::Email),
        ];
        for (header, field) in cases {
            assert_eq!(canonical_field(header), Some(field), "{header}");
        }
        for field in Field::ALL {
            assert_eq!(canonical_field(field.name()), Some(field));
        }
        for unknown in ["", "name", "id", "manager", "cost centre", "e"] {
            assert_eq!(canonical_field(unknown), None, "{unknown}");
        }
    }

    #[test]
    fn a_minimal_row_is_valid_and_defaults_apply() {
        let user = validate(&row(&[(Field::Title, "  "), (Field::Phone, " +1 555 ")])).unwrap();
        assert_eq!(user.user_name, "ada@example.com");
        assert!(user.active);
        assert_eq!(user.title, None);
        assert_eq!(user.phone.as_deref(), Some("+1 555"));
    }

    #[test]
    fn user_name_may_hold_quotes_backslashes_and_non_ascii() {
        let name = r#"o'brien "the" \ zoë"#;
        let user = validate(&row(&[(Field::UserName, name)])).unwrap();
        assert_eq!(user.user_name, name);
        let err = validate(&row(&[(Field::UserName, "a\nb")])).unwrap_err();
        assert!(matches!(err, RowError::InvalidUserName { .. }), "{err}");
    }

    #[test]
    fn required_fields_are_named() {
        for field in Field::REQUIRED {
            let err = validate(&row(&[(field, " ")])).unwrap_err();
            assert_eq!(err, RowError::Missing(field));
            assert!(err.to_string().contains(field.name()), "{err}");
        }
        assert_eq!(validate(&[]).unwrap_err(), RowError::Missing(Field::Email));
    }

    #[test]
    fn bad_emails_are_rejected_without_showing_the_address() {
        for bad in [
            "ada.lovelace",
            "ada.lovelace@@example.com",
            "ada.lovelace@secret@example.com",
            "@example.com",
            "ada.lovelace@localhost",
            "ada.lovelace@example..com",
            "ada.lovelace@.example.com",
            "ada lovelace@example.com",
            "ada.lovelace@example.com\u{7}",
        ] {
            let err = validate(&row(&[(Field::Email, bad)])).unwrap_err();
            let text = err.to_string();
            assert!(
                matches!(err, RowError::InvalidEmail { .. }),
                "{bad}: {text}"
            );
            assert!(!text.contains("lovelace"), "{text}");
            assert!(!text.contains("secret"), "{text}");
        }
        let ok = validate(&row(&[(Field::Email, "élodie+tag@exemple.co.fr")]));
        assert!(ok.is_ok());
    }

    #[test]
    fn active_and_status_words() {
        let active = |a: Option<&str>, s: Option<&str>| {
            let mut pairs = Vec::new();
            pairs.extend(a.map(|a| (Field::Active, a)));
            pairs.extend(s.map(|s| (Field::Status, s)));
            validate(&row(&pairs)).map(|u| u.active)
        };
        for yes in ["true", "YES", "y", "1", "True"] {
            assert_eq!(active(Some(yes), None), Ok(true), "{yes}");
        }
        for no in ["false", "No", "n", "0"] {
            assert_eq!(active(Some(no), None), Ok(false), "{no}");
        }
        for word in ["active", "Enabled"] {
            assert_eq!(active(None, Some(word)), Ok(true), "{word}");
        }
        for word in ["inactive", "Terminated", "LEAVER", "disabled"] {
            assert_eq!(active(None, Some(word)), Ok(false), "{word}");
        }
        assert_eq!(active(None, None), Ok(true));
        assert_eq!(active(Some(""), Some("")), Ok(true));
        assert_eq!(active(Some("yes"), Some("active")), Ok(true));
        assert_eq!(active(Some("no"), Some("leaver")), Ok(false));

        let err = active(None, Some("on leave")).unwrap_err();
        assert!(err.to_string().contains("\"on leave\""), "{err}");
        let err = active(Some("maybe"), None).unwrap_err();
        assert!(err.to_string().contains("maybe"), "{err}");
        let err = active(Some("yes"), Some("terminated")).unwrap_err();
        assert!(matches!(err, RowError::Conflict { .. }));
        assert!(err.to_string().contains("disagree"), "{err}");
    }

    #[test]
    fn a_field_given_twice_is_an_error() {
        let err = validate(&row(&[
            (Field::Email, "a@example.com"),
            (Field::Email, "b@example.com"),
        ]));
        assert_eq!(err.unwrap_err(), RowError::DuplicateField(Field::Email));
    }

    #[test]
    fn long_values_are_shortened_in_messages() {
        let long = "x".repeat(10_000);
        let err = validate(&row(&[(Field::Status, &long)])).unwrap_err();
        assert!(err.to_string().len() < 200, "{err}");
    }

    proptest! {
        #[test]
        fn canonical_field_never_panics(header in any::<String>()) {
            let _ = canonical_field(&header);
        }

        #[test]
        fn validate_never_panics(values in proptest::collection::vec((0usize..12, any::<String>()), 0..14)) {
            let pairs: Vec<(Field, &str)> =
                values.iter().map(|(i, v)| (Field::ALL[*i], v.as_str())).collect();
            let _ = validate(&pairs).map_err(|e| e.to_string());
        }

        /// The byte-level checks give the answers of the plain character-level definitions.
        #[test]
        fn fast_checks_agree_with_their_definitions(
            value in proptest::string::string_regex("[ a-z.@\\t\u{a0}\u{85}\u{2003}é\u{7}]{0,12}").unwrap(),
        ) {
            prop_assert_eq!(trim(&value), value.trim());
            prop_assert_eq!(email_problem(&value), email_problem_by_chars(&value));
        }
    }

    /// `email_problem` as first written, on characters: the definition the byte checks must keep.
    fn email_problem_by_chars(value: &str) -> Option<&'static str> {
        if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Some("it contains a space or a control character");
        }
        match value.split_once('@') {
            None => Some("it has no @"),
            Some((_, domain)) if domain.contains('@') => Some("it has more than one @"),
            Some(("", _)) => Some("nothing comes before the @"),
            Some((_, domain)) if !domain.contains('.') => Some("the domain after the @ has no dot"),
            Some((_, domain)) if domain.split('.').any(str::is_empty) => Some(
                "the domain after the @ has an empty part (a leading, trailing or doubled dot)",
            ),
            Some(_) => None,
        }
    }

    /// Every string of up to six characters over an alphabet that makes every address mistake
    /// (dots anywhere, several @s, spaces, non-ASCII, a control character): the byte checks
    /// agree with the character-level definitions on all of them.
    #[test]
    fn fast_checks_agree_on_every_short_address_shape() {
        const ALPHABET: [char; 7] = ['a', '.', '@', ' ', 'é', '\u{a0}', '\u{7}'];
        let mut values = vec![String::new()];
        let mut checked = 0;
        for _ in 0..6 {
            values = values
                .iter()
                .flat_map(|v| ALPHABET.iter().map(move |c| format!("{v}{c}")))
                .collect();
            for value in &values {
                assert_eq!(trim(value), value.trim(), "{value:?}");
                assert_eq!(
                    email_problem(value),
                    email_problem_by_chars(value),
                    "{value:?}"
                );
                checked += 1;
            }
        }
        assert_eq!(checked, 137_256);
    }
}
