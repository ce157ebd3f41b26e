//! The commands users run, measured as whole processes: `validate --csv`, `provision --dry-run`
//! and `provision` (against the embedded tenant) on generated HR exports of 10k to 1M rows;
//! wall time and peak RSS of each process (`wait4`), side by side with the plain Python
//! version of `validate` (`benches/baseline_validate.py`), interleaved in the same run.
//!
//! The file: a BOM, CRLF line breaks, quoted commas and doubled quotes, non-ASCII names, 5%
//! leavers, about 1% invalid rows, 0.5% rows repeating an earlier userName, 0.1% with a quoted
//! line break.
//!
//! Modes:
//! - no `--bench` (as `cargo test --all-targets` runs it): 2,000 rows, checking the counts that
//!   `validate --json`, `provision --dry-run --json` and `provision --json` print against the
//!   generator's, and the peak RSS being read; no timing;
//! - `cargo bench --bench cli_commands [-- --sizes 10000,100000,1000000] [--runs 3]
//!   [--provision-sizes 10000,100000|none] [--python python3] [--before PATH]`: the table. `--before`
//!   runs another build of the binary (e.g. the commit before the change) the same way,
//!   interleaved, for a before/after comparison. The binary is Cargo's build for the profile
//!   (`cargo bench`: release settings), or `CLI_BIN`.

mod common;

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use scim_bulk_provisioner::tenant::{Tenant, TenantConfig};
use serde_json::Value;

use common::{arg_value, median, TOKEN};

const SMOKE_ROWS: u64 = 2_000;
const DEFAULT_SIZES: [u64; 3] = [10_000, 100_000, 1_000_000];

const HEADER: &str =
    "Employee ID,First Name,Last Name,Work Email,Department,Job Title,Status,Phone";
const FIRST: [&str; 8] = [
    "Zoë", "Leïla", "Jürgen", "Søren", "Ximena", "Wei", "Hiroshi", "Ada",
];
const LAST: [&str; 8] = [
    "Dubois",
    "Fernández",
    "Hopper",
    "López",
    "Ní Bhriain",
    "Larsen",
    "van der Berg",
    "O'Brien",
];
const DEPARTMENTS: [&str; 4] = ["Finance", "\"Sales, Americas\"", "IT", "\"Sales, EMEA\""];
const TITLES: [&str; 4] = [
    "Analyst",
    "\"Agent \"\"Tier 2\"\"\"",
    "\"Manager, Customer Care\"",
    "Senior Agent",
];

/// The binary measured: `CLI_BIN`, else Cargo's build for this profile.
fn bin() -> PathBuf {
    std::env::var_os("CLI_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_scim-bulk-provisioner")))
}

/// What the generated file holds.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Expect {
    rows: u64,
    invalid: u64,
    superseded: u64,
    /// Distinct valid userNames whose last row is active / inactive.
    active: u64,
    inactive: u64,
}

/// Deterministic xorshift64*, so that every run sees the same file.
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

/// Writes an HR export of `rows` data rows (see the module's comment).
fn generate(path: &Path, rows: u64) -> std::io::Result<Expect> {
    let mut out = BufWriter::with_capacity(1 << 16, File::create(path)?);
    write!(out, "\u{feff}{HEADER}\r\n")?;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut expect = Expect {
        rows,
        ..Expect::default()
    };
    // userName → active, for the valid rows; the last row wins.
    let mut last: HashMap<String, bool> = HashMap::new();
    let mut valid_rows = 0;
    for i in 0..rows {
        let (first, family) = (rng.pick(&FIRST), rng.pick(&LAST));
        let (department, mut title) = (rng.pick(&DEPARTMENTS), rng.pick(&TITLES));
        let roll = rng.next() % 1000;
        let mut email = format!("user{i}@example.com");
        let mut first_name = first;
        let status = match roll {
            0..=19 => "Inactive",
            20..=34 => "Terminated",
            35..=49 => "leaver",
            _ => "Active",
        };
        let mut status = status;
        match roll {
            980..=984 if i > 10 => email = format!("USER{}@Example.com", i / 2),
            985 => title = "\"Team\r\nLead\"",
            990..=993 => email = format!("user{i}@@example.com"),
            994..=996 => first_name = "  ",
            997..=999 => status = "On Leave",
            _ => {}
        }
        if roll >= 990 {
            expect.invalid += 1;
        } else {
            valid_rows += 1;
            last.insert(email.to_lowercase(), status == "Active");
        }
        write!(
            out,
            "E{:07},{first_name},{family},{email},{department},{title},{status},+1 555 {:04}\r\n",
            i + 10_000,
            rng.next() % 10_000
        )?;
    }
    out.flush()?;
    expect.superseded = valid_rows - last.len() as u64;
    expect.active = last.values().filter(|a| **a).count() as u64;
    expect.inactive = last.len() as u64 - expect.active;
    Ok(expect)
}

/// A process run to its end.
#[derive(Debug, Clone, Copy)]
struct Measured {
    code: i32,
    wall: f64,
    /// User + system CPU seconds.
    cpu: f64,
    /// Peak resident set, MB.
    rss_mb: f64,
}

#[repr(C)]
struct Timeval {
    sec: i64,
    usec: i64,
}

/// `struct rusage` of Linux (64-bit): two timevals, then fourteen longs, `ru_maxrss` first.
#[repr(C)]
struct Rusage {
    utime: Timeval,
    stime: Timeval,
    maxrss: i64,
    rest: [i64; 13],
}

extern "C" {
    fn wait4(pid: i32, status: *mut i32, options: i32, rusage: *mut Rusage) -> i32;
}

/// Runs `command` to its end (stdout to `stdout`, or discarded): its wall time, CPU time and
/// peak RSS. Through a small process of this binary (`--measure`), which spawns the command
/// and reads its rusage from `wait4`: Linux counts in a child's peak RSS the memory of the
/// process that spawned it (its address space is the one `exec` replaces), and this process
/// grows (a generated file's userNames, the tenant's users).
fn measure(command: &mut Command, stdout: Option<&Path>) -> Measured {
    let mut wrapper = Command::new(std::env::current_exe().expect("this binary"));
    wrapper
        .arg("--measure")
        .arg(stdout.map_or_else(|| "-".into(), |p| p.display().to_string()))
        .arg(command.get_program())
        .args(command.get_args());
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => wrapper.env(key, value),
            None => wrapper.env_remove(key),
        };
    }
    let out = wrapper.output().expect("run the measuring process");
    let text = String::from_utf8_lossy(&out.stdout);
    let fields: Vec<f64> = text
        .trim()
        .strip_prefix("MEASURED ")
        .unwrap_or_else(|| panic!("the measuring process said {text:?}"))
        .split(' ')
        .map(|v| v.parse().expect("a number"))
        .collect();
    Measured {
        code: fields[0] as i32,
        wall: fields[1],
        cpu: fields[2],
        rss_mb: fields[3],
    }
}

/// `--measure OUT PROGRAM ARGS...`: runs the program (stdout to OUT, `-`: discarded) and
/// prints `MEASURED code wall cpu rss_mb`.
fn measure_child(args: &[String]) {
    let (out, program, rest) = (&args[0], &args[1], &args[2..]);
    let stdout = (out != "-").then(|| PathBuf::from(out));
    let mut command = Command::new(program);
    command.args(rest);
    let m = spawn_and_wait(&mut command, stdout.as_deref());
    println!("MEASURED {} {} {} {}", m.code, m.wall, m.cpu, m.rss_mb);
}

/// Spawns `command` and reaps it with `wait4`: its wall time, CPU time and peak RSS.
fn spawn_and_wait(command: &mut Command, stdout: Option<&Path>) -> Measured {
    let out = match stdout {
        Some(path) => Stdio::from(File::create(path).expect("stdout file")),
        None => Stdio::null(),
    };
    let started = Instant::now();
    let child = command
        .stdout(out)
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the command");
    let pid = i32::try_from(child.id()).expect("a pid");
    let mut status = 0i32;
    let mut usage = Rusage {
        utime: Timeval { sec: 0, usec: 0 },
        stime: Timeval { sec: 0, usec: 0 },
        maxrss: 0,
        rest: [0; 13],
    };
    // SAFETY: `status` and `usage` are valid for writes and laid out as the kernel's; the child
    // is reaped here, so `Child` (dropped without waiting) never waits on a reused pid.
    let reaped = unsafe { wait4(pid, &mut status, 0, &mut usage) };
    let wall = started.elapsed().as_secs_f64();
    assert_eq!(reaped, pid, "wait4: {}", std::io::Error::last_os_error());
    drop(child);
    let seconds = |t: &Timeval| t.sec as f64 + t.usec as f64 / 1e6;
    Measured {
        // Exited normally: the code; killed by a signal: -1.
        code: if status & 0x7f == 0 {
            (status >> 8) & 0xff
        } else {
            -1
        },
        wall,
        cpu: seconds(&usage.utime) + seconds(&usage.stime),
        rss_mb: usage.maxrss as f64 / 1024.0,
    }
}

/// The command a user runs.
fn cli(bin: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(bin);
    command
        .args(args)
        .env_remove("SCIM_CREDENTIALS")
        .env_remove("RUST_LOG");
    command
}

/// A fresh embedded tenant and a credentials file for it.
struct Peer {
    tenant: Tenant,
    credentials: PathBuf,
}

fn peer(rt: &tokio::runtime::Runtime, dir: &Path) -> Peer {
    let tenant = rt
        .block_on(Tenant::start(TenantConfig {
            bearer_token: TOKEN.into(),
            ..TenantConfig::default()
        }))
        .expect("start the tenant");
    let credentials = dir.join("scim.json");
    let secret =
        serde_json::json!({"base_url": tenant.base_url(), "auth_type": "bearer", "token": TOKEN});
    std::fs::write(&credentials, secret.to_string()).expect("write the credentials");
    Peer {
        tenant,
        credentials,
    }
}

/// `provision` (or its dry run) of `csv` into a fresh tenant: the process, its JSON summary, the
/// tenant's counts.
fn provision(
    rt: &tokio::runtime::Runtime,
    bin: &Path,
    csv: &Path,
    dir: &Path,
    dry_run: bool,
) -> (Measured, Value, scim_bulk_provisioner::tenant::TenantStats) {
    let peer = peer(rt, dir);
    let out = dir.join("provision.json");
    let (csv, credentials) = (
        csv.display().to_string(),
        peer.credentials.display().to_string(),
    );
    let mut args = vec!["provision", "--quiet", "--json", "--csv", &csv];
    args.extend(["--credentials", &credentials]);
    if dry_run {
        args.push("--dry-run");
    }
    let measured = measure(&mut cli(bin, &args), Some(&out));
    let summary = std::fs::read_to_string(&out).expect("the summary");
    let summary: Value = serde_json::from_str(&summary).unwrap_or(Value::Null);
    let stats = peer.tenant.stats();
    rt.block_on(peer.tenant.shutdown());
    (measured, summary, stats)
}

/// `validate --json` of `csv`: the process and what it printed.
fn validate_json(bin: &Path, csv: &Path, dir: &Path) -> (Measured, Value) {
    let out = dir.join("validate.json");
    let csv = csv.display().to_string();
    let measured = measure(
        &mut cli(bin, &["validate", "--json", "--csv", &csv]),
        Some(&out),
    );
    let text = std::fs::read_to_string(&out).expect("validate's output");
    (
        measured,
        serde_json::from_str(&text).expect("validate's JSON"),
    )
}

fn smoke() {
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let csv = dir.path().join("export.csv");
    let expect = generate(&csv, SMOKE_ROWS).expect("generate the file");
    assert!(
        expect.invalid > 5 && expect.superseded > 3 && expect.inactive > 50,
        "{expect:?}"
    );
    let bin = bin();

    let (measured, found) = validate_json(&bin, &csv, dir.path());
    assert_eq!(measured.code, 1, "invalid rows: exit 1");
    assert!(measured.rss_mb > 1.0, "{measured:?}");
    assert_eq!(found["rows"], expect.rows);
    assert_eq!(
        found["invalid"].as_array().unwrap().len() as u64,
        expect.invalid
    );
    assert_eq!(
        found["superseded"].as_array().unwrap().len() as u64,
        expect.superseded
    );

    let rt = common::runtime();
    let (measured, plan, stats) = provision(&rt, &bin, &csv, dir.path(), true);
    assert_eq!(measured.code, 1, "{plan}");
    assert_eq!(plan["create"], expect.active, "{plan}");
    assert_eq!(plan["skip"], expect.superseded + expect.inactive, "{plan}");
    assert_eq!(stats.created, 0);

    let (measured, summary, stats) = provision(&rt, &bin, &csv, dir.path(), false);
    assert_eq!(measured.code, 1, "{summary}");
    assert_eq!(summary["created"], expect.active, "{summary}");
    assert_eq!(stats.created, expect.active);
    assert_eq!(summary["invalid"], expect.invalid, "{summary}");
    println!(
        "cli_commands smoke check passed in {:.1} s ({expect:?})",
        started.elapsed().as_secs_f64()
    );
}

struct Options {
    sizes: Vec<u64>,
    provision_sizes: Vec<u64>,
    runs: usize,
    python: String,
    before: Option<PathBuf>,
}

fn sizes(args: &[String], name: &str, default: &[u64]) -> Vec<u64> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map_or_else(
            || default.to_vec(),
            |list| {
                list.split(',')
                    .filter(|n| *n != "none")
                    .map(|n| n.replace('_', "").parse().expect("a size"))
                    .collect()
            },
        )
}

fn options(args: &[String]) -> Options {
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let sizes = sizes(args, "--sizes", &DEFAULT_SIZES);
    Options {
        provision_sizes: self::sizes(args, "--provision-sizes", &sizes),
        sizes,
        runs: arg_value(args, "--runs", 3) as usize,
        python: value("--python").unwrap_or_else(|| "python3".into()),
        before: value("--before").map(PathBuf::from),
    }
}

/// Every measurement of one command at one size.
#[derive(Default)]
struct Series {
    runs: Vec<Measured>,
    /// Tenant requests per 1,000 rows (provision only).
    requests_per_k: Vec<f64>,
}

impl Series {
    fn row(&self, size: u64, command: &str, python: Option<&Series>) {
        let of = |f: fn(&Measured) -> f64| median(&self.runs.iter().map(f).collect::<Vec<_>>());
        let each: Vec<String> = self.runs.iter().map(|m| format!("{:.3}", m.wall)).collect();
        let ratio = python.map_or(String::new(), |p| {
            // The median of the per-run ratios (each pair from the same iteration).
            let ratios: Vec<f64> = p
                .runs
                .iter()
                .zip(&self.runs)
                .map(|(p, r)| p.wall / r.wall)
                .collect();
            format!("{:.1}x", median(&ratios))
        });
        let requests = if self.requests_per_k.is_empty() {
            String::new()
        } else {
            format!("{:.2}", median(&self.requests_per_k))
        };
        println!(
            "| {size:>9} | {command:<28} | {:>8.3} s | {:>7.2} s | {:>8.1} MB | {:>8} | {:>6} | {} |",
            of(|m| m.wall),
            of(|m| m.cpu),
            of(|m| m.rss_mb),
            ratio,
            requests,
            each.join(" / ")
        );
    }
}

fn bench(options: &Options) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let rt = common::runtime();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/baseline_validate.py");
    let mut binaries = vec![("", bin())];
    if let Some(before) = &options.before {
        binaries.push(("before: ", before.clone()));
    }
    println!("| rows | command | wall (median) | CPU | peak RSS | Python / Rust | requests per 1,000 rows | wall, each run |");
    println!("|---:|---|---:|---:|---:|---:|---:|---|");
    let all: Vec<u64> = {
        let mut all = options.sizes.clone();
        all.extend(
            options
                .provision_sizes
                .iter()
                .filter(|s| !options.sizes.contains(s)),
        );
        all.sort_unstable();
        all
    };
    for &size in &all {
        let csv = dir.path().join(format!("export-{size}.csv"));
        let expect = generate(&csv, size).expect("generate the file");
        let csv_text = csv.display().to_string();
        // Both sides agree on the counts before anything is timed.
        let (_, found) = validate_json(&bin(), &csv, dir.path());
        let python_json = dir.path().join("python.json");
        let mut python = Command::new(&options.python);
        python.arg(&script).arg(&csv).arg("--json");
        let m = measure(&mut python, Some(&python_json));
        assert_eq!(m.code, 0, "the Python baseline failed");
        let theirs: Value =
            serde_json::from_str(&std::fs::read_to_string(&python_json).expect("Python's output"))
                .expect("Python's JSON");
        for key in ["invalid", "superseded"] {
            let n = |v: &Value| v[key].as_array().map_or(0, Vec::len) as u64;
            assert_eq!(n(&found), n(&theirs), "{key} at {size} rows");
        }
        assert_eq!(found["rows"], theirs["rows"]);
        assert_eq!(found["rows"], expect.rows);

        let mut validate: Vec<Series> = binaries.iter().map(|_| Series::default()).collect();
        let mut dry: Vec<Series> = binaries.iter().map(|_| Series::default()).collect();
        let mut full: Vec<Series> = binaries.iter().map(|_| Series::default()).collect();
        let mut baseline = Series::default();
        let provisioned = options.provision_sizes.contains(&size);
        for _ in 0..options.runs {
            for (i, (_, bin)) in binaries.iter().enumerate() {
                let m = measure(&mut cli(bin, &["validate", "--csv", &csv_text]), None);
                assert_eq!(m.code, 1, "validate's exit code");
                validate[i].runs.push(m);
            }
            let mut python = Command::new(&options.python);
            python.arg(&script).arg(&csv);
            baseline.runs.push(measure(&mut python, None));
            if !provisioned {
                continue;
            }
            for (i, (_, bin)) in binaries.iter().enumerate() {
                let (m, plan, stats) = provision(&rt, bin, &csv, dir.path(), true);
                assert_eq!(plan["create"], expect.active, "{plan}");
                dry[i]
                    .requests_per_k
                    .push(stats.requests as f64 * 1000.0 / size as f64);
                dry[i].runs.push(m);
                let (m, summary, stats) = provision(&rt, bin, &csv, dir.path(), false);
                assert_eq!(summary["created"], expect.active, "{summary}");
                assert_eq!(stats.created, expect.active);
                full[i]
                    .requests_per_k
                    .push(stats.requests as f64 * 1000.0 / size as f64);
                full[i].runs.push(m);
            }
        }
        for (i, (label, _)) in binaries.iter().enumerate() {
            validate[i].row(size, &format!("{label}validate --csv"), Some(&baseline));
        }
        if size == all[0] {
            // What any run of the binary costs at least (and the measuring process's share).
            let floor = Series {
                runs: (0..options.runs)
                    .map(|_| measure(&mut cli(&bin(), &["--version"]), None))
                    .collect(),
                requests_per_k: Vec::new(),
            };
            floor.row(0, "--version (floor)", None);
        }
        baseline.row(size, "Python baseline_validate.py", None);
        if provisioned {
            for (i, (label, _)) in binaries.iter().enumerate() {
                dry[i].row(size, &format!("{label}provision --dry-run"), None);
                full[i].row(size, &format!("{label}provision"), None);
            }
        }
        if std::env::var_os("CLI_BENCH_KEEP").is_none() {
            std::fs::remove_file(&csv).ok();
        } else {
            let kept = std::env::temp_dir().join(format!("cli-bench-{size}.csv"));
            std::fs::rename(&csv, &kept)
                .or_else(|_| std::fs::copy(&csv, &kept).map(|_| ()))
                .ok();
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).is_some_and(|a| a == "--measure") {
        measure_child(&args[2..]);
        return;
    }
    if !args.iter().any(|a| a == "--bench") {
        smoke();
        return;
    }
    bench(&options(&args));
}
