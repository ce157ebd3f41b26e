//! The tests' one HR export generator: people with invalid rows, leavers (some of them in the
//! tenant beforehand), users in the tenant with stale attributes, userNames repeated in the
//! file (in another case, the last row winning), a quoted multi-line field and HR-style
//! headers — each on request — and what every row should lead to.
#![allow(dead_code)] // each test file uses the features it needs

use std::collections::HashMap;

/// What a data row should lead to.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Active,
    /// status leaver; `exists`: the user is in the tenant beforehand.
    Leaver {
        exists: bool,
    },
    Invalid,
    /// A later row (this line) has the same userName, in any case.
    Superseded(u64),
}

/// One data row and what it should lead to.
#[derive(Debug, Clone)]
pub struct Record {
    /// Its line in the file (the header is line 1).
    pub line: u64,
    pub email: String,
    pub first: String,
    pub last: String,
    pub title: String,
    pub department: String,
    pub employee: String,
    /// The status cell as written.
    pub status: String,
    pub kind: Kind,
    /// In the tenant beforehand with stale attributes (and this active flag).
    pub stale: Option<bool>,
}

impl Record {
    /// The userName folded, as the tool matches it.
    pub fn key(&self) -> String {
        self.email.to_lowercase()
    }
}

/// Every `every`th person from `offset` on (`every` 0: nobody).
#[derive(Debug, Clone, Copy, Default)]
pub struct Every {
    pub every: usize,
    pub offset: usize,
}

impl Every {
    pub const NEVER: Every = Every {
        every: 0,
        offset: 0,
    };

    pub const fn of(every: usize, offset: usize) -> Every {
        Every { every, offset }
    }

    fn holds(self, i: usize) -> bool {
        self.every > 0 && i % self.every == self.offset
    }
}

/// Which rows an export holds.
#[derive(Debug, Clone)]
pub struct Shape {
    pub people: usize,
    /// userNames are `<prefix><i, 5 digits>@example.com`.
    pub prefix: &'static str,
    /// Rows without a last name.
    pub no_last_name: Every,
    /// Rows whose email has no @.
    pub bad_email: Every,
    /// Rows whose status word is unknown ("sabbatical").
    pub bad_status: Every,
    /// Leavers, and of them those in the tenant beforehand.
    pub leavers: Every,
    pub leavers_existing: Every,
    /// Active people in the tenant beforehand with a stale title; of them, those inactive there.
    pub stale: Every,
    pub stale_inactive: Every,
    /// Active people whose earlier row, in upper case with an older title, is superseded.
    pub repeated_before: Every,
    /// Active people again at the end of the file with a new title (the earlier row superseded).
    pub repeated_after: Every,
    /// ... and whether that last row spells the email in another case.
    pub repeated_after_other_case: bool,
    /// The person whose department is a quoted field with a comma, quotes and a line break.
    pub multiline: Option<usize>,
    /// HR-export column names (Email Address, First Name, ...) and an unknown column; status
    /// cells then vary ("Active", blank for active).
    pub hr_headers: bool,
}

impl Shape {
    /// `people` people and nothing else.
    pub fn plain(people: usize, prefix: &'static str) -> Shape {
        Shape {
            people,
            prefix,
            no_last_name: Every::NEVER,
            bad_email: Every::NEVER,
            bad_status: Every::NEVER,
            leavers: Every::NEVER,
            leavers_existing: Every::NEVER,
            stale: Every::NEVER,
            stale_inactive: Every::NEVER,
            repeated_before: Every::NEVER,
            repeated_after: Every::NEVER,
            repeated_after_other_case: false,
            multiline: None,
            hr_headers: false,
        }
    }
}

/// The export as CSV bytes, and its rows in file order.
pub fn export(shape: &Shape) -> (Vec<u8>, Vec<Record>) {
    let mut records = Vec::new();
    let mut again = Vec::new();
    for i in 0..shape.people {
        let mut r = Record {
            line: 0,
            email: format!("{}{i:05}@example.com", shape.prefix),
            first: format!("Given{i}"),
            last: format!("Family{i}"),
            title: format!("Agent {}", i % 7),
            department: if shape.multiline == Some(i) {
                "Sales, \"EMEA\"\nNorth".into()
            } else {
                format!("Dept{}", i % 5)
            },
            employee: format!("E{i:05}"),
            status: if shape.hr_headers && i % 2 == 1 {
                String::new()
            } else {
                "Active".into()
            },
            kind: Kind::Active,
            stale: None,
        };
        if shape.no_last_name.holds(i) {
            r.last.clear();
            r.kind = Kind::Invalid;
        } else if shape.bad_email.holds(i) {
            r.email = format!("{}{i:05}-at-example.com", shape.prefix);
            r.kind = Kind::Invalid;
        } else if shape.bad_status.holds(i) {
            r.status = "sabbatical".into();
            r.kind = Kind::Invalid;
        } else if shape.leavers.holds(i) {
            r.status = "leaver".into();
            r.kind = Kind::Leaver {
                exists: shape.leavers_existing.holds(i),
            };
        } else if shape.stale.holds(i) {
            r.stale = Some(!shape.stale_inactive.holds(i));
        }
        if r.kind == Kind::Active && shape.repeated_before.holds(i) {
            records.push(Record {
                email: r.email.to_uppercase(),
                title: "Old Title".into(),
                ..r.clone()
            });
        }
        if r.kind == Kind::Active && shape.repeated_after.holds(i) {
            let email = if shape.repeated_after_other_case {
                capitalized(&r.email)
            } else {
                r.email.clone()
            };
            again.push(Record {
                email,
                title: "Senior Agent".into(),
                stale: None,
                ..r.clone()
            });
        }
        records.push(r);
    }
    records.extend(again);

    let mut out = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    let header: &[&str] = if shape.hr_headers {
        &[
            "Email Address",
            "First Name",
            "Last Name",
            "Status",
            "Job Title",
            "Department",
            "Employee ID",
            "Badge Colour",
        ]
    } else {
        &[
            "email",
            "first_name",
            "last_name",
            "status",
            "title",
            "department",
            "employee_id",
        ]
    };
    out.write_record(header).expect("header");
    let mut line = 2;
    for r in records.iter_mut() {
        r.line = line;
        let mut fields = vec![
            r.email.as_str(),
            &r.first,
            &r.last,
            &r.status,
            &r.title,
            &r.department,
            &r.employee,
        ];
        if shape.hr_headers {
            fields.push("blue");
        }
        out.write_record(fields).expect("row");
        line += 1 + r.department.matches('\n').count() as u64;
    }
    // Earlier rows of a repeated userName (case-insensitively) are superseded by the last one.
    let mut last_line: HashMap<String, u64> = HashMap::new();
    for r in records.iter().filter(|r| r.kind != Kind::Invalid) {
        last_line.insert(r.key(), r.line);
    }
    for r in records.iter_mut() {
        if let Some(&last) = last_line.get(&r.key()) {
            if last > r.line && r.kind != Kind::Invalid {
                r.kind = Kind::Superseded(last);
            }
        }
    }
    (out.into_inner().expect("csv"), records)
}

/// `c00001@example.com` as `C00001@Example.com`.
fn capitalized(email: &str) -> String {
    let (local, domain) = email.split_once('@').unwrap_or((email, ""));
    let cap = |s: &str| {
        let mut c = s.chars();
        c.next()
            .map(|f| f.to_uppercase().chain(c).collect::<String>())
            .unwrap_or_default()
    };
    format!("{}@{}", cap(local), cap(domain))
}
