//! template.yaml: cfn-lint clean, plus the checks cfn-lint does not make (infra/check_template.py).

mod support;

use std::path::Path;
use std::process::Command;

fn run(program: &Path, args: &[&str]) -> String {
    let root = env!("CARGO_MANIFEST_DIR");
    let output = Command::new(program)
        .args(args)
        .current_dir(root)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "{} {args:?} failed:\n{text}",
        program.display()
    );
    text
}

#[test]
fn cfn_lint_is_clean() {
    run(&support::venv_bin("cfn-lint"), &["template.yaml"]);
}

#[test]
fn template_checks_beyond_cfn_lint() {
    let contract = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/CONTRACT.md");
    assert!(
        contract.exists(),
        "CONTRACT.md is expected beside the repository: {}",
        contract.display()
    );
    let out = run(
        &support::venv_bin("python"),
        &[
            "infra/check_template.py",
            "template.yaml",
            &contract.to_string_lossy(),
        ],
    );
    assert!(out.contains("OK"), "{out}");
}
