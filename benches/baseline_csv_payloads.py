#!/usr/bin/env python3
"""Baseline for benches/csv_payloads.rs: the straightforward Python version of the same
transformation (csv + json from the standard library).

Reads an HR export (Employee ID,First Name,Last Name,Work Email,Department,Job Title,Status,
Phone), validates each row (required fields, email sanity, status words), builds the SCIM 2.0
User resource of each valid row as a POST /Users operation, and serializes BulkRequest bodies
of 50 operations per window of 500 operations (as the Rust side does). Bodies are counted and
dropped. Prints one line:

    RESULT rows=.. valid=.. invalid=.. bodies=.. bytes=.. secs=.. hwm_kb=..

Usage: python3 benches/baseline_csv_payloads.py FILE
"""

import csv
import json
import resource
import sys
import time

USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
ENTERPRISE_SCHEMA = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
BULK_REQUEST = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"
WINDOW = 500
MAX_OPERATIONS = 50

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


class RowError(Exception):
    pass


def email_ok(email):
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in email):
        return False
    local, at, domain = email.partition("@")
    if not at or "@" in domain or not local or "." not in domain:
        return False
    return all(domain.split("."))


def to_user(fields, row):
    if len(row) != len(fields):
        raise RowError("field count")
    values = {}
    for name, value in zip(fields, row):
        if name:
            values[name] = value.strip()
    email = values.get("email", "")
    first = values.get("first_name", "")
    last = values.get("last_name", "")
    if not email or not first or not last:
        raise RowError("missing")
    if not email_ok(email):
        raise RowError("email")
    status = values.get("status", "")
    active = True
    if status:
        try:
            active = STATUS[status.lower()]
        except KeyError:
            raise RowError("status") from None
    doc = {
        "userName": email,
        "name": {"givenName": first, "familyName": last},
        "emails": [{"value": email, "type": "work", "primary": True}],
        "active": active,
    }
    if values.get("title"):
        doc["title"] = values["title"]
    if values.get("phone"):
        doc["phoneNumbers"] = [{"value": values["phone"], "type": "work"}]
    schemas = [USER_SCHEMA]
    enterprise = {}
    if values.get("employee_number"):
        enterprise["employeeNumber"] = values["employee_number"]
    if values.get("department"):
        enterprise["department"] = values["department"]
    if enterprise:
        schemas.append(ENTERPRISE_SCHEMA)
        doc[ENTERPRISE_SCHEMA] = enterprise
    doc["schemas"] = schemas
    return doc


def main(path):
    counts = {"rows": 0, "valid": 0, "invalid": 0, "bodies": 0, "bytes": 0}
    start = time.perf_counter()

    def flush(ops):
        for i in range(0, len(ops), MAX_OPERATIONS):
            body = json.dumps(
                {"schemas": [BULK_REQUEST], "Operations": ops[i : i + MAX_OPERATIONS]},
                ensure_ascii=False,
                separators=(",", ":"),
            ).encode("utf-8")
            counts["bodies"] += 1
            counts["bytes"] += len(body)
        ops.clear()

    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = next(reader)
        fields = [COLUMNS.get(h.strip().lower()) for h in header]
        ops = []
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            counts["rows"] += 1
            try:
                doc = to_user(fields, row)
            except RowError:
                counts["invalid"] += 1
                continue
            counts["valid"] += 1
            ops.append(
                {"method": "POST", "bulkId": "op%d" % len(ops), "path": "/Users", "data": doc}
            )
            if len(ops) == WINDOW:
                flush(ops)
        if ops:
            flush(ops)

    secs = time.perf_counter() - start
    hwm_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux
    print(
        "RESULT rows={rows} valid={valid} invalid={invalid} bodies={bodies} bytes={bytes}".format(
            **counts
        )
        + " secs=%.6f hwm_kb=%d" % (secs, hwm_kb)
    )


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
