//! Bad CSV input, end to end through the command-line tool (`validate`, and `provision` against
//! the embedded tenant): every case ends with the exit code, the message or report line (row
//! number and reason) a user sees, the good rows still provisioned, and nothing sent when the
//! whole file is rejected. Plus a million-row file streamed through the library's reader with
//! its peak memory measured, and a property test of header matching.

mod support;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use proptest::prelude::*;
use scim_bulk_provisioner::sources::{canonical_field, CsvSource, Field};
use scim_bulk_provisioner::tenant::{Tenant, TenantConfig};
use serde_json::{json, Value};
use support::{run_cli, CliRun};

const TOKEN: &str = "bad-input-csv-token-71c2";
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(FIXTURES).join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// What one run of the binary showed.
#[derive(Debug)]
struct Run {
    code: i32,
    out: String,
    err: String,
    /// The `--report` file's lines (empty when it was not written).
    report: Vec<Value>,
}

impl Run {
    /// The report lines with this status.
    fn lines(&self, status: &str) -> Vec<&Value> {
        self.report
            .iter()
            .filter(|l| l["status"] == status)
            .collect()
    }

    /// The report line of this row, which must exist.
    fn row(&self, row: u64) -> &Value {
        self.report
            .iter()
            .find(|l| l["row"] == row)
            .unwrap_or_else(|| panic!("no report line for row {row}: {self:#?}"))
    }
}

/// Runs the binary off the async runtime (which keeps serving the tenant meanwhile).
async fn run_bin(args: Vec<String>, report: Option<PathBuf>) -> Run {
    let CliRun { code, out, err } = run_cli(args, Vec::new()).await;
    let report = report
        .and_then(|path| std::fs::read_to_string(path).ok())
        .map(|text| {
            text.lines()
                .map(|l| serde_json::from_str(l).expect("report line is JSON"))
                .collect()
        })
        .unwrap_or_default();
    Run {
        code,
        out,
        err,
        report,
    }
}

/// `validate --csv FILE` on these bytes.
async fn validate(csv: &[u8]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("staff.csv");
    std::fs::write(&path, csv).unwrap();
    run_bin(
        vec![
            "validate".into(),
            "--csv".into(),
            path.display().to_string(),
        ],
        None,
    )
    .await
}

async fn tenant() -> Tenant {
    Tenant::start(TenantConfig {
        bearer_token: TOKEN.into(),
        ..TenantConfig::default()
    })
    .await
    .expect("embedded tenant")
}

/// `provision --csv FILE --report REPORT` of these bytes into the tenant.
async fn provision(tenant: &Tenant, csv: &[u8]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("staff.csv");
    std::fs::write(&path, csv).unwrap();
    let credentials = dir.path().join("scim.json");
    let secret = json!({"base_url": tenant.base_url(), "auth_type": "bearer", "token": TOKEN});
    std::fs::write(&credentials, secret.to_string()).unwrap();
    let report = dir.path().join("report.jsonl");
    let args = [
        "provision",
        "--quiet",
        "--csv",
        &path.display().to_string(),
        "--credentials",
        &credentials.display().to_string(),
        "--report",
        &report.display().to_string(),
    ]
    .map(String::from)
    .to_vec();
    run_bin(args, Some(report)).await
}

/// The tenant's users by userName (exact), with how many have it.
fn count(tenant: &Tenant, user_name: &str) -> usize {
    tenant
        .users()
        .iter()
        .filter(|u| u["userName"] == user_name)
        .count()
}

fn user(tenant: &Tenant, user_name: &str) -> Value {
    let users = tenant.users();
    let found: Vec<&Value> = users
        .iter()
        .filter(|u| u["userName"] == user_name)
        .collect();
    assert_eq!(found.len(), 1, "{user_name} exactly once in {users:#?}");
    found[0].clone()
}

/// A line of the run summary's table.
fn summary_row(label: &str, n: u64) -> String {
    format!("  {label:<15}{n:>9}\n")
}

fn reason(line: &Value) -> &str {
    line["reason"].as_str().unwrap_or_default()
}

/// A file the tool must refuse before anything is sent: `validate` and `provision` exit 2 with
/// `words` on stderr, and the tenant sees no request at all.
async fn rejected_whole(csv: &[u8], words: &[&str]) {
    let checked = validate(csv).await;
    assert_eq!(checked.code, 2, "validate: {checked:#?}");
    let t = tenant().await;
    let run = provision(&t, csv).await;
    assert_eq!(run.code, 2, "provision: {run:#?}");
    for word in words {
        assert!(checked.err.contains(word), "{word:?} not in {checked:#?}");
        assert!(run.err.contains(word), "{word:?} not in {run:#?}");
    }
    assert_eq!(t.stats().requests, 0, "nothing may be sent: {run:#?}");
    assert!(t.users().is_empty());
}

const HEADER: &str = "email,first_name,last_name\n";

/// Empty file (and one of blank lines, and a lone BOM): rejected whole, exit 2, nothing sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_file_is_rejected_whole_and_nothing_is_sent() {
    for empty in [&b""[..], b"\n\r\n  \n", b"\xEF\xBB\xBF"] {
        rejected_whole(empty, &["the file is empty", "header row"]).await;
    }
}

/// Header only: nothing to do, exit 0, no user created, no BulkRequest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_only_file_provisions_nobody_and_exits_0() {
    let checked = validate(HEADER.as_bytes()).await;
    assert_eq!(checked.code, 0, "{checked:#?}");
    assert!(
        checked.out.contains("Rows: 0 read, 0 valid, 0 invalid"),
        "{checked:#?}"
    );
    let t = tenant().await;
    let run = provision(&t, HEADER.as_bytes()).await;
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(run.out.contains(&summary_row("rows read", 0)), "{run:#?}");
    assert!(run.report.is_empty(), "{run:#?}");
    assert_eq!(t.stats().bulk_requests, 0);
    assert!(t.users().is_empty());
}

/// A required column missing (even with good-looking rows): exit 2 naming every missing column
/// and the headers found; nothing sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_required_column_rejects_the_file_and_sends_nothing() {
    let csv = "Work Email,Given Name,Department\nada@example.com,Ada,R&D\n";
    rejected_whole(
        csv.as_bytes(),
        &["missing required column(s) last_name", "\"Department\""],
    )
    .await;
    let csv = "Name,Dept\nAda Lovelace,R&D\n";
    rejected_whole(csv.as_bytes(), &["email, first_name, last_name"]).await;
}

/// A file without a header row: rejected whole, naming the missing columns and saying the first
/// line looks like data; neither the message nor any log line (at trace level) quotes the first
/// row's email, name or phone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_without_a_header_row_is_rejected_without_quoting_its_first_row() {
    let csv = "augusta.king@example.com,Augusta,Lovelace-Byron,+44 20 7946 0958\n\
               charles.b@example.com,Charles,Babbage,+44 20 7946 0000\n";
    let words = [
        "missing required column(s) email, first_name, last_name",
        "the first line looks like data, not a header",
    ];
    rejected_whole(csv.as_bytes(), &words).await;
    let t = tenant().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("staff.csv");
    std::fs::write(&path, csv).unwrap();
    let credentials = dir.path().join("scim.json");
    let secret = json!({"base_url": t.base_url(), "auth_type": "bearer", "token": TOKEN});
    std::fs::write(&credentials, secret.to_string()).unwrap();
    let (path, credentials) = (
        path.display().to_string(),
        credentials.display().to_string(),
    );
    let runs = [
        vec!["validate", "--csv", &path],
        vec!["provision", "--csv", &path, "--credentials", &credentials],
    ];
    for args in runs {
        let args: Vec<String> = args.into_iter().map(String::from).collect();
        let run = run_cli(args.clone(), vec![("RUST_LOG", "trace".into())]).await;
        assert_eq!(run.code, 2, "{args:?}: {run:#?}");
        let all = format!("{}\n{}", run.out, run.err);
        for word in words {
            assert!(all.contains(word), "{args:?}: {word:?} not in {all}");
        }
        for personal in ["augusta", "Augusta", "Lovelace", "Byron", "7946", "0958"] {
            assert!(!all.contains(personal), "{args:?}: {personal:?} in {all}");
        }
    }
    assert_eq!(t.stats().requests, 0, "nothing may be sent");
}

/// Unknown columns: ignored (their values go nowhere), named by `validate`, listed once in the
/// provision report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_columns_are_ignored_and_listed_once_in_the_report() {
    let csv = "email,Shoe Size,first_name,last_name,Cost Centre\n\
               ada@example.com,38,Ada,Lovelace,C1\n\
               bob@example.com,44,Bob,Builder,C2\n";
    let checked = validate(csv.as_bytes()).await;
    assert_eq!(checked.code, 0, "{checked:#?}");
    assert!(
        checked
            .out
            .contains("Shoe Size    (ignored: matches no field)"),
        "{checked:#?}"
    );
    let t = tenant().await;
    let run = provision(&t, csv.as_bytes()).await;
    assert_eq!(run.code, 0, "{run:#?}");
    let ada = user(&t, "ada@example.com");
    // No attribute took the ignored column's value (meta timestamps may hold "38" by chance).
    assert!(!ada.to_string().contains("\"38\""), "{ada}");
    assert_eq!(count(&t, "bob@example.com"), 1);
    let ignored = run.lines("ignored");
    assert_eq!(ignored.len(), 1, "listed once: {run:#?}");
    assert!(reason(ignored[0]).contains("\"Shoe Size\""), "{run:#?}");
    assert!(reason(ignored[0]).contains("\"Cost Centre\""), "{run:#?}");
}

/// BOM, CRLF, quoted commas, doubled quotes and line breaks inside quotes: values arrive intact
/// in the tenant, and rows after a multi-line record are reported with their editor line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bom_crlf_and_quoted_fields_arrive_intact_with_editor_line_numbers() {
    let csv = fixture("bad/bom_crlf_quotes.csv");
    assert!(csv.starts_with(b"\xEF\xBB\xBF") && csv.windows(2).any(|w| w == b"\r\n"));
    let t = tenant().await;
    let run = provision(&t, &csv).await;
    assert_eq!(run.code, 1, "one invalid row: {run:#?}");
    let grace = user(&t, "grace@example.com");
    assert_eq!(grace["name"]["givenName"], "Grace \"Amazing\"");
    assert_eq!(grace["title"], "Rear Admiral, Navy");
    let alan = user(&t, "alan@example.com");
    assert_eq!(alan["title"], "Head of\nCryptanalysis, Hut 8");
    assert_eq!(alan["name"]["familyName"], "Turing");
    user(&t, "ada@example.com");
    // Header 1, Ada 2, Grace 3, Alan 4-5, the bad row 6, Kat 7.
    let bad = run.row(6);
    assert_eq!(bad["status"], "invalid");
    assert!(reason(bad).contains("last_name is empty"), "{bad}");
    user(&t, "kat@example.com");
    assert_eq!(t.users().len(), 4);
}

/// `;` and tab delimited exports are detected and provisioned; a `;` header holding a comma is
/// read as `,` and rejected clearly, naming the headers it found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn semicolon_and_tab_files_are_detected_or_rejected_clearly() {
    let t = tenant().await;
    let run = provision(&t, &fixture("bad/semicolon.csv")).await;
    assert_eq!(run.code, 0, "{run:#?}");
    let anna = user(&t, "anna@example.de");
    assert_eq!(anna["name"]["familyName"], "Müller");
    assert_eq!(
        anna["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"]["department"],
        "Vertrieb, Nord"
    );
    let bernd = user(&t, "bernd@example.de");
    assert_eq!(
        bernd["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"]["department"],
        "Einkauf; Zentral"
    );

    let run = provision(&t, &fixture("bad/tab.tsv")).await;
    assert_eq!(run.code, 0, "{run:#?}");
    let chloe = user(&t, "chloe.dubois@corp.example.fr");
    assert_eq!(chloe["name"]["givenName"], "Chloé");
    assert_eq!(chloe["title"], "Agent; Level 2, Paris");
    assert_eq!(t.users().len(), 4);

    let checked = validate(&fixture("bad/semicolon.csv")).await;
    assert!(checked.out.contains("(delimiter \";\")"), "{checked:#?}");
    let checked = validate(&fixture("bad/tab.tsv")).await;
    assert!(checked.out.contains("(delimiter \"tab\")"), "{checked:#?}");

    // The comma in the first header makes it a comma file: one column per comma-separated piece.
    let ambiguous = "Name, Title;Email;First Name;Last Name\nBoss;a@example.com;A;B\n";
    rejected_whole(
        ambiguous.as_bytes(),
        &[
            "missing required column(s) email, first_name, last_name",
            "\"Name\"",
        ],
    )
    .await;
}

/// Invalid UTF-8 bytes in one row: that row is reported (line, column, what to do), the others
/// are provisioned; a Latin-1 header rejects the file whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_in_one_row_is_reported_and_the_others_go() {
    let csv = fixture("bad/latin1_row.csv");
    assert!(std::str::from_utf8(&csv).is_err());
    let t = tenant().await;
    let run = provision(&t, &csv).await;
    assert_eq!(run.code, 1, "{run:#?}");
    let bad = run.row(3);
    assert_eq!(bad["status"], "invalid");
    assert!(
        reason(bad).contains("column \"last_name\" is not valid UTF-8"),
        "{bad}"
    );
    assert!(reason(bad).contains("CSV UTF-8"), "{bad}");
    assert_eq!(run.lines("invalid").len(), 1, "{run:#?}");
    assert_eq!(
        user(&t, "ada@example.com")["name"]["familyName"],
        "Lovelace"
    );
    assert_eq!(
        user(&t, "zoe@example.com")["name"]["familyName"],
        "Ångström"
    );
    assert_eq!(count(&t, "jose@example.com"), 0);
    assert!(
        run.out.contains(&summary_row("invalid rows", 1)),
        "{run:#?}"
    );

    rejected_whole(
        b"Email,Pr\xE9nom,Nom\na@example.com,A,B\n",
        &["not valid UTF-8"],
    )
    .await;
}

/// A single field of 5 MB: that row is reported with the column and its size (the report line
/// stays short), the rows around it are provisioned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_field_of_megabytes_is_reported_and_the_rows_around_it_go() {
    let big = "x".repeat(5 * 1024 * 1024);
    let csv = format!(
        "email,first_name,last_name,title\n\
         ada@example.com,Ada,Lovelace,Analyst\n\
         big@example.com,Big,Field,\"{big}\"\n\
         bob@example.com,Bob,Builder,Agent\n"
    );
    let t = tenant().await;
    let run = provision(&t, csv.as_bytes()).await;
    assert_eq!(run.code, 1, "{}", run.err);
    let bad = run.row(3);
    assert_eq!(bad["status"], "invalid");
    assert!(
        reason(bad).contains(&format!("column \"title\" holds {} bytes", big.len())),
        "{bad}"
    );
    assert!(bad.to_string().len() < 1_000, "the report stays short");
    assert!(run.out.len() < 10_000 && run.err.len() < 10_000);
    user(&t, "ada@example.com");
    user(&t, "bob@example.com");
    assert_eq!(count(&t, "big@example.com"), 0);
}

/// Rows with too many or too few fields: each reported with its line and both counts; the rest go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_with_too_many_or_too_few_fields_are_reported_and_the_rest_go() {
    let csv = format!(
        "{HEADER}ada@example.com,Ada,Lovelace\n\
         eve@example.com,Eve,Smith,Jr.\n\
         mal@example.com,Mal\n\
         bob@example.com,Bob,Builder\n"
    );
    let t = tenant().await;
    let run = provision(&t, csv.as_bytes()).await;
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(
        reason(run.row(3)).contains("the row has 4 fields but the header has 3"),
        "{run:#?}"
    );
    assert!(
        reason(run.row(4)).contains("the row has 2 fields but the header has 3"),
        "{run:#?}"
    );
    assert_eq!(run.lines("invalid").len(), 2);
    user(&t, "ada@example.com");
    user(&t, "bob@example.com");
    assert_eq!(t.users().len(), 2);
}

/// Binary garbage (random bytes, a PNG, a workbook, gzip, UTF-16, NULs in the header): rejected
/// whole with a hint of what the file is, nothing sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_garbage_is_rejected_whole_and_nothing_is_sent() {
    let cases: [(&str, &str); 6] = [
        ("bad/garbage.bin", "not UTF-8 CSV text"),
        ("bad/image.png", "not UTF-8 CSV text"),
        ("bad/workbook.xlsx", "Excel workbook"),
        ("bad/export.csv.gz", "gzip-compressed"),
        ("bad/utf16.csv", "UTF-16"),
        ("bad/nul_header.csv", "binary data"),
    ];
    for (name, words) in cases {
        rejected_whole(&fixture(name), &[words]).await;
    }
}

/// Binary garbage after a good header: every garbage record is reported, none is provisioned,
/// the good rows around it are; the run ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_garbage_after_a_good_header_is_reported_row_by_row() {
    let mut csv = format!("{HEADER}ada@example.com,Ada,Lovelace\n").into_bytes();
    csv.extend_from_slice(&fixture("bad/garbage.bin"));
    csv.extend_from_slice(b"\nbob@example.com,Bob,Builder\n");
    let t = tenant().await;
    let run = provision(&t, &csv).await;
    assert_eq!(run.code, 1, "{run:#?}");
    let invalid = run.lines("invalid");
    assert!(!invalid.is_empty(), "{run:#?}");
    assert!(invalid.iter().all(|l| l["row"].as_u64().unwrap() >= 3));
    user(&t, "ada@example.com");
    user(&t, "bob@example.com");
    assert_eq!(
        t.users().len(),
        2,
        "nothing from the garbage was provisioned"
    );
}

/// Values: not-emails, userNames with quotes, backslashes and non-ASCII, surrounding spaces,
/// unknown status words, `active` and `status` disagreeing. Bad rows are reported with their
/// line (addresses masked); odd userNames are created as given, and a rerun updates them
/// (the lookup filter escapes them) instead of creating them twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_values_are_reported_and_odd_user_names_round_trip() {
    let csv = fixture("bad/values.csv");
    let t = tenant().await;
    let run = provision(&t, &csv).await;
    assert_eq!(run.code, 1, "{run:#?}");
    let odd = [
        "ada@example.com",
        "pat \"the hat\" o'brien",
        "corp\\ops\\back",
        "zoë.ångström@exämple.com",
        "leaver-agreeing@example.com",
    ];
    for name in &odd[..4] {
        assert_eq!(user(&t, name)["active"], true, "{name}");
    }
    assert_eq!(user(&t, "ada@example.com")["name"]["givenName"], "Ada");
    // Both say "inactive" and the user does not exist: skipped with a reason, not invalid.
    assert_eq!(count(&t, odd[4]), 0);
    assert_eq!(run.row(12)["status"], "skipped");

    let expected: [(u64, &[&str]); 7] = [
        (6, &["is not a valid address", "has no @"]),
        (7, &["is not a valid address", "more than one @"]),
        (8, &["is not a valid address", "no dot"]),
        (9, &["is not a valid address", "space"]),
        (10, &["status value \"on leave\" is not recognised"]),
        (
            11,
            &[
                "active is \"true\" but status is \"terminated\"",
                "disagree",
            ],
        ),
        (13, &["active value \"maybe\" is not recognised"]),
    ];
    for (row, words) in expected {
        let line = run.row(row);
        assert_eq!(line["status"], "invalid", "{line}");
        for word in words {
            assert!(reason(line).contains(word), "{word:?} not in {line}");
        }
    }
    assert_eq!(run.lines("invalid").len(), expected.len(), "{run:#?}");
    let text = serde_json::to_string(&run.report).unwrap();
    for secret in ["noat.example.com", "two@@example.com", "mixed.signals@"] {
        assert!(!text.contains(secret), "{secret} not masked: {text}");
    }
    assert!(
        run.out.contains("active and status disagree"),
        "{}",
        run.out
    );

    // A rerun finds each odd userName and leaves it as it is: still exactly one of each.
    let stats = t.stats();
    let again = provision(&t, &csv).await;
    assert_eq!(again.code, 1, "{again:#?}");
    assert!(
        again.out.contains(&summary_row("unchanged", 4)),
        "{again:#?}"
    );
    assert_eq!(t.stats().updated, stats.updated, "nothing written again");
    for name in &odd[..4] {
        assert_eq!(count(&t, name), 1, "{name}");
    }
    assert_eq!(t.users().len(), 4);
    assert_eq!(t.stats().created, stats.created, "nobody created twice");
}

/// A lazily generated CSV of `total` data rows: every 100,000th has a bad email, every
/// 200,000th (from row 1) a quoted title spanning two lines.
struct Generated {
    total: u64,
    next: u64,
    chunk: Vec<u8>,
    pos: usize,
    bytes: u64,
}

impl Generated {
    fn new(total: u64) -> Self {
        Generated {
            total,
            next: 0,
            chunk: Vec::with_capacity(64 * 1024),
            pos: 0,
            bytes: 0,
        }
    }

    fn invalid(i: u64) -> bool {
        i % 100_000 == 0
    }

    fn multi_line(i: u64) -> bool {
        i % 200_000 == 1
    }

    /// Writes the next rows into `chunk`, about 64 KiB of them.
    fn refill(&mut self) {
        use std::io::Write;
        self.chunk.clear();
        self.pos = 0;
        if self.next == 0 {
            self.chunk
                .extend_from_slice(b"Email,First Name,Last Name,Status,Job Title,Employee ID\r\n");
            self.next = 1;
        }
        while self.chunk.len() < 60 * 1024 && self.next <= self.total {
            let i = self.next;
            let at = if Self::invalid(i) { "-at-" } else { "@" };
            let title = if Self::multi_line(i) {
                "\"Senior\nAgent, L2\""
            } else {
                "Agent"
            };
            let status = if i % 3 == 0 { "leaver" } else { "active" };
            write!(
                self.chunk,
                "user{i}{at}example.com,Given{i},Family{i},{status},{title},E{i}\r\n"
            )
            .unwrap();
            self.next += 1;
        }
    }
}

impl Read for Generated {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.pos == self.chunk.len() {
            self.refill();
        }
        let n = out.len().min(self.chunk.len() - self.pos);
        out[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        self.bytes += n as u64;
        Ok(n)
    }
}

/// 1,000,000 rows (about 70 MB, generated lazily, never on disk) stream through the reader:
/// every row is validated, counts and editor line numbers are exact, and the peak memory grows
/// by a few MiB at most, not with the file. The peak is process-wide, so the streaming runs in
/// a child process (this test binary, running only this test) that no other test shares.
#[test]
fn a_million_rows_stream_with_flat_memory() {
    const CHILD: &str = "BAD_INPUT_MILLION_ROWS_CHILD";
    if std::env::var_os(CHILD).is_some() {
        return stream_a_million_rows();
    }
    support::run_alone_in_child("a_million_rows_stream_with_flat_memory", CHILD);
}

fn stream_a_million_rows() {
    const ROWS: u64 = 1_000_000;
    // Reset the peak to the current RSS (Linux: "5" > clear_refs), so the peak measured below is
    // this test's, not an earlier one's; fall back to the current peak as the baseline.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let before = support::peak_rss_kib();
    let started = Instant::now();
    let mut source = CsvSource::new(Generated::new(ROWS)).expect("header");
    assert_eq!(source.unknown_columns(), [] as [String; 0]);
    let (mut rows, mut valid, mut inactive) = (0u64, 0u64, 0u64);
    let mut invalid_lines = Vec::new();
    let mut last_line = 0;
    for row in source.by_ref() {
        let row = row.expect("no I/O error");
        rows += 1;
        match &row.result {
            Ok(user) => {
                valid += 1;
                inactive += u64::from(!user.active);
            }
            Err(error) => {
                assert!(error.to_string().contains("has no @"), "{error}");
                invalid_lines.push(row.line);
            }
        }
        assert!(row.line > last_line, "lines increase");
        last_line = row.line;
    }
    let elapsed = started.elapsed();
    let peak = support::peak_rss_kib();

    // Row i is on line 1 + i + the extra lines of the multi-line records before it.
    let line_of = |i: u64| 1 + i + (1..i).filter(|&j| Generated::multi_line(j)).count() as u64;
    let expected_invalid: Vec<u64> = (1..=ROWS)
        .filter(|&i| Generated::invalid(i))
        .map(line_of)
        .collect();
    assert_eq!(rows, ROWS);
    assert_eq!(invalid_lines, expected_invalid);
    assert_eq!(valid, ROWS - 10);
    let expected_inactive = (1..=ROWS)
        .filter(|&i| i % 3 == 0 && !Generated::invalid(i))
        .count() as u64;
    assert_eq!(inactive, expected_inactive);
    assert_eq!(last_line, line_of(ROWS));
    let growth_mib = peak.saturating_sub(before) / 1024;
    eprintln!(
        "1,000,000 rows in {elapsed:.1?}; peak RSS {} MiB (grew {growth_mib} MiB while streaming)",
        peak / 1024
    );
    assert!(
        growth_mib < 32,
        "memory grew by {growth_mib} MiB over a 1,000,000-row file: not streaming"
    );
}

/// A header spelled with any case and any spaces, `_`, `-` or `.` between its letters.
fn decorated(name: &'static str) -> impl Strategy<Value = String> {
    let letters: Vec<char> = name.chars().filter(|c| *c != '_').collect();
    let n = letters.len();
    (
        proptest::collection::vec(any::<bool>(), n),
        proptest::collection::vec(
            prop_oneof![Just(""), Just(" "), Just("_"), Just("-"), Just(".")],
            n,
        ),
        prop_oneof![Just(""), Just(" "), Just("\u{feff}")],
    )
        .prop_map(move |(upper, seps, pad)| {
            let mut out = String::from(pad);
            for ((c, up), sep) in letters.iter().zip(upper).zip(seps) {
                out.push(if up { c.to_ascii_uppercase() } else { *c });
                out.push_str(sep);
            }
            out.push_str(pad);
            out
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Header matching round-trips: any case and separator spelling of a field's name maps to
    /// that field, and a CSV whose header uses it reads the column.
    #[test]
    fn decorated_headers_map_to_their_field(
        (field, header) in proptest::sample::select(Field::ALL.to_vec())
            .prop_flat_map(|f| (Just(f), decorated(f.name())))
    ) {
        prop_assert_eq!(canonical_field(&header), Some(field));
        if field == Field::LastName {
            let quoted = header.replace('"', "\"\"");
            let csv = format!("email,first_name,\"{quoted}\"\na@example.com,A,Family\n");
            let mut source = CsvSource::new(csv.as_bytes()).unwrap();
            let user = source.next().unwrap().unwrap().result.unwrap();
            prop_assert_eq!(user.last_name, "Family");
        }
    }
}
