#!/usr/bin/env python3
"""Baseline for benches/cli_commands.rs: the plain Python version of `validate --csv FILE`
(csv + json from the standard library).

Reads an HR export (Employee ID,First Name,Last Name,Work Email,Department,Job Title,Status,
Phone; UTF-8 with or without a BOM, any line breaks), validates each row with the tool's rules
(field count, required fields, email sanity, status words), finds the rows that a later row of
the same userName (the email, case-folded) replaces, and prints what `validate` prints: the
counts and every invalid and replaced row with its line. With --json, the same as JSON (the
bench compares the counts with the tool's).

Usage: python3 benches/baseline_validate.py FILE [--json]
"""

import csv
import json
import sys

COLUMNS = {
    "employee id": "employee_number",
    "first name": "first_name",
    "last name": "last_name",
    "work email": "email",
    "department": "department",
    "job title": "title",
    "status": "status",
    "phone": "phone",
}
STATUS = {
    "active": True,
    "enabled": True,
    "inactive": False,
    "terminated": False,
    "leaver": False,
    "disabled": False,
}


def email_problem(email):
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in email):
        return "it contains a space or a control character"
    if "@" not in email:
        return "it has no @"
    local, _, domain = email.partition("@")
    if "@" in domain:
        return "it has more than one @"
    if not local:
        return "nothing comes before the @"
    if "." not in domain:
        return "the domain after the @ has no dot"
    if domain.startswith(".") or domain.endswith(".") or ".." in domain:
        return "the domain after the @ has an empty part"
    return None


def check(fields, row):
    """The row's userName, or raises ValueError with the reason."""
    if len(row) != len(fields):
        raise ValueError(f"the row has {len(row)} fields but the header has {len(fields)}")
    values = {name: value.strip() for name, value in zip(fields, row) if name}
    email = values.get("email", "")
    if not email:
        raise ValueError("email is empty; it is required")
    problem = email_problem(email)
    if problem:
        raise ValueError(f"email is not a valid address: {problem}")
    for field in ("first_name", "last_name"):
        if not values.get(field):
            raise ValueError(f"{field} is empty; it is required")
    status = values.get("status", "")
    if status and status.lower() not in STATUS:
        raise ValueError(f"status value {status!r} is not recognised")
    return values.get("user_name") or email


def main():
    path = sys.argv[1]
    as_json = "--json" in sys.argv[2:]
    invalid, valid_lines, rows = [], [], 0
    last = {}
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = next(reader)
        fields = [COLUMNS.get(h.strip().lower()) for h in header]
        end = reader.line_num
        for row in reader:
            line, end = end + 1, reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            rows += 1
            try:
                user_name = check(fields, row)
            except ValueError as e:
                invalid.append({"line": line, "reason": str(e)})
                continue
            key = user_name.lower()
            valid_lines.append((key, line))
            last[key] = line
    superseded = [
        {"line": line, "reason": f"superseded by line {last[key]}: the last row for a userName wins"}
        for key, line in valid_lines
        if last[key] != line
    ]
    result = {
        "file": path,
        "rows": rows,
        "valid": rows - len(invalid),
        "invalid": invalid,
        "superseded": superseded,
    }
    if as_json:
        print(json.dumps(result, indent=2))
        return
    out = [f"File: {path}", f"Rows: {rows:,} read, {rows - len(invalid):,} valid, {len(invalid):,} invalid"]
    if invalid:
        out.append("Invalid rows:")
        out.extend(f"  line {r['line']}: {r['reason']}" for r in invalid)
    if superseded:
        out.append("Replaced rows (not errors):")
        out.extend(f"  line {r['line']}: {r['reason']}" for r in superseded)
    print("\n".join(out))


if __name__ == "__main__":
    main()
