//! CSV to SCIM payloads: throughput and peak memory from 1k to 1M rows, against a Python baseline.
//!
//! Streams a generated HR export (the shape of `examples/hr-export.csv`) through
//! [`CsvSource`] (parse + validate), builds each valid user's SCIM resource
//! ([`User::to_document`]) as a `POST /Users` sub-operation, and encodes BulkRequest bodies of 50
//! operations ([`bulk::chunk`] + [`bulk::encode`]) per window of 500 operations, as the S3
//! handler flushes them. Bodies are counted and dropped, never sent.
//!
//! Modes:
//! - no `--bench` (as `cargo test --all-targets` runs it): a 1,000-row smoke run that checks the
//!   counts, well under a second;
//! - `cargo bench --bench csv_payloads [-- --compare] [--sizes 1000,10000] [--runs 3]`: the cost
//!   growth table; every measurement runs in a fresh child process (this binary re-executed
//!   with `--bench --child FILE`) so that its peak RSS (VmHWM) is its own. The input is
//!   generated to a temporary file first and streamed from it. With `--compare`, the Python
//!   baseline (`benches/baseline_csv_payloads.py`, `python3` on PATH, or `--python PATH`) runs
//!   on the same file, interleaved with the Rust runs. With `--breakdown`, the stages are timed
//!   separately at the largest size, and so is the S3 handler's first pass
//!   ([`last_lines_by_user`]: time and peak RSS).

mod common;

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use scim_bulk_provisioner::scim::bulk::{chunk, encode};
use scim_bulk_provisioner::scim::discovery::{ProviderLimits, DEFAULT_MAX_PAYLOAD};
use scim_bulk_provisioner::scim::request::{SubOp, Verb};
use scim_bulk_provisioner::sources::{last_lines_by_user, CsvSource};

use common::median;

/// Operations encoded together, like the S3 handler's flush of 500.
const WINDOW: usize = 500;
/// Operations per BulkRequest.
const MAX_OPERATIONS: usize = 50;
const DEFAULT_SIZES: [u64; 4] = [1_000, 10_000, 100_000, 1_000_000];
const SMOKE_ROWS: u64 = 1_000;

const HEADER: &str =
    "Employee ID,First Name,Last Name,Work Email,Department,Job Title,Status,Phone\n";
const FIRST: [&str; 16] = [
    "Zoë", "Leïla", "Nadia", "Chloé", "Jürgen", "Rosa", "Søren", "Irene", "Ximena", "Alan", "Wei",
    "Yusuf", "Farid", "Hiroshi", "Ingrid", "Ada",
];
const LAST: [&str; 16] = [
    "Dubois",
    "Fernández",
    "Hopper",
    "Benali",
    "López",
    "Lovelace",
    "Ivanov",
    "Tanaka",
    "Okafor",
    "Demir",
    "Ní Bhriain",
    "Larsen",
    "Durand",
    "Abubakar",
    "van der Berg",
    "O'Brien",
];
const DEPARTMENTS: [&str; 8] = [
    "Human Resources",
    "Finance",
    "IT",
    "Customer Care",
    "\"Sales, Americas\"",
    "Billing",
    "Quality Assurance",
    "\"Sales, EMEA\"",
];
const TITLES: [&str; 8] = [
    "Analyst",
    "Team Lead",
    "Trainer",
    "\"Agent \"\"Tier 2\"\"\"",
    "\"Manager, Customer Care\"",
    "Supervisor",
    "Workforce Planner",
    "Senior Agent",
];
const PHONES: [&str; 4] = ["+49 30 9018", "+1 555 01", "+44 20 7946 0", ""];

/// Counts produced by one pass; the Python baseline prints the same ones.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Counts {
    rows: u64,
    valid: u64,
    invalid: u64,
    bodies: u64,
    bytes: u64,
}

/// Deterministic xorshift64*, so every run (and the Python baseline) sees the same file.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

fn ascii_fold(name: &str) -> String {
    name.chars()
        .filter(|c| !c.is_whitespace() && *c != '\'')
        .map(|c| match c {
            'ë' | 'é' => 'e',
            'ï' | 'í' => 'i',
            'ü' => 'u',
            'ø' => 'o',
            'á' => 'a',
            'ó' => 'o',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

/// Writes an HR export of `rows` data rows; returns the (valid, invalid) rows it holds.
/// About 3 rows per thousand are invalid: a doubled @, a blank first name, a status of
/// "On Leave". About 5% are inactive (Inactive, Terminated, Leaver).
fn generate(path: &Path, rows: u64) -> std::io::Result<(u64, u64)> {
    let mut out = BufWriter::with_capacity(1 << 16, File::create(path)?);
    out.write_all(HEADER.as_bytes())?;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut invalid = 0;
    for i in 0..rows {
        let first = rng.pick(&FIRST);
        let last = rng.pick(&LAST);
        let department = rng.pick(&DEPARTMENTS);
        let title = rng.pick(&TITLES);
        let phone_prefix = rng.pick(&PHONES);
        let roll = rng.next() % 1000;
        let mut email = format!("{}.{}{i}@example.com", ascii_fold(first), ascii_fold(last));
        let mut first_name = first;
        let mut status = match roll {
            0..=19 => "Inactive",
            20..=34 => "Terminated",
            35..=49 => "leaver",
            _ => "Active",
        };
        match roll {
            997 => email = email.replace('@', "@@"),
            998 => first_name = "  ",
            999 => status = "On Leave",
            _ => {}
        }
        if roll >= 997 {
            invalid += 1;
        }
        let phone = if phone_prefix.is_empty() {
            String::new()
        } else {
            format!("{phone_prefix}{:03}", rng.next() % 1000)
        };
        writeln!(
            out,
            "E{:07},{first_name},{last},{email},{department},{title},{status},{phone}",
            i + 10_000
        )?;
    }
    out.flush()?;
    Ok((rows - invalid, invalid))
}

/// How far [`transform`] goes (the stages are measured separately with `--breakdown`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Parse and validate rows only.
    Parse,
    /// Also build each valid user's SCIM resource and sub-operation.
    Scim,
    /// Also chunk and encode the BulkRequest bodies (the whole transformation).
    Full,
    /// Instead: the S3 handler's first pass (`last_lines_by_user`), measured on its own.
    FirstPass,
}

impl Stage {
    fn name(self) -> &'static str {
        match self {
            Stage::Parse => "parse",
            Stage::Scim => "scim",
            Stage::Full => "full",
            Stage::FirstPass => "first-pass",
        }
    }

    fn from_name(name: &str) -> Self {
        match name {
            "parse" => Stage::Parse,
            "scim" => Stage::Scim,
            "full" => Stage::Full,
            "first-pass" => Stage::FirstPass,
            other => panic!("unknown stage {other:?}"),
        }
    }
}

/// Parse, validate, build SCIM JSON and encode BulkRequest bodies, streaming from `path`.
fn transform(path: &Path, stage: Stage) -> Counts {
    let limits = ProviderLimits {
        bulk: true,
        max_operations: MAX_OPERATIONS,
        max_payload_size: DEFAULT_MAX_PAYLOAD,
        filter: true,
    };
    let file = File::open(path).expect("open the input");
    if stage == Stage::FirstPass {
        let last = last_lines_by_user(file).expect("a readable file");
        return Counts {
            valid: last.len() as u64,
            ..Counts::default()
        };
    }
    let source = CsvSource::new(file).expect("a valid header");
    let mut counts = Counts::default();
    let mut window: Vec<SubOp> = Vec::with_capacity(WINDOW);
    let flush = |window: &mut Vec<SubOp>, counts: &mut Counts| {
        if stage != Stage::Full {
            std::hint::black_box(&*window);
            window.clear();
            return;
        }
        for indices in chunk(window, &limits) {
            let refs: Vec<&SubOp> = indices.iter().map(|&i| &window[i]).collect();
            let body = std::hint::black_box(encode(&refs));
            counts.bodies += 1;
            counts.bytes += body.len() as u64;
        }
        window.clear();
    };
    for row in source {
        let row = row.expect("no I/O error");
        counts.rows += 1;
        match row.result {
            Ok(user) if stage == Stage::Parse => {
                counts.valid += 1;
                std::hint::black_box(user);
            }
            Ok(user) => {
                counts.valid += 1;
                window.push(SubOp {
                    key: window.len(),
                    verb: Verb::Post,
                    path: Cow::Borrowed("/Users"),
                    data: user.to_document(None),
                });
                if window.len() == WINDOW {
                    flush(&mut window, &mut counts);
                }
            }
            Err(_) => counts.invalid += 1,
        }
    }
    if !window.is_empty() {
        flush(&mut window, &mut counts);
    }
    counts
}

/// A field of /proc/self/status in kB (VmHWM: peak RSS; VmRSS: current).
fn proc_status_kb(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// CPU time of the (only) thread so far, in seconds.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/schedstat").ok()?;
    let ns: u64 = stat.split_whitespace().next()?.parse().ok()?;
    Some(ns as f64 / 1e9)
}

/// One measurement, in a child process: prints one `RESULT` line for the parent.
fn child(path: &Path, stage: Stage) {
    let rss_before = proc_status_kb("VmHWM:").unwrap_or(0);
    let cpu0 = cpu_seconds().unwrap_or(0.0);
    let start = Instant::now();
    let c = transform(path, stage);
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds().unwrap_or(0.0) - cpu0;
    let hwm = proc_status_kb("VmHWM:").unwrap_or(0);
    println!(
        "RESULT rows={} valid={} invalid={} bodies={} bytes={} secs={secs:.6} cpu={cpu:.6} hwm_kb={hwm} start_kb={rss_before}",
        c.rows, c.valid, c.invalid, c.bodies, c.bytes
    );
}

/// Parsed `RESULT` line of a child (Rust or Python).
#[derive(Debug, Clone, Copy)]
struct Measure {
    counts: Counts,
    secs: f64,
    hwm_kb: u64,
}

fn parse_result(stdout: &str) -> Measure {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("RESULT "))
        .unwrap_or_else(|| panic!("no RESULT line in {stdout:?}"));
    let get = |key: &str| -> &str {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
            .unwrap_or_else(|| panic!("no {key} in {line:?}"))
    };
    let int = |key: &str| get(key).parse::<u64>().expect("an integer");
    Measure {
        counts: Counts {
            rows: int("rows"),
            valid: int("valid"),
            invalid: int("invalid"),
            bodies: int("bodies"),
            bytes: int("bytes"),
        },
        secs: get("secs").parse().expect("seconds"),
        hwm_kb: int("hwm_kb"),
    }
}

fn run(cmd: &mut Command) -> Measure {
    let out = cmd.output().expect("start the child process");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse_result(&String::from_utf8_lossy(&out.stdout))
}

fn expected_bodies(valid: u64) -> u64 {
    let full = valid / WINDOW as u64;
    let rest = valid % WINDOW as u64;
    full * (WINDOW / MAX_OPERATIONS) as u64 + rest.div_ceil(MAX_OPERATIONS as u64)
}

fn smoke() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("hr-export.csv");
    let (valid, invalid) = generate(&path, SMOKE_ROWS).expect("write the input");
    for stage in [Stage::Parse, Stage::Scim] {
        let c = transform(&path, stage);
        assert_eq!((c.rows, c.valid, c.bodies), (SMOKE_ROWS, valid, 0));
    }
    assert_eq!(transform(&path, Stage::FirstPass).valid, valid);
    let c = transform(&path, Stage::Full);
    assert_eq!(c.rows, SMOKE_ROWS);
    assert_eq!((c.valid, c.invalid), (valid, invalid));
    assert!(
        invalid > 0,
        "the generator should produce some invalid rows"
    );
    assert_eq!(c.bodies, expected_bodies(valid));
    assert!(c.bytes > 300 * valid, "{} bytes for {valid} users", c.bytes);
    println!(
        "csv_payloads smoke: {} rows, {} valid, {} invalid, {} bodies, {} bytes (run `cargo bench --bench csv_payloads` to measure)",
        c.rows, c.valid, c.invalid, c.bodies, c.bytes
    );
}

struct Options {
    sizes: Vec<u64>,
    runs: usize,
    compare: bool,
    breakdown: bool,
    python: String,
}

fn options(args: &[String]) -> Options {
    let mut o = Options {
        sizes: DEFAULT_SIZES.to_vec(),
        runs: 3,
        compare: false,
        breakdown: false,
        python: "python3".into(),
    };
    let mut it = args.iter().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--bench" => {}
            "--compare" => o.compare = true,
            "--breakdown" => o.breakdown = true,
            "--runs" => o.runs = it.next().and_then(|v| v.parse().ok()).expect("--runs N"),
            "--python" => o.python = it.next().expect("--python PATH").clone(),
            "--sizes" => {
                o.sizes = it
                    .next()
                    .expect("--sizes N,N,...")
                    .split(',')
                    .map(|s| s.trim().replace('_', "").parse().expect("a row count"))
                    .collect();
            }
            other => eprintln!("csv_payloads: ignoring argument {other:?}"),
        }
    }
    assert!(o.runs > 0, "--runs must be at least 1");
    o
}

fn baseline_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/baseline_csv_payloads.py")
}

fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

fn bench(o: &Options) {
    let exe = std::env::current_exe().expect("the bench executable");
    let dir = tempfile::tempdir().expect("a temporary directory");
    println!(
        "csv_payloads: {} run(s) per size, median reported; each run in a fresh process{}",
        o.runs,
        if o.compare {
            ", Python baseline interleaved"
        } else {
            ""
        }
    );
    let mut table = Vec::new();
    let mut breakdown = Vec::new();
    for &rows in &o.sizes {
        let path = dir.path().join(format!("hr-export-{rows}.csv"));
        let (valid, invalid) = generate(&path, rows).expect("write the input");
        let file_bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let (mut rust, mut python) = (Vec::new(), Vec::new());
        for _ in 0..o.runs {
            let m = run(Command::new(&exe).arg("--bench").arg("--child").arg(&path));
            assert_eq!(m.counts.rows, rows);
            assert_eq!((m.counts.valid, m.counts.invalid), (valid, invalid));
            assert_eq!(m.counts.bodies, expected_bodies(valid));
            rust.push(m);
            if o.compare {
                let p = run(Command::new(&o.python).arg(baseline_script()).arg(&path));
                assert_eq!(
                    (
                        p.counts.rows,
                        p.counts.valid,
                        p.counts.invalid,
                        p.counts.bodies
                    ),
                    (rows, valid, invalid, m.counts.bodies),
                    "the baseline disagrees on the counts"
                );
                if p.counts.bytes != m.counts.bytes {
                    eprintln!(
                        "note: body bytes differ at {rows} rows: Rust {} vs Python {}",
                        m.counts.bytes, p.counts.bytes
                    );
                }
                python.push(p);
            }
        }
        let secs = median(&rust.iter().map(|m| m.secs).collect::<Vec<_>>());
        let hwm = median(&rust.iter().map(|m| m.hwm_kb as f64).collect::<Vec<_>>()) as u64;
        let bytes = rust[0].counts.bytes;
        let line = format!(
            "| {rows:>9} | {:>7.1} MB | {:>9.3} s | {:>11.0} | {:>8.1} MB | {:>7.1} MB |",
            file_bytes as f64 / 1e6,
            secs,
            rows as f64 / secs,
            mb(hwm),
            bytes as f64 / 1e6,
        );
        let runs: Vec<String> = rust.iter().map(|m| format!("{:.3}", m.secs)).collect();
        println!("rust   {rows:>9} rows: runs [{}] s", runs.join(", "));
        let py_line = if o.compare {
            let psecs = median(&python.iter().map(|m| m.secs).collect::<Vec<_>>());
            let phwm = median(&python.iter().map(|m| m.hwm_kb as f64).collect::<Vec<_>>()) as u64;
            let ratios: Vec<f64> = rust
                .iter()
                .zip(&python)
                .map(|(r, p)| p.secs / r.secs)
                .collect();
            let pruns: Vec<String> = python.iter().map(|m| format!("{:.3}", m.secs)).collect();
            println!("python {rows:>9} rows: runs [{}] s", pruns.join(", "));
            format!(
                " {:>9.3} s | {:>11.0} | {:>8.1} MB | {:>6.1}x |",
                psecs,
                rows as f64 / psecs,
                mb(phwm),
                median(&ratios)
            )
        } else {
            String::new()
        };
        table.push(format!("{line}{py_line}"));
        if o.breakdown && Some(&rows) == o.sizes.iter().max() {
            for stage in [Stage::Parse, Stage::Scim] {
                let secs: Vec<f64> = (0..o.runs)
                    .map(|_| {
                        let mut cmd = Command::new(&exe);
                        cmd.args(["--bench", "--stage", stage.name(), "--child"]);
                        run(cmd.arg(&path)).secs
                    })
                    .collect();
                breakdown.push(format!(
                    "{rows} rows, stage {:>5}: median {:.3} s",
                    stage.name(),
                    median(&secs)
                ));
            }
            breakdown.push(format!("{rows} rows, stage  full: median {secs:.3} s"));
            let first: Vec<Measure> = (0..o.runs)
                .map(|_| {
                    let mut cmd = Command::new(&exe);
                    cmd.args(["--bench", "--stage", "first-pass", "--child"]);
                    let m = run(cmd.arg(&path));
                    // Every valid row of the generated file has its own userName.
                    assert_eq!(m.counts.valid, valid);
                    m
                })
                .collect();
            breakdown.push(format!(
                "{rows} rows, the S3 handler's first pass on its own (not in the stages above): median {:.3} s, peak RSS {:.1} MB",
                median(&first.iter().map(|m| m.secs).collect::<Vec<_>>()),
                mb(first.iter().map(|m| m.hwm_kb).max().unwrap_or(0))
            ));
        }
        let _ = std::fs::remove_file(&path);
    }
    println!();
    let mut head =
        "|      rows |      input | Rust time  |  Rust rows/s | Rust peak RSS | bodies out |"
            .to_string();
    let mut rule =
        "|----------:|-----------:|-----------:|------------:|--------------:|-----------:|"
            .to_string();
    if o.compare {
        head.push_str(" Python time | Python rows/s | Python peak RSS | speed-up |");
        rule.push_str("------------:|-------------:|----------------:|---------:|");
    }
    println!("{head}\n{rule}");
    for line in table {
        println!("{line}");
    }
    if !breakdown.is_empty() {
        println!("\nbreakdown (cumulative stages: parse+validate; +SCIM resources; +BulkRequest bodies):");
        for line in breakdown {
            println!("  {line}");
        }
    }
    println!("\n(time: median wall time of the transformation inside the child, excluding process start; speed-up: median of per-run Python/Rust time ratios)");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        let stage = args
            .iter()
            .position(|a| a == "--stage")
            .map_or(Stage::Full, |j| Stage::from_name(&args[j + 1]));
        child(Path::new(args.get(i + 1).expect("--child FILE")), stage);
        return;
    }
    if !args.iter().any(|a| a == "--bench") {
        smoke();
        return;
    }
    bench(&options(&args));
}
